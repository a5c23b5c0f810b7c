//! route: RTM_NEWROUTE for a slot's default route, and the IPv4 route dump.
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
}
