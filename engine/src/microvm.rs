//! microvm: what a microVM slot adds to the standard slot (a tap for the guest), and what a
//! VMM is told about it (guest address, gateway, MAC; Firecracker's network-interfaces body).
//! Types and pure derivations only; the tap is made by `tap`, planned by `plan`.
//!
//! A microVM slot is the standard slot whose namespace also holds a persistent tap device,
//! owned by the VMM's uid or gid so that an unprivileged VMM (Firecracker under its jailer,
//! Cloud Hypervisor, QEMU) can open it by name. The guest behind the tap takes the slot's
//! address: the slot end (`eth0`) carries no address and no route, and an XDP program
//! (`netslot_bpf::TapRedirect`) on the tap and on the slot end (and on `lo`, which it
//! passes: one group change attaches it to every device of the namespace) forwards every
//! frame between them, so the guest sits directly on the veth's wire, with the host end as its
//! gateway. Why XDP and not routing, and what each costs: docs/microvm.md.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// What every slot of a pool is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SlotKind {
    /// The standard slot: a namespace with `lo` up and the slot end `eth0` holding the
    /// slot's address and default route.
    #[default]
    Standard,
    /// The standard slot's namespace and veth pair plus a tap device for a microVM guest,
    /// which holds the slot's address instead of `eth0`.
    Microvm(TapConfig),
}

impl SlotKind {
    /// The name the CLI uses (`--kind`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Microvm(_) => "microvm",
        }
    }

    /// The tap configuration, for a microVM pool.
    pub fn tap(&self) -> Option<&TapConfig> {
        match self {
            Self::Standard => None,
            Self::Microvm(tap) => Some(tap),
        }
    }
}

/// Default name of the tap inside each microVM slot's namespace.
pub const DEFAULT_TAP_NAME: &str = "tap0";

/// How each microVM slot's tap is made (tun_set_iff and the TUNSET* ioctls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    /// Interface name inside the slot's namespace (Firecracker's `host_dev_name`).
    pub name: String,
    /// The uid that may open the tap without CAP_NET_ADMIN (TUNSETOWNER). One RTNL
    /// acquisition per slot.
    pub owner: Option<u32>,
    /// The gid whose members may open it (TUNSETGROUP). One more RTNL acquisition per
    /// slot; the kernel lets a process in if either the owner or the group matches.
    pub group: Option<u32>,
    /// IFF_MULTI_QUEUE: the VMM may attach several queues (one fd each). A VMM that
    /// opens the tap must ask for the same (tun_set_iff refuses a mismatch with EINVAL);
    /// Firecracker opens single-queue taps.
    pub multi_queue: bool,
}

impl Default for TapConfig {
    fn default() -> Self {
        Self {
            name: DEFAULT_TAP_NAME.to_owned(),
            owner: None,
            group: None,
            multi_queue: false,
        }
    }
}

/// A microVM slot's tap, as its spec records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TapSpec {
    /// Interface name inside the slot's namespace.
    pub name: String,
    /// The tap's ifindex inside the slot's namespace, as the kernel gave it when the pool
    /// made the tap (0 until the slot has its namespace). The slot end's is this with
    /// `netslot_bpf::SLOT_END_BIT` set, which is how the redirect program tells the two
    /// apart without per-slot state.
    pub ifindex: u32,
    /// The MAC the guest's interface should have (Firecracker's `guest_mac`).
    #[serde(serialize_with = "crate::slot::mac_text")]
    pub guest_mac: [u8; 6],
    /// The uid that may open the tap, if any.
    pub owner: Option<u32>,
    /// The gid whose members may open it, if any.
    pub group: Option<u32>,
    /// Whether the tap is multi-queue.
    pub multi_queue: bool,
}

impl TapSpec {
    /// The slot end's ifindex inside the slot's namespace.
    pub fn slot_end_ifindex(&self) -> u32 {
        self.ifindex | netslot_bpf::SLOT_END_BIT
    }
}

/// What a VMM needs to give a microVM slot's guest its network, in one place: the tap to
/// open, the namespace to open it in, the guest's MAC, address and gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNetwork {
    /// The slot's network namespace file, when pinned (the jailer's `--netns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The tap's name inside that namespace.
    pub tap: String,
    /// The guest interface's MAC.
    pub guest_mac: String,
    /// The guest's address with its prefix length (`a.b.c.d/31`).
    pub guest_address: String,
    /// The guest's default gateway (the host end's address).
    pub gateway: Ipv4Addr,
    /// The guest's netmask, for kernel command lines (`ip=` takes one).
    pub netmask: Ipv4Addr,
    /// The MTU of the link.
    pub mtu: u32,
    /// The body of Firecracker's `PUT /network-interfaces/{iface_id}` for this slot.
    pub firecracker: FirecrackerInterface,
}

/// Firecracker's network-interfaces body (its API's `NetworkInterface`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirecrackerInterface {
    /// The interface id inside the VM's configuration; netslot names it `eth0`.
    pub iface_id: String,
    /// The tap's name (in the namespace Firecracker runs in).
    pub host_dev_name: String,
    /// The guest's MAC.
    pub guest_mac: String,
}

/// Interface id netslot puts in a slot's Firecracker body.
pub const FIRECRACKER_IFACE_ID: &str = "eth0";

impl GuestNetwork {
    /// The guest network of a microVM slot `spec` (None for a standard slot), with the
    /// namespace's pin when it has one.
    pub fn of(spec: &crate::SlotSpec, netns: Option<&std::path::Path>) -> Option<Self> {
        let tap = spec.tap.as_ref()?;
        let guest_mac = crate::mac_to_string(&tap.guest_mac);
        Some(Self {
            netns: netns.map(|p| p.display().to_string()),
            tap: tap.name.clone(),
            guest_mac: guest_mac.clone(),
            guest_address: format!("{}/{}", spec.slot_ip, spec.prefix_len),
            gateway: spec.host_ip,
            netmask: netmask(spec.prefix_len),
            mtu: spec.mtu,
            firecracker: FirecrackerInterface {
                iface_id: FIRECRACKER_IFACE_ID.to_owned(),
                host_dev_name: tap.name.clone(),
                guest_mac,
            },
        })
    }
}

/// The netmask of a prefix length (0 to 32).
fn netmask(prefix_len: u8) -> Ipv4Addr {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0);
    Ipv4Addr::from(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineConfig;

    #[test]
    fn a_microvm_spec_gives_the_guest_the_slot_address_and_firecracker_its_body() {
        let cfg = EngineConfig {
            kind: SlotKind::Microvm(TapConfig {
                owner: Some(1000),
                ..TapConfig::default()
            }),
            ..EngineConfig::default()
        };
        let mut spec = crate::SlotSpec::derive(&cfg, 7, 1000);
        spec.tap.as_mut().unwrap().ifindex = 2;
        let tap = spec.tap.clone().unwrap();
        assert_eq!(tap.slot_end_ifindex(), 2 | netslot_bpf::SLOT_END_BIT);
        assert_eq!(tap.owner, Some(1000));
        // The guest's MAC is the pool's, distinct from both veth ends'.
        assert_eq!(crate::mac_to_string(&tap.guest_mac), "0a:1d:b0:00:00:07");
        assert_eq!(tap.guest_mac, crate::guest_mac(cfg.group, 7));
        let net = GuestNetwork::of(&spec, Some(std::path::Path::new("/run/netns/ns7"))).unwrap();
        assert_eq!(net.guest_address, "100.64.0.15/31");
        assert_eq!(net.gateway, Ipv4Addr::new(100, 64, 0, 14));
        assert_eq!(net.netmask, Ipv4Addr::new(255, 255, 255, 254));
        let body = serde_json::to_value(&net.firecracker).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "iface_id": "eth0",
                "host_dev_name": "tap0",
                "guest_mac": "0a:1d:b0:00:00:07",
            })
        );
        let standard = crate::SlotSpec::derive(&EngineConfig::default(), 7, 1000);
        assert_eq!(GuestNetwork::of(&standard, None), None);
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask(31), Ipv4Addr::new(255, 255, 255, 254));
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
    }
}
