//! plan: turns slot specs into the requests of the standard slot, per socket, in order.
//! Sans-IO: decides what goes to which socket; sending is `ring`'s, settling `reconcile`'s.
//!
//! On a slot's own socket (its namespace): lo up, the veth pair in place, the slot
//! address (a leased slot's with two routes, see `SlotSpec::leased`; an IPv6 lease's
//! likewise, see `SlotSpec::ipv6`), the default route (IPv4, and IPv6 with an IPv6 lease;
//! unless the slot is asked without one, see `SlotRoute`).
//! RTM_NEWADDR and RTM_NEWROUTE act in the socket's namespace
//! (sock_net), so these must go there. On the host socket: the host addresses (each with
//! its host end's per-device attachment, if the pool uses one; on a tc-block pool's first
//! call the one filter right after the first qdisc), then one group change per sub-batch
//! that brings its host ends up (see `hold` and `groups`).

use std::os::fd::RawFd;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;

use crate::batch::{Batcher, Flight, Limits, Sock};
use crate::op::Op;
use crate::owner::Owner;
use crate::seq::Ledger;
use crate::slot::SlotSpec;
use crate::wire::{addr, link, route, tc};

/// ifindex of `lo` in every network namespace (LOOPBACK_IFINDEX).
const LOOPBACK_IFINDEX: u32 = 1;

/// What every slot of a pool shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolShape {
    pub group: u32,
    pub host_netns_fd: RawFd,
    pub ipv6_off: bool,
}

/// Which route a slot adds inside its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotRoute {
    /// The default route via the host end (every pooled slot; a namespace's first attach).
    Default,
    /// None besides the /31's connected route, which the kernel adds with the address: a
    /// later attach into a namespace that has its default route already. No `Op::Route`
    /// request is planned, so none is counted or awaited.
    None,
}

/// The one send on slot `slot`'s own socket.
pub(crate) fn slot_socket(
    ledger: &mut Ledger,
    limits: Limits,
    slot: usize,
    spec: &SlotSpec,
    shape: PoolShape,
    slot_route: SlotRoute,
) -> Vec<Flight> {
    let create = NLM_F_CREATE | NLM_F_EXCL;
    let mut b = Batcher::new(Sock::Slot(slot), limits);
    let slot = Owner::Slot(slot);
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
    if spec.leased {
        if !spec.ipv6_only {
            leased_slot_end(&mut b, ledger, slot, spec);
        }
        if let Some(v6) = spec.ipv6 {
            leased_slot_end_ipv6(&mut b, ledger, slot, spec.ifindex, v6);
        }
    } else {
        b.push(
            ledger,
            slot,
            Op::SlotAddr,
            addr::ipv4(spec.ifindex, spec.slot_ip, spec.prefix_len),
            create,
        );
    }
    if slot_route == SlotRoute::Default {
        if !spec.ipv6_only {
            let default = route::default_via(spec.host_ip, spec.ifindex);
            b.push(ledger, slot, Op::Route, default, create);
        }
        if let Some(v6) = spec.ipv6.filter(|_| spec.leased) {
            let default = route::default_via(v6.gateway, spec.ifindex);
            b.push(ledger, slot, Op::Route, default, create);
        }
    }
    b.finish(ledger)
}

/// A leased slot end's address and routes (`SlotSpec::leased`), as the reference CNI
/// `ptp` plugin makes them: the address without its prefix route, the gateway on the
/// link, the prefix via the gateway. The default route, if any, follows as for every slot.
fn leased_slot_end(b: &mut Batcher, ledger: &mut Ledger, slot: Owner, spec: &SlotSpec) {
    let create = NLM_F_CREATE | NLM_F_EXCL;
    let addr = addr::ipv4_without_prefix_route(spec.ifindex, spec.slot_ip, spec.prefix_len);
    b.push(ledger, slot, Op::SlotAddr, addr, create);
    let gateway = route::on_link(spec.host_ip, spec.ifindex);
    b.push(ledger, slot, Op::Route, gateway, create);
    let prefix = route::via(spec.slot_ip, spec.prefix_len, spec.host_ip, spec.ifindex);
    b.push(ledger, slot, Op::Route, prefix, create);
}

/// A dual-stack slot end's IPv6 address and routes ([`crate::slot::Ipv6Lease`]), laid out
/// as the IPv4 lease's in [`leased_slot_end`]; the address without DAD (`addr::ipv6`).
fn leased_slot_end_ipv6(
    b: &mut Batcher,
    ledger: &mut Ledger,
    slot: Owner,
    ifindex: u32,
    v6: crate::slot::Ipv6Lease,
) {
    let create = NLM_F_CREATE | NLM_F_EXCL;
    let addr = addr::ipv6(ifindex, v6.address, v6.prefix_len);
    b.push(ledger, slot, Op::SlotAddr, addr, create);
    let gateway = route::on_link(v6.gateway, ifindex);
    b.push(ledger, slot, Op::Route, gateway, create);
    let prefix = route::via(v6.address, v6.prefix_len, v6.gateway, ifindex);
    b.push(ledger, slot, Op::Route, prefix, create);
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

/// The one cls_bpf filter of a tc-block pool.
///
/// It goes right after the first qdisc of the call in the host send order, because the
/// block exists only once a qdisc is bound to it, and before any host end comes up, so
/// every host end is counted from its first packet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcFilter {
    pub block: u32,
    pub prog_fd: RawFd,
    pub prog_name: &'static str,
}

/// What each host end gets besides its address, in the same host send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PerDevice {
    /// Nothing: the counters (if any) come with the group change.
    Nothing,
    /// IFLA_XDP with this program fd, by its own RTM_SETLINK.
    Xdp(RawFd),
    /// RTM_NEWQDISC clsact whose ingress block is this shared block index.
    Clsact { block: u32 },
}

/// What every host end's requests carry besides its address: one call's choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostEnds {
    /// The counters' per-device request, if any.
    pub per_device: PerDevice,
    /// 0, or NLM_F_ACK when fault injection asks for a reply to every request.
    pub ack: u16,
}

impl Default for HostEnds {
    fn default() -> Self {
        Self {
            per_device: PerDevice::Nothing,
            ack: 0,
        }
    }
}

/// The host addresses of `slots` (batch index, spec), each with what `each` adds, packed
/// into as few sends as fit. `filter`, when given, is taken and sent right after the
/// first qdisc.
pub(crate) fn host_addresses<'a>(
    ledger: &mut Ledger,
    limits: Limits,
    slots: impl IntoIterator<Item = (usize, &'a SlotSpec)>,
    each: HostEnds,
    filter: &mut Option<TcFilter>,
) -> Vec<Flight> {
    let HostEnds { per_device, ack } = each;
    let mut b = Batcher::new(Sock::Host, limits);
    for (slot, spec) in slots {
        let slot = Owner::Slot(slot);
        let address = if spec.leased {
            addr::ipv4_peer(spec.ifindex, spec.host_ip, spec.slot_ip)
        } else {
            addr::ipv4(spec.ifindex, spec.host_ip, spec.prefix_len)
        };
        if !spec.ipv6_only {
            b.push(
                ledger,
                slot,
                Op::HostAddr,
                address,
                NLM_F_CREATE | NLM_F_EXCL | ack,
            );
        }
        match per_device {
            PerDevice::Nothing => {}
            PerDevice::Xdp(fd) => {
                b.push(
                    ledger,
                    slot,
                    Op::Xdp,
                    link::attach_xdp(spec.ifindex, fd),
                    ack,
                );
            }
            PerDevice::Clsact { block } => {
                b.push(
                    ledger,
                    slot,
                    Op::Qdisc,
                    tc::clsact_on_block(spec.ifindex, block),
                    NLM_F_CREATE | NLM_F_EXCL | ack,
                );
                if let Some(f) = filter.take() {
                    b.push(
                        ledger,
                        Owner::Pool,
                        Op::TcFilter,
                        tc::bpf_filter_on_block(f.block, f.prog_fd, f.prog_name),
                        NLM_F_CREATE | NLM_F_EXCL | ack,
                    );
                }
            }
        }
        if let Some(v6) = spec.ipv6.filter(|_| spec.leased) {
            // The host end comes up on its own first: the kernel adds an IPv6 address's
            // peer route only while the device is up (__ipv6_ifa_notify), and does not
            // add it again when the device comes up later (fixup_permanent_addr restores
            // the prefix route only), whereas IPv4 adds its routes at NETDEV_UP. One more
            // RTNL acquisition per dual-stack slot; its group change is then a no-op for
            // IFF_UP.
            b.push(ledger, slot, Op::HostUp, link::set_up(spec.ifindex), ack);
            b.push(
                ledger,
                slot,
                Op::HostAddr,
                addr::ipv6_peer(spec.ifindex, v6.gateway, v6.address),
                NLM_F_CREATE | NLM_F_EXCL | ack,
            );
        }
    }
    b.finish(ledger)
}

/// The group changes of `changes`, in order, each filed under its sub-batch (an index
/// into the call's sub-batches): per group, IPv6 address generation off when asked, then
/// every host end of the group up (attaching `xdp_fd`). Each request is its own RTNL
/// acquisition, bounded by its group. Sent after the groups' host addresses, apart from
/// other requests, so the call can time them (see `hold`).
pub(crate) fn group_changes(
    ledger: &mut Ledger,
    limits: Limits,
    changes: &[(usize, GroupChange)],
    ack: u16,
) -> Vec<Flight> {
    let mut b = Batcher::new(Sock::Host, limits);
    for &(k, g) in changes {
        let key = Owner::SubBatch(k);
        if g.ipv6_off {
            b.push(
                ledger,
                key,
                Op::Ipv6Off,
                link::group_ipv6_addr_gen_none(g.group),
                ack,
            );
        }
        b.push(
            ledger,
            key,
            Op::GroupUp,
            link::group_up(g.group, g.xdp_fd),
            ack,
        );
    }
    b.finish(ledger)
}

/// Deletes the host ends of `slots` (veth_dellink takes the slot end too): rollback of
/// failed slots, or giving slots back (`op` names which).
pub(crate) fn delete_host_ends<'a>(
    ledger: &mut Ledger,
    limits: Limits,
    slots: impl IntoIterator<Item = (usize, &'a SlotSpec)>,
    op: Op,
) -> Vec<Flight> {
    let mut b = Batcher::new(Sock::Host, limits);
    for (slot, spec) in slots {
        b.push(
            ledger,
            Owner::Slot(slot),
            op,
            link::delete_index(spec.ifindex),
            0,
        );
    }
    b.finish(ledger)
}

/// Host requests sent again after a receive-buffer overrun dropped their replies, each
/// asking for its own ACK so that its fate is known whatever else is lost.
pub(crate) fn again(
    ledger: &mut Ledger,
    limits: Limits,
    requests: Vec<(Owner, Op, RouteNetlinkMessage)>,
) -> Vec<Flight> {
    let mut b = Batcher::new(Sock::Host, limits);
    for (owner, op, message) in requests {
        b.push(ledger, owner, op, message, NLM_F_ACK);
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

    /// Slot 3's one send on its socket, planned with `route`.
    fn plan_slot(route: SlotRoute) -> (Vec<Flight>, Ledger) {
        let spec = SlotSpec::derive(&EngineConfig::default(), 3, 500);
        let shape = PoolShape {
            group: 7600,
            host_netns_fd: 5,
            ipv6_off: true,
        };
        let mut ledger = Ledger::new(1);
        let flights = slot_socket(&mut ledger, LIMITS, 0, &spec, shape, route);
        (flights, ledger)
    }

    #[test]
    fn slot_socket_send_is_the_standard_slot_in_order() {
        let (flights, ledger) = plan_slot(SlotRoute::Default);
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
    fn a_leased_slot_plans_its_address_three_routes_and_a_peer_host_address() {
        let mut spec = SlotSpec::derive(&EngineConfig::default(), 3, 500);
        spec.lease(crate::slot::Ipv4Lease::parse("10.22.0.5/24", "10.22.0.1").unwrap());
        let shape = PoolShape {
            group: 7600,
            host_netns_fd: 5,
            ipv6_off: true,
        };
        let mut ledger = Ledger::new(1);
        let flights = slot_socket(&mut ledger, LIMITS, 0, &spec, shape, SlotRoute::Default);
        let msgs = decode(&flights[0].bytes);
        let inner = |m: &NetlinkMessage<RouteNetlinkMessage>| match &m.payload {
            netlink_packet_core::NetlinkPayload::InnerMessage(i) => Some(i.clone()),
            _ => None,
        };
        let expect = [
            crate::wire::addr::ipv4_without_prefix_route(503, spec.slot_ip, 24),
            route::on_link(spec.host_ip, 503),
            route::via(spec.slot_ip, 24, spec.host_ip, 503),
            route::default_via(spec.host_ip, 503),
        ];
        let got: Vec<_> = msgs[3..7].iter().map(|m| inner(m).unwrap()).collect();
        assert_eq!(got, expect);
        assert_eq!(ledger.in_flight(), 8);
        let mut ledger = Ledger::new(1);
        let flights = host_addresses(
            &mut ledger,
            LIMITS,
            [(0, &spec)],
            HostEnds::default(),
            &mut None,
        );
        let msgs = decode(&flights[0].bytes);
        assert_eq!(
            inner(&msgs[0]).unwrap(),
            crate::wire::addr::ipv4_peer(503, spec.host_ip, spec.slot_ip)
        );
    }

    #[test]
    fn a_dual_stack_slot_adds_the_ipv6_end_after_the_ipv4_one() {
        let mut spec = SlotSpec::derive(&EngineConfig::default(), 3, 500);
        spec.lease(crate::slot::Ipv4Lease::parse("10.22.0.5/24", "10.22.0.1").unwrap());
        let v6 = crate::slot::Ipv6Lease::parse("fd00:22::5/64", "fd00:22::1").unwrap();
        spec.lease_ipv6(v6);
        let shape = PoolShape {
            group: 7600,
            host_netns_fd: 5,
            ipv6_off: true,
        };
        let inner = |m: &NetlinkMessage<RouteNetlinkMessage>| match &m.payload {
            netlink_packet_core::NetlinkPayload::InnerMessage(i) => Some(i.clone()),
            _ => None,
        };
        for (slot_route, defaults) in [(SlotRoute::Default, 2), (SlotRoute::None, 0)] {
            let mut ledger = Ledger::new(1);
            let flights = slot_socket(&mut ledger, LIMITS, 0, &spec, shape, slot_route);
            let msgs = decode(&flights[0].bytes);
            let got: Vec<_> = msgs.iter().filter_map(inner).collect();
            let mut expect = vec![
                crate::wire::addr::ipv4_without_prefix_route(503, spec.slot_ip, 24),
                route::on_link(spec.host_ip, 503),
                route::via(spec.slot_ip, 24, spec.host_ip, 503),
                crate::wire::addr::ipv6(503, v6.address, 64),
                route::on_link(v6.gateway, 503),
                route::via(v6.address, 64, v6.gateway, 503),
            ];
            if defaults == 2 {
                expect.push(route::default_via(spec.host_ip, 503));
                expect.push(route::default_via(v6.gateway, 503));
            }
            // lo up, veth and IPv6 address generation off on the slot end come first.
            assert_eq!(got[3..], expect[..], "{slot_route:?}");
            assert_eq!(ledger.in_flight(), 3 + expect.len() + 1);
        }
        let mut ledger = Ledger::new(1);
        let flights = host_addresses(
            &mut ledger,
            LIMITS,
            [(0, &spec)],
            HostEnds::default(),
            &mut None,
        );
        let got: Vec<_> = decode(&flights[0].bytes).iter().filter_map(inner).collect();
        assert_eq!(
            got,
            [
                crate::wire::addr::ipv4_peer(503, spec.host_ip, spec.slot_ip),
                link::set_up(503),
                crate::wire::addr::ipv6_peer(503, v6.gateway, v6.address),
            ]
        );
    }

    #[test]
    fn an_ipv6_only_slot_plans_no_ipv4_request() {
        let mut spec = SlotSpec::derive(&EngineConfig::default(), 3, 500);
        let v6 = crate::slot::Ipv6Lease::parse("fd00:22::5/64", "fd00:22::1").unwrap();
        spec.lease_ipv6_only(v6);
        let shape = PoolShape {
            group: 7600,
            host_netns_fd: 5,
            ipv6_off: true,
        };
        let inner = |m: &NetlinkMessage<RouteNetlinkMessage>| match &m.payload {
            netlink_packet_core::NetlinkPayload::InnerMessage(i) => Some(i.clone()),
            _ => None,
        };
        let mut ledger = Ledger::new(1);
        let flights = slot_socket(&mut ledger, LIMITS, 0, &spec, shape, SlotRoute::Default);
        let got: Vec<_> = decode(&flights[0].bytes).iter().filter_map(inner).collect();
        assert_eq!(
            got[3..],
            [
                crate::wire::addr::ipv6(503, v6.address, 64),
                route::on_link(v6.gateway, 503),
                route::via(v6.address, 64, v6.gateway, 503),
                route::default_via(v6.gateway, 503),
            ]
        );
        let mut ledger = Ledger::new(1);
        let flights = host_addresses(
            &mut ledger,
            LIMITS,
            [(0, &spec)],
            HostEnds::default(),
            &mut None,
        );
        let got: Vec<_> = decode(&flights[0].bytes).iter().filter_map(inner).collect();
        assert_eq!(
            got,
            [
                link::set_up(503),
                crate::wire::addr::ipv6_peer(503, v6.gateway, v6.address),
            ]
        );
        assert_eq!(spec.slot_address(), "fd00:22::5/64");
        assert_eq!(spec.host_address(), std::net::IpAddr::V6(v6.gateway));
    }

    #[test]
    fn a_slot_without_the_default_route_plans_no_route_request() {
        let (flights, ledger) = plan_slot(SlotRoute::None);
        assert_eq!(flights.len(), 1);
        let msgs = decode(&flights[0].bytes);
        assert!(
            !msgs.iter().any(|m| matches!(
                m.payload,
                netlink_packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(_))
            )),
            "a route request was planned"
        );
        // lo up, veth, IPv6 off, address, and the marker: nothing awaits a route reply.
        assert_eq!(msgs.len(), 5);
        assert_eq!(flights[0].pending.requests.len(), 4);
        assert_eq!(ledger.in_flight(), 5);
    }

    fn kinds(bytes: &[u8]) -> Vec<&'static str> {
        use netlink_packet_core::NetlinkPayload::{InnerMessage, Noop};
        use netlink_packet_route::link::LinkFlags;
        decode(bytes)
            .iter()
            .map(|m| match &m.payload {
                InnerMessage(RouteNetlinkMessage::NewAddress(_)) => "addr",
                InnerMessage(RouteNetlinkMessage::NewLink(l))
                    if l.header.flags.contains(LinkFlags::Up) =>
                {
                    "group-up"
                }
                InnerMessage(RouteNetlinkMessage::NewLink(_)) => "group-ipv6-off",
                InnerMessage(RouteNetlinkMessage::SetLink(l))
                    if l.header.flags.contains(LinkFlags::Up) =>
                {
                    "up"
                }
                InnerMessage(RouteNetlinkMessage::SetLink(_)) => "setlink",
                Noop => "noop",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn host_addresses_pack_many_slots_per_send() {
        let cfg = EngineConfig::default();
        let specs: Vec<SlotSpec> = (0..100).map(|i| SlotSpec::derive(&cfg, i, 10)).collect();
        let mut ledger = Ledger::new(0);
        let flights = host_addresses(
            &mut ledger,
            LIMITS,
            specs.iter().enumerate(),
            HostEnds::default(),
            &mut None,
        );
        assert_eq!(flights.len(), 2); // 64 + 36 by the request limit
        assert_eq!(
            kinds(&flights[0].bytes),
            [vec!["addr"; 64], vec!["noop"]].concat()
        );
        assert_eq!(
            kinds(&flights[1].bytes),
            [vec!["addr"; 36], vec!["noop"]].concat()
        );
    }

    #[test]
    fn per_device_xdp_follows_each_address() {
        let spec = SlotSpec::derive(&EngineConfig::default(), 0, 10);
        let mut ledger = Ledger::new(0);
        let flights = host_addresses(
            &mut ledger,
            LIMITS,
            [(0, &spec)],
            HostEnds {
                per_device: PerDevice::Xdp(7),
                ack: 0,
            },
            &mut None,
        );
        assert_eq!(kinds(&flights[0].bytes), ["addr", "setlink", "noop"]);
        let msgs = decode(&flights[0].bytes);
        let netlink_packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::SetLink(xdp)) =
            &msgs[1].payload
        else {
            panic!("not a setlink")
        };
        assert_eq!(xdp.header.index, spec.ifindex);
        assert!(xdp
            .attributes
            .iter()
            .any(|a| matches!(a, netlink_packet_route::link::LinkAttribute::Xdp(_))));
    }

    #[test]
    fn group_change_is_ipv6_off_then_up_alone() {
        let mut ledger = Ledger::new(0);
        let g = GroupChange {
            group: 7600,
            xdp_fd: None,
            ipv6_off: true,
        };
        let flights = group_changes(&mut ledger, LIMITS, &[(0, g)], 0);
        assert_eq!(flights.len(), 1);
        assert_eq!(
            kinds(&flights[0].bytes),
            ["group-ipv6-off", "group-up", "noop"]
        );
    }

    #[test]
    fn tc_block_puts_the_filter_right_after_the_first_qdisc() {
        let cfg = EngineConfig::default();
        let specs: Vec<SlotSpec> = (0..3).map(|i| SlotSpec::derive(&cfg, i, 10)).collect();
        let mut filter = Some(TcFilter {
            block: 7600,
            prog_fd: 8,
            prog_name: "tc_counters",
        });
        let mut ledger = Ledger::new(0);
        let flights = host_addresses(
            &mut ledger,
            LIMITS,
            specs.iter().enumerate(),
            HostEnds {
                per_device: PerDevice::Clsact { block: 7600 },
                ack: 0,
            },
            &mut filter,
        );
        assert!(filter.is_none(), "the filter was taken");
        assert_eq!(flights.len(), 1);
        let kinds: Vec<&str> = decode(&flights[0].bytes)
            .iter()
            .map(|m| match &m.payload {
                netlink_packet_core::NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewAddress(_),
                ) => "addr",
                netlink_packet_core::NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewQueueDiscipline(_),
                ) => "qdisc",
                netlink_packet_core::NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewTrafficFilter(_),
                ) => "filter",
                netlink_packet_core::NetlinkPayload::Noop => "noop",
                _ => "other",
            })
            .collect();
        assert_eq!(
            kinds,
            ["addr", "qdisc", "filter", "addr", "qdisc", "addr", "qdisc", "noop"]
        );
    }
}
