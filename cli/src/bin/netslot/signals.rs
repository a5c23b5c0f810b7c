//! signals: waits for SIGINT/SIGTERM without a handler, so `up --hold` can tear down.
#![allow(unsafe_code)]

/// SIGINT and SIGTERM blocked in this thread (and in every thread spawned after it), to
/// be collected with [`Blocked::wait`].
pub(crate) struct Blocked {
    set: libc::sigset_t,
}

impl Blocked {
    /// Blocks SIGINT and SIGTERM. Call before spawning threads: they inherit the mask, so
    /// the signal stays pending for `wait` instead of killing the process.
    pub fn termination() -> Self {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it in place and
        // pthread_sigmask reads it; none keeps the pointer.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Self { set }
        }
    }

    /// Waits for one of the blocked signals and returns its number.
    pub fn wait(&self) -> i32 {
        let mut sig = 0;
        // SAFETY: the set was initialised in `termination`; sig is a live c_int.
        unsafe { libc::sigwait(&self.set, &mut sig) };
        sig
    }
}

/// Restores the default SIGPIPE action, so `netslot status | head` ends quietly instead of
/// panicking on a closed stdout (Rust starts with SIGPIPE ignored).
pub(crate) fn default_sigpipe() {
    // SAFETY: installs the default disposition; no handler code, no memory shared.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
