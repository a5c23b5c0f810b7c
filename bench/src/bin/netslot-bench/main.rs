//! netslot-bench: runs netslot and its baselines on the standard slot at several N,
//! each system in its own private namespaces, and writes JSON, Markdown and SVG.
//! `netslot-bench child ...` and `netslot-bench neighbour ...` are the harness's own
//! re-executions; do not call them by hand.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use netslot_bench::harness::child::child_main;
use netslot_bench::harness::neighbour::neighbour_main;
use netslot_bench::harness::parent::netns_objects;
use netslot_bench::harness::{run_one, summarize, Counters, RunOptions, RunRecord};
use netslot_bench::output::{markdown, Machine, Results};
use netslot_bench::plot::write_plots;
use netslot_bench::rtnl::RtnlCounter;
use netslot_bench::syscount::SyscallCounter;
use netslot_bench::systems::{RunSpec, SystemKind};

#[derive(Parser)]
#[command(
    about = "Benchmark netslot against its baselines on the standard slot (and the microVM slot)"
)]
struct Cli {
    /// Slot counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,4000")]
    n: Vec<usize>,
    /// Systems, comma-separated, or `all` (every standard-slot system: the default; with
    /// --quick the default is netslot,ip-batch,floor), or `microvm` (netslot,
    /// netslot-microvm, ip-tuntap: the microVM slot through the library and with iproute2,
    /// beside the standard slot).
    #[arg(long, value_delimiter = ',')]
    systems: Option<Vec<String>>,
    /// Start each repeat's list of systems one system later (repeat r runs system r first),
    /// so that no system always runs right after the same one.
    #[arg(long)]
    rotate: bool,
    /// Repetitions of every (system, N); figures are medians.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Output directory (created).
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Extra runs per (system, N) with RTNL counted (watchpoints slow RTNL-heavy work,
    /// so timed runs do not count it).
    #[arg(long, default_value_t = 1)]
    rtnl_runs: usize,
    /// Small and fast, for CI (about 20 s on a quiet 2-vCPU VM): N = 10,30, one timed and one RTNL run per
    /// (system, N), 300 ms quiet.
    #[arg(long)]
    quick: bool,
    /// RTNL quiet period that ends a settle window, ms.
    #[arg(long, default_value_t = 1000)]
    quiet_ms: u64,
    /// Longest settle wait, s.
    #[arg(long, default_value_t = 60)]
    settle_max_s: u64,
    /// Do not count RTNL acquisitions (no watchpoints; settle by sleeping).
    #[arg(long)]
    no_rtnl: bool,
    /// Do not count syscalls.
    #[arg(long)]
    no_syscalls: bool,
    /// Name prefix of host ends and named namespaces.
    #[arg(long, default_value = "nb")]
    prefix: String,
    /// Do not measure: re-read `<out>/results.json` and rewrite the summary, Markdown and
    /// plots from its runs (after a change to the report code).
    #[arg(long)]
    rerender: bool,
    /// Device group of the host ends.
    #[arg(long, default_value_t = 7600)]
    group: u32,
    /// Run a neighbour through every timed step: another process toggles a veth in a
    /// namespace of its own and records the latency of each request (off unless given).
    #[arg(long)]
    neighbour: bool,
    /// The neighbour's pace: one request per this many microseconds (0: as fast as it
    /// can, which takes a CPU from the system under test).
    #[arg(long, default_value_t = 1000)]
    neighbour_period_us: u64,
    #[command(subcommand)]
    child: Option<ChildCmd>,
}

#[derive(Subcommand)]
enum ChildCmd {
    /// Internal: one system in a child process (the harness starts it under unshare).
    #[command(hide = true)]
    Child {
        #[arg(long)]
        system: String,
        #[arg(long)]
        n: usize,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        group: u32,
    },
    /// Internal: the neighbour (the harness starts it under unshare --net).
    #[command(hide = true)]
    Neighbour {
        #[arg(long)]
        period_us: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(ChildCmd::Neighbour { period_us }) = &cli.child {
        return ExitCode::from(neighbour_main(Duration::from_micros(*period_us)) as u8);
    }
    if let Some(ChildCmd::Child {
        system,
        n,
        prefix,
        group,
    }) = &cli.child
    {
        let Some(kind) = SystemKind::parse(system) else {
            eprintln!("unknown system {system}");
            return ExitCode::from(2);
        };
        let spec = RunSpec {
            n: *n,
            prefix: prefix.clone(),
            group: *group,
        };
        return ExitCode::from(child_main(kind, &spec) as u8);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netslot-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut cli: Cli) -> Result<(), String> {
    if cli.rerender {
        return rerender(&cli);
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    if cli.quick {
        cli.n = vec![10, 30];
        cli.repeat = 1;
        cli.quiet_ms = cli.quiet_ms.min(300);
        cli.settle_max_s = cli.settle_max_s.min(20);
    }
    let default = if cli.quick {
        "netslot,ip-batch,floor"
    } else {
        "all"
    };
    let names: Vec<String> = cli
        .systems
        .clone()
        .unwrap_or_else(|| default.split(',').map(String::from).collect());
    let systems: Vec<SystemKind> = if names.iter().any(|s| s == "all") {
        SystemKind::ALL.to_vec()
    } else {
        let mut kinds: Vec<SystemKind> = Vec::new();
        for s in &names {
            let more = if s == "microvm" {
                SystemKind::MICROVM.to_vec()
            } else {
                vec![SystemKind::parse(s).ok_or_else(|| format!("unknown system {s:?}"))?]
            };
            for k in more {
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
            }
        }
        kinds
    };
    let mut ns = cli.n.clone();
    ns.sort_unstable();
    ns.dedup();
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let opts = RunOptions {
        quiet: Duration::from_millis(cli.quiet_ms),
        settle_max: Duration::from_secs(cli.settle_max_s),
        exe,
        netns_baseline: std::cell::Cell::new(netns_objects()),
        neighbour: cli
            .neighbour
            .then(|| Duration::from_micros(cli.neighbour_period_us)),
    };
    let mut machine = Machine::probe();
    machine.rtnl_unavailable = if cli.no_rtnl { None } else { rtnl_refusal()? };
    let count_rtnl = !cli.no_rtnl && machine.rtnl_unavailable.is_none();
    let counters = Counters {
        syscalls: if cli.no_syscalls {
            None
        } else {
            Some(SyscallCounter::start().map_err(|e| e.to_string())?)
        },
        rtnl: count_rtnl,
    };
    std::fs::create_dir_all(&cli.out).map_err(|e| format!("create {}: {e}", cli.out.display()))?;
    let mut runs: Vec<RunRecord> = Vec::new();
    let rtnl_runs = if count_rtnl { cli.rtnl_runs } else { 0 };
    // Interleaved (repeat, N, system) so slow drift of a shared machine spreads evenly;
    // the RTNL-counted runs come after the timed ones.
    let plan: Vec<(usize, bool)> = (0..cli.repeat)
        .map(|r| (r, false))
        .chain((0..rtnl_runs).map(|r| (r, true)))
        .collect();
    for &(repeat, count_rtnl) in &plan {
        // With --rotate, repeat r starts at system r (mod the count).
        let shift = if cli.rotate {
            repeat % systems.len().max(1)
        } else {
            0
        };
        let order: Vec<SystemKind> = systems
            .iter()
            .cycle()
            .skip(shift)
            .take(systems.len())
            .copied()
            .collect();
        for &n in &ns {
            for &system in &order {
                let spec = RunSpec {
                    n,
                    prefix: cli.prefix.clone(),
                    group: cli.group,
                };
                let label = if count_rtnl { "rtnl" } else { "timed" };
                eprint!("[{label} {}] {system} N={n} ... ", repeat + 1);
                let rec = run_one(system, &spec, repeat, count_rtnl, &counters, &opts);
                let nb = rec.neighbour.as_ref().map_or(String::new(), |nb| {
                    format!(
                        "; neighbour {} requests, p50 {:.0} us, p99 {:.0} us, max {:.0} us",
                        nb.requests,
                        nb.p50_us.unwrap_or(f64::NAN),
                        nb.p99_us.unwrap_or(f64::NAN),
                        nb.max_us.unwrap_or(f64::NAN)
                    )
                });
                match (&rec.error, &rec.done) {
                    (None, Some(d)) => eprintln!(
                        "{:.0} slots/s ({} ok, {} failed, wall {:.3} s{nb})",
                        d.provision.ok as f64 / d.wall_s,
                        d.provision.ok,
                        d.provision.failed,
                        d.wall_s
                    ),
                    (Some(e), _) => eprintln!("error: {e}"),
                    _ => eprintln!("no result"),
                }
                runs.push(rec);
                write_outputs(&cli, &command, &machine, &runs, &systems)?;
            }
        }
    }
    eprintln!("results in {}", cli.out.display());
    Ok(())
}

/// Starts and stops the RTNL counter once: `Some(why)` when the kernel refuses its
/// watchpoint (the campaign then runs without RTNL figures and says so in its reports),
/// an error for any other failure (a bug or a missing privilege is not hidden).
fn rtnl_refusal() -> Result<Option<String>, String> {
    match RtnlCounter::start() {
        Ok(c) => {
            drop(c.stop());
            Ok(None)
        }
        Err(e) if e.refused_by_kernel() => {
            eprintln!("warning: RTNL not counted: the kernel refuses the watchpoint: {e}");
            Ok(Some(format!(
                "the kernel refuses the hardware watchpoint: {e}"
            )))
        }
        Err(e) => Err(format!("RTNL counter: {e} (--no-rtnl runs without it)")),
    }
}

/// Rewritten after every run, so an interrupted campaign keeps what it measured.
fn write_outputs(
    cli: &Cli,
    command: &str,
    machine: &Machine,
    runs: &[RunRecord],
    systems: &[SystemKind],
) -> Result<(), String> {
    let summary = summarize(runs, systems);
    let results = Results {
        command: command.to_string(),
        machine: machine.clone(),
        neighbour: cli.neighbour || runs.iter().any(|r| r.neighbour_ran),
        neighbour_period_us: runs
            .iter()
            .find_map(|r| r.neighbour.as_ref().map(|n| n.period_us))
            .or(cli.neighbour.then_some(cli.neighbour_period_us)),
        summary: &summary,
        runs,
    };
    let write = |name: &str, body: &[u8]| {
        let path = cli.out.join(name);
        std::fs::write(&path, body).map_err(|e| format!("write {}: {e}", path.display()))
    };
    let json = serde_json::to_vec_pretty(&results).map_err(|e| e.to_string())?;
    write("results.json", &json)?;
    write(
        "results.md",
        markdown(&summary, machine, command).as_bytes(),
    )?;
    write_plots(&summary, &cli.out)
}

/// Rewrites the reports of `<out>/results.json` from its raw runs.
fn rerender(cli: &Cli) -> Result<(), String> {
    let path = cli.out.join("results.json");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let runs: Vec<RunRecord> =
        serde_json::from_value(v["runs"].clone()).map_err(|e| format!("runs: {e}"))?;
    let machine: Machine =
        serde_json::from_value(v["machine"].clone()).map_err(|e| format!("machine: {e}"))?;
    let command = v["command"].as_str().unwrap_or_default().to_string();
    let systems: Vec<SystemKind> = SystemKind::EVERY
        .iter()
        .copied()
        .filter(|&k| runs.iter().any(|r| r.system == k))
        .collect();
    write_outputs(cli, &command, &machine, &runs, &systems)
}
