//! output: the report files: every raw figure as JSON and the summary as a Markdown table.
//! Reads nothing back; the figures come from `harness`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::harness::parent::RunRecord;
use crate::harness::summary::Summary;
use crate::systems::SystemKind;

/// Everything one invocation measured.
#[derive(Debug, Serialize)]
pub struct Results<'a> {
    /// The command line.
    pub command: String,
    /// Machine and kernel.
    pub machine: Machine,
    /// Whether `--neighbour` was given (each run says whether its neighbour ran).
    pub neighbour: bool,
    /// The neighbour's pace, one request per this many microseconds (0: flat out).
    pub neighbour_period_us: Option<u64>,
    /// Summary (medians, per-slot figures).
    pub summary: &'a Summary,
    /// Every run, with every raw figure.
    pub runs: &'a [RunRecord],
}

/// Where the figures were taken.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// Online CPUs.
    pub cpus: usize,
    /// CPU model.
    pub cpu_model: String,
    /// MemTotal, KiB.
    pub mem_kib: u64,
    /// `ip -V`.
    pub iproute2: String,
    /// Why RTNL could not be counted on this machine (the kernel refused the hardware
    /// watchpoint); `None` when it can be, or was not asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtnl_unavailable: Option<String>,
}

impl Machine {
    /// Reads /proc and asks `ip -V`.
    pub fn probe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        Self {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|s| s.trim_start_matches([' ', '\t', ':']).to_string())
                .unwrap_or_default(),
            mem_kib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0),
            iproute2: std::process::Command::new("ip")
                .arg("-V")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default(),
            rtnl_unavailable: None,
        }
    }
}

fn num(x: Option<f64>, digits: usize) -> String {
    x.map_or("–".into(), |v| format!("{v:.digits$}"))
}

/// The neighbour's table, when any run had one: what a bystander's link changes cost
/// while the system provisions, next to the system's longest own hold.
fn neighbour_table(s: &mut String, summary: &Summary) {
    let any = summary
        .systems
        .iter()
        .any(|sys| sys.at.iter().any(|a| a.neighbour_runs > 0));
    if !any {
        return;
    }
    s.push_str(
        "\nNeighbour: RTNL latency of a bystander while the system provisions (another \
         process toggles a veth up/down in its own namespace, one request at a time, each \
         waiting for its ACK; medians over runs; runs marked * were RTNL-counted, whose \
         watchpoint traps slow every RTNL request):\n\n\
         | system | N | runs | requests | p50 us | p99 us | max us | RTNL neighbour (counted) | \
         longest own hold ms |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for sys in &summary.systems {
        let name = sys.system.map_or("?", SystemKind::name);
        for a in sys.at.iter().filter(|a| a.neighbour_runs > 0) {
            let _ = writeln!(
                s,
                "| {name} | {} | {}{} | {} | {} | {} | {} | {} | {} |",
                a.n,
                a.neighbour_runs,
                if a.neighbour_counted { "*" } else { "" },
                num(a.neighbour_requests, 0),
                num(a.neighbour_p50_us, 0),
                num(a.neighbour_p99_us, 0),
                num(a.neighbour_max_us, 0),
                num(a.rtnl_neighbour, 0),
                num(a.longest_own_hold_us.map(|u| u / 1e3), 2),
            );
        }
    }
}

/// The summary as Markdown: one row per (system, N), then per-slot figures.
pub fn markdown(summary: &Summary, machine: &Machine, command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Command: `{command}`  \nMachine: Linux {}, {} CPUs ({}), {} MiB RAM, {}\n",
        machine.kernel,
        machine.cpus,
        machine.cpu_model,
        machine.mem_kib / 1024,
        machine.iproute2
    );
    if let Some(why) = &machine.rtnl_unavailable {
        let _ = writeln!(s, "RTNL not counted on this machine: {why}\n");
    }
    s.push_str(
        "| system | N | runs (timed/tried + RTNL) | wall s | slots/s | p50 ms | p99 ms | max ms | syscalls | \
         io_uring SQEs | RTNL own | RTNL kernel | RTNL other procs | longest hold ms (max) | \
         teardown s | RTNL teardown | peak RSS MiB (children) | verified |\n",
    );
    s.push_str(&"|---".repeat(18));
    s.push_str("|\n");
    for sys in &summary.systems {
        let name = sys.system.map_or("?", SystemKind::name);
        for a in &sys.at {
            let _ = writeln!(
                s,
                "| {name} | {} | {}/{}+{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} ({}) | {} |",
                a.n,
                a.runs_ok,
                a.runs,
                a.rtnl_runs,
                num(a.wall_s, 3),
                num(a.slots_per_s, 0),
                num(a.p50_us.map(|u| u / 1e3), 2),
                num(a.p99_us.map(|u| u / 1e3), 2),
                num(a.max_us.map(|u| u / 1e3), 2),
                num(a.syscalls, 0),
                num(a.uring_submissions, 0),
                num(a.rtnl_own, 0),
                num(a.rtnl_kernel, 0),
                num(a.rtnl_foreign, 0),
                num(a.longest_hold_us.map(|u| u / 1e3), 2),
                num(a.longest_hold_max_us.map(|u| u / 1e3), 2),
                num(a.teardown_s, 2),
                num(a.rtnl_teardown, 0),
                num(a.rss_self_kib.map(|k| k / 1024.0), 1),
                num(a.rss_children_kib.map(|k| k / 1024.0), 1),
                a.verified.as_deref().unwrap_or("–"),
            );
        }
    }
    s.push_str(
        "\nPer slot, from the difference between two N (startup cancels):\n\n\
         | system | N | syscalls/slot | of which pool thread | other threads | io_uring SQEs/slot | RTNL own/slot | RTNL kernel/slot |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for sys in &summary.systems {
        let name = sys.system.map_or("?", SystemKind::name);
        for p in &sys.per_slot {
            let _ = writeln!(
                s,
                "| {name} | {}→{} | {} | {} | {} | {} | {} | {} |",
                p.n_lo,
                p.n_hi,
                num(p.syscalls, 2),
                num(p.syscalls_pool, 2),
                num(p.syscalls_other, 3),
                num(p.uring_submissions, 3),
                num(p.rtnl_own, 2),
                num(p.rtnl_kernel, 2),
            );
        }
    }
    s.push_str(
        "\nRTNL holds of the system's own acquisitions (counted run; all holders' histogram \
         in the JSON):\n\n| system | N | p50 hold us | p99 hold us | longest own hold ms | \
         longest hold ms (any holder) |\n|---|---|---|---|---|---|\n",
    );
    for sys in &summary.systems {
        let name = sys.system.map_or("?", SystemKind::name);
        for a in &sys.at {
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} | {} |",
                a.n,
                num(a.own_hold_p50_us, 1),
                num(a.own_hold_p99_us, 1),
                num(a.longest_own_hold_us.map(|u| u / 1e3), 2),
                num(a.longest_hold_us.map(|u| u / 1e3), 2),
            );
        }
    }
    neighbour_table(&mut s, summary);
    s.push_str("\nNotes:\n\n");
    for sys in &summary.systems {
        let Some(kind) = sys.system else { continue };
        let _ = writeln!(s, "- **{kind}**: {}.", kind.description());
        if let Some(k) = sys.at.iter().find_map(|a| a.latency_kind.clone()) {
            let _ = writeln!(s, "  Latency: {k}.");
        }
        for a in &sys.at {
            if let Some(e) = &a.error {
                let _ = writeln!(s, "  N={}: error: {e}", a.n);
            }
            if !a.rtnl_complete {
                let _ = writeln!(s, "  N={}: some RTNL samples were lost or throttled.", a.n);
            }
        }
    }
    s
}
