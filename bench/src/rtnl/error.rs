//! error: why the RTNL counter could not start.
//! One variant per failed step, each carrying the OS error or the evidence; no strings.

use std::fmt;
use std::io;

/// The RTNL counter is unavailable; `Display` gives a one-line reason for
/// "counter unavailable: <why>".
#[derive(Debug)]
#[non_exhaustive]
pub enum CounterError {
    /// Reading a kernel file (`/proc/kallsyms`, `/sys/devices/system/cpu/online`, ...) failed.
    Read {
        /// The file.
        path: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A symbol the method needs is missing from `/proc/kallsyms`.
    MissingSymbol(&'static str),
    /// `/proc/kallsyms` shows zero addresses (not root, or `kptr_restrict` hides them).
    AddressesHidden,
    /// Loading or attaching the BPF reader failed (needs root and raw_tp programs).
    Bpf(libbpf_rs::Error),
    /// The BPF reader ran but did not fire, or `bpf_probe_read_kernel` failed (errno).
    KernelRead {
        /// The address read.
        addr: u64,
        /// 0 when the program never ran, else the negative errno it returned.
        ret: i64,
    },
    /// No `mov $imm32,%rdi` (48 c7 c7) at the start of the function.
    NoMovRdi {
        /// The function decoded (`rtnl_lock` or `rtnl_trylock`).
        func: &'static str,
        /// The first bytes read.
        bytes: [u8; 16],
    },
    /// The decoded address failed a cross-check.
    Implausible {
        /// The decoded address.
        addr: u64,
        /// Which check failed.
        check: &'static str,
    },
    /// `struct mutex` or its `owner` member is missing from the kernel BTF.
    NoOwnerField,
    /// The CPU is not x86_64: the instruction decoding and breakpoints assume it.
    UnsupportedArch,
    /// `perf_event_open` for the write watchpoint failed on a CPU.
    PerfOpen {
        /// The CPU.
        cpu: u32,
        /// The OS error (EACCES/EPERM: privileges; ENOSPC: no free debug register).
        source: io::Error,
    },
    /// `mmap` of a perf ring failed on a CPU.
    PerfMmap {
        /// The CPU.
        cpu: u32,
        /// The OS error.
        source: io::Error,
    },
    /// The drain thread could not be started or died before reporting.
    Thread(io::Error),
}

impl fmt::Display for CounterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => write!(f, "cannot read {path}: {source}"),
            Self::MissingSymbol(s) => write!(f, "symbol {s} not in /proc/kallsyms"),
            Self::AddressesHidden => {
                write!(
                    f,
                    "/proc/kallsyms hides addresses (need root, kptr_restrict < 2)"
                )
            }
            Self::Bpf(e) => write!(f, "BPF kernel reader failed to load/attach: {e}"),
            Self::KernelRead { addr, ret: 0 } => {
                write!(f, "BPF kernel reader never ran for {addr:#x}")
            }
            Self::KernelRead { addr, ret } => {
                write!(f, "bpf_probe_read_kernel({addr:#x}) returned {ret}")
            }
            Self::NoMovRdi { func, bytes } => {
                write!(
                    f,
                    "{func} does not start with mov $imm32,%rdi: {bytes:02x?}"
                )
            }
            Self::Implausible { addr, check } => {
                write!(
                    f,
                    "decoded rtnl_mutex address {addr:#x} failed check: {check}"
                )
            }
            Self::NoOwnerField => write!(f, "struct mutex.owner not found in kernel BTF"),
            Self::UnsupportedArch => write!(f, "only x86_64 is supported"),
            Self::PerfOpen { cpu, source } => {
                write!(f, "perf_event_open(breakpoint) on cpu {cpu}: {source}")
            }
            Self::PerfMmap { cpu, source } => write!(f, "mmap of perf ring on cpu {cpu}: {source}"),
            Self::Thread(e) => write!(f, "drain thread: {e}"),
        }
    }
}

impl CounterError {
    /// Whether the kernel itself refused the watchpoint (EPERM or EACCES from
    /// perf_event_open) rather than something this process lacks or got wrong. Seen as
    /// root with every capability on VMs whose guest kernel cannot take hardware
    /// breakpoints on kernel addresses: user-space breakpoints open there, kernel ones
    /// fail with EPERM. No RTNL counting is possible on such a machine.
    pub fn refused_by_kernel(&self) -> bool {
        let Self::PerfOpen { source, .. } = self else {
            return false;
        };
        // /proc/self belongs to the process's effective uid.
        let root = std::fs::metadata("/proc/self")
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
        root && matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES))
    }
}

impl std::error::Error for CounterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. }
            | Self::PerfOpen { source, .. }
            | Self::PerfMmap { source, .. }
            | Self::Thread(source) => Some(source),
            Self::Bpf(e) => Some(e),
            _ => None,
        }
    }
}
