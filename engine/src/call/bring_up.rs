//! call::bring_up: the end of a provisioning call: every sub-batch's host ends up in one
//! group change each, then pinning, then the final rollback.
//!
//! All group changes run at the end rather than chunk by chunk: interleaved with the
//! rest of the provisioning, the same group changes held RTNL longer in all and more
//! often past the budget (docs/rtnl-hold.md).
//!
//! Under a budget, IPv6 goes off through each host end's `disable_ipv6` first (`sysctl`),
//! which halves what the group changes cost per device; a sub-batch with a host end
//! whose write did not land falls back to the netlink `IPv6 off` group change. Without a
//! budget, that change alone does it: one acquisition per call instead of one per slot.
//! A dual-stack slot's host end (`SlotSpec::ipv6`) is never written: `disable_ipv6`
//! would remove its IPv6 address. The netlink change only stops address generation
//! (no link-local address), which leaves its address and routes alone.

use std::time::Duration;

use super::{Call, Finished, Next, Purpose, Stage};
use crate::op::Op;
use crate::plan::{self, GroupChange};
use crate::reconcile::Failure;
use crate::seq::Ledger;

impl Call {
    /// Starts bring-up: keeps each sub-batch's standing slots, and asks for the sysctl
    /// writes when they apply.
    pub(super) fn bring_up(&mut self) -> Option<Next> {
        self.members = self
            .sub
            .list
            .iter()
            .map(|(_, slots)| {
                slots
                    .iter()
                    .copied()
                    .filter(|&i| self.slots.is_ok(i))
                    .collect()
            })
            .collect();
        self.sysctl_done = vec![false; self.members.len()];
        let any = self
            .members
            .iter()
            .flatten()
            .any(|&i| self.ipv6_goes_off(i));
        if self.choices.shape.ipv6_off && self.kept.budget.is_bounded() && any {
            self.stage = Stage::AwaitIpv6;
            return Some(Next::DisableIpv6(self.bring_up_names()));
        }
        self.plan_groups();
        None
    }

    /// Whether slot `i`'s host end gets `disable_ipv6` written: every host end but a
    /// dual-stack slot's, whose IPv6 address needs IPv6 on (`SlotSpec::ipv6`).
    fn ipv6_goes_off(&self, i: usize) -> bool {
        self.slots.specs[i].ipv6.is_none()
    }

    /// The host ends whose `disable_ipv6` is written, sub-batch by sub-batch.
    pub(super) fn bring_up_names(&self) -> Vec<String> {
        self.members
            .iter()
            .flatten()
            .filter(|&&i| self.ipv6_goes_off(i))
            .map(|&i| self.slots.specs[i].name.clone())
            .collect()
    }

    /// Per host end of [`Next::DisableIpv6`], in order: written, or the errno; `took`
    /// for all of them.
    pub fn ipv6_disabled(&mut self, each: Vec<Result<(), i32>>, took: Duration) {
        if self.stage != Stage::AwaitIpv6 {
            return;
        }
        let mut results = each.iter();
        let mut landed_all = 0;
        for (k, members) in self.members.iter().enumerate() {
            let written = members.iter().filter(|&&i| self.ipv6_goes_off(i)).count();
            let landed = results.by_ref().take(written).filter(|r| r.is_ok()).count();
            self.sysctl_done[k] = landed == written;
            landed_all += landed;
        }
        self.tally.ipv6_sysctl += landed_all;
        self.tally.ipv6_sysctl_took += took;
        self.tally.links += took;
        if let Some(errno) = each.iter().find_map(|r| r.err()) {
            tracing::warn!(
                not_written = each.len() - landed_all,
                error = %std::io::Error::from_raw_os_error(errno),
                "disable_ipv6 of some host ends could not be written; their sub-batches \
                 turn IPv6 off by netlink instead (slower group changes, see \
                 docs/rtnl-hold.md)"
            );
        }
        self.plan_groups();
    }

    /// The group change of every sub-batch with a slot standing, with its weight for
    /// the budget.
    fn plan_groups(&mut self) {
        let template = self.choices.shape;
        let mut up = self.kept.host_ends;
        for (k, members) in self.members.iter().enumerate() {
            if members.is_empty() {
                continue;
            }
            let change = GroupChange {
                group: self.sub.list[k].0,
                xdp_fd: self.choices.group_xdp,
                ipv6_off: template.ipv6_off && !self.sysctl_done[k],
            };
            self.changes.push((k, change));
            self.weights.push((members.len(), up));
            up += members.len();
        }
        self.up_after = up;
        self.tally.group_changes = self.changes.len();
        self.stage = Stage::Groups(0);
    }

    /// Send `send` of the group changes: 0, the pool's first XDP attach alone (which the
    /// budget does not learn from: its model has no term for the dispatcher's wait); 1,
    /// the rest. Then pinning.
    pub(super) fn send_groups(&mut self, host: &mut Ledger, send: usize) {
        let alone = usize::from(
            self.choices.first_attach_alone && self.kept.host_ends == 0 && !self.changes.is_empty(),
        );
        let (range, learn) = match send {
            0 => (0..alone, false),
            1 => (alone..self.changes.len(), true),
            _ => {
                tracing::debug!(
                    groups = self.changes.len(),
                    devices = self.up_after - self.kept.host_ends,
                    up_before = self.kept.host_ends,
                    took = ?self.tally.group_changes_took,
                    "group changes"
                );
                self.kept.host_ends = self.up_after.max(self.kept.host_ends);
                self.stage = Stage::Pin;
                return;
            }
        };
        self.stage = Stage::Groups(send + 1);
        if range.is_empty() {
            return;
        }
        let flights = plan::group_changes(
            host,
            self.choices.host_limits,
            &self.changes[range.clone()],
            self.choices.ack,
        );
        self.launch(flights, Purpose::GroupChanges { range, learn });
    }

    /// Per slot of [`Next::Pin`]: pinned, or why not; `took` for all of them.
    pub fn pinned(&mut self, results: Vec<(usize, Result<(), Failure>)>, took: Duration) {
        if self.stage != Stage::AwaitPin {
            return;
        }
        for (i, r) in results {
            if i >= self.len() {
                continue;
            }
            match r {
                Ok(()) => self.slots.pinned[i] = true,
                Err(why) => self.slots.fail(i, Op::Pin, why),
            }
        }
        self.tally.pin += took;
        self.stage = Stage::FinalRollback;
    }

    /// The call's outcome, and what the engine keeps.
    pub fn finish(self) -> Finished {
        Finished {
            slots: self.slots,
            tally: self.tally,
            kept: self.kept,
        }
    }
}
