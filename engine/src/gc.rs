//! gc: owns pool ownership records and the reclaiming of what dead owners left in the kernel.
//!
//! A pool is (host namespace, base device group). Its kernel objects are the host ends in
//! its groups (the base and its sub-batch groups, see `groups`), the namespaces pinned as `<netns_dir>/<prefix><n>` (bind mounts), and the XDP
//! pins under `<bpf_dir>/<group>`. None of them says whether a process still works on the
//! pool, so ownership lives beside them in a record file,
//! `<run_dir>/net<host-netns-inode>-group<group>.lock`:
//!
//! - **Live owner**: whoever holds `flock(LOCK_EX)` on the record. `Engine::new` (when
//!   `EngineConfig::run_dir` is set) takes it and keeps it for the engine's life, so
//!   `netslot up --hold` owns its pool while it waits for a signal; `netslot down` and
//!   `netslot gc` take it while they work. The kernel drops a flock when its last fd
//!   closes, SIGKILL included, so a dead owner never looks alive and no pid is trusted.
//! - **Commit**: the record's `state=` line. `building` from the moment an owner takes it,
//!   `committed` once `netslot up` has pinned every slot and exits on purpose, `removing`
//!   while `down` works. A pool whose record is not `committed` (or has no record at all)
//!   and has no live owner is the remains of a crash: all of it is garbage. In a
//!   committed pool only incomplete slots are: a pin without its host end, a host end
//!   without its pin, a pin file that is not a mount.
//!
//! Slots are matched by name (`<prefix><n>` host end and pin), as `status` does; the
//! kernel state is read fresh every time, the record only says who owns the pool and
//! whether it was finished. Removal is bulk: host ends by one group delete per sub-batch
//! group when the whole pool is garbage (rtnl_group_dellink), namespaces by lazy unmount and unlink so the
//! kernel destroys them in a batch (cleanup_net).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::host::{self, HostNs};
use crate::netns;

/// The default directory of ownership records (tmpfs: records vanish with a reboot, as
/// the pins and devices they describe do).
pub const DEFAULT_RUN_DIR: &str = "/run/netslot";

/// What a pool's record says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolPhase {
    /// An owner is (or was, if it died) creating slots.
    Building,
    /// `netslot up` pinned every slot and left on purpose: the pool is meant to exist.
    Committed,
    /// `netslot down` is (or was) removing the pool.
    Removing,
}

impl PoolPhase {
    fn as_str(self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Committed => "committed",
            Self::Removing => "removing",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "building" => Some(Self::Building),
            "committed" => Some(Self::Committed),
            "removing" => Some(Self::Removing),
            _ => None,
        }
    }
}

/// Why gc (or a claim on a pool) could not go on.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// A live process holds the pool's record.
    #[error("pool group {group} is owned by a running process{} (lock {path}); stop it (e.g. Ctrl-C the `netslot up --hold`) instead of removing its slots", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Owned {
        /// The group.
        group: u32,
        /// The owner's pid as it wrote it in the record, if readable.
        pid: Option<u32>,
        /// The record file.
        path: String,
    },
    /// A file or kernel operation failed before anything was removed.
    #[error("{what}: {source}")]
    Io {
        /// The object and the operation.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The claim on a pool: an exclusive flock on its record, released when dropped (or by
/// the kernel when the process dies).
#[derive(Debug)]
pub struct PoolLock {
    file: File,
    path: PathBuf,
    group: u32,
    /// What the record said when the claim was taken (None: there was no record).
    found: Option<PoolPhase>,
}

/// The record file of `group` in `host`'s namespace.
pub fn record_path(run_dir: &Path, host: &HostNs, group: u32) -> io::Result<PathBuf> {
    let ino = File::from(host.netns_fd().try_clone_to_owned()?)
        .metadata()?
        .ino();
    Ok(run_dir.join(format!("net{ino}-group{group}.lock")))
}

impl PoolLock {
    /// Claims the pool, or says which live process owns it. Never waits. The record is
    /// created empty if missing and otherwise left as found until [`Self::set_phase`].
    pub fn claim(run_dir: &Path, host: &HostNs, group: u32) -> Result<Self, GcError> {
        let path = record_path(run_dir, host, group).map_err(|source| GcError::Io {
            what: format!(
                "ownership record in {}: open the host namespace",
                run_dir.display()
            ),
            source,
        })?;
        let io_err = |source| GcError::Io {
            what: format!("ownership record {}: open and flock", path.display()),
            source,
        };
        std::fs::create_dir_all(run_dir).map_err(io_err)?;
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_err)?;
            if !netns::try_lock_exclusive(&file).map_err(io_err)? {
                let (pid, _) = read_record(&mut file);
                return Err(GcError::Owned {
                    group,
                    pid,
                    path: path.display().to_string(),
                });
            }
            // A previous holder may have unlinked the record between our open and our
            // lock: then we hold a lock nobody else can see. Start again on the new file.
            let same = match std::fs::metadata(&path) {
                Ok(m) => m.ino() == file.metadata().map_err(io_err)?.ino(),
                Err(_) => false,
            };
            if !same {
                continue;
            }
            let (_, found) = read_record(&mut file);
            return Ok(Self {
                file,
                path,
                group,
                found,
            });
        }
    }

    /// What the record said when the claim was taken (None: no record existed).
    pub fn found(&self) -> Option<PoolPhase> {
        self.found
    }

    /// The record file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pool's group.
    pub fn group(&self) -> u32 {
        self.group
    }

    /// Rewrites the record: our pid and `phase`.
    pub fn set_phase(&mut self, phase: PoolPhase) -> io::Result<()> {
        let text = format!("pid={}\nstate={}\n", std::process::id(), phase.as_str());
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(text.as_bytes())
    }

    /// Unlinks the record (the pool is gone), then releases the claim.
    pub fn remove(self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

fn read_record(file: &mut File) -> (Option<u32>, Option<PoolPhase>) {
    let mut text = String::new();
    if file.rewind().is_err() || file.read_to_string(&mut text).is_err() {
        return (None, None);
    }
    let mut pid = None;
    let mut phase = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("pid=") {
            pid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("state=") {
            phase = PoolPhase::parse(v.trim());
        }
    }
    (pid, phase)
}

/// Where a pool's objects live.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Name prefix of host ends and pins.
    pub prefix: String,
    /// Device group of the host ends.
    pub group: u32,
    /// Where namespaces are pinned (None: the pool pins nothing, look nowhere).
    pub netns_dir: Option<PathBuf>,
    /// The pool's XDP pin directory, `<bpf_dir>/<group>` (None: look nowhere).
    pub bpf_pin_dir: Option<PathBuf>,
}

/// A host end found in the kernel.
#[derive(Debug, Clone, Serialize)]
pub struct GarbageLink {
    /// Interface name.
    pub name: String,
    /// ifindex.
    pub index: u32,
}

/// What gc found (and, unless it was a dry run, removed).
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    /// The pool's prefix.
    pub prefix: String,
    /// The pool's group.
    pub group: u32,
    /// What the pool's record said (None: no record).
    pub record: Option<PoolPhase>,
    /// Whether the whole pool was garbage (no committed record) or only incomplete slots.
    pub whole_pool: bool,
    /// Nothing was removed.
    pub dry_run: bool,
    /// Host ends removed (or to remove).
    pub host_ends: Vec<GarbageLink>,
    /// Whether the host ends went by group deletes, one per sub-batch group (else one
    /// delete per device).
    pub by_group_delete: bool,
    /// Namespace pins (bind mounts) removed.
    pub namespaces: Vec<String>,
    /// Pin files that were not mounts, removed.
    pub stale_files: Vec<String>,
    /// The XDP pin directory, when removed.
    pub bpf_pins: Option<String>,
    /// Complete slots left standing (committed pools only).
    pub kept_slots: usize,
    /// Devices in the group not named `<prefix><n>`: reported, never touched.
    pub foreign_in_group: Vec<String>,
    /// What could not be removed: each names the object, the operation and the error.
    pub errors: Vec<String>,
}

impl GcReport {
    /// Whether anything was (or would be) removed.
    pub fn found_anything(&self) -> bool {
        !self.host_ends.is_empty()
            || !self.namespaces.is_empty()
            || !self.stale_files.is_empty()
            || self.bpf_pins.is_some()
    }
}

/// Pins under `dir` named `<prefix><digits>` that are mount points, from
/// /proc/self/mountinfo (the kernel's list; a file alone is no namespace).
pub fn pin_mounts(dir: &Path, prefix: &str) -> io::Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in info.lines() {
        let Some(point) = line.split(' ').nth(4) else {
            continue;
        };
        let point = PathBuf::from(unescape_mountinfo(point));
        if point.parent() != Some(dir) {
            continue;
        }
        let is_ours = point
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| host::slot_number(n, prefix).is_some());
        if is_ours && !out.contains(&point) {
            out.push(point);
        }
    }
    Ok(out)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Claims the pool (refusing if a live process owns it), then finds what of it no live
/// owner holds and, unless `dry_run`, removes it. The record goes when nothing of the pool
/// remains; a committed pool with complete slots stays committed.
pub fn collect(
    host: &HostNs,
    run_dir: &Path,
    scope: &Scope,
    dry_run: bool,
) -> Result<GcReport, GcError> {
    let mut lock = PoolLock::claim(run_dir, host, scope.group)?;
    let report = reclaim(host, scope, &mut lock, dry_run)?;
    let gone = report.kept_slots == 0
        && report.foreign_in_group.is_empty()
        && report.errors.is_empty()
        && (!dry_run || !report.found_anything());
    if gone || (dry_run && lock.found().is_none()) {
        lock.remove().map_err(|source| GcError::Io {
            what: format!("ownership record {}: unlink", run_dir.display()),
            source,
        })?;
    }
    Ok(report)
}

/// Finds what of the pool no live owner holds and, unless `dry_run`, removes it. The
/// caller holds `lock`, so no live owner exists. Leaves the record file to the caller;
/// its phase is back to what it was found unless the removal was incomplete.
pub fn reclaim(
    host: &HostNs,
    scope: &Scope,
    lock: &mut PoolLock,
    dry_run: bool,
) -> Result<GcReport, GcError> {
    let dump = |what: &str| {
        let what = format!("group {}: {what}", scope.group);
        move |source| GcError::Io { what, source }
    };
    let whole_pool = lock.found() != Some(PoolPhase::Committed);
    let links = host.links().map_err(dump("link dump (RTM_GETLINK)"))?;
    let in_group: Vec<_> = links
        .iter()
        .filter(|l| crate::groups::owns(scope.group, l.group))
        .collect();
    let mut foreign = Vec::new();
    let mut ends = Vec::new(); // (id, link)
    for l in &in_group {
        match host::slot_number(&l.name, &scope.prefix) {
            Some(id) => ends.push((id, *l)),
            None => foreign.push(l.name.clone()),
        }
    }
    let (mounts, files) = match &scope.netns_dir {
        Some(dir) => (
            pin_mounts(dir, &scope.prefix).map_err(dump("read /proc/self/mountinfo"))?,
            host::pinned(dir, &scope.prefix)
                .map_err(dump(&format!("list {}", dir.display())))?
                .into_iter()
                .map(|(_, p)| p)
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let id_of = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| host::slot_number(n, &scope.prefix))
    };
    let mounted_ids: std::collections::HashSet<u32> =
        mounts.iter().filter_map(|p| id_of(p)).collect();
    let end_ids: std::collections::HashSet<u32> = ends.iter().map(|(id, _)| *id).collect();

    let mut report = GcReport {
        prefix: scope.prefix.clone(),
        group: scope.group,
        record: lock.found(),
        whole_pool,
        dry_run,
        host_ends: Vec::new(),
        by_group_delete: false,
        namespaces: Vec::new(),
        stale_files: Vec::new(),
        bpf_pins: None,
        kept_slots: 0,
        foreign_in_group: foreign,
        errors: Vec::new(),
    };
    // A slot is complete when its host end and its pinned namespace both exist. Without a
    // netns directory the pins cannot be seen: a committed pool's host ends are then kept
    // (an engine that pins nothing must not judge a pool that pinned its slots).
    let pins_seen = scope.netns_dir.is_some();
    let complete =
        |id: u32| !whole_pool && end_ids.contains(&id) && (!pins_seen || mounted_ids.contains(&id));
    for (id, l) in &ends {
        if complete(*id) {
            report.kept_slots += 1;
        } else {
            report.host_ends.push(GarbageLink {
                name: l.name.clone(),
                index: l.index,
            });
        }
    }
    let mut doomed_mounts = Vec::new();
    for p in &mounts {
        if !id_of(p).is_some_and(complete) {
            report.namespaces.push(p.display().to_string());
            doomed_mounts.push(p.clone());
        }
    }
    let mut stale = Vec::new();
    for p in &files {
        if !mounts.contains(p) {
            report.stale_files.push(p.display().to_string());
            stale.push(p.clone());
        }
    }
    let pool_empties = report.kept_slots == 0;
    let bpf_dir = scope
        .bpf_pin_dir
        .as_ref()
        .filter(|d| pool_empties && d.exists());
    report.bpf_pins = bpf_dir.map(|d| d.display().to_string());
    report.by_group_delete = !report.host_ends.is_empty()
        && report.host_ends.len() == in_group.len()
        && report.foreign_in_group.is_empty();

    if dry_run || !report.found_anything() {
        return Ok(report);
    }
    if let Err(e) = lock.set_phase(PoolPhase::Removing) {
        report
            .errors
            .push(format!("record {}: write: {e}", lock.path().display()));
    }
    // Host ends first, by group when the whole pool goes: one RTNL acquisition per
    // sub-batch group, and each veth takes its slot end along, so cleanup_net has no
    // device left to unregister.
    if report.by_group_delete {
        if let Err((g, e)) = host.delete_pool(scope.group, &links) {
            report
                .errors
                .push(format!("group {g}: delete by group (RTM_DELLINK): {e}"));
        }
    } else {
        for l in &report.host_ends {
            match host.delete_link(l.index) {
                Err(e) if crate::sock::errno_of(&e) != Some(libc::ENODEV) => {
                    report.errors.push(format!(
                        "host end {} (ifindex {}): delete (RTM_DELLINK): {e}",
                        l.name, l.index
                    ))
                }
                _ => {}
            }
        }
    }
    // Namespaces: lazy unmount and unlink; the last reference going queues cleanup_net,
    // which destroys the namespaces in a batch.
    for p in doomed_mounts.iter().chain(&stale) {
        match netns::unpin(p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => report
                .errors
                .push(format!("pin {}: unmount and unlink: {e}", p.display())),
            _ => {}
        }
    }
    if let Some(dir) = bpf_dir {
        if let Err(e) = netslot_bpf::unpin(dir) {
            report
                .errors
                .push(format!("XDP pins {}: unpin: {e}", dir.display()));
        }
        if let Some(parent) = dir.parent() {
            // Other groups may share the parent: remove it only when empty.
            let _ = std::fs::remove_dir(parent);
        }
    }
    if report.errors.is_empty() {
        let back = lock.found().unwrap_or(PoolPhase::Building);
        if let Err(e) = lock.set_phase(back) {
            report
                .errors
                .push(format!("record {}: write: {e}", lock.path().display()));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo("/run/netns/a\\040b"), "/run/netns/a b");
        assert_eq!(unescape_mountinfo("/run/netns/ns1"), "/run/netns/ns1");
        assert_eq!(unescape_mountinfo("x\\134"), "x\\");
    }

    #[test]
    fn phases_round_trip() {
        for p in [
            PoolPhase::Building,
            PoolPhase::Committed,
            PoolPhase::Removing,
        ] {
            assert_eq!(PoolPhase::parse(p.as_str()), Some(p));
        }
        assert_eq!(PoolPhase::parse("nonsense"), None);
    }
}
