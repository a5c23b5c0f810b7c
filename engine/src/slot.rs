//! slot: what one standard slot is (its derived spec) and the handle that keeps it alive.
//! No kernel calls except opening a namespace fd on request; provisioning lives in `engine`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{EngineConfig, SLOT_IFNAME};
use crate::netns::PooledNs;

/// Every deterministic fact of slot `id`: names, ifindex, MACs, addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotSpec {
    /// Slot number within the pool.
    pub id: u32,
    /// Host end's interface name and the pinned namespace's name.
    pub name: String,
    /// Name of the slot end inside the slot's namespace: `eth0` in pooled slots, the
    /// caller's choice (CNI_IFNAME) in attached ones.
    pub slot_ifname: String,
    /// ifindex of both ends (host end in the host namespace, `eth0` in the slot).
    pub ifindex: u32,
    /// Locally administered MAC of the host end.
    #[serde(serialize_with = "mac_text")]
    pub host_mac: [u8; 6],
    /// Locally administered MAC of the slot end.
    #[serde(serialize_with = "mac_text")]
    pub slot_mac: [u8; 6],
    /// Host end address (the slot's default gateway).
    pub host_ip: Ipv4Addr,
    /// Slot end address.
    pub slot_ip: Ipv4Addr,
    /// Prefix length of both addresses (31: a point-to-point pair); with `leased`, of the
    /// slot end's only.
    pub prefix_len: u8,
    /// MTU of both ends.
    pub mtu: u32,
    /// The addresses are an IPAM lease ([`Ipv4Lease`], given by an attach), laid out as
    /// the reference CNI `ptp` plugin lays them out: the slot end holds
    /// `slot_ip/prefix_len` without the kernel's prefix route, plus a route to `host_ip`/32
    /// on the link and one to the prefix via `host_ip`, so every other address of the
    /// prefix is reached through the host; the host end holds `host_ip`/32 with `slot_ip`
    /// as its peer, so the kernel routes `slot_ip`/32 through it. `false`: the pool's /31.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leased: bool,
    /// An IPv6 lease beside the IPv4 one (dual stack, given by an attach), or alone (with
    /// `ipv6_only`), laid out as the IPv4 lease is (see [`Ipv6Lease`]). The host end keeps
    /// IPv6 on: its `disable_ipv6` is not written. `None`: no IPv6 address (IPv6 is off on
    /// both ends, as for every other slot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Lease>,
    /// The slot has its IPv6 lease only: no IPv4 address or route on either end
    /// (`host_ip`, `slot_ip` and `prefix_len` are then unused).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6_only: bool,
    /// A microVM slot's tap ([`crate::microvm`]): the guest behind it holds `slot_ip`,
    /// the slot end holds no address. `None`: a standard slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<crate::microvm::TapSpec>,
}

/// An IPv4 address an IPAM plugin leased to an attachment: the slot end's address and
/// prefix, and the gateway, which the host end holds (as a /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Lease {
    /// The slot end's address.
    pub address: Ipv4Addr,
    /// Its prefix length (1 to 32; a /0 prefix route would be a second default route).
    pub prefix_len: u8,
    /// The gateway: the host end's address, the slot's next hop.
    pub gateway: Ipv4Addr,
}

impl Ipv4Lease {
    /// Parses `address` (`a.b.c.d/len`) and `gateway` (`a.b.c.d`), as a CNI result writes
    /// them, and checks that they can be a slot's two ends: the gateway is not the
    /// address, and neither is unspecified, multicast, broadcast or loopback.
    pub fn parse(address: &str, gateway: &str) -> Result<Self, String> {
        let (ip, len) = address
            .split_once('/')
            .ok_or_else(|| format!("address {address:?} has no prefix length (a.b.c.d/len)"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("address {address:?} is not an IPv4 address"))?;
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| (1..=32).contains(l))
            .ok_or_else(|| format!("address {address:?} has no prefix length of 1 to 32"))?;
        let gw: Ipv4Addr = gateway
            .parse()
            .map_err(|_| format!("gateway {gateway:?} is not an IPv4 address"))?;
        for (what, a) in [("address", ip), ("gateway", gw)] {
            if a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback() {
                return Err(format!("{what} {a} cannot be a device's address"));
            }
        }
        if ip == gw {
            return Err(format!("the gateway {gw} is the address itself"));
        }
        Ok(Self {
            address: ip,
            prefix_len,
            gateway: gw,
        })
    }

    /// The lease as a CNI result writes it: (`a.b.c.d/len`, gateway).
    pub fn to_strings(&self) -> (String, String) {
        (
            format!("{}/{}", self.address, self.prefix_len),
            self.gateway.to_string(),
        )
    }
}

/// An IPv6 address an IPAM plugin leased to an attachment, laid out as the reference CNI
/// `ptp` plugin lays it out: the slot end holds `address/prefix_len` without the kernel's
/// prefix route, with routes to `gateway`/128 on the link and to the prefix via
/// `gateway`; the host end holds `gateway`/128 with `address` as its peer, so the kernel
/// routes `address`/128 through it. Both addresses are added with IFA_F_NODAD (see
/// `wire::addr::ipv6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ipv6Lease {
    /// The slot end's address.
    pub address: Ipv6Addr,
    /// Its prefix length (1 to 128).
    pub prefix_len: u8,
    /// The gateway: the host end's address, the slot's next hop.
    pub gateway: Ipv6Addr,
}

impl Ipv6Lease {
    /// Parses `address` (`addr/len`) and `gateway`, as a CNI result writes them, and checks
    /// that they can be a slot's two ends: the gateway is not the address, and neither is
    /// unspecified, multicast, loopback or link-local (a link-local gateway would need no
    /// route and is a different layout).
    pub fn parse(address: &str, gateway: &str) -> Result<Self, String> {
        let (ip, len) = address
            .split_once('/')
            .ok_or_else(|| format!("address {address:?} has no prefix length (addr/len)"))?;
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| format!("address {address:?} is not an IPv6 address"))?;
        let prefix_len: u8 = len
            .parse()
            .ok()
            .filter(|l| (1..=128).contains(l))
            .ok_or_else(|| format!("address {address:?} has no prefix length of 1 to 128"))?;
        let gw: Ipv6Addr = gateway
            .parse()
            .map_err(|_| format!("gateway {gateway:?} is not an IPv6 address"))?;
        for (what, a) in [("address", ip), ("gateway", gw)] {
            if a.is_unspecified()
                || a.is_multicast()
                || a.is_loopback()
                || a.is_unicast_link_local()
                || a.to_ipv4_mapped().is_some()
            {
                return Err(format!("{what} {a} cannot be a slot end's address"));
            }
        }
        if ip == gw {
            return Err(format!("the gateway {gw} is the address itself"));
        }
        Ok(Self {
            address: ip,
            prefix_len,
            gateway: gw,
        })
    }

    /// The lease as a CNI result writes it: (`addr/len`, gateway).
    pub fn to_strings(&self) -> (String, String) {
        (
            format!("{}/{}", self.address, self.prefix_len),
            self.gateway.to_string(),
        )
    }
}

/// First octet of host-end MACs: locally administered (bit 1), unicast (bit 0 clear).
const HOST_END_OCTET: u8 = 0x02;
/// First octet of slot-end MACs: also locally administered unicast, told apart from host
/// ends at a glance.
const SLOT_END_OCTET: u8 = 0x06;
/// First octet of a microVM guest's MAC (what its VMM gives the guest interface).
const GUEST_OCTET: u8 = 0x0a;

/// The MAC of slot `id`'s end in a pool with base group `group`: first octet `end`, then
/// the base group (16 bits), then the id (24 bits). It is set in the creating message at
/// no extra cost and shows in every link dump, so it marks a host end as made by that
/// pool (`ownership`), and two pools in one host namespace never share a MAC.
fn pool_mac(end: u8, group: u32, id: u32) -> [u8; 6] {
    let g = ((group & 0xffff) as u16).to_be_bytes();
    let i = id.to_be_bytes();
    [end, g[0], g[1], i[1], i[2], i[3]]
}

/// The MAC netslot gives the host end of slot `id` in the pool with base group `group`.
pub fn host_end_mac(group: u32, id: u32) -> [u8; 6] {
    pool_mac(HOST_END_OCTET, group, id)
}

/// The MAC netslot derives for the slot end of slot `id` in the pool with base group
/// `group` (an attach may ask for another one).
pub fn slot_end_mac(group: u32, id: u32) -> [u8; 6] {
    pool_mac(SLOT_END_OCTET, group, id)
}

/// The MAC netslot derives for the guest of microVM slot `id` in the pool with base group
/// `group` (what its VMM should give the guest interface).
pub fn guest_mac(group: u32, id: u32) -> [u8; 6] {
    pool_mac(GUEST_OCTET, group, id)
}

impl SlotSpec {
    /// Derives slot `id` of a pool whose ifindexes start at `ifindex_base`.
    /// `config.check` must have accepted the id range.
    pub(crate) fn derive(config: &EngineConfig, id: u32, ifindex_base: u32) -> Self {
        let (host_ip, slot_ip) = config.ipv4_pool.pair(id).expect("checked by config");
        Self {
            id,
            name: config.slot_name(id),
            slot_ifname: SLOT_IFNAME.to_owned(),
            ifindex: ifindex_base + id,
            host_mac: host_end_mac(config.group, id),
            slot_mac: slot_end_mac(config.group, id),
            host_ip,
            slot_ip,
            prefix_len: 31,
            mtu: config.mtu,
            leased: false,
            ipv6: None,
            ipv6_only: false,
            tap: config.kind.tap().map(|tap| crate::microvm::TapSpec {
                name: tap.name.clone(),
                ifindex: 0,
                guest_mac: guest_mac(config.group, id),
                owner: tap.owner,
                group: tap.group,
                multi_queue: tap.multi_queue,
            }),
        }
    }

    /// The slot end's ifindex inside the slot's namespace: `ifindex`, or for a microVM
    /// slot the tap's with `netslot_bpf::SLOT_END_BIT` set (see [`crate::microvm`]).
    pub fn slot_end_ifindex(&self) -> u32 {
        self.tap
            .as_ref()
            .map_or(self.ifindex, crate::microvm::TapSpec::slot_end_ifindex)
    }

    /// Takes `lease`'s addresses instead of the pool's /31 (see [`SlotSpec::leased`]).
    pub(crate) fn lease(&mut self, lease: Ipv4Lease) {
        self.slot_ip = lease.address;
        self.prefix_len = lease.prefix_len;
        self.host_ip = lease.gateway;
        self.leased = true;
    }

    /// Adds `lease` beside the IPv4 addresses (see [`SlotSpec::ipv6`]).
    pub(crate) fn lease_ipv6(&mut self, lease: Ipv6Lease) {
        self.ipv6 = Some(lease);
    }

    /// Takes `lease` as the slot's only addresses: no IPv4 (see [`SlotSpec::ipv6_only`]).
    pub(crate) fn lease_ipv6_only(&mut self, lease: Ipv6Lease) {
        self.ipv6 = Some(lease);
        self.leased = true;
        self.ipv6_only = true;
    }

    /// The slot end's first address as `addr/len`: the IPv4 one, or the IPv6 lease's for
    /// Applies an attachment's IPAM leases: IPv4 (with IPv6 beside it for dual stack),
    /// or IPv6 alone; none leaves the pool's /31.
    pub(crate) fn leases(&mut self, v4: Option<Ipv4Lease>, v6: Option<Ipv6Lease>) {
        match (v4, v6) {
            (Some(v4), v6) => {
                self.lease(v4);
                if let Some(v6) = v6 {
                    self.lease_ipv6(v6);
                }
            }
            (None, Some(v6)) => self.lease_ipv6_only(v6),
            (None, None) => {}
        }
    }

    /// an IPv6-only slot.
    pub fn slot_address(&self) -> String {
        match self.ipv6.filter(|_| self.ipv6_only) {
            Some(v6) => format!("{}/{}", v6.address, v6.prefix_len),
            None => format!("{}/{}", self.slot_ip, self.prefix_len),
        }
    }

    /// The host end's first address (the slot's gateway): the IPv4 one, or the IPv6
    /// lease's gateway for an IPv6-only slot.
    pub fn host_address(&self) -> std::net::IpAddr {
        match self.ipv6.filter(|_| self.ipv6_only) {
            Some(v6) => v6.gateway.into(),
            None => self.host_ip.into(),
        }
    }

    /// Name of the slot end inside the slot's namespace.
    pub fn slot_ifname(&self) -> &str {
        &self.slot_ifname
    }
}

/// Formats a MAC as `02:1d:b0:00:00:07`.
pub fn mac_to_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a MAC written as six two-digit hex octets separated by `:` (either case),
/// e.g. `02:1d:b0:00:00:07`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for octet in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *octet = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Whether `mac` can be a device's own address: unicast (bit 0 of the first octet clear)
/// and not all zeros.
pub fn is_unicast_mac(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 0 && mac.iter().any(|&b| b != 0)
}

pub(crate) fn mac_text<S: serde::Serializer>(mac: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mac_to_string(mac))
}

/// A provisioned standard slot. Dropping it closes its namespace: the kernel then destroys
/// the namespace and both veth ends in a batch (cleanup_net), unless it is pinned.
#[derive(Debug)]
pub struct Slot {
    pub(crate) spec: SlotSpec,
    pub(crate) ns: PooledNs,
    pub(crate) pinned: Option<PathBuf>,
}

impl Slot {
    /// The slot's derived facts.
    pub fn spec(&self) -> &SlotSpec {
        &self.spec
    }

    /// An fd of the slot's network namespace, for setns(2) or IFLA_NET_NS_FD.
    pub fn netns_fd(&self) -> std::io::Result<BorrowedFd<'_>> {
        self.ns.nsfd()
    }

    /// The NETLINK_ROUTE socket opened inside the slot's namespace.
    pub fn route_socket(&self) -> BorrowedFd<'_> {
        self.ns.sock.as_fd()
    }

    /// Where the namespace is bind-mounted, when the engine pins.
    pub fn pinned_at(&self) -> Option<&Path> {
        self.pinned.as_deref()
    }

    /// What a VMM needs for a microVM slot's guest (tap, namespace, MAC, address,
    /// gateway, Firecracker's network-interfaces body); `None` for a standard slot.
    pub fn guest_network(&self) -> Option<crate::microvm::GuestNetwork> {
        crate::microvm::GuestNetwork::of(&self.spec, self.pinned_at())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_unicast_is_told() {
        let m = parse_mac("0A:58:0a:09:00:07").unwrap();
        assert_eq!(mac_to_string(&m), "0a:58:0a:09:00:07");
        assert!(is_unicast_mac(&m));
        for bad in [
            "",
            "0a:58:0a:09:00",
            "0a:58:0a:09:00:07:01",
            "0a-58-0a-09-00-07",
            "a:58:0a:09:00:07",
            "+a:58:0a:09:00:07",
            "0g:58:0a:09:00:07",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
        assert!(!is_unicast_mac(&[1, 0, 0x5e, 0, 0, 1]));
        assert!(!is_unicast_mac(&[0xff; 6]));
        assert!(!is_unicast_mac(&[0; 6]));
        let cfg = EngineConfig::default();
        assert_eq!(
            slot_end_mac(cfg.group, 7),
            SlotSpec::derive(&cfg, 7, 1000).slot_mac
        );
    }

    #[test]
    fn ipv6_leases_parse_and_refuse_what_cannot_be_an_end() {
        let l = Ipv6Lease::parse("fd00:22::5/64", "fd00:22::1").unwrap();
        assert_eq!(l.prefix_len, 64);
        assert_eq!(
            l.to_strings(),
            ("fd00:22::5/64".to_owned(), "fd00:22::1".to_owned())
        );
        for (a, g, says) in [
            ("fd00::5", "fd00::1", "no prefix length"),
            ("fd00::5/0", "fd00::1", "1 to 128"),
            ("fd00::5/129", "fd00::1", "1 to 128"),
            ("10.0.0.5/24", "fd00::1", "not an IPv6 address"),
            ("fd00::5/64", "10.0.0.1", "not an IPv6"),
            ("fd00::5/64", "fe80::1", "gateway fe80::1 cannot"),
            ("ff02::5/64", "fd00::1", "address ff02::5 cannot"),
            ("::ffff:10.0.0.5/64", "fd00::1", "cannot"),
            ("fd00::5/64", "fd00::5", "the address itself"),
        ] {
            let e = Ipv6Lease::parse(a, g).unwrap_err();
            assert!(e.contains(says), "{a} {g}: {e}");
        }
    }

    #[test]
    fn derive_is_deterministic_and_distinct() {
        let cfg = EngineConfig::default();
        let a = SlotSpec::derive(&cfg, 7, 1000);
        assert_eq!(a, SlotSpec::derive(&cfg, 7, 1000));
        assert_eq!(a.name, "ns7");
        assert_eq!(a.ifindex, 1007);
        // 7600 = 0x1db0: the pool's base group, then the id.
        assert_eq!(mac_to_string(&a.host_mac), "02:1d:b0:00:00:07");
        assert_eq!(mac_to_string(&a.slot_mac), "06:1d:b0:00:00:07");
        assert_eq!(a.host_ip, Ipv4Addr::new(100, 64, 0, 14));
        assert_eq!(a.slot_ip, Ipv4Addr::new(100, 64, 0, 15));
        let b = SlotSpec::derive(&cfg, 300, 1000);
        assert_ne!(a.host_mac, b.host_mac);
        assert_eq!(mac_to_string(&b.host_mac), "02:1d:b0:00:01:2c");
        let other_pool = EngineConfig {
            group: 7601,
            ..EngineConfig::default()
        };
        assert_ne!(SlotSpec::derive(&other_pool, 7, 1000).host_mac, a.host_mac);
    }
}
