//! plan's unit tests: each send decoded back and its requests checked in order.

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
        tap_xdp_fd: None,
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
            netlink_packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::SetLink(_)) => {
                "setlink"
            }
            netlink_packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(_)) => {
                "newlink"
            }
            netlink_packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(
                _,
            )) => "newaddr",
            netlink_packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(_)) => {
                "newroute"
            }
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
        tap_xdp_fd: None,
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
        tap_xdp_fd: None,
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
        tap_xdp_fd: None,
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
            netlink_packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(
                _,
            )) => "addr",
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

#[test]
fn a_microvm_slot_sends_its_veth_and_one_group_change_for_its_namespace() {
    use netlink_packet_core::NetlinkPayload::InnerMessage;
    use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkXdp};
    let plan = |mtu: u32| {
        let cfg = EngineConfig {
            kind: crate::microvm::SlotKind::Microvm(crate::microvm::TapConfig::default()),
            mtu,
            ..EngineConfig::default()
        };
        let mut spec = SlotSpec::derive(&cfg, 3, 500);
        spec.tap.as_mut().unwrap().ifindex = 2;
        let shape = PoolShape {
            group: 7600,
            host_netns_fd: 5,
            ipv6_off: true,
            tap_xdp_fd: Some(11),
        };
        let mut ledger = Ledger::new(1);
        let flights = slot_socket(&mut ledger, LIMITS, 0, &spec, shape, SlotRoute::Default);
        decode(&flights[0].bytes)
    };
    let link = |msgs: &[NetlinkMessage<RouteNetlinkMessage>], i: usize| match &msgs[i].payload {
        InnerMessage(RouteNetlinkMessage::SetLink(l) | RouteNetlinkMessage::NewLink(l)) => {
            l.clone()
        }
        other => panic!("request {i} is {other:?}"),
    };
    // veth, the group change, marker: where the standard slot sends lo up, veth, IPv6
    // off, address and route.
    let msgs = plan(1500);
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    // The veth's primary (the slot end) takes the tap's index with the bit, in group 0
    // (no IFLA_GROUP); its peer the pool's host ifindex.
    let veth = link(&msgs, 0);
    assert_eq!(veth.header.index, 2 | netslot_bpf::SLOT_END_BIT);
    assert!(!veth
        .attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::Group(_))));
    let all = link(&msgs, 1);
    assert_eq!(all.header.index, 0, "by group, not by device");
    assert!(all.header.flags.contains(LinkFlags::Up));
    assert!(all.attributes.contains(&LinkAttribute::Group(0)));
    assert!(all
        .attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::Xdp(x) if x.contains(&LinkXdp::Fd(11)))));
    assert!(all
        .attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::AfSpecUnspec(_))));
    assert!(matches!(
        msgs[2].payload,
        netlink_packet_core::NetlinkPayload::Noop
    ));
    // Another MTU than a tap's 1500 costs the tap one request of its own.
    let msgs = plan(9000 / 3);
    assert_eq!(msgs.len(), 4, "{msgs:?}");
    let mtu = link(&msgs, 1);
    assert_eq!(mtu.header.index, 2);
    assert!(mtu.attributes.contains(&LinkAttribute::Mtu(3000)));
}
