//! hold: the RTNL hold budget; predicts how long a group change holds RTNL and sizes the
//! sub-batches (one device group each, see `groups`) so that none is expected to pass it.
//!
//! A group change (rtnl_group_changelink) runs do_setlink on every device of its group
//! under one acquisition: for each, dev_open and the NETDEV_UP chain, a NETDEV_CHANGE
//! notification and an RTM_NEWLINK broadcast (IFLA_GROUP sets DO_SETLINK_NOTIFY). Per
//! device, addrconf walks the namespace's whole IPv6 FIB (rt6_sync_up, fib6_clean_all),
//! and every host end that is up has a multicast route in it (addrconf_add_mroute), so
//! the cost of one device grows with the number of host ends already up. One change over
//! 4000 host ends held RTNL for about 0.8 s (docs/rtnl-hold.md).
//!
//! The model: bringing one device up costs `per_up * (up + FIXED_UP)`, where `up` is the
//! number of the pool's host ends already up. `per_up` is learned from every group
//! change the engine times (send to reply, an upper bound of the hold); the latest one
//! wins, since the kernel's state only grows. A sub-batch gets as many host ends as fit
//! the budget at the size the namespace will have when its group change runs.

use std::time::Duration;

/// The part of a device's cost that does not grow with the pool, in units of "host ends
/// already up": a fresh device in an empty pool costs about as much as one more FIB walk
/// over this many routes.
const FIXED_UP: f64 = 1000.0;
/// `per_up` before anything was measured, seconds: 130 ns, i.e. 130 us per device in an
/// empty pool and 650 us with 4000 up, a little above what a 2-vCPU test machine showed
/// (IPv6 off and up together: about 130 us + 115 ns per host end up; docs/rtnl-hold.md),
/// so the first chunk errs towards small sub-batches.
const PRIOR_PER_UP: f64 = 130e-9;

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

    /// Expected hold of a group change over `devices` host ends when `up` are up before
    /// it (each device's walk also covers the ones of its group that came up before it).
    pub fn predict(&self, devices: usize, up: usize) -> Duration {
        Duration::from_secs_f64(self.per_up * self.weight(devices, up))
    }

    /// How many host ends one group change may bring up when `up` host ends are up
    /// before it: the most that fit the budget, at least 1; unlimited without a budget.
    pub fn group_size(&self, up: usize) -> usize {
        let Some(max) = self.max else {
            return usize::MAX;
        };
        // predict() is increasing in `devices`: binary search the largest that fits.
        let (mut lo, mut hi) = (1usize, 1usize << 20);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.predict(mid, up) <= max {
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

    /// Sum over the group's devices of (host ends up before that device + FIXED_UP).
    fn weight(&self, devices: usize, up: usize) -> f64 {
        let (d, u) = (devices as f64, up as f64);
        d * (u + FIXED_UP) + d * (d - 1.0) / 2.0
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
        for up in [0, 1000, 4000, 20_000] {
            let n = b.group_size(up);
            assert!(b.predict(n, up) <= Duration::from_millis(5), "up {up}: {n}");
            if n > 1 {
                assert!(
                    b.predict(n + 1, up) > Duration::from_millis(5),
                    "up {up}: {n}"
                );
            }
        }
        assert_eq!(b.group_size(100_000_000), 1, "at least one device");
    }

    #[test]
    fn a_measured_change_replaces_the_prior() {
        let mut b = HoldBudget::new(Some(Duration::from_millis(5)));
        let before = b.group_size(2000);
        // A change of 10 devices at 2000 up that took 10 ms: twice what the model allows.
        b.observe(Duration::from_millis(10), &[(4, 2000), (6, 2004)]);
        let predicted = b.predict(10, 2000);
        assert!(
            predicted.abs_diff(Duration::from_millis(10)) < Duration::from_micros(1),
            "{predicted:?}"
        );
        assert_eq!(b.group_size(2000), 5);
        assert_ne!(before, 5);
        b.observe(Duration::from_millis(1), &[(0, 0)]);
        assert_eq!(b.group_size(2000), 5, "zero devices teach nothing");
    }
}
