//! syscount: counts the syscalls and io_uring submissions of a process tree, by thread
//! name and syscall number, with tracepoint BPF (src/bpf/syscount.bpf.c).
//! Leaves out timing and RTNL; kprobes/fentry are refused on our kernels, tracepoints work.
//!
//! The programs are BTF-typed tracepoints (tp_btf), which need no tracefs: the kernel
//! finds the tracepoint by name in its own BTF and the link comes from
//! bpf(BPF_RAW_TRACEPOINT_OPEN). Classic `tp/` programs would need tracefs (or debugfs)
//! mounted, since libbpf reads their perf event id from
//! `/sys/kernel/tracing/events/<category>/<name>/id`, and a fresh Debian machine mounts
//! neither. What the counter does need is kernel BTF (`/sys/kernel/btf/vmlinux`).
//!
//! A process is followed from [`SyscallCounter::track`] on, and so is everything it forks
//! after that (threads and children, via sched_process_fork). Counts are cumulative;
//! take a [`Counts`] snapshot at each boundary and subtract.

mod names;

use std::collections::BTreeMap;
use std::mem::MaybeUninit;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject};
use serde::{Deserialize, Serialize};

pub use names::syscall_name;

#[allow(
    unsafe_code,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    missing_docs,
    unused
)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/syscount.skel.rs"));
}

use skel::{SyscountSkel, SyscountSkelBuilder};

/// Length of the thread-name part of a key (`SYSCOUNT_COMM_LEN` in syscount.h).
const COMM_LEN: usize = 16;
/// Pseudo syscall number under which io_uring submissions are counted
/// (`SYSCOUNT_NR_URING_SUBMIT` in syscount.h).
pub const NR_URING_SUBMIT: u32 = 0x7fff_0001;

/// Loading or reading the counter failed.
#[derive(Debug)]
pub struct SyscountError(pub String);

impl std::fmt::Display for SyscountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "syscall counter: {}", self.0)
    }
}

impl std::error::Error for SyscountError {}

fn bpf_err(what: &'static str) -> impl FnOnce(libbpf_rs::Error) -> SyscountError {
    move |e| SyscountError(format!("{what}: {e}"))
}

/// The loaded, attached BPF counter. One per process is enough; reuse it across runs.
pub struct SyscallCounter {
    skel: SyscountSkel<'static>,
}

impl SyscallCounter {
    /// Loads and attaches the tracepoint programs (root: CAP_BPF + CAP_PERFMON; kernel BTF,
    /// no tracefs).
    pub fn start() -> Result<Self, SyscountError> {
        // The skeleton borrows its object storage for as long as it lives; the counter
        // lives for the process, so the storage is leaked once.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let open = SyscountSkelBuilder::default()
            .open(storage)
            .map_err(bpf_err("open"))?;
        let mut skel = open.load().map_err(bpf_err("load"))?;
        skel.attach().map_err(bpf_err("attach"))?;
        Ok(Self { skel })
    }

    /// Forgets every tracked process and every count.
    pub fn reset(&self) -> Result<(), SyscountError> {
        for map in [&self.skel.maps.tracked, &self.skel.maps.counts] {
            let keys: Vec<Vec<u8>> = map.keys().collect();
            for k in keys {
                // Entries may vanish concurrently; a failed delete is fine.
                let _ = map.delete(&k);
            }
        }
        Ok(())
    }

    /// Follows `pid` (a tgid) and everything it forks from now on.
    pub fn track(&self, pid: u32) -> Result<(), SyscountError> {
        self.skel
            .maps
            .tracked
            .update(&pid.to_ne_bytes(), &[1u8], MapFlags::ANY)
            .map_err(bpf_err("track"))
    }

    /// The counts so far.
    pub fn snapshot(&self) -> Result<Counts, SyscountError> {
        let map = &self.skel.maps.counts;
        let mut out = Counts::default();
        for k in map.keys() {
            let Some(v) = map.lookup(&k, MapFlags::ANY).map_err(bpf_err("lookup"))? else {
                continue;
            };
            let (comm, nr) = decode_key(&k);
            let v = u64::from_ne_bytes(v[..8].try_into().expect("u64 value"));
            *out.by_comm.entry(comm).or_default().entry(nr).or_default() += v;
        }
        out.dropped = self
            .skel
            .maps
            .bss_data
            .as_deref()
            .map(|b| b.dropped)
            .unwrap_or(0);
        Ok(out)
    }
}

fn decode_key(k: &[u8]) -> (String, u32) {
    let comm = &k[..COMM_LEN];
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    let nr = u32::from_ne_bytes(k[COMM_LEN..COMM_LEN + 4].try_into().expect("u32 nr"));
    (String::from_utf8_lossy(&comm[..end]).into_owned(), nr)
}

/// Cumulative counts: thread name -> syscall number -> count. io_uring submissions sit
/// under [`NR_URING_SUBMIT`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// thread name -> syscall number -> count.
    pub by_comm: BTreeMap<String, BTreeMap<u32, u64>>,
    /// Events lost because the key map was full (should be 0).
    pub dropped: u64,
}

impl Counts {
    /// `self - earlier`, entry by entry (counts only grow).
    pub fn since(&self, earlier: &Counts) -> Counts {
        let mut out = Counts {
            dropped: self.dropped.saturating_sub(earlier.dropped),
            ..Default::default()
        };
        for (comm, nrs) in &self.by_comm {
            for (&nr, &v) in nrs {
                let before = earlier
                    .by_comm
                    .get(comm)
                    .and_then(|m| m.get(&nr))
                    .copied()
                    .unwrap_or(0);
                let d = v.saturating_sub(before);
                if d > 0 {
                    *out.by_comm
                        .entry(comm.clone())
                        .or_default()
                        .entry(nr)
                        .or_default() += d;
                }
            }
        }
        out
    }

    /// Syscalls (io_uring submissions excluded) by threads whose name satisfies `pick`.
    pub fn syscalls_where(&self, pick: impl Fn(&str) -> bool) -> u64 {
        self.by_comm
            .iter()
            .filter(|(c, _)| pick(c))
            .flat_map(|(_, m)| m.iter())
            .filter(|(&nr, _)| nr != NR_URING_SUBMIT)
            .map(|(_, &v)| v)
            .sum()
    }

    /// All syscalls.
    pub fn syscalls(&self) -> u64 {
        self.syscalls_where(|_| true)
    }

    /// io_uring submissions (SQEs the kernel took), all threads.
    pub fn uring_submissions(&self) -> u64 {
        self.by_comm
            .values()
            .filter_map(|m| m.get(&NR_URING_SUBMIT))
            .sum()
    }

    /// Syscall totals by name, all threads, largest first.
    pub fn by_syscall(&self) -> Vec<(String, u64)> {
        let mut m: BTreeMap<u32, u64> = BTreeMap::new();
        for nrs in self.by_comm.values() {
            for (&nr, &v) in nrs {
                if nr != NR_URING_SUBMIT {
                    *m.entry(nr).or_default() += v;
                }
            }
        }
        let mut v: Vec<(String, u64)> =
            m.into_iter().map(|(nr, c)| (syscall_name(nr), c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(entries: &[(&str, u32, u64)]) -> Counts {
        let mut c = Counts::default();
        for &(comm, nr, v) in entries {
            c.by_comm.entry(comm.into()).or_default().insert(nr, v);
        }
        c
    }

    #[test]
    fn since_subtracts_and_drops_zero_entries() {
        let a = counts(&[("x", 1, 5), ("y", 2, 3)]);
        let b = counts(&[("x", 1, 9), ("y", 2, 3), ("z", NR_URING_SUBMIT, 4)]);
        let d = b.since(&a);
        assert_eq!(d, counts(&[("x", 1, 4), ("z", NR_URING_SUBMIT, 4)]));
        assert_eq!(d.syscalls(), 4);
        assert_eq!(d.uring_submissions(), 4);
        assert_eq!(d.syscalls_where(|c| c == "x"), 4);
    }

    #[test]
    fn key_decodes_comm_and_nr() {
        let mut k = vec![0u8; 20];
        k[..4].copy_from_slice(b"ip\0\0");
        k[16..].copy_from_slice(&46u32.to_ne_bytes());
        assert_eq!(decode_key(&k), ("ip".to_string(), 46));
    }
}
