//! common: the standard slot's numbers (names, addresses) and the host-side read-back.
//! No provisioning; each system turns these numbers into its own requests.

use std::net::Ipv4Addr;

use netslot::HostNs;
use serde::{Deserialize, Serialize};

use super::{RunSpec, SystemError};

/// First address of the /31 pool (design.md S1: 100.64.0.0/16).
const POOL_BASE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);

/// Slot `id` in numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotPlan {
    /// Host end name and namespace name.
    pub name: String,
    /// Host end address (the slot's gateway).
    pub host_ip: Ipv4Addr,
    /// Slot end address.
    pub slot_ip: Ipv4Addr,
}

impl SlotPlan {
    /// The numbers of slot `id` of `spec`.
    pub fn new(spec: &RunSpec, id: usize) -> Self {
        let host = u32::from(POOL_BASE) + 2 * id as u32;
        Self {
            name: format!("{}{id}", spec.prefix),
            host_ip: Ipv4Addr::from(host),
            slot_ip: Ipv4Addr::from(host + 1),
        }
    }
}

/// What the host namespace holds after provisioning.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostView {
    /// veth devices (the host ends; the child's namespace holds nothing else).
    pub host_ends: usize,
    /// Of those, up.
    pub up: usize,
    /// Of those, in the run's group.
    pub in_group: usize,
    /// Of those, holding an IPv4 address.
    pub with_v4: usize,
    /// Slots whose namespace holds their microVM tap, up (`System::verify_slots`);
    /// `None` for the standard-slot systems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taps_up: Option<usize>,
}

/// Reads the calling thread's namespace back: links and addresses of the veth devices
/// (by kind, not name: CNI's ptp names its host ends `veth<random>`).
pub fn verify_host(spec: &RunSpec) -> Result<HostView, SystemError> {
    let host = HostNs::current().map_err(SystemError::ctx("open host namespace"))?;
    let links = host.links().map_err(SystemError::ctx("dump links"))?;
    let addrs = host
        .addresses()
        .map_err(SystemError::ctx("dump addresses"))?;
    let mut v = HostView::default();
    for l in &links {
        if l.kind.as_deref() != Some("veth") {
            continue;
        }
        v.host_ends += 1;
        v.up += usize::from(l.up);
        v.in_group += usize::from(netslot::groups::owns(spec.group, l.group));
        v.with_v4 += usize::from(addrs.iter().any(|a| a.index == l.index && a.addr.is_ipv4()));
    }
    Ok(v)
}

/// Of the network namespaces at `paths` (pins, or /proc/self/fd/N), how many hold their
/// microVM tap: a device named `tap0` of kind tun, up. Untimed read-back: one link dump per
/// namespace.
pub fn taps_up<'a>(paths: impl Iterator<Item = &'a std::path::Path>) -> Result<usize, SystemError> {
    let mut up = 0;
    for path in paths {
        let ns = HostNs::open_for_reading(path)
            .map_err(SystemError::ctx(format!("open {}", path.display())))?;
        let links = ns.links().map_err(SystemError::ctx(format!(
            "dump links of {}",
            path.display()
        )))?;
        up += usize::from(
            links
                .iter()
                .any(|l| l.name == TAP_NAME && l.kind.as_deref() == Some("tun") && l.up),
        );
    }
    Ok(up)
}

/// The tap's name in every microVM slot (the engine's default, and the baseline's).
pub const TAP_NAME: &str = netslot::microvm::DEFAULT_TAP_NAME;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_numbers() {
        let spec = RunSpec {
            n: 3,
            prefix: "nb".into(),
            group: 7,
        };
        let p = SlotPlan::new(&spec, 129);
        assert_eq!(p.name, "nb129");
        assert_eq!(p.host_ip, Ipv4Addr::new(100, 64, 1, 2));
        assert_eq!(p.slot_ip, Ipv4Addr::new(100, 64, 1, 3));
    }
}
