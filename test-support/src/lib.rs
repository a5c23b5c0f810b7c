//! test-support: what every netslot test binary (tests/, bench/tests, bpf/tests) needs
//! before it touches the kernel: the root check with CI's no-skip rule, and threads moved
//! into private namespaces. Knows nothing of netslot; the netslot-specific readers of
//! kernel state live in the kernel-test crate (tests/lib.rs).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

/// Whether `test` can touch the kernel (root). Unprivileged runs skip with a reason; with
/// CI=true a skip is a failure, so CI never passes by testing nothing.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let why = format!("{test}: skipped: needs root (namespaces, veth, mounts, BPF)");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}, and CI=true forbids skipping");
    }
    eprintln!("{why}");
    false
}

/// `unshare(2)` of `flags` in the calling thread only (threads of a process each hold
/// their own namespaces).
pub fn unshare(flags: libc::c_int) {
    // SAFETY: unshare takes no pointers; it changes only the calling thread's namespaces.
    let r = unsafe { libc::unshare(flags) };
    assert_eq!(
        r,
        0,
        "unshare({flags:#x}): {}",
        std::io::Error::last_os_error()
    );
}

/// Runs `f` on a fresh thread moved into new, private namespaces of `flags`. Everything
/// the test makes in them goes away with the thread, even when the test fails; a panic
/// of `f` is the caller's.
pub fn in_private<T: Send + 'static>(
    flags: libc::c_int,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        unshare(flags);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// [`in_private`] for a new network namespace only.
pub fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    in_private(libc::CLONE_NEWNET, f)
}

/// Runs `f` on a thread inside the network namespace `ns` (e.g. a slot's), so that
/// processes it spawns (iproute2) see that namespace.
pub fn in_netns<T: Send + 'static>(
    ns: BorrowedFd<'_>,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let fd = ns.try_clone_to_owned().expect("dup namespace fd");
    std::thread::spawn(move || {
        // SAFETY: setns reads the fd and flag only.
        let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
