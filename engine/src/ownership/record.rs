//! record: a pool's ownership record: who holds the pool now (a flock) and what its
//! owner wrote about it (phase, prefix, CIDR, pins with their namespace ids).
//! No netlink and no judging here: `ownership` reads the kernel and uses the record as
//! the one piece of evidence the kernel cannot keep (a namespace carries no label).
//!
//! A pool is (host namespace, base device group). Its record lives in two files of the
//! run directory (tmpfs: records vanish with a reboot, as the pins and devices they
//! describe do), named after the host namespace's id and the group:
//!
//! - `net<id>-group<g>.lock`: the **live owner** holds `flock(LOCK_EX)` on it. The kernel
//!   drops a flock when its last fd closes, SIGKILL included, so a dead owner never looks
//!   alive and no pid is trusted. The file itself only carries the holder's pid, for
//!   error messages.
//! - `net<id>-group<g>.json`: the [`PoolRecord`]. It is replaced whole by a rename of a
//!   fully written temporary file, so a kill at any instant leaves either the old record
//!   or the new one, never a torn one.
//!
//! The record of a daemon's pool (`netslot serve`) also lists its live attachments
//! ([`AttachmentRecord`]), rewritten after every round that changes them: what an engine
//! started with `EngineConfig::adopt` takes back instead of removing (see `claim`).
//!
//! `<id>` is the host namespace's id (nsfs `NS_GET_ID`, the netns cookie): unlike an
//! nsfs inode number it is never reused, so a record can never be taken for another
//! namespace's. Every file is opened with `O_NOFOLLOW`: a symlink planted in the run
//! directory is refused, never followed.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::HostNs;
use crate::netns;

/// The default directory of ownership records.
pub const DEFAULT_RUN_DIR: &str = "/run/netslot";

/// What a pool's record says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolPhase {
    /// An owner is (or was, if it died) creating slots: if it is gone, all of the pool is
    /// the remains of a crash.
    Building,
    /// `netslot up` pinned its slots and left on purpose: the pool is meant to exist, and
    /// only its incomplete slots are garbage.
    Committed,
    /// `netslot down` is (or was) removing the pool: all of it is garbage.
    Removing,
}

/// A namespace pin the pool made (or is about to make): its file name in the record's
/// netns directory and the namespace's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRecord {
    /// File name under [`PoolRecord::netns_dir`], `<prefix><id>`.
    pub name: String,
    /// The pinned namespace's id (nsfs `NS_GET_ID`, never reused): a pin at `name` is the
    /// pool's only while the namespace mounted there has this id.
    pub ns_id: u64,
}

/// Everything an owner writes about its pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    /// The writer's pid (informative only: liveness is the flock).
    pub pid: u32,
    /// Where the pool is in its life.
    pub phase: PoolPhase,
    /// Name prefix of the pool's host ends and pins.
    pub prefix: String,
    /// Base device group.
    pub group: u32,
    /// The IPv4 pool of the slots, as text (`100.64.0.0/16`), for overlap checks.
    #[serde(default)]
    pub cidr: Option<String>,
    /// Canonical directory of the pool's namespace pins.
    #[serde(default)]
    pub netns_dir: Option<PathBuf>,
    /// The pool's counters pin directory, once the owner is about to pin there.
    #[serde(default)]
    pub bpf_pin_dir: Option<PathBuf>,
    /// Pins the pool made, each written here before its bind mount exists.
    #[serde(default)]
    pub pins: Vec<PinRecord>,
    /// The daemon's live attachments (slots made in place in a caller's namespace), as
    /// of its last attach or detach round. A daemon's record only; empty elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentRecord>,
}

/// One attachment as the daemon last recorded it: its key, its slot, and the container's
/// namespace by path and by id. A restart with `EngineConfig::adopt` keeps the slot only
/// when the kernel still shows the host end (named, indexed and with the MAC of slot
/// `slot_id`) and the namespace at `netns` is still the one with id `netns_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// The network configuration's name (may be empty).
    #[serde(default)]
    pub network: String,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_IFNAME: the slot end's name in the container's namespace.
    pub ifname: String,
    /// The slot's id in the pool.
    pub slot_id: u32,
    /// The host end's name, `<prefix><slot_id>`.
    pub host_ifname: String,
    /// The host end's ifindex (the slot end has the same one in its namespace).
    pub ifindex: u32,
    /// The container's namespace as the runtime gave it (CNI_NETNS).
    pub netns: PathBuf,
    /// That namespace's id (nsfs `NS_GET_ID`, the netns cookie; never reused).
    pub netns_id: u64,
    /// Whether the attach added the container's default route.
    pub default_route: bool,
    /// The uid that attached it.
    pub uid: u32,
    /// The veth pair's MTU when the attach asked for its own (`AttachTarget::mtu`).
    /// Absent: the configuration's, as in records written before this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The slot end's MAC when the attach asked for its own (`AttachTarget::mac`), as
    /// `0a:00:00:00:00:01`. Absent: the one derived from the slot id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The slot end's address (`a.b.c.d/len`) when the attach gave an IPAM lease
    /// (`AttachTarget::ipv4`), with `gateway`. Absent: the pool's /31.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The lease's gateway, the host end's address; with `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The slot end's IPv6 address (`addr/len`) of an IPv6 lease (`AttachTarget::ipv6`),
    /// with `ipv6_gateway`; without `address`, the slot is IPv6-only. Absent: no IPv6
    /// address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
    /// The IPv6 lease's gateway, the host end's IPv6 address; with `ipv6_address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_gateway: Option<String>,
}

impl AttachmentRecord {
    /// The recorded IPAM lease, if any (and if it still parses).
    pub fn lease(&self) -> Option<crate::slot::Ipv4Lease> {
        crate::slot::Ipv4Lease::parse(self.address.as_deref()?, self.gateway.as_deref()?).ok()
    }

    /// The recorded IPv6 lease, if any (and if it still parses).
    pub fn lease_ipv6(&self) -> Option<crate::slot::Ipv6Lease> {
        crate::slot::Ipv6Lease::parse(self.ipv6_address.as_deref()?, self.ipv6_gateway.as_deref()?)
            .ok()
    }
}

impl PoolRecord {
    /// A record of a pool being built by this process.
    pub fn new(prefix: &str, group: u32) -> Self {
        Self {
            pid: std::process::id(),
            phase: PoolPhase::Building,
            prefix: prefix.to_owned(),
            group,
            cidr: None,
            netns_dir: None,
            bpf_pin_dir: None,
            pins: Vec::new(),
            attachments: Vec::new(),
        }
    }

    /// The namespace id the record gives for pin `name`, if it names it.
    pub fn pin_id(&self, name: &str) -> Option<u64> {
        self.pins.iter().find(|p| p.name == name).map(|p| p.ns_id)
    }
}

/// Why a pool could not be claimed or its record not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A live process holds the pool.
    #[error("pool group {group} is owned by a running process{} (lock {path}); stop it (e.g. Ctrl-C the `netslot up --hold`, or stop `netslot serve`) instead of touching its slots", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Owned {
        /// The group.
        group: u32,
        /// The owner's pid as it wrote it, if readable.
        pid: Option<u32>,
        /// The lock file.
        path: String,
    },
    /// A record file could not be opened, read, parsed or written.
    #[error("ownership record {path}: {what}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The operation.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path, what: &str) -> impl FnOnce(io::Error) -> RecordError {
    let path = path.display().to_string();
    let what = what.to_owned();
    move |source| RecordError::Io { path, what, source }
}

/// The two files of a pool's record.
#[derive(Debug, Clone)]
pub struct RecordPaths {
    /// The flock target.
    pub lock: PathBuf,
    /// The record itself.
    pub record: PathBuf,
}

impl RecordPaths {
    /// The record files of `group` in `host`'s namespace.
    pub fn of(run_dir: &Path, host: &HostNs, group: u32) -> io::Result<Self> {
        let id = netns::ns_id(host.netns_fd())?;
        Ok(Self::for_id(run_dir, id, group))
    }

    fn for_id(run_dir: &Path, host_id: u64, group: u32) -> Self {
        let stem = format!("net{host_id}-group{group}");
        Self {
            lock: run_dir.join(format!("{stem}.lock")),
            record: run_dir.join(format!("{stem}.json")),
        }
    }
}

/// Reads a record file; `None` when there is none. A record that is a symlink or does not
/// parse is an error: nothing is judged on a record that cannot be read.
pub fn read_record(path: &Path) -> Result<Option<PoolRecord>, RecordError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, "open (symlinks are refused)")(e)),
    };
    if !file.metadata().map_err(io_err(path, "stat"))?.is_file() {
        return Err(io_err(path, "open")(io::Error::other("not a regular file")));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(io_err(path, "read"))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| io_err(path, "parse")(io::Error::other(e)))
}

/// Replaces the record at `path` atomically: a new file written whole, then renamed over
/// the old one (rename(2) is atomic within a directory).
fn write_record(path: &Path, record: &PoolRecord) -> Result<(), RecordError> {
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp); // a stale one of an earlier process with our pid
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io_err(&tmp, "create"))?;
    // World-readable whatever the umask: it holds names and namespace ids only, and
    // `netslot status` reads it without privilege. Only its writer (root) may change it.
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(io_err(&tmp, "chmod"))?;
    let text = serde_json::to_string_pretty(record).expect("records serialize");
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(io_err(&tmp, "write"))?;
    std::fs::rename(&tmp, path).map_err(io_err(path, "rename into place"))
}

/// How long a claim waits for a lock that is held only for a moment. A process's
/// children hold copies of its fds from fork until exec (CLOEXEC acts at exec), so just
/// after an owner let go, a child it was starting can still hold the lock for a few
/// milliseconds. A live owner holds it for good.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(200);

/// Tries the exclusive flock on `file` until it is taken or `patience` has passed.
fn lock_within(file: &std::fs::File, patience: std::time::Duration) -> io::Result<bool> {
    let until = std::time::Instant::now() + patience;
    loop {
        if netns::try_lock_exclusive(file)? {
            return Ok(true);
        }
        if std::time::Instant::now() >= until {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The claim on a pool: an exclusive flock on its lock file, released when dropped (or by
/// the kernel when the process dies), and the record as found and as last written.
#[derive(Debug)]
pub struct PoolLock {
    /// Kept open for its flock: the claim lasts as long as this fd.
    _file: File,
    paths: RecordPaths,
    group: u32,
    /// The record when the claim was taken (None: there was none).
    found: Option<PoolRecord>,
    /// The record as this holder last wrote it (or as found).
    current: Option<PoolRecord>,
}

impl PoolLock {
    /// Claims the pool, or says which live process owns it. Never waits. Reads the record
    /// as it was; writes nothing until [`Self::write`].
    pub fn claim(run_dir: &Path, host: &HostNs, group: u32) -> Result<Self, RecordError> {
        let paths = RecordPaths::of(run_dir, host, group)
            .map_err(io_err(run_dir, "read the host namespace's id"))?;
        std::fs::create_dir_all(run_dir).map_err(io_err(run_dir, "create"))?;
        let lock_err = |what: &str| io_err(&paths.lock, what);
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&paths.lock)
                .map_err(lock_err("open (symlinks are refused)"))?;
            if !file.metadata().map_err(lock_err("stat"))?.is_file() {
                return Err(lock_err("open")(io::Error::other("not a regular file")));
            }
            if !lock_within(&file, LOCK_PATIENCE).map_err(lock_err("flock"))? {
                return Err(RecordError::Owned {
                    group,
                    pid: read_pid(&mut file),
                    path: paths.lock.display().to_string(),
                });
            }
            // A previous holder may have unlinked the lock file between our open and our
            // flock: then we hold a lock nobody else can see. Start again on the new file.
            let same = match std::fs::symlink_metadata(&paths.lock) {
                Ok(m) => m.ino() == file.metadata().map_err(lock_err("stat"))?.ino(),
                Err(_) => false,
            };
            if !same {
                continue;
            }
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| writeln!(file, "pid={}", std::process::id()))
                .map_err(lock_err("write the pid"))?;
            let found = read_record(&paths.record)?;
            return Ok(Self {
                _file: file,
                current: found.clone(),
                found,
                paths,
                group,
            });
        }
    }

    /// The record when the claim was taken (None: there was none).
    pub fn found(&self) -> Option<&PoolRecord> {
        self.found.as_ref()
    }

    /// The record as last written by this holder (or as found).
    pub fn current(&self) -> Option<&PoolRecord> {
        self.current.as_ref()
    }

    /// The record's files.
    pub fn paths(&self) -> &RecordPaths {
        &self.paths
    }

    /// The pool's group.
    pub fn group(&self) -> u32 {
        self.group
    }

    /// Replaces the record atomically with `record` (our pid written in).
    pub fn write(&mut self, mut record: PoolRecord) -> Result<(), RecordError> {
        record.pid = std::process::id();
        write_record(&self.paths.record, &record)?;
        self.current = Some(record);
        Ok(())
    }

    /// Changes only the phase of the current record (or of a new one for `prefix`).
    pub fn set_phase(&mut self, prefix: &str, phase: PoolPhase) -> Result<(), RecordError> {
        let mut r = self
            .current
            .clone()
            .unwrap_or_else(|| PoolRecord::new(prefix, self.group));
        r.phase = phase;
        self.write(r)
    }

    /// Removes the record (the pool is gone), then the lock file; the claim itself goes
    /// when this is dropped. The record goes first: a kill in between leaves a lock file
    /// without a record, which says nothing.
    pub fn remove(&mut self) -> Result<(), RecordError> {
        self.current = None;
        for path in [&self.paths.record, &self.paths.lock] {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err(path, "unlink")(e))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|v| v.trim().parse().ok())
}

/// Every other pool's record in `run_dir` for the host namespace of `host`, as
/// (group, record); unreadable ones are skipped (they cannot be judged either way).
pub fn other_pools(
    run_dir: &Path,
    host: &HostNs,
    group: u32,
) -> io::Result<Vec<(u32, PoolRecord)>> {
    let id = netns::ns_id(host.netns_fd())?;
    let prefix = format!("net{id}-group");
    let entries = match std::fs::read_dir(run_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(g) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if g == group {
            continue;
        }
        if let Ok(Some(r)) = read_record(&e.path()) {
            out.push((g, r));
        }
    }
    out.sort_by_key(|(g, _)| *g);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_replace_atomically() {
        let dir = std::env::temp_dir().join(format!("netslot-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("net3-group7.json");
        let mut r = PoolRecord::new("ns", 7);
        r.pins.push(PinRecord {
            name: "ns0".into(),
            ns_id: 4101,
        });
        r.attachments.push(AttachmentRecord {
            network: "net".into(),
            container_id: "c1".into(),
            ifname: "eth0".into(),
            slot_id: 3,
            host_ifname: "ns3".into(),
            ifindex: 42,
            netns: "/run/netns/c1".into(),
            netns_id: 4102,
            default_route: true,
            uid: 0,
            mtu: Some(1400),
            mac: Some("0a:00:00:00:00:01".into()),
            address: Some("10.22.0.5/24".into()),
            gateway: Some("10.22.0.1".into()),
            ipv6_address: Some("fd00:22::5/64".into()),
            ipv6_gateway: Some("fd00:22::1".into()),
        });
        assert_eq!(
            r.attachments[0].lease().map(|l| l.to_strings()),
            Some(("10.22.0.5/24".into(), "10.22.0.1".into()))
        );
        assert_eq!(
            r.attachments[0].lease_ipv6().map(|l| l.to_strings()),
            Some(("fd00:22::5/64".into(), "fd00:22::1".into()))
        );
        write_record(&path, &r).unwrap();
        assert_eq!(read_record(&path).unwrap(), Some(r.clone()));
        // A record written before attachments were recorded still reads, with none.
        std::fs::write(
            &path,
            r#"{"pid":1,"phase":"building","prefix":"ns","group":7}"#,
        )
        .unwrap();
        assert!(read_record(&path).unwrap().unwrap().attachments.is_empty());
        write_record(&path, &r).unwrap();
        r.phase = PoolPhase::Committed;
        write_record(&path, &r).unwrap();
        assert_eq!(
            read_record(&path).unwrap().unwrap().phase,
            PoolPhase::Committed
        );
        assert_eq!(r.pin_id("ns0"), Some(4101));
        assert_eq!(r.pin_id("ns1"), None);
        // Only the record is left: no temporary file survives a write.
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symlinked_record_is_refused_not_followed() {
        let dir = std::env::temp_dir().join(format!("netslot-recsym-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("victim");
        std::fs::write(&target, "precious").unwrap();
        let path = dir.join("net3-group7.json");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(read_record(&path).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
