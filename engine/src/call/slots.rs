//! call::slots: what one call knows about each of its slots (namespace given, first
//! failure, whether its veth may exist, pinned), and how settled replies change it.

use crate::op::Op;
use crate::owner::Owner;
use crate::reconcile::{Failure, Settled};
use crate::result::SlotError;
use crate::slot::SlotSpec;

/// How a slot's veth request ended, which decides what rollback must delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VethFate {
    /// Not settled yet, or refused by the kernel: nothing to delete.
    Absent,
    /// Created, or possibly created (its reply was lost): delete on rollback.
    Present,
}

/// Per-slot state of one call, indexed like its specs.
#[derive(Debug)]
pub(crate) struct Slots {
    pub specs: Vec<SlotSpec>,
    /// Whether the driver holds a namespace (and so a socket) for the slot.
    pub has_ns: Vec<bool>,
    pub errors: Vec<Option<SlotError>>,
    pub veth: Vec<VethFate>,
    pub pinned: Vec<bool>,
}

impl Slots {
    pub fn new(specs: Vec<SlotSpec>) -> Self {
        let n = specs.len();
        Self {
            specs,
            has_ns: vec![false; n],
            errors: vec![None; n],
            veth: vec![VethFate::Absent; n],
            pinned: vec![false; n],
        }
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether slot `i` holds a namespace and has not failed.
    pub fn is_ok(&self, i: usize) -> bool {
        self.errors[i].is_none() && self.has_ns[i]
    }

    /// Records slot `i`'s first failure (later ones are consequences of it).
    pub fn fail(&mut self, i: usize, op: Op, why: Failure) {
        if self.errors[i].is_none() {
            let spec = &self.specs[i];
            self.errors[i] = Some(SlotError {
                id: spec.id,
                name: spec.name.clone(),
                op,
                errno: why.errno,
                ext_ack: why.ext_ack,
                detail: why.detail,
            });
        }
    }

    /// Adds `text` to slot `i`'s error (what rollback could not undo).
    pub fn note(&mut self, i: usize, text: String) {
        if let Some(e) = &mut self.errors[i] {
            e.detail = Some(match e.detail.take() {
                Some(d) => format!("{d}; {text}"),
                None => text,
            });
        }
    }

    /// Applies settled requests. A failure of a sub-batch's request fails the slots in
    /// `members[k]`; a failure of the pool's fails every slot of the call still standing.
    pub fn apply(&mut self, settled: Vec<Settled>, members: &[Vec<usize>]) {
        for s in settled {
            let Settled::Failed { owner, op, why } = s else {
                if let Settled::Done {
                    owner: Owner::Slot(i),
                    op: Op::Veth,
                } = s
                {
                    self.veth[i] = VethFate::Present;
                }
                continue;
            };
            match owner {
                Owner::Slot(i) => {
                    // Unless the kernel is known not to have made it, the veth may exist
                    // (a lost reply, a refused marker, an overrun): rollback deletes it.
                    if op == Op::Veth && !why.known_undone() {
                        self.veth[i] = VethFate::Present;
                    }
                    self.fail(i, op, why);
                }
                Owner::SubBatch(k) => {
                    for &i in members.get(k).map_or(&[][..], Vec::as_slice) {
                        self.fail(i, op, why.clone());
                    }
                }
                Owner::Pool => {
                    for i in 0..self.len() {
                        if self.is_ok(i) {
                            self.fail(i, op, why.clone());
                        }
                    }
                }
            }
        }
    }

    /// Failed slots in `range` that still hold a namespace: what rollback undoes.
    pub fn doomed(&self, range: std::ops::Range<usize>) -> Vec<usize> {
        range
            .filter(|&i| self.errors[i].is_some() && self.has_ns[i])
            .collect()
    }
}
