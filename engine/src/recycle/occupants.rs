//! occupants: who else still holds a slot's namespace: tasks of other processes inside
//! it (/proc/*/task/*/ns/net) and nsfs mounts of it besides the pool's own pin
//! (/proc/thread-self/mountinfo: the calling thread's mount namespace, where the pins are). No netlink here.
//!
//! A released slot whose namespace a tenant's process still runs in, or that the tenant
//! bind-mounted elsewhere, would be shared with the next tenant, so it is not recycled.
//! What this cannot see: an fd of the namespace held by another process, and mounts in
//! other mount namespaces (reading every process's fd table and mount table on each
//! release costs more than it is worth; a runtime that hands out slots to untrusted
//! tenants runs the daemon with `--no-recycle`).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What holds each of `inodes` (nsfs inode numbers of live namespaces, which are unique
/// while the namespace lives), besides this process and the mounts at `own_pins`.
pub(crate) fn holders(inodes: &[u64], own_pins: &[&Path]) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    if inodes.is_empty() {
        return out;
    }
    let me = std::process::id();
    for (pid, comm, ino) in tasks() {
        if pid != me && inodes.contains(&ino) {
            out.entry(ino)
                .or_insert_with(|| format!("pid {pid} ({comm})"));
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        let Some((ino, at)) = nsfs_mount(line) else {
            continue;
        };
        if inodes.contains(&ino) && !own_pins.iter().any(|p| Path::new(&at) == *p) {
            out.entry(ino).or_insert_with(|| format!("a mount at {at}"));
        }
    }
    out
}

/// The nsfs inode number of an fd of a namespace.
pub(crate) fn inode(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<u64> {
    let f = std::fs::File::from(fd.try_clone_to_owned()?);
    Ok(f.metadata()?.ino())
}

/// Every task's (pid, comm, network namespace inode) that /proc lets this process read.
fn tasks() -> Vec<(u32, String, u64)> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(threads) = std::fs::read_dir(p.path().join("task")) else {
            continue;
        };
        let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
        for t in threads.flatten() {
            // stat follows the ns link to the nsfs inode (a gone task is skipped).
            if let Ok(m) = std::fs::metadata(t.path().join("ns/net")) {
                out.push((pid, comm.trim().to_owned(), m.ino()));
            }
        }
    }
    out
}

/// (inode, mount point) of a mountinfo line of an nsfs mount of a network namespace,
/// whose root field reads `net:[INODE]`.
fn nsfs_mount(line: &str) -> Option<(u64, String)> {
    let mut f = line.split(' ');
    let root = f.nth(3)?;
    let at = f.next()?;
    let ino = root
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()?;
    let rest = line.split(" - ").nth(1)?;
    rest.starts_with("nsfs ").then(|| (ino, unescape(at)))
}

/// Mount points in mountinfo escape space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsfs_mounts_are_read_from_mountinfo() {
        let line = "612 29 0:4 net:[4026532591] /run/netns/my\\040ns rw shared:5 - nsfs nsfs rw";
        assert_eq!(
            nsfs_mount(line),
            Some((4026532591, "/run/netns/my ns".to_owned()))
        );
        let other = "30 23 0:26 / /sys/fs/bpf rw,nosuid - bpf bpf rw";
        assert_eq!(nsfs_mount(other), None);
        let uts = "613 29 0:4 uts:[4026531838] /tmp/u rw - nsfs nsfs rw";
        assert_eq!(nsfs_mount(uts), None);
    }
}
