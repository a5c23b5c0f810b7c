//! perf: per-CPU hardware write-watchpoints (perf_event_open(2)) and their mmap rings.
//! Decodes the records this module asks for; knows nothing about mutexes.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::CounterError;

const PERF_TYPE_BREAKPOINT: u32 = 5;
const HW_BREAKPOINT_W: u32 = 2;
const HW_BREAKPOINT_LEN_8: u64 = 8;
const PERF_ATTR_SIZE_VER5: u32 = 112;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

const PERF_SAMPLE_IP: u64 = 1 << 0;
const PERF_SAMPLE_TID: u64 = 1 << 1;
const PERF_SAMPLE_TIME: u64 = 1 << 2;

// perf_event_attr flag bits (include/uapi/linux/perf_event.h).
const ATTR_COMM: u64 = 1 << 9;
const ATTR_TASK: u64 = 1 << 13;
const ATTR_COMM_EXEC: u64 = 1 << 24;
const ATTR_USE_CLOCKID: u64 = 1 << 25;

const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_COMM: u32 = 3;
const PERF_RECORD_EXIT: u32 = 4;
const PERF_RECORD_THROTTLE: u32 = 5;
const PERF_RECORD_FORK: u32 = 7;
const PERF_RECORD_SAMPLE: u32 = 9;

// struct perf_event_mmap_page offsets of data_head, data_tail, data_offset, data_size.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;
const DATA_OFFSET: usize = 1040;
const DATA_SIZE: usize = 1048;

/// Data pages per CPU ring (power of two): 1 MiB holds ~30,000 samples between drains.
const RING_PAGES: usize = 256;

/// `struct perf_event_attr` up to PERF_ATTR_SIZE_VER5 (112 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    bp_addr: u64,
    bp_len: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
}
const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == PERF_ATTR_SIZE_VER5 as usize);

/// One decoded ring record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// A write hit the watched word: `ip` is the instruction after the write.
    Sample {
        ip: u64,
        pid: u32,
        tid: u32,
        time: u64,
    },
    /// The kernel dropped `count` records (ring full).
    Lost { count: u64 },
    /// The kernel throttled the event (too many samples per tick): samples are missing.
    Throttle,
    /// A task got a new name (exec or prctl).
    Comm { pid: u32, comm: String },
    /// A task was created: `pid` is its process, `ppid` the parent's process.
    Fork { pid: u32, ppid: u32 },
    /// A task exited.
    Exit,
}

/// A write-watchpoint on one CPU with its ring.
pub(crate) struct Watchpoint {
    /// Keeps the event alive; closed (after the unmap in `drop`) with the struct.
    _fd: OwnedFd,
    base: NonNull<u8>,
    map_len: usize,
    data_off: usize,
    data_size: usize,
}

impl Watchpoint {
    /// Watches 8-byte writes to `addr` on `cpu`, by any task, sampling every write
    /// with IP, TID and CLOCK_MONOTONIC time; also emits comm/fork/exit side-band records.
    pub(crate) fn open(cpu: u32, addr: u64) -> Result<Self, CounterError> {
        let attr = PerfEventAttr {
            type_: PERF_TYPE_BREAKPOINT,
            size: PERF_ATTR_SIZE_VER5,
            sample_period: 1,
            sample_type: PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_TIME,
            flags: ATTR_COMM | ATTR_TASK | ATTR_COMM_EXEC | ATTR_USE_CLOCKID,
            bp_type: HW_BREAKPOINT_W,
            bp_addr: addr,
            bp_len: HW_BREAKPOINT_LEN_8,
            clockid: libc::CLOCK_MONOTONIC,
            ..Default::default()
        };
        // SAFETY: perf_event_open(attr, pid=-1, cpu, group_fd=-1, FD_CLOEXEC) reads `attr`
        // (size fields say 112 bytes, which it is) and returns a new fd or -1.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                -1 as libc::pid_t,
                cpu as libc::c_int,
                -1 as libc::c_int,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if ret < 0 {
            return Err(CounterError::PerfOpen {
                cpu,
                source: io::Error::last_os_error(),
            });
        }
        let raw = libc::c_int::try_from(ret).expect("fds fit in c_int");
        // SAFETY: `raw` is a fresh fd returned above and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let page = page_size();
        let map_len = page * (1 + RING_PAGES);
        // SAFETY: mapping a perf fd with 1 + 2^n pages, shared, read-write (so the
        // kernel honours data_tail); the result is checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(CounterError::PerfMmap {
                cpu,
                source: io::Error::last_os_error(),
            });
        }
        let base = NonNull::new(ptr.cast::<u8>()).expect("mmap never returns NULL on success");
        let mut wp = Self {
            _fd: fd,
            base,
            map_len,
            data_off: page,
            data_size: page * RING_PAGES,
        };
        let (off, size) = (wp.header_u64(DATA_OFFSET), wp.header_u64(DATA_SIZE));
        if off != 0 && size != 0 {
            wp.data_off = usize::try_from(off).expect("offset fits");
            wp.data_size = usize::try_from(size).expect("size fits");
        }
        Ok(wp)
    }

    /// The control page field at `off` as an atomic (data_head/data_tail are shared with the kernel).
    fn header_atomic(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off + 8 <= page_size() && off % 8 == 0);
        // SAFETY: `off` is an 8-aligned offset inside the first (control) page, which
        // stays mapped while `self` lives; the kernel updates it concurrently, hence atomic.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(off).cast::<u64>()) }
    }

    fn header_u64(&self, off: usize) -> u64 {
        self.header_atomic(off).load(Ordering::Acquire)
    }

    /// Copies `buf.len()` bytes starting at ring position `pos` (wrapping).
    fn copy_out(&self, pos: u64, buf: &mut [u8]) {
        let size = self.data_size;
        let start = usize::try_from(pos % size as u64).expect("fits");
        let first = buf.len().min(size - start);
        // SAFETY: the data area [data_off, data_off + data_size) is mapped; `start + first`
        // and `buf.len() - first` stay within it, and the kernel does not write between
        // data_tail and data_head, which is the range being read.
        unsafe {
            let data = self.base.as_ptr().add(self.data_off);
            std::ptr::copy_nonoverlapping(data.add(start), buf.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(data, buf.as_mut_ptr().add(first), buf.len() - first);
        }
    }

    /// Decodes every record in the ring, hands each to `out`, and frees the space.
    pub(crate) fn drain(&mut self, out: &mut impl FnMut(Record)) {
        let head = self.header_u64(DATA_HEAD);
        let mut tail = self.header_atomic(DATA_TAIL).load(Ordering::Relaxed);
        let mut buf = Vec::with_capacity(64);
        while tail + 8 <= head {
            let mut hdr = [0u8; 8];
            self.copy_out(tail, &mut hdr);
            let ty = u32::from_ne_bytes(hdr[0..4].try_into().expect("4"));
            let size = u16::from_ne_bytes(hdr[6..8].try_into().expect("2")) as usize;
            if size < 8 || tail + size as u64 > head {
                break;
            }
            buf.resize(size - 8, 0);
            self.copy_out(tail + 8, &mut buf);
            if let Some(r) = decode(ty, &buf) {
                out(r);
            }
            tail += size as u64;
        }
        self.header_atomic(DATA_TAIL).store(tail, Ordering::Release);
    }
}

impl Drop for Watchpoint {
    fn drop(&mut self) {
        // SAFETY: `base`/`map_len` are exactly the mapping made in `open`, unmapped once.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.map_len);
        }
    }
}

/// CLOCK_MONOTONIC in ns, the clock the samples carry (`use_clockid`).
/// CLOCK_MONOTONIC in ns: the clock of the watchpoint samples (`Acquisition::released_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid local `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096)
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Decodes a record body (after the 8-byte header) for the sample_type set in `open`.
pub(crate) fn decode(ty: u32, b: &[u8]) -> Option<Record> {
    Some(match ty {
        // { u64 ip; u32 pid, tid; u64 time; }
        PERF_RECORD_SAMPLE => Record::Sample {
            ip: u64_at(b, 0)?,
            pid: u32_at(b, 8)?,
            tid: u32_at(b, 12)?,
            time: u64_at(b, 16)?,
        },
        // { u64 id; u64 lost; }
        PERF_RECORD_LOST => Record::Lost {
            count: u64_at(b, 8)?,
        },
        PERF_RECORD_THROTTLE => Record::Throttle,
        // { u32 pid, tid; char comm[]; }
        PERF_RECORD_COMM => {
            let name = b.get(8..)?;
            let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
            Record::Comm {
                pid: u32_at(b, 0)?,
                comm: String::from_utf8_lossy(&name[..end]).into_owned(),
            }
        }
        // { u32 pid, ppid; u32 tid, ptid; u64 time; }
        PERF_RECORD_FORK => Record::Fork {
            pid: u32_at(b, 0)?,
            ppid: u32_at(b, 4)?,
        },
        PERF_RECORD_EXIT => Record::Exit,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_sample_and_comm() {
        let mut s = Vec::new();
        s.extend_from_slice(&0xffff_ffff_821f_cc45u64.to_ne_bytes());
        s.extend_from_slice(&7u32.to_ne_bytes());
        s.extend_from_slice(&8u32.to_ne_bytes());
        s.extend_from_slice(&99u64.to_ne_bytes());
        assert_eq!(
            decode(PERF_RECORD_SAMPLE, &s),
            Some(Record::Sample {
                ip: 0xffff_ffff_821f_cc45,
                pid: 7,
                tid: 8,
                time: 99
            })
        );
        let mut c = Vec::new();
        c.extend_from_slice(&5u32.to_ne_bytes());
        c.extend_from_slice(&5u32.to_ne_bytes());
        c.extend_from_slice(b"ip\0\0\0\0\0\0");
        assert_eq!(
            decode(PERF_RECORD_COMM, &c),
            Some(Record::Comm {
                pid: 5,
                comm: "ip".into()
            })
        );
        assert_eq!(decode(PERF_RECORD_SAMPLE, &s[..10]), None);
    }
}
