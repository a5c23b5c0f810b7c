//! client: one blocking request/response exchange with `netslot serve` over its socket.
//! Std only (Unix stream, one JSON line each way); the daemon does the batching.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::protocol::{Op, Request, Response};

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
pub fn call(socket: &Path, op: Op) -> Result<Response, ClientError> {
    let answer = exchange(socket, op)?;
    serde_json::from_slice(&answer).map_err(|e| ClientError::Exchange {
        socket: socket.display().to_string(),
        what: format!("bad answer {:?}: {e}", String::from_utf8_lossy(&answer)),
    })
}

/// Sends `op` and returns the daemon's answer line as it came (newline removed), not yet
/// parsed: for callers that judge it themselves (`netslot-cni`, through
/// [`crate::cni_reply::handle`]).
pub fn exchange(socket: &Path, op: Op) -> Result<Vec<u8>, ClientError> {
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
    let sent = (&stream).write_all(line.as_bytes());
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
