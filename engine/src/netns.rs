//! netns: network-namespace system calls: create, open, enter, pin and unpin, and the
//! flock on the ownership record that sits beside the pins (see `gc`).
//! No netlink here; the only other file besides `sock`, `tap` and `ring` allowed `unsafe`.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use std::sync::OnceLock;

/// A namespace from the pool: the NETLINK_ROUTE socket opened inside it (which also keeps
/// it alive) and, when asked for, an nsfs fd.
#[derive(Debug)]
pub(crate) struct PooledNs {
    pub sock: netlink_sys::Socket,
    pub nsfd: OnceLock<OwnedFd>,
    /// The ifindex of the microVM tap the pool made inside (`tap`), if it made one.
    pub tap_ifindex: Option<u32>,
}

impl PooledNs {
    /// The namespace's fd, opened from the socket (SIOCGSKNETNS) on first use.
    pub fn nsfd(&self) -> std::io::Result<BorrowedFd<'_>> {
        if let Some(fd) = self.nsfd.get() {
            return Ok(fd.as_fd());
        }
        let fd = from_socket(self.sock.as_fd())?;
        Ok(self.nsfd.get_or_init(|| fd).as_fd())
    }
}

/// ioctl that returns an fd of a socket's network namespace (include/uapi/linux/sockios.h).
const SIOCGSKNETNS: libc::c_ulong = 0x894C;
/// nsfs ioctl `NS_GET_NSTYPE`, `_IO(0xb7, 3)` (include/uapi/linux/nsfs.h): the CLONE_NEW*
/// type of the namespace an nsfs fd refers to.
const NS_GET_NSTYPE: libc::c_ulong = (0xb7 << 8) | 3;
/// nsfs ioctl `NS_GET_ID`, `_IOR(0xb7, 13, __u64)` (include/uapi/linux/nsfs.h, Linux 6.18):
/// the namespace's 64-bit id. For a network namespace it is the netns cookie (what
/// SO_NETNS_COOKIE reports), allocated from a counter and never reused, unlike the nsfs
/// inode number, which a later namespace can get again.
const NS_GET_ID: libc::c_ulong = (2 << 30) | (8 << 16) | (0xb7 << 8) | 13;
/// nsfs ioctl `NS_GET_USERNS`, `_IO(0xb7, 1)`: an fd of the user namespace that owns the
/// namespace an nsfs fd refers to.
const NS_GET_USERNS: libc::c_ulong = (0xb7 << 8) | 1;
/// nsfs ioctl `NS_GET_PARENT`, `_IO(0xb7, 2)`: an fd of a user namespace's parent (EPERM
/// above the caller's own user namespace).
const NS_GET_PARENT: libc::c_ulong = (0xb7 << 8) | 2;
/// nsfs ioctl `NS_GET_OWNER_UID`, `_IO(0xb7, 4)`: the uid that created a user namespace,
/// as the caller's user namespace maps it.
const NS_GET_OWNER_UID: libc::c_ulong = (0xb7 << 8) | 4;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Moves the calling thread into a new network namespace (copy_net_ns). Only this thread
/// changes namespace: threads of a process each hold their own nsproxy.
pub(crate) fn unshare_new() -> io::Result<()> {
    // SAFETY: unshare takes a flag word and touches no memory of ours.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) }).map(drop)
}

/// Opens the calling thread's current network namespace.
pub(crate) fn open_current() -> io::Result<OwnedFd> {
    Ok(File::open("/proc/thread-self/ns/net")?.into())
}

/// Opens a namespace file such as /run/netns/NAME or /proc/PID/ns/net.
pub(crate) fn open_path(path: &Path) -> io::Result<OwnedFd> {
    Ok(File::open(path)?.into())
}

/// The id of the namespace `fd` refers to (`NS_GET_ID`; never reused while the machine
/// runs). Fails with ENOTTY on a file that is not a namespace.
pub fn ns_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut id: u64 = 0;
    // SAFETY: NS_GET_ID writes one u64 through the pointer, which points at `id`, alive
    // and writable for the call.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_ID as _, &mut id as *mut u64) })?;
    Ok(id)
}

/// The CLONE_NEW* type of the namespace `fd` refers to (`NS_GET_NSTYPE`). Fails with ENOTTY
/// on a file that is not a namespace; call it on nsfs files only (an ioctl number means
/// something else to a device driver).
pub(crate) fn ns_type(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: NS_GET_NSTYPE takes no argument and returns the type or -1.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) })
}

/// An fd of the user namespace that owns the namespace `fd` refers to (`NS_GET_USERNS`).
pub(crate) fn owning_userns(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: NS_GET_USERNS takes no argument; it returns a new fd or -1.
    let r = cvt(unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_USERNS as _) })?;
    // SAFETY: the ioctl just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// An fd of the parent of the user namespace `fd` refers to (`NS_GET_PARENT`).
pub(crate) fn parent_userns(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: NS_GET_PARENT takes no argument; it returns a new fd or -1.
    let r = cvt(unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_PARENT as _) })?;
    // SAFETY: the ioctl just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// The uid that created the user namespace `fd` refers to (`NS_GET_OWNER_UID`).
pub(crate) fn userns_owner(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t through the pointer, which points at
    // `uid`, alive and writable for the call.
    cvt(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            NS_GET_OWNER_UID as _,
            &mut uid as *mut libc::uid_t,
        )
    })?;
    Ok(uid)
}

/// Opens `path` only if it is a network namespace: never following a symlink in its last
/// component, never blocking (a FIFO or device opens non-blocking and is then refused),
/// and checking the nsfs type. For judging pins that someone else may have planted.
pub(crate) fn open_netns_nofollow(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let fd: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?
        .into();
    let kind = ns_type(fd.as_fd())?;
    if kind != libc::CLONE_NEWNET {
        return Err(not_a_netns());
    }
    Ok(fd)
}

/// `statfs.f_type` of nsfs, the file system of namespace files (include/uapi/linux/magic.h).
const NSFS_MAGIC: i64 = 0x6e73_6673;

fn not_a_netns() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not a network namespace")
}

/// Opens `path` (such as a runtime's CNI_NETNS: /run/netns/NAME, /proc/PID/ns/net, a
/// symlink to one) with the calling process's own permissions, and only if it is a
/// network namespace. Nothing else is opened blocking or probed: a FIFO or device opens
/// non-blocking, and the namespace ioctl is issued only on an nsfs file.
///
/// Errors: the open's own (ENOENT, EACCES, ...), or [`io::ErrorKind::InvalidInput`]
/// "not a network namespace" for any file that is not one.
pub fn open_network_namespace(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let fd: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?
        .into();
    // SAFETY: an all-zero statfs is a valid value of the plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes one statfs through the pointer, which points at `st`, alive
    // and writable for the call.
    cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between architectures.
    if st.f_type as i64 != NSFS_MAGIC {
        return Err(not_a_netns());
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and returns the type or -1.
    let kind = cvt(unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) })?;
    if kind != libc::CLONE_NEWNET {
        return Err(not_a_netns());
    }
    Ok(fd)
}

/// Moves the calling thread into the namespace `fd` refers to.
pub(crate) fn enter(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns reads only the fd and flag; a bad fd is reported as an error.
    cvt(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

/// Opens the namespace a socket was created in.
pub(crate) fn from_socket(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: SIOCGSKNETNS takes no argument pointer; it returns a new fd or -1.
    let fd = cvt(unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGSKNETNS as _) })?;
    // SAFETY: the ioctl just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs `f` on a short-lived thread inside namespace `ns`: sockets created by `f` belong
/// to that namespace for life, while the caller's thread stays where it is.
pub(crate) fn run_in<T: Send + 'static>(
    ns: &OwnedFd,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let ns = ns.try_clone()?;
    std::thread::spawn(move || {
        enter(std::os::fd::AsFd::as_fd(&ns))?;
        f()
    })
    .join()
    .map_err(|_| io::Error::other("namespace helper thread panicked"))?
}

/// Opens a slot socket inside each of `namespaces`, all on ONE short-lived helper thread
/// that setns-es into each in turn (a socket belongs to the namespace it was created in,
/// for life). Each result keeps its namespace fd; a namespace that cannot be entered
/// fails only its own entry.
pub(crate) fn sockets_in(namespaces: Vec<OwnedFd>) -> io::Result<Vec<io::Result<PooledNs>>> {
    std::thread::Builder::new()
        .name("netslot-attach".into())
        .spawn(move || {
            namespaces
                .into_iter()
                .map(|ns| {
                    enter(std::os::fd::AsFd::as_fd(&ns))?;
                    let sock = crate::sock::slot_socket()?;
                    Ok(PooledNs {
                        sock,
                        nsfd: std::sync::OnceLock::from(ns),
                        tap_ifindex: None,
                    })
                })
                .collect()
        })?
        .join()
        .map_err(|_| io::Error::other("namespace helper thread panicked"))
}

/// Makes `dir` a shared mount point, as `ip netns add` does, so that namespaces pinned
/// in it stay visible to mount namespaces made later (e.g. by `ip netns exec`).
pub(crate) fn prepare_pin_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let c = cpath(dir)?;
    let none = c"none";
    let empty = c"";
    let mut bound = false;
    loop {
        // SAFETY: all pointers are NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::mount(
                empty.as_ptr(),
                c.as_ptr(),
                none.as_ptr(),
                libc::MS_SHARED | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if r == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) || bound {
            return Err(err);
        }
        // Not a mount point yet: bind it onto itself, then retry (iproute2's netns_add).
        // SAFETY: as above.
        cvt(unsafe {
            libc::mount(
                c.as_ptr(),
                c.as_ptr(),
                none.as_ptr(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        })?;
        bound = true;
    }
}

/// Bind-mounts namespace `ns` at `path` (created empty, exclusively).
pub(crate) fn pin(ns: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let source = cpath(Path::new(&format!("/proc/self/fd/{}", ns.as_raw_fd())))?;
    let target = cpath(path)?;
    // SAFETY: NUL-terminated strings that outlive the call; null fstype/data for MS_BIND.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if r < 0 {
        let err = io::Error::last_os_error();
        let _ = std::fs::remove_file(path);
        return Err(err);
    }
    Ok(())
}

/// Unmounts a pinned namespace (lazily, as `ip netns del` does) and removes its file. A
/// symlink at `path` is never followed (UMOUNT_NOFOLLOW): it fails with EINVAL, and only
/// the link itself is removed.
pub(crate) fn unpin(path: &Path) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: NUL-terminated string that outlives the call.
    let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
    if r < 0 {
        let err = io::Error::last_os_error();
        // EINVAL: not a mount point (a stale file); remove it all the same.
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err);
        }
    }
    std::fs::remove_file(path)
}

/// Takes an exclusive flock on `file` without waiting: Ok(false) when another open file
/// description holds it. The kernel releases it when the last fd of ours closes, even on
/// SIGKILL, which is what lets `gc` tell a dead owner from a live one.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock takes an fd we keep open for the call and a flag word; no memory.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(err)
}
