//! ns: the namespace syscalls the baselines make themselves: unshare, setns, bind mount.
//! Thread-local effects only (unshare/setns move the calling thread, not the process).
#![allow(unsafe_code)] // thin libc shims; each block has its SAFETY note

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

fn cvt(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Moves the calling thread into a new network namespace.
pub fn unshare_net() -> io::Result<()> {
    // SAFETY: unshare takes a flag word and touches no memory of ours.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) })
}

/// Moves the calling thread into the network namespace `fd` refers to.
pub fn enter(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns reads only the fd and the flag.
    cvt(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) })
}

/// An fd of the calling thread's network namespace.
pub fn current() -> io::Result<OwnedFd> {
    Ok(File::open("/proc/thread-self/ns/net")?.into())
}

/// Bind-mounts the calling thread's network namespace at `path` (created empty first),
/// as `ip netns add` and container runtimes do.
pub fn pin_current(path: &str) -> io::Result<()> {
    File::create(path)?;
    let src = CString::new("/proc/thread-self/ns/net").expect("no NUL");
    let dst = CString::new(path).map_err(|_| io::Error::other("NUL in path"))?;
    // SAFETY: both pointers are valid NUL-terminated strings during the call.
    cvt(unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    })
}

/// Lazily unmounts `path` and removes the file.
pub fn unpin(path: &str) -> io::Result<()> {
    let dst = CString::new(path).map_err(|_| io::Error::other("NUL in path"))?;
    // SAFETY: a valid NUL-terminated string during the call.
    cvt(unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) })?;
    std::fs::remove_file(path)
}

/// Sets SO_SNDBUFFORCE and SO_RCVBUFFORCE on socket `fd` (root only).
pub fn force_buffers(fd: std::os::fd::RawFd, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).map_err(|_| io::Error::other("buffer too large"))?;
    for opt in [libc::SO_SNDBUFFORCE, libc::SO_RCVBUFFORCE] {
        // SAFETY: the pointer and length describe one live c_int for the call.
        cvt(unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
    }
    Ok(())
}

/// Moves the calling thread into the network namespace of the raw fd `fd`, which the
/// caller keeps open for the duration of the call.
pub fn enter_raw(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: setns reads only the fd number and the flag; a closed fd is an error.
    cvt(unsafe { libc::setns(fd, libc::CLONE_NEWNET) })
}
