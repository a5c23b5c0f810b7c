//! addr: RTM_NEWADDR requests for the /31 point-to-point addresses of a slot, and for the
//! two ends of a leased slot (`SlotSpec::leased`, and the IPv6 lease `SlotSpec::ipv6`).
//! Builds messages only; RTM_NEWADDR acts in the sending socket's namespace (sock_net).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// RTM_NEWADDR of `ip/prefix_len` on device `index` (IFA_LOCAL and IFA_ADDRESS both `ip`,
/// as `ip addr add` sends for a non-peer address).
pub(crate) fn ipv4(index: u32, ip: Ipv4Addr, prefix_len: u8) -> RouteNetlinkMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix_len;
    msg.header.index = index;
    msg.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(ip)),
        AddressAttribute::Address(IpAddr::V4(ip)),
    ];
    RouteNetlinkMessage::NewAddress(msg)
}

/// RTM_NEWADDR of `ip/prefix_len` on device `index` with IFA_F_NOPREFIXROUTE (in
/// IFA_FLAGS: the flag does not fit the header's 8-bit field): the kernel adds no route
/// to the prefix, as `ip addr add ... noprefixroute` (fib_add_ifaddr skips it).
pub(crate) fn ipv4_without_prefix_route(
    index: u32,
    ip: Ipv4Addr,
    prefix_len: u8,
) -> RouteNetlinkMessage {
    let RouteNetlinkMessage::NewAddress(mut msg) = ipv4(index, ip, prefix_len) else {
        unreachable!("ipv4 builds RTM_NEWADDR")
    };
    msg.attributes
        .push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
    RouteNetlinkMessage::NewAddress(msg)
}

/// RTM_NEWADDR of `local`/32 with peer `peer` on device `index` (IFA_LOCAL `local`,
/// IFA_ADDRESS `peer`, as `ip addr add LOCAL peer PEER/32`): once the device is up, the
/// kernel routes `peer`/32 through it (fib_add_ifaddr adds the peer's prefix route).
pub(crate) fn ipv4_peer(index: u32, local: Ipv4Addr, peer: Ipv4Addr) -> RouteNetlinkMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = 32;
    msg.header.index = index;
    msg.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(local)),
        AddressAttribute::Address(IpAddr::V4(peer)),
    ];
    RouteNetlinkMessage::NewAddress(msg)
}

/// RTM_NEWADDR of an IPv6 lease's slot end, `ip/prefix_len` on device `index`, with
/// IFA_F_NOPREFIXROUTE (no kernel route to the prefix: the plan routes it via the
/// gateway) and IFA_F_NODAD (usable as soon as the device has a carrier: no duplicate
/// address detection, whose probe would hold the address tentative for about a second and
/// make the first packets fail with EADDRNOTAVAIL or go unanswered). IPAM gave the address
/// to this slot alone, and the link has exactly two ends, so there is nothing to detect.
pub(crate) fn ipv6(index: u32, ip: Ipv6Addr, prefix_len: u8) -> RouteNetlinkMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet6;
    msg.header.prefix_len = prefix_len;
    msg.header.index = index;
    msg.attributes = vec![
        AddressAttribute::Local(IpAddr::V6(ip)),
        AddressAttribute::Address(IpAddr::V6(ip)),
        AddressAttribute::Flags(AddressFlags::Noprefixroute | AddressFlags::Nodad),
    ];
    RouteNetlinkMessage::NewAddress(msg)
}

/// RTM_NEWADDR of `local`/128 with peer `peer` on device `index`, with IFA_F_NODAD (as
/// [`ipv6`]): the IPv6 counterpart of [`ipv4_peer`]. Once the address is no longer
/// tentative (the device up, with a carrier), the kernel adds routes to `local`/128 and
/// `peer`/128 through the device (__ipv6_ifa_notify, addrconf_prefix_route).
pub(crate) fn ipv6_peer(index: u32, local: Ipv6Addr, peer: Ipv6Addr) -> RouteNetlinkMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet6;
    msg.header.prefix_len = 128;
    msg.header.index = index;
    msg.attributes = vec![
        AddressAttribute::Local(IpAddr::V6(local)),
        AddressAttribute::Address(IpAddr::V6(peer)),
        AddressAttribute::Flags(AddressFlags::Nodad),
    ];
    RouteNetlinkMessage::NewAddress(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::push_request;
    use bytes::BytesMut;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};

    #[test]
    fn round_trips() {
        let msg = ipv4(12, Ipv4Addr::new(100, 64, 0, 1), 31);
        let mut out = BytesMut::new();
        push_request(&mut out, msg.clone(), 0, 9);
        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&out).unwrap();
        assert_eq!(parsed.payload, NetlinkPayload::InnerMessage(msg));
        // ifaddrmsg (8) + two 8-byte IPv4 attributes + nlmsghdr (16).
        assert_eq!(out.len(), 16 + 8 + 8 + 8);
    }

    #[test]
    fn leased_ends_round_trip() {
        for msg in [
            ipv4_without_prefix_route(12, Ipv4Addr::new(10, 22, 0, 5), 24),
            ipv4_peer(12, Ipv4Addr::new(10, 22, 0, 1), Ipv4Addr::new(10, 22, 0, 5)),
            ipv6(12, "fd00:22::5".parse().unwrap(), 64),
            ipv6_peer(
                12,
                "fd00:22::1".parse().unwrap(),
                "fd00:22::5".parse().unwrap(),
            ),
        ] {
            let mut out = BytesMut::new();
            push_request(&mut out, msg.clone(), 0, 9);
            let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&out).unwrap();
            assert_eq!(parsed.payload, NetlinkPayload::InnerMessage(msg));
        }
    }

    #[test]
    fn ipv6_ends_carry_nodad_in_ifa_flags() {
        let RouteNetlinkMessage::NewAddress(m) = ipv6(12, "fd00:22::5".parse().unwrap(), 64) else {
            unreachable!()
        };
        assert_eq!(m.header.family, AddressFamily::Inet6);
        assert!(m.attributes.contains(&AddressAttribute::Flags(
            AddressFlags::Noprefixroute | AddressFlags::Nodad
        )));
        let peer = ipv6_peer(
            12,
            "fd00:22::1".parse().unwrap(),
            "fd00:22::5".parse().unwrap(),
        );
        let RouteNetlinkMessage::NewAddress(m) = peer else {
            unreachable!()
        };
        assert_eq!(m.header.prefix_len, 128);
        assert!(m
            .attributes
            .contains(&AddressAttribute::Address("fd00:22::5".parse().unwrap())));
        assert!(m
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
    }
}
