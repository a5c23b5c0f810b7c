//! link: RTM_NEWLINK / RTM_SETLINK / RTM_DELLINK / RTM_GETLINK requests for slot devices.
//! Builds messages only; which socket (namespace) they go to is the planner's choice.

use std::os::fd::RawFd;

use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage, LinkXdp,
};
use netlink_packet_route::RouteNetlinkMessage;

/// What one in-place veth pair needs: both ends, created by ONE RTM_NEWLINK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VethPair<'a> {
    /// ifindex of the host end. The kernel honours the peer's ifi_index only when the
    /// primary has one too (veth_newlink), and a known host ifindex lets host addresses
    /// be batched without a lookup.
    pub ifindex: u32,
    /// ifindex of the slot end, in the slot's namespace: `ifindex` for a standard slot,
    /// the tap's with the redirect bit for a microVM slot (`crate::microvm`).
    pub slot_ifindex: u32,
    /// The slot end (primary), created in the sending socket's namespace.
    pub slot_name: &'a str,
    pub slot_mac: [u8; 6],
    /// The host end (peer), created directly in `host_netns_fd`'s namespace.
    pub host_name: &'a str,
    pub host_mac: [u8; 6],
    pub host_netns_fd: RawFd,
    pub group: u32,
    pub mtu: u32,
}

/// RTM_SETLINK that sets IFF_UP on one device (used for `lo`, ifindex 1 in every namespace).
pub(crate) fn set_up(index: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(msg)
}

/// RTM_NEWLINK creating a veth pair in place: primary here, peer in the host namespace.
///
/// rtnl_newlink resolves the peer's namespace from the peer's own IFLA_NET_NS_FD
/// (veth_newlink -> rtnl_link_get_net_capable), not from the primary's attributes: a peer
/// without one lands in the socket's namespace. IFF_UP on the outer header brings the
/// primary up in the same acquisition (rtnl_configure_link); IFF_UP on the peer fails with
/// ENOTCONN on 6.18 (veth_open before the pair is linked), so the peer stays down and its
/// group is brought up later by one group change.
///
/// Both ends ask for one TX and one RX queue. Without IFLA_NUM_TX_QUEUES/RX_QUEUES a veth
/// gets one per possible CPU, and veth_init_queues then cuts each registered end back to
/// one real queue: netif_set_real_num_tx_queues runs synchronize_net there, an expedited
/// RCU grace period under RTNL, on every end of every slot (docs/rtnl-hold.md).
pub(crate) fn veth_in_place(pair: &VethPair<'_>) -> RouteNetlinkMessage {
    let mut peer = LinkMessage::default();
    peer.header.index = pair.ifindex;
    peer.attributes = vec![
        LinkAttribute::IfName(pair.host_name.to_owned()),
        LinkAttribute::Address(pair.host_mac.to_vec()),
        LinkAttribute::Mtu(pair.mtu),
        LinkAttribute::Group(pair.group),
        LinkAttribute::NetNsFd(pair.host_netns_fd),
        LinkAttribute::NumTxQueues(1),
        LinkAttribute::NumRxQueues(1),
    ];
    let mut primary = LinkMessage::default();
    primary.header.index = pair.slot_ifindex;
    primary.header.flags = LinkFlags::Up;
    primary.header.change_mask = LinkFlags::Up;
    primary.attributes = vec![
        LinkAttribute::IfName(pair.slot_name.to_owned()),
        LinkAttribute::Address(pair.slot_mac.to_vec()),
        LinkAttribute::Mtu(pair.mtu),
        LinkAttribute::NumTxQueues(1),
        LinkAttribute::NumRxQueues(1),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]),
    ];
    RouteNetlinkMessage::NewLink(primary)
}

/// RTM_SETLINK giving device `index` no IPv6 address generation (IN6_ADDR_GEN_MODE_NONE).
///
/// Not part of the creating RTM_NEWLINK: on 6.18 IFLA_AF_SPEC there fails the whole
/// creation with EAFNOSUPPORT (measured). Sent after creation and before the device gets
/// a carrier, it stops the link-local address and its duplicate address detection.
pub(crate) fn ipv6_addr_gen_none(index: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(no_ipv6_addresses());
    RouteNetlinkMessage::SetLink(msg)
}

/// Group change that sets IN6_ADDR_GEN_MODE_NONE on every device of `group`. It must come
/// before [`group_up`]: do_setlink applies IFF_UP before IFLA_AF_SPEC, so combined in one
/// message the devices would come up with link-local addresses (measured).
pub(crate) fn group_ipv6_addr_gen_none(group: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::Group(group));
    msg.attributes.push(no_ipv6_addresses());
    RouteNetlinkMessage::NewLink(msg)
}

/// IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE = NONE } }.
fn no_ipv6_addresses() -> LinkAttribute {
    LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
        In6AddrGenMode::None,
    )])])
}

/// RTM_NEWLINK with ifi_index 0, no name and no NLM_F_CREATE: rtnl_newlink hands it to
/// rtnl_group_changelink, which runs do_setlink on every device of `group` in the socket's
/// namespace under ONE RTNL acquisition. Brings them all up; `xdp_fd` attaches a program
/// to all of them in the same pass.
pub(crate) fn group_up(group: u32, xdp_fd: Option<RawFd>) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg.attributes.push(LinkAttribute::Group(group));
    if let Some(fd) = xdp_fd {
        msg.attributes
            .push(LinkAttribute::Xdp(vec![LinkXdp::Fd(fd)]));
    }
    RouteNetlinkMessage::NewLink(msg)
}

/// RTM_SETLINK attaching the XDP program `fd` to device `index` (do_setlink ->
/// dev_change_xdp_fd): one RTNL acquisition per device.
pub(crate) fn attach_xdp(index: u32, fd: RawFd) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes
        .push(LinkAttribute::Xdp(vec![LinkXdp::Fd(fd)]));
    RouteNetlinkMessage::SetLink(msg)
}

/// The MTU a tap starts with (ether_setup).
pub(crate) const TAP_DEFAULT_MTU: u32 = 1500;

/// RTM_SETLINK setting one device's MTU.
pub(crate) fn set_mtu(index: u32, mtu: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::Mtu(mtu));
    RouteNetlinkMessage::SetLink(msg)
}

/// Group change on device group 0 of the sending socket's namespace (a microVM slot's:
/// `lo`, the tap, the slot end): up, IPv6 address generation off when asked, and the XDP
/// program `xdp_fd`, each device in its best mode (no mode flag: native where the driver
/// has ndo_bpf, generic otherwise). do_setlink brings a device up before it applies
/// IFLA_AF_SPEC, which here makes no link-local address: `lo` gets none anyway, the slot
/// end has no carrier until its host end comes up, and a persistent tap with no queue
/// attached has none either (__tun_detach turns it off as the pool thread's fd goes; a
/// VMM's TUNSETIFF turns it on); addrconf
/// waits for a carrier, and by then the mode is NONE.
pub(crate) fn default_group_ready(ipv6_off: bool, xdp_fd: RawFd) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg.attributes.push(LinkAttribute::Group(0));
    if ipv6_off {
        msg.attributes.push(no_ipv6_addresses());
    }
    msg.attributes
        .push(LinkAttribute::Xdp(vec![LinkXdp::Fd(xdp_fd)]));
    RouteNetlinkMessage::NewLink(msg)
}

/// RTM_DELLINK by group (ifi_index 0, IFLA_GROUP): rtnl_group_dellink deletes every device
/// of the group in one acquisition; veth_dellink takes each peer with it.
pub(crate) fn group_delete(group: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::Group(group));
    RouteNetlinkMessage::DelLink(msg)
}

/// RTM_DELLINK of one device by ifindex (rollback of a single failed slot only).
pub(crate) fn delete_index(index: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    RouteNetlinkMessage::DelLink(msg)
}

/// RTM_GETLINK dump request (send with NLM_F_DUMP).
pub(crate) fn dump() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetLink(LinkMessage::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::push_request;
    use bytes::BytesMut;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_CREATE, NLM_F_EXCL};

    fn pair() -> VethPair<'static> {
        VethPair {
            ifindex: 4242,
            slot_ifindex: 4242,
            slot_name: "eth0",
            slot_mac: [0x02, 0x73, 0, 0, 0, 7],
            host_name: "ns7",
            host_mac: [0x02, 0x6e, 0, 0, 0, 7],
            host_netns_fd: 9,
            group: 7600,
            mtu: 1500,
        }
    }

    fn roundtrip(msg: RouteNetlinkMessage) -> RouteNetlinkMessage {
        let mut out = BytesMut::new();
        push_request(&mut out, msg, NLM_F_CREATE | NLM_F_EXCL, 5);
        let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&out).unwrap();
        assert_eq!(parsed.header.sequence_number, 5);
        match parsed.payload {
            NetlinkPayload::InnerMessage(m) => m,
            other => panic!("unexpected payload {other:?}"),
        }
    }

    #[test]
    fn veth_round_trips_with_peer_in_host_namespace() {
        let msg = veth_in_place(&pair());
        let RouteNetlinkMessage::NewLink(link) = roundtrip(msg.clone()) else {
            panic!("not a NewLink")
        };
        assert_eq!(RouteNetlinkMessage::NewLink(link.clone()), msg);
        assert_eq!(link.header.index, 4242);
        assert!(link.header.flags.contains(LinkFlags::Up));
        let peer = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                    LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) => Some(p.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .expect("peer present");
        assert_eq!(peer.header.index, 4242);
        // The trap from kernel-notes: the peer needs its OWN namespace attribute.
        assert!(peer.attributes.contains(&LinkAttribute::NetNsFd(9)));
        assert!(peer.attributes.contains(&LinkAttribute::Group(7600)));
        assert!(peer
            .attributes
            .contains(&LinkAttribute::IfName("ns7".into())));
        // One queue each way on both ends: no queue cut (synchronize_net) after creation.
        for attrs in [&peer.attributes, &link.attributes] {
            assert!(attrs.contains(&LinkAttribute::NumTxQueues(1)));
            assert!(attrs.contains(&LinkAttribute::NumRxQueues(1)));
        }
        // The peer must not ask to come up (ENOTCONN on 6.18).
        assert!(!peer.header.flags.contains(LinkFlags::Up));
    }

    #[test]
    fn creation_carries_no_af_spec() {
        // 6.18 refuses IFLA_AF_SPEC in a creating RTM_NEWLINK (EAFNOSUPPORT).
        let RouteNetlinkMessage::NewLink(link) = veth_in_place(&pair()) else {
            panic!()
        };
        assert!(!link
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::AfSpecUnspec(_))));
    }

    #[test]
    fn ipv6_off_messages_round_trip() {
        for msg in [ipv6_addr_gen_none(5), group_ipv6_addr_gen_none(7600)] {
            assert_eq!(roundtrip(msg.clone()), msg);
        }
    }

    #[test]
    fn group_change_names_no_device() {
        let RouteNetlinkMessage::NewLink(link) = roundtrip(group_up(7600, Some(11))) else {
            panic!()
        };
        assert_eq!(link.header.index, 0);
        assert!(link.attributes.contains(&LinkAttribute::Group(7600)));
        assert!(!link
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::IfName(_))));
        assert!(link
            .attributes
            .contains(&LinkAttribute::Xdp(vec![LinkXdp::Fd(11)])));
    }
}
