//! lifecycle: a daemon's whole slot life cycle, recycling released slots against
//! destroying them, side by side in one run.
//!
//! For each mode (`recycle`: `netslot serve` as it is; `destroy`: `--no-recycle`), it
//! starts the daemon with a warm pool of `--fill` slots (boot-time fill), runs
//! `--cycles` claim/release cycles from `--concurrency` client threads (each cycle: one
//! `acquire`, one `release`), then stops the daemon (teardown). A neighbour in a
//! namespace of its own toggles a veth one request and ACK at a time through the whole
//! run. Reports claim and release latency (p50/p99/max), the distinct namespaces claims
//! got (by netns id), the daemon's open fds and RSS before and after the cycles, the
//! neighbour's latency, and the teardown time.
//!
//! Run it as root inside private namespaces, as the tests do:
//!
//! ```sh
//! cargo build --release -p netslot-cli -p netslot-bench --bins --examples
//! unshare --net --mount --propagation private sh -euc \
//!   'mount -t tmpfs lifecycle /run; mkdir -p /run/netns /run/netslot; ip link set lo up;
//!    target/release/examples/lifecycle --fill 200 --cycles 10000 --concurrency 8'
//! ```

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netslot::daemon::client;
use netslot::daemon::protocol::{Operation, Stats};
use netslot_bench::harness::neighbour::{Neighbour, NeighbourReport};

const SOCKET: &str = "/run/netslot/lifecycle.sock";

struct Args {
    fill: usize,
    cycles: usize,
    concurrency: usize,
    modes: Vec<String>,
    netslot: PathBuf,
    bench: PathBuf,
    neighbour: bool,
    daemon_log: Option<PathBuf>,
    connect_per_call: bool,
}

fn parse() -> Result<Args, String> {
    let dir = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or("no target directory")?;
    let mut a = Args {
        fill: 200,
        cycles: 2000,
        concurrency: 8,
        modes: vec!["recycle".into(), "destroy".into()],
        netslot: dir.join("netslot"),
        bench: dir.join("netslot-bench"),
        neighbour: true,
        daemon_log: None,
        connect_per_call: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--fill" => a.fill = num(val()?)?,
            "--cycles" => a.cycles = num(val()?)?,
            "--concurrency" => a.concurrency = num(val()?)?.max(1),
            "--modes" => a.modes = val()?.split(',').map(String::from).collect(),
            "--netslot" => a.netslot = val()?.into(),
            "--no-neighbour" => a.neighbour = false,
            "--daemon-log" => a.daemon_log = Some(val()?.into()),
            "--connect-per-call" => a.connect_per_call = true,
            "--help" | "-h" => {
                println!(
                    "lifecycle [--fill N] [--cycles M] [--concurrency C] \
                     [--modes recycle,destroy] [--netslot PATH] [--no-neighbour] \
                     [--daemon-log PATH] [--connect-per-call]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// Percentile of sorted microsecond figures.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ns_id(path: &Path) -> u64 {
    let f = std::fs::File::open(path).expect("open the slot's pin");
    netslot::ns_id(f.as_fd()).expect("NS_GET_ID")
}

fn fds_and_rss(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (fds, rss)
}

/// A client of the daemon: one connection for all its requests (as a long-lived runtime
/// keeps it), or a new one per request (as `netslot-cni` makes it).
struct Client {
    stream: Option<std::io::BufReader<std::os::unix::net::UnixStream>>,
    per_call: bool,
    next_id: u64,
}

impl Client {
    fn new(per_call: bool) -> Self {
        Self {
            stream: None,
            per_call,
            next_id: 1,
        }
    }

    fn call(&mut self, op: Operation) -> netslot::daemon::protocol::Response {
        use std::io::{BufRead, Write};
        if self.per_call {
            return client::call(Path::new(SOCKET), op).expect("daemon call");
        }
        let stream = self.stream.get_or_insert_with(|| {
            let s = std::os::unix::net::UnixStream::connect(SOCKET).expect("connect");
            std::io::BufReader::new(s)
        });
        self.next_id += 1;
        let req = netslot::daemon::protocol::Request::new(self.next_id, op);
        let mut line = serde_json::to_string(&req).expect("serialize");
        line.push('\n');
        stream.get_mut().write_all(line.as_bytes()).expect("send");
        let mut answer = String::new();
        stream.read_line(&mut answer).expect("answer");
        serde_json::from_str(&answer).expect("a response line")
    }
}

fn stats() -> Stats {
    let r = client::call(Path::new(SOCKET), Operation::Stats).expect("stats");
    r.stats.expect("stats in the answer")
}

/// Host ends of the pool still in the host namespace (the kernel deletes the last of
/// them when it has destroyed their namespaces).
fn host_ends(prefix: &str) -> usize {
    let host = netslot::HostNs::current_for_reading().expect("host namespace");
    host.links()
        .map(|l| l.iter().filter(|l| l.name.starts_with(prefix)).count())
        .unwrap_or(0)
}

/// The daemon, killed if this run ends early (a failed claim, a panicked client), so
/// that no daemon outlives the benchmark.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

struct ModeReport {
    mode: String,
    claim: Vec<f64>,
    release: Vec<f64>,
    namespaces: usize,
    before: (usize, u64),
    after: (usize, u64),
    fill_s: f64,
    cycles_s: f64,
    teardown_s: f64,
    stats: Stats,
    neighbour: Option<NeighbourReport>,
}

fn run_mode(a: &Args, mode: &str) -> Result<ModeReport, String> {
    let mut cmd = Command::new(&a.netslot);
    // Water marks as a daemon with recycling wants them: refilled only below half, so a
    // slot out for a moment is not replaced by a new one that its return then crowds out.
    let (low, high) = ((a.fill / 2).to_string(), a.fill.to_string());
    // A pool of its own per mode: the previous mode's may still be in the kernel's cleanup.
    let (prefix, group) = if mode == "destroy" {
        ("lcd", "7871")
    } else {
        ("lcr", "7870")
    };
    cmd.args([
        "serve", "--socket", SOCKET, "--prefix", prefix, "--group", group,
    ])
    .args(["--pool-low", &low, "--pool-high", &high]);
    if mode == "destroy" {
        cmd.arg("--no-recycle");
    }
    let mut neighbour = if a.neighbour {
        let mut n = Neighbour::spawn(&a.bench, Duration::from_micros(200))?;
        n.start()?;
        Some(n)
    } else {
        None
    };
    let t0 = Instant::now();
    let log = match &a.daemon_log {
        Some(p) => {
            Stdio::from(std::fs::File::create(p.with_extension(mode)).map_err(|e| format!("{e}"))?)
        }
        None => Stdio::null(),
    };
    let mut daemon = KillOnDrop(
        cmd.env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start {}: {e}", a.netslot.display()))?,
    );
    let daemon = &mut daemon.0;
    while client::call(Path::new(SOCKET), Operation::Status).is_err() || stats().pooled < a.fill {
        if let Ok(Some(st)) = daemon.try_wait() {
            return Err(format!(
                "the daemon exited at start with {st} (see --daemon-log)"
            ));
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = daemon.kill();
            return Err("the warm pool never filled".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let fill_s = t0.elapsed().as_secs_f64();
    let before = fds_and_rss(daemon.id());
    let per_thread = a.cycles / a.concurrency;
    let per_call = a.connect_per_call;
    let t1 = Instant::now();
    let threads: Vec<_> = (0..a.concurrency)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::new(per_call);
                let mut out = (Vec::new(), Vec::new(), BTreeSet::new());
                for _ in 0..per_thread {
                    let t = Instant::now();
                    let r = c.call(Operation::Acquire);
                    out.0.push(t.elapsed().as_secs_f64() * 1e6);
                    assert!(r.ok, "acquire: {:?}", r.error);
                    let slot = r.slot.expect("slot");
                    out.2.insert(ns_id(&slot.netns));
                    let t = Instant::now();
                    let r = c.call(Operation::Release { name: slot.name });
                    out.1.push(t.elapsed().as_secs_f64() * 1e6);
                    assert!(r.ok, "release: {:?}", r.error);
                }
                out
            })
        })
        .collect();
    let mut claim = Vec::new();
    let mut release = Vec::new();
    let mut ids = BTreeSet::new();
    for t in threads {
        let (c, r, i) = t.join().map_err(|_| "a client thread panicked")?;
        claim.extend(c);
        release.extend(r);
        ids.extend(i);
    }
    let cycles_s = t1.elapsed().as_secs_f64();
    let after = fds_and_rss(daemon.id());
    let stats = stats();
    let t2 = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let status = daemon.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("the daemon exited with {status}"));
    }
    // Teardown ends when the kernel has removed the last host end (it goes with its
    // namespace, in the kernel's namespace cleanup).
    while host_ends(prefix) > 0 && t2.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let teardown_s = t2.elapsed().as_secs_f64();
    let neighbour = neighbour.as_mut().map(Neighbour::stop).transpose()?;
    claim.sort_by(f64::total_cmp);
    release.sort_by(f64::total_cmp);
    Ok(ModeReport {
        mode: mode.to_owned(),
        claim,
        release,
        namespaces: ids.len(),
        before,
        after,
        fill_s,
        cycles_s,
        teardown_s,
        stats,
        neighbour,
    })
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lifecycle: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "fill {} warm slots, {} claim/release cycles from {} threads ({}), then teardown",
        a.fill,
        a.cycles,
        a.concurrency,
        if a.connect_per_call {
            "a connection per request"
        } else {
            "one connection per thread"
        }
    );
    println!(
        "| mode | fill s | cycles/s | claim p50/p99/max us | release p50/p99/max us | \
         namespaces used | recycled/destroyed | daemon fds before/after | RSS KiB before/after \
         | teardown s | neighbour p50/p99/max us |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for mode in &a.modes {
        let r = match run_mode(&a, mode) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{mode}: {e}");
                std::process::exit(1);
            }
        };
        let three = |v: &[f64]| {
            format!(
                "{:.0}/{:.0}/{:.0}",
                pct(v, 50.0),
                pct(v, 99.0),
                pct(v, 100.0)
            )
        };
        let nb = r.neighbour.as_ref().map_or("-".into(), |n| {
            format!(
                "{:.0}/{:.0}/{:.0}",
                n.p50_us.unwrap_or(f64::NAN),
                n.p99_us.unwrap_or(f64::NAN),
                n.max_us.unwrap_or(f64::NAN)
            )
        });
        println!(
            "| {} | {:.2} | {:.0} | {} | {} | {} | {}/{} | {}/{} | {}/{} | {:.2} | {} |",
            r.mode,
            r.fill_s,
            r.claim.len() as f64 / r.cycles_s,
            three(&r.claim),
            three(&r.release),
            r.namespaces,
            r.stats.recycled,
            r.stats.destroyed_on_release,
            r.before.0,
            r.after.0,
            r.before.1,
            r.after.1,
            r.teardown_s,
            nb
        );
    }
}
