//! owner: who a request is for, as the sequence ledger files it and the call settles it.
//!
//! A request acts for one slot (its own socket's requests, its host address), for one
//! sub-batch of host ends (the group change that brings them up together), or for the
//! pool as a whole (a tc-block pool's one filter). A settled failure spreads to exactly
//! the slots its owner stands for, and to no other.

/// Who one request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Owner {
    /// Slot `i` of the call (an index into the call's specs).
    Slot(usize),
    /// Sub-batch `k` of the call (its host ends share one device group).
    SubBatch(usize),
    /// Every slot of the pool at once (the shared tc block's filter).
    Pool,
}
