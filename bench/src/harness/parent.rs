//! parent: one run of one system at one N: spawn the child in private namespaces, wait
//! for the kernel to go quiet, then time and count each step from outside.
//! Leaves aggregation across runs to `summary`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::neighbour::{Neighbour, NeighbourReport};
use super::protocol::{self, Done, Gone, Verified};
use crate::rtnl::{monotonic_ns, RtnlCounter, RtnlReport};
use crate::syscount::{Counts, SyscallCounter};
use crate::systems::{RunSpec, SystemKind};

/// How runs are measured.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// No write to rtnl_mutex for this long counts as "the kernel is done".
    pub quiet: Duration,
    /// Give up waiting for quiet after this long (the run is flagged).
    pub settle_max: Duration,
    /// This binary (re-executed as the child).
    pub exe: PathBuf,
    /// Live network namespaces (slab objects) when the harness started; a run starts
    /// only when the count is back near it (the previous run's namespaces are freed).
    pub netns_baseline: std::cell::Cell<Option<u64>>,
    /// Run a neighbour (see `neighbour`) through the timed step of every run, one request
    /// per this period; `None`: no neighbour.
    pub neighbour: Option<Duration>,
}

/// SLUB's count of allocated `struct net` (every network namespace not yet freed).
const NETNS_SLAB: &str = "/sys/kernel/slab/net_namespace/objects";
/// Slack over the baseline: SLUB counts objects of per-CPU partial slabs as in use, so
/// the count settles a few dozen above where it started (measured: +7..+20).
const NETNS_SLACK: u64 = 64;

/// Network namespaces allocated right now, if the kernel shows it.
pub fn netns_objects() -> Option<u64> {
    std::fs::read_to_string(NETNS_SLAB)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether a kernel worker is destroying network namespaces right now. cleanup_net runs
/// as a work item of the `netns` workqueue, and while a worker executes an item its comm
/// in /proc reads `kworker/<id>+netns` (wq_worker_comm; `-netns` once it is idle again),
/// sleeping in rcu_barrier or on RTNL included.
pub fn netns_cleanup_running() -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let name = e.file_name();
        if !name
            .to_str()
            .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
        {
            return false;
        }
        std::fs::read(e.path().join("comm")).is_ok_and(|c| {
            let c = c.strip_suffix(b"\n").unwrap_or(&c);
            c.starts_with(b"kworker") && c.ends_with(b"+netns")
        })
    })
}

/// Waits until the namespace count is back within the slack of the baseline, or until no
/// kernel worker has been destroying namespaces (`netns_cleanup_running`) and the count
/// has not moved for one quiet period; returns whether either happened before
/// `opts.settle_max`. The count alone cannot tell: cleanup_net frees a batch's
/// `struct net`s only in its next round, after one more rcu_barrier (net_passive_dec puts
/// them on defer_free_list, net_complete_free frees them), so the last batch destroyed on
/// the machine stays counted until someone destroys another namespace, and the count is
/// flat while a batch is being destroyed; SLUB also keeps counting objects of per-CPU
/// partial slabs. The baseline follows the count down.
fn wait_netns_freed(opts: &RunOptions) -> bool {
    let Some(base) = opts.netns_baseline.get() else {
        return true;
    };
    let t = Instant::now();
    let mut last = None;
    let mut since = Instant::now();
    // A cleanup the step's last close queued may not have started yet: count the wait's
    // start as busy.
    let mut busy = Instant::now();
    loop {
        let Some(n) = netns_objects() else {
            return true;
        };
        if n < base {
            opts.netns_baseline.set(Some(n));
        }
        if n <= base + NETNS_SLACK {
            return true;
        }
        let now = Instant::now();
        if netns_cleanup_running() {
            busy = now;
        }
        if last != Some(n) {
            last = Some(n);
            since = now;
        }
        if now - busy >= opts.quiet && now - since >= opts.quiet {
            return true;
        }
        if t.elapsed() >= opts.settle_max {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The counters shared by all runs (either may be missing; the run says so).
pub struct Counters {
    /// Syscall counter (BPF tracepoints; cheap, on in every run).
    pub syscalls: Option<SyscallCounter>,
    /// Whether the RTNL watchpoint can be used: to wait for quiet before every run, and
    /// to count in the runs that ask for it (its debug traps slow RTNL-heavy work, so
    /// timed runs do not count RTNL).
    pub rtnl: bool,
}

/// RTNL figures of one window, split by who held the lock.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RtnlFigures {
    /// Acquisitions by the child and its descendants.
    pub own: u64,
    /// Acquisitions by kernel threads (kworkers: netns cleanup, DAD, linkwatch).
    pub kernel: u64,
    /// Acquisitions by other user processes on the machine (noise).
    pub foreign: u64,
    /// Acquisitions by the harness's own neighbour (`--neighbour`), kept apart from both
    /// the system's and the machine's noise.
    #[serde(default)]
    pub neighbour: u64,
    /// Longest hold by anyone, microseconds.
    pub longest_hold_us: Option<f64>,
    /// Longest hold by the child, microseconds.
    pub longest_own_hold_us: Option<f64>,
    /// Hold times (all holders), power-of-two ns buckets: (upper bound ns, count).
    pub hold_histogram: Vec<(u64, u64)>,
    /// Holds of the child and its descendants, ns, ascending.
    pub own_holds_ns: Vec<u64>,
    /// Every holder: (pid, name, count), largest first.
    pub by_pid: Vec<(u32, String, u64)>,
    /// No sample lost or throttled, no unknown writer.
    pub complete: bool,
    /// Whether the kernel went quiet before the window closed.
    pub settled: bool,
    /// Window length, seconds.
    pub window_s: f64,
}

/// Everything measured in one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// System.
    pub system: SystemKind,
    /// Slots asked for.
    pub n: usize,
    /// Repetition index (0-based).
    pub repeat: usize,
    /// RTNL was counted in this run (watchpoints on: its timing is not used).
    pub rtnl_counted: bool,
    /// Error that ended the run early, if any.
    pub error: Option<String>,
    /// Seconds waited, before the timed step, for the previous run's teardown to end.
    pub settle_before_s: f64,
    /// The child's provisioning report.
    pub done: Option<Done>,
    /// Host namespace read back after provisioning.
    pub verified: Option<Verified>,
    /// Teardown report.
    pub gone: Option<Gone>,
    /// Syscalls of the child's process tree during provisioning (go .. done).
    pub syscalls_provision: Option<Counts>,
    /// Syscalls during teardown (teardown .. exit).
    pub syscalls_teardown: Option<Counts>,
    /// RTNL during provisioning plus the settle window after it.
    pub rtnl_provision: Option<RtnlFigures>,
    /// RTNL during teardown plus the settle window after the child exited.
    pub rtnl_teardown: Option<RtnlFigures>,
    /// Seconds from the teardown request until the namespaces were freed (slab count back
    /// at the baseline, or steady) and RTNL went quiet (the quiet period itself excluded).
    pub teardown_to_quiet_s: Option<f64>,
    /// Network namespaces allocated (slab) just before the timed step.
    pub netns_objects_before: Option<u64>,
    /// Whether a neighbour ran through this run's timed step.
    #[serde(default)]
    pub neighbour_ran: bool,
    /// What the neighbour measured (`None`: no neighbour, or it failed: see `error`).
    #[serde(default)]
    pub neighbour: Option<NeighbourReport>,
}

struct Talk {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

impl Talk {
    fn send(&mut self, step: &str) -> Result<(), String> {
        writeln!(self.to, "{step}").map_err(|e| format!("send {step}: {e}"))
    }

    /// Reads the child's answer; `Err` on `failed` or a wrong word.
    fn expect(&mut self, word: &str) -> Result<String, String> {
        let mut line = String::new();
        self.from
            .read_line(&mut line)
            .map_err(|e| format!("read from child: {e}"))?;
        let line = line.trim_end();
        let (got, body) = line.split_once(' ').unwrap_or((line, ""));
        if got == word {
            return Ok(body.to_string());
        }
        if got == protocol::FAILED {
            return Err(serde_json::from_str::<String>(body).unwrap_or_else(|_| body.into()));
        }
        if line.is_empty() {
            return Err(format!("child exited while we waited for `{word}`"));
        }
        Err(format!("expected `{word}`, child said {line:?}"))
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &str) -> Result<T, String> {
    serde_json::from_str(body).map_err(|e| format!("bad child report: {e}"))
}

/// Waits until the previous namespaces are freed and RTNL has been quiet for
/// `opts.quiet` (sleeps `quiet` if not counting).
fn settle(counter: Option<&RtnlCounter>, opts: &RunOptions) -> bool {
    if !wait_netns_freed(opts) {
        eprintln!(
            "warning: network namespaces still above the baseline after {:?}",
            opts.settle_max
        );
    }
    match counter {
        Some(c) => c.settle(opts.quiet, opts.settle_max),
        None => {
            std::thread::sleep(opts.quiet);
            true
        }
    }
}

fn start_rtnl(counters: &Counters) -> Result<Option<RtnlCounter>, String> {
    if !counters.rtnl {
        return Ok(None);
    }
    RtnlCounter::start()
        .map(Some)
        .map_err(|e| format!("RTNL counter: {e}"))
}

fn snapshot(counters: &Counters) -> Result<Option<Counts>, String> {
    counters
        .syscalls
        .as_ref()
        .map(|c| c.snapshot().map_err(|e| e.to_string()))
        .transpose()
}

fn diff(a: &Option<Counts>, b: &Option<Counts>) -> Option<Counts> {
    match (a, b) {
        (Some(a), Some(b)) => Some(b.since(a)),
        _ => None,
    }
}

/// Runs `system` once for `spec` and measures it; `count_rtnl` keeps the RTNL
/// watchpoints on through provisioning and teardown.
pub fn run_one(
    system: SystemKind,
    spec: &RunSpec,
    repeat: usize,
    count_rtnl: bool,
    counters: &Counters,
    opts: &RunOptions,
) -> RunRecord {
    let count_rtnl = count_rtnl && counters.rtnl;
    let mut rec = RunRecord {
        system,
        n: spec.n,
        repeat,
        rtnl_counted: count_rtnl,
        error: None,
        settle_before_s: 0.0,
        done: None,
        verified: None,
        gone: None,
        syscalls_provision: None,
        syscalls_teardown: None,
        rtnl_provision: None,
        rtnl_teardown: None,
        teardown_to_quiet_s: None,
        netns_objects_before: None,
        neighbour_ran: false,
        neighbour: None,
    };
    let mut talk = match spawn(system, spec, counters, opts) {
        Ok(t) => t,
        Err(e) => {
            rec.error = Some(e);
            return rec;
        }
    };
    if let Err(e) = drive(&mut talk, &mut rec, count_rtnl, counters, opts) {
        rec.error = Some(e);
    }
    // Whatever happened, the child must not outlive the run: closing its stdin ends it.
    drop(talk.to);
    let _ = talk.child.wait();
    rec
}

fn spawn(
    system: SystemKind,
    spec: &RunSpec,
    counters: &Counters,
    opts: &RunOptions,
) -> Result<Talk, String> {
    let mut child = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(&opts.exe)
        .args([
            "child",
            "--system",
            system.name(),
            "--n",
            &spec.n.to_string(),
            "--prefix",
            &spec.prefix,
            "--group",
            &spec.group.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn unshare: {e}"))?;
    // unshare execs the child, so its pid is the child's; the child waits for `setup`
    // before doing anything, so nothing is missed.
    if let Some(c) = &counters.syscalls {
        c.reset().map_err(|e| e.to_string())?;
        c.track(child.id()).map_err(|e| e.to_string())?;
    }
    let to = child.stdin.take().expect("piped");
    let from = BufReader::new(child.stdout.take().expect("piped"));
    Ok(Talk { child, to, from })
}

fn drive(
    talk: &mut Talk,
    rec: &mut RunRecord,
    count_rtnl: bool,
    counters: &Counters,
    opts: &RunOptions,
) -> Result<(), String> {
    let pid = talk.child.id();
    talk.send(protocol::SETUP)?;
    talk.expect(protocol::READY)?;
    // The neighbour makes its namespace and veth before the settle wait, so the kernel
    // work they cause is over before the timed step; it lives until this function
    // returns (after the teardown window), so freeing its namespace falls into the next
    // run's settle wait.
    let mut neighbour = opts
        .neighbour
        .map(|period| Neighbour::spawn(&opts.exe, period))
        .transpose()?;
    let neighbour_pid = neighbour.as_ref().map(Neighbour::pid);

    // Provisioning window: quiet first (the previous run's teardown is over), then go.
    let mut rtnl = start_rtnl(counters)?;
    let t = Instant::now();
    let quiet_before = settle(rtnl.as_ref(), opts);
    rec.settle_before_s = t.elapsed().as_secs_f64();
    if !count_rtnl {
        // Used for settling only: remove the watchpoints before the timed step.
        drop(rtnl.take().map(RtnlCounter::stop));
    }
    if !quiet_before {
        eprintln!(
            "warning: RTNL did not go quiet within {:?} before the run",
            opts.settle_max
        );
    }
    rec.netns_objects_before = netns_objects();
    if let Some(nb) = &mut neighbour {
        nb.start()?;
        rec.neighbour_ran = true;
    }
    let go_ns = monotonic_ns();
    let s0 = snapshot(counters)?;
    talk.send(protocol::GO)?;
    let done = talk.expect(protocol::DONE);
    let s1 = snapshot(counters)?;
    // Stopped right after DONE (before the settle wait), whether the step worked or not.
    if let Some(nb) = &mut neighbour {
        rec.neighbour = Some(nb.stop()?);
    }
    let done: Done = parse(&done?)?;
    rec.syscalls_provision = diff(&s0, &s1);
    rec.done = Some(done);
    if let Some(c) = rtnl {
        let settled = c.settle(opts.quiet, opts.settle_max);
        rec.rtnl_provision = Some(figures(&c.stop(), pid, neighbour_pid, settled, go_ns));
    }

    talk.send(protocol::VERIFY)?;
    rec.verified = Some(parse(&talk.expect(protocol::VERIFIED)?)?);

    // Teardown window: until the child has exited and the kernel went quiet.
    let rtnl = if count_rtnl {
        start_rtnl(counters)?
    } else {
        None
    };
    let s2 = snapshot(counters)?;
    let t = Instant::now();
    let teardown_ns = monotonic_ns();
    talk.send(protocol::TEARDOWN)?;
    let gone: Gone = parse(&talk.expect(protocol::GONE)?)?;
    let _ = talk.child.wait();
    let s3 = snapshot(counters)?;
    rec.syscalls_teardown = diff(&s2, &s3);
    let settled = match &rtnl {
        Some(c) => wait_netns_freed(opts) && c.settle(opts.quiet, opts.settle_max),
        None => {
            // Not counting: a short-lived counter still tells when the kernel is done.
            let c = start_rtnl(counters)?;
            let s = settle(c.as_ref(), opts);
            drop(c.map(RtnlCounter::stop));
            s
        }
    };
    // The quiet period itself is not teardown time.
    rec.teardown_to_quiet_s = Some((t.elapsed().saturating_sub(opts.quiet)).as_secs_f64());
    if let Some(c) = rtnl {
        rec.rtnl_teardown = Some(figures(&c.stop(), pid, neighbour_pid, settled, teardown_ns));
    }
    if let Some(e) = &gone.error {
        rec.error = Some(format!("teardown: {e}"));
    }
    rec.gone = Some(gone);
    Ok(())
}

/// Whether `pid` is a kernel thread (kthreadd or one of its children).
pub fn is_kernel_thread(pid: u32, comm: Option<&str>) -> bool {
    if pid == 2 || comm.is_some_and(|c| c.starts_with("kworker")) {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().nth(1)?.parse::<u32>().ok()
        })
        == Some(2)
}

/// Splits the acquisitions released at or after `since_ns` (CLOCK_MONOTONIC) into the
/// child's, the neighbour's, kernel threads' and others'; earlier ones belong to the
/// settle wait.
pub fn figures(
    r: &RtnlReport,
    child: u32,
    neighbour: Option<u32>,
    settled: bool,
    since_ns: u64,
) -> RtnlFigures {
    let own_pids = r.descendants(child);
    let neighbour_pids = neighbour.map(|p| r.descendants(p)).unwrap_or_default();
    let acq: Vec<_> = r
        .acquisitions()
        .iter()
        .filter(|a| a.released_ns >= since_ns)
        .collect();
    let mut holds: Vec<u64> = acq.iter().filter_map(|a| a.hold_ns).collect();
    holds.sort_unstable();
    let mut hist: Vec<(u64, u64)> = Vec::new();
    for &ns in &holds {
        let bound = ns.max(1000).next_power_of_two();
        match hist.last_mut() {
            Some((b, n)) if *b == bound => *n += 1,
            _ => hist.push((bound, 1)),
        }
    }
    let mut f = RtnlFigures {
        settled,
        complete: r.is_complete() && r.unclassified_writes() == 0,
        window_s: r.window().as_secs_f64(),
        hold_histogram: hist,
        longest_hold_us: holds.last().map(|&ns| ns as f64 / 1e3),
        ..Default::default()
    };
    let mut counts: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    for a in &acq {
        *counts.entry(a.pid).or_default() += 1;
    }
    let mut by_pid: Vec<(u32, u64)> = counts.into_iter().collect();
    by_pid.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (pid, count) in by_pid {
        let comm = r.comm(pid);
        if own_pids.contains(&pid) {
            f.own += count;
        } else if neighbour_pids.contains(&pid) {
            f.neighbour += count;
        } else if is_kernel_thread(pid, comm.as_deref()) {
            f.kernel += count;
        } else {
            f.foreign += count;
        }
        f.by_pid.push((pid, comm.unwrap_or_default(), count));
    }
    let mut own: Vec<u64> = acq
        .iter()
        .filter(|a| own_pids.contains(&a.pid))
        .filter_map(|a| a.hold_ns)
        .collect();
    own.sort_unstable();
    f.longest_own_hold_us = own.last().map(|&ns| ns as f64 / 1e3);
    f.own_holds_ns = own;
    f
}
