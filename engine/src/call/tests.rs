//! The call's decisions, checked with a scripted kernel: recovery after an overrun,
//! resends one at a time, failures spread to exactly their owners, rollback of a veth
//! that may exist, detach of a device already gone.

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;
use crate::batch::Sock;
use crate::config::EngineConfig;
use crate::sock;
use crate::wire::ack;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;

fn echoed(seq: u32) -> Vec<u8> {
    let mut h = 16u32.to_ne_bytes().to_vec();
    h.extend_from_slice(&16u16.to_ne_bytes());
    h.extend_from_slice(&0u16.to_ne_bytes());
    h.extend_from_slice(&seq.to_ne_bytes());
    h.extend_from_slice(&0u32.to_ne_bytes());
    h
}

fn ok(seq: u32) -> Vec<u8> {
    ack::reply(seq, 0, &echoed(seq), true, None)
}

fn refuse(seq: u32, errno: i32) -> Vec<u8> {
    ack::reply(seq, -errno, &echoed(seq), true, Some("refused"))
}

/// (type, seq, ifindex) of every request of a send.
fn messages(bytes: &[u8]) -> Vec<(u16, u32, u32)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= bytes.len() {
        let len = u32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(bytes[off + 4..off + 6].try_into().unwrap());
        let seq = u32::from_ne_bytes(bytes[off + 8..off + 12].try_into().unwrap());
        let ifindex = if len >= 24 {
            u32::from_ne_bytes(bytes[off + 20..off + 24].try_into().unwrap())
        } else {
            0
        };
        out.push((ty, seq, ifindex));
        off += (len + 3) & !3;
    }
    out
}

fn call(n: u32, budget: Option<Duration>, up: usize) -> Call {
    call_with(n, budget, up, |_| {})
}

/// [`call`] with each spec changed by `adjust` first.
fn call_with(n: u32, budget: Option<Duration>, up: usize, adjust: impl Fn(&mut SlotSpec)) -> Call {
    let config = EngineConfig::default();
    let mut specs: Vec<SlotSpec> = (0..n).map(|id| SlotSpec::derive(&config, id, 10)).collect();
    specs.iter_mut().for_each(adjust);
    let choices = Choices {
        shape: PoolShape {
            group: config.group,
            host_netns_fd: -1,
            ipv6_off: true,
            tap_xdp_fd: None,
        },
        group_xdp: None,
        per_device: PerDevice::Nothing,
        ack: 0,
        tc_filter: None,
        first_attach_alone: false,
        chunk: 64,
        min_chunk: 1,
        host_limits: sock::nominal_host_limits(),
        slot_limits: sock::limits_from(212_992, 212_992),
        pin: false,
    };
    let kept = Kept {
        budget: HoldBudget::new(budget),
        groups: Groups::new(config.group, BTreeSet::new()),
        host_ends: up,
        tc_filter_made: false,
        recovered: 0,
    };
    let routes = vec![SlotRoute::Default; specs.len()];
    Call::provision(specs, routes, choices, kept)
}

/// A send of a round, copied out.
struct Seen {
    index: usize,
    to: Sock,
    first: bool,
    msgs: Vec<(u16, u32, u32)>,
    marker: u32,
}

/// What a driven call did.
#[derive(Default)]
struct Log {
    closed: Vec<usize>,
    /// Host sends, in order: their messages.
    host_sends: Vec<Vec<(u16, u32, u32)>>,
    dumps: usize,
    /// The host ends whose `disable_ipv6` the call asked to write.
    disabled: Vec<String>,
}

/// Drives `call` to its end; `kernel` answers each send of each round with one datagram
/// or an errno. The address dump shows `dump`.
fn drive(
    call: &mut Call,
    dump: &[(u32, std::net::IpAddr)],
    kernel: impl FnMut(&Seen, &Log) -> Result<Vec<u8>, i32>,
) -> Log {
    drive_on(&mut Ledger::new(1), call, dump, kernel)
}

/// [`drive`] with the host socket's ledger the call was made with.
fn drive_on(
    host: &mut Ledger,
    call: &mut Call,
    dump: &[(u32, std::net::IpAddr)],
    mut kernel: impl FnMut(&Seen, &Log) -> Result<Vec<u8>, i32>,
) -> Log {
    let mut log = Log::default();
    for _ in 0..10_000 {
        match call.next(host) {
            Next::Namespaces { max, .. } => {
                call.namespaces(vec![Ok(None); max], Duration::ZERO);
            }
            Next::Exchange => {
                let seen: Vec<Seen> = call
                    .round()
                    .iter()
                    .map(|s| Seen {
                        index: s.index,
                        to: s.to,
                        first: s.bytes.is_some(),
                        msgs: s.bytes.map(messages).unwrap_or_default(),
                        marker: s.marker,
                    })
                    .collect();
                for s in &seen {
                    if s.first && s.to == Sock::Host {
                        log.host_sends.push(s.msgs.clone());
                    }
                }
                for s in &seen {
                    let reply = kernel(s, &log);
                    let reply = reply.as_deref().map_err(|&e| e);
                    call.settle(host, s.index, Outcome { sent: 1, reply });
                }
                call.end_round(Duration::from_micros(100));
            }
            Next::HostAddresses => {
                log.dumps += 1;
                call.host_addresses(Ok(dump));
            }
            Next::DisableIpv6(names) => {
                call.ipv6_disabled(vec![Ok(()); names.len()], Duration::ZERO);
                log.disabled.extend(names);
            }
            Next::Pin(_) => unreachable!("the test calls do not pin"),
            Next::Close(slots) => log.closed.extend(slots),
            Next::Done => {
                assert_eq!(host.in_flight(), 0, "host sequence numbers left in flight");
                return log;
            }
        }
    }
    panic!("the call did not end");
}

fn failed(call: Call) -> Vec<Option<Op>> {
    let f = call.finish();
    f.slots
        .errors
        .iter()
        .map(|e| e.as_ref().map(|e| e.op))
        .collect()
}

#[test]
fn an_overrun_settles_lost_host_addresses_from_the_address_dump() {
    let mut c = call(2, None, 0);
    let specs = c.specs().to_vec();
    let present = [(specs[0].ifindex, std::net::IpAddr::V4(specs[0].host_ip))];
    let log = drive(&mut c, &present, |s, _| {
        let host_addresses = s.to == Sock::Host && s.msgs.iter().any(|m| m.0 == 20);
        match (host_addresses, s.first) {
            (true, true) => Err(libc::ENOBUFS),
            (true, false) => Err(libc::EAGAIN),
            _ => Ok(ok(s.marker)),
        }
    });
    assert_eq!(log.dumps, 1);
    let recovered = c.tally.recovered;
    assert_eq!(failed(c), vec![None, Some(Op::HostAddr)]);
    assert_eq!(recovered, 1);
}

#[test]
fn lost_group_changes_are_sent_again_one_at_a_time() {
    // A budget small enough for one host end per sub-batch at this pool size.
    let mut c = call(3, Some(Duration::from_micros(1)), 10_000);
    let mut overran = false;
    let log = drive(&mut c, &[], |s, _| {
        // The first send of group changes overruns; its marker still arrives.
        let group = s.to == Sock::Host && s.msgs.iter().any(|m| m.0 == RTM_NEWLINK);
        if group && s.first && !overran {
            overran = true;
            return Err(libc::ENOBUFS);
        }
        Ok(ok(s.marker))
    });
    let groups: Vec<&Vec<(u16, u32, u32)>> = log
        .host_sends
        .iter()
        .filter(|m| m.iter().any(|m| m.0 == RTM_NEWLINK))
        .collect();
    assert_eq!(groups[0].len(), 3 + 1, "three group changes and the marker");
    for again in &groups[1..] {
        assert_eq!(again.len(), 1 + 1, "a resend goes alone, with its marker");
    }
    assert_eq!(groups.len(), 1 + 3);
    let recovered = c.tally.recovered;
    assert_eq!(failed(c), vec![None, None, None]);
    assert_eq!(recovered, 3);
}

#[test]
fn a_refused_group_change_fails_its_own_sub_batch_only() {
    let mut c = call(3, Some(Duration::from_micros(1)), 10_000);
    drive(&mut c, &[], |s, _| {
        let group = s
            .msgs
            .iter()
            .find(|m| s.to == Sock::Host && m.0 == RTM_NEWLINK);
        match group {
            Some(&(_, seq, _)) if s.first => Ok([refuse(seq, libc::EPERM), ok(s.marker)].concat()),
            _ => Ok(ok(s.marker)),
        }
    });
    assert_eq!(failed(c), vec![Some(Op::GroupUp), None, None]);
}

#[test]
fn a_refused_end_marker_rolls_the_veth_back_before_closing() {
    let mut c = call(3, None, 0);
    let doomed = c.specs()[1].ifindex;
    let log = drive(&mut c, &[], |s, log| {
        if s.to == Sock::Slot(1) {
            return Ok(refuse(s.marker, libc::EINVAL));
        }
        if s.msgs.iter().any(|m| m.0 == RTM_DELLINK) {
            assert!(
                log.closed.is_empty(),
                "closed before its host end was deleted"
            );
        }
        Ok(ok(s.marker))
    });
    assert_eq!(log.closed, vec![1]);
    assert!(log
        .host_sends
        .iter()
        .flatten()
        .any(|m| m.0 == RTM_DELLINK && m.2 == doomed));
    assert_eq!(failed(c), vec![None, Some(Op::LoUp), None]);
}

#[test]
fn detach_counts_a_device_already_gone_as_detached() {
    let config = EngineConfig::default();
    let specs: Vec<SlotSpec> = (0..2).map(|id| SlotSpec::derive(&config, id, 10)).collect();
    let template = call(1, None, 0);
    let mut host = Ledger::new(1);
    let mut c = Call::detach(
        specs,
        template.choices.clone(),
        template.kept.clone(),
        &mut host,
    );
    drive_on(&mut host, &mut c, &[], |s, _| {
        let (a, b) = (s.msgs[0].1, s.msgs[1].1);
        Ok([
            refuse(a, libc::ENODEV),
            refuse(b, libc::EPERM),
            ok(s.marker),
        ]
        .concat())
    });
    assert_eq!(failed(c), vec![None, Some(Op::Detach)]);
}

#[test]
fn host_ends_with_an_ipv6_lease_keep_ipv6_on() {
    // Under a budget: slot 1 has an IPv6 lease, slots 0 and 2 have none.
    let v6 = crate::slot::Ipv6Lease::parse("fd00:22::5/64", "fd00:22::1").unwrap();
    let mut c = call_with(3, Some(Duration::from_millis(5)), 0, |s| {
        if s.id == 1 {
            s.lease_ipv6_only(v6);
        }
    });
    let log = drive(&mut c, &[], |s, _| Ok(ok(s.marker)));
    assert_eq!(log.disabled, ["ns0", "ns2"]);
    assert_eq!(failed(c), vec![None, None, None]);
    // Every slot with an IPv6 lease: no write asked at all.
    let mut c = call_with(2, Some(Duration::from_millis(5)), 0, |s| {
        s.lease_ipv6_only(v6)
    });
    let log = drive(&mut c, &[], |s, _| Ok(ok(s.marker)));
    assert!(log.disabled.is_empty(), "{:?}", log.disabled);
    assert_eq!(failed(c), vec![None, None]);
}
