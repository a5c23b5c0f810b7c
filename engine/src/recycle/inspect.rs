//! inspect: what the kernel shows inside one slot's namespace, read over the slot's own
//! socket (links, addresses, routes, rules, neighbours). No judgement here (`judge`).
//!
//! Each family is dumped on its own (AF_INET, AF_INET6) rather than with AF_UNSPEC,
//! which the kernel answers through rtnl_dump_all, a walk of every family's handler.
//! Of these dumps, the neighbour one (neigh_dump_info) is registered RTNL-free
//! (RTNL_FLAG_DUMP_UNLOCKED) and the link one (rtnl_dump_ifinfo) is not: the link dump
//! is what a recycle costs in RTNL (see docs/architecture.md, "Recycling a slot").

use std::io;
use std::net::IpAddr;

use netlink_packet_core::Nla;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::{InfoData, InfoTun, LinkAttribute, LinkFlags, LinkInfo};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use netlink_packet_route::rule::{RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::host::AddrRecord;
use crate::seq::{Ledger, Tag};
use crate::sock;
use crate::wire::{link, route};

/// A device inside the slot, with every field a tenant can change that the pool sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeenLink {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub up: bool,
    /// IFF_PROMISC, IFF_ALLMULTI, IFF_NOARP or IFF_DEBUG set by hand.
    pub odd_flags: bool,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// IFLA_LINK: the veth peer's ifindex (in the peer's namespace).
    pub peer: Option<u32>,
    /// IFLA_MASTER: a bridge or bond the device was enslaved to.
    pub master: Option<u32>,
    /// IFLA_QDISC: the root qdisc's kind.
    pub qdisc: Option<String>,
    pub promiscuity: u32,
    /// The id of the XDP program attached, if any.
    pub xdp: Option<u32>,
    /// IFF_LOWER_UP: the device has a carrier (for a tap: a VMM holds a queue of it).
    pub carrier: bool,
    /// A tun/tap device's own state (IFLA_INFO_DATA of kind `tun`).
    pub tun: Option<SeenTun>,
}

/// What a tun/tap device reports of itself (tun_fill_info), as a tenant holding it could
/// change it: TUNSETOWNER, TUNSETGROUP and TUNSETPERSIST need no capability from a
/// process attached to the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SeenTun {
    /// IFLA_TUN_OWNER (absent: no owner).
    pub owner: Option<u32>,
    /// IFLA_TUN_GROUP (absent: no group).
    pub group: Option<u32>,
    /// IFLA_TUN_TYPE is IFF_TAP.
    pub tap: bool,
    /// IFLA_TUN_PERSIST.
    pub persist: bool,
    /// IFLA_TUN_MULTI_QUEUE.
    pub multi_queue: bool,
    /// IFLA_TUN_NUM_QUEUES: queues attached now (fds a VMM holds).
    pub queues: u32,
}

/// A route inside the slot, of any table and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SeenRoute {
    pub table: u32,
    /// RTN_* (unicast 1, local 2, broadcast 3, multicast 5, ...).
    pub kind: u8,
    pub dst: Option<IpAddr>,
    pub dst_len: u8,
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
}

/// A policy routing rule inside the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SeenRule {
    pub ipv6: bool,
    pub priority: u32,
    pub table: u32,
    /// Any selector (source, destination, interface, mark, ports, ...) or an action
    /// other than a plain table lookup.
    pub selective: bool,
}

/// A neighbour (ARP or NDP) entry inside the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeenNeighbour {
    pub index: u32,
    pub dst: Option<IpAddr>,
    pub lladdr: Option<[u8; 6]>,
    /// NUD_PERMANENT or NUD_NOARP: added by hand, never learned.
    pub manual: bool,
}

/// Everything `judge` compares with what the pool made.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotState {
    pub links: Vec<SeenLink>,
    pub addrs: Vec<AddrRecord>,
    pub routes: Vec<SeenRoute>,
    pub rules: Vec<SeenRule>,
    pub neighbours: Vec<SeenNeighbour>,
}

/// Reads the slot's namespace over `sock`, a socket opened inside it that no call is
/// using (its replies are matched by sequence numbers of a ledger of its own).
pub(crate) fn read(sock: &netlink_sys::Socket) -> io::Result<SlotState> {
    let mut seqs = Ledger::new(1);
    let mut seq = || seqs.register(Tag::Direct);
    let mut dump = |m: RouteNetlinkMessage| sock::dump(sock, m, &mut seq);
    let mut state = SlotState::default();
    for b in dump(link::dump())? {
        state.links.extend(parse_link(&b));
    }
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut a = AddressMessage::default();
        a.header.family = family;
        for b in dump(RouteNetlinkMessage::GetAddress(a))? {
            state.addrs.extend(crate::host::parse_addr(&b));
        }
        let mut r = RuleMessage::default();
        r.header.family = family;
        for b in dump(RouteNetlinkMessage::GetRule(r))? {
            state.rules.extend(parse_rule(&b));
        }
        let mut n = NeighbourMessage::default();
        n.header.family = family;
        for b in dump(RouteNetlinkMessage::GetNeighbour(n))? {
            state.neighbours.extend(parse_neighbour(&b));
        }
    }
    for m in [route::dump_ipv4(), route::dump_ipv6()] {
        for b in dump(m)? {
            state.routes.extend(parse_route(&b));
        }
    }
    Ok(state)
}

fn inner(bytes: &[u8]) -> Option<RouteNetlinkMessage> {
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
        .ok()?
        .payload
    {
        NetlinkPayload::InnerMessage(m) => Some(m),
        _ => None,
    }
}

fn mac(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.try_into().ok()
}

fn parse_link(bytes: &[u8]) -> Option<SeenLink> {
    let RouteNetlinkMessage::NewLink(l) = inner(bytes)? else {
        return None;
    };
    let odd = LinkFlags::Promisc | LinkFlags::Allmulti | LinkFlags::Noarp | LinkFlags::Debug;
    let mut rec = SeenLink {
        index: l.header.index,
        name: String::new(),
        kind: None,
        up: l.header.flags.contains(LinkFlags::Up),
        odd_flags: l.header.flags.intersects(odd),
        mac: None,
        mtu: None,
        peer: None,
        master: None,
        qdisc: None,
        promiscuity: 0,
        xdp: None,
        carrier: l.header.flags.contains(LinkFlags::LowerUp),
        tun: None,
    };
    for a in l.attributes {
        match a {
            LinkAttribute::IfName(n) => rec.name = n,
            LinkAttribute::Address(m) => rec.mac = mac(&m),
            LinkAttribute::Mtu(m) => rec.mtu = Some(m),
            LinkAttribute::Link(p) => rec.peer = Some(p),
            LinkAttribute::Controller(m) => rec.master = Some(m),
            LinkAttribute::Qdisc(q) => rec.qdisc = Some(q),
            LinkAttribute::Promiscuity(p) => rec.promiscuity = p,
            LinkAttribute::LinkInfo(infos) => {
                rec.kind = crate::host::link_kind(&infos);
                rec.tun = tun_info(&infos);
            }
            LinkAttribute::Xdp(x) => rec.xdp = crate::host::xdp_prog_id(&x),
            _ => {}
        }
    }
    Some(rec)
}

/// IFLA_TUN_* attributes (include/uapi/linux/if_link.h); netlink-packet-route leaves
/// them raw.
const IFLA_TUN_OWNER: u16 = 1;
const IFLA_TUN_GROUP: u16 = 2;
const IFLA_TUN_TYPE: u16 = 3;
const IFLA_TUN_PERSIST: u16 = 6;
const IFLA_TUN_MULTI_QUEUE: u16 = 7;
const IFLA_TUN_NUM_QUEUES: u16 = 8;

/// A tun device's IFLA_INFO_DATA, if `infos` has one.
fn tun_info(infos: &[LinkInfo]) -> Option<SeenTun> {
    let nlas = infos.iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Tun(nlas)) => Some(nlas),
        _ => None,
    })?;
    let mut tun = SeenTun::default();
    for nla in nlas {
        let InfoTun::Other(nla) = nla else { continue };
        let mut v = vec![0u8; nla.value_len()];
        nla.emit_value(&mut v);
        let u32_of = |v: &[u8]| {
            v.get(..4)
                .map(|b| u32::from_ne_bytes(b.try_into().expect("4")))
        };
        let flag = |v: &[u8]| v.first().is_some_and(|&b| b != 0);
        match nla.kind() {
            IFLA_TUN_OWNER => tun.owner = u32_of(&v),
            IFLA_TUN_GROUP => tun.group = u32_of(&v),
            IFLA_TUN_TYPE => tun.tap = v.first() == Some(&(libc::IFF_TAP as u8)),
            IFLA_TUN_PERSIST => tun.persist = flag(&v),
            IFLA_TUN_MULTI_QUEUE => tun.multi_queue = flag(&v),
            IFLA_TUN_NUM_QUEUES => tun.queues = u32_of(&v).unwrap_or(0),
            _ => {}
        }
    }
    Some(tun)
}

fn parse_route(bytes: &[u8]) -> Option<SeenRoute> {
    let RouteNetlinkMessage::NewRoute(r) = inner(bytes)? else {
        return None;
    };
    let mut rec = SeenRoute {
        table: u32::from(r.header.table),
        kind: u8::from(r.header.kind),
        dst: None,
        dst_len: r.header.destination_prefix_length,
        oif: None,
        gateway: None,
    };
    for a in r.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => rec.dst = Some(ip.into()),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => rec.dst = Some(ip.into()),
            RouteAttribute::Oif(i) => rec.oif = Some(i),
            RouteAttribute::Table(t) => rec.table = t,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => rec.gateway = Some(ip.into()),
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => rec.gateway = Some(ip.into()),
            // A multipath route, or a gateway in another form: not one the pool makes.
            RouteAttribute::MultiPath(_) | RouteAttribute::Via(_) => rec.kind = u8::MAX,
            _ => {}
        }
    }
    Some(rec)
}

fn parse_rule(bytes: &[u8]) -> Option<SeenRule> {
    let RouteNetlinkMessage::NewRule(r) = inner(bytes)? else {
        return None;
    };
    let h = &r.header;
    let mut rec = SeenRule {
        ipv6: h.family == AddressFamily::Inet6,
        priority: 0,
        table: u32::from(h.table),
        selective: h.dst_len != 0
            || h.src_len != 0
            || h.tos != 0
            || u8::from(h.action) != 1
            || !h.flags.is_empty(),
    };
    for a in &r.attributes {
        match a {
            RuleAttribute::Priority(p) => rec.priority = *p,
            RuleAttribute::Table(t) => rec.table = *t,
            // What fib_nl_fill_rule puts in every rule, selectors or not: its origin, and
            // the prefix-length suppressor, -1 when unset.
            RuleAttribute::Protocol(_) | RuleAttribute::SuppressPrefixLen(u32::MAX) => {}
            _ => rec.selective = true,
        }
    }
    Some(rec)
}

fn parse_neighbour(bytes: &[u8]) -> Option<SeenNeighbour> {
    let RouteNetlinkMessage::NewNeighbour(n) = inner(bytes)? else {
        return None;
    };
    let mut rec = SeenNeighbour {
        index: n.header.ifindex,
        dst: None,
        lladdr: None,
        manual: matches!(
            n.header.state,
            NeighbourState::Permanent | NeighbourState::Noarp
        ),
    };
    for a in n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                rec.dst = Some(ip.into());
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                rec.dst = Some(ip.into());
            }
            NeighbourAttribute::LinkLayerAddress(m) => rec.lladdr = mac(&m),
            _ => {}
        }
    }
    Some(rec)
}
