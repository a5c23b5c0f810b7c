//! recycle: gives released pooled slots back for reuse when the kernel shows each one
//! exactly as the pool made it, and destroys the others; no slot is provisioned here.
//!
//! - `inspect` reads a slot's namespace over its own socket (links, addresses, routes,
//!   rules, neighbours);
//! - `judge` compares that with what the pool makes for the slot's spec (pure), and
//!   `judge_microvm` does for a microVM slot (its tap, the redirect on both devices);
//! - `occupants` finds processes still inside the namespace and mounts of it elsewhere.
//!
//! A clean slot keeps its namespace, veth pair, addresses, pin and XDP attachment; its
//! counters are read (handed back in [`Recycled::counters`]) and reset. Nothing is
//! written to the kernel for it but the counters map: a recycle changes no network
//! configuration, so it takes RTNL only for reading (the link dump). A slot that is not
//! clean is destroyed as [`Engine::release_slots`] destroys it: what a tenant changed is
//! never put back, since a fresh slot costs a handful of RTNL acquisitions and a
//! put-back would have to know every kind of change (see docs/architecture.md,
//! "Recycling a slot").

mod inspect;
mod judge;
mod judge_microvm;
mod occupants;

pub use judge::Dirty;

use std::os::fd::AsFd;
use std::path::Path;

use crate::engine::Engine;
use crate::netns;
use crate::result::{EngineError, SlotCounters, SlotError};
use crate::slot::{Slot, SlotSpec};

/// What [`Engine::recycle`] did with each slot it was given.
#[derive(Debug)]
pub struct Recycled {
    /// The slots that are as the pool made them, counters reset: ready for the next
    /// tenant, in the order given.
    pub clean: Vec<Slot>,
    /// The slots destroyed instead: each with why, and whether destroying it worked.
    pub destroyed: Vec<Destroyed>,
    /// The counters every given slot had reached (read before the reset; slots that saw
    /// no traffic are absent). Empty when the counters are off.
    pub counters: Vec<SlotCounters>,
}

/// A released slot that was not clean and was destroyed.
#[derive(Debug)]
pub struct Destroyed {
    /// The slot.
    pub spec: SlotSpec,
    /// What differed from what the pool made.
    pub why: Dirty,
    /// Whether its host end, pin and namespace went.
    pub result: Result<(), SlotError>,
}

impl Engine {
    /// Takes back slots a tenant is done with. Each one the kernel shows exactly as the
    /// pool made it (devices, addresses, routes, rules and neighbours, no process of
    /// another program inside its namespace, no mount of it but its pin) is kept: its
    /// counters are read and reset and it is returned in [`Recycled::clean`] for the
    /// caller's warm pool. Every other one is destroyed (host end deleted, unpinned,
    /// closed) and listed with the first difference found.
    pub fn recycle(&mut self, slots: Vec<Slot>) -> Result<Recycled, EngineError> {
        let started = std::time::Instant::now();
        let redirect = self
            .tap_redirect
            .as_ref()
            .map(netslot_bpf::TapRedirect::prog_id);
        let mut verdicts: Vec<Result<(), Dirty>> =
            slots.iter().map(|s| inspect_one(s, redirect)).collect();
        let inspected = started.elapsed();
        self.find_occupants(&slots, &mut verdicts);
        let occupants = started.elapsed() - inspected;
        let ifindexes: Vec<u32> = slots.iter().map(|s| s.spec.ifindex).collect();
        let counters: Vec<SlotCounters> = self
            .counters()?
            .into_iter()
            .filter(|c| ifindexes.contains(&c.ifindex))
            .collect();
        let mut clean = Vec::new();
        let mut dirty = Vec::new();
        for (slot, verdict) in slots.into_iter().zip(verdicts) {
            match verdict {
                Ok(()) => {
                    self.forget_counters(slot.spec.ifindex)?;
                    clean.push(slot);
                }
                Err(why) => dirty.push((slot, why)),
            }
        }
        tracing::debug!(
            slots = ifindexes.len(),
            inspect_us = inspected.as_micros() as u64,
            occupants_us = occupants.as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "recycle: judged"
        );
        let (dirty, whys): (Vec<Slot>, Vec<Dirty>) = dirty.into_iter().unzip();
        let specs: Vec<SlotSpec> = dirty.iter().map(|s| s.spec.clone()).collect();
        for (spec, why) in specs.iter().zip(&whys) {
            tracing::info!(slot = %spec.name, "recycle: destroyed instead: {why}");
        }
        let results = if dirty.is_empty() {
            Vec::new()
        } else {
            self.release_slots(dirty)?
        };
        let destroyed = specs
            .into_iter()
            .zip(whys)
            .zip(results)
            .map(|((spec, why), result)| Destroyed { spec, why, result })
            .collect();
        Ok(Recycled {
            clean,
            destroyed,
            counters,
        })
    }

    /// Marks as occupied every slot still judged clean whose namespace another process
    /// runs in or that is mounted somewhere besides its pin.
    fn find_occupants(&self, slots: &[Slot], verdicts: &mut [Result<(), Dirty>]) {
        let mut inodes = Vec::with_capacity(slots.len());
        for (slot, v) in slots.iter().zip(verdicts.iter_mut()) {
            if v.is_err() {
                inodes.push(None);
                continue;
            }
            let ino = netns::from_socket(slot.ns.sock.as_fd())
                .and_then(|fd| occupants::inode(fd.as_fd()));
            match ino {
                Ok(ino) => inodes.push(Some(ino)),
                Err(e) => {
                    *v = Err(Dirty::Unreadable {
                        what: format!("the namespace's inode: {e}"),
                    });
                    inodes.push(None);
                }
            }
        }
        let pins: Vec<&Path> = slots.iter().filter_map(Slot::pinned_at).collect();
        let all: Vec<u64> = inodes.iter().flatten().copied().collect();
        let held = occupants::holders(&all, &pins);
        for (v, ino) in verdicts.iter_mut().zip(inodes) {
            if let Some(by) = ino.and_then(|i| held.get(&i)) {
                *v = Err(Dirty::Occupied { by: by.clone() });
            }
        }
    }

    /// Resets one host end's counters (its map entry goes; the program makes it anew at
    /// the next packet). Nothing when the counters are off.
    pub(crate) fn forget_counters(&self, ifindex: u32) -> Result<(), EngineError> {
        let Some(c) = &self.counters else {
            return Ok(());
        };
        match c.forget(ifindex) {
            Err(e) if !e.not_found() => Err(EngineError::Bpf {
                what: format!("reset the counters of ifindex {ifindex}"),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

/// Reads one slot's namespace and judges it (`redirect`: the tap redirect program's id,
/// in a microVM pool).
fn inspect_one(slot: &Slot, redirect: Option<u32>) -> Result<(), Dirty> {
    if slot.spec.leased || slot.spec.ipv6.is_some() {
        return Err(Dirty::NotPooled);
    }
    let state = inspect::read(&slot.ns.sock).map_err(|e| Dirty::Unreadable {
        what: format!("its namespace: {e}"),
    })?;
    judge::judge(&slot.spec, &state, redirect)
}
