//! seq: the sequence numbers of one netlink socket, and what each one in flight is for.
//!
//! Every socket has exactly one [`Ledger`]: the call's slot sockets one each, the host
//! socket one that `HostNs` keeps for its dumps and single requests and lends to each
//! call. A number is never reused while its request is unsettled, so a reply can only
//! settle the request it answers.

use slab::Slab;

use crate::op::Op;
use crate::owner::Owner;

/// What a sequence number in flight belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    /// A request of a call, for `owner`.
    Request { owner: Owner, op: Op },
    /// The end marker of a send.
    Marker,
    /// A request or dump sent and answered on its own (`HostNs`), settled by its sender.
    Direct,
}

/// The sequence numbers in flight on one socket: seq = base + slab key (wrapping), so a
/// lookup is O(1).
#[derive(Debug)]
pub(crate) struct Ledger {
    entries: Slab<Tag>,
    base: u32,
}

impl Ledger {
    pub fn new(base: u32) -> Self {
        Self {
            entries: Slab::new(),
            base,
        }
    }

    /// Registers a request and returns its sequence number.
    pub fn register(&mut self, tag: Tag) -> u32 {
        let key = self.entries.insert(tag);
        self.base
            .wrapping_add(u32::try_from(key).expect("fewer than 2^32 requests in flight"))
    }

    /// Removes and returns the owner of `seq`, if it is in flight.
    pub fn settle(&mut self, seq: u32) -> Option<Tag> {
        let key = seq.wrapping_sub(self.base) as usize;
        self.entries.try_remove(key)
    }

    /// Requests still in flight.
    #[cfg(any(test, feature = "internals"))]
    pub fn in_flight(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_reused_only_after_settling() {
        let mut ledger = Ledger::new(10);
        let a = ledger.register(Tag::Marker);
        let b = ledger.register(Tag::Marker);
        assert_ne!(a, b);
        ledger.settle(a);
        let c = ledger.register(Tag::Marker);
        assert_eq!(c, a);
        assert_eq!(ledger.settle(b), Some(Tag::Marker));
        assert_eq!(ledger.settle(b), None);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut ledger = Ledger::new(u32::MAX);
        assert_eq!(ledger.register(Tag::Marker), u32::MAX);
        assert_eq!(ledger.register(Tag::Direct), 0);
        assert_eq!(ledger.settle(0), Some(Tag::Direct));
    }
}
