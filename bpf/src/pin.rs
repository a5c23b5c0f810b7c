//! Pins: program and map under one bpffs directory, reopening them later, removing them.
//! Leaves the bpffs mount itself to `bpffs` (never unmounted).

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use libbpf_rs::{MapHandle, ProgramHandle};

use crate::bpffs;
use crate::counters::{CountersMap, DeviceCounters};
use crate::error::{BpfError, BpfOp, Result};
use crate::program::Hook;

/// File name of the pinned program inside a pin directory.
pub const PROG_PIN: &str = "prog";
/// File name of the pinned counters map inside a pin directory.
pub const MAP_PIN: &str = "counters";

pub(crate) fn pin(prog: &ProgramHandle, map: &MapHandle, dir: &Path) -> Result<()> {
    bpffs::ensure(dir)?;
    fs::create_dir_all(dir).map_err(BpfError::io(BpfOp::PinDir, dir))?;
    let prog_path = dir.join(PROG_PIN);
    prog.pin(&prog_path).map_err(BpfError::libbpf(BpfOp::Pin))?;
    let map_path = dir.join(MAP_PIN);
    // MapHandle::pin takes &mut self only for symmetry; a duplicate fd pins the same map.
    let mut map = MapHandle::try_from(map).map_err(BpfError::libbpf(BpfOp::Handle))?;
    if let Err(e) = map.pin(&map_path) {
        // Undo the program pin: on failure nothing stays pinned.
        let _ = fs::remove_file(&prog_path);
        return Err(BpfError::libbpf(BpfOp::Pin)(e));
    }
    Ok(())
}

/// Removes `dir/prog`, `dir/counters` and then `dir` itself (which must then be empty).
///
/// Missing pins are not an error, so it can finish an interrupted unpin.
/// Parents of `dir` are left alone: other groups may share them. Programs stay
/// attached to their devices; the kernel frees them when the last user goes. A `dir`
/// that is a symlink is refused, never followed: bpffs has symlinks, and one planted in
/// place of a pin directory must not lead to removing another directory's pins.
pub fn unpin(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(BpfError::io(BpfOp::Unpin, dir)(e)),
        Ok(m) if !m.is_dir() => {
            let e = io::Error::other("not a directory (symlinks are never followed)");
            return Err(BpfError::io(BpfOp::Unpin, dir)(e));
        }
        Ok(_) => {}
    }
    for name in [PROG_PIN, MAP_PIN] {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(BpfError::io(BpfOp::Unpin, path)(e)),
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BpfError::io(BpfOp::Unpin, dir)(e)),
    }
}

/// Counters program and map reopened from their pins, e.g. by a later process.
#[derive(Debug)]
pub struct PinnedCounters {
    dir: PathBuf,
    hook: Hook,
    prog: ProgramHandle,
    map: CountersMap,
}

impl PinnedCounters {
    /// Opens `dir/prog` and `dir/counters` (BPF_OBJ_GET) and checks they are ours.
    pub fn open(dir: &Path) -> Result<Self> {
        let op = BpfOp::OpenPinned;
        let prog_path = dir.join(PROG_PIN);
        let prog = ProgramHandle::from_pinned_path(&prog_path).map_err(BpfError::libbpf(op))?;
        let Some(hook) = Hook::of_type(prog.prog_type()) else {
            return Err(BpfError::Mismatch {
                op,
                path: prog_path,
                what: "program type is neither XDP nor sched_cls (tc)",
            });
        };
        let map_path = dir.join(MAP_PIN);
        let map = MapHandle::from_pinned_path(&map_path).map_err(BpfError::libbpf(op))?;
        let map = CountersMap::new(map, op, &map_path)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            hook,
            prog,
            map,
        })
    }

    /// The hook of the pinned program (XDP, or tc for a tc-block pool).
    pub fn hook(&self) -> Hook {
        self.hook
    }

    /// The pin directory this was opened from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Program fd (for IFLA_XDP_FD in a group change, or TCA_BPF_FD, from a later process).
    pub fn prog_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// Kernel program id.
    pub fn prog_id(&self) -> u32 {
        self.prog.id()
    }

    /// Summed counters of every device the program has seen, ordered by ifindex.
    pub fn read_all(&self) -> Result<Vec<DeviceCounters>> {
        self.map.read_all()
    }

    /// Deletes one device's counters.
    pub fn forget(&self, ifindex: u32) -> Result<()> {
        self.map.forget(ifindex)
    }
}
