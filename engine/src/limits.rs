//! limits: the process's open-file budget (RLIMIT_NOFILE and the fds already open), read
//! from /proc, so that a call that cannot fit is refused before any kernel call.
//! Reads only; raising a limit is the caller's decision.
//!
//! Each slot the engine hands back holds one fd (the netlink socket made inside its
//! namespace, which keeps the namespace alive), and a pinned slot one more (the
//! namespace's nsfs fd, opened to bind-mount it). Without the check, a call past the limit
//! fails only when the kernel says EMFILE, slot by slot, after doing most of the work.

use std::io;

/// Fds the engine may need beyond one per slot during a call: the pool's read-ahead, the
/// ring, helper threads' sockets, the counters program and maps, the deleter sockets.
pub const OVERHEAD: usize = 64;

/// The open-file budget of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft RLIMIT_NOFILE (what open(2) is held to).
    pub limit: u64,
    /// Fds open now.
    pub open: usize,
}

impl OpenFiles {
    /// Reads the soft limit from /proc/self/limits and counts /proc/self/fd.
    pub fn read() -> io::Result<Self> {
        let text = std::fs::read_to_string("/proc/self/limits")?;
        let limit = parse_soft_limit(&text)
            .ok_or_else(|| io::Error::other("no \"Max open files\" line in /proc/self/limits"))?;
        // The directory's own fd is counted once too: one too many, on the safe side.
        let open = std::fs::read_dir("/proc/self/fd")?.count();
        Ok(Self { limit, open })
    }

    /// Fds still free.
    pub fn free(&self) -> u64 {
        self.limit.saturating_sub(self.open as u64)
    }

    /// How many slots, each holding `per_slot` fds, fit beside [`OVERHEAD`].
    pub fn slots_that_fit(&self, per_slot: usize) -> usize {
        let room = self.free().saturating_sub(OVERHEAD as u64);
        usize::try_from(room / per_slot.max(1) as u64).unwrap_or(usize::MAX)
    }
}

/// The soft limit of the "Max open files" line ("unlimited" reads as u64::MAX).
fn parse_soft_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_soft_limit(text), Some(1024));
        assert_eq!(
            parse_soft_limit("Max open files unlimited unlimited files"),
            Some(u64::MAX)
        );
        assert_eq!(parse_soft_limit("nothing here"), None);
    }

    #[test]
    fn counts_slots_that_fit_beside_the_overhead() {
        let f = OpenFiles {
            limit: 512,
            open: 40,
        };
        assert_eq!(f.free(), 472);
        assert_eq!(f.slots_that_fit(2), (472 - OVERHEAD) / 2);
        assert_eq!(
            OpenFiles {
                limit: 50,
                open: 40
            }
            .slots_that_fit(1),
            0
        );
        assert!(OpenFiles::read().unwrap().limit > 0);
    }
}
