//! report: what one counting window saw, split by process, with hold times.
//! Pure data and queries; produced by `RtnlCounter::stop`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::time::Duration;

use super::classify::Acquisition;
use super::locate::RtnlAddress;

/// Acquisitions by one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidCount {
    /// Process id (tgid); for kernel threads this is the thread.
    pub pid: u32,
    /// Name from a COMM record seen in the window, else `/proc/<pid>/comm` if alive.
    pub comm: Option<String>,
    /// Acquisitions (releases) in the window.
    pub count: u64,
}

/// The result of one counting window.
#[derive(Debug, Clone)]
pub struct RtnlReport {
    pub(crate) acquisitions: Vec<Acquisition>,
    pub(crate) comms: HashMap<u32, String>,
    /// child process -> parent process, from fork records in the window.
    pub(crate) parents: HashMap<u32, u32>,
    pub(crate) lost: u64,
    pub(crate) throttled: u64,
    pub(crate) writes: u64,
    pub(crate) other_writes: u64,
    pub(crate) window: Duration,
    pub(crate) address: RtnlAddress,
    pub(crate) self_pid: u32,
}

impl RtnlReport {
    /// Every acquisition in the window, in release order.
    pub fn acquisitions(&self) -> &[Acquisition] {
        &self.acquisitions
    }

    /// Total acquisitions by anyone.
    pub fn total(&self) -> u64 {
        self.acquisitions.len() as u64
    }

    /// Acquisitions by processes in `pids`.
    pub fn count_by(&self, pids: &[u32]) -> u64 {
        self.acquisitions
            .iter()
            .filter(|a| pids.contains(&a.pid))
            .count() as u64
    }

    /// Acquisitions by every process not in `pids` (kworkers, netns cleanup, others).
    pub fn count_others(&self, pids: &[u32]) -> u64 {
        self.total() - self.count_by(pids)
    }

    /// `root` and every process forked from it (transitively) during the window.
    pub fn descendants(&self, root: u32) -> Vec<u32> {
        let mut set: HashSet<u32> = HashSet::from([root]);
        let mut grew = true;
        while grew {
            grew = false;
            for (&child, parent) in &self.parents {
                if set.contains(parent) && set.insert(child) {
                    grew = true;
                }
            }
        }
        let mut v: Vec<u32> = set.into_iter().collect();
        v.sort_unstable();
        v
    }

    /// Acquisitions by this process and the children it forked during the window.
    pub fn own(&self) -> u64 {
        self.count_by(&self.descendants(self.self_pid))
    }

    /// Per-process counts, largest first.
    pub fn by_pid(&self) -> Vec<PidCount> {
        let mut counts: HashMap<u32, u64> = HashMap::new();
        for a in &self.acquisitions {
            *counts.entry(a.pid).or_default() += 1;
        }
        let mut v: Vec<PidCount> = counts
            .into_iter()
            .map(|(pid, count)| PidCount {
                pid,
                comm: self.comm(pid),
                count,
            })
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.pid.cmp(&b.pid)));
        v
    }

    /// Name of `pid`: the last COMM record in the window, else `/proc/<pid>/comm`.
    pub fn comm(&self, pid: u32) -> Option<String> {
        self.comms.get(&pid).cloned().or_else(|| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .ok()
                .map(|s| s.trim_end().to_string())
        })
    }

    /// Longest single hold seen (from the taking write to the release).
    pub fn longest_hold(&self) -> Option<Duration> {
        self.holds_ns().last().map(|&ns| Duration::from_nanos(ns))
    }

    /// All known hold times in ns, ascending.
    pub fn holds_ns(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.acquisitions.iter().filter_map(|a| a.hold_ns).collect();
        v.sort_unstable();
        v
    }

    /// Hold-time histogram: `(upper bound ns, count)` for power-of-two buckets
    /// from 1 us up to the longest hold; empty buckets omitted.
    pub fn hold_histogram(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for ns in self.holds_ns() {
            let bound = ns.max(1000).next_power_of_two();
            match out.last_mut() {
                Some((b, n)) if *b == bound => *n += 1,
                _ => out.push((bound, 1)),
            }
        }
        out
    }

    /// Records the kernel dropped because a ring was full (PERF_RECORD_LOST).
    pub fn lost_samples(&self) -> u64 {
        self.lost
    }

    /// Times the kernel throttled a watchpoint (kernel.perf_event_max_sample_rate);
    /// samples were dropped while throttled.
    pub fn throttled(&self) -> u64 {
        self.throttled
    }

    /// True when no sample was lost or throttled: the counts are exact.
    pub fn is_complete(&self) -> bool {
        self.lost == 0 && self.throttled == 0
    }

    /// Raw writes to the owner word seen in the window.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Writes from outside the known mutex functions (should be 0; nonzero means the
    /// kernel writes the owner word somewhere this method does not know).
    pub fn unclassified_writes(&self) -> u64 {
        self.other_writes
    }

    /// Length of the counting window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The watched address and how it was found.
    pub fn address(&self) -> RtnlAddress {
        self.address
    }
}
