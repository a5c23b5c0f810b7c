//! call::step: one step of a call in the air (its rounds of sends and replies), what
//! happens once all its replies are in (recovery of what an overrun lost, then the
//! step's conclusion), and rollback of failed slots.

use std::ops::Range;
use std::time::Duration;

use super::flights::{Flights, Outcome, Send};
use super::recover::{describe, Recovery};
use super::slots::VethFate;
use super::{Again, Call, Next, Purpose, Stage, Step};
use crate::op::Op;
use crate::owner::Owner;
use crate::plan::{self, GroupChange, PerDevice};
use crate::reconcile::Settled;
use crate::seq::Ledger;

impl Call {
    /// The sends and receives of the current round.
    pub fn round(&self) -> Vec<Send<'_>> {
        self.step
            .as_ref()
            .map_or_else(Vec::new, |s| s.flights.round())
    }

    /// What flight `index` of the round got.
    pub fn settle(&mut self, host: &mut Ledger, index: usize, seen: Outcome<'_>) {
        if let Some(step) = &mut self.step {
            step.flights.settle(host, &mut self.slot_seqs, index, seen);
        }
    }

    /// Requests the step in the air has settled so far: (done, failed).
    #[cfg(feature = "internals")]
    pub fn settled_counts(&self) -> (usize, usize) {
        self.step
            .as_ref()
            .map_or((0, 0), |s| s.flights.settled_counts())
    }

    /// Ends the round, which took `took`.
    pub fn end_round(&mut self, took: Duration) {
        if let Some(step) = &mut self.step {
            step.flights.end_round(took);
        }
    }

    /// Forgets the send buffers of the step in the air (the ring failed for good).
    pub fn leak_in_flight(&mut self) {
        if let Some(step) = &mut self.step {
            step.flights.leak();
        }
    }

    /// A step's every reply is in: recover what an overrun lost, then conclude.
    pub(super) fn settle_step(&mut self, host: &mut Ledger, mut step: Step) -> Option<Next> {
        let settled = step.flights.take_settled();
        let took = step.flights.took;
        if let Some((mut rec, before, queue)) = step.recovery.take() {
            rec.resent(settled);
            self.send_again(host, step.purpose, rec, before + took, queue);
            return None;
        }
        let recoverable = matches!(
            step.purpose,
            Purpose::Links { .. } | Purpose::GroupChanges { .. }
        );
        if !recoverable {
            self.conclude(host, step.purpose, settled, took);
            return None;
        }
        match Recovery::start(settled) {
            Err(settled) => self.conclude(host, step.purpose, settled, took),
            Ok(rec) if rec.needs_addresses() => {
                self.awaiting_addresses = Some((step.purpose, rec, took));
                return Some(Next::HostAddresses);
            }
            Ok(rec) => self.resend(host, step.purpose, rec, took),
        }
        None
    }

    /// The host's addresses (ifindex, address), or why the dump failed.
    pub fn host_addresses(&mut self, dump: Result<&[(u32, std::net::IpAddr)], String>) {
        if let Some((purpose, mut rec, took)) = self.awaiting_addresses.take() {
            rec.addresses(&self.slots.specs, dump);
            self.resume = Some((purpose, rec, took));
        }
    }

    pub(super) fn resend(
        &mut self,
        host: &mut Ledger,
        purpose: Purpose,
        mut rec: Recovery,
        took: Duration,
    ) {
        let groups: &[(usize, GroupChange)] = match &purpose {
            Purpose::GroupChanges { range, .. } => &self.changes[range.clone()],
            _ => &[],
        };
        let per_device_xdp = match self.choices.per_device {
            PerDevice::Xdp(fd) => Some(fd),
            PerDevice::Nothing | PerDevice::Clsact { .. } => None,
        };
        let again = rec.resends(&self.slots.specs, groups, per_device_xdp);
        self.send_again(host, purpose, rec, took, again);
    }

    /// Sends the next request of `queue` alone, with its ACK, as a step of its own (more
    /// at once could overrun the receive buffer again); concludes once none is left.
    fn send_again(
        &mut self,
        host: &mut Ledger,
        purpose: Purpose,
        rec: Recovery,
        took: Duration,
        mut queue: Vec<Again>,
    ) {
        if queue.is_empty() {
            self.finish_recovery(host, purpose, rec, took);
            return;
        }
        let first = queue.remove(0);
        let flights = plan::again(host, self.choices.host_limits, vec![first]);
        self.step = Some(Step {
            flights: Flights::new(flights),
            purpose,
            recovery: Some((rec, took, queue)),
        });
    }

    fn finish_recovery(
        &mut self,
        host: &mut Ledger,
        purpose: Purpose,
        rec: Recovery,
        took: Duration,
    ) {
        let (settled, recovered) = rec.finish();
        self.kept.recovered += recovered;
        self.tally.recovered += recovered;
        self.conclude(host, purpose, settled, took);
    }

    /// Applies the outcome of a step whose replies are settled.
    fn conclude(
        &mut self,
        host: &mut Ledger,
        purpose: Purpose,
        settled: Vec<Settled>,
        took: Duration,
    ) {
        match purpose {
            Purpose::Links { chunk, prev } => {
                let filter_made = settled.iter().any(|s| {
                    matches!(
                        s,
                        Settled::Done {
                            owner: Owner::Pool,
                            op: Op::TcFilter
                        }
                    )
                });
                self.kept.tc_filter_made |= filter_made;
                self.slots.apply(settled, &[]);
                self.tally.links += took;
                self.settled = self.settled.max(chunk.end);
                if !chunk.is_empty() {
                    self.carry = Some(chunk);
                }
                if let Some(prev) = prev {
                    self.roll_back(host, prev, Stage::Take);
                }
            }
            Purpose::GroupChanges { range, learn } => {
                self.slots.apply(settled, &self.members);
                if learn {
                    self.kept.budget.observe(took, &self.weights[range]);
                }
                self.tally.group_changes_took += took;
                self.tally.links += took;
            }
            Purpose::Rollback { doomed, then } => {
                for s in settled {
                    let Settled::Failed {
                        owner: Owner::Slot(i),
                        why,
                        ..
                    } = s
                    else {
                        continue;
                    };
                    // ENODEV: never made, or already gone with its namespace.
                    if why.errno != libc::ENODEV {
                        let text = describe(&why);
                        self.slots
                            .note(i, format!("rollback could not delete the host end: {text}"));
                    }
                }
                self.tally.rollback += took;
                self.close(doomed);
                self.stage = then;
            }
            Purpose::Detach => {
                for s in settled {
                    if let Settled::Failed {
                        owner: Owner::Slot(i),
                        op,
                        why,
                    } = s
                    {
                        if why.errno != libc::ENODEV {
                            self.slots.fail(i, op, why);
                        }
                    }
                }
            }
        }
    }

    /// Deletes the host end of every failed slot in `range` that may have one, then
    /// closes the slot's namespace; the call goes on with `then`.
    pub(super) fn roll_back(&mut self, host: &mut Ledger, range: Range<usize>, then: Stage) {
        let doomed = self.slots.doomed(range);
        let with_device: Vec<usize> = doomed
            .iter()
            .copied()
            .filter(|&i| self.slots.veth[i] == VethFate::Present)
            .collect();
        if with_device.is_empty() {
            self.close(doomed);
            self.stage = then;
            return;
        }
        let flights = plan::delete_host_ends(
            host,
            self.choices.host_limits,
            with_device.iter().map(|&i| (i, &self.slots.specs[i])),
            Op::Rollback,
        );
        self.launch(flights, Purpose::Rollback { doomed, then });
    }

    pub(super) fn close(&mut self, doomed: Vec<usize>) {
        for &i in &doomed {
            self.slots.has_ns[i] = false;
            self.slots.veth[i] = VethFate::Absent;
        }
        self.to_close.extend(doomed);
    }
}
