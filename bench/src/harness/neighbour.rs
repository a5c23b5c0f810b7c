//! neighbour: the bystander process and its report: while a system provisions, it
//! toggles a veth of its own in its own network namespace and times every request.
//!
//! Why: RTNL is one lock for the whole host. A system that holds it long (a group change
//! over thousands of devices) makes every other tenant's network change wait, even one in
//! an unrelated namespace. The RTNL counter shows the holds; the neighbour shows what
//! somebody else feels of them: the latency of its own requests.
//!
//! The parent re-executes this binary as `netslot-bench neighbour ...` under
//! `unshare --net` (as it does for children), so the bystander's namespace and devices
//! die with it. It speaks a line protocol on stdin/stdout:
//!
//! ```text
//!  neighbour: made its veth pair (untimed)          -> "ready"
//!  parent: "start"  neighbour: first ACK received   -> "started"
//!  parent: "stop"   neighbour: stops toggling       -> "report <json>"
//!  parent: closes stdin                             -> neighbour exits
//! ```
//!
//! It is started before the settle wait (its namespace and veth are made then, so the
//! kernel work they cause is over before the timed step), toggles from just before GO
//! until just after DONE, and stays alive, idle, until the run has ended, so the freeing
//! of its namespace falls into the next run's settle wait, not into this run's RTNL
//! windows. Its acquisitions are counted apart (`RtnlFigures::neighbour`), never as the
//! system's own.
//!
//! Pace: one request every `period` (default 1 ms: up, then down, alternately), one at a
//! time, each waiting for its ACK; a request that comes back late is followed at once by
//! the next, without catching up. A fixed pace, not "as fast as it can": on a 2-vCPU
//! machine a busy loop would take a whole CPU from the system under test and slow it,
//! which would confound the comparison. Period 0 means as fast as it can.
//!
//! Only one end of the pair is toggled; the peer stays down, so the device never gets a
//! carrier: no linkwatch work and no IPv6 DAD follow a toggle, only the request itself.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::stats::percentile;
use crate::rtnl::monotonic_ns;
use crate::systems::nl::{self, Nl, CREATE};

/// The toggled end of the neighbour's veth pair (in its private namespace).
const DEVICE: &str = "bystander0";
/// Its peer, left down.
const PEER: &str = "bystander1";

/// Neighbour -> parent: the veth pair exists.
const READY: &str = "ready";
/// Parent -> neighbour: begin toggling.
const START: &str = "start";
/// Neighbour -> parent: the first toggle was acknowledged.
const STARTED: &str = "started";
/// Parent -> neighbour: stop toggling and report.
const STOP: &str = "stop";
/// Neighbour -> parent: followed by [`NeighbourReport`] as JSON.
const REPORT: &str = "report";
/// Neighbour -> parent: setup failed; followed by the message as JSON.
const FAILED: &str = "failed";

/// What the neighbour measured in one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NeighbourReport {
    /// Process id of the neighbour (its RTNL acquisitions carry it).
    pub pid: u32,
    /// Pace: one request per this many microseconds (0: as fast as it could).
    pub period_us: u64,
    /// Requests sent and acknowledged (or refused) while toggling.
    pub requests: u64,
    /// Requests the kernel refused or that failed on the socket.
    pub failed: u64,
    /// First failure, if any.
    pub first_error: Option<String>,
    /// From the first request to the stop, seconds.
    pub duration_s: f64,
    /// Median request latency (send to ACK), microseconds.
    pub p50_us: Option<f64>,
    /// 99th percentile request latency, microseconds.
    pub p99_us: Option<f64>,
    /// Largest request latency, microseconds.
    pub max_us: Option<f64>,
    /// Mean request latency, microseconds.
    pub mean_us: Option<f64>,
    /// Latencies in power-of-two microsecond buckets: (upper bound us, count).
    pub histogram_us: Vec<(u64, u64)>,
    /// Requests slower than [`SLOW_US`]: (CLOCK_MONOTONIC ns when sent, latency us), in
    /// order, at most [`MAX_SLOW`], so that a harness can tell which of its steps a long
    /// wait fell into.
    #[serde(default)]
    pub slow: Vec<(u64, f64)>,
}

/// A request slower than this is listed in [`NeighbourReport::slow`], microseconds.
pub const SLOW_US: f64 = 2000.0;
/// At most this many slow requests are listed.
pub const MAX_SLOW: usize = 100_000;

impl NeighbourReport {
    /// Figures from the latencies of `requests` (us) and the failures.
    fn from_latencies(lat: &[f64], failed: u64, first_error: Option<String>, t: Duration) -> Self {
        let mut sorted = lat.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mut histogram_us: Vec<(u64, u64)> = Vec::new();
        for &us in &sorted {
            let bound = (us.ceil() as u64).max(1).next_power_of_two();
            match histogram_us.last_mut() {
                Some((b, n)) if *b == bound => *n += 1,
                _ => histogram_us.push((bound, 1)),
            }
        }
        Self {
            pid: std::process::id(),
            period_us: 0,
            requests: lat.len() as u64 + failed,
            failed,
            first_error,
            duration_s: t.as_secs_f64(),
            p50_us: percentile(&sorted, 50.0),
            p99_us: percentile(&sorted, 99.0),
            max_us: sorted.last().copied(),
            mean_us: (!sorted.is_empty()).then(|| sorted.iter().sum::<f64>() / sorted.len() as f64),
            histogram_us,
            slow: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parent side.

/// A running neighbour, seen from the harness. Dropping it closes its stdin (it exits,
/// its namespace and devices with it) and waits for it.
pub struct Neighbour {
    child: Child,
    to: Option<ChildStdin>,
    from: BufReader<ChildStdout>,
}

impl Neighbour {
    /// Starts `exe neighbour` in a new network namespace and waits until its veth pair
    /// exists. It does not toggle yet.
    pub fn spawn(exe: &Path, period: Duration) -> Result<Self, String> {
        let mut child = Command::new("unshare")
            .args(["--net", "--"])
            .arg(exe)
            .args(["neighbour", "--period-us", &period.as_micros().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn the neighbour: {e}"))?;
        let to = child.stdin.take();
        let from = BufReader::new(child.stdout.take().expect("piped"));
        let mut me = Self { child, to, from };
        me.expect(READY)?;
        Ok(me)
    }

    /// Its pid (unshare execs it, so the pid is the neighbour's own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Begins toggling; returns once the first request was acknowledged.
    pub fn start(&mut self) -> Result<(), String> {
        self.send(START)?;
        self.expect(STARTED).map(drop)
    }

    /// Stops toggling and returns what it measured. The neighbour stays alive, idle.
    pub fn stop(&mut self) -> Result<NeighbourReport, String> {
        self.send(STOP)?;
        let body = self.expect(REPORT)?;
        serde_json::from_str(&body).map_err(|e| format!("bad neighbour report: {e}"))
    }

    fn send(&mut self, word: &str) -> Result<(), String> {
        let to = self.to.as_mut().expect("open until drop");
        writeln!(to, "{word}").map_err(|e| format!("send {word} to the neighbour: {e}"))
    }

    fn expect(&mut self, word: &str) -> Result<String, String> {
        let mut line = String::new();
        self.from
            .read_line(&mut line)
            .map_err(|e| format!("read from the neighbour: {e}"))?;
        let line = line.trim_end();
        let (got, body) = line.split_once(' ').unwrap_or((line, ""));
        match got {
            g if g == word => Ok(body.to_string()),
            FAILED => Err(format!(
                "neighbour: {}",
                serde_json::from_str::<String>(body).unwrap_or_else(|_| body.into())
            )),
            "" => Err(format!("the neighbour exited while we waited for `{word}`")),
            _ => Err(format!("expected `{word}`, the neighbour said {line:?}")),
        }
    }
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        drop(self.to.take());
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Neighbour side.

/// The neighbour process (`netslot-bench neighbour`); returns the exit code.
pub fn neighbour_main(period: Duration) -> i32 {
    let mut out = std::io::stdout();
    let fail = |out: &mut std::io::Stdout, msg: String| {
        let json = serde_json::to_string(&msg).unwrap_or_default();
        let _ = writeln!(out, "{FAILED} {json}");
        2
    };
    if let Err(e) = super::child::differs_from_parent("net") {
        return fail(&mut out, e.to_string());
    }
    let (mut sock, index) = match make_pair() {
        Ok(x) => x,
        Err(e) => return fail(&mut out, e),
    };
    // Lines from the parent arrive on a channel, so the toggling loop can poll for `stop`
    // without blocking; EOF (the parent closed stdin or died) arrives as a closed channel.
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line.trim().to_string()).is_err() {
                break;
            }
        }
    });
    if writeln!(out, "{READY}").is_err() {
        return 1;
    }
    match rx.recv().as_deref() {
        Ok(START) => {}
        Ok(other) => return fail(&mut out, format!("unknown step {other:?}")),
        Err(_) => return 0, // the parent went away before starting us
    }
    let mut report = toggle(&mut sock, index, period, &rx, &mut out);
    report.period_us = period.as_micros() as u64;
    let json = serde_json::to_string(&report).unwrap_or_default();
    if writeln!(out, "{REPORT} {json}").is_err() {
        return 1;
    }
    // Idle until the parent closes stdin: the namespace must outlive the run's windows.
    while rx.recv().is_ok() {}
    0
}

/// Makes the veth pair (both ends down) and returns the socket and the toggled index.
fn make_pair() -> Result<(Nl, u32), String> {
    let mut sock = Nl::open().map_err(|e| format!("netlink socket: {e}"))?;
    sock.request(nl::veth(DEVICE, false, 0, PEER, None, 0), CREATE)
        .map_err(|e| format!("create veth {DEVICE}: {e}"))?;
    let index = sock
        .link_index(DEVICE)
        .map_err(|e| format!("index of {DEVICE}: {e}"))?;
    Ok((sock, index))
}

/// Toggles `index` up and down, one request per `period`, until `stop` (or EOF) arrives;
/// says `started` after the first ACK.
fn toggle(
    sock: &mut Nl,
    index: u32,
    period: Duration,
    rx: &mpsc::Receiver<String>,
    out: &mut std::io::Stdout,
) -> NeighbourReport {
    let mut lat: Vec<f64> = Vec::with_capacity(1 << 16);
    let mut slow: Vec<(u64, f64)> = Vec::new();
    let mut failed = 0;
    let mut first_error = None;
    let mut up = true;
    let t0 = Instant::now();
    let mut next = t0;
    loop {
        let sent = Instant::now();
        let sent_ns = monotonic_ns();
        match sock.request(nl::set_link(index, up), 0) {
            Ok(()) => {
                let us = sent.elapsed().as_secs_f64() * 1e6;
                lat.push(us);
                if us > SLOW_US && slow.len() < MAX_SLOW {
                    slow.push((sent_ns, us));
                }
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
        up = !up;
        if lat.len() + failed as usize == 1 && writeln!(out, "{STARTED}").is_err() {
            break;
        }
        match rx.try_recv() {
            Err(mpsc::TryRecvError::Empty) => {}
            _ => break, // `stop`, anything else, or EOF
        }
        // Fixed pace without catching up: a late request is followed at once.
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    let mut report = NeighbourReport::from_latencies(&lat, failed, first_error, t0.elapsed());
    report.slow = slow;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_figures_and_histogram() {
        let lat: Vec<f64> = (1..=100).map(f64::from).collect();
        let r = NeighbourReport::from_latencies(&lat, 2, Some("x".into()), Duration::ZERO);
        assert_eq!(r.requests, 102);
        assert_eq!(r.p50_us, Some(50.0));
        assert_eq!(r.p99_us, Some(99.0));
        assert_eq!(r.max_us, Some(100.0));
        assert_eq!(r.mean_us, Some(50.5));
        assert_eq!(r.histogram_us.iter().map(|b| b.1).sum::<u64>(), 100);
        assert_eq!(r.histogram_us.first(), Some(&(1, 1)));
        assert_eq!(r.histogram_us.last(), Some(&(128, 36)));
    }
}
