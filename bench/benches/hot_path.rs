//! Micro-benchmarks of the engine's hot path outside the kernel: the production `Call`
//! (plan, batch, reconcile, sub-batches, rollback decisions) driven through
//! `netslot::internals::CallSim` (feature `internals`), and ACK parsing.
//!
//! These are the costs `Engine::provision` adds outside the kernel for 1000 slots; the
//! kernel's side (RTNL, namespace creation) is what netslot-bench measures.
//! Run: `cargo bench -p netslot-bench --bench hot_path`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use netslot::internals::{self, Ask, CallInput, CallSim};

const SLOTS: u32 = 1000;

/// Drives a call of `input` to its end, refusing the first request of every slot send
/// with EEXIST when `refuse` (the error and rollback path).
fn run(input: &CallInput, refuse: bool) -> usize {
    let mut sim = CallSim::new(input).expect("a valid call");
    let mut closed = 0;
    loop {
        match sim.ask() {
            Ask::Namespaces { max, .. } => sim.namespaces(&vec![Ok(()); max]),
            Ask::Exchange => {
                let replies: Vec<(usize, Vec<u8>)> = sim
                    .round()
                    .iter()
                    .map(|s| {
                        let mut r = Vec::new();
                        if refuse && s.slot.is_some() && s.bytes.is_some() {
                            r.extend(internals::error_reply(
                                s.requests[0],
                                libc_eexist(),
                                Some("File exists"),
                            ));
                        }
                        r.extend(internals::success_reply(s.marker));
                        (s.index, r)
                    })
                    .collect();
                for (index, reply) in replies {
                    sim.settle(index, 1, Ok(&reply));
                }
                sim.end_round(Duration::from_micros(100));
            }
            Ask::HostAddresses => sim.host_addresses(Ok(Vec::new())),
            Ask::DisableIpv6(n) => sim.ipv6_disabled(vec![Ok(()); n]),
            Ask::Pin(slots) => sim.pinned(slots.into_iter().map(|i| (i, Ok(()))).collect()),
            Ask::Close(s) => closed += s.len(),
            Ask::Done => return closed + black_box(sim.finish()).slots.len(),
        }
    }
}

fn libc_eexist() -> i32 {
    17
}

fn call(c: &mut Criterion) {
    let input = CallInput::standard(SLOTS);
    let mut g = c.benchmark_group("call");
    g.throughput(Throughput::Elements(u64::from(SLOTS)));
    g.bench_function("1000 standard slots, all acknowledged", |b| {
        b.iter(|| black_box(run(black_box(&input), false)))
    });
    g.bench_function("1000 standard slots, every slot refused", |b| {
        b.iter(|| black_box(run(black_box(&input), true)))
    });
    g.finish();
}

fn ack_parsing(c: &mut Criterion) {
    let buf = internals::reply_buffer(SLOTS);
    let mut g = c.benchmark_group("acks");
    g.throughput(Throughput::Elements(u64::from(SLOTS)));
    g.bench_function("parse 1000 ACKs (1 in 10 a NACK with text)", |b| {
        b.iter_batched(
            || (),
            |()| internals::parse_acks(black_box(&buf)).expect("valid replies"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, call, ack_parsing);
criterion_main!(benches);
