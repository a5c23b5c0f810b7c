//! judge_microvm: whether a released microVM slot is exactly as the pool made it, from
//! what `inspect` read. Pure, like `judge`, whose device and set checks it shares.
//!
//! A microVM slot's namespace holds, and nothing else:
//! - `lo` as in every slot, with its addresses and routes, and the redirect program (which
//!   passes its frames: the one group change that readies the namespace attaches it to
//!   every device there);
//! - the slot end: a veth with the tap's ifindex plus `SLOT_END_BIT`, whose peer is the
//!   host end, up, with the pool's MAC and MTU, qdisc noqueue, the redirect program, and
//!   no address (the guest holds the slot's);
//! - the tap: kind tun, type tap, persistent, the configured owner, group and queue
//!   mode, no queue attached (no VMM holds it), up, with the slot's MTU and the redirect
//!   program (its MAC is the kernel's draw, not judged); its root qdisc is the kernel's default for a device with a queue
//!   (net.core.default_qdisc), which the pool does not choose, so it is not judged;
//! - no route but `lo`'s, besides IPv6's ff00::/8 on either device, which the kernel adds
//!   once a device has carrier;
//! - the default policy rules, and no neighbour entry: every frame is redirected between
//!   tap and slot end before the namespace's own stack would see it.

use super::inspect::{SeenLink, SlotState};
use super::judge::{self, Dirty, Expected, LO_INDEX};
use crate::microvm::TapSpec;
use crate::slot::SlotSpec;

/// The first way `state` differs from what the pool made for microVM slot `spec` (tap
/// `tap`), with `redirect` the id of the tap redirect program, or `Ok`.
pub(super) fn judge(
    spec: &SlotSpec,
    tap: &TapSpec,
    state: &SlotState,
    redirect: Option<u32>,
) -> Result<(), Dirty> {
    links(spec, tap, &state.links, redirect)?;
    judge::same_set(
        "address",
        judge::lo_addrs(),
        state.addrs.clone(),
        judge::fmt_addr,
    )?;
    let end = tap.slot_end_ifindex();
    let optional = [
        judge::multicast_route_on(end),
        judge::multicast_route_on(tap.ifindex),
    ];
    let routes = state
        .routes
        .iter()
        .filter(|r| !optional.contains(r))
        .copied()
        .collect();
    judge::same_set("route", judge::lo_routes(), routes, judge::fmt_route)?;
    judge::same_set(
        "rule",
        judge::expected_rules(),
        state.rules.clone(),
        judge::fmt_rule,
    )?;
    match state.neighbours.first() {
        Some(n) => Err(Dirty::Extra {
            kind: "neighbour",
            what: format!("{:?} on ifindex {}", n.dst, n.index),
        }),
        None => Ok(()),
    }
}

fn links(
    spec: &SlotSpec,
    tap: &TapSpec,
    seen: &[SeenLink],
    redirect: Option<u32>,
) -> Result<(), Dirty> {
    let end = tap.slot_end_ifindex();
    if let Some(l) = seen
        .iter()
        .find(|l| ![LO_INDEX, end, tap.ifindex].contains(&l.index))
    {
        return Err(Dirty::ExtraDevice {
            name: l.name.clone(),
            index: l.index,
        });
    }
    let find = |index: u32, name: &str| {
        seen.iter()
            .find(|l| l.index == index && l.name == name)
            .ok_or_else(|| Dirty::MissingDevice { name: name.into() })
    };
    judge::device(
        find(LO_INDEX, "lo")?,
        Expected {
            veth_mac: None,
            mtu: judge::LO_MTU,
            peer: None,
            xdp: redirect,
            qdisc: Some(judge::NOQUEUE),
        },
    )?;
    judge::device(
        find(end, &spec.slot_ifname)?,
        Expected {
            veth_mac: Some(spec.slot_mac),
            mtu: spec.mtu,
            peer: Some(spec.ifindex),
            xdp: redirect,
            qdisc: Some(judge::NOQUEUE),
        },
    )?;
    let t = find(tap.ifindex, &tap.name)?;
    judge::device(
        t,
        Expected {
            veth_mac: None,
            mtu: spec.mtu,
            peer: None,
            xdp: redirect,
            qdisc: None,
        },
    )?;
    tap_itself(t, tap)
}

/// The tap's own state: what TUNSETIFF, TUNSETOWNER, TUNSETGROUP and TUNSETPERSIST set,
/// and that no VMM holds a queue of it. Its MAC is the one the kernel drew (the pool sets
/// none: that would cost a request of its own), so it is not judged.
fn tap_itself(l: &SeenLink, tap: &TapSpec) -> Result<(), Dirty> {
    let changed = |what: String| {
        Err(Dirty::ChangedDevice {
            name: l.name.clone(),
            what,
        })
    };
    let Some(tun) = l.tun.as_ref().filter(|_| l.kind.as_deref() == Some("tun")) else {
        return changed(format!("kind {:?}, not tun", l.kind));
    };
    if tun.queues > 0 || l.carrier {
        return Err(Dirty::TapHeld {
            name: l.name.clone(),
            queues: tun.queues,
        });
    }
    if !tun.tap {
        return changed("it is a tun, not a tap".into());
    }
    if !tun.persist {
        return changed("it is no longer persistent".into());
    }
    if tun.owner != tap.owner || tun.group != tap.group {
        return changed(format!(
            "owner {:?} group {:?}, the pool's {:?} {:?}",
            tun.owner, tun.group, tap.owner, tap.group
        ));
    }
    if tun.multi_queue != tap.multi_queue {
        return changed(format!(
            "multi-queue {}, the pool's {}",
            tun.multi_queue, tap.multi_queue
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::inspect::{SeenNeighbour, SeenTun};
    use super::*;
    use crate::config::EngineConfig;
    use crate::microvm::{SlotKind, TapConfig};

    const REDIRECT: u32 = 77;

    fn spec() -> SlotSpec {
        let cfg = EngineConfig {
            kind: SlotKind::Microvm(TapConfig {
                owner: Some(4242),
                ..TapConfig::default()
            }),
            ..EngineConfig::default()
        };
        let mut spec = SlotSpec::derive(&cfg, 7, 1000);
        spec.tap.as_mut().unwrap().ifindex = 2;
        spec
    }

    /// What a fresh microVM slot shows (as the kernel test
    /// `a_released_microvm_slot_is_recycled_...` reads it), the tap's qdisc included.
    fn fresh(spec: &SlotSpec) -> SlotState {
        let tap = spec.tap.as_ref().unwrap();
        let lo = SeenLink {
            index: LO_INDEX,
            name: "lo".into(),
            kind: None,
            up: true,
            odd_flags: false,
            mac: Some([0; 6]),
            mtu: Some(judge::LO_MTU),
            peer: None,
            master: None,
            qdisc: Some(judge::NOQUEUE.into()),
            promiscuity: 0,
            xdp: Some(REDIRECT),
            carrier: true,
            tun: None,
        };
        let end = SeenLink {
            index: tap.slot_end_ifindex(),
            name: "eth0".into(),
            kind: Some("veth".into()),
            mac: Some(spec.slot_mac),
            mtu: Some(spec.mtu),
            peer: Some(spec.ifindex),
            ..lo.clone()
        };
        let t = SeenLink {
            index: tap.ifindex,
            name: tap.name.clone(),
            kind: Some("tun".into()),
            mac: Some([0x5a, 1, 2, 3, 4, 5]),
            mtu: Some(spec.mtu),
            qdisc: Some("pfifo_fast".into()),
            carrier: false,
            tun: Some(SeenTun {
                owner: Some(4242),
                group: None,
                tap: true,
                persist: true,
                multi_queue: false,
                queues: 0,
            }),
            ..lo.clone()
        };
        SlotState {
            links: vec![lo, end, t],
            addrs: judge::lo_addrs(),
            routes: judge::lo_routes(),
            rules: judge::expected_rules(),
            neighbours: vec![],
        }
    }

    type Change = Box<dyn Fn(&mut SlotState)>;

    #[test]
    fn a_fresh_microvm_slot_is_clean_and_each_change_is_named() {
        let s = spec();
        let tap = s.tap.clone().unwrap();
        assert_eq!(judge(&s, &tap, &fresh(&s), Some(REDIRECT)), Ok(()));
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|st| st.links[2].tun.as_mut().unwrap().queues = 1),
                "still held by a VMM (1 queue(s)",
            ),
            (Box::new(|st| st.links[2].carrier = true), "still held"),
            (
                Box::new(|st| st.links[2].tun.as_mut().unwrap().owner = Some(1)),
                "owner Some(1)",
            ),
            (
                Box::new(|st| st.links[2].tun.as_mut().unwrap().persist = false),
                "no longer persistent",
            ),
            (Box::new(|st| st.links[2].xdp = None), "XDP program None"),
            (
                Box::new(|st| st.links[1].xdp = Some(5)),
                "XDP program Some(5)",
            ),
            (
                Box::new(|st| st.links[0].xdp = None),
                "device lo changed: XDP program None",
            ),
            (
                Box::new(|st| st.links[2].mtu = Some(9000)),
                "mtu Some(9000)",
            ),
            (Box::new(|st| st.links.truncate(2)), "device tap0 is gone"),
            (
                Box::new(|st| {
                    st.addrs.push(crate::host::AddrRecord {
                        index: 2,
                        addr: std::net::Ipv4Addr::new(10, 0, 0, 1).into(),
                        prefix_len: 24,
                    })
                }),
                "address 10.0.0.1/24 on ifindex 2",
            ),
            (
                Box::new(|st| {
                    st.neighbours.push(SeenNeighbour {
                        index: 2,
                        dst: None,
                        lladdr: None,
                        manual: true,
                    })
                }),
                "neighbour",
            ),
        ];
        for (change, says) in cases {
            let mut st = fresh(&s);
            change(&mut st);
            let e = judge(&s, &tap, &st, Some(REDIRECT))
                .expect_err(says)
                .to_string();
            assert!(e.contains(says), "{e:?} should say {says:?}");
        }
        // IPv6's multicast routes, once the devices have carrier, are the kernel's.
        let mut st = fresh(&s);
        st.routes.push(judge::multicast_route_on(tap.ifindex));
        st.routes
            .push(judge::multicast_route_on(tap.slot_end_ifindex()));
        assert_eq!(judge(&s, &tap, &st, Some(REDIRECT)), Ok(()));
    }
}
