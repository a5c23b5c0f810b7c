//! bpffs: checks that a pin directory lives on bpffs and mounts bpffs at /sys/fs/bpf if absent.
//! The only module with unsafe code (`statfs(2)`, `mount(2)` through libc); never unmounts.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{BpfError, BpfOp, Result};

/// The conventional bpffs mount point, the only one mounted on demand.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// `BPF_FS_MAGIC` from include/uapi/linux/magic.h (not exported by the libc crate).
const BPF_FS_MAGIC: u32 = 0xcafe_4a11;

/// Makes sure `dir` (existing or not) will be on a bpffs.
///
/// The nearest existing ancestor must be on bpffs; if it is not, and `dir` is
/// under [`BPFFS_ROOT`] which is not a bpffs yet, bpffs is mounted there (the
/// mount is in the calling thread's mount namespace and is left in place, as
/// systemd would have done).
pub(crate) fn ensure(dir: &Path) -> Result<()> {
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or_else(|| Path::new("/"));
    if is_bpffs(existing)? {
        return Ok(());
    }
    let root = Path::new(BPFFS_ROOT);
    if dir.starts_with(root) && !is_bpffs(root)? {
        mount_bpffs(root)?;
        if is_bpffs(existing)? {
            return Ok(());
        }
    }
    Err(BpfError::NotBpffs {
        op: BpfOp::Bpffs,
        path: dir.to_path_buf(),
    })
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|e| {
        BpfError::io(BpfOp::Bpffs, path)(io::Error::new(io::ErrorKind::InvalidInput, e))
    })
}

/// `statfs(2)` and compare `f_type` with `BPF_FS_MAGIC`.
pub(crate) fn is_bpffs(path: &Path) -> Result<bool> {
    let c = c_path(path)?;
    let mut buf = MaybeUninit::<libc::statfs>::zeroed();
    #[allow(unsafe_code)]
    // SAFETY: `c` is a NUL-terminated string that outlives the call; `buf` is a
    // writable `struct statfs` the kernel fills in completely on success and we
    // only read it on success.
    let rc = unsafe { libc::statfs(c.as_ptr(), buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(BpfError::io(BpfOp::Bpffs, path)(io::Error::last_os_error()));
    }
    #[allow(unsafe_code)]
    // SAFETY: statfs returned 0, so the kernel initialised the whole struct.
    let st = unsafe { buf.assume_init() };
    // f_type is a signed word; the magic is a 32-bit value.
    Ok(st.f_type as u32 == BPF_FS_MAGIC)
}

/// `mount("bpf", root, "bpf", 0, "mode=0700")`, as systemd mounts it.
fn mount_bpffs(root: &Path) -> Result<()> {
    let target = c_path(root)?;
    let source = c"bpf";
    let data = c"mode=0700";
    #[allow(unsafe_code)]
    // SAFETY: every pointer is a NUL-terminated string alive for the duration of
    // the call; `data` is a plain option string as bpffs expects.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(BpfError::io(BpfOp::Bpffs, root)(io::Error::last_os_error()));
    }
    Ok(())
}
