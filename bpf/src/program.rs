//! Loaded program: `Counters` owns a counters program (XDP or tc) and its map fds once the skeleton is loaded.
//! Leaves attachment to the engine (netlink IFLA_XDP, or a cls_bpf filter); offers per-device libbpf XDP attach for tests.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapHandle, OpenObject, ProgramHandle, ProgramType, Xdp, XdpFlags};

use crate::counters::{CountersMap, DeviceCounters};
use crate::error::{BpfError, BpfOp, Result};
use crate::pin;
use crate::skel::{TcCountersSkelBuilder, XdpCountersSkelBuilder};

/// Which hook a counters program is built for. Both count the same way into the
/// same map layout (`count.bpf.h`); they differ only in where the kernel runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Hook {
    /// `xdp_counters` (BPF_PROG_TYPE_XDP): attached by IFLA_XDP, per device.
    #[default]
    Xdp,
    /// `tc_counters` (BPF_PROG_TYPE_SCHED_CLS): a direct-action cls_bpf filter,
    /// for tc semantics (runs after the skb exists, can be moved to egress).
    Tc,
}

impl Hook {
    /// Name of the program in its object (and in `bpftool prog`, `tc filter show`).
    pub fn prog_name(self) -> &'static str {
        match self {
            Self::Xdp => "xdp_counters",
            Self::Tc => "tc_counters",
        }
    }

    /// The kernel program type this hook's program is loaded as.
    pub fn prog_type(self) -> ProgramType {
        match self {
            Self::Xdp => ProgramType::Xdp,
            Self::Tc => ProgramType::SchedCls,
        }
    }

    /// The hook whose program has type `ty`, if any.
    pub fn of_type(ty: ProgramType) -> Option<Self> {
        match ty {
            ProgramType::Xdp => Some(Self::Xdp),
            ProgramType::SchedCls => Some(Self::Tc),
            _ => None,
        }
    }
}

/// A counters program and its map, loaded into the kernel.
///
/// Holds duplicated fds only: the libbpf object and skeleton are dropped after
/// loading, the kernel keeps program and map alive through these fds (and
/// through any device or filter it is attached to, or any pin).
#[derive(Debug)]
pub struct Counters {
    hook: Hook,
    prog: ProgramHandle,
    map: CountersMap,
}

impl Counters {
    /// Opens and loads the XDP skeleton (BPF_PROG_LOAD, BPF_MAP_CREATE; needs CAP_BPF or root).
    pub fn load() -> Result<Self> {
        Self::load_hook(Hook::Xdp)
    }

    /// Opens and loads the skeleton of `hook`'s program. Only that program and
    /// its own map are loaded: the two hooks are separate objects.
    pub fn load_hook(hook: Hook) -> Result<Self> {
        let mut object = MaybeUninit::<OpenObject>::uninit();
        let (prog, map) = match hook {
            Hook::Xdp => {
                let open = XdpCountersSkelBuilder::default()
                    .open(&mut object)
                    .map_err(BpfError::libbpf(BpfOp::Open))?;
                let skel = open.load().map_err(BpfError::libbpf(BpfOp::Load))?;
                (
                    ProgramHandle::try_from(&skel.progs.xdp_counters),
                    MapHandle::try_from(&skel.maps.counters),
                )
            }
            Hook::Tc => {
                let open = TcCountersSkelBuilder::default()
                    .open(&mut object)
                    .map_err(BpfError::libbpf(BpfOp::Open))?;
                let skel = open.load().map_err(BpfError::libbpf(BpfOp::Load))?;
                (
                    ProgramHandle::try_from(&skel.progs.tc_counters),
                    MapHandle::try_from(&skel.maps.counters),
                )
            }
        };
        let prog = prog.map_err(BpfError::libbpf(BpfOp::Handle))?;
        let map = map.map_err(BpfError::libbpf(BpfOp::Handle))?;
        let map = CountersMap::new(map, BpfOp::Load, Path::new("<skeleton>"))?;
        Ok(Self { hook, prog, map })
    }

    /// The hook this program was built for.
    pub fn hook(&self) -> Hook {
        self.hook
    }

    /// Program fd: for IFLA_XDP / IFLA_XDP_FD in the engine's group RTM_NEWLINK
    /// ([`Hook::Xdp`]), or TCA_BPF_FD in its one cls_bpf filter ([`Hook::Tc`]).
    ///
    /// Must stay open until that message has been processed: the kernel takes
    /// its own reference when it attaches.
    pub fn prog_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// Kernel program id, as `ip -d link show` and `bpftool prog` report it.
    pub fn prog_id(&self) -> u32 {
        self.prog.id()
    }

    /// Counters map fd (for bpftool-style tooling or a map-in-map).
    pub fn map_fd(&self) -> BorrowedFd<'_> {
        self.map.handle().as_fd()
    }

    /// Summed counters of every device the program has seen, ordered by ifindex.
    pub fn read_all(&self) -> Result<Vec<DeviceCounters>> {
        self.map.read_all()
    }

    /// Deletes one device's counters (call when its slot is torn down).
    pub fn forget(&self, ifindex: u32) -> Result<()> {
        self.map.forget(ifindex)
    }

    /// Pins the program at `dir/prog` and the map at `dir/counters`.
    ///
    /// Creates `dir` (and missing parents); mounts bpffs at `/sys/fs/bpf` first
    /// if `dir` is under it and it is not mounted. On failure nothing stays pinned.
    pub fn pin(&self, dir: &Path) -> Result<()> {
        pin::pin(&self.prog, self.map.handle(), dir)
    }

    /// Attaches to one device with `bpf_xdp_attach` (native mode on veth).
    ///
    /// The documented alternative to the engine's one-message group attach;
    /// costs one RTNL acquisition per device. Refuses (EBUSY) to replace a
    /// program already attached: `XDP_FLAGS_UPDATE_IF_NOEXIST`.
    pub fn attach_per_device(&self, ifindex: u32) -> Result<()> {
        self.require_xdp(BpfOp::Attach { ifindex })?;
        Xdp::new(self.prog_fd())
            .attach(ifindex_arg(ifindex), XdpFlags::UPDATE_IF_NOEXIST)
            .map_err(BpfError::libbpf(BpfOp::Attach { ifindex }))
    }

    /// Program id attached to `ifindex` in the default (native) mode, 0 if none.
    pub fn attached_id(&self, ifindex: u32) -> Result<u32> {
        self.require_xdp(BpfOp::Query { ifindex })?;
        Xdp::new(self.prog_fd())
            .query_id(ifindex_arg(ifindex), XdpFlags::NONE)
            .map_err(BpfError::libbpf(BpfOp::Query { ifindex }))
    }

    /// Detaches from one device with `bpf_xdp_detach`, only if our program is
    /// the one attached there (checked first; [`BpfError::NotOurs`] otherwise).
    pub fn detach(&self, ifindex: u32) -> Result<()> {
        let op = BpfOp::Detach { ifindex };
        let found = self.attached_id(ifindex)?;
        if found != self.prog_id() {
            return Err(BpfError::NotOurs {
                op,
                found,
                ours: self.prog_id(),
            });
        }
        Xdp::new(self.prog_fd())
            .detach(ifindex_arg(ifindex), XdpFlags::NONE)
            .map_err(BpfError::libbpf(op))
    }
}

impl Counters {
    /// The per-device XDP calls make sense only for the XDP program; the kernel
    /// would refuse a sched_cls fd too, but with a less telling EINVAL.
    fn require_xdp(&self, op: BpfOp) -> Result<()> {
        if self.hook == Hook::Xdp {
            return Ok(());
        }
        Err(BpfError::Mismatch {
            op,
            path: Path::new("<loaded>").to_path_buf(),
            what: "the loaded program is the tc one, not XDP",
        })
    }
}

/// libbpf takes `int ifindex`; kernel ifindexes are positive `int`s, so a
/// larger value can only be a caller bug and maps to an invalid index.
fn ifindex_arg(ifindex: u32) -> i32 {
    i32::try_from(ifindex).unwrap_or(-1)
}
