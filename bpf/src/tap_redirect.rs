//! Tap redirect: `TapRedirect` owns the loaded XDP program that joins a microVM slot's tap and veth end.
//! Leaves attaching (IFLA_XDP in the slot namespace's requests) and the ifindex layout to the engine.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{OpenObject, ProgramHandle};

use crate::error::{BpfError, BpfOp, Result};
use crate::skel::TapRedirectSkelBuilder;

/// The bit that tells a microVM slot's veth end from its tap, inside the slot's
/// namespace: the veth end's ifindex is the tap's with this bit set. Taps are made
/// in fresh namespaces, so their ifindexes are small and never carry it; the engine
/// checks that before it plans the veth end.
pub const SLOT_END_BIT: u32 = 1 << 30;

/// The `tap_redirect` XDP program, loaded: a frame that arrives on the veth end
/// (ifindex `tap | SLOT_END_BIT`) leaves through the tap, and one the guest writes
/// into the tap leaves through the veth end. It holds no map and no per-slot state,
/// so one load serves every slot of every pool.
#[derive(Debug)]
pub struct TapRedirect {
    prog: ProgramHandle,
}

impl TapRedirect {
    /// Opens the skeleton, sets [`SLOT_END_BIT`] in its read-only data and loads it
    /// (BPF_PROG_LOAD; needs CAP_BPF or root).
    pub fn load() -> Result<Self> {
        let mut object = MaybeUninit::<OpenObject>::uninit();
        let mut open = TapRedirectSkelBuilder::default()
            .open(&mut object)
            .map_err(BpfError::libbpf(BpfOp::Open))?;
        match open.maps.rodata_data.as_deref_mut() {
            Some(rodata) => rodata.slot_end_bit = SLOT_END_BIT,
            // The object has a .rodata section (the C declares one); a skeleton without
            // it would be a build error, not a runtime one.
            None => {
                return Err(BpfError::Mismatch {
                    op: BpfOp::Open,
                    path: "<skeleton>".into(),
                    what: "the tap_redirect object has no .rodata",
                })
            }
        }
        let skel = open.load().map_err(BpfError::libbpf(BpfOp::Load))?;
        let prog = ProgramHandle::try_from(&skel.progs.tap_redirect)
            .map_err(BpfError::libbpf(BpfOp::Handle))?;
        Ok(Self { prog })
    }

    /// Program fd, for IFLA_XDP_FD. Must stay open until the request that attaches
    /// it has been processed (the kernel takes its own reference then).
    pub fn prog_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// Kernel program id, as `ip -d link show` and `bpftool prog` report it.
    pub fn prog_id(&self) -> u32 {
        self.prog.id()
    }
}
