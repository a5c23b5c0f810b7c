//! summary: medians across repetitions per (system, N), and per-slot figures from the
//! difference between two N (startup cost cancels). Pure: no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::parent::RunRecord;
use super::stats::{median, percentile};
use crate::systems::SystemKind;

/// Thread-name prefix of the engine's namespace-pool threads (`netslot-pool-<i>`).
pub const POOL_THREAD: &str = "netslot-pool";

/// Medians of one system at one N.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AtN {
    /// Slots asked for.
    pub n: usize,
    /// Runs that completed (of those attempted).
    pub runs_ok: usize,
    /// Runs attempted.
    pub runs: usize,
    /// Runs with RTNL counted (their timing is kept apart).
    pub rtnl_runs: usize,
    /// Median slots/s of the RTNL-counted runs (slowed by the watchpoint traps).
    pub counted_slots_per_s: Option<f64>,
    /// Median wall time of the provisioning step, s.
    pub wall_s: Option<f64>,
    /// Median slots made per second.
    pub slots_per_s: Option<f64>,
    /// Median over runs of the per-run p50 slot latency, us.
    pub p50_us: Option<f64>,
    /// Median over runs of the per-run p99 slot latency, us.
    pub p99_us: Option<f64>,
    /// Median over runs of the per-run largest slot latency, us.
    pub max_us: Option<f64>,
    /// Median syscalls of the whole process tree while provisioning.
    pub syscalls: Option<f64>,
    /// Of those, by the engine's namespace-pool threads.
    pub syscalls_pool: Option<f64>,
    /// Median io_uring submissions (SQEs).
    pub uring_submissions: Option<f64>,
    /// Median RTNL acquisitions by the process tree (provisioning window).
    pub rtnl_own: Option<f64>,
    /// Median RTNL acquisitions by kernel threads (provisioning + settle window).
    pub rtnl_kernel: Option<f64>,
    /// Median RTNL acquisitions by unrelated processes (noise).
    pub rtnl_foreign: Option<f64>,
    /// Median longest single hold, us (anyone, provisioning window).
    pub longest_hold_us: Option<f64>,
    /// Largest hold seen in any run, us.
    pub longest_hold_max_us: Option<f64>,
    /// Median over counted runs of the p50 hold of the system's own acquisitions, us.
    pub own_hold_p50_us: Option<f64>,
    /// Median over counted runs of the p99 hold of the system's own acquisitions, us.
    pub own_hold_p99_us: Option<f64>,
    /// Median over counted runs of the system's longest own hold, us.
    #[serde(default)]
    pub longest_own_hold_us: Option<f64>,
    /// Runs whose neighbour figures make the medians below (the timed runs if any had a
    /// neighbour, else the RTNL-counted ones, whose traps slow every RTNL request).
    #[serde(default)]
    pub neighbour_runs: usize,
    /// Whether those runs were RTNL-counted.
    #[serde(default)]
    pub neighbour_counted: bool,
    /// Median over runs of the neighbour's request count.
    #[serde(default)]
    pub neighbour_requests: Option<f64>,
    /// Median over runs of the neighbour's p50 request latency, us.
    #[serde(default)]
    pub neighbour_p50_us: Option<f64>,
    /// Median over runs of the neighbour's p99 request latency, us.
    #[serde(default)]
    pub neighbour_p99_us: Option<f64>,
    /// Median over runs of the neighbour's largest request latency, us.
    #[serde(default)]
    pub neighbour_max_us: Option<f64>,
    /// Median RTNL acquisitions by the neighbour (counted runs, provisioning window).
    #[serde(default)]
    pub rtnl_neighbour: Option<f64>,
    /// Median RTNL acquisitions (all holders) in the teardown window.
    pub rtnl_teardown: Option<f64>,
    /// Median seconds from teardown request to RTNL quiet.
    pub teardown_s: Option<f64>,
    /// Median peak RSS of the system's process, KiB.
    pub rss_self_kib: Option<f64>,
    /// Median largest peak RSS of a child process (ip, plugins), KiB.
    pub rss_children_kib: Option<f64>,
    /// Host ends found up with an address / expected (from the last run).
    pub verified: Option<String>,
    /// Every RTNL window was complete (no lost samples).
    pub rtnl_complete: bool,
    /// First error seen.
    pub error: Option<String>,
    /// What the latency figure measures.
    pub latency_kind: Option<String>,
}

/// Per-slot figures from two N: (value at n_hi - value at n_lo) / (n_hi - n_lo).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PerSlot {
    /// Smaller N.
    pub n_lo: usize,
    /// Larger N.
    pub n_hi: usize,
    /// Syscalls per slot, whole process tree.
    pub syscalls: Option<f64>,
    /// Syscalls per slot in the namespace-pool threads.
    pub syscalls_pool: Option<f64>,
    /// Syscalls per slot everywhere else.
    pub syscalls_other: Option<f64>,
    /// io_uring submissions per slot.
    pub uring_submissions: Option<f64>,
    /// Own RTNL acquisitions per slot.
    pub rtnl_own: Option<f64>,
    /// Kernel-thread RTNL acquisitions per slot.
    pub rtnl_kernel: Option<f64>,
}

/// One system across all N.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SystemSummary {
    /// System.
    pub system: Option<SystemKind>,
    /// Medians at each N, ascending.
    pub at: Vec<AtN>,
    /// Per-slot figures between each pair of adjacent N.
    pub per_slot: Vec<PerSlot>,
}

/// Every system.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// In table order.
    pub systems: Vec<SystemSummary>,
}

fn med(xs: impl Iterator<Item = f64>) -> Option<f64> {
    median(&xs.collect::<Vec<_>>())
}

fn at_n(n: usize, runs: &[&RunRecord]) -> AtN {
    let ok: Vec<&RunRecord> = runs
        .iter()
        .copied()
        .filter(|r| r.error.is_none() && r.done.is_some())
        .collect();
    // Timing from runs without RTNL watchpoints (their traps slow RTNL-heavy work);
    // RTNL from the counted runs; syscalls from all.
    let timed: Vec<&RunRecord> = if ok.iter().any(|r| !r.rtnl_counted) {
        ok.iter().copied().filter(|r| !r.rtnl_counted).collect()
    } else {
        ok.clone()
    };
    let done = || timed.iter().filter_map(|r| r.done.as_ref());
    let lat = |p: f64| med(done().filter_map(|d| percentile(&d.provision.latencies_us, p)));
    let sys = || ok.iter().filter_map(|r| r.syscalls_provision.as_ref());
    let counted: Vec<&RunRecord> = ok.iter().copied().filter(|r| r.rtnl_counted).collect();
    let rp = || counted.iter().filter_map(|r| r.rtnl_provision.as_ref());
    // Neighbour figures from the same runs as the timing, when those had one.
    let nb_timed: Vec<_> = timed.iter().filter_map(|r| r.neighbour.as_ref()).collect();
    let (nb, nb_counted) = if nb_timed.is_empty() {
        let c: Vec<_> = counted
            .iter()
            .filter_map(|r| r.neighbour.as_ref())
            .collect();
        let any = !c.is_empty();
        (c, any)
    } else {
        let counted_only = timed.iter().all(|r| r.rtnl_counted);
        (nb_timed, counted_only)
    };
    AtN {
        n,
        runs_ok: timed.len(),
        runs: runs.iter().filter(|r| !r.rtnl_counted).count(),
        rtnl_runs: counted.len(),
        counted_slots_per_s: med(counted
            .iter()
            .filter_map(|r| r.done.as_ref())
            .map(|d| d.provision.ok as f64 / d.wall_s)),
        wall_s: med(done().map(|d| d.wall_s)),
        slots_per_s: med(done().map(|d| d.provision.ok as f64 / d.wall_s)),
        p50_us: lat(50.0),
        p99_us: lat(99.0),
        max_us: lat(100.0),
        syscalls: med(sys().map(|c| c.syscalls() as f64)),
        syscalls_pool: med(sys().map(|c| c.syscalls_where(|t| t.starts_with(POOL_THREAD)) as f64)),
        uring_submissions: med(sys().map(|c| c.uring_submissions() as f64)),
        rtnl_own: med(rp().map(|f| f.own as f64)),
        rtnl_kernel: med(rp().map(|f| f.kernel as f64)),
        rtnl_foreign: med(rp().map(|f| f.foreign as f64)),
        longest_hold_us: med(rp().filter_map(|f| f.longest_hold_us)),
        own_hold_p50_us: med(rp().filter_map(|f| hold_percentile(&f.own_holds_ns, 50.0))),
        own_hold_p99_us: med(rp().filter_map(|f| hold_percentile(&f.own_holds_ns, 99.0))),
        longest_own_hold_us: med(rp().filter_map(|f| f.longest_own_hold_us)),
        neighbour_runs: nb.len(),
        neighbour_counted: nb_counted,
        neighbour_requests: med(nb.iter().map(|r| r.requests as f64)),
        neighbour_p50_us: med(nb.iter().filter_map(|r| r.p50_us)),
        neighbour_p99_us: med(nb.iter().filter_map(|r| r.p99_us)),
        neighbour_max_us: med(nb.iter().filter_map(|r| r.max_us)),
        rtnl_neighbour: med(counted
            .iter()
            .filter(|r| r.neighbour_ran)
            .filter_map(|r| r.rtnl_provision.as_ref())
            .map(|f| f.neighbour as f64)),
        longest_hold_max_us: rp().filter_map(|f| f.longest_hold_us).reduce(f64::max),
        rtnl_teardown: med(ok
            .iter()
            .filter_map(|r| r.rtnl_teardown.as_ref())
            .map(|f| (f.own + f.kernel) as f64)),
        teardown_s: med(ok.iter().filter_map(|r| r.teardown_to_quiet_s)),
        rss_self_kib: med(done().map(|d| d.rss_self_kib as f64)),
        rss_children_kib: med(done().map(|d| d.rss_children_kib as f64)),
        verified: ok.last().and_then(|r| r.verified.as_ref()).map(|v| {
            let host = format!("{}/{} up+v4 of {}", v.up.min(v.with_v4), n, v.host_ends);
            match v.taps_up {
                Some(taps) => format!("{host}, {taps}/{n} taps up"),
                None => host,
            }
        }),
        rtnl_complete: ok
            .iter()
            .flat_map(|r| [&r.rtnl_provision, &r.rtnl_teardown])
            .flatten()
            .all(|f| f.complete),
        error: runs
            .iter()
            .find_map(|r| r.error.clone())
            .or_else(|| done().find_map(|d| d.provision.first_error.clone())),
        latency_kind: done().next().map(|d| d.provision.latency_kind.clone()),
    }
}

fn hold_percentile(ns: &[u64], p: f64) -> Option<f64> {
    let us: Vec<f64> = ns.iter().map(|&n| n as f64 / 1e3).collect();
    percentile(&us, p)
}

fn slope(lo: &AtN, hi: &AtN, f: impl Fn(&AtN) -> Option<f64>) -> Option<f64> {
    let dn = hi.n as f64 - lo.n as f64;
    Some((f(hi)? - f(lo)?) / dn)
}

/// Groups runs by system and N and derives the per-slot figures.
pub fn summarize(runs: &[RunRecord], order: &[SystemKind]) -> Summary {
    let mut by: BTreeMap<(SystemKind, usize), Vec<&RunRecord>> = BTreeMap::new();
    for r in runs {
        by.entry((r.system, r.n)).or_default().push(r);
    }
    let mut out = Summary::default();
    for &kind in order {
        let at: Vec<AtN> = by
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, n), rs)| at_n(*n, rs))
            .collect();
        if at.is_empty() {
            continue;
        }
        let per_slot = at
            .windows(2)
            .map(|w| PerSlot {
                n_lo: w[0].n,
                n_hi: w[1].n,
                syscalls: slope(&w[0], &w[1], |a| a.syscalls),
                syscalls_pool: slope(&w[0], &w[1], |a| a.syscalls_pool),
                syscalls_other: slope(&w[0], &w[1], |a| Some(a.syscalls? - a.syscalls_pool?)),
                uring_submissions: slope(&w[0], &w[1], |a| a.uring_submissions),
                rtnl_own: slope(&w[0], &w[1], |a| a.rtnl_own),
                rtnl_kernel: slope(&w[0], &w[1], |a| a.rtnl_kernel),
            })
            .collect();
        out.systems.push(SystemSummary {
            system: Some(kind),
            at,
            per_slot,
        });
    }
    out
}
