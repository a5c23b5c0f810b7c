//! kread: reads kernel memory once through a raw_tp BPF program (src/bpf/kread.bpf.c).
//! The program fires on this process's next syscall; no kprobes, no vmlinux.h.

use std::mem::{offset_of, MaybeUninit};

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::MapCore;

use super::error::CounterError;

#[allow(
    unsafe_code,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    missing_docs,
    unused
)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/kread.skel.rs"));
}

use skel::{types, KreadSkelBuilder};

/// Bytes returned per read: `KREAD_LEN` of src/bpf/kread.h, via the skeleton's layout.
pub(crate) const KREAD_LEN: usize =
    offset_of!(types::bss, out_ret) - offset_of!(types::bss, out_bytes);

/// Copies `KREAD_LEN` bytes of kernel memory at `addr`.
pub(crate) fn read_kernel(addr: u64) -> Result<[u8; KREAD_LEN], CounterError> {
    let mut storage = MaybeUninit::uninit();
    let mut open = KreadSkelBuilder::default()
        .open(&mut storage)
        .map_err(CounterError::Bpf)?;
    let ro = open
        .maps
        .rodata_data
        .as_deref_mut()
        .expect("kread.bpf.c has const volatile globals");
    ro.target_addr = addr;
    ro.target_tgid = std::process::id();
    let mut skel = open.load().map_err(CounterError::Bpf)?;
    skel.attach().map_err(CounterError::Bpf)?;
    // Any syscall of this process fires raw_tp/sys_enter; getppid has no side effects.
    // The program writes once (out_done), so racing syscalls of other threads are harmless.
    let _ = std::os::unix::process::parent_id();
    let raw = skel
        .maps
        .bss
        .lookup(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
        .map_err(CounterError::Bpf)?
        .unwrap_or_default();
    skel.links = Default::default();
    let field = |off: usize, len: usize| raw.get(off..off + len);
    let done = field(offset_of!(types::bss, out_done), 4)
        .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
        .unwrap_or(0);
    let ret = field(offset_of!(types::bss, out_ret), 8)
        .map(|b| i64::from_ne_bytes(b.try_into().expect("8 bytes")))
        .unwrap_or(0);
    if done == 0 || ret != 0 {
        return Err(CounterError::KernelRead { addr, ret });
    }
    let bytes = field(offset_of!(types::bss, out_bytes), KREAD_LEN).expect("bss holds out_bytes");
    Ok(bytes.try_into().expect("KREAD_LEN bytes"))
}
