//! reconcile: maps every reply to its request by sequence number and settles each op.
//! Sans-IO: it is fed received bytes; sockets and the ring belong to others.
//!
//! Requests carry no NLM_F_ACK: netlink_rcv_skb acks every error anyway, and each send
//! ends with an NLMSG_NOOP marker that asks for an ACK. Replies arrive in request order, so
//! the marker's ACK settles every request before it that drew no error as done. A send
//! whose marker never comes (a malformed length drops the rest of the skb; an overrun
//! drops ACKs) leaves its unsettled requests failed as "lost", never silently done.

use crate::op::Op;
use crate::owner::Owner;
use crate::seq::{Ledger, Tag};
use crate::wire::ack;

/// Detail of an op whose reply may have been dropped by a receive-buffer overrun.
pub(crate) const LOST_TO_OVERRUN: &str =
    "its reply may have been dropped: the receive buffer overran (ENOBUFS)";

/// Detail of an op whose send's end marker drew an error instead of its ACK.
pub(crate) const REFUSED_MARKER: &str =
    "the send's end marker was refused, so no request before it is known to have succeeded";

/// Detail of every request of a send that sendmsg refused whole.
pub(crate) const NOT_SENT: &str = "sendmsg refused the whole send; nothing of it was processed";

/// Why an op failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub errno: i32,
    pub ext_ack: Option<String>,
    pub detail: Option<String>,
}

impl Failure {
    /// Whether the kernel is known not to have done the request: it answered the request
    /// itself with an error, or sendmsg refused the whole send. Any other failure (a
    /// refused end marker, a lost or unreadable reply) leaves it possibly done.
    pub fn known_undone(&self) -> bool {
        self.detail.is_none() || self.detail.as_deref() == Some(NOT_SENT)
    }
}

/// The settled fate of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    Done { owner: Owner, op: Op },
    Failed { owner: Owner, op: Op, why: Failure },
}

/// The requests of one sendmsg, as far as they are unsettled.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    /// Unsettled request seqs, in send order.
    pub requests: Vec<u32>,
    /// The end marker's seq.
    pub marker: u32,
    /// Whether the marker's ACK has arrived.
    pub complete: bool,
    /// Replies that matched nothing of this send.
    pub strays: usize,
    /// The receive buffer overran (ENOBUFS) while this send's replies were queued: some
    /// replies were dropped, so the marker no longer proves that nothing before it failed.
    pub overrun: bool,
}

impl Pending {
    pub fn new(requests: Vec<u32>, marker: u32) -> Self {
        Self {
            requests,
            marker,
            complete: false,
            strays: 0,
            overrun: false,
        }
    }

    /// Settles what one received datagram says. An unreadable datagram fails every
    /// unsettled request of the send: its replies cannot be trusted to be complete.
    pub fn on_reply(&mut self, ledger: &mut Ledger, buf: &[u8]) -> Vec<Settled> {
        match ack::parse(buf) {
            Ok(acks) => {
                let mut out = Vec::new();
                for a in acks {
                    self.on_ack(ledger, &a, &mut out);
                }
                out
            }
            Err(e) => self.give_up(ledger, 0, format!("unreadable reply: {e}")),
        }
    }

    fn on_ack(&mut self, ledger: &mut Ledger, a: &ack::Ack, out: &mut Vec<Settled>) {
        if a.seq == self.marker && !self.complete {
            if self.overrun {
                // Error replies before the marker may be among the dropped ones: what is
                // unsettled is unknown, not done. The engine re-reads the kernel's state.
                out.extend(self.give_up(ledger, libc::ENOBUFS, LOST_TO_OVERRUN.into()));
                return;
            }
            if a.errno != 0 {
                // The kernel acks a NLMSG_NOOP with 0 (netlink_rcv_skb); a refused marker
                // means the send was not processed as sent, so it proves nothing before it.
                // Found by the ack_parser fuzz target (docs/reliability.md, "Fuzzing").
                out.extend(self.give_up(ledger, a.errno, REFUSED_MARKER.into()));
                return;
            }
            ledger.settle(a.seq);
            self.complete = true;
            for seq in self.requests.drain(..) {
                if let Some(Tag::Request { owner, op }) = ledger.settle(seq) {
                    out.push(Settled::Done { owner, op });
                }
            }
            return;
        }
        let Some(pos) = self.requests.iter().position(|&s| s == a.seq) else {
            self.strays += 1;
            return;
        };
        self.requests.remove(pos);
        match ledger.settle(a.seq) {
            Some(Tag::Request { owner, op }) if a.errno != 0 => out.push(Settled::Failed {
                owner,
                op,
                why: Failure {
                    errno: a.errno,
                    ext_ack: a.message.clone(),
                    detail: None,
                },
            }),
            // An explicit success ACK (only when a request asked for one).
            Some(Tag::Request { owner, op }) => out.push(Settled::Done { owner, op }),
            Some(Tag::Marker | Tag::Direct) | None => self.strays += 1,
        }
    }

    /// Fails every unsettled request: the replies stopped before the marker.
    pub fn give_up(&mut self, ledger: &mut Ledger, errno: i32, detail: String) -> Vec<Settled> {
        ledger.settle(self.marker);
        self.complete = true;
        self.requests
            .drain(..)
            .filter_map(|seq| match ledger.settle(seq) {
                Some(Tag::Request { owner, op }) => Some(Settled::Failed {
                    owner,
                    op,
                    why: Failure {
                        errno,
                        ext_ack: None,
                        detail: Some(detail.clone()),
                    },
                }),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An NLMSG_ERROR reply with the given seq and errno (capped, no TLVs).
    fn reply(seq: u32, errno: i32) -> Vec<u8> {
        let mut out = 36u32.to_ne_bytes().to_vec();
        out.extend_from_slice(&2u16.to_ne_bytes());
        out.extend_from_slice(&0x100u16.to_ne_bytes()); // NLM_F_CAPPED
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&(-errno).to_ne_bytes());
        out.extend_from_slice(&[0u8; 16]);
        out
    }

    fn send(ledger: &mut Ledger, slot: usize) -> Pending {
        let ops = [Op::LoUp, Op::Veth, Op::SlotAddr, Op::Route];
        let seqs = ops
            .iter()
            .map(|&op| {
                ledger.register(Tag::Request {
                    owner: Owner::Slot(slot),
                    op,
                })
            })
            .collect();
        let marker = ledger.register(Tag::Marker);
        Pending::new(seqs, marker)
    }

    #[test]
    fn marker_settles_everything_before_it() {
        let mut ledger = Ledger::new(1);
        let mut p = send(&mut ledger, 3);
        let out = p.on_reply(&mut ledger, &reply(p.marker, 0));
        assert!(p.complete);
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|s| matches!(
            s,
            Settled::Done {
                owner: Owner::Slot(3),
                ..
            }
        )));
        assert_eq!(ledger.in_flight(), 0);
    }

    #[test]
    fn nack_fails_its_op_and_marker_settles_the_rest() {
        let mut ledger = Ledger::new(1);
        let mut p = send(&mut ledger, 0);
        let veth = p.requests[1];
        let mut out = p.on_reply(&mut ledger, &reply(veth, 17));
        assert_eq!(
            out,
            vec![Settled::Failed {
                owner: Owner::Slot(0),
                op: Op::Veth,
                why: Failure {
                    errno: 17,
                    ext_ack: None,
                    detail: None
                }
            }]
        );
        assert!(!p.complete);
        out = p.on_reply(&mut ledger, &reply(p.marker, 0));
        assert_eq!(out.len(), 3);
        assert_eq!(ledger.in_flight(), 0);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut ledger = Ledger::new(u32::MAX - 1);
        let mut p = send(&mut ledger, 0);
        assert_eq!(p.requests, vec![u32::MAX - 1, u32::MAX, 0, 1]);
        assert_eq!(p.marker, 2);
        let out = p.on_reply(&mut ledger, &reply(0, 22));
        assert!(matches!(
            out[..],
            [Settled::Failed {
                op: Op::SlotAddr,
                ..
            }]
        ));
        p.on_reply(&mut ledger, &reply(2, 0));
        assert_eq!(ledger.in_flight(), 0);
    }

    #[test]
    fn stray_replies_are_counted_not_applied() {
        let mut ledger = Ledger::new(100);
        let mut a = send(&mut ledger, 0);
        let b = send(&mut ledger, 1);
        // A reply for slot 1's request arriving on slot 0's socket settles nothing.
        let out = a.on_reply(&mut ledger, &reply(b.requests[0], 17));
        assert!(out.is_empty());
        assert_eq!(a.strays, 1);
        assert_eq!(ledger.in_flight(), 10);
    }

    #[test]
    fn truncated_reply_fails_the_unsettled_requests() {
        let mut ledger = Ledger::new(0);
        let mut p = send(&mut ledger, 5);
        let full = reply(p.marker, 0);
        let out = p.on_reply(&mut ledger, &full[..20]);
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|s| matches!(
            s,
            Settled::Failed { owner: Owner::Slot(5), why, .. } if why.detail.as_deref().unwrap().contains("truncated")
        )));
        assert_eq!(ledger.in_flight(), 0);
    }

    #[test]
    fn silence_fails_everything_unsettled() {
        let mut ledger = Ledger::new(0);
        let mut p = send(&mut ledger, 2);
        let first = p.requests[0];
        p.on_reply(&mut ledger, &reply(first, 1));
        let out = p.give_up(&mut ledger, 0, "no reply".into());
        assert_eq!(out.len(), 3);
        assert_eq!(ledger.in_flight(), 0);
    }

    #[test]
    fn after_an_overrun_the_marker_settles_nothing_as_done() {
        let mut ledger = Ledger::new(0);
        let mut p = send(&mut ledger, 4);
        p.overrun = true;
        let out = p.on_reply(&mut ledger, &reply(p.marker, 0));
        assert!(p.complete);
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|s| matches!(
            s,
            Settled::Failed { owner: Owner::Slot(4), why, .. } if why.errno == libc::ENOBUFS
        )));
        assert_eq!(ledger.in_flight(), 0);
    }

    #[test]
    fn a_refused_marker_settles_nothing_as_done() {
        // Found by fuzz/fuzz_targets/ack_parser.rs: a marker reply carrying an errno
        // used to settle every request before it as done.
        let mut ledger = Ledger::new(0);
        let mut p = send(&mut ledger, 6);
        let out = p.on_reply(&mut ledger, &reply(p.marker, 22));
        assert!(p.complete);
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|s| matches!(
            s,
            Settled::Failed { owner: Owner::Slot(6), why, .. }
                if why.errno == 22 && why.detail.as_deref() == Some(REFUSED_MARKER)
        )));
        assert_eq!(ledger.in_flight(), 0);
    }
}
