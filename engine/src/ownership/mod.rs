//! ownership: reads one pool's kernel state once and judges, from kernel evidence, what of
//! it the pool made; says what is garbage and removes exactly that, nothing else.
//! Leaves claiming the pool and writing its record to `record`; every reader of a pool
//! (`gc`, `status`, `down`, `up`, `Engine::new`, the daemon) goes through [`Census`].
//!
//! The rule. An object belongs to a pool only when the kernel shows the pool made it; a
//! name that merely matches the pool's prefix is never enough:
//!
//! - **A host end** is the pool's when it is a veth, in one of the pool's device groups
//!   (`groups::owns`), named `<prefix><id>`, AND carries the MAC the pool gives slot `id`
//!   (`slot::host_end_mac`: the base group and the id, set in the creating message at no
//!   extra RTNL acquisition). A user's device that matches on name and group but not on
//!   MAC is a stranger.
//! - **A pinned namespace** is the pool's when the pool's record names the pin AND the
//!   namespace mounted there has the id the record gave it (nsfs `NS_GET_ID`, the netns
//!   cookie, never reused). The engine writes each pin's id into the record before it
//!   makes the bind mount (read from the slot's socket, SO_NETNS_COOKIE, the same id),
//!   so no pin of the pool exists that the record does not name. A
//!   pin file the record names that is an empty regular file and no mount is the pool's
//!   leftover (a pin made halfway).
//! - **The counters pins** (`<bpf-dir>/<group>`) are the pool's when its record names
//!   that directory; the engine writes it there before pinning.
//!
//! Paths are compared canonically (mountinfo gives canonical mount points; the netns
//! directory is resolved before it is compared), and nothing found in the pin directory
//! is opened blocking or through a symlink.

pub(crate) mod claim;
pub mod gc;
pub mod record;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::groups;
use crate::host::{self, HostNs, LinkRecord};
use crate::netns;
use crate::ownership::record::{PoolPhase, PoolRecord};

/// Where to look for a pool's objects.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Name prefix of host ends and pins.
    pub prefix: String,
    /// Base device group of the host ends.
    pub group: u32,
    /// Where the pool's namespaces are (or would be) pinned; None: it pins nothing.
    pub netns_dir: Option<PathBuf>,
    /// The pool's counters pin directory, `<bpf_dir>/<group>`; None: it pins none.
    pub bpf_pin_dir: Option<PathBuf>,
}

/// Why a pool could not be read.
#[derive(Debug, thiserror::Error)]
#[error("pool {prefix}/group {group}: {what}: {source}")]
pub struct CensusError {
    /// The pool's prefix.
    pub prefix: String,
    /// The pool's group.
    pub group: u32,
    /// What was being read.
    pub what: String,
    /// The OS or kernel error.
    #[source]
    pub source: io::Error,
}

/// One pool as the kernel shows it, read once, every object judged.
#[derive(Debug, Clone)]
pub struct Census {
    /// The pool's prefix.
    pub prefix: String,
    /// The pool's base group.
    pub group: u32,
    /// The pool's record as read (None: no record).
    pub record: Option<PoolRecord>,
    /// Every device of the host namespace (the dump the judgement was made on).
    pub links: Vec<LinkRecord>,
    /// The pool's host ends, by slot id.
    pub host_ends: BTreeMap<u32, LinkRecord>,
    /// Devices in the pool's groups that the pool did not make.
    pub strangers_in_groups: Vec<LinkRecord>,
    /// Devices named `<prefix><n>` outside the pool (not its host ends).
    pub strangers_named_like_slots: Vec<LinkRecord>,
    /// The canonical directory the pins were judged in.
    pub netns_dir: Option<PathBuf>,
    /// The pool's pinned namespaces, by slot id.
    pub pins: BTreeMap<u32, PathBuf>,
    /// Pin files the record names that are no mount (a pin made halfway), by slot id.
    pub stale_pins: BTreeMap<u32, PathBuf>,
    /// Entries `<prefix><n>` in the pin directory that are not the pool's.
    pub strangers_pinned: Vec<PathBuf>,
    /// The pool's counters pin directory, when the record names it and it exists.
    pub bpf_pins: Option<PathBuf>,
    /// The scope's counters pin directory when it exists but the record does not name it.
    pub bpf_not_ours: Option<PathBuf>,
}

/// What of a pool is garbage, as [`Census::garbage`] judged it.
#[derive(Debug, Clone, Default)]
pub struct Garbage {
    /// The whole pool is garbage (its record is not `committed`, or there is none).
    pub whole_pool: bool,
    /// Host ends to delete.
    pub host_ends: Vec<LinkRecord>,
    /// Namespace pins to unmount and unlink.
    pub pins: Vec<PathBuf>,
    /// Pin files (no mount) to unlink.
    pub stale_pins: Vec<PathBuf>,
    /// The counters pin directory to remove.
    pub bpf_pins: Option<PathBuf>,
    /// Complete slots that stay.
    pub kept_slots: usize,
}

impl Garbage {
    /// Whether anything is to be removed.
    pub fn is_empty(&self) -> bool {
        self.host_ends.is_empty()
            && self.pins.is_empty()
            && self.stale_pins.is_empty()
            && self.bpf_pins.is_none()
    }
}

/// What [`Census::remove`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Removal {
    /// Device groups deleted whole (everything in them was the pool's).
    pub whole_groups: usize,
    /// Host ends deleted one by one (their group also held a stranger).
    pub one_by_one: usize,
    /// Each failure: the object, the operation, the error.
    pub errors: Vec<String>,
}

/// The slot id of `link` if the pool (`prefix`, base `group`) made it: a veth in one of
/// the pool's groups, named `<prefix><id>`, with the MAC the pool gives slot `id`.
pub fn host_end_id(link: &LinkRecord, prefix: &str, group: u32) -> Option<u32> {
    if !groups::owns(group, link.group) || link.kind.as_deref() != Some("veth") {
        return None;
    }
    let id = host::slot_number(&link.name, prefix)?;
    let mac = crate::slot::mac_to_string(&crate::slot::host_end_mac(group, id));
    (link.mac.as_deref() == Some(mac.as_str())).then_some(id)
}

impl Census {
    /// Reads the pool in `scope` from the kernel (one link dump, the pin directory, the
    /// mount table, the bpffs directory) and judges every object against `record`.
    pub fn read(
        host: &HostNs,
        scope: &Scope,
        record: Option<PoolRecord>,
    ) -> Result<Self, CensusError> {
        let err = |what: &str| {
            let what = what.to_owned();
            let (prefix, group) = (scope.prefix.clone(), scope.group);
            move |source| CensusError {
                prefix,
                group,
                what,
                source,
            }
        };
        let links = host.links().map_err(err("dump links (RTM_GETLINK)"))?;
        let mut census = Self {
            prefix: scope.prefix.clone(),
            group: scope.group,
            record,
            links: Vec::new(),
            host_ends: BTreeMap::new(),
            strangers_in_groups: Vec::new(),
            strangers_named_like_slots: Vec::new(),
            netns_dir: None,
            pins: BTreeMap::new(),
            stale_pins: BTreeMap::new(),
            strangers_pinned: Vec::new(),
            bpf_pins: None,
            bpf_not_ours: None,
        };
        for l in &links {
            match host_end_id(l, &scope.prefix, scope.group) {
                Some(id) => {
                    census.host_ends.insert(id, l.clone());
                }
                None if groups::owns(scope.group, l.group) => {
                    census.strangers_in_groups.push(l.clone())
                }
                None if host::slot_number(&l.name, &scope.prefix).is_some() => {
                    census.strangers_named_like_slots.push(l.clone())
                }
                None => {}
            }
        }
        census.links = links;
        let dir = match &scope.netns_dir {
            Some(d) => Some(canonical_dir(d).map_err(err(&format!("resolve {}", d.display())))?),
            None => census.record.as_ref().and_then(|r| r.netns_dir.clone()),
        };
        if let Some(dir) = &dir {
            census
                .judge_pins(dir)
                .map_err(err(&format!("read the pins in {}", dir.display())))?;
        }
        census.netns_dir = dir;
        if let Some(bpf) = &scope.bpf_pin_dir {
            let named = census
                .record
                .as_ref()
                .and_then(|r| r.bpf_pin_dir.as_ref())
                .is_some_and(|d| d == bpf);
            if let Ok(m) = std::fs::symlink_metadata(bpf) {
                // A symlink in place of the directory is never the pool's.
                if named && m.is_dir() {
                    census.bpf_pins = Some(bpf.clone());
                } else {
                    census.bpf_not_ours = Some(bpf.clone());
                }
            }
        }
        Ok(census)
    }

    /// Judges every `<prefix><n>` entry of `dir` (canonical) against the record.
    fn judge_pins(&mut self, dir: &Path) -> io::Result<()> {
        let mounts = nsfs_mounts_in(dir)?;
        for (id, path) in host::pinned(dir, &self.prefix)? {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let recorded = self
                .record
                .as_ref()
                .filter(|r| r.netns_dir.as_deref() == Some(dir))
                .and_then(|r| r.pin_id(name));
            match recorded {
                Some(want) if mounts.contains(&path) => {
                    let got = netns::open_netns_nofollow(&path)
                        .and_then(|fd| netns::ns_id(std::os::fd::AsFd::as_fd(&fd)));
                    if got.is_ok_and(|id| id == want) {
                        self.pins.insert(id, path);
                    } else {
                        self.strangers_pinned.push(path);
                    }
                }
                Some(_) if is_empty_file(&path) => {
                    self.stale_pins.insert(id, path);
                }
                _ => self.strangers_pinned.push(path),
            }
        }
        Ok(())
    }

    /// Whether the record says the pool was finished on purpose.
    pub fn committed(&self) -> bool {
        self.record
            .as_ref()
            .is_some_and(|r| r.phase == PoolPhase::Committed)
    }

    /// Whether the kernel holds anything of the pool.
    pub fn holds_anything(&self) -> bool {
        !self.host_ends.is_empty()
            || !self.pins.is_empty()
            || !self.stale_pins.is_empty()
            || self.bpf_pins.is_some()
    }

    /// Names a new slot of this pool cannot take, each with what takes it: devices and
    /// pin entries called `<prefix><n>` that are not the pool's.
    pub fn names_taken(&self) -> BTreeMap<String, String> {
        let devices = self
            .strangers_named_like_slots
            .iter()
            .chain(&self.strangers_in_groups)
            .map(|l| {
                (
                    l.name.clone(),
                    format!("device {} (ifindex {})", l.name, l.index),
                )
            });
        let pins = self.strangers_pinned.iter().filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            Some((name, format!("namespace pin {}", p.display())))
        });
        devices.chain(pins).collect()
    }

    /// What is garbage when no live process owns the pool. A pool whose record is not
    /// `committed` (or that has none) is the remains of a crash or of a `down` that
    /// stopped: all of it. In a committed pool only incomplete slots are: a host end
    /// without its pin, a pin without its host end, a pin made halfway. Without a pin
    /// directory the pins cannot be judged, so a committed pool's host ends then stay.
    pub fn garbage(&self) -> Garbage {
        if !self.committed() {
            return self.everything();
        }
        let whole_pool = false;
        let pins_judged =
            self.netns_dir.is_some() && self.record.as_ref().is_some_and(|r| r.netns_dir.is_some());
        let complete = |id: &u32| {
            !whole_pool
                && self.host_ends.contains_key(id)
                && (!pins_judged || self.pins.contains_key(id))
        };
        let mut g = Garbage {
            whole_pool,
            ..Garbage::default()
        };
        for (id, l) in &self.host_ends {
            if complete(id) {
                g.kept_slots += 1;
            } else {
                g.host_ends.push(l.clone());
            }
        }
        g.pins = self
            .pins
            .iter()
            .filter(|(id, _)| !complete(id))
            .map(|(_, p)| p.clone())
            .collect();
        g.stale_pins = self.stale_pins.values().cloned().collect();
        if g.kept_slots == 0 {
            g.bpf_pins = self.bpf_pins.clone();
        }
        g
    }

    /// All of the pool: what `down` removes, and what is garbage when the pool was not
    /// finished on purpose. Strangers are never part of it.
    pub fn everything(&self) -> Garbage {
        Garbage {
            whole_pool: true,
            host_ends: self.host_ends.values().cloned().collect(),
            pins: self.pins.values().cloned().collect(),
            stale_pins: self.stale_pins.values().cloned().collect(),
            bpf_pins: self.bpf_pins.clone(),
            kept_slots: 0,
        }
    }

    /// Removes `garbage` (judged on this census) and nothing else: host ends by group
    /// where a group holds only the pool's devices, one by one where it also holds a
    /// stranger; pins by lazy unmount and unlink, so the kernel destroys the namespaces
    /// in a batch (cleanup_net); the counters pins last.
    pub fn remove(&self, host: &HostNs, garbage: &Garbage) -> Removal {
        let mut out = Removal::default();
        if !garbage.host_ends.is_empty() {
            let doomed: Vec<u32> = garbage.host_ends.iter().map(|l| l.index).collect();
            let d = host.delete_devices(&doomed, &self.links);
            out.whole_groups = d.whole_groups.len();
            out.one_by_one = d.one_by_one;
            out.errors.extend(d.errors);
        }
        for p in garbage.pins.iter().chain(&garbage.stale_pins) {
            match netns::unpin(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => out
                    .errors
                    .push(format!("pin {}: unmount and unlink: {e}", p.display())),
                _ => {}
            }
        }
        if let Some(dir) = &garbage.bpf_pins {
            if let Err(e) = netslot_bpf::unpin(dir) {
                out.errors
                    .push(format!("counters pins {}: unpin: {e}", dir.display()));
            }
            if let Some(parent) = dir.parent() {
                // Other pools may share the parent: remove it only when empty.
                let _ = std::fs::remove_dir(parent);
            }
        }
        out
    }

    /// Every overlap of `cidr` with what the host namespace already routes or holds,
    /// outside this pool's own host ends: an IPv4 address in the range, or a route
    /// (other than a default route) whose destination overlaps it. Each names the device
    /// or route. The pool's /31s would otherwise shadow or duplicate them.
    pub fn address_clashes(&self, host: &HostNs, cidr: crate::Ipv4Cidr) -> io::Result<Vec<String>> {
        let ours: BTreeSet<u32> = self.host_ends.values().map(|l| l.index).collect();
        let name = |index: u32| {
            self.links
                .iter()
                .find(|l| l.index == index)
                .map_or_else(|| format!("ifindex {index}"), |l| l.name.clone())
        };
        let mut out = Vec::new();
        for a in host.addresses()? {
            if let std::net::IpAddr::V4(ip) = a.addr {
                if !ours.contains(&a.index) && cidr.contains(ip) {
                    out.push(format!(
                        "address {ip}/{} on {}",
                        a.prefix_len,
                        name(a.index)
                    ));
                }
            }
        }
        for r in host.routes()? {
            let IpAddr::V4(dst) = r.dst else { continue };
            let local_or_default = r.dst_len == 0 || r.table == 255;
            let on_ours = r.oif.is_some_and(|i| ours.contains(&i));
            if local_or_default || on_ours {
                continue;
            }
            if cidr.overlaps(dst, r.dst_len) {
                let dev = r
                    .oif
                    .map(|i| format!(" dev {}", name(i)))
                    .unwrap_or_default();
                out.push(format!(
                    "route {}/{}{dev} (table {})",
                    r.dst, r.dst_len, r.table
                ));
            }
        }
        Ok(out)
    }
}

/// `dir` resolved to its canonical path (symlinks in it followed once, here, so that it
/// compares with mountinfo's canonical mount points); a directory that does not exist yet
/// is resolved through its nearest existing parent.
pub fn canonical_dir(dir: &Path) -> io::Result<PathBuf> {
    match std::fs::canonicalize(dir) {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
                return Err(e);
            };
            if parent.as_os_str().is_empty() {
                return Err(e);
            }
            Ok(canonical_dir(parent)?.join(name))
        }
        Err(e) => Err(e),
    }
}

/// Mount points of nsfs mounts directly under `dir` (canonical), from
/// /proc/self/mountinfo: the kernel's list; a file alone is no namespace.
fn nsfs_mounts_in(dir: &Path) -> io::Result<BTreeSet<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|line| {
            let point = line.split(' ').nth(4)?;
            let fstype = line.split(" - ").nth(1)?.split(' ').next()?;
            (fstype == "nsfs").then(|| PathBuf::from(unescape_mountinfo(point)))
        })
        .filter(|p| p.parent() == Some(dir))
        .collect())
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

/// Whether `path` is an empty regular file (not a symlink): what a pin made halfway is.
fn is_empty_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file() && m.len() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, group: u32, kind: &str, mac: [u8; 6]) -> LinkRecord {
        LinkRecord {
            index: 1,
            name: name.into(),
            group,
            up: true,
            mac: Some(crate::slot::mac_to_string(&mac)),
            kind: Some(kind.into()),
            xdp_prog_id: None,
        }
    }

    #[test]
    fn a_host_end_needs_group_name_kind_and_mac() {
        let mac = crate::slot::host_end_mac(7600, 3);
        let sub = groups::sub_batch_group(7600, 2);
        assert_eq!(
            host_end_id(&link("ns3", 7600, "veth", mac), "ns", 7600),
            Some(3)
        );
        assert_eq!(
            host_end_id(&link("ns3", sub, "veth", mac), "ns", 7600),
            Some(3)
        );
        // Each piece of evidence alone is not enough.
        assert_eq!(
            host_end_id(&link("ns3", 7601, "veth", mac), "ns", 7600),
            None
        );
        assert_eq!(
            host_end_id(&link("xx3", 7600, "veth", mac), "ns", 7600),
            None
        );
        assert_eq!(
            host_end_id(&link("ns3", 7600, "tun", mac), "ns", 7600),
            None
        );
        let other = crate::slot::host_end_mac(7600, 4);
        assert_eq!(
            host_end_id(&link("ns3", 7600, "veth", other), "ns", 7600),
            None
        );
        let other_pool = crate::slot::host_end_mac(7700, 3);
        assert_eq!(
            host_end_id(&link("ns3", 7600, "veth", other_pool), "ns", 7600),
            None
        );
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo("/run/netns/a\\040b"), "/run/netns/a b");
        assert_eq!(unescape_mountinfo("/run/netns/ns1"), "/run/netns/ns1");
        assert_eq!(unescape_mountinfo("x\\134"), "x\\");
    }

    fn census(phase: Option<PoolPhase>, ends: &[u32], pins: &[u32]) -> Census {
        let record = phase.map(|p| {
            let mut r = PoolRecord::new("ns", 7600);
            r.phase = p;
            r.netns_dir = Some("/run/netns".into());
            r
        });
        Census {
            prefix: "ns".into(),
            group: 7600,
            record,
            links: Vec::new(),
            host_ends: ends
                .iter()
                .map(|&id| {
                    let l = link(
                        &format!("ns{id}"),
                        7600,
                        "veth",
                        crate::slot::host_end_mac(7600, id),
                    );
                    (id, l)
                })
                .collect(),
            strangers_in_groups: Vec::new(),
            strangers_named_like_slots: Vec::new(),
            netns_dir: Some("/run/netns".into()),
            pins: pins
                .iter()
                .map(|&id| (id, PathBuf::from(format!("/run/netns/ns{id}"))))
                .collect(),
            stale_pins: BTreeMap::new(),
            strangers_pinned: vec!["/run/netns/ns99".into()],
            bpf_pins: Some("/sys/fs/bpf/netslot/7600".into()),
            bpf_not_ours: None,
        }
    }

    #[test]
    fn a_committed_pool_loses_only_its_incomplete_slots() {
        let g = census(Some(PoolPhase::Committed), &[0, 1, 2], &[0, 2, 3]).garbage();
        assert!(!g.whole_pool);
        assert_eq!(g.kept_slots, 2);
        assert_eq!(
            g.host_ends
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>(),
            ["ns1"]
        );
        assert_eq!(g.pins, [PathBuf::from("/run/netns/ns3")]);
        assert_eq!(g.bpf_pins, None, "the counters stay while slots stay");
    }

    #[test]
    fn an_unfinished_pool_is_all_garbage_but_strangers_never_are() {
        for phase in [None, Some(PoolPhase::Building), Some(PoolPhase::Removing)] {
            let g = census(phase, &[0, 1], &[0, 1]).garbage();
            assert!(g.whole_pool);
            assert_eq!(g.host_ends.len(), 2);
            assert_eq!(g.pins.len(), 2);
            assert!(!g.pins.contains(&PathBuf::from("/run/netns/ns99")));
            assert!(g.bpf_pins.is_some());
        }
    }

    #[test]
    fn names_of_strangers_are_taken() {
        let c = census(None, &[0], &[0]);
        let taken = c.names_taken();
        assert_eq!(taken.keys().collect::<Vec<_>>(), ["ns99"]);
        assert_eq!(taken["ns99"], "namespace pin /run/netns/ns99");
    }
}
