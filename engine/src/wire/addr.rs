//! addr: RTM_NEWADDR requests for the /31 point-to-point addresses of a slot.
//! Builds messages only; RTM_NEWADDR acts in the sending socket's namespace (sock_net).

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
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
}
