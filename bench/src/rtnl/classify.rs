//! classify: turns watchpoint writes into acquisitions with hold times (sans-IO).
//! Knows which kernel functions release the lock; no perf, no /proc.
//!
//! Method. Every write to `rtnl_mutex.owner` is sampled with the IP after the write
//! (breakpoints trap after the instruction), the task and a CLOCK_MONOTONIC time.
//! - A write whose IP lies in `mutex_unlock` / `__mutex_unlock_slowpath` is a release
//!   write. The uncontended release is one cmpxchg in `mutex_unlock`; a contended one may
//!   add a failed cmpxchg there (x86 `lock cmpxchg` always writes back) and the clearing
//!   cmpxchg or the handoff in `__mutex_unlock_slowpath`. Release writes by one task with
//!   no lock-side write by that task in between are one release.
//! - Every other write is lock-side: the taking cmpxchg in `mutex_lock` /
//!   `__mutex_trylock_common` (also the PICKUP clear after a handoff), failed attempts,
//!   and waiters setting MUTEX_FLAG_WAITERS/HANDOFF. The last lock-side write by a task
//!   before its release is the one that took the lock, so it starts the hold.
//! - Acquisitions = releases. A lock taken before the window and released inside it
//!   counts, without a hold time; a lock still held at the end does not count.

use std::collections::HashMap;

/// What a write to the owner word was, by the function that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteKind {
    /// In `mutex_unlock` or `__mutex_unlock_slowpath`.
    Release,
    /// In a known mutex lock/trylock function.
    Lock,
    /// Anywhere else (treated as lock-side, counted apart so surprises show).
    Other,
}

/// Code ranges of the mutex functions, from kallsyms.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ranges {
    pub(crate) release: Vec<(u64, u64)>,
    pub(crate) lock: Vec<(u64, u64)>,
}

impl Ranges {
    pub(crate) fn kind(&self, ip: u64) -> WriteKind {
        let inside = |rs: &[(u64, u64)]| rs.iter().any(|&(s, e)| ip > s && ip <= e);
        // `ip` is the address after the writing instruction, so a write that is the
        // last instruction of a function reports `end`: hence (start, end].
        if inside(&self.release) {
            WriteKind::Release
        } else if inside(&self.lock) {
            WriteKind::Lock
        } else {
            WriteKind::Other
        }
    }
}

/// One write sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Write {
    pub(crate) ip: u64,
    pub(crate) pid: u32,
    pub(crate) tid: u32,
    pub(crate) time: u64,
}

/// One RTNL acquisition, identified by its release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquisition {
    /// Process (tgid) that held the lock.
    pub pid: u32,
    /// Thread that held the lock.
    pub tid: u32,
    /// CLOCK_MONOTONIC ns of the write that released it.
    pub released_ns: u64,
    /// Ns from the write that took the owner word to the release; `None` when the lock
    /// was taken before the counter started.
    pub hold_ns: Option<u64>,
}

/// Result of classifying a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Classified {
    pub(crate) acquisitions: Vec<Acquisition>,
    pub(crate) writes: u64,
    pub(crate) release_writes: u64,
    pub(crate) other_writes: u64,
}

#[derive(Default)]
struct TaskState {
    last_lock_write: Option<u64>,
    open_release: Option<usize>,
}

/// Classifies `writes` (any order; sorted here by time).
pub(crate) fn classify(mut writes: Vec<Write>, ranges: &Ranges) -> Classified {
    writes.sort_by_key(|w| w.time);
    let mut out = Classified {
        writes: writes.len() as u64,
        ..Default::default()
    };
    let mut tasks: HashMap<u32, TaskState> = HashMap::new();
    for w in writes {
        let st = tasks.entry(w.tid).or_default();
        match ranges.kind(w.ip) {
            WriteKind::Release => {
                out.release_writes += 1;
                if let Some(i) = st.open_release {
                    let a = &mut out.acquisitions[i];
                    a.hold_ns = a.hold_ns.map(|h| h + (w.time - a.released_ns));
                    a.released_ns = w.time;
                } else {
                    let hold_ns = st.last_lock_write.take().map(|t| w.time.saturating_sub(t));
                    st.open_release = Some(out.acquisitions.len());
                    out.acquisitions.push(Acquisition {
                        pid: w.pid,
                        tid: w.tid,
                        released_ns: w.time,
                        hold_ns,
                    });
                }
            }
            kind => {
                if kind == WriteKind::Other {
                    out.other_writes += 1;
                }
                st.open_release = None;
                st.last_lock_write = Some(w.time);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges() -> Ranges {
        Ranges {
            release: vec![(1000, 1100), (2000, 2300)],
            lock: vec![(3000, 3400)],
        }
    }

    fn w(ip: u64, tid: u32, time: u64) -> Write {
        Write {
            ip,
            pid: tid,
            tid,
            time,
        }
    }

    #[test]
    fn uncontended_lock_unlock_is_one_acquisition_with_hold() {
        let c = classify(vec![w(3010, 7, 100), w(1020, 7, 350)], &ranges());
        assert_eq!(c.acquisitions.len(), 1);
        assert_eq!(c.acquisitions[0].hold_ns, Some(250));
        assert_eq!(c.other_writes, 0);
    }

    #[test]
    fn contended_release_writes_coalesce_despite_waiter_writes_between() {
        // 7 holds; 8 sets the waiters flag; 7's fast cmpxchg fails (a write), then the
        // slowpath clears; 8 takes the lock and releases it.
        let c = classify(
            vec![
                w(3010, 7, 100),
                w(3200, 8, 150),
                w(1020, 7, 300),
                w(3200, 8, 310),
                w(2050, 7, 320),
                w(3300, 8, 400),
                w(1020, 8, 900),
            ],
            &ranges(),
        );
        assert_eq!(c.acquisitions.len(), 2);
        assert_eq!(c.acquisitions[0].tid, 7);
        assert_eq!(c.acquisitions[0].hold_ns, Some(220));
        assert_eq!(c.acquisitions[1].tid, 8);
        assert_eq!(c.acquisitions[1].hold_ns, Some(500));
    }

    #[test]
    fn release_without_lock_in_window_has_no_hold_and_unsorted_input_is_fine() {
        let c = classify(
            vec![w(3010, 9, 50), w(1001, 9, 60), w(1100, 5, 10)],
            &ranges(),
        );
        assert_eq!(c.acquisitions.len(), 2);
        assert_eq!(c.acquisitions[0].hold_ns, None);
        assert_eq!(c.acquisitions[1].hold_ns, Some(10));
    }

    #[test]
    fn unknown_writer_is_counted_apart() {
        let c = classify(vec![w(5000, 1, 1), w(1050, 1, 2)], &ranges());
        assert_eq!(c.other_writes, 1);
        assert_eq!(c.acquisitions[0].hold_ns, Some(1));
    }
}
