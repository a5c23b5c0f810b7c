//! Micro-benchmarks of the engine's hot path, through what is public today.
//!
//! The engine's `plan`, `batch` and `reconcile` modules are crate-private, so these
//! measure the same work with the same crates (netlink-packet-route 0.34 builders, the
//! standard slot's five messages per slot socket, NLMSG_ERROR ACK parsing, a seq-indexed
//! ledger) via netslot-bench's own `nl` module, plus the public per-slot derivations
//! (`EngineConfig::slot_name`, `Ipv4Cidr::pair`, `mac_to_string`). They bound the cost
//! of the engine's own code paths, not measure them; see docs/benchmarks.md for the hook
//! the engine would need to export.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use netlink_packet_core::{
    ErrorMessage, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_ERROR,
};
use netlink_packet_route::RouteNetlinkMessage;
use netslot::{mac_to_string, EngineConfig};
use netslot_bench::systems::nl;

const SLOTS: usize = 1000;
/// Requests per slot on its own socket (lo up, veth, address, route) + the end marker.
const PER_SLOT: usize = 5;
const GROUP: u32 = 7600;

/// One slot socket's send buffer and its host-address message, as the engine plans them.
fn encode_slot(cfg: &EngineConfig, id: u32, out: &mut Vec<u8>, host: &mut Vec<u8>) {
    let (host_ip, slot_ip) = cfg.ipv4_pool.pair(id).expect("pool holds 1000 pairs");
    let name = cfg.slot_name(id);
    let index = 1000 + id;
    let seq = id * 8;
    nl::push(out, nl::set_up(1), 0, seq);
    nl::push(
        out,
        nl::veth_indexed(index, "eth0", &name, 3, GROUP),
        nl::CREATE,
        seq + 1,
    );
    nl::push(out, nl::addr(index, slot_ip, 31), nl::CREATE, seq + 2);
    nl::push(out, nl::default_route(host_ip, index), nl::CREATE, seq + 3);
    nl::push_end_marker(out, seq + 4);
    nl::push(host, nl::addr(index, host_ip, 31), nl::CREATE, seq + 5);
}

fn encode(c: &mut Criterion) {
    let cfg = EngineConfig::default();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(SLOTS as u64));
    g.bench_function("1000 slot plans into send buffers", |b| {
        b.iter(|| {
            let mut host = Vec::with_capacity(SLOTS * 48);
            let bufs: Vec<Vec<u8>> = (0..SLOTS as u32)
                .map(|id| {
                    let mut out = Vec::with_capacity(512);
                    encode_slot(&cfg, id, &mut out, &mut host);
                    out
                })
                .collect();
            black_box((bufs, host))
        })
    });
    g.bench_function(
        "1000 slot names, address pairs and MACs (public API)",
        |b| {
            b.iter(|| {
                for id in 0..SLOTS as u32 {
                    let b4 = id.to_be_bytes();
                    black_box((
                        cfg.slot_name(id),
                        cfg.ipv4_pool.pair(id),
                        mac_to_string(&[0x02, b'n', b4[0], b4[1], b4[2], b4[3]]),
                    ));
                }
            })
        },
    );
    g.finish();
}

/// 1000 ACKs (NLMSG_ERROR, error 0, NETLINK_CAP_ACK: request header only) in one buffer.
fn acks(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut err = ErrorMessage::default();
        err.code = None;
        // The echoed request header (NETLINK_CAP_ACK: header only, no payload).
        err.header = {
            let mut b = vec![0u8; 16];
            b[0..4].copy_from_slice(&16u32.to_ne_bytes());
            b[8..12].copy_from_slice(&(i as u32).to_ne_bytes());
            b
        };
        let mut h = NetlinkHeader::default();
        h.message_type = NLMSG_ERROR;
        h.sequence_number = i as u32;
        let mut msg = NetlinkMessage::<RouteNetlinkMessage>::new(h, NetlinkPayload::Error(err));
        msg.finalize();
        let len = msg.buffer_len();
        let start = out.len();
        out.resize(start + ((len + 3) & !3), 0);
        msg.serialize(&mut out[start..start + len]);
    }
    out
}

/// Walks a reply buffer and returns (seq, errno) per message, as reconcile consumes them.
fn parse(buf: &[u8], out: &mut Vec<(u32, i32)>) {
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4")) as usize;
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len])
            .expect("valid ACK");
        if let NetlinkPayload::Error(e) = msg.payload {
            out.push((msg.header.sequence_number, e.code.map_or(0, |c| -c.get())));
        }
        off += (len + 3) & !3;
    }
}

fn ack_parsing(c: &mut Criterion) {
    let buf = acks(SLOTS);
    let mut g = c.benchmark_group("acks");
    g.throughput(Throughput::Elements(SLOTS as u64));
    g.bench_function("parse 1000 ACKs", |b| {
        let mut out = Vec::with_capacity(SLOTS);
        b.iter(|| {
            out.clear();
            parse(black_box(&buf), &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

/// A ledger mapping sequence numbers to (slot, op), resolved by ACKs out of order.
fn reconcile(c: &mut Criterion) {
    let requests = SLOTS * PER_SLOT;
    // ACK order: slot sockets answer in any order relative to each other.
    let order: Vec<u32> = (0..requests as u32)
        .map(|i| i.wrapping_mul(2_654_435_761) % requests as u32)
        .collect();
    let mut g = c.benchmark_group("reconcile");
    g.throughput(Throughput::Elements(SLOTS as u64));
    g.bench_function("1000 slots x 5 requests, out-of-order ACKs", |b| {
        b.iter_batched(
            || {
                let base: u32 = 0xffff_fff0; // wraps inside the batch
                let ledger: Vec<Option<(u32, u8)>> = (0..requests)
                    .map(|i| Some(((i / PER_SLOT) as u32, (i % PER_SLOT) as u8)))
                    .collect();
                (base, ledger, vec![0u8; SLOTS])
            },
            |(base, mut ledger, mut done)| {
                for &k in &order {
                    let seq = base.wrapping_add(k);
                    let idx = seq.wrapping_sub(base) as usize;
                    if let Some((slot, _op)) = ledger.get_mut(idx).and_then(Option::take) {
                        done[slot as usize] += 1;
                    }
                }
                black_box(done.iter().filter(|&&d| d as usize == PER_SLOT).count())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, encode, ack_parsing, reconcile);
criterion_main!(benches);
