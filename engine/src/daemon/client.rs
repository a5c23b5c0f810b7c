//! client: one blocking request/response exchange with `netslot serve` over its socket:
//! a Unix stream, one JSON line each way (an attach's namespace fd rides along with its
//! line as SCM_RIGHTS); the daemon does the batching.

use std::io::{self, BufRead, BufReader, IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::daemon::protocol::{Operation, Request, Response};

/// How long a client waits for its answer: a batch of thousands of slots takes about a
/// second, so this only catches a daemon that stopped answering.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No daemon accepts connections at the socket (absent, refused).
    #[error("no netslot daemon at {socket}: {source} (start it with `netslot serve`)")]
    NotRunning {
        /// The socket path.
        socket: String,
        /// The connect error.
        #[source]
        source: io::Error,
    },
    /// The connection broke or timed out, or the answer was not a response line.
    #[error("talking to the netslot daemon at {socket}: {what}")]
    Exchange {
        /// The socket path.
        socket: String,
        /// What went wrong.
        what: String,
    },
}

/// Sends `op` and returns the daemon's response.
pub fn call(socket: &Path, op: Operation) -> Result<Response, ClientError> {
    parse(socket, &exchange(socket, op, None)?)
}

/// Sends `op` with the file descriptor `fd` (SCM_RIGHTS, with the line's first bytes)
/// and returns the daemon's response. For an attach with `netns_fd: true`, `fd` is the
/// target namespace, opened by the caller: the daemon uses it instead of a path, and for
/// a caller other than uid 0 accepts it only if the caller could enter that namespace.
pub fn call_with_fd(
    socket: &Path,
    op: Operation,
    fd: BorrowedFd<'_>,
) -> Result<Response, ClientError> {
    parse(socket, &exchange(socket, op, Some(fd))?)
}

fn parse(socket: &Path, answer: &[u8]) -> Result<Response, ClientError> {
    serde_json::from_slice(answer).map_err(|e| ClientError::Exchange {
        socket: socket.display().to_string(),
        what: format!("bad answer {:?}: {e}", String::from_utf8_lossy(answer)),
    })
}

/// Sends `op` (with `fd` as SCM_RIGHTS, when given) and returns the daemon's answer line
/// as it came (newline removed), not yet parsed: for callers that judge it themselves
/// (`netslot-cni`, through [`crate::cni::reply::handle`]).
pub fn exchange(
    socket: &Path,
    op: Operation,
    fd: Option<BorrowedFd<'_>>,
) -> Result<Vec<u8>, ClientError> {
    let sock = socket.display().to_string();
    let stream = UnixStream::connect(socket).map_err(|source| ClientError::NotRunning {
        socket: sock.clone(),
        source,
    })?;
    let broke = |what: String| ClientError::Exchange {
        socket: sock.clone(),
        what,
    };
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| broke(e.to_string()))?;
    let mut line = serde_json::to_string(&Request::new(1, op)).expect("requests serialize");
    line.push('\n');
    // A refused peer is answered and hung up on without its request being read, so a
    // failed send still leaves that answer to read.
    let sent = match fd {
        None => (&stream).write_all(line.as_bytes()),
        Some(fd) => send_with_fd(&stream, line.as_bytes(), fd),
    };
    let mut answer = Vec::new();
    BufReader::new(&stream)
        .read_until(b'\n', &mut answer)
        .map_err(|e| broke(format!("reading the answer: {e}")))?;
    if answer.is_empty() {
        return Err(broke(match sent {
            Err(e) => format!("sending: {e}"),
            Ok(()) => "the daemon closed the connection without answering".into(),
        }));
    }
    if answer.last() == Some(&b'\n') {
        answer.pop();
    }
    Ok(answer)
}

/// Writes `data`, the fd going with its first bytes (one sendmsg; the rest, if the socket
/// took only part, by plain writes).
fn send_with_fd(stream: &UnixStream, data: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let sent = loop {
        match rustix::net::sendmsg(
            stream,
            &[IoSlice::new(data)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut out = stream;
    out.write_all(&data[sent..])
}
