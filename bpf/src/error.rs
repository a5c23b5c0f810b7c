//! Errors: one enum naming the operation and carrying the kernel's (OS) error.
//! Leaves retry and cleanup policy to the caller.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// The operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BpfOp {
    /// Opening the embedded BPF object (`bpf_object__open_skeleton`).
    Open,
    /// Loading it into the kernel (`bpf_object__load_skeleton`, BPF_PROG_LOAD / BPF_MAP_CREATE).
    Load,
    /// Duplicating a program or map fd out of the skeleton.
    Handle,
    /// Attaching XDP to one device (`bpf_xdp_attach`).
    Attach {
        /// Target device.
        ifindex: u32,
    },
    /// Querying the XDP program of one device (`bpf_xdp_query_id`).
    Query {
        /// Device queried.
        ifindex: u32,
    },
    /// Detaching XDP from one device (`bpf_xdp_detach`).
    Detach {
        /// Device.
        ifindex: u32,
    },
    /// Checking or mounting bpffs (`statfs(2)`, `mount(2)`).
    Bpffs,
    /// Creating the pin directory (`mkdir(2)`).
    PinDir,
    /// Pinning an object (`BPF_OBJ_PIN`).
    Pin,
    /// Opening a pinned object (`BPF_OBJ_GET`).
    OpenPinned,
    /// Removing pins and the pin directory (`unlink(2)`, `rmdir(2)`).
    Unpin,
    /// Reading the counters (`BPF_MAP_GET_NEXT_KEY`, `BPF_MAP_LOOKUP_ELEM`).
    Read,
    /// Deleting one device's counters (`BPF_MAP_DELETE_ELEM`).
    Forget {
        /// Device whose key was deleted.
        ifindex: u32,
    },
}

impl fmt::Display for BpfOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open => f.write_str("open BPF object"),
            Self::Load => f.write_str("load BPF object"),
            Self::Handle => f.write_str("take program/map handle"),
            Self::Attach { ifindex } => write!(f, "attach XDP to ifindex {ifindex}"),
            Self::Query { ifindex } => write!(f, "query XDP of ifindex {ifindex}"),
            Self::Detach { ifindex } => write!(f, "detach XDP from ifindex {ifindex}"),
            Self::Bpffs => f.write_str("check/mount bpffs"),
            Self::PinDir => f.write_str("create pin directory"),
            Self::Pin => f.write_str("pin"),
            Self::OpenPinned => f.write_str("open pinned object"),
            Self::Unpin => f.write_str("unpin"),
            Self::Read => f.write_str("read counters"),
            Self::Forget { ifindex } => write!(f, "forget ifindex {ifindex}"),
        }
    }
}

/// Error of every call in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BpfError {
    /// A libbpf call failed; the source carries the OS error (`errno`).
    #[error("{op}: {source}")]
    Libbpf {
        /// What was being done.
        op: BpfOp,
        /// libbpf-rs error wrapping the `io::Error` from errno.
        #[source]
        source: libbpf_rs::Error,
    },
    /// A file-system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: BpfOp,
        /// Path the call was about.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The pin directory is not on a bpffs and bpffs can only be mounted at `/sys/fs/bpf`.
    #[error("{op} {}: not on a bpffs (only /sys/fs/bpf is mounted on demand)", path.display())]
    NotBpffs {
        /// What was being done.
        op: BpfOp,
        /// The directory asked for.
        path: PathBuf,
    },
    /// A pinned object is not the counters map/program of this crate.
    #[error("{op} {}: not a netslot XDP counters object ({what})", path.display())]
    Mismatch {
        /// What was being done.
        op: BpfOp,
        /// The pin path.
        path: PathBuf,
        /// Which property differs.
        what: &'static str,
    },
    /// `detach` found another program (or none) on the device.
    #[error("{op}: device runs XDP program id {found}, not ours ({ours})")]
    NotOurs {
        /// What was being done.
        op: BpfOp,
        /// Program id attached to the device (0: none).
        found: u32,
        /// Our program id.
        ours: u32,
    },
}

impl BpfError {
    pub(crate) fn libbpf(op: BpfOp) -> impl FnOnce(libbpf_rs::Error) -> Self {
        move |source| Self::Libbpf { op, source }
    }

    pub(crate) fn io(op: BpfOp, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }

    /// Whether the kernel refused for want of privilege (EPERM or EACCES): the bpf()
    /// system call, or a path under a bpffs directory the caller may not enter.
    pub fn permission_denied(&self) -> bool {
        match self {
            Self::Libbpf { source, .. } => source.kind() == libbpf_rs::ErrorKind::PermissionDenied,
            Self::Io { source, .. } => source.kind() == io::ErrorKind::PermissionDenied,
            Self::NotBpffs { .. } | Self::Mismatch { .. } | Self::NotOurs { .. } => false,
        }
    }

    /// Whether the object was not there (ENOENT): nothing pinned at the path.
    pub fn not_found(&self) -> bool {
        match self {
            Self::Libbpf { source, .. } => source.kind() == libbpf_rs::ErrorKind::NotFound,
            Self::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            Self::NotBpffs { .. } | Self::Mismatch { .. } | Self::NotOurs { .. } => false,
        }
    }

    /// The operation that failed.
    pub fn op(&self) -> BpfOp {
        match self {
            Self::Libbpf { op, .. }
            | Self::Io { op, .. }
            | Self::NotBpffs { op, .. }
            | Self::Mismatch { op, .. }
            | Self::NotOurs { op, .. } => *op,
        }
    }
}

/// Result of this crate.
pub type Result<T, E = BpfError> = std::result::Result<T, E>;
