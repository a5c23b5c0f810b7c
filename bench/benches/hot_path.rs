//! Micro-benchmarks of the engine's hot path outside the kernel: the production `Call`
//! (plan, batch, reconcile, sub-batches, rollback decisions) driven through
//! `netslot::internals::CallSim` (feature `internals`), and ACK parsing.
//!
//! These are the costs `Engine::provision` adds outside the kernel for 1000 slots; the
//! kernel's side (RTNL, namespace creation) is what netslot-bench measures.
//! Run: `cargo bench -p netslot-bench --bench hot_path`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use netslot::internals::{self, CallInput, CallSim};

const SLOTS: u32 = 1000;

/// Drives a call of `input` to its end, refusing the first request of every slot send
/// with EEXIST when `refuse` (the error and rollback path); returns the slots closed.
fn run(input: &CallInput, refuse: bool) -> usize {
    let sim = CallSim::new(input).expect("a valid call");
    let driven = sim.run_with(|s| {
        let mut r = Vec::new();
        if refuse && s.slot.is_some() && s.bytes.is_some() {
            r.extend(internals::error_reply(
                s.requests[0],
                EEXIST,
                Some("File exists"),
            ));
        }
        r.extend(internals::success_reply(s.marker));
        r
    });
    black_box(driven.end);
    driven.closed.len()
}

/// EEXIST, as the kernel refuses a device or address that exists.
const EEXIST: i32 = 17;

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
