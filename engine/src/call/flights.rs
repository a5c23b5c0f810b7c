//! call::flights: the sends of one step of a call while they are in the air, round by
//! round, and what their replies settle. Sans-IO: the driver sends and receives; this
//! decides what each outcome means.
//!
//! The first round sends every flight and reads one datagram of replies for each; later
//! rounds only read again on sockets whose end marker has not arrived yet (each error
//! reply before it is a datagram of its own).

use std::time::Duration;

use crate::batch::{Flight, Sock};
use crate::reconcile::{Settled, LOST_TO_OVERRUN, NOT_SENT};
use crate::seq::Ledger;

/// Room for one reply datagram: an error reply echoes at most a capped header or one
/// small request, plus the extended-ACK text.
pub(crate) const REPLY_BUF: usize = 8192;

/// One flight of a round, as the driver sends it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Send<'a> {
    /// Index of the flight in its step, to hand the outcome back with.
    pub index: usize,
    pub to: Sock,
    /// The bytes to send in this round (first round only), else None: read only.
    pub bytes: Option<&'a [u8]>,
    /// Sequence numbers still awaited, in send order (for a driver that plays the
    /// kernel: the benches and fuzzers).
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub requests: &'a [u32],
    /// Sequence number of the send's end marker.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub marker: u32,
}

/// What the driver saw of one flight in one round.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome<'a> {
    /// sendmsg's result in the first round (bytes sent, or -errno); ignored later.
    pub sent: i32,
    /// One received datagram, or the receive's errno.
    pub reply: Result<&'a [u8], i32>,
}

/// The sends of one step and what they settled so far.
#[derive(Debug)]
pub(crate) struct Flights {
    flights: Vec<Flight>,
    first: bool,
    settled: Vec<Settled>,
    /// Time the driver reported for this step's rounds together.
    pub took: Duration,
}

/// The ledger of socket `to`: the host's, or slot `i`'s own.
pub(crate) fn ledger_of<'a>(
    host: &'a mut Ledger,
    slots: &'a mut [Ledger],
    to: Sock,
) -> &'a mut Ledger {
    match to {
        Sock::Host => host,
        Sock::Slot(i) => &mut slots[i],
    }
}

impl Flights {
    pub fn new(flights: Vec<Flight>) -> Self {
        Self {
            flights,
            first: true,
            settled: Vec::new(),
            took: Duration::ZERO,
        }
    }

    /// Requests the step carries (end markers not counted).
    pub fn requests(&self) -> usize {
        self.flights.iter().map(|f| f.pending.requests.len()).sum()
    }

    /// Whether every flight's replies are settled.
    pub fn is_done(&self) -> bool {
        self.flights.iter().all(|f| f.pending.complete)
    }

    /// The flights of the next round.
    pub fn round(&self) -> Vec<Send<'_>> {
        self.flights
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.pending.complete)
            .map(|(index, f)| Send {
                index,
                to: f.to,
                bytes: self.first.then_some(&f.bytes[..]),
                requests: &f.pending.requests,
                marker: f.pending.marker,
            })
            .collect()
    }

    /// Settles what flight `index` got in this round.
    pub fn settle(
        &mut self,
        host: &mut Ledger,
        slots: &mut [Ledger],
        index: usize,
        seen: Outcome<'_>,
    ) {
        let Some(f) = self.flights.get_mut(index) else {
            return;
        };
        if f.pending.complete {
            return;
        }
        let ledger = ledger_of(host, slots, f.to);
        let pending = &mut f.pending;
        if self.first && seen.sent < 0 {
            self.settled
                .extend(pending.give_up(ledger, -seen.sent, NOT_SENT.into()));
            return;
        }
        let out = match seen.reply {
            Ok(bytes) => pending.on_reply(ledger, bytes),
            // The receive buffer overran: replies were dropped. Read on what is still
            // queued; the marker no longer proves success (see reconcile).
            Err(libc::ENOBUFS) => {
                pending.overrun = true;
                Vec::new()
            }
            Err(libc::EAGAIN) if pending.overrun => {
                pending.give_up(ledger, libc::ENOBUFS, LOST_TO_OVERRUN.into())
            }
            Err(libc::EAGAIN) => pending.give_up(
                ledger,
                0,
                "no reply for this request: the kernel's replies stopped before the end marker"
                    .into(),
            ),
            Err(libc::EMSGSIZE) => pending.give_up(
                ledger,
                0,
                format!("a reply was longer than {REPLY_BUF} bytes"),
            ),
            Err(errno) => pending.give_up(
                ledger,
                errno,
                "reading replies failed; replies may have been lost".into(),
            ),
        };
        self.settled.extend(out);
    }

    /// Ends a round that took `took`.
    pub fn end_round(&mut self, took: Duration) {
        self.first = false;
        self.took += took;
    }

    /// Requests this step has settled so far: (done, failed).
    #[cfg(feature = "internals")]
    pub fn settled_counts(&self) -> (usize, usize) {
        let done = self
            .settled
            .iter()
            .filter(|s| matches!(s, Settled::Done { .. }))
            .count();
        (done, self.settled.len() - done)
    }

    /// What the step settled, once it is done.
    pub fn take_settled(&mut self) -> Vec<Settled> {
        std::mem::take(&mut self.settled)
    }

    /// Forgets every send buffer without freeing it: the ring failed for good and the
    /// kernel may still read them (see `ring`).
    pub fn leak(&mut self) {
        for f in &mut self.flights {
            std::mem::forget(std::mem::take(&mut f.bytes));
        }
    }
}
