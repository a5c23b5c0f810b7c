//! locate: finds the address of `rtnl_mutex.owner`, the word the watchpoint guards.
//! System.map first; else decode `mov $rtnl_mutex,%rdi` at `rtnl_lock` via BPF.

use std::fs;

use super::error::CounterError;
use super::kallsyms::Kallsyms;
use super::kread::read_kernel;

/// Where the address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressSource {
    /// `/boot/System.map-$(uname -r)`.
    SystemMap,
    /// Decoded from the first instructions of `rtnl_lock`, confirmed by `rtnl_trylock`.
    Decoded,
}

/// The located lock word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtnlAddress {
    /// `&rtnl_mutex`.
    pub mutex: u64,
    /// Byte offset of `owner` in `struct mutex` (kernel BTF).
    pub owner_offset: u64,
    /// How `mutex` was found.
    pub source: AddressSource,
}

impl RtnlAddress {
    /// `&rtnl_mutex.owner`: the watched word.
    pub fn owner(&self) -> u64 {
        self.mutex + self.owner_offset
    }
}

/// Finds `&rtnl_mutex` and the `owner` offset.
pub(crate) fn locate(ksyms: &Kallsyms) -> Result<RtnlAddress, CounterError> {
    if !cfg!(target_arch = "x86_64") {
        return Err(CounterError::UnsupportedArch);
    }
    let owner_offset = owner_offset()?;
    if let Some(mutex) = from_system_map() {
        return Ok(RtnlAddress {
            mutex,
            owner_offset,
            source: AddressSource::SystemMap,
        });
    }
    let mutex = decode(ksyms)?;
    Ok(RtnlAddress {
        mutex,
        owner_offset,
        source: AddressSource::Decoded,
    })
}

/// `rtnl_mutex` from `/boot/System.map-<release>`, if that file exists and names it.
fn from_system_map() -> Option<u64> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let map = fs::read_to_string(format!("/boot/System.map-{}", release.trim())).ok()?;
    map.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let addr = it.next()?;
        let _ty = it.next()?;
        (it.next()? == "rtnl_mutex").then(|| u64::from_str_radix(addr, 16).ok())?
    })
}

/// Byte offset of `owner` in `struct mutex`, from /sys/kernel/btf/vmlinux (0 on 6.18,
/// but debug configs put other fields first in some versions).
fn owner_offset() -> Result<u64, CounterError> {
    use libbpf_rs::btf::types::{MemberAttr, Struct};
    let btf = libbpf_rs::btf::Btf::from_vmlinux().map_err(CounterError::Bpf)?;
    let mutex: Struct<'_> = btf
        .type_by_name("mutex")
        .ok_or(CounterError::NoOwnerField)?;
    let offset = mutex
        .iter()
        .find(|m| m.name.is_some_and(|n| n == "owner"))
        .and_then(|m| match m.attr {
            MemberAttr::Normal { offset } if offset % 8 == 0 => Some(u64::from(offset / 8)),
            _ => None,
        });
    offset.ok_or(CounterError::NoOwnerField)
}

/// Decodes the imm32 of `mov $rtnl_mutex,%rdi` in `rtnl_lock` and checks it three ways:
/// `rtnl_lock` continues with a call/jmp to `mutex_lock`, `rtnl_trylock` loads the same
/// address, and the address lies in the kernel's .data (`__start_init_stack` ..
/// `__init_begin` on x86_64, which holds every initialised static such as DEFINE_MUTEX).
fn decode(ksyms: &Kallsyms) -> Result<u64, CounterError> {
    let lock = ksyms.addr("rtnl_lock")?;
    let bytes = read_kernel(lock)?;
    let (addr, next) = find_mov_rdi(&bytes).ok_or(CounterError::NoMovRdi {
        func: "rtnl_lock",
        bytes: first16(&bytes),
    })?;
    let target = branch_target(&bytes, next, lock);
    let mutex_lock = ksyms.addr("mutex_lock")?;
    if target != Some(mutex_lock) {
        return Err(CounterError::Implausible {
            addr,
            check: "rtnl_lock does not branch to mutex_lock",
        });
    }
    let trylock = ksyms.addr("rtnl_trylock")?;
    let tbytes = read_kernel(trylock)?;
    let (taddr, _) = find_mov_rdi(&tbytes).ok_or(CounterError::NoMovRdi {
        func: "rtnl_trylock",
        bytes: first16(&tbytes),
    })?;
    if taddr != addr {
        return Err(CounterError::Implausible {
            addr,
            check: "rtnl_trylock loads another address",
        });
    }
    let lo = ksyms.addr("__start_init_stack")?;
    let hi = ksyms.addr("__init_begin")?;
    if !(lo..hi).contains(&addr) || addr % 8 != 0 {
        return Err(CounterError::Implausible {
            addr,
            check: "not an aligned address in kernel .data",
        });
    }
    Ok(addr)
}

fn first16(b: &[u8]) -> [u8; 16] {
    let mut out = [0; 16];
    let n = b.len().min(16);
    out[..n].copy_from_slice(&b[..n]);
    out
}

/// Finds `48 c7 c7 imm32` in the function prologue, after optional `endbr64`
/// (f3 0f 1e fa) and the 5-byte fentry NOP (0f 1f 44 00 00) or a `call`/`jmp` rel32
/// patched over it. Returns the sign-extended immediate and the offset after the mov.
pub(crate) fn find_mov_rdi(b: &[u8]) -> Option<(u64, usize)> {
    let mut i = 0;
    if b.get(..4) == Some(&[0xf3, 0x0f, 0x1e, 0xfa]) {
        i += 4;
    }
    match b.get(i..i + 5)? {
        [0x0f, 0x1f, 0x44, 0x00, 0x00] | [0xe8, ..] | [0xe9, ..] => i += 5,
        _ => {}
    }
    if b.get(i..i + 3)? != [0x48, 0xc7, 0xc7] {
        return None;
    }
    let imm = i32::from_le_bytes(b.get(i + 3..i + 7)?.try_into().ok()?);
    Some((i64::from(imm) as u64, i + 7))
}

/// Target of a `call rel32` (e8) or `jmp rel32` (e9) at `off` of a function at `base`.
pub(crate) fn branch_target(b: &[u8], off: usize, base: u64) -> Option<u64> {
    if !matches!(b.get(off)?, 0xe8 | 0xe9) {
        return None;
    }
    let rel = i32::from_le_bytes(b.get(off + 1..off + 5)?.try_into().ok()?);
    Some(
        base.wrapping_add((off + 5) as u64)
            .wrapping_add(i64::from(rel) as u64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_mov_after_endbr_and_nop() {
        // endbr64; nopl 0x0(%rax,%rax,1); mov $0xffffffff83123440,%rdi; jmp +0x10
        let b = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x0f, 0x1f, 0x44, 0x00, 0x00, 0x48, 0xc7, 0xc7, 0x40, 0x34,
            0x12, 0x83, 0xe9, 0x10, 0x00, 0x00, 0x00,
        ];
        let (addr, next) = find_mov_rdi(&b).unwrap();
        assert_eq!(addr, 0xffff_ffff_8312_3440);
        assert_eq!(next, 16);
        assert_eq!(branch_target(&b, next, 0x1000), Some(0x1000 + 21 + 0x10));
    }

    #[test]
    fn rejects_other_prologues() {
        assert_eq!(
            find_mov_rdi(&[0x55, 0x48, 0x89, 0xe5, 0, 0, 0, 0, 0, 0]),
            None
        );
    }
}
