//! judge: whether a released slot is exactly as the pool made it, from what `inspect`
//! read. Pure: no kernel calls; the state a standard slot has is derived from its spec.
//!
//! A standard slot's namespace holds, and nothing else:
//! - `lo` (ifindex 1) up, MTU 65536, qdisc noqueue, 127.0.0.1/8 and ::1/128;
//! - the slot end (the spec's ifindex and name) a veth whose peer is the host end (same
//!   ifindex), up, with the pool's MAC and MTU, qdisc noqueue, no XDP, no master;
//! - the slot's /31 on it, the kernel's routes for the addresses (connected, local,
//!   broadcast, and IPv6's ff00::/8 multicast route once the link has carrier), and the
//!   default route via the host end;
//! - the default policy rules (IPv4: local, main, default; IPv6: local, main);
//! - at most a learned neighbour entry for the host end's address with the host end's
//!   MAC, which the kernel would learn again from the next tenant's first packet.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::inspect::{SeenLink, SeenNeighbour, SeenRoute, SeenRule, SlotState};
use crate::host::AddrRecord;
use crate::slot::{mac_to_string, SlotSpec};

/// ifindex of `lo` in every network namespace (loopback_net_init registers it first).
pub(super) const LO_INDEX: u32 = 1;
/// `lo`'s MTU (loopback_setup: 64 KiB).
pub(super) const LO_MTU: u32 = 65536;
/// The root qdisc of a device without a queue (veth and lo get it at registration).
pub(super) const NOQUEUE: &str = "noqueue";
/// Routing tables (include/uapi/linux/rtnetlink.h): RT_TABLE_DEFAULT, _MAIN, _LOCAL.
pub(super) const TABLE_DEFAULT: u32 = 253;
pub(super) const TABLE_MAIN: u32 = 254;
pub(super) const TABLE_LOCAL: u32 = 255;
/// Route types: RTN_UNICAST, RTN_LOCAL, RTN_BROADCAST, RTN_MULTICAST.
pub(super) const RTN_UNICAST: u8 = 1;
pub(super) const RTN_LOCAL: u8 = 2;
pub(super) const RTN_BROADCAST: u8 = 3;
pub(super) const RTN_MULTICAST: u8 = 5;
/// Priorities of the default rules (fib_default_rules_init, fib6_rules_net_init).
const RULE_LOCAL: u32 = 0;
const RULE_MAIN: u32 = 32766;
const RULE_DEFAULT: u32 = 32767;

/// Why a released slot cannot go back to the pool as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dirty {
    /// The slot was not made by the pool's own layout (an attachment's IPAM lease):
    /// only pooled slots are recycled.
    NotPooled,
    /// A VMM still holds a queue of a microVM slot's tap (an open fd): the next tenant's
    /// VMM could not open it, and the old one would see the new guest's traffic.
    TapHeld {
        /// The tap's name.
        name: String,
        /// Queues attached.
        queues: u32,
    },
    /// A device the pool did not make is in the namespace.
    ExtraDevice {
        /// Its name and ifindex.
        name: String,
        /// Its ifindex.
        index: u32,
    },
    /// A device the pool made is gone (or was renamed).
    MissingDevice {
        /// The name the pool gave it.
        name: String,
    },
    /// A device the pool made was changed.
    ChangedDevice {
        /// Its name.
        name: String,
        /// What differs, e.g. `mtu 9000, the pool's 1500`.
        what: String,
    },
    /// An address, route, rule or neighbour entry the pool did not make.
    Extra {
        /// `address`, `route`, `rule` or `neighbour`.
        kind: &'static str,
        /// The object, as text.
        what: String,
    },
    /// An address, route or rule the pool made is gone.
    Missing {
        /// `address`, `route` or `rule`.
        kind: &'static str,
        /// The object, as text.
        what: String,
    },
    /// A process outside netslot still runs inside the namespace (or the namespace is
    /// mounted somewhere besides the pool's pin): a new tenant would share it.
    Occupied {
        /// What holds it, e.g. `pid 4242 (sleep)`.
        by: String,
    },
    /// The slot's state could not be read, so it cannot be proven clean.
    Unreadable {
        /// What could not be read, and the error.
        what: String,
    },
}

impl fmt::Display for Dirty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPooled => write!(f, "not a pooled slot (an attachment's lease)"),
            Self::TapHeld { name, queues } => {
                write!(
                    f,
                    "the tap {name} is still held by a VMM ({queues} queue(s) attached)"
                )
            }
            Self::ExtraDevice { name, index } => {
                write!(
                    f,
                    "device {name} (ifindex {index}) was not made by the pool"
                )
            }
            Self::MissingDevice { name } => write!(f, "device {name} is gone"),
            Self::ChangedDevice { name, what } => write!(f, "device {name} changed: {what}"),
            Self::Extra { kind, what } => write!(f, "{kind} {what} was not made by the pool"),
            Self::Missing { kind, what } => write!(f, "{kind} {what} is gone"),
            Self::Occupied { by } => write!(f, "the namespace is still in use by {by}"),
            Self::Unreadable { what } => write!(f, "could not read {what}"),
        }
    }
}

/// The first way `state` differs from what the pool made for `spec`, or `Ok`. A microVM
/// slot is judged by `judge_microvm`, against the tap redirect program `redirect`.
pub(crate) fn judge(
    spec: &SlotSpec,
    state: &SlotState,
    redirect: Option<u32>,
) -> Result<(), Dirty> {
    if spec.leased || spec.ipv6.is_some() {
        return Err(Dirty::NotPooled);
    }
    if let Some(tap) = &spec.tap {
        return super::judge_microvm::judge(spec, tap, state, redirect);
    }
    links(spec, &state.links)?;
    same_set(
        "address",
        expected_addrs(spec),
        state.addrs.clone(),
        fmt_addr,
    )?;
    let optional = multicast_route(spec);
    let mut routes = state.routes.clone();
    if let Some(i) = routes.iter().position(|r| *r == optional) {
        routes.remove(i);
    }
    same_set("route", expected_routes(spec), routes, fmt_route)?;
    same_set("rule", expected_rules(), state.rules.clone(), fmt_rule)?;
    neighbours(spec, &state.neighbours)
}

fn links(spec: &SlotSpec, seen: &[SeenLink]) -> Result<(), Dirty> {
    if let Some(l) = seen
        .iter()
        .find(|l| l.index != LO_INDEX && l.index != spec.ifindex)
    {
        return Err(Dirty::ExtraDevice {
            name: l.name.clone(),
            index: l.index,
        });
    }
    let lo = seen.iter().find(|l| l.index == LO_INDEX && l.name == "lo");
    let Some(lo) = lo else {
        return Err(Dirty::MissingDevice { name: "lo".into() });
    };
    device(lo, plain(None, LO_MTU, None))?;
    let end = seen
        .iter()
        .find(|l| l.index == spec.ifindex && l.name == spec.slot_ifname);
    let Some(end) = end else {
        return Err(Dirty::MissingDevice {
            name: spec.slot_ifname.clone(),
        });
    };
    device(
        end,
        plain(Some(spec.slot_mac), spec.mtu, Some(spec.ifindex)),
    )
}

/// What one device of the pool must show, besides being up with no odd flags and no
/// master.
#[derive(Debug, Clone, Copy)]
pub(super) struct Expected<'a> {
    /// Its MAC and kind (`veth`), for the slot end; `None` for `lo` and the tap, which
    /// are checked apart.
    pub veth_mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// The veth peer's ifindex.
    pub peer: Option<u32>,
    /// The XDP program attached (`None`: none may be).
    pub xdp: Option<u32>,
    /// The root qdisc (`None`: not judged).
    pub qdisc: Option<&'a str>,
}

/// A standard device of the pool: no XDP, root qdisc noqueue.
fn plain(veth_mac: Option<[u8; 6]>, mtu: u32, peer: Option<u32>) -> Expected<'static> {
    Expected {
        veth_mac,
        mtu,
        peer,
        xdp: None,
        qdisc: Some(NOQUEUE),
    }
}

/// Checks one device of the pool against `want`.
pub(super) fn device(l: &SeenLink, want: Expected<'_>) -> Result<(), Dirty> {
    let Expected {
        veth_mac: mac,
        mtu,
        peer,
        xdp,
        qdisc,
    } = want;
    let changed = |what: String| {
        Err(Dirty::ChangedDevice {
            name: l.name.clone(),
            what,
        })
    };
    if !l.up {
        return changed("it is down".into());
    }
    if l.odd_flags || l.promiscuity != 0 {
        return changed("promisc, allmulti, noarp or debug is set".into());
    }
    if l.mtu != Some(mtu) {
        return changed(format!("mtu {:?}, the pool's {mtu}", l.mtu));
    }
    if let Some(m) = l.master {
        return changed(format!("enslaved to ifindex {m}"));
    }
    if l.xdp != xdp {
        return changed(match (l.xdp, xdp) {
            (Some(id), None) => format!("XDP program {id} is attached"),
            (seen, want) => format!("XDP program {seen:?}, the pool's {want:?}"),
        });
    }
    if let Some(q) = qdisc.filter(|&q| l.qdisc.as_deref() != Some(q)) {
        return changed(format!("root qdisc {:?}, the pool's {q}", l.qdisc));
    }
    if let Some(mac) = mac {
        if l.kind.as_deref() != Some("veth") {
            return changed(format!("kind {:?}, not veth", l.kind));
        }
        if l.mac != Some(mac) {
            let seen = l.mac.as_ref().map(mac_to_string);
            return changed(format!("MAC {seen:?}, the pool's {}", mac_to_string(&mac)));
        }
    }
    if peer.is_some() && l.peer != peer {
        return changed(format!(
            "peer ifindex {:?}, the host end's {peer:?}",
            l.peer
        ));
    }
    Ok(())
}

/// Compares two multisets; the first extra entry, else the first missing one.
pub(super) fn same_set<T: Ord + Clone>(
    kind: &'static str,
    mut expected: Vec<T>,
    mut seen: Vec<T>,
    show: fn(&T) -> String,
) -> Result<(), Dirty> {
    expected.sort();
    seen.sort();
    for s in &seen {
        if let Ok(i) = expected.binary_search(s) {
            expected.remove(i);
        } else {
            return Err(Dirty::Extra {
                kind,
                what: show(s),
            });
        }
    }
    match expected.first() {
        Some(e) => Err(Dirty::Missing {
            kind,
            what: show(e),
        }),
        None => Ok(()),
    }
}

fn neighbours(spec: &SlotSpec, seen: &[SeenNeighbour]) -> Result<(), Dirty> {
    let learned_gateway = |n: &SeenNeighbour| {
        n.index == spec.ifindex
            && n.dst == Some(IpAddr::V4(spec.host_ip))
            && !n.manual
            && n.lladdr.is_none_or(|m| m == spec.host_mac)
    };
    match seen.iter().find(|n| !learned_gateway(n)) {
        Some(n) => Err(Dirty::Extra {
            kind: "neighbour",
            what: format!(
                "{:?} lladdr {:?} on ifindex {}{}",
                n.dst,
                n.lladdr.as_ref().map(mac_to_string),
                n.index,
                if n.manual { " (permanent)" } else { "" }
            ),
        }),
        None => Ok(()),
    }
}

fn expected_addrs(spec: &SlotSpec) -> Vec<AddrRecord> {
    let mut addrs = lo_addrs();
    addrs.push(AddrRecord {
        index: spec.ifindex,
        addr: spec.slot_ip.into(),
        prefix_len: spec.prefix_len,
    });
    addrs
}

/// `lo`'s addresses in every slot: 127.0.0.1/8 and ::1/128.
pub(super) fn lo_addrs() -> Vec<AddrRecord> {
    vec![
        AddrRecord {
            index: LO_INDEX,
            addr: Ipv4Addr::LOCALHOST.into(),
            prefix_len: 8,
        },
        AddrRecord {
            index: LO_INDEX,
            addr: Ipv6Addr::LOCALHOST.into(),
            prefix_len: 128,
        },
    ]
}

pub(super) fn route(table: u32, kind: u8, dst: Option<IpAddr>, dst_len: u8, oif: u32) -> SeenRoute {
    SeenRoute {
        table,
        kind,
        dst,
        dst_len,
        oif: Some(oif),
        gateway: None,
    }
}

fn expected_routes(spec: &SlotSpec) -> Vec<SeenRoute> {
    let end = spec.ifindex;
    let mask = u32::MAX
        .checked_shl(32 - u32::from(spec.prefix_len))
        .unwrap_or(0);
    let net = Ipv4Addr::from(u32::from(spec.slot_ip) & mask);
    let mut default = route(TABLE_MAIN, RTN_UNICAST, None, 0, end);
    default.gateway = Some(spec.host_ip.into());
    let v4 = |a: Ipv4Addr| Some(IpAddr::V4(a));
    let mut routes = vec![
        default,
        route(TABLE_MAIN, RTN_UNICAST, v4(net), spec.prefix_len, end),
        route(TABLE_LOCAL, RTN_LOCAL, v4(spec.slot_ip), 32, end),
    ];
    routes.extend(lo_routes());
    routes
}

/// The kernel's routes for `lo`'s addresses, in every slot.
pub(super) fn lo_routes() -> Vec<SeenRoute> {
    let v4 = |a: Ipv4Addr| Some(IpAddr::V4(a));
    vec![
        route(
            TABLE_LOCAL,
            RTN_LOCAL,
            v4(Ipv4Addr::new(127, 0, 0, 0)),
            8,
            LO_INDEX,
        ),
        route(
            TABLE_LOCAL,
            RTN_LOCAL,
            v4(Ipv4Addr::LOCALHOST),
            32,
            LO_INDEX,
        ),
        route(
            TABLE_LOCAL,
            RTN_BROADCAST,
            v4(Ipv4Addr::new(127, 255, 255, 255)),
            32,
            LO_INDEX,
        ),
        route(
            TABLE_LOCAL,
            RTN_LOCAL,
            Some(Ipv6Addr::LOCALHOST.into()),
            128,
            LO_INDEX,
        ),
    ]
}

/// IPv6's multicast route on the slot end (addrconf_add_mroute). The kernel adds it once
/// the device is up with carrier, which may be after the slot was handed out, so it may be
/// there or not: neither is a tenant's doing.
fn multicast_route(spec: &SlotSpec) -> SeenRoute {
    multicast_route_on(spec.ifindex)
}

/// IPv6's ff00::/8 multicast route on device `index`.
pub(super) fn multicast_route_on(index: u32) -> SeenRoute {
    route(
        TABLE_LOCAL,
        RTN_MULTICAST,
        Some(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0).into()),
        8,
        index,
    )
}

pub(super) fn expected_rules() -> Vec<SeenRule> {
    let rule = |ipv6, priority, table| SeenRule {
        ipv6,
        priority,
        table,
        selective: false,
    };
    vec![
        rule(false, RULE_LOCAL, TABLE_LOCAL),
        rule(false, RULE_MAIN, TABLE_MAIN),
        rule(false, RULE_DEFAULT, TABLE_DEFAULT),
        rule(true, RULE_LOCAL, TABLE_LOCAL),
        rule(true, RULE_MAIN, TABLE_MAIN),
    ]
}

pub(super) fn fmt_addr(a: &AddrRecord) -> String {
    format!("{}/{} on ifindex {}", a.addr, a.prefix_len, a.index)
}

pub(super) fn fmt_route(r: &SeenRoute) -> String {
    let dst = r
        .dst
        .map_or("default".to_owned(), |d| format!("{d}/{}", r.dst_len));
    let via = r.gateway.map_or(String::new(), |g| format!(" via {g}"));
    format!(
        "{dst}{via} (type {}, table {}, oif {:?})",
        r.kind, r.table, r.oif
    )
}

pub(super) fn fmt_rule(r: &SeenRule) -> String {
    format!(
        "{} priority {} table {}{}",
        if r.ipv6 { "ipv6" } else { "ipv4" },
        r.priority,
        r.table,
        if r.selective { " with selectors" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineConfig;

    fn spec() -> SlotSpec {
        SlotSpec::derive(&EngineConfig::default(), 7, 1000)
    }

    /// What a fresh standard slot shows (as `inspect` read it from a kernel in the kernel
    /// test `a_fresh_slot_is_judged_clean`).
    fn fresh(spec: &SlotSpec) -> SlotState {
        let lo = SeenLink {
            index: LO_INDEX,
            name: "lo".into(),
            kind: None,
            up: true,
            odd_flags: false,
            mac: Some([0; 6]),
            mtu: Some(LO_MTU),
            peer: None,
            master: None,
            qdisc: Some(NOQUEUE.into()),
            promiscuity: 0,
            xdp: None,
            carrier: false,
            tun: None,
        };
        let end = SeenLink {
            index: spec.ifindex,
            name: spec.slot_ifname.clone(),
            kind: Some("veth".into()),
            mac: Some(spec.slot_mac),
            mtu: Some(spec.mtu),
            peer: Some(spec.ifindex),
            ..lo.clone()
        };
        SlotState {
            links: vec![lo, end],
            addrs: expected_addrs(spec),
            routes: expected_routes(spec)
                .into_iter()
                .chain([multicast_route(spec)])
                .collect(),
            rules: expected_rules(),
            neighbours: vec![SeenNeighbour {
                index: spec.ifindex,
                dst: Some(spec.host_ip.into()),
                lladdr: Some(spec.host_mac),
                manual: false,
            }],
        }
    }

    /// One tenant change to a fresh slot's state.
    type Change = Box<dyn Fn(&mut SlotState)>;

    #[test]
    fn a_fresh_slot_is_clean_and_each_tenant_change_is_named() {
        let s = spec();
        assert_eq!(judge(&s, &fresh(&s), None), Ok(()));
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|st| st.links[1].mtu = Some(9000)),
                "device eth0 changed: mtu Some(9000)",
            ),
            (Box::new(|st| st.links[1].up = false), "it is down"),
            (Box::new(|st| st.links[0].odd_flags = true), "device lo"),
            (
                Box::new(|st| st.links[1].qdisc = Some("fq_codel".into())),
                "root qdisc",
            ),
            (Box::new(|st| st.links[1].mac = Some([2; 6])), "MAC"),
            (
                Box::new(|st| {
                    let mut x = st.links[1].clone();
                    x.index = 5;
                    x.name = "extra0".into();
                    st.links.push(x);
                }),
                "device extra0 (ifindex 5)",
            ),
            (
                Box::new(|st| {
                    st.links.remove(1);
                }),
                "device eth0 is gone",
            ),
            (
                Box::new(|st| {
                    st.addrs.push(AddrRecord {
                        index: 1007,
                        addr: Ipv4Addr::new(10, 1, 1, 1).into(),
                        prefix_len: 24,
                    })
                }),
                "address 10.1.1.1/24",
            ),
            (
                Box::new(|st| {
                    st.addrs.remove(2);
                }),
                "address 100.64.0.15/31 on ifindex 1007 is gone",
            ),
            (
                Box::new(|st| {
                    let mut r = st.routes[1];
                    r.dst = Some(Ipv4Addr::new(10, 9, 0, 0).into());
                    r.dst_len = 16;
                    st.routes.push(r);
                }),
                "route 10.9.0.0/16",
            ),
            (
                Box::new(|st| {
                    st.routes.remove(0);
                }),
                "route default via 100.64.0.14",
            ),
            (
                Box::new(|st| st.rules[1].selective = true),
                "rule ipv4 priority 32766 table 254 with selectors",
            ),
            (Box::new(|st| st.neighbours[0].manual = true), "(permanent)"),
            (
                Box::new(|st| st.neighbours[0].dst = Some(Ipv4Addr::new(10, 0, 0, 9).into())),
                "neighbour Some(10.0.0.9)",
            ),
            (
                Box::new(|st| st.neighbours[0].lladdr = Some([0xaa; 6])),
                "aa:aa:aa:aa:aa:aa",
            ),
        ];
        for (change, says) in cases {
            let mut st = fresh(&s);
            change(&mut st);
            let e = judge(&s, &st, None).expect_err(says).to_string();
            assert!(e.contains(says), "{e:?} lacks {says:?}");
        }
    }

    #[test]
    fn a_gateway_entry_still_being_resolved_is_learned_state() {
        let s = spec();
        let mut st = fresh(&s);
        st.neighbours[0].lladdr = None; // INCOMPLETE or FAILED: no link-layer address yet
        assert_eq!(judge(&s, &st, None), Ok(()));
        st.neighbours.clear();
        assert_eq!(judge(&s, &st, None), Ok(()));
    }

    #[test]
    fn the_multicast_route_may_come_late_but_only_once() {
        let s = spec();
        let mut st = fresh(&s);
        st.routes.retain(|r| *r != multicast_route(&s));
        assert_eq!(judge(&s, &st, None), Ok(()));
        st.routes.push(multicast_route(&s));
        st.routes.push(multicast_route(&s));
        let e = judge(&s, &st, None).unwrap_err().to_string();
        assert!(e.contains("ff00::/8"), "{e}");
    }

    #[test]
    fn leased_slots_are_not_recycled() {
        let mut s = spec();
        s.leased = true;
        assert_eq!(judge(&s, &fresh(&s), None), Err(Dirty::NotPooled));
    }
}
