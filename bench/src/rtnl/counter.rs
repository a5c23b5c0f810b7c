//! counter: the running RTNL counter: one watchpoint per online CPU and a drain thread.
//! Owns the counting window; classification and reporting live in classify/report.

use std::collections::HashMap;
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::classify::{classify, Ranges, Write};
use super::error::CounterError;
use super::kallsyms::Kallsyms;
use super::locate::{locate, RtnlAddress};
use super::perf::{monotonic_ns, Record, Watchpoint};
use super::report::RtnlReport;

const CPU_ONLINE: &str = "/sys/devices/system/cpu/online";
/// How often the drain thread empties the rings.
const DRAIN_EVERY: Duration = Duration::from_millis(2);
/// Functions whose writes release the lock.
const RELEASE_FUNCS: &[&str] = &["mutex_unlock", "__mutex_unlock_slowpath", "__mutex_handoff"];
/// Functions whose writes take the lock, fail to, or set waiter flags.
const LOCK_FUNCS: &[&str] = &[
    "mutex_lock",
    "mutex_lock_nested",
    "mutex_trylock",
    "mutex_lock_killable",
    "mutex_lock_killable_nested",
    "mutex_lock_interruptible",
    "mutex_lock_interruptible_nested",
    "mutex_lock_io",
    "__mutex_lock",
    "__mutex_lock_slowpath",
    "__mutex_lock_killable_slowpath",
    "__mutex_lock_interruptible_slowpath",
    "__mutex_trylock",
    "__mutex_trylock_common",
    "__mutex_add_waiter",
    "__mutex_remove_waiter",
];

/// What the drain thread collected.
#[derive(Default)]
struct Drained {
    writes: Vec<Write>,
    comms: HashMap<u32, String>,
    parents: HashMap<u32, u32>,
    lost: u64,
    throttled: u64,
}

/// Counts RTNL acquisitions system-wide from `start` to `stop`.
///
/// Asynchronous kernel work (netns cleanup, DAD, linkwatch) takes RTNL after the
/// operation that caused it returns: call [`RtnlCounter::settle`] (or sleep) before
/// [`RtnlCounter::stop`] to include it.
pub struct RtnlCounter {
    stop: Arc<AtomicBool>,
    last_write_ns: Arc<AtomicU64>,
    thread: JoinHandle<Drained>,
    ranges: Ranges,
    address: RtnlAddress,
    started: Instant,
}

impl RtnlCounter {
    /// Locates `rtnl_mutex.owner`, opens a write-watchpoint on every online CPU and
    /// starts draining. Needs root (CAP_PERFMON + CAP_BPF/CAP_SYS_ADMIN for the reader).
    pub fn start() -> Result<Self, CounterError> {
        let ksyms = Kallsyms::load()?;
        let address = locate(&ksyms)?;
        let collect = |names: &[&str]| names.iter().flat_map(|n| ksyms.ranges(n)).collect();
        let ranges = Ranges {
            release: collect(RELEASE_FUNCS),
            lock: collect(LOCK_FUNCS),
        };
        if ranges.release.is_empty() {
            return Err(CounterError::MissingSymbol("mutex_unlock"));
        }
        let cpus = online_cpus()?;
        let stop = Arc::new(AtomicBool::new(false));
        let last_write_ns = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop2, last2, owner) = (stop.clone(), last_write_ns.clone(), address.owner());
        // Watchpoints hold raw mappings; they are created, drained and dropped on this thread.
        let thread = thread::Builder::new()
            .name("rtnl-counter".into())
            .spawn(move || {
                let opened: Result<Vec<Watchpoint>, CounterError> = cpus
                    .iter()
                    .map(|&cpu| Watchpoint::open(cpu, owner))
                    .collect();
                let mut wps = match opened {
                    Ok(w) => {
                        let _ = ready_tx.send(Ok(()));
                        w
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Drained::default();
                    }
                };
                drain_loop(&mut wps, &stop2, &last2)
            })
            .map_err(CounterError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(CounterError::Thread(std::io::Error::other(
                    "exited before opening",
                )));
            }
        }
        Ok(Self {
            stop,
            last_write_ns,
            thread,
            ranges,
            address,
            started: Instant::now(),
        })
    }

    /// The watched address.
    pub fn address(&self) -> RtnlAddress {
        self.address
    }

    /// Waits until no write to the owner word has been seen for `quiet`, or `max` has
    /// passed; returns whether it went quiet. Use before `stop` to catch deferred work.
    pub fn settle(&self, quiet: Duration, max: Duration) -> bool {
        let begin = Instant::now();
        let begin_ns = monotonic_ns();
        loop {
            let last = self.last_write_ns.load(Ordering::Relaxed).max(begin_ns);
            if monotonic_ns().saturating_sub(last) >= quiet.as_nanos() as u64 {
                return true;
            }
            if begin.elapsed() >= max {
                return false;
            }
            thread::sleep(DRAIN_EVERY * 5);
        }
    }

    /// Stops counting and classifies the window.
    pub fn stop(self) -> RtnlReport {
        self.stop.store(true, Ordering::Relaxed);
        let window = self.started.elapsed();
        let d = self.thread.join().unwrap_or_default();
        let c = classify(d.writes, &self.ranges);
        RtnlReport {
            acquisitions: c.acquisitions,
            comms: d.comms,
            parents: d.parents,
            lost: d.lost,
            throttled: d.throttled,
            writes: c.writes,
            other_writes: c.other_writes,
            window,
            address: self.address,
            self_pid: std::process::id(),
        }
    }
}

fn drain_loop(wps: &mut [Watchpoint], stop: &AtomicBool, last: &AtomicU64) -> Drained {
    let mut d = Drained::default();
    loop {
        let done = stop.load(Ordering::Relaxed);
        for wp in wps.iter_mut() {
            wp.drain(&mut |r| match r {
                Record::Sample { ip, pid, tid, time } => {
                    last.fetch_max(time, Ordering::Relaxed);
                    d.writes.push(Write { ip, pid, tid, time });
                }
                Record::Lost { count } => d.lost += count,
                Record::Throttle => d.throttled += 1,
                Record::Comm { pid, comm } => {
                    d.comms.insert(pid, comm);
                }
                Record::Fork { pid, ppid } => {
                    if pid != ppid {
                        d.parents.insert(pid, ppid);
                    }
                }
                Record::Exit => {}
            });
        }
        if done {
            return d;
        }
        thread::sleep(DRAIN_EVERY);
    }
}

/// Parses `/sys/devices/system/cpu/online` ("0-1,4").
fn online_cpus() -> Result<Vec<u32>, CounterError> {
    let text = fs::read_to_string(CPU_ONLINE).map_err(|source| CounterError::Read {
        path: CPU_ONLINE,
        source,
    })?;
    Ok(parse_cpu_list(&text))
}

pub(crate) fn parse_cpu_list(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let mut ends = part.splitn(2, '-').map(|n| n.parse::<u32>());
        match (ends.next(), ends.next()) {
            (Some(Ok(a)), None) => out.push(a),
            (Some(Ok(a)), Some(Ok(b))) => out.extend(a..=b),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn cpu_list() {
        assert_eq!(parse_cpu_list("0-1,4\n"), vec![0, 1, 4]);
        assert_eq!(parse_cpu_list("0\n"), vec![0]);
    }
}
