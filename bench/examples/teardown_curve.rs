//! teardown_curve: how the size of a namespace release batch trades the kernel's longest
//! RTNL hold against the time until the kernel has destroyed a whole pool.
//!
//! Usage (root): `teardown_curve [--n 4000] [--k all,1000,250,50,10]
//! [--modes close,host-first] [--repeat 3] [--wait finished|started] [--json FILE]`.
//!
//! The process first moves into a private network namespace (the "host namespace" of
//! every pool it makes). Each run provisions N standard slots with the library, lets the
//! kernel go quiet, starts the RTNL counter and a neighbour (another process toggling a
//! veth in its own namespace, one request at a time), then tears the pool down:
//!
//! - `close`: drop the slots (their namespace fd and socket) k at a time; the kernel's
//!   cleanup_net deletes each namespace's devices, the host ends with them.
//! - `host-first`: delete the host ends by group first (`Engine::teardown` with no
//!   slots), then drop the slots k at a time.
//!
//! Between batches it waits for the kernel: every namespace of the batch has been taken
//! by a cleanup_net run (one RTM_DELNSID per namespace arrives in the host namespace,
//! sent by unhash_nsid once the run has taken its list) and, with `--wait finished`, that
//! run has returned (no kworker runs netns work: its comm carries `+netns` while it does).
//! The run ends when every host end is gone (one RTM_DELLINK each, or the group deletes'
//! ACKs) and the last cleanup_net run has returned.

#![allow(unsafe_code)] // setsockopt and unshare: each block has its SAFETY note

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;
use netlink_packet_core::NLM_F_ACK;
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use netslot::{Engine, EngineConfig, Slot};
use netslot_bench::harness::neighbour::{neighbour_main, Neighbour, NeighbourReport};
use netslot_bench::harness::parent::is_kernel_thread;
use netslot_bench::rtnl::{monotonic_ns, RtnlCounter, RtnlReport};
use netslot_bench::systems::nl::{self, Nl};
use serde::Serialize;

/// RTMGRP_LINK: link notifications (RTM_NEWLINK / RTM_DELLINK).
const RTMGRP_LINK: u32 = 1;
/// RTNLGRP_NSID: namespace id notifications (RTM_NEWNSID / RTM_DELNSID).
const RTNLGRP_NSID: u32 = 28;
const RTM_DELLINK: u16 = 17;
const RTM_DELNSID: u16 = 89;
/// Room for every notification of a 4000-slot teardown at once (about 2 per slot).
const MONITOR_RCVBUF: libc::c_int = 64 << 20;
/// Pool of the runs (prefix, base group): nothing else on the machine uses them.
const PREFIX: &str = "tc";
/// RTM_DELNSID notifications further apart than this belong to different cleanup runs.
const RUN_GAP_NS: u64 = 20_000_000;
const GROUP: u32 = 7710;

#[derive(Parser, Debug)]
struct Cli {
    /// Pool sizes, comma-separated.
    #[arg(long, default_value = "4000", value_delimiter = ',')]
    n: Vec<usize>,
    /// Release batch sizes, comma-separated; `all` is the whole pool at once.
    #[arg(long, default_value = "all,1000,250,50,10", value_delimiter = ',')]
    k: Vec<String>,
    /// Teardown modes: close, host-first, xdp-off, no-xdp.
    #[arg(long, default_value = "close,host-first", value_delimiter = ',')]
    modes: Vec<String>,
    /// Repeats of every point (interleaved).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Between batches wait for the previous batch's cleanup to `finished` (the run
    /// returned) or only `started` (the run took the batch).
    #[arg(long, default_value = "finished")]
    wait: String,
    /// Neighbour pace: one request per this many microseconds; 0 turns it off.
    #[arg(long, default_value_t = 1000)]
    neighbour_us: u64,
    /// RTNL quiet time that counts as "the kernel is done" before a run.
    #[arg(long, default_value_t = 300)]
    quiet_ms: u64,
    /// Append one JSON line per run to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Internal: the neighbour process.
    #[arg(long, hide = true)]
    period_us: Option<u64>,
    /// Internal: `neighbour`.
    #[arg(hide = true)]
    role: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Mode {
    /// Close the namespaces; cleanup_net deletes the host ends with them.
    Close,
    /// Delete the host ends by group first (`Engine::teardown` with no slots).
    HostFirst,
    /// Detach XDP from every host end first, one RTM_SETLINK per device (IFLA_XDP fd -1),
    /// then close as `Close`.
    XdpOff,
    /// A pool without the counters program at all, closed as `Close` (the floor).
    NoXdp,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Close => "close",
            Mode::HostFirst => "host-first",
            Mode::XdpOff => "xdp-off",
            Mode::NoXdp => "no-xdp",
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone, Serialize)]
struct Row {
    n: usize,
    k: usize,
    mode: Mode,
    wait: String,
    rep: usize,
    loadavg: String,
    /// Other RTNL-heavy programs running when the window opened.
    foreign: Vec<String>,
    provision_s: f64,
    /// From the first removal to the kernel's end (host ends gone, last cleanup run back).
    teardown_s: f64,
    /// Group deletes of the host ends (host-first), or the XDP detaches (xdp-off).
    host_delete_s: Option<f64>,
    batches: usize,
    /// Release to the batch's wait condition, per batch: median and longest.
    batch_p50_ms: f64,
    batch_max_ms: f64,
    /// RTNL figures: `None` when the watchpoint counter is unavailable.
    kernel_acq: Option<usize>,
    kernel_max_ms: Option<f64>,
    /// The kernel workers' five longest holds, ms.
    kernel_top_ms: Vec<f64>,
    own_acq: Option<usize>,
    own_max_ms: Option<f64>,
    /// p99 over the holds of the pool's own process and the kernel workers.
    p99_hold_ms: Option<f64>,
    /// Holds (own + kernel) over 5 ms and over 10 ms.
    holds_over_5ms: Option<usize>,
    holds_over_10ms: Option<usize>,
    nb_requests: u64,
    nb_p50_ms: Option<f64>,
    nb_p99_ms: Option<f64>,
    nb_max_ms: Option<f64>,
    /// The neighbour's five slowest requests, placed in the teardown's steps.
    nb_top: Vec<String>,
    /// Notifications seen: host ends deleted, namespace ids removed.
    dellinks: usize,
    delnsids: usize,
    /// cleanup_net runs seen (bursts of RTM_DELNSID).
    cleanup_runs: usize,
    monitor_overflow: bool,
    counter_complete: bool,
    /// Host ends left in the host namespace's link dump after the run (must be 0).
    left_host_ends: usize,
    timed_out: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.role.as_deref() == Some("neighbour") {
        let period = Duration::from_micros(cli.period_us.unwrap_or(1000));
        return std::process::ExitCode::from(neighbour_main(period) as u8);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("teardown_curve needs root");
        return std::process::ExitCode::FAILURE;
    }
    // The whole process in a private network namespace, before any thread exists, so
    // every thread (the engine's pool thread, the monitor) and child inherits it.
    // SAFETY: unshare takes a flag word and touches no memory of ours.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!("unshare: {}", std::io::Error::last_os_error());
        return std::process::ExitCode::FAILURE;
    }
    let ks: Vec<Option<usize>> = cli
        .k
        .iter()
        .map(|k| if k == "all" { None } else { k.parse().ok() })
        .collect();
    let modes: Vec<Mode> = cli
        .modes
        .iter()
        .map(|m| match m.as_str() {
            "host-first" => Mode::HostFirst,
            "xdp-off" => Mode::XdpOff,
            "no-xdp" => Mode::NoXdp,
            _ => Mode::Close,
        })
        .collect();
    let exe = std::env::current_exe().expect("own path");
    let quiet = Duration::from_millis(cli.quiet_ms);
    let mut rows = Vec::new();
    for rep in 0..cli.repeat {
        for &n in &cli.n {
            for &mode in &modes {
                for &k in &ks {
                    let k = k.unwrap_or(n).min(n);
                    match run(&exe, n, k, mode, &cli, rep, quiet) {
                        Ok(row) => {
                            print_row(&row);
                            if let Some(path) = &cli.json {
                                let line = serde_json::to_string(&row).expect("serializable");
                                let mut f = std::fs::OpenOptions::new()
                                    .create(true)
                                    .append(true)
                                    .open(path)
                                    .expect("json file");
                                writeln!(f, "{line}").expect("write json");
                            }
                            rows.push(row);
                        }
                        Err(e) => eprintln!("run n={n} k={k} {mode:?} rep {rep}: {e}"),
                    }
                }
            }
        }
    }
    summarize(&rows);
    std::process::ExitCode::SUCCESS
}

fn print_row(r: &Row) {
    println!(
        "n={} k={} {:?} rep {} {:?}: teardown {:.2} s ({} batches, {} runs, p50 {:.0} ms) kernel {:?} acq max {:?} ms own max {:?} ms p99 {:?} ms >5ms {:?} >10ms {:?} | nb {} req p99 {:?} max {:?} ms | load {} {}",
        r.n,
        r.k,
        r.mode,
        r.rep,
        r.foreign,
        r.teardown_s,
        r.batches,
        r.cleanup_runs,
        r.batch_p50_ms,
        r.kernel_acq,
        r.kernel_max_ms,
        r.own_max_ms,
        r.p99_hold_ms,
        r.holds_over_5ms,
        r.holds_over_10ms,
        r.nb_requests,
        r.nb_p99_ms.map(|v| (v * 10.0).round() / 10.0),
        r.nb_max_ms.map(|v| (v * 10.0).round() / 10.0),
        r.loadavg,
        if r.timed_out { "TIMED OUT" } else { "" },
    );
    for t in &r.nb_top {
        println!("    slow: {t}");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Medians over the repeats of every point, as a Markdown table.
fn summarize(rows: &[Row]) {
    let mut keys: Vec<(usize, Mode, usize)> = Vec::new();
    for r in rows {
        if !keys.contains(&(r.n, r.mode, r.k)) {
            keys.push((r.n, r.mode, r.k));
        }
    }
    println!();
    println!("| N | mode | k | runs | teardown s | vs close-all | batches | kernel longest ms | own longest ms | p99 hold ms | holds > 5 / > 10 ms | neighbour p99 / max ms | batch p50 ms / up s |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &(n, mode, k) in &keys {
        let rs: Vec<&Row> = rows
            .iter()
            .filter(|r| (r.n, r.mode, r.k) == (n, mode, k))
            .collect();
        let base: Vec<f64> = rows
            .iter()
            .filter(|r| r.n == n && r.mode == Mode::Close && r.k == n)
            .map(|r| r.teardown_s)
            .collect();
        let t = median(rs.iter().map(|r| r.teardown_s).collect());
        let m = |f: &dyn Fn(&Row) -> f64| median(rs.iter().map(|r| f(r)).collect());
        println!(
            "| {n} | {} | {} | {} | {:.2} | {:.2}x | {} | {:.1} | {:.1} | {:.2} | {} / {} | {:.1} / {:.1} | {:.1} / {:.1} |",
            mode.name(),
            if k == n { "all".to_string() } else { k.to_string() },
            rs.len(),
            t,
            t / median(base),
            rs[0].batches,
            m(&|r| r.kernel_max_ms.unwrap_or(f64::NAN)),
            m(&|r| r.own_max_ms.unwrap_or(f64::NAN)),
            m(&|r| r.p99_hold_ms.unwrap_or(f64::NAN)),
            m(&|r| r.holds_over_5ms.map_or(f64::NAN, |v| v as f64)),
            m(&|r| r.holds_over_10ms.map_or(f64::NAN, |v| v as f64)),
            m(&|r| r.nb_p99_ms.unwrap_or(f64::NAN)),
            m(&|r| r.nb_max_ms.unwrap_or(f64::NAN)),
            m(&|r| r.batch_p50_ms),
            m(&|r| r.provision_s),
        );
    }
}

/// Notifications in the host namespace: host ends deleted, slot namespaces' ids removed.
struct Monitor {
    dellinks: Arc<AtomicUsize>,
    delnsids: Arc<AtomicUsize>,
    /// Bursts of RTM_DELNSID more than [`RUN_GAP_NS`] apart: unhash_nsid sends a run's
    /// notifications back to back at its start, so each burst is one cleanup_net run.
    bursts: Arc<AtomicUsize>,
    overflow: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    fn start(hosts: HashSet<u32>) -> std::io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
        sock.add_membership(RTNLGRP_NSID)?;
        let fd = sock.as_raw_fd();
        let size = MONITOR_RCVBUF;
        // SAFETY: the option value is a live c_int of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        // SAFETY: the option value is a live timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let dellinks = Arc::new(AtomicUsize::new(0));
        let delnsids = Arc::new(AtomicUsize::new(0));
        let bursts = Arc::new(AtomicUsize::new(0));
        let overflow = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (dl, dn, bu, of, st) = (
            dellinks.clone(),
            delnsids.clone(),
            bursts.clone(),
            overflow.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            let mut last_nsid_ns = 0u64;
            while !st.load(Ordering::Relaxed) {
                let n = match sock.recv(&mut &mut buf[..], 0) {
                    Ok(n) => n,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        of.store(true, Ordering::Relaxed);
                        continue;
                    }
                    Err(_) => continue, // timeout: look at `stop`
                };
                let mut off = 0;
                while off + 16 <= n {
                    let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4")) as usize;
                    let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().expect("2"));
                    if len < 16 || off + len > n {
                        break;
                    }
                    match kind {
                        RTM_DELNSID => {
                            dn.fetch_add(1, Ordering::Relaxed);
                            let now = monotonic_ns();
                            if now.saturating_sub(last_nsid_ns) > RUN_GAP_NS {
                                bu.fetch_add(1, Ordering::Relaxed);
                            }
                            last_nsid_ns = now;
                        }
                        RTM_DELLINK if len >= 32 => {
                            // ifinfomsg: family, pad, type (u16), index (i32) at +4.
                            let index =
                                i32::from_ne_bytes(buf[off + 20..off + 24].try_into().expect("4"));
                            if hosts.contains(&(index as u32)) {
                                dl.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {}
                    }
                    off += (len + 3) & !3;
                }
            }
        });
        Ok(Self {
            dellinks,
            delnsids,
            bursts,
            overflow,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether a kworker is running netns work (cleanup_net) right now: a busy worker's comm
/// is `kworker/...+netns` (wq_worker_comm), an idle one's `-netns`.
fn cleanup_running() -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{name}/comm")) {
            if comm.starts_with("kworker") && comm.contains("+netns") {
                return true;
            }
        }
    }
    false
}

/// Waits until no cleanup_net run is in progress (seen twice in a row, 2 ms apart).
fn wait_cleanup_idle(deadline: Instant) -> bool {
    let mut idle = 0;
    while Instant::now() < deadline {
        if cleanup_running() {
            idle = 0;
        } else {
            idle += 1;
            if idle >= 2 {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

fn wait_count(c: &AtomicUsize, at_least: usize, deadline: Instant) -> bool {
    while c.load(Ordering::Relaxed) < at_least {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Waits until the kernel has gone quiet: no cleanup_net run, and no RTNL write for
/// `quiet`.
fn settle(quiet: Duration) -> Result<(), String> {
    wait_cleanup_idle(Instant::now() + Duration::from_secs(120));
    match RtnlCounter::start() {
        Ok(c) => {
            if !c.settle(quiet, Duration::from_secs(60)) {
                eprintln!("warning: RTNL did not go quiet");
            }
            drop(c.stop());
        }
        // No watchpoint on this machine: a fixed wait after the last cleanup run.
        Err(_) => std::thread::sleep(quiet),
    }
    Ok(())
}

/// Other RTNL-heavy programs running now (another netslot, a benchmark, a build), by
/// name: they share the lock with the run.
fn foreign() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found: Vec<String> = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim();
        if ["netslot", "lifecycle", "rustc", "cargo", "cc1", "ld"]
            .iter()
            .any(|p| comm.starts_with(p))
            && !found.iter().any(|f| f == comm)
        {
            found.push(comm.to_string());
        }
    }
    found.sort();
    found
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Host ends of the pool in the host namespace's link dump (iproute2's view).
fn host_ends_left() -> usize {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter(|l| {
            l.split(": ").nth(1).is_some_and(|name| {
                name.strip_prefix(PREFIX)
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
        })
        .count()
}

fn run(
    exe: &std::path::Path,
    n: usize,
    k: usize,
    mode: Mode,
    cli: &Cli,
    rep: usize,
    quiet: Duration,
) -> Result<Row, String> {
    settle(quiet)?;
    let load = loadavg();
    let mut engine = Engine::new(EngineConfig {
        prefix: PREFIX.into(),
        group: GROUP,
        xdp_counters: mode != Mode::NoXdp,
        ..Default::default()
    })
    .map_err(|e| format!("engine: {e}"))?;
    let t = Instant::now();
    let out = engine.provision(n).map_err(|e| format!("provision: {e}"))?;
    let provision_s = t.elapsed().as_secs_f64();
    let mut slots: Vec<Slot> = out.slots.into_iter().flatten().collect();
    if slots.len() != n {
        return Err(format!("only {} of {n} slots provisioned", slots.len()));
    }
    let host_list: Vec<u32> = slots.iter().map(|s| s.spec().ifindex).collect();
    let hosts: HashSet<u32> = host_list.iter().copied().collect();
    let mon = Monitor::start(hosts).map_err(|e| format!("monitor: {e}"))?;
    let mut nb = if cli.neighbour_us > 0 {
        Some(Neighbour::spawn(
            exe,
            Duration::from_micros(cli.neighbour_us),
        )?)
    } else {
        None
    };
    let nb_pid = nb.as_ref().map(Neighbour::pid);
    // Provisioning's deferred work and the neighbour's own setup are over before the
    // window opens.
    settle(quiet)?;
    let others = foreign();
    let counter = match RtnlCounter::start() {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("warning: no RTNL hold figures: {e}");
            None
        }
    };
    if let Some(nb) = &mut nb {
        nb.start()?;
    }
    let t0_ns = monotonic_ns();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(600);
    let mut timed_out = false;
    let mut host_delete_s = None;
    if mode == Mode::HostFirst {
        engine
            .teardown(Vec::new())
            .map_err(|e| format!("delete host ends: {e}"))?;
        host_delete_s = Some(t0.elapsed().as_secs_f64());
    }
    if mode == Mode::XdpOff {
        detach_xdp(&host_list)?;
        host_delete_s = Some(t0.elapsed().as_secs_f64());
    }
    let started_only = cli.wait == "started";
    let mut released = 0;
    let mut batch_ms = Vec::new();
    // (released, waited for) per batch, CLOCK_MONOTONIC ns, to place the neighbour's
    // slow requests.
    let mut spans: Vec<(u64, u64)> = Vec::new();
    let first_release_ns = monotonic_ns();
    // Release from the end (no shifting); the order of ids does not matter here.
    while !slots.is_empty() {
        let b0 = Instant::now();
        let b0_ns = monotonic_ns();
        let batch = slots.split_off(slots.len() - k.min(slots.len()));
        released += batch.len();
        drop(batch);
        timed_out |= !wait_count(&mon.delnsids, released, deadline);
        if !started_only || slots.is_empty() {
            timed_out |= !wait_cleanup_idle(deadline);
        }
        batch_ms.push(b0.elapsed().as_secs_f64() * 1e3);
        spans.push((b0_ns, monotonic_ns()));
    }
    if mode != Mode::HostFirst {
        timed_out |= !wait_count(&mon.dellinks, n, deadline);
    }
    timed_out |= !wait_cleanup_idle(deadline);
    let teardown_s = t0.elapsed().as_secs_f64();
    let nrep: Option<NeighbourReport> = nb.as_mut().map(Neighbour::stop).transpose()?;
    let report = counter.map(RtnlCounter::stop);
    let dellinks = mon.dellinks.load(Ordering::Relaxed);
    let delnsids = mon.delnsids.load(Ordering::Relaxed);
    let cleanup_runs = mon.bursts.load(Ordering::Relaxed);
    let monitor_overflow = mon.overflow.load(Ordering::Relaxed);
    drop(mon);
    drop(nb); // its namespace goes in the next run's settle wait
    let left_host_ends = host_ends_left();
    // Nothing of the pool is left; this only tells the engine so (no record, no pins).
    engine
        .teardown(Vec::new())
        .map_err(|e| format!("final teardown: {e}"))?;
    drop(engine);

    let holds = report.as_ref().map(|r| Holds::of(r, t0_ns, nb_pid));
    let nb_top = nrep
        .as_ref()
        .map(|r| place_slow(&r.slow, t0_ns, first_release_ns, &spans))
        .unwrap_or_default();
    let batches = batch_ms.len();
    Ok(Row {
        n,
        k,
        mode,
        wait: cli.wait.clone(),
        rep,
        loadavg: load,
        foreign: others,
        provision_s,
        teardown_s,
        host_delete_s,
        batches,
        batch_p50_ms: median(batch_ms.clone()),
        batch_max_ms: batch_ms.iter().copied().fold(0.0, f64::max),
        kernel_acq: holds.as_ref().map(|h| h.kernel.len()),
        kernel_max_ms: holds.as_ref().and_then(|h| h.kernel.last().copied()),
        kernel_top_ms: holds
            .as_ref()
            .map(|h| h.kernel.iter().rev().take(5).copied().collect())
            .unwrap_or_default(),
        own_acq: holds.as_ref().map(|h| h.own.len()),
        own_max_ms: holds.as_ref().and_then(|h| h.own.last().copied()),
        p99_hold_ms: holds.as_ref().map(Holds::p99),
        holds_over_5ms: holds.as_ref().map(|h| h.over(5.0)),
        holds_over_10ms: holds.as_ref().map(|h| h.over(10.0)),
        nb_requests: nrep.as_ref().map_or(0, |r| r.requests),
        nb_p50_ms: nrep.as_ref().and_then(|r| r.p50_us).map(|us| us / 1e3),
        nb_p99_ms: nrep.as_ref().and_then(|r| r.p99_us).map(|us| us / 1e3),
        nb_max_ms: nrep.as_ref().and_then(|r| r.max_us).map(|us| us / 1e3),
        nb_top,
        dellinks,
        delnsids,
        cleanup_runs,
        monitor_overflow,
        counter_complete: report
            .as_ref()
            .is_some_and(|r| r.is_complete() && r.unclassified_writes() == 0),
        left_host_ends,
        timed_out,
    })
}

/// Where the slowest of the neighbour's `slow` requests fell: before the first release
/// (host-end deletes or XDP detaches), or in which batch, how long after its release.
fn place_slow(slow: &[(u64, f64)], t0_ns: u64, first_ns: u64, spans: &[(u64, u64)]) -> Vec<String> {
    let mut top: Vec<(u64, f64)> = slow.iter().copied().filter(|s| s.0 >= t0_ns).collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(5);
    top.iter()
        .map(|&(at, us)| {
            let ms = us / 1e3;
            if at < first_ns {
                return format!(
                    "{ms:.1} ms before the first release (+{:.0} ms)",
                    (at - t0_ns) as f64 / 1e6
                );
            }
            let i = spans.partition_point(|s| s.0 <= at).saturating_sub(1);
            let (rel, done) = spans.get(i).copied().unwrap_or((first_ns, first_ns));
            let after = (at.saturating_sub(rel)) as f64 / 1e6;
            let phase = if at <= done { "waiting" } else { "after" };
            format!(
                "{ms:.1} ms in batch {}/{} at +{after:.0} ms ({phase})",
                i + 1,
                spans.len()
            )
        })
        .collect()
}

/// Detaches XDP from each device of `hosts`: one RTM_SETLINK with IFLA_XDP { fd -1 } per
/// device, so each is one RTNL acquisition of its own, 64 to a send.
fn detach_xdp(hosts: &[u32]) -> Result<(), String> {
    let mut sock = Nl::open().map_err(|e| e.to_string())?;
    let mut seq = 1u32;
    for chunk in hosts.chunks(64) {
        let mut out = Vec::with_capacity(chunk.len() * 64);
        for &index in chunk {
            seq = seq.wrapping_add(1);
            let mut m = LinkMessage::default();
            m.header.index = index;
            m.attributes.push(LinkAttribute::Xdp(vec![LinkXdp::Fd(-1)]));
            nl::push(&mut out, RouteNetlinkMessage::SetLink(m), NLM_F_ACK, seq);
        }
        sock.send_all(&out).map_err(|e| e.to_string())?;
        sock.wait_ack(seq).map_err(|e| format!("detach XDP: {e}"))?;
    }
    Ok(())
}

/// Hold times of one window (ms, ascending), by holder.
struct Holds {
    own: Vec<f64>,
    kernel: Vec<f64>,
}

impl Holds {
    fn of(r: &RtnlReport, since_ns: u64, neighbour: Option<u32>) -> Self {
        let me = std::process::id();
        let comms: HashMap<u32, String> = r
            .by_pid()
            .into_iter()
            .map(|p| (p.pid, p.comm.unwrap_or_default()))
            .collect();
        let mut own = Vec::new();
        let mut kernel = Vec::new();
        for a in r
            .acquisitions()
            .iter()
            .filter(|a| a.released_ns >= since_ns)
        {
            let Some(ns) = a.hold_ns else { continue };
            let ms = ns as f64 / 1e6;
            if a.pid == me {
                own.push(ms);
            } else if Some(a.pid) == neighbour {
                continue;
            } else if is_kernel_thread(a.pid, comms.get(&a.pid).map(String::as_str)) {
                kernel.push(ms);
            }
        }
        own.sort_by(f64::total_cmp);
        kernel.sort_by(f64::total_cmp);
        Self { own, kernel }
    }

    fn all(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.own.iter().chain(&self.kernel).copied().collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn p99(&self) -> f64 {
        let v = self.all();
        if v.is_empty() {
            return 0.0;
        }
        v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1]
    }

    fn over(&self, ms: f64) -> usize {
        self.all().iter().filter(|&&h| h > ms).count()
    }
}
