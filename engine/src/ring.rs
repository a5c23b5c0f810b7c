//! ring: submits many sendmsg/recvmsg pairs to the kernel in one io_uring_enter.
//! Owns the io_uring instance and the msghdrs of in-flight operations; knows no netlink.
//! It also closes fds and writes small files in bulk, for the same reason: one system
//! call per slot would dominate the engine's count.
//!
//! Netlink sendmsg to the kernel runs the whole batch inline (netlink_unicast_kernel), so
//! every reply is queued by the time the SENDMSG completes. Each send is linked
//! (IOSQE_IO_LINK) to a RECVMSG with MSG_DONTWAIT: it reads the first reply, or reports
//! EAGAIN at once instead of waiting, which tells "no reply" from "reply not yet here".
//! MSG_TRUNC makes netlink_recvmsg return the datagram's full length, so a cut reply is
//! seen as one.
//!
//! The promise every `unsafe` push here rests on: memory an operation points at is not
//! freed before its completion is reaped. Waiting is retried when io_uring_enter is
//! interrupted (EINTR: a signal; io-uring's `submit_and_wait` does not retry it), finds
//! the completion queue full (EBUSY) or meets a passing shortage (EAGAIN); what completed
//! meanwhile is reaped first. Any other failure of io_uring_enter, repeated, marks the
//! ring broken: it is never entered again (so operations still queued are never
//! submitted), and the memory of operations that may still be in flight is leaked on
//! purpose instead of freed (here, and by the engine for the buffers it lent).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};

use io_uring::{opcode, squeue, types, IoUring};

/// One socket's exchange: an optional send, then one receive.
#[derive(Debug)]
pub(crate) struct Exchange<'a> {
    pub fd: RawFd,
    /// Bytes to send first (None: only receive).
    pub send: Option<&'a [u8]>,
    /// Where the reply goes.
    pub recv: &'a mut [u8],
    /// CQE result of the send: bytes sent or -errno.
    pub sent: i32,
    /// CQE result of the receive: full datagram length or -errno.
    pub received: i32,
}

impl<'a> Exchange<'a> {
    pub fn new(fd: RawFd, send: Option<&'a [u8]>, recv: &'a mut [u8]) -> Self {
        Self {
            fd,
            send,
            recv,
            sent: 0,
            received: 0,
        }
    }

    /// The received reply, or why there is none: Err(errno) for a failed or empty
    /// receive, Err(EMSGSIZE) for a reply longer than the buffer.
    pub fn reply(&self) -> Result<&[u8], i32> {
        if self.received < 0 {
            return Err(-self.received);
        }
        let len = self.received as usize;
        if len > self.recv.len() {
            return Err(libc::EMSGSIZE);
        }
        Ok(&self.recv[..len])
    }
}

/// Kernel-side buffers of one operation; boxed so their addresses stay put while the
/// kernel may read them.
struct MsgBufs {
    iov: libc::iovec,
    hdr: libc::msghdr,
}

/// The engine's io_uring instance.
pub(crate) struct Ring {
    ring: IoUring,
    /// io_uring_enter calls made.
    pub enters: u64,
    /// SENDMSG operations submitted.
    pub sends: u64,
    /// Size of the registered (sparse) file table; 0 until `write_files` first needs it.
    file_slots: u32,
    /// Waits that io_uring_enter cut short (EINTR, EBUSY, EAGAIN) and that were resumed.
    pub interrupted: u64,
    /// Why the ring may not be entered again, once it failed for good.
    broken: Option<String>,
}

/// io_uring_enter failures other than an interruption tolerated in one wait before the
/// ring is given up as broken.
const MAX_ENTER_FAILURES: u32 = 3;

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &self.ring.as_raw_fd())
            .field("enters", &self.enters)
            .finish()
    }
}

/// user_data layout: exchange index * 2 + (0 send, 1 receive).
fn tag(index: usize, recv: bool) -> u64 {
    (index as u64) << 1 | u64::from(recv)
}

impl Ring {
    /// A ring with room for `pairs` send/receive pairs per submission.
    pub fn new(pairs: usize) -> io::Result<Self> {
        let entries = (pairs * 2).next_power_of_two().clamp(8, 4096) as u32;
        let ring = IoUring::builder()
            .setup_submit_all()
            .setup_coop_taskrun()
            .build(entries)?;
        Ok(Self {
            ring,
            enters: 0,
            sends: 0,
            file_slots: 0,
            interrupted: 0,
            broken: None,
        })
    }

    /// Whether the ring failed for good (see the module doc); every later call fails.
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    fn check_usable(&self) -> io::Result<()> {
        match &self.broken {
            Some(why) => Err(io::Error::other(format!(
                "io_uring unusable since an earlier failure: {why}"
            ))),
            None => Ok(()),
        }
    }

    /// Submits what was pushed and waits until `expected` completions are reaped, handing
    /// each to `on_cqe`. Retries interrupted waits; on a lasting failure marks the ring
    /// broken and returns the error, with operations possibly still in flight: the caller
    /// must then leak, not free, what they point at.
    fn reap(
        &mut self,
        expected: usize,
        mut on_cqe: impl FnMut(&io_uring::cqueue::Entry),
    ) -> io::Result<()> {
        self.check_usable()?;
        let mut reaped = 0usize;
        let mut failures = 0;
        while reaped < expected {
            match self.ring.submit_and_wait(expected - reaped) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
                    ) =>
                {
                    self.interrupted += 1;
                }
                Err(e) => {
                    failures += 1;
                    if failures >= MAX_ENTER_FAILURES {
                        self.broken = Some(e.to_string());
                        return Err(e);
                    }
                }
            }
            self.enters += 1;
            for cqe in self.ring.completion() {
                reaped += 1;
                on_cqe(&cqe);
            }
        }
        Ok(())
    }

    /// Runs every exchange; results land in the exchanges. As many pairs as fit the
    /// submission queue go to the kernel in each io_uring_enter.
    pub fn run(&mut self, exchanges: &mut [Exchange<'_>]) -> io::Result<()> {
        let capacity = self.ring.params().sq_entries() as usize / 2;
        let mut start = 0;
        while start < exchanges.len() {
            let end = (start + capacity).min(exchanges.len());
            self.run_window(&mut exchanges[start..end], start)?;
            start = end;
        }
        Ok(())
    }

    fn run_window(&mut self, window: &mut [Exchange<'_>], base: usize) -> io::Result<()> {
        let mut bufs: Vec<Box<[MsgBufs; 2]>> = Vec::with_capacity(window.len());
        let mut expected = 0usize;
        {
            let mut sq = self.ring.submission();
            for (i, ex) in window.iter_mut().enumerate() {
                let send = ex.send.unwrap_or(&[]);
                let mut b = Box::new([
                    msg_bufs(send.as_ptr() as *mut u8, send.len()),
                    msg_bufs(ex.recv.as_mut_ptr(), ex.recv.len()),
                ]);
                for m in b.iter_mut() {
                    m.hdr.msg_iov = &mut m.iov;
                    m.hdr.msg_iovlen = 1;
                }
                let index = base + i;
                if ex.send.is_some() {
                    let sqe = opcode::SendMsg::new(types::Fd(ex.fd), &b[0].hdr)
                        .build()
                        .flags(squeue::Flags::IO_LINK)
                        .user_data(tag(index, false));
                    // SAFETY: the msghdr, iovec and send bytes live until this function
                    // has reaped every completion of the window (bufs and the borrowed
                    // exchange outlive the wait below).
                    unsafe { sq.push(&sqe) }
                        .map_err(|_| io::Error::other("submission queue full"))?;
                    expected += 1;
                    self.sends += 1;
                }
                let sqe = opcode::RecvMsg::new(types::Fd(ex.fd), &mut b[1].hdr)
                    .flags((libc::MSG_DONTWAIT | libc::MSG_TRUNC) as u32)
                    .build()
                    .user_data(tag(index, true));
                // SAFETY: as above; the receive buffer is the exchange's own slice.
                unsafe { sq.push(&sqe) }.map_err(|_| io::Error::other("submission queue full"))?;
                expected += 1;
                bufs.push(b);
            }
        }
        let reaped = self.reap(expected, |cqe| {
            let index = (cqe.user_data() >> 1) as usize - base;
            let ex = &mut window[index];
            if cqe.user_data() & 1 == 1 {
                ex.received = cqe.result();
            } else {
                ex.sent = cqe.result();
            }
        });
        if let Err(e) = reaped {
            // Operations may still point at these msghdrs: leak them (module doc).
            std::mem::forget(bufs);
            return Err(e);
        }
        drop(bufs);
        Ok(())
    }
}

impl Ring {
    /// Closes many fds with IORING_OP_CLOSE, as many per io_uring_enter as the queue holds
    /// (a close(2) each would be one system call per slot at teardown). Returns the first
    /// error; every fd is closed or reported either way.
    pub fn close_all(&mut self, fds: Vec<OwnedFd>) -> io::Result<()> {
        self.check_usable()?;
        let capacity = self.ring.params().sq_entries() as usize;
        let mut first_err = None;
        let raw: Vec<RawFd> = fds.into_iter().map(IntoRawFd::into_raw_fd).collect();
        for window in raw.chunks(capacity) {
            {
                let mut sq = self.ring.submission();
                for &fd in window {
                    let sqe = opcode::Close::new(types::Fd(fd)).build().user_data(0);
                    // SAFETY: a close reads no memory of ours; the fd was released from
                    // its owner above, so nothing else will close or use it.
                    unsafe { sq.push(&sqe) }
                        .map_err(|_| io::Error::other("submission queue full"))?;
                }
            }
            self.reap(window.len(), |cqe| {
                if cqe.result() < 0 && first_err.is_none() {
                    first_err = Some(io::Error::from_raw_os_error(-cqe.result()));
                }
            })?;
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Ring {
    /// Writes `data` to each of `paths` as three linked operations per file: OPENAT into a
    /// registered file slot, WRITE through that slot, CLOSE of the slot (a plain
    /// open/write/close each would be three system calls per file). Returns, per path,
    /// the bytes written or -errno of the open or the write.
    ///
    /// The open and the write run in this thread's io-wq workers, which share the
    /// submitting thread's namespaces: a caller that means another namespace's /proc/sys
    /// must submit from a thread that entered it before its first submission.
    ///
    /// The paths are taken, not borrowed, and `data` is static: if the ring breaks while
    /// io-wq workers may still be opening them, they are leaked, never freed under them.
    pub fn write_files(
        &mut self,
        paths: Vec<CString>,
        data: &'static [u8],
    ) -> io::Result<Vec<i32>> {
        self.check_usable()?;
        if self.file_slots == 0 {
            let per_window = self.ring.params().sq_entries() / 3;
            self.ring.submitter().register_files_sparse(per_window)?;
            self.file_slots = per_window;
        }
        let per_window = self.file_slots as usize;
        let mut results = vec![0i32; paths.len()];
        let mut failed = None;
        for (w, window) in paths.chunks(per_window).enumerate() {
            let base = w * per_window;
            let mut expected = 0;
            {
                let mut sq = self.ring.submission();
                for (i, path) in window.iter().enumerate() {
                    let slot = i as u32;
                    let dest = types::DestinationSlot::try_from_slot_target(slot)
                        .map_err(|_| io::Error::other("file slot out of range"))?;
                    let chain = [
                        opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
                            // No O_CLOEXEC: a direct descriptor is never in the fd
                            // table, and io_openat_prep refuses the flag with one.
                            .flags(libc::O_WRONLY)
                            .file_index(Some(dest))
                            .build()
                            .flags(squeue::Flags::IO_LINK),
                        // HARDLINK: the close runs even when the write fails.
                        opcode::Write::new(types::Fixed(slot), data.as_ptr(), data.len() as u32)
                            .build()
                            .flags(squeue::Flags::IO_HARDLINK),
                        opcode::Close::new(types::Fixed(slot)).build(),
                    ];
                    for (step, sqe) in chain.into_iter().enumerate() {
                        let sqe = sqe.user_data(((base + i) as u64) << 2 | step as u64);
                        // SAFETY: the path and the data outlive this function, which
                        // reaps every completion of the window before it returns.
                        unsafe { sq.push(&sqe) }
                            .map_err(|_| io::Error::other("submission queue full"))?;
                        expected += 1;
                    }
                }
            }
            let reaped = self.reap(expected, |cqe| {
                let index = (cqe.user_data() >> 2) as usize;
                // A failed open cancels its write (ECANCELED): then the open's error
                // stands; otherwise the write's result does.
                match cqe.user_data() & 3 {
                    0 if cqe.result() < 0 => results[index] = cqe.result(),
                    1 if cqe.result() != -libc::ECANCELED => results[index] = cqe.result(),
                    _ => {}
                }
            });
            if let Err(e) = reaped {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            std::mem::forget(paths); // io-wq may still be opening them (module doc)
            return Err(e);
        }
        Ok(results)
    }
}

fn msg_bufs(ptr: *mut u8, len: usize) -> MsgBufs {
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid (empty) value.
    let hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    MsgBufs {
        iov: libc::iovec {
            iov_base: ptr.cast(),
            iov_len: len,
        },
        hdr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    extern "C" fn ignore(_: libc::c_int) {}

    /// A signal ends io_uring_enter's wait with EINTR (the handler has no SA_RESTART). The
    /// ring must resume the wait and reap the completion, not return while the operation
    /// (and the memory it points at) is still in flight.
    #[test]
    fn a_wait_cut_short_by_a_signal_is_resumed_not_abandoned() {
        // SAFETY: installs a do-nothing handler for SIGUSR1, which nothing else in this
        // test binary uses; `sa` is a zeroed, then filled, sigaction that outlives the call.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore as *const () as usize;
            assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
        }
        let mut ring = Ring::new(4).unwrap();
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let kicker = std::thread::spawn(move || {
            for _ in 0..5 {
                std::thread::sleep(Duration::from_millis(30));
                // SAFETY: `me` is the test thread, alive until it joins this thread.
                unsafe { libc::pthread_kill(me, libc::SIGUSR1) };
            }
        });
        let ts = types::Timespec::new().nsec(400_000_000);
        let sqe = opcode::Timeout::new(&ts).build().user_data(7);
        // SAFETY: `ts` lives until `reap` below has reaped the timeout's completion.
        unsafe { ring.ring.submission().push(&sqe) }.unwrap();
        let mut got = Vec::new();
        ring.reap(1, |c| got.push((c.user_data(), c.result())))
            .unwrap();
        kicker.join().unwrap();
        assert_eq!(got, [(7, -libc::ETIME)]);
        assert!(
            ring.interrupted >= 1,
            "no wait was interrupted: the test proved nothing"
        );
        assert!(!ring.is_broken());
    }
}
