//! conn: one connection of the daemon, on its own thread: reads request lines of bounded
//! length together with the namespace fds that come with them (SCM_RIGHTS), checks each
//! request's fields and resolves its target namespace here (so nothing a peer sends can
//! block the engine thread), then queues it to the engine thread and answers in order.
//! Closes the connection when it stays idle too long.

use std::collections::VecDeque;
use std::io::{self, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};

use netslot::daemon::protocol::{AttachmentKey, ErrorCode, Operation, Response};
use netslot::daemon::target::NetnsTarget;

use super::conns::Slot;
use super::metrics::{self, METRICS};
use super::peer::{self, Peer};
use super::rounds::Work;
use super::warm::{Claim, Warm};

/// Longest request line, without its newline. A longer one is refused with `bad-request`
/// and the connection is closed.
pub(crate) const MAX_LINE: usize = 64 * 1024;
/// Bytes read per recvmsg.
const READ_CHUNK: usize = 16 * 1024;
/// Most fds accepted in one message, and held for requests not yet read. More is refused
/// with `bad-request` and the connection closed (the kernel closes what did not fit).
const MAX_FDS: usize = 4;

/// What every connection thread shares.
pub(crate) struct Context {
    /// `--allow-gid`.
    pub allow_gid: Option<u32>,
    /// `--idle-timeout-ms`: how long a connection may take to send its next complete
    /// request line (counted from its start or its last answer).
    pub idle_timeout: Duration,
    /// Namespaces that are never targets, by id (`NS_GET_ID`), with what they are.
    pub forbidden: Vec<(u64, &'static str)>,
    /// The warm pool: a ready slot is handed out here, without the engine thread.
    pub warm: std::sync::Arc<Warm>,
    /// `--pool-low`: below it, a claim here tells the engine thread to refill.
    pub pool_low: usize,
    /// `--kind microvm`: the pool's slots need a tap in their own namespace, so an attach
    /// (into a container's namespace, which holds none) is refused.
    pub microvm: bool,
}

/// Serves one connection until it closes, breaks, idles out or is evicted.
pub(crate) fn serve(
    stream: Arc<UnixStream>,
    slot: Slot,
    peer: Peer,
    ctx: Arc<Context>,
    tx: Sender<Work>,
) {
    let out: &UnixStream = &stream;
    if !peer::allowed(peer, ctx.allow_gid) {
        tracing::warn!(
            uid = peer.uid,
            gid = peer.gid,
            pid = peer.pid,
            "refused a peer"
        );
        let _ = out.set_write_timeout(Some(ctx.idle_timeout));
        let _ = send(
            out,
            &Response::err(
                0,
                ErrorCode::NotAllowed,
                format!(
                    "uid {} gid {} may not use netslot (allowed: uid 0{})",
                    peer.uid,
                    peer.gid,
                    ctx.allow_gid
                        .map(|g| format!(", group {g}"))
                        .unwrap_or_default()
                ),
            ),
        );
        return;
    }
    // A peer that does not read its answers holds its own thread only, and not forever.
    if out.set_write_timeout(Some(ctx.idle_timeout)).is_err() {
        return;
    }
    let mut conn = Conn {
        reader: Reader::new(out),
        uid: peer.uid,
        ctx: &ctx,
    };
    let mut line = Vec::new();
    loop {
        slot.idle();
        let deadline = Instant::now() + ctx.idle_timeout;
        match conn.reader.next_line(&mut line, deadline) {
            Next::Line => {}
            Next::TooLong => {
                let _ = send(
                    out,
                    &Response::err(
                        0,
                        ErrorCode::BadRequest,
                        format!("the request line is longer than {MAX_LINE} bytes; closing"),
                    ),
                );
                return;
            }
            Next::TooManyFds => {
                let _ = send(
                    out,
                    &Response::err(
                        0,
                        ErrorCode::BadRequest,
                        format!(
                            "more than {MAX_FDS} file descriptors sent ahead of their \
                             requests; closing"
                        ),
                    ),
                );
                return;
            }
            Next::Eof | Next::TimedOut => return,
            Next::Failed(e) => {
                tracing::debug!(uid = peer.uid, "connection: {e}");
                return;
            }
        }
        if !slot.busy() {
            return;
        }
        let Some(response) = conn.answer(&line, &tx) else {
            continue;
        };
        if send(out, &response).is_err() {
            return;
        }
        // A long line's buffer is not kept for an idle connection.
        if line.capacity() > READ_CHUNK {
            line = Vec::new();
        }
    }
}

fn send(mut out: &UnixStream, r: &Response) -> io::Result<()> {
    let mut line = serde_json::to_string(r).expect("responses serialize");
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// One connection's state.
struct Conn<'a> {
    reader: Reader<'a>,
    uid: u32,
    ctx: &'a Context,
}

impl Conn<'_> {
    /// The answer to one line; `None` for a blank line.
    fn answer(&mut self, line: &[u8], tx: &Sender<Work>) -> Option<Response> {
        let started = std::time::Instant::now();
        let req = match netslot::daemon::protocol::judge_request_line(line) {
            Ok(Some(req)) => req,
            Ok(None) => return None,
            Err(refusal) => {
                METRICS.answered("invalid", started.elapsed(), &refusal);
                return Some(*refusal);
            }
        };
        let op = metrics::op_name(&req.op);
        let r = self.serve_request(req, tx);
        METRICS.answered(op, started.elapsed(), &r);
        Some(r)
    }

    /// The answer to one judged request: its target checked (attach), then queued for the
    /// engine thread and waited for.
    fn serve_request(
        &mut self,
        req: netslot::daemon::protocol::Request,
        tx: &Sender<Work>,
    ) -> Response {
        if matches!(req.op, Operation::Acquire) {
            if let Claim::Answered(r) = self.ctx.warm.claim(req.id, self.uid) {
                if self.ctx.warm.ready() < self.ctx.pool_low {
                    // A closed channel means the daemon is stopping: nothing to refill.
                    let _ = tx.send(Work::Nudge);
                }
                return *r;
            }
        }
        let target = match &req.op {
            Operation::Attach {
                key,
                netns,
                netns_fd,
                ..
            } => match self.target(key, netns, *netns_fd) {
                // Refused only once its fd (if any) is taken, so that the next request's
                // fd is not matched to this one.
                Ok(_) if self.ctx.microvm => {
                    return Response::err(
                        req.id,
                        ErrorCode::BadRequest,
                        format!(
                            "container {}: attach: this daemon makes microVM slots (--kind \
                             microvm), whose tap lives in the slot's own namespace: take one \
                             with acquire",
                            key.container_id
                        ),
                    )
                }
                Ok(fd) => Some(fd),
                Err((code, why)) => return Response::err(req.id, code, why),
            },
            _ => None,
        };
        let (reply_tx, reply_rx) = mpsc::channel();
        let queued = tx.send(Work::Job {
            id: req.id,
            op: req.op,
            uid: self.uid,
            target,
            reply: reply_tx,
        });
        match queued.ok().and_then(|()| reply_rx.recv().ok()) {
            Some(r) => r,
            None => Response::err(req.id, ErrorCode::ShuttingDown, "the daemon is stopping"),
        }
    }

    /// The attach target: the fd that came with the request, or (uid 0 only) the path,
    /// checked to be a network namespace this peer may attach into.
    fn target(
        &mut self,
        key: &AttachmentKey,
        netns: &Path,
        by_fd: bool,
    ) -> Result<OwnedFd, (ErrorCode, String)> {
        let who = format!("container {}: attach", key.container_id);
        let uid = self.uid;
        let not_allowed = |why: String| (ErrorCode::NotAllowed, why);
        let target = if by_fd {
            let Some(fd) = self.reader.fds.pop_front() else {
                return Err((
                    ErrorCode::BadRequest,
                    format!("{who}: netns_fd is set but no file descriptor came with the request"),
                ));
            };
            NetnsTarget::from_fd(fd).map_err(|e| {
                (
                    ErrorCode::Netns,
                    format!("{who}: the namespace fd sent for {}: {e}", netns.display()),
                )
            })?
        } else {
            if uid != 0 {
                return Err(not_allowed(format!(
                    "{who}: uid {uid} must send the namespace as a file descriptor \
                     (netns_fd); only uid 0 may name it by path"
                )));
            }
            NetnsTarget::open_path(netns).map_err(|e| {
                (
                    ErrorCode::Netns,
                    format!("{who}: namespace {}: {e}", netns.display()),
                )
            })?
        };
        if let Some((_, what)) = self.ctx.forbidden.iter().find(|(n, _)| *n == target.id()) {
            return Err(not_allowed(format!(
                "{who}: namespace {} is {what}, which is never a target",
                netns.display()
            )));
        }
        if uid != 0 {
            match target.enterable_by(uid) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(not_allowed(format!(
                        "{who}: uid {uid} could not enter namespace {} itself (its owning \
                         user namespace was not created by uid {uid})",
                        netns.display()
                    )))
                }
                Err(e) => {
                    return Err(not_allowed(format!(
                        "{who}: whether uid {uid} could enter namespace {}: {e}",
                        netns.display()
                    )))
                }
            }
        }
        Ok(target.into_fd())
    }
}

/// How reading the next line ended.
enum Next {
    /// A complete line is in the buffer.
    Line,
    /// The peer closed the connection (or was evicted).
    Eof,
    /// No complete line before the deadline.
    TimedOut,
    /// The line passed `MAX_LINE` bytes.
    TooLong,
    /// More fds than `MAX_FDS` arrived.
    TooManyFds,
    /// The socket failed.
    Failed(io::Error),
}

/// Reads lines through a fixed buffer, keeping the fds that arrive with the bytes in the
/// order they were sent.
struct Reader<'a> {
    stream: &'a UnixStream,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    fds: VecDeque<OwnedFd>,
}

impl<'a> Reader<'a> {
    fn new(stream: &'a UnixStream) -> Self {
        Self {
            stream,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            fds: VecDeque::new(),
        }
    }

    /// Fills `line` with the next line (without its newline).
    fn next_line(&mut self, line: &mut Vec<u8>, deadline: Instant) -> Next {
        line.clear();
        loop {
            let chunk = &self.buf[self.start..self.end];
            if let Some(i) = chunk.iter().position(|&b| b == b'\n') {
                if line.len() + i > MAX_LINE {
                    return Next::TooLong;
                }
                line.extend_from_slice(&chunk[..i]);
                self.start += i + 1;
                return Next::Line;
            }
            if line.len() + chunk.len() > MAX_LINE {
                return Next::TooLong;
            }
            line.extend_from_slice(chunk);
            self.start = 0;
            self.end = 0;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::TimedOut;
            }
            if let Err(e) = self.stream.set_read_timeout(Some(left)) {
                return Next::Failed(e);
            }
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let got = match rustix::net::recvmsg(
                self.stream,
                &mut [IoSliceMut::new(&mut self.buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(m) => m,
                // Interrupted, or SO_RCVTIMEO ran out: the deadline decides.
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => continue,
                Err(e) => return Next::Failed(e.into()),
            };
            for msg in control.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = msg {
                    self.fds.extend(fds);
                }
            }
            if got.flags.contains(ReturnFlags::CTRUNC) || self.fds.len() > MAX_FDS {
                return Next::TooManyFds;
            }
            if got.bytes == 0 {
                return Next::Eof;
            }
            self.end = got.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn lines_are_split_across_reads_and_capped() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut r = Reader::new(&b);
        let mut line = Vec::new();
        (&a).write_all(b"{\"v\":1}\n{\"v\"").unwrap();
        assert!(matches!(r.next_line(&mut line, deadline()), Next::Line));
        assert_eq!(line, b"{\"v\":1}");
        (&a).write_all(b":2}\n").unwrap();
        assert!(matches!(r.next_line(&mut line, deadline()), Next::Line));
        assert_eq!(line, b"{\"v\":2}");
        // Exactly MAX_LINE bytes is a line; one more is refused before its newline.
        let mut max = vec![b'x'; MAX_LINE];
        max.push(b'\n');
        let w = std::thread::spawn(move || (&a).write_all(&max).map(|()| a));
        assert!(matches!(r.next_line(&mut line, deadline()), Next::Line));
        assert_eq!(line.len(), MAX_LINE);
        let a = w.join().unwrap().unwrap();
        let w = std::thread::spawn(move || {
            let _ = (&a).write_all(&vec![b'y'; MAX_LINE + 1]);
            a
        });
        assert!(matches!(r.next_line(&mut line, deadline()), Next::TooLong));
        drop(r);
        drop(b);
        drop(w.join().unwrap());
    }

    #[test]
    fn fds_queue_in_the_order_sent_and_too_many_are_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut r = Reader::new(&b);
        let mut line = Vec::new();
        let f1 = std::fs::File::open("/dev/null").unwrap();
        let f2 = std::fs::File::open("/proc/self/ns/net").unwrap();
        for (f, text) in [(f1.as_fd(), "one\n"), (f2.as_fd(), "two\n")] {
            send_fds(&a, text.as_bytes(), &[f]);
        }
        assert!(matches!(r.next_line(&mut line, deadline()), Next::Line));
        assert_eq!(line, b"one");
        let first = r.fds.pop_front().expect("the first fd");
        let ino = |f: std::os::fd::BorrowedFd<'_>| rustix::fs::fstat(f).unwrap().st_ino;
        assert_eq!(ino(first.as_fd()), ino(f1.as_fd()));
        assert!(matches!(r.next_line(&mut line, deadline()), Next::Line));
        assert_eq!(line, b"two");
        assert_eq!(r.fds.len(), 1);
        // More fds in one message than fit: refused.
        let many = [f1.as_fd(); MAX_FDS + 1];
        send_fds(&a, b"three\n", &many);
        assert!(matches!(
            r.next_line(&mut line, deadline()),
            Next::TooManyFds
        ));
    }

    #[test]
    fn an_idle_connection_times_out() {
        let (_a, b) = UnixStream::pair().unwrap();
        let mut r = Reader::new(&b);
        let started = Instant::now();
        let soon = started + Duration::from_millis(50);
        assert!(matches!(r.next_line(&mut Vec::new(), soon), Next::TimedOut));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    fn send_fds(to: &UnixStream, data: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
        let n = rustix::net::sendmsg(
            to,
            &[std::io::IoSlice::new(data)],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        assert_eq!(n, data.len());
    }
}
