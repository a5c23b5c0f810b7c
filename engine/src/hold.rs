//! hold: the RTNL hold budget; predicts how long a group change holds RTNL and sizes the
//! sub-batches (one device group each, see `groups`) so that none is expected to pass it.
//!
//! A group change (rtnl_group_changelink) walks every device of the namespace
//! (for_each_netdev) and runs do_setlink on each one of its group under one acquisition:
//! dev_open and the NETDEV_UP chain, a NETDEV_CHANGE notification and an RTM_NEWLINK
//! broadcast (IFLA_GROUP sets DO_SETLINK_NOTIFY), whose peernet2id walks one nsid per
//! slot. So the cost of one device grows with the number of host ends already up. With
//! IPv6 on, it grows four times faster: every up host end adds a multicast route that
//! each later device's NETDEV_UP walks (addrconf_add_mroute, rt6_sync_up); under a budget
//! the engine turns IPv6 off first through `disable_ipv6` (`sysctl`), which only that
//! switch prevents. One change over 4000 host ends with IPv6 held RTNL for about 0.8 s
//! (docs/rtnl-hold.md).
//!
//! The model: a change costs `per_up * (PER_CHANGE + sum over its devices of (up +
//! FIXED_UP))`, where `up` is the number of the pool's host ends up before that device.
//! `per_up` is learned from every send of group changes the engine times (send to
//! reply, an upper bound of the holds, since kernel workers take RTNL in between); the
//! latest one wins, since the kernel's state only grows. A sub-batch gets as many host
//! ends as fit the budget at the size the namespace will have when its group change
//! runs.

use std::time::Duration;

/// The part of a device's cost that does not grow with the pool, in units of "host ends
/// already up".
const FIXED_UP: f64 = 1700.0;
/// The part of a change's cost that does not depend on its size (the walk over the
/// namespace's devices, the acquisition itself), in the same units.
const PER_CHANGE: f64 = 17_500.0;
/// `per_up` before anything was measured, seconds. FIXED_UP, PER_CHANGE and this were
/// fitted to the group changes of `netslot up --slots 4000` on a 2-vCPU test machine,
/// IPv6 off through `disable_ipv6`, timed under `rtnl_count` (which slows RTNL work, so
/// the first call errs towards small sub-batches): 0.56 ms per change, 54 us per device
/// and 32 ns more per device for each host end up (docs/rtnl-hold.md).
const PRIOR_PER_UP: f64 = 32e-9;

/// The share of the budget a sub-batch is sized to. The model predicts a change's mean
/// hold; measured holds of changes sized to one prediction spread to about 1.4 times it
/// at p90 (group changes at 5 ms, 2 vCPUs; docs/rtnl-hold.md), so aiming at 70 % keeps
/// most of them inside the budget.
const TARGET_SHARE: f64 = 0.7;

/// The budget and what the engine has learned about the cost of group changes.
#[derive(Debug, Clone)]
pub(crate) struct HoldBudget {
    max: Option<Duration>,
    /// Seconds per device per (host end already up + FIXED_UP).
    per_up: f64,
}

impl HoldBudget {
    /// `max` None: no budget (one group change per call, whatever its hold).
    pub fn new(max: Option<Duration>) -> Self {
        Self {
            max,
            per_up: PRIOR_PER_UP,
        }
    }

    /// Whether there is a budget at all.
    pub fn is_bounded(&self) -> bool {
        self.max.is_some()
    }

    /// Expected hold of a group change over `devices` host ends when `up` are up before
    /// it (each device's walk also covers the ones of its group that came up before it).
    pub fn predict(&self, devices: usize, up: usize) -> Duration {
        Duration::from_secs_f64(self.per_up * self.weight(devices, up))
    }

    /// How many host ends one group change may bring up when `up` host ends are up
    /// before it: the most whose predicted hold fits TARGET_SHARE of the budget, at least
    /// 1; unlimited without a budget.
    pub fn group_size(&self, up: usize) -> usize {
        let Some(max) = self.max else {
            return usize::MAX;
        };
        let target = max.mul_f64(TARGET_SHARE);
        // predict() is increasing in `devices`: binary search the largest that fits.
        let (mut lo, mut hi) = (1usize, 1usize << 20);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.predict(mid, up) <= target {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// Learns from group changes sent together that took `took` from send to reply, each
    /// given as (host ends in it, host ends up before it).
    pub fn observe(&mut self, took: Duration, changes: &[(usize, usize)]) {
        let weight: f64 = changes.iter().map(|&(d, u)| self.weight(d, u)).sum();
        if weight > 0.0 {
            self.per_up = took.as_secs_f64() / weight;
        }
    }

    /// PER_CHANGE plus the sum over the group's devices of (host ends up before that
    /// device + FIXED_UP); nothing for an empty group, which is never sent.
    fn weight(&self, devices: usize, up: usize) -> f64 {
        if devices == 0 {
            return 0.0;
        }
        let (d, u) = (devices as f64, up as f64);
        PER_CHANGE + d * (u + FIXED_UP) + d * (d - 1.0) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_budget_means_one_group() {
        let b = HoldBudget::new(None);
        assert_eq!(b.group_size(1_000_000), usize::MAX);
    }

    #[test]
    fn sub_batches_shrink_as_the_pool_grows() {
        let b = HoldBudget::new(Some(Duration::from_millis(5)));
        let small = b.group_size(0);
        let big = b.group_size(4000);
        assert!(small > big, "{small} then {big}");
        let target = Duration::from_millis(5).mul_f64(TARGET_SHARE);
        for up in [0, 1000, 4000, 20_000] {
            let n = b.group_size(up);
            assert!(b.predict(n, up) <= target, "up {up}: {n}");
            if n > 1 {
                assert!(b.predict(n + 1, up) > target, "up {up}: {n}");
            }
        }
        assert_eq!(b.group_size(100_000_000), 1, "at least one device");
    }

    #[test]
    fn a_measured_change_replaces_the_prior() {
        let mut b = HoldBudget::new(Some(Duration::from_millis(5)));
        let before = b.group_size(2000);
        // Two changes, 4 then 6 devices from 2000 up, that took 10 ms together.
        b.observe(Duration::from_millis(10), &[(4, 2000), (6, 2004)]);
        let predicted = b.predict(4, 2000) + b.predict(6, 2004);
        assert!(
            predicted.abs_diff(Duration::from_millis(10)) < Duration::from_micros(1),
            "{predicted:?}"
        );
        // The target, 70 % of 5 ms, is 35 % of the weight measured (25 215.75): PER_CHANGE
        // and 2 devices from 2000 up fit in it (24 901), a third would not (28 603).
        assert_eq!(b.group_size(2000), 2);
        assert_ne!(before, 2);
        b.observe(Duration::from_millis(1), &[(0, 0)]);
        assert_eq!(b.group_size(2000), 2, "zero devices teach nothing");
    }
}
