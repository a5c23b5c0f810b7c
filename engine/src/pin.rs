//! pin: bind-mounts slots' namespaces under the pin directory and keeps the pool's record
//! of them; unpins slots given back.
//!
//! The record names every pin, with its namespace's id, before the pin exists, so no pin
//! of the pool is ever without the record's evidence (`ownership`).

use std::path::Path;

use crate::engine::Engine;
use crate::netns;
use crate::netns::PooledNs;
use crate::ownership::record::PinRecord;
use crate::reconcile::Failure;
use crate::result::EngineError;
use crate::slot::{Slot, SlotSpec};
use crate::sock;

/// Namespace fds opened for pinning that are closed together (one io_uring_enter).
const PIN_CLOSE_BATCH: usize = 32;

impl Engine {
    /// Pins `slots` (indexes into `specs` and `ns`) under `dir`: per slot, pinned or why
    /// not.
    pub(crate) fn pin_all(
        &mut self,
        specs: &[SlotSpec],
        ns: &mut [Option<PooledNs>],
        slots: &[usize],
        dir: &Path,
    ) -> Vec<(usize, Result<(), Failure>)> {
        let all = |why: Failure| slots.iter().map(|&i| (i, Err(why.clone()))).collect();
        if let Err(e) = netns::prepare_pin_dir(dir) {
            return all(io_failure(&e, format!("preparing {}", dir.display())));
        }
        let mut out = Vec::with_capacity(slots.len());
        let mut planned = Vec::new();
        for &i in slots {
            let Some(n) = ns[i].as_ref() else {
                continue;
            };
            // The namespace's id from its socket: no nsfs fd is opened for it yet.
            match sock::netns_cookie(&n.sock) {
                Ok(ns_id) => planned.push((i, ns_id)),
                Err(e) => out.push((i, Err(io_failure(&e, "reading the namespace id".into())))),
            }
        }
        let names: Vec<PinRecord> = planned
            .iter()
            .map(|&(i, ns_id)| PinRecord {
                name: specs[i].name.clone(),
                ns_id,
            })
            .collect();
        if let Err(e) = self.record_pins(names, &[]) {
            let e = std::io::Error::other(e.to_string());
            return all(io_failure(&e, "recording the pins".into()));
        }
        let mut failed = Vec::new();
        // Each nsfs fd opened to pin is closed once pinned, a few at a time through the
        // ring: a pinned slot holds one fd (its socket), and pinning needs only a handful
        // more at any moment, whatever the number of slots.
        let mut opened = Vec::with_capacity(PIN_CLOSE_BATCH);
        for (i, _) in planned {
            let path = dir.join(&specs[i].name);
            let n = ns[i].as_mut().expect("planned slots hold a namespace");
            let pinned = n.nsfd().and_then(|fd| netns::pin(fd, &path));
            opened.extend(n.nsfd.take());
            if opened.len() >= PIN_CLOSE_BATCH {
                if let Err(e) = self.ring.close_all(std::mem::take(&mut opened)) {
                    tracing::warn!("closing namespace fds after pinning: {e}");
                }
            }
            match pinned {
                Ok(()) => out.push((i, Ok(()))),
                Err(e) => {
                    failed.push(specs[i].name.clone());
                    let why = io_failure(&e, format!("bind-mounting {}", path.display()));
                    out.push((i, Err(why)));
                }
            }
        }
        if let Err(e) = self.ring.close_all(opened) {
            tracing::warn!("closing namespace fds after pinning: {e}");
        }
        if !failed.is_empty() {
            // The pins that were not made leave the record (best effort: a name whose
            // path holds nothing of the pool is judged a stranger's anyway).
            let _ = self.record_pins(Vec::new(), &failed);
        }
        out
    }

    /// Adds `add` to the record's pins and drops those named in `drop` (one atomic
    /// rewrite); nothing without a claim.
    pub(crate) fn record_pins(
        &mut self,
        add: Vec<PinRecord>,
        drop: &[String],
    ) -> Result<(), crate::ownership::record::RecordError> {
        let Some(lock) = &mut self.lock else {
            return Ok(());
        };
        let mut r = lock.current().cloned().unwrap_or_else(|| {
            crate::ownership::record::PoolRecord::new(&self.config.prefix, self.config.group)
        });
        r.pins
            .retain(|p| !drop.contains(&p.name) && !add.iter().any(|a| a.name == p.name));
        r.pins.extend(add);
        lock.write(r)
    }

    /// Unpins `slots` and drops their pins from the record, after they are gone.
    pub(crate) fn unpin_slots(&mut self, slots: &[Slot]) -> Result<(), EngineError> {
        let unpinned = unpin_all(slots);
        let names: Vec<String> = slots
            .iter()
            .filter(|s| s.pinned_at().is_some())
            .map(|s| s.spec.name.clone())
            .collect();
        if !names.is_empty() {
            self.record_pins(Vec::new(), &names)
                .map_err(crate::ownership::gc::GcError::from)?;
        }
        unpinned
    }
}

/// Unpins and closes slots (the kernel then destroys their namespaces and veth pairs).
pub fn release(slots: Vec<Slot>) -> Result<(), EngineError> {
    unpin_all(&slots)
}

fn unpin_all(slots: &[Slot]) -> Result<(), EngineError> {
    let mut first_err = None;
    for slot in slots {
        if let Some(path) = slot.pinned_at() {
            if let Err(e) = netns::unpin(path) {
                first_err.get_or_insert(EngineError::Io {
                    what: format!("unpin {}", path.display()),
                    source: e,
                });
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// A failure of a step outside netlink (an I/O error while doing `doing`).
pub(crate) fn io_failure(e: &std::io::Error, doing: String) -> Failure {
    Failure {
        errno: e.raw_os_error().unwrap_or(0),
        ext_ack: None,
        detail: Some(format!("{doing}: {e}")),
    }
}
