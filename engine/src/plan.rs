//! plan: turns slot specs into the requests of the standard slot, per socket, in order.
//! Sans-IO: decides what goes to which socket; sending is `ring`'s, settling `reconcile`'s.
//!
//! On a slot's own socket (its namespace): lo up, the veth pair in place, the slot
//! address, the default route. RTM_NEWADDR and RTM_NEWROUTE act in the socket's namespace
//! (sock_net), so these must go there. On the host socket: the host addresses, then ONE
//! group change that brings every host end up.

use std::os::fd::RawFd;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};

use crate::batch::{Batcher, Flight, Limits};
use crate::op::Op;
use crate::reconcile::Ledger;
use crate::slot::SlotSpec;
use crate::wire::{addr, link, route};

/// ifindex of `lo` in every network namespace (LOOPBACK_IFINDEX).
const LOOPBACK_IFINDEX: u32 = 1;
/// Slot index used for requests that belong to the whole batch (the group change).
pub(crate) const WHOLE_BATCH: usize = usize::MAX;

/// What every slot of a pool shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolShape {
    pub group: u32,
    pub host_netns_fd: RawFd,
    pub ipv6_off: bool,
}

/// The one send on slot `slot`'s own socket `sock`.
pub(crate) fn slot_socket(
    ledger: &mut Ledger,
    limits: Limits,
    slot: usize,
    spec: &SlotSpec,
    sock: RawFd,
    shape: PoolShape,
) -> Vec<Flight> {
    let create = NLM_F_CREATE | NLM_F_EXCL;
    let mut b = Batcher::new(sock, limits);
    b.push(ledger, slot, Op::LoUp, link::set_up(LOOPBACK_IFINDEX), 0);
    let pair = link::VethPair {
        ifindex: spec.ifindex,
        slot_name: &spec.slot_ifname,
        slot_mac: spec.slot_mac,
        host_name: &spec.name,
        host_mac: spec.host_mac,
        host_netns_fd: shape.host_netns_fd,
        group: shape.group,
        mtu: spec.mtu,
    };
    b.push(ledger, slot, Op::Veth, link::veth_in_place(&pair), create);
    if shape.ipv6_off {
        // Before the host end comes up and gives eth0 a carrier (see wire::link).
        b.push(
            ledger,
            slot,
            Op::Ipv6Off,
            link::ipv6_addr_gen_none(spec.ifindex),
            0,
        );
    }
    b.push(
        ledger,
        slot,
        Op::SlotAddr,
        addr::ipv4(spec.ifindex, spec.slot_ip, spec.prefix_len),
        create,
    );
    b.push(
        ledger,
        slot,
        Op::Route,
        route::default_via(spec.host_ip, spec.ifindex),
        create,
    );
    b.finish(ledger)
}

/// The group change that ends a call: every host end of `group` up (attaching `xdp_fd`),
/// preceded, when IPv6 is off, by one that turns off IPv6 address generation (do_setlink
/// applies IFF_UP before IFLA_AF_SPEC, so they cannot share a message).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupChange {
    pub group: u32,
    pub xdp_fd: Option<RawFd>,
    pub ipv6_off: bool,
}

/// The host addresses of `slots` (batch index, spec), packed into as few sends as fit,
/// followed by the group change when `then` is given (after the addresses: a group
/// change acts on every device in the group, so it goes once, last).
pub(crate) fn host_addresses<'a>(
    ledger: &mut Ledger,
    limits: Limits,
    host_sock: RawFd,
    slots: impl IntoIterator<Item = (usize, &'a SlotSpec)>,
    per_device_xdp: Option<RawFd>,
    then: Option<GroupChange>,
) -> Vec<Flight> {
    let mut b = Batcher::new(host_sock, limits);
    for (slot, spec) in slots {
        b.push(
            ledger,
            slot,
            Op::HostAddr,
            addr::ipv4(spec.ifindex, spec.host_ip, spec.prefix_len),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        if let Some(fd) = per_device_xdp {
            b.push(ledger, slot, Op::Xdp, link::attach_xdp(spec.ifindex, fd), 0);
        }
    }
    if let Some(g) = then {
        if g.ipv6_off {
            b.push(
                ledger,
                WHOLE_BATCH,
                Op::Ipv6Off,
                link::group_ipv6_addr_gen_none(g.group),
                0,
            );
        }
        b.push(
            ledger,
            WHOLE_BATCH,
            Op::GroupUp,
            link::group_up(g.group, g.xdp_fd),
            0,
        );
    }
    b.finish(ledger)
}

/// Deletes the host ends of `slots` (veth_dellink takes the slot end too): rollback of
/// failed slots, or giving slots back (`op` names which).
pub(crate) fn delete_host_ends<'a>(
    ledger: &mut Ledger,
    limits: Limits,
    host_sock: RawFd,
    slots: impl IntoIterator<Item = (usize, &'a SlotSpec)>,
    op: Op,
) -> Vec<Flight> {
    let mut b = Batcher::new(host_sock, limits);
    for (slot, spec) in slots {
        b.push(ledger, slot, op, link::delete_index(spec.ifindex), 0);
    }
    b.finish(ledger)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineConfig;
    use netlink_packet_core::NetlinkMessage;
    use netlink_packet_route::RouteNetlinkMessage;

    fn decode(bytes: &[u8]) -> Vec<NetlinkMessage<RouteNetlinkMessage>> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < bytes.len() {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[off..]).unwrap();
            off += crate::wire::nlmsg_align(m.header.length as usize);
            out.push(m);
        }
        out
    }

    const LIMITS: Limits = Limits {
        max_bytes: 212_992 - 32,
        max_requests: 64,
    };

    #[test]
    fn slot_socket_send_is_the_standard_slot_in_order() {
        let spec = SlotSpec::derive(&EngineConfig::default(), 3, 500);
        let shape = PoolShape {
            group: 7600,
            host_netns_fd: 5,
            ipv6_off: true,
        };
        let mut ledger = Ledger::new(1);
        let flights = slot_socket(&mut ledger, LIMITS, 0, &spec, 9, shape);
        assert_eq!(flights.len(), 1);
        let msgs = decode(&flights[0].bytes);
        let kinds: Vec<&str> = msgs
            .iter()
            .map(|m| match &m.payload {
                netlink_packet_core::NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::SetLink(_),
                ) => "setlink",
                netlink_packet_core::NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewLink(_),
                ) => "newlink",
                netlink_packet_core::NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewAddress(_),
                ) => "newaddr",
                netlink_packet_core::NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewRoute(_),
                ) => "newroute",
                netlink_packet_core::NetlinkPayload::Noop => "noop",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            ["setlink", "newlink", "setlink", "newaddr", "newroute", "noop"]
        );
        // No request asks for an ACK; only the marker does.
        let ack = netlink_packet_core::NLM_F_ACK;
        assert!(msgs[..5].iter().all(|m| m.header.flags & ack == 0));
        assert!(msgs[5].header.flags & ack != 0);
        assert!(msgs[1].header.flags & NLM_F_EXCL != 0);
        assert_eq!(ledger.in_flight(), 6);
    }

    #[test]
    fn host_addresses_pack_many_slots_per_send() {
        let cfg = EngineConfig::default();
        let specs: Vec<SlotSpec> = (0..100).map(|i| SlotSpec::derive(&cfg, i, 10)).collect();
        let mut ledger = Ledger::new(0);
        let group = GroupChange {
            group: 7600,
            xdp_fd: None,
            ipv6_off: true,
        };
        let flights = host_addresses(
            &mut ledger,
            LIMITS,
            4,
            specs.iter().enumerate(),
            None,
            Some(group),
        );
        assert_eq!(flights.len(), 2); // 64 + (36 + 2 group changes) by the request limit
        assert_eq!(decode(&flights[0].bytes).len(), 65);
        let last = decode(&flights[1].bytes);
        assert_eq!(last.len(), 36 + 2 + 1);
        // The group changes come last, IPv6 off before up.
        let kinds: Vec<_> = last[36..38]
            .iter()
            .map(|m| match &m.payload {
                netlink_packet_core::NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewLink(l),
                ) => l
                    .header
                    .flags
                    .contains(netlink_packet_route::link::LinkFlags::Up),
                _ => panic!("not a group change"),
            })
            .collect();
        assert_eq!(kinds, [false, true]);
    }
}
