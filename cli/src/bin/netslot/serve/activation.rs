//! activation: the listening socket handed over by systemd (sd_listen_fds protocol:
//! LISTEN_PID, LISTEN_FDS, fds from 3), for packaging/systemd/netslot.socket.
#![allow(unsafe_code)]

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixListener;

/// First fd passed by the service manager (SD_LISTEN_FDS_START).
const LISTEN_FDS_START: i32 = 3;

/// The socket systemd passed to this process, if any. The variables are removed so
/// that children do not take the fd for theirs.
pub(crate) fn listener() -> Option<UnixListener> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: i32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    // SAFETY: by the sd_listen_fds protocol, fd 3 is an open listening socket that the
    // service manager handed to this process (LISTEN_PID is ours) and nothing else in
    // this process has taken it; ownership moves to the listener.
    Some(unsafe { UnixListener::from_raw_fd(LISTEN_FDS_START) })
}
