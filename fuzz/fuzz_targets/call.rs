//! call: the production provisioning `Call` driven to its end by a fuzzer that plays the
//! kernel (docs/reliability.md, "Fuzzing").
//!
//! The fuzzer picks the call (slot ids, pool, MTU, IPv6, counters attachment, socket
//! buffers, hold budget, chunk sizes, routes, pinning) and then, send by send and round
//! by round, what the kernel answers: success, refusals of chosen requests, a refused
//! end marker, a refused sendmsg, a truncated or garbled datagram, a stray reply, an
//! overrun (ENOBUFS), silence (EAGAIN), failed namespaces, sysctl writes and pins, and
//! the address dump that recovery reads.
//!
//! Checked: every send is aligned netlink requests within its socket's byte and request
//! limits, closed by exactly one end marker that is last; no sequence number is awaited
//! twice on one socket; a host address goes out only after its slot's own send settled;
//! no host address follows a group change; the call ends (no endless loop); a slot whose
//! request the kernel refused fails; a slot closed by rollback is closed once, fails,
//! and had its host end deleted first when its veth may exist; every failed slot that had
//! a namespace is closed and no provisioned slot is; the host socket's ledger is empty at
//! the end; and a kernel that accepts everything gets every slot provisioned.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use netlink_packet_core::{NetlinkBuffer, NLMSG_NOOP, NLM_F_ACK, NLM_F_REQUEST};
use netslot::internals::{self, Ask, CallInput, CallSim, PerDeviceChoice};

/// Smallest buffers the kernel grants (SOCK_MIN_SNDBUF, SOCK_MIN_RCVBUF on x86_64).
const MIN_SNDBUF: u32 = 4608;
const MIN_RCVBUF: u32 = 2304;
/// Largest call the target drives (keeps an execution well under a millisecond).
const MAX_SLOTS: usize = 8;
/// Steps after which a call counts as endless.
const MAX_STEPS: usize = 5_000;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;

const PREFIXES: [&str; 4] = ["ns", "s", "pod-", "x1234567"];
const POOLS: [&str; 4] = ["100.64.0.0/16", "10.0.0.0/8", "192.168.4.0/24", "0.0.0.0/1"];

#[derive(Debug, Arbitrary)]
struct Setup {
    prefix: u8,
    pool: u8,
    group: u16,
    first_id: u16,
    count: u8,
    stride: u8,
    mtu: u16,
    ipv6: bool,
    counters: u8,
    tc_filter: bool,
    ack_every: bool,
    slot_snd: u32,
    slot_rcv: u32,
    host_snd: u32,
    host_rcv: u32,
    budget_us: u16,
    up: u16,
    chunk: u8,
    min_chunk: u8,
    pin: bool,
    no_route: u8,
}

fn within(v: u32, lo: u32, hi: u32) -> usize {
    (lo + v % (hi - lo + 1)) as usize
}

fn input(s: &Setup) -> CallInput {
    let count = 1 + usize::from(s.count) % MAX_SLOTS;
    let stride = 1 + u32::from(s.stride % 3);
    CallInput {
        prefix: PREFIXES[usize::from(s.prefix) % PREFIXES.len()].into(),
        group: 1 + u32::from(s.group),
        ipv4_pool: POOLS[usize::from(s.pool) % POOLS.len()].into(),
        ids: (0..count as u32)
            .map(|k| u32::from(s.first_id) + k * stride)
            .collect(),
        mtu: 1280 + u32::from(s.mtu) % (65535 - 1280 + 1),
        ipv6: s.ipv6,
        per_device: [
            PerDeviceChoice::Nothing,
            PerDeviceChoice::Xdp,
            PerDeviceChoice::Clsact,
            PerDeviceChoice::Group,
        ][usize::from(s.counters % 4)],
        tc_filter: s.tc_filter,
        ack_every_host_request: s.ack_every,
        slot_buffers: (
            within(s.slot_snd, MIN_SNDBUF, 8 << 20),
            within(s.slot_rcv, MIN_RCVBUF, 32 << 20),
        ),
        host_buffers: (
            within(s.host_snd, MIN_SNDBUF, 8 << 20),
            within(s.host_rcv, MIN_RCVBUF, 32 << 20),
        ),
        max_rtnl_hold: (s.budget_us != 0).then(|| Duration::from_micros(u64::from(s.budget_us))),
        host_ends_up: usize::from(s.up % 5000),
        chunk: 1 + usize::from(s.chunk) % 8,
        min_chunk: 1 + usize::from(s.min_chunk) % 8,
        pin: s.pin,
        without_route: (0..count).filter(|i| s.no_route & (1 << i) != 0).collect(),
    }
}

/// One request or marker of a send, as its header says.
struct Msg {
    ty: u16,
    seq: u32,
    ifindex: u32,
}

/// Checks a send's structure; returns its messages.
fn check_send(k: usize, v: &internals::SendView<'_>, bytes: &[u8], acked: bool) -> Vec<Msg> {
    assert!(!v.requests.is_empty(), "send {k} carries no request");
    assert!(bytes.len() <= v.max_bytes, "send {k}: {} bytes over {}", bytes.len(), v.max_bytes);
    assert!(v.requests.len() <= v.max_requests, "send {k}: too many requests");
    let mut out = Vec::new();
    let mut off = 0;
    let mut noops = 0;
    while off < bytes.len() {
        assert_eq!(off % 4, 0, "send {k}: message at {off} not aligned");
        let buf = NetlinkBuffer::new_checked(&bytes[off..])
            .unwrap_or_else(|e| panic!("send {k}: header at {off}: {e}"));
        let len = buf.length() as usize;
        let padded = (len + 3) & !3;
        assert!(off + padded <= bytes.len(), "send {k}: padding past the end");
        let (seq, flags, ty) = (buf.sequence_number(), buf.flags(), buf.message_type());
        assert_ne!(flags & NLM_F_REQUEST, 0, "send {k}: not a request at {off}");
        if ty == NLMSG_NOOP {
            noops += 1;
            assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK, "send {k}: marker flags");
            assert_eq!(seq, v.marker, "send {k}: marker seq");
            assert_eq!(off + padded, bytes.len(), "send {k}: marker not last");
        } else {
            if !acked {
                assert_eq!(flags & NLM_F_ACK, 0, "send {k}: request asks for an ACK");
            }
            let ifindex = if len >= 24 {
                u32::from_ne_bytes(bytes[off + 20..off + 24].try_into().unwrap())
            } else {
                0
            };
            out.push(Msg { ty, seq, ifindex });
        }
        off += padded;
    }
    assert_eq!(noops, 1, "send {k}: {noops} end markers");
    let seqs: Vec<u32> = out.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, v.requests, "send {k}: seqs differ from the ledger's");
    out
}

/// The datagrams the fuzzer's kernel gives one send, in order, and how its reading ends.
struct Script {
    datagrams: Vec<Result<Vec<u8>, i32>>,
    /// sendmsg's result.
    sent: i32,
}

/// What the kernel does with one send; `refused` collects the seqs it refuses.
fn script(u: &mut Unstructured<'_>, v: &internals::SendView<'_>, refused: &mut Vec<u32>, faults: &mut bool) -> Script {
    let kind: u8 = u.arbitrary().unwrap_or(0);
    let mut datagrams = Vec::new();
    let mut sent = 1;
    match kind % 16 {
        // Mostly: a kernel that accepts everything.
        0..=7 => datagrams.push(Ok(internals::success_reply(v.marker))),
        8 | 9 => {
            // Refusals of chosen requests, each its own datagram, then the marker.
            for &seq in v.requests {
                if u.arbitrary::<u8>().unwrap_or(0) % 3 == 0 {
                    let errno = [17, 22, 19, 95, 1][usize::from(u.arbitrary::<u8>().unwrap_or(0) % 5)];
                    refused.push(seq);
                    datagrams.push(Ok(internals::error_reply(seq, errno, Some("refused"))));
                }
            }
            datagrams.push(Ok(internals::success_reply(v.marker)));
            *faults |= !refused.is_empty();
        }
        10 => {
            // The marker refused.
            datagrams.push(Ok(internals::error_reply(v.marker, 22, None)));
            *faults = true;
        }
        11 => {
            sent = -[11, 90, 105][usize::from(u.arbitrary::<u8>().unwrap_or(0) % 3)];
            *faults = true;
        }
        12 => {
            // A truncated marker ACK.
            let r = internals::success_reply(v.marker);
            let cut = usize::from(u.arbitrary::<u8>().unwrap_or(0)) % r.len();
            datagrams.push(Ok(r[..cut].to_vec()));
            *faults = true;
        }
        13 => {
            // An overrun, then what was still queued, then silence.
            datagrams.push(Err(105));
            if u.arbitrary().unwrap_or(false) {
                datagrams.push(Ok(internals::success_reply(v.marker)));
            }
            *faults = true;
        }
        14 => {
            // A stray reply first (another socket's seq), then success.
            let stray = v.marker.wrapping_add(1000);
            datagrams.push(Ok(internals::error_reply(stray, 17, None)));
            datagrams.push(Ok(internals::success_reply(v.marker)));
        }
        _ => {
            // Silence, or fuzzer bytes. Bytes that parse as replies may refuse requests
            // of the send (before its marker): those count as the kernel's refusals.
            if u.arbitrary().unwrap_or(false) {
                let n = usize::from(u.arbitrary::<u8>().unwrap_or(0) % 64);
                let bytes: Vec<u8> = (0..n).map(|_| u.arbitrary().unwrap_or(0)).collect();
                if let Ok(acks) = internals::parse_ack_list(&bytes) {
                    for a in acks.iter().take_while(|a| a.seq != v.marker) {
                        if a.errno != 0 && v.requests.contains(&a.seq) {
                            refused.push(a.seq);
                        }
                    }
                }
                datagrams.push(Ok(bytes));
            }
            *faults = true;
        }
    }
    Script { datagrams, sent }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let ci = input(&setup);
    let Ok(mut sim) = CallSim::new(&ci) else {
        return; // refused by EngineConfig::check, as the engine would refuse it
    };
    let n = sim.len();
    let by_ifindex: HashMap<u32, usize> = (0..n).map(|i| (sim.ifindex_of(i), i)).collect();
    let mut faults = false;
    let mut given = vec![false; n];
    let mut handed = 0;
    let mut must_fail = vec![false; n];
    let mut closed = vec![false; n];
    let mut veth_seq: HashMap<u32, usize> = HashMap::new();
    let mut veth_maybe = vec![false; n];
    let mut slot_settled = vec![false; n];
    let mut deleted: HashSet<u32> = HashSet::new();
    let mut group_sent = false;
    // Per send of the current step: its script and slot.
    let mut scripts: HashMap<usize, (Script, Option<usize>, Vec<u32>)> = HashMap::new();
    let mut awaited: HashMap<Option<usize>, HashSet<u32>> = HashMap::new();
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < MAX_STEPS, "the call did not end: {ci:?}");
        match sim.ask() {
            Ask::Namespaces { min, max } => {
                assert!(min <= max && max > 0);
                let k = min + usize::from(u.arbitrary::<u8>().unwrap_or(0)) % (max - min + 1);
                let made: Vec<Result<(), i32>> = (0..k)
                    .map(|_| {
                        if u.arbitrary::<u8>().unwrap_or(0) == 255 {
                            faults = true;
                            Err(24)
                        } else {
                            Ok(())
                        }
                    })
                    .collect();
                for (j, m) in made.iter().enumerate() {
                    if let Some(g) = given.get_mut(handed + j) {
                        *g = m.is_ok();
                    }
                }
                handed += made.len();
                sim.namespaces(&made);
            }
            Ask::Exchange => {
                let round: Vec<(usize, Option<usize>, Option<Vec<u8>>, Vec<u32>, u32, usize, usize)> = sim
                    .round()
                    .iter()
                    .map(|v| (v.index, v.slot, v.bytes.map(<[u8]>::to_vec), v.requests.to_vec(), v.marker, v.max_bytes, v.max_requests))
                    .collect();
                let mut outcomes = Vec::new();
                for (index, slot, bytes, requests, marker, max_bytes, max_requests) in round {
                    let view = internals::SendView {
                        index,
                        slot,
                        bytes: bytes.as_deref(),
                        requests: &requests,
                        marker,
                        max_bytes,
                        max_requests,
                    };
                    if let Some(bytes) = &bytes {
                        let acked = ci.ack_every_host_request && slot.is_none();
                        let msgs = check_send(index, &view, bytes, acked || slot.is_none());
                        let live = awaited.entry(slot).or_default();
                        for m in msgs.iter() {
                            assert!(live.insert(m.seq), "seq {} awaited twice on {slot:?}", m.seq);
                        }
                        assert!(live.insert(marker), "marker {marker} awaited twice on {slot:?}");
                        for m in &msgs {
                            match (slot, m.ty) {
                                (Some(i), RTM_NEWLINK) if m.ifindex == sim.ifindex_of(i) => {
                                    veth_seq.insert(m.seq, i);
                                }
                                (None, RTM_NEWADDR) => {
                                    let i = by_ifindex[&m.ifindex];
                                    assert!(slot_settled[i], "host address of slot {i} before its own send settled");
                                    assert!(!group_sent, "a host address after a group change");
                                }
                                (None, RTM_NEWLINK) if m.ifindex == 0 => group_sent = true,
                                (None, RTM_DELLINK) => {
                                    deleted.insert(m.ifindex);
                                }
                                _ => {}
                            }
                        }
                        let mut refused = Vec::new();
                        let s = script(&mut u, &view, &mut refused, &mut faults);
                        for seq in &refused {
                            if let Some(i) = slot {
                                must_fail[i] = true;
                            } else if let Some(m) = msgs.iter().find(|m| m.seq == *seq && m.ty == RTM_NEWADDR) {
                                must_fail[by_ifindex[&m.ifindex]] = true;
                            }
                        }
                        // The veth may exist unless the kernel refused it.
                        if let Some(i) = slot {
                            let veth = msgs.iter().find(|m| veth_seq.get(&m.seq) == Some(&i)).map(|m| m.seq);
                            // Absent only if refused itself, or if sendmsg refused it all.
                            if veth.is_some_and(|v| !refused.contains(&v)) && s.sent >= 0 {
                                veth_maybe[i] = true;
                            }
                        }
                        scripts.insert(index, (s, slot, requests.clone()));
                    }
                    let (script, slot, _) = scripts.get_mut(&index).expect("a send of this step");
                    let sent = script.sent;
                    let next = if script.datagrams.is_empty() {
                        Err(11)
                    } else {
                        script.datagrams.remove(0)
                    };
                    outcomes.push((index, *slot, sent, next));
                }
                for (index, _slot, sent, reply) in outcomes {
                    let r = reply.as_deref().map_err(|&e| e);
                    sim.settle(index, sent, r);
                }
                sim.end_round(Duration::from_micros(u64::from(u.arbitrary::<u16>().unwrap_or(100))));
                // Sends no longer in the round are settled.
                let still: HashSet<usize> = sim.round().iter().map(|v| v.index).collect();
                let mut done = Vec::new();
                for (&index, (_, slot, requests)) in &scripts {
                    if !still.contains(&index) {
                        done.push(index);
                        if let Some(i) = slot {
                            slot_settled[*i] = true;
                        }
                        if let Some(live) = awaited.get_mut(slot) {
                            for s in requests {
                                live.remove(s);
                            }
                        }
                    }
                }
                for index in &done {
                    scripts.remove(index);
                }
                // Markers of finished sends leave the awaited set too.
                if sim.round().is_empty() {
                    awaited.clear();
                }
            }
            Ask::HostAddresses => {
                let mut dump = Vec::new();
                for i in 0..n {
                    if u.arbitrary().unwrap_or(true) {
                        dump.push(sim.host_address_of(i));
                    }
                }
                if u.arbitrary::<u8>().unwrap_or(0) == 7 {
                    sim.host_addresses(Err("dump failed".into()));
                } else {
                    sim.host_addresses(Ok(dump));
                }
            }
            Ask::DisableIpv6(k) => {
                let each = (0..k)
                    .map(|_| if u.arbitrary::<u8>().unwrap_or(0) == 9 { Err(4) } else { Ok(()) })
                    .collect();
                sim.ipv6_disabled(each);
            }
            Ask::Pin(slots) => {
                let results = slots
                    .into_iter()
                    .map(|i| {
                        if u.arbitrary::<u8>().unwrap_or(0) == 3 {
                            faults = true;
                            (i, Err(16))
                        } else {
                            (i, Ok(()))
                        }
                    })
                    .collect();
                sim.pinned(results);
            }
            Ask::Close(slots) => {
                for i in slots {
                    assert!(!closed[i], "slot {i} closed twice");
                    closed[i] = true;
                    if veth_maybe[i] {
                        assert!(
                            deleted.contains(&sim.ifindex_of(i)),
                            "slot {i} closed without deleting its host end first"
                        );
                    }
                }
            }
            Ask::Done => break,
        }
    }
    let end = sim.finish();
    assert_eq!(end.host_in_flight, 0, "host sequence numbers left in flight");
    for i in 0..n {
        let ok = end.slots[i].is_none();
        if must_fail[i] {
            assert!(!ok, "slot {i} provisioned though the kernel refused one of its requests");
        }
        if closed[i] {
            assert!(!ok, "slot {i} closed but reported provisioned");
        }
        if !ok && given[i] {
            assert!(closed[i], "failed slot {i} keeps its namespace");
        }
        if ok {
            assert!(given[i], "slot {i} provisioned without a namespace");
            assert_eq!(end.pinned[i], ci.pin, "slot {i} pinned: {}", end.pinned[i]);
        }
    }
    if !faults {
        assert!(
            end.slots.iter().all(Option::is_none),
            "a kernel that accepted everything failed slots: {:?}",
            end.slots
        );
    }
});
