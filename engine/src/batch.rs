//! batch: packs requests into per-socket send buffers, each closed by an end marker.
//! Owns the bytes of every send until its completion returns; encodes through `wire`.
//!
//! netlink_sendmsg refuses (EMSGSIZE, processing nothing) a send longer than
//! sk_sndbuf - 32, and all replies of one send are queued before sendmsg returns, so a send
//! is also capped by how many error replies the receive buffer can hold without an overrun.
//! A buffer is split before either limit would be passed.

use bytes::BytesMut;
use netlink_packet_route::RouteNetlinkMessage;

use crate::op::Op;
use crate::owner::Owner;
use crate::reconcile::Pending;
use crate::seq::{Ledger, Tag};
use crate::wire;

/// Encoded size of the NLMSG_NOOP end marker (a bare nlmsghdr).
const MARKER_LEN: usize = 16;

/// What one send on a socket may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Bytes per sendmsg: the socket's sk_sndbuf - 32 (netlink_sendmsg).
    pub max_bytes: usize,
    /// Requests per sendmsg, so every possible error reply fits the receive buffer.
    pub max_requests: usize,
}

/// Which socket a send goes to; the driver of the call maps it to a file descriptor, so
/// planning and settling never see one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sock {
    /// The host namespace's socket (host addresses, group changes, deletes).
    Host,
    /// Slot `i`'s own socket, inside its namespace.
    Slot(usize),
}

/// One sendmsg and what it is waiting for.
#[derive(Debug)]
pub(crate) struct Flight {
    /// The socket (and so the namespace) the bytes go to.
    pub to: Sock,
    /// NLMSG_ALIGNed requests followed by the end marker.
    pub bytes: BytesMut,
    /// The requests and marker the replies will settle.
    pub pending: Pending,
}

/// Builds the flights of one socket.
#[derive(Debug)]
pub(crate) struct Batcher {
    to: Sock,
    limits: Limits,
    flights: Vec<Flight>,
    bytes: BytesMut,
    seqs: Vec<u32>,
}

impl Batcher {
    pub fn new(to: Sock, limits: Limits) -> Self {
        Self {
            to,
            limits,
            flights: Vec::new(),
            bytes: BytesMut::new(),
            seqs: Vec::new(),
        }
    }

    /// Adds one request for `owner`. Requests carry no NLM_F_ACK: only errors are
    /// acked, and the end marker acks the rest (see `reconcile`).
    pub fn push(
        &mut self,
        ledger: &mut Ledger,
        owner: Owner,
        op: Op,
        message: RouteNetlinkMessage,
        flags: u16,
    ) {
        let len = wire::encoded_len(&message);
        let full = self.bytes.len() + len + MARKER_LEN > self.limits.max_bytes
            || self.seqs.len() >= self.limits.max_requests;
        if full && !self.seqs.is_empty() {
            self.close(ledger);
        }
        let seq = ledger.register(Tag::Request { owner, op });
        wire::push_request(&mut self.bytes, message, flags, seq);
        self.seqs.push(seq);
    }

    fn close(&mut self, ledger: &mut Ledger) {
        let marker = ledger.register(Tag::Marker);
        wire::push_end_marker(&mut self.bytes, marker);
        self.flights.push(Flight {
            to: self.to,
            bytes: std::mem::take(&mut self.bytes),
            pending: Pending::new(std::mem::take(&mut self.seqs), marker),
        });
    }

    /// Closes the last buffer and returns every flight, in send order.
    pub fn finish(mut self, ledger: &mut Ledger) -> Vec<Flight> {
        if !self.seqs.is_empty() {
            self.close(ledger);
        }
        self.flights
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{addr, link};
    use netlink_packet_core::NetlinkBuffer;
    use std::net::Ipv4Addr;

    fn messages_in(bytes: &[u8]) -> Vec<(u16, u32)> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < bytes.len() {
            let b = NetlinkBuffer::new_checked(&bytes[off..]).unwrap();
            out.push((b.message_type(), b.sequence_number()));
            off += wire::nlmsg_align(b.length() as usize);
        }
        out
    }

    #[test]
    fn splits_before_the_byte_limit_and_ends_each_with_a_marker() {
        let addr_len = wire::encoded_len(&addr::ipv4(1, Ipv4Addr::LOCALHOST, 31));
        // Room for exactly three addresses and a marker.
        let limits = Limits {
            max_bytes: 3 * addr_len + MARKER_LEN,
            max_requests: 1000,
        };
        let mut ledger = Ledger::new(0);
        let mut b = Batcher::new(Sock::Host, limits);
        for i in 0..7 {
            b.push(
                &mut ledger,
                Owner::Slot(i),
                Op::HostAddr,
                addr::ipv4(1, Ipv4Addr::LOCALHOST, 31),
                0,
            );
        }
        let flights = b.finish(&mut ledger);
        let sizes: Vec<usize> = flights.iter().map(|f| f.pending.requests.len()).collect();
        assert_eq!(sizes, vec![3, 3, 1]);
        for f in &flights {
            assert!(f.bytes.len() <= limits.max_bytes);
            let msgs = messages_in(&f.bytes);
            assert_eq!(msgs.last().unwrap(), &(1, f.pending.marker)); // NLMSG_NOOP
            assert_eq!(msgs.len(), f.pending.requests.len() + 1);
        }
        assert_eq!(ledger.in_flight(), 7 + 3);
    }

    #[test]
    fn splits_at_the_request_limit() {
        let limits = Limits {
            max_bytes: 1 << 20,
            max_requests: 2,
        };
        let mut ledger = Ledger::new(0);
        let mut b = Batcher::new(Sock::Host, limits);
        for i in 0..5 {
            b.push(&mut ledger, Owner::Slot(i), Op::LoUp, link::set_up(1), 0);
        }
        let sizes: Vec<usize> = b
            .finish(&mut ledger)
            .iter()
            .map(|f| f.pending.requests.len())
            .collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }

    #[test]
    fn no_requests_no_flight() {
        let mut ledger = Ledger::new(0);
        let b = Batcher::new(
            Sock::Host,
            Limits {
                max_bytes: 100,
                max_requests: 1,
            },
        );
        assert!(b.finish(&mut ledger).is_empty());
        assert_eq!(ledger.in_flight(), 0);
    }
}
