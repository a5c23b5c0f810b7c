//! route: RTM_NEWROUTE for a slot's default route (and a leased slot's two other routes),
//! IPv4 or IPv6 by the addresses given, and the IPv4 route dump.
//! Builds messages only; the route lands in the sending socket's namespace (sock_net).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// The family and the netlink form of `ip`.
fn family_of(ip: IpAddr) -> (AddressFamily, RouteAddress) {
    match ip {
        IpAddr::V4(a) => (AddressFamily::Inet, RouteAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, RouteAddress::Inet6(a)),
    }
}

/// RTM_NEWROUTE `default via gateway dev oif` in the main table (IPv4 `0.0.0.0/0` or
/// IPv6 `::/0`, by the gateway's family).
pub(crate) fn default_via(gateway: impl Into<IpAddr>, oif: u32) -> RouteNetlinkMessage {
    let (family, gateway) = family_of(gateway.into());
    let mut msg = RouteMessage::default();
    msg.header.address_family = family;
    msg.header.destination_prefix_length = 0;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Static;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes = vec![RouteAttribute::Gateway(gateway), RouteAttribute::Oif(oif)];
    RouteNetlinkMessage::NewRoute(msg)
}

/// RTM_NEWROUTE `dst/32 dev oif scope link` (`dst/128` for IPv6) in the main table:
/// `dst` is on the link.
pub(crate) fn on_link(dst: impl Into<IpAddr>, oif: u32) -> RouteNetlinkMessage {
    let dst = dst.into();
    let (family, dst_attr) = family_of(dst);
    let mut msg = RouteMessage::default();
    msg.header.address_family = family;
    msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Static;
    msg.header.scope = RouteScope::Link;
    msg.header.kind = RouteType::Unicast;
    msg.attributes = vec![
        RouteAttribute::Destination(dst_attr),
        RouteAttribute::Oif(oif),
    ];
    RouteNetlinkMessage::NewRoute(msg)
}

/// RTM_NEWROUTE `dst/len via gateway dev oif` in the main table (`dst` is masked to
/// `len`, as the kernel requires of a route's destination; `dst` and `gateway` are of
/// one family).
pub(crate) fn via(
    dst: impl Into<IpAddr>,
    len: u8,
    gateway: impl Into<IpAddr>,
    oif: u32,
) -> RouteNetlinkMessage {
    let RouteNetlinkMessage::NewRoute(mut msg) = default_via(gateway, oif) else {
        unreachable!("default_via builds RTM_NEWROUTE")
    };
    let net = match dst.into() {
        IpAddr::V4(d) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            RouteAddress::Inet(Ipv4Addr::from(u32::from(d) & mask))
        }
        IpAddr::V6(d) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            RouteAddress::Inet6(Ipv6Addr::from(u128::from(d) & mask))
        }
    };
    msg.header.destination_prefix_length = len;
    msg.attributes.insert(0, RouteAttribute::Destination(net));
    RouteNetlinkMessage::NewRoute(msg)
}

/// RTM_GETROUTE dump request for IPv4 routes of every table (send with NLM_F_DUMP).
pub(crate) fn dump_ipv4() -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    RouteNetlinkMessage::GetRoute(msg)
}

/// RTM_GETROUTE dump request for IPv6 routes of every table (send with NLM_F_DUMP).
pub(crate) fn dump_ipv6() -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet6;
    RouteNetlinkMessage::GetRoute(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::push_request;
    use bytes::BytesMut;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};

    #[test]
    fn round_trips() {
        let msg = default_via(Ipv4Addr::new(100, 64, 0, 0), 77);
        let mut out = BytesMut::new();
        push_request(&mut out, msg.clone(), 0, 3);
        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&out).unwrap();
        assert_eq!(parsed.payload, NetlinkPayload::InnerMessage(msg));
    }

    #[test]
    fn leased_routes_round_trip() {
        let gw = Ipv4Addr::new(10, 22, 0, 1);
        let msg = via(Ipv4Addr::new(10, 22, 0, 5), 24, gw, 7);
        let RouteNetlinkMessage::NewRoute(m) = &msg else {
            unreachable!()
        };
        assert_eq!(
            m.attributes[0],
            RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(10, 22, 0, 0)))
        );
        for msg in [msg.clone(), on_link(gw, 7), via(gw, 0, gw, 7)] {
            let mut out = BytesMut::new();
            push_request(&mut out, msg.clone(), 0, 3);
            let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&out).unwrap();
            assert_eq!(parsed.payload, NetlinkPayload::InnerMessage(msg));
        }
    }

    #[test]
    fn ipv6_routes_round_trip_in_their_family() {
        let gw: Ipv6Addr = "fd00:22::1".parse().unwrap();
        let msg = via("fd00:22::5".parse::<Ipv6Addr>().unwrap(), 64, gw, 7);
        let RouteNetlinkMessage::NewRoute(m) = &msg else {
            unreachable!()
        };
        assert_eq!(m.header.address_family, AddressFamily::Inet6);
        assert_eq!(
            m.attributes[0],
            RouteAttribute::Destination(RouteAddress::Inet6("fd00:22::".parse().unwrap()))
        );
        let RouteNetlinkMessage::NewRoute(l) = on_link(gw, 7) else {
            unreachable!()
        };
        assert_eq!(l.header.destination_prefix_length, 128);
        assert_eq!(l.header.scope, RouteScope::Link);
        for msg in [msg.clone(), on_link(gw, 7), default_via(gw, 7)] {
            let mut out = BytesMut::new();
            push_request(&mut out, msg.clone(), 0, 3);
            let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&out).unwrap();
            assert_eq!(parsed.payload, NetlinkPayload::InnerMessage(msg));
        }
    }
}
