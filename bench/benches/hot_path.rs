//! Micro-benchmarks of the engine's hot path: its own plan/batch, ACK parsing and
//! reconcile code, called through `netslot::internals` (feature `internals`).
//!
//! These are the costs `Engine::provision` adds outside the kernel for 1000 slots; the
//! kernel's side (RTNL, namespace creation) is what netslot-bench measures.
//! Run: `cargo bench -p netslot-bench --bench hot_path`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use netslot::internals;

const SLOTS: u32 = 1000;

fn encode(c: &mut Criterion) {
    let specs = internals::specs(SLOTS);
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(u64::from(SLOTS)));
    g.bench_function("plan and batch 1000 standard slots", |b| {
        b.iter(|| black_box(internals::plan(black_box(&specs))))
    });
    g.finish();
}

fn ack_parsing(c: &mut Criterion) {
    let buf = internals::reply_buffer(SLOTS);
    let mut g = c.benchmark_group("acks");
    g.throughput(Throughput::Elements(u64::from(SLOTS)));
    g.bench_function("parse 1000 ACKs (1 in 10 a NACK with text)", |b| {
        b.iter(|| internals::parse_acks(black_box(&buf)).expect("valid replies"))
    });
    g.finish();
}

fn reconcile(c: &mut Criterion) {
    let specs = internals::specs(SLOTS);
    let success = internals::plan(&specs).success_replies();
    let refused = internals::plan(&specs).first_request_refused_replies();
    let mut g = c.benchmark_group("reconcile");
    g.throughput(Throughput::Elements(u64::from(SLOTS)));
    g.bench_function("settle 1000 slots, all acknowledged", |b| {
        b.iter_batched(
            || internals::plan(&specs),
            |mut p| black_box(p.reconcile(&success)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("settle 1000 slots, one refusal per send", |b| {
        b.iter_batched(
            || internals::plan(&specs),
            |mut p| black_box(p.reconcile(&refused)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, encode, ack_parsing, reconcile);
criterion_main!(benches);
