//! sock: NETLINK_ROUTE sockets, their buffer sizing, and plain blocking request/dump I/O.
//! The hot path sends through `ring`; this file makes sockets and serves the slow paths.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

use bytes::BytesMut;
use netlink_packet_core::{NetlinkBuffer, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_DUMP};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use crate::batch::Limits;
use crate::wire;

/// netlink_sendmsg refuses a send longer than sk_sndbuf minus this (af_netlink.c).
const SNDBUF_SLACK: usize = 32;
/// Receive-buffer cost of one error reply: an skb's truesize for a small reply is well
/// under this; the budget keeps every reply of a send inside SO_RCVBUF (no overrun).
pub(crate) const REPLY_TRUESIZE_BUDGET: usize = 2048;
/// Send and receive buffers of the host socket, forced past the sysctl caps (root).
const HOST_SNDBUF: usize = 4 << 20;
const HOST_RCVBUF: usize = 16 << 20;

/// A slot socket: NETLINK_ROUTE, extended ACKs on, default buffers (its one send is small).
/// Two system calls: socket and setsockopt. Not bound: the kernel autobinds on first send.
pub(crate) fn slot_socket() -> io::Result<Socket> {
    let sock = Socket::new(NETLINK_ROUTE)?;
    sock.set_ext_ack(true)?;
    Ok(sock)
}

/// A socket for dumps only: the host socket without its forced buffers, which need
/// CAP_NET_ADMIN. A dump reads its replies message by message, so default buffers do.
pub(crate) fn reader_socket() -> io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.set_ext_ack(true)?;
    sock.set_cap_ack(true)?;
    Ok(sock)
}

/// The host socket: big forced buffers, capped and extended ACKs.
pub(crate) fn host_socket() -> io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.set_ext_ack(true)?;
    sock.set_cap_ack(true)?;
    set_int(&sock, libc::SO_SNDBUFFORCE, HOST_SNDBUF)?;
    set_int(&sock, libc::SO_RCVBUFFORCE, HOST_RCVBUF)?;
    Ok(sock)
}

/// The host socket's limits as the kernel grants HOST_SNDBUF/HOST_RCVBUF (sock_setsockopt
/// doubles a forced size), without opening it: for the benches of `internals`.
#[cfg(any(test, feature = "internals"))]
pub(crate) fn nominal_host_limits() -> Limits {
    limits_from(2 * HOST_SNDBUF, 2 * HOST_RCVBUF)
}

/// Sets SO_SNDBUF / SO_RCVBUF (fault injection: smaller than the forced sizes).
pub(crate) fn set_buffers(sock: &Socket, snd: Option<usize>, rcv: Option<usize>) -> io::Result<()> {
    if let Some(v) = snd {
        set_int(sock, libc::SO_SNDBUF, v)?;
    }
    if let Some(v) = rcv {
        set_int(sock, libc::SO_RCVBUF, v)?;
    }
    Ok(())
}

/// What one send on `sock` may carry, from its actual buffer sizes.
pub(crate) fn limits(sock: &Socket) -> io::Result<Limits> {
    let snd = get_int(sock, libc::SO_SNDBUF)?;
    let rcv = get_int(sock, libc::SO_RCVBUF)?;
    Ok(limits_from(snd, rcv))
}

/// Limits for buffers of `sndbuf` / `rcvbuf` bytes (as getsockopt reports them).
pub(crate) fn limits_from(sndbuf: usize, rcvbuf: usize) -> Limits {
    Limits {
        max_bytes: sndbuf.saturating_sub(SNDBUF_SLACK),
        max_requests: (rcvbuf / REPLY_TRUESIZE_BUDGET).saturating_sub(1).max(1),
    }
}

/// Default socket buffer sizes of new sockets (net.core.wmem_default / rmem_default).
pub(crate) fn default_buffers() -> (usize, usize) {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(212_992)
    };
    (
        read("/proc/sys/net/core/wmem_default"),
        read("/proc/sys/net/core/rmem_default"),
    )
}

fn set_int(sock: &Socket, opt: libc::c_int, value: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    // SAFETY: passes a pointer to a live c_int and its exact size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_int(sock: &Socket, opt: libc::c_int) -> io::Result<usize> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are live and sized for the kernel to write one c_int.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(v).unwrap_or(0))
}

/// SO_NETNS_COOKIE (include/uapi/asm-generic/socket.h, Linux 5.14): the id of the socket's
/// network namespace. On 6.18 it is the value nsfs `NS_GET_ID` gives for that namespace
/// (both are the netns cookie; checked on a fresh namespace: 191038 and 191038).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The id of the network namespace `sock` was made in, without opening the namespace.
pub(crate) fn netns_cookie(sock: &Socket) -> io::Result<u64> {
    let mut v: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: v and len are live and sized for the kernel to write one u64.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut v as *mut u64).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// A kernel refusal of a plain request: errno and extended-ACK text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub errno: i32,
    pub ext_ack: Option<String>,
}

impl std::error::Error for Refusal {}

/// The kernel's errno behind `e`: an OS error's, or a [`request`] refusal's.
pub(crate) fn errno_of(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<Refusal>())
            .map(|r| r.errno)
    })
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.errno))?;
        if let Some(t) = &self.ext_ack {
            write!(f, ": kernel says {t:?}")?;
        }
        Ok(())
    }
}

/// Sends one request with NLM_F_ACK and waits for its reply (slow paths only: teardown,
/// checks). Returns the kernel's refusal as an error.
pub(crate) fn request(sock: &Socket, message: RouteNetlinkMessage, seq: u32) -> io::Result<()> {
    let mut out = BytesMut::new();
    wire::push_request(&mut out, message, NLM_F_ACK, seq);
    sock.send(&out, 0)?;
    loop {
        let (buf, _) = sock.recv_from_full()?;
        for a in wire::ack::parse(&buf).map_err(io::Error::other)? {
            if a.seq != seq {
                continue;
            }
            return refusal(a.errno, a.message);
        }
    }
}

/// Most requests per send in [`requests`]; fewer when their ACKs (one skb each,
/// REPLY_TRUESIZE_BUDGET) would not fit the socket's receive buffer.
const REQUESTS_PER_SEND: usize = 64;

/// Sends `messages` with NLM_F_ACK, many per sendmsg, and waits for every reply (slow
/// paths: deleting a pool's groups). Each message is its own RTNL acquisition. Returns
/// one result per message, in order, each refusal carrying the kernel's text.
pub(crate) fn requests(
    sock: &Socket,
    messages: Vec<RouteNetlinkMessage>,
    next_seq: &mut dyn FnMut() -> u32,
) -> io::Result<Vec<io::Result<()>>> {
    let per_send = limits(sock)?.max_requests.min(REQUESTS_PER_SEND);
    let mut results = Vec::with_capacity(messages.len());
    let mut messages = messages.into_iter().peekable();
    while messages.peek().is_some() {
        let mut out = BytesMut::new();
        let mut seqs = Vec::new();
        for message in messages.by_ref().take(per_send) {
            let seq = next_seq();
            wire::push_request(&mut out, message, NLM_F_ACK, seq);
            seqs.push(seq);
        }
        sock.send(&out, 0)?;
        let mut answers: Vec<Option<io::Result<()>>> = seqs.iter().map(|_| None).collect();
        let mut left = seqs.len();
        while left > 0 {
            let (buf, _) = sock.recv_from_full()?;
            for a in wire::ack::parse(&buf).map_err(io::Error::other)? {
                let Some(i) = seqs.iter().position(|&s| s == a.seq) else {
                    continue;
                };
                if answers[i].is_none() {
                    left -= 1;
                }
                answers[i] = Some(refusal(a.errno, a.message));
            }
        }
        results.extend(answers.into_iter().flatten());
    }
    Ok(results)
}

/// Ok for errno 0; otherwise an io::Error carrying the errno and the kernel's text.
fn refusal(errno: i32, ext_ack: Option<String>) -> io::Result<()> {
    if errno == 0 {
        return Ok(());
    }
    // The Refusal rides inside the io::Error so callers can still read the errno
    // (`errno_of`); a formatted message alone would lose it.
    let kind = io::Error::from_raw_os_error(errno).kind();
    Err(io::Error::new(kind, Refusal { errno, ext_ack }))
}

/// NLM_F_DUMP_INTR: the kernel saw the table change during the dump (include/uapi/linux/netlink.h).
const NLM_F_DUMP_INTR: u16 = 0x10;
/// How many times an interrupted dump is run again before it is reported as an error.
const DUMP_ATTEMPTS: u32 = 10;

/// Runs a dump request and returns each reply message's bytes (header included). A dump
/// the kernel marks as interrupted (devices came or went meanwhile, e.g. cleanup_net
/// destroying namespaces) may miss or repeat entries, so it is run again; gc must not
/// miss a host end because a dump raced with the kernel.
pub(crate) fn dump(
    sock: &Socket,
    message: RouteNetlinkMessage,
    next_seq: &mut dyn FnMut() -> u32,
) -> io::Result<Vec<Vec<u8>>> {
    for _ in 0..DUMP_ATTEMPTS {
        // A fresh number per attempt: a late reply of an interrupted one matches nothing.
        match dump_once(sock, message.clone(), next_seq())? {
            (messages, false) => return Ok(messages),
            (_, true) => continue,
        }
    }
    Err(io::Error::other(format!(
        "dump interrupted (NLM_F_DUMP_INTR) {DUMP_ATTEMPTS} times in a row: the kernel's table kept changing"
    )))
}

/// One dump: the messages, and whether the kernel flagged it as interrupted.
fn dump_once(
    sock: &Socket,
    message: RouteNetlinkMessage,
    seq: u32,
) -> io::Result<(Vec<Vec<u8>>, bool)> {
    let mut interrupted = false;
    let mut out = BytesMut::new();
    wire::push_request(&mut out, message, NLM_F_DUMP, seq);
    sock.send(&out, 0)?;
    let mut messages = Vec::new();
    loop {
        let (buf, _) = sock.recv_from_full()?;
        let mut off = 0;
        while off < buf.len() {
            let b = NetlinkBuffer::new_checked(&buf[off..])
                .map_err(|e| io::Error::other(format!("dump reply: {e}")))?;
            let len = b.length() as usize;
            if b.sequence_number() == seq {
                interrupted |= b.flags() & NLM_F_DUMP_INTR != 0;
                match b.message_type() {
                    NLMSG_DONE => return Ok((messages, interrupted)),
                    NLMSG_ERROR => {
                        let acks =
                            wire::ack::parse(&buf[off..off + len]).map_err(io::Error::other)?;
                        if let Some(a) = acks.first().filter(|a| a.errno != 0) {
                            return Err(io::Error::from_raw_os_error(a.errno));
                        }
                    }
                    _ => messages.push(buf[off..off + len].to_vec()),
                }
            }
            off += wire::nlmsg_align(len);
        }
    }
}

/// Takes the fd out of a netlink-sys socket (which has no `OwnedFd` conversion).
pub(crate) fn into_owned(sock: Socket) -> std::os::fd::OwnedFd {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let fd = sock.into_raw_fd();
    // SAFETY: into_raw_fd released the socket's ownership of this open fd (its Drop will
    // not run), so the OwnedFd is its only owner.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}
