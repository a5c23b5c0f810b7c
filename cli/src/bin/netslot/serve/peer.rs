//! peer: who is on the other end of a connection (SO_PEERCRED) and whether they may use
//! the daemon: uid 0, or the configured group as primary or supplementary group; and
//! shutting the listening socket so accept returns.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// The credentials the kernel recorded for the peer at connect time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// Reads SO_PEERCRED: set by the kernel at connect(2), so a client cannot forge it.
pub(crate) fn credentials(stream: &UnixStream) -> io::Result<Peer> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are live locals of the sizes passed; the kernel writes at most
    // len bytes into cred and updates len.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Peer {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Whether `peer` may be served: uid 0, or `allow_gid` is its primary group or one of
/// its supplementary groups (read from /proc/<pid>/status; a peer that is gone is refused).
pub(crate) fn allowed(peer: Peer, allow_gid: Option<u32>) -> bool {
    if peer.uid == 0 {
        return true;
    }
    let Some(gid) = allow_gid else {
        return false;
    };
    if peer.gid == gid {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{}/status", peer.pid))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Groups:"))
                .map(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
        })
        .unwrap_or(false)
}

/// Wakes a thread blocked in accept(2) on `listener` for good: shutdown(2) on a listening
/// socket makes accept fail (EINVAL) without needing the socket's path, which may be
/// gone or belong to systemd.
pub(crate) fn stop_accepting(listener: &std::os::unix::net::UnixListener) -> io::Result<()> {
    // SAFETY: shutdown takes an fd and a flag; the listener outlives the call.
    let r = unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
