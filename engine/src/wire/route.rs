//! route: RTM_NEWROUTE for a slot's default route (and a leased slot's two other routes),
//! and the IPv4 route dump.
//! Builds messages only; the route lands in the sending socket's namespace (sock_net).

use std::net::Ipv4Addr;

use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// RTM_NEWROUTE `default via gateway dev oif` in the main table.
pub(crate) fn default_via(gateway: Ipv4Addr, oif: u32) -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = 0;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Static;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes = vec![
        RouteAttribute::Gateway(RouteAddress::Inet(gateway)),
        RouteAttribute::Oif(oif),
    ];
    RouteNetlinkMessage::NewRoute(msg)
}

/// RTM_NEWROUTE `dst/32 dev oif scope link` in the main table: `dst` is on the link.
pub(crate) fn on_link(dst: Ipv4Addr, oif: u32) -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = 32;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Static;
    msg.header.scope = RouteScope::Link;
    msg.header.kind = RouteType::Unicast;
    msg.attributes = vec![
        RouteAttribute::Destination(RouteAddress::Inet(dst)),
        RouteAttribute::Oif(oif),
    ];
    RouteNetlinkMessage::NewRoute(msg)
}

/// RTM_NEWROUTE `dst/len via gateway dev oif` in the main table (`dst` is masked to
/// `len`, as the kernel requires of a route's destination).
pub(crate) fn via(dst: Ipv4Addr, len: u8, gateway: Ipv4Addr, oif: u32) -> RouteNetlinkMessage {
    let RouteNetlinkMessage::NewRoute(mut msg) = default_via(gateway, oif) else {
        unreachable!("default_via builds RTM_NEWROUTE")
    };
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    let net = Ipv4Addr::from(u32::from(dst) & mask);
    msg.header.destination_prefix_length = len;
    msg.attributes
        .insert(0, RouteAttribute::Destination(RouteAddress::Inet(net)));
    RouteNetlinkMessage::NewRoute(msg)
}

/// RTM_GETROUTE dump request for IPv4 routes of every table (send with NLM_F_DUMP).
pub(crate) fn dump_ipv4() -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
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
}
