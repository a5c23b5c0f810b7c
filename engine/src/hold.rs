//! hold: the RTNL hold budget; predicts how long a group change would hold RTNL and picks
//! how a batch's host ends come up.
//!
//! A group change (rtnl_group_changelink) runs do_setlink on EVERY device of the group in
//! the namespace under one acquisition, the pool's earlier host ends included: for each
//! it sends a NETDEV_CHANGE notification and an RTM_NEWLINK broadcast (IFLA_GROUP sets
//! DO_SETLINK_NOTIFY), and for new ones dev_open and the NETDEV_UP chain. Its hold grows
//! with the pool, and per device with the size of the namespace (addrconf's rt6_sync_up
//! walks the whole IPv6 FIB per device): measured about 0.97 s for 4000 host ends in one
//! change. Everyone else on the host waits that long for RTNL.
//!
//! Under a budget the engine predicts the hold as (devices in the group) x (cost per
//! device), the cost taken from its own last group change, and when the prediction passes
//! the budget it brings each host end up by its own short requests instead (see
//! `plan::BringUp`): more acquisitions, none of them long.

use std::time::Duration;

/// Cost per device of a group change before the engine has measured one: about what it
/// costs in a namespace of a few hundred devices (docs/rtnl-hold.md).
const PRIOR_PER_DEVICE: Duration = Duration::from_micros(100);

/// How the host ends of one provisioning call come up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BringUpMode {
    /// One group change for the whole group: one acquisition, one hold that grows with it.
    #[default]
    Group,
    /// Per host end, right after its address: two short acquisitions per device.
    PerDevice,
}

/// The budget and what the engine has learned about the cost of group changes.
#[derive(Debug, Clone)]
pub(crate) struct HoldBudget {
    max: Option<Duration>,
    per_device: Duration,
}

impl HoldBudget {
    /// `max` None: no budget (the fewest acquisitions, whatever the hold).
    pub fn new(max: Option<Duration>) -> Self {
        Self {
            max,
            per_device: PRIOR_PER_DEVICE,
        }
    }

    /// How to bring up host ends when the group will hold `devices` devices in all.
    pub fn mode(&self, devices: usize) -> BringUpMode {
        match self.max {
            Some(max) if self.predict(devices) > max => BringUpMode::PerDevice,
            _ => BringUpMode::Group,
        }
    }

    /// Expected hold of a group change over `devices` devices.
    pub fn predict(&self, devices: usize) -> Duration {
        self.per_device
            .saturating_mul(u32::try_from(devices).unwrap_or(u32::MAX))
    }

    /// Learns from a group change over `devices` devices that took `took` (send to
    /// reply: an upper bound of its hold). The latest figure wins: the cost per device
    /// grows with the namespace, so older measurements only underestimate.
    pub fn observe(&mut self, took: Duration, devices: usize) {
        if let Ok(n) = u32::try_from(devices) {
            if n > 0 {
                self.per_device = took / n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_budget_always_groups() {
        let b = HoldBudget::new(None);
        assert_eq!(b.mode(1_000_000), BringUpMode::Group);
    }

    #[test]
    fn the_budget_switches_to_per_device_from_measured_cost() {
        let mut b = HoldBudget::new(Some(Duration::from_millis(5)));
        assert_eq!(
            b.mode(50),
            BringUpMode::Group,
            "50 x 100 us prior fits 5 ms"
        );
        assert_eq!(b.mode(51), BringUpMode::PerDevice);
        // A measured change of 40 devices in 10 ms: 250 us each.
        b.observe(Duration::from_millis(10), 40);
        assert_eq!(b.predict(20), Duration::from_millis(5));
        assert_eq!(b.mode(20), BringUpMode::Group);
        assert_eq!(b.mode(21), BringUpMode::PerDevice);
        b.observe(Duration::from_millis(1), 0);
        assert_eq!(
            b.predict(4),
            Duration::from_millis(1),
            "zero devices teach nothing"
        );
    }
}
