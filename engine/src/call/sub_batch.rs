//! call::sub_batch: splits a call's host ends into sub-batches, one device group each,
//! sized by the RTNL hold budget (`hold`) for the host ends up when each group change
//! runs, and hands out the pool's groups (`groups`).

use std::collections::BTreeSet;

use crate::groups;
use crate::hold::HoldBudget;

/// The pool's sub-batch groups: which are handed out, and where the search goes on.
///
/// Groups are not given back as slots are released one by one, so a long-lived engine
/// (the daemon) can hand all 65536 out; the engine then asks the kernel which still hold
/// host ends ([`Groups::refresh`]) before a call that could run out.
#[derive(Debug, Clone)]
pub(crate) struct Groups {
    base: u32,
    next: u16,
    used: BTreeSet<u32>,
}

/// Sub-batch groups a pool has.
const ALL_GROUPS: usize = 1 << 16;

impl Groups {
    pub fn new(base: u32, used: BTreeSet<u32>) -> Self {
        Self {
            base,
            next: 0,
            used,
        }
    }

    /// Whether a call of `slots` slots could run out of free groups (one per slot at
    /// most, and one more for the pool's first attach).
    pub fn may_run_out(&self, slots: usize) -> bool {
        self.used.len() + slots + 1 > ALL_GROUPS
    }

    /// Replaces the groups in use by those the kernel shows holding the pool's devices.
    pub fn refresh(&mut self, holding: impl IntoIterator<Item = u32>) {
        let base = self.base;
        self.used = holding
            .into_iter()
            .filter(|&g| groups::owns(base, g))
            .collect();
    }

    /// Every group handed out, as a long-lived engine would have them (tests).
    #[cfg(any(test, feature = "internals"))]
    pub fn hand_out_all(&mut self) {
        let base = self.base;
        self.used = (0..=u16::MAX)
            .map(|k| groups::sub_batch_group(base, k))
            .collect();
    }

    /// Groups teardown must look in, emptied.
    pub fn take_used(&mut self) -> BTreeSet<u32> {
        std::mem::take(&mut self.used)
    }

    /// The next group that holds nothing of this engine, marked used; when all 65536
    /// are, one is shared (its group change then also touches the earlier devices: a
    /// longer hold, the same result).
    fn take(&mut self) -> u32 {
        for _ in 0..ALL_GROUPS {
            let g = groups::sub_batch_group(self.base, self.next);
            self.next = self.next.wrapping_add(1);
            if self.used.insert(g) {
                return g;
            }
        }
        groups::sub_batch_group(self.base, self.next)
    }
}

/// The host ends of one call, split into sub-batches: one device group each.
#[derive(Debug, Default)]
pub(crate) struct SubBatches {
    /// (group, slots) in the order the group changes run.
    pub list: Vec<(u32, Vec<usize>)>,
    /// Host ends the open sub-batch can still take.
    room: usize,
}

impl SubBatches {
    /// The group of slot `slot`'s host end: the open sub-batch's, or a new sub-batch's,
    /// sized by `budget` for the host ends that will be up when its group change runs
    /// (`up_before_call` of the pool's, plus every host end of this call before it).
    /// `first_alone`: the pool's first XDP attach, whose sub-batch is one host end (see
    /// `Choices::first_attach_alone`).
    pub fn place(
        &mut self,
        slot: usize,
        budget: &HoldBudget,
        groups: &mut Groups,
        up_before_call: usize,
        first_alone: bool,
    ) -> u32 {
        if self.room == 0 {
            let before: usize = self.list.iter().map(|(_, s)| s.len()).sum();
            let up = up_before_call + before;
            self.room = if first_alone && up == 0 {
                1
            } else {
                budget.group_size(up)
            };
            self.list.push((groups.take(), Vec::new()));
        }
        self.room -= 1;
        let (g, members) = self.list.last_mut().expect("opened above");
        members.push(slot);
        *g
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sub_batches_fill_to_the_budget_and_take_fresh_groups() {
        let budget = HoldBudget::new(Some(Duration::from_millis(5)));
        let mut groups = Groups::new(7600, BTreeSet::new());
        let mut sub = SubBatches::default();
        let size = budget.group_size(0);
        for i in 0..size + 1 {
            sub.place(i, &budget, &mut groups, 0, false);
        }
        assert_eq!(sub.list.len(), 2);
        assert_eq!(sub.list[0].1.len(), size);
        assert_ne!(sub.list[0].0, sub.list[1].0);
        assert!(sub.list.iter().all(|(g, _)| groups::owns(7600, *g)));
    }

    #[test]
    fn the_first_attach_is_alone() {
        let budget = HoldBudget::new(Some(Duration::from_millis(5)));
        let mut groups = Groups::new(7600, BTreeSet::new());
        let mut sub = SubBatches::default();
        for i in 0..3 {
            sub.place(i, &budget, &mut groups, 0, true);
        }
        assert_eq!(sub.list[0].1, vec![0]);
        assert_eq!(sub.list[1].1, vec![1, 2]);
    }

    #[test]
    fn with_every_group_handed_out_one_is_shared() {
        let mut groups = Groups::new(7600, BTreeSet::new());
        groups.hand_out_all();
        assert!(groups.may_run_out(1));
        let g = groups.take();
        assert!(groups::owns(7600, g));
        groups.refresh([g, 5]);
        assert!(!groups.may_run_out(10));
        assert_ne!(
            groups.take(),
            g,
            "a group the kernel shows in use is not reused"
        );
    }
}
