//! plan_roundtrip: plans a fuzzer-chosen batch (slot ids, pool, MTU, IPv6, per-device
//! attachment, bring-up, socket buffer sizes, all within the ranges the engine accepts),
//! decodes every send back with netlink-packet-core/-route and checks its structure
//! (docs/reliability.md, "Fuzzing").
//!
//! Per send: NLMSG_ALIGNed messages with zero padding, every message decodes and
//! re-encodes to the same bytes, exactly one NLMSG_NOOP end marker and it is last, the
//! requests' sequence numbers are the ones reconcile waits for, in order, and the send is
//! within its byte and request limits. Per batch: sequence numbers are unique, the
//! request count is what the options imply, and the success replies settle every request.
#![no_main]

use std::collections::HashSet;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use netlink_packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NLMSG_NOOP, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netslot::internals::{self, PerDeviceChoice, PlanInput};

/// Smallest buffers the kernel grants (SOCK_MIN_SNDBUF, SOCK_MIN_RCVBUF on x86_64).
const MIN_SNDBUF: u32 = 4608;
const MIN_RCVBUF: u32 = 2304;
/// Largest batch the target plans (keeps an execution well under a millisecond).
const MAX_SLOTS: usize = 12;

const PREFIXES: [&str; 6] = ["ns", "s", "pod-", "a.b_c", "netslot_", "x1234567"];
const POOLS: [&str; 5] = [
    "100.64.0.0/16",
    "10.0.0.0/8",
    "192.168.4.0/24",
    "172.16.0.0/12",
    "0.0.0.0/1",
];

#[derive(Debug, Arbitrary)]
struct Input {
    prefix: u8,
    pool: u8,
    group: u32,
    first_id: u16,
    count: u8,
    stride: u8,
    reverse: bool,
    mtu: u16,
    ipv6: bool,
    per_device: u8,
    tc_filter: bool,
    ack_every: bool,
    slot_snd: u32,
    slot_rcv: u32,
    host_snd: u32,
    host_rcv: u32,
}

fn within(v: u32, lo: u32, hi: u32) -> usize {
    (lo + v % (hi - lo + 1)) as usize
}

fn plan_input(i: &Input) -> PlanInput {
    let count = 1 + usize::from(i.count) % MAX_SLOTS;
    let stride = 1 + u32::from(i.stride % 4);
    let mut ids: Vec<u32> = (0..count as u32)
        .map(|k| u32::from(i.first_id) + k * stride)
        .collect();
    if i.reverse {
        ids.reverse();
    }
    PlanInput {
        prefix: PREFIXES[usize::from(i.prefix) % PREFIXES.len()].into(),
        group: 1 + i.group % 65535,
        ipv4_pool: POOLS[usize::from(i.pool) % POOLS.len()].into(),
        ids,
        mtu: 68 + u32::from(i.mtu) % (65535 - 68 + 1),
        ipv6: i.ipv6,
        per_device: [
            PerDeviceChoice::Nothing,
            PerDeviceChoice::Xdp,
            PerDeviceChoice::Clsact,
        ][usize::from(i.per_device % 3)],
        tc_filter: i.tc_filter,
        ack_every_host_request: i.ack_every,
        slot_buffers: (
            within(i.slot_snd, MIN_SNDBUF, 8 << 20),
            within(i.slot_rcv, MIN_RCVBUF, 32 << 20),
        ),
        host_buffers: (
            within(i.host_snd, MIN_SNDBUF, 8 << 20),
            within(i.host_rcv, MIN_RCVBUF, 32 << 20),
        ),
    }
}

/// Requests the options imply (plan.rs): lo up, veth, [IPv6 off], address, route per
/// slot; host address and per-device request per host end; the tc filter once; the
/// group change ([IPv6 off] and up).
fn expected_requests(p: &PlanInput) -> usize {
    let n = p.ids.len();
    let v6off = usize::from(!p.ipv6);
    let per_device = match p.per_device {
        PerDeviceChoice::Nothing => 0,
        PerDeviceChoice::Xdp | PerDeviceChoice::Clsact => 1,
    };
    let filter = usize::from(p.tc_filter && p.per_device == PerDeviceChoice::Clsact);
    let group = 1 + v6off;
    n * (4 + v6off) + n * (1 + per_device) + filter + group
}

fuzz_target!(|input: Input| {
    let pi = plan_input(&input);
    let Ok(mut planned) = internals::plan_with(&pi) else {
        return; // refused by EngineConfig::check, as the engine would refuse it
    };
    let mut seen = HashSet::new();
    let mut total_requests = 0;
    for (k, send) in planned.send_views().iter().enumerate() {
        let bytes = send.bytes;
        assert!(!send.requests.is_empty(), "send {k} carries no request");
        assert!(
            bytes.len() <= send.max_bytes,
            "send {k}: {} bytes over the limit {}",
            bytes.len(),
            send.max_bytes
        );
        assert!(
            send.requests.len() <= send.max_requests,
            "send {k}: {} requests over the limit {}",
            send.requests.len(),
            send.max_requests
        );
        let mut off = 0;
        let mut seqs = Vec::new();
        let mut noops = 0;
        while off < bytes.len() {
            assert_eq!(off % 4, 0, "send {k}: message at {off} not aligned");
            let buf = NetlinkBuffer::new_checked(&bytes[off..])
                .unwrap_or_else(|e| panic!("send {k}: header at {off}: {e}"));
            let len = buf.length() as usize;
            let (seq, flags, ty) = (buf.sequence_number(), buf.flags(), buf.message_type());
            let raw = &bytes[off..off + len];
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw)
                .unwrap_or_else(|e| panic!("send {k}: message at {off}: {e}"));
            let mut again = vec![0u8; msg.buffer_len()];
            msg.serialize(&mut again);
            assert_eq!(again, raw, "send {k}: message at {off} does not round-trip");
            let padded = (len + 3) & !3;
            assert!(
                off + padded <= bytes.len(),
                "send {k}: padding past the end"
            );
            assert!(
                bytes[off + len..off + padded].iter().all(|&b| b == 0),
                "send {k}: non-zero padding at {off}"
            );
            assert_ne!(flags & NLM_F_REQUEST, 0, "send {k}: not a request at {off}");
            if ty == NLMSG_NOOP {
                noops += 1;
                assert!(matches!(msg.payload, NetlinkPayload::Noop));
                assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK, "send {k}: marker flags");
                assert_eq!(seq, send.marker, "send {k}: marker seq");
                assert_eq!(off + padded, bytes.len(), "send {k}: marker not last");
            } else {
                assert!(
                    matches!(
                        msg.payload,
                        NetlinkPayload::InnerMessage(
                            RouteNetlinkMessage::NewLink(_)
                                | RouteNetlinkMessage::SetLink(_)
                                | RouteNetlinkMessage::NewAddress(_)
                                | RouteNetlinkMessage::NewRoute(_)
                                | RouteNetlinkMessage::NewQueueDiscipline(_)
                                | RouteNetlinkMessage::NewTrafficFilter(_)
                        )
                    ),
                    "send {k}: unexpected message type {ty} at {off}"
                );
                if !pi.ack_every_host_request {
                    assert_eq!(flags & NLM_F_ACK, 0, "send {k}: request asks for an ACK");
                }
                seqs.push(seq);
            }
            assert!(seen.insert(seq), "sequence number {seq} used twice");
            off += padded;
        }
        assert_eq!(noops, 1, "send {k}: {noops} end markers");
        assert_eq!(
            seqs, send.requests,
            "send {k}: seqs differ from the ledger's"
        );
        total_requests += seqs.len();
    }
    assert_eq!(total_requests, expected_requests(&pi), "{pi:?}");
    let replies = planned.success_replies();
    assert_eq!(planned.reconcile(&replies), (total_requests, 0));
});
