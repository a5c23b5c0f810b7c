//! netslot: the engine through its library API (Engine::new, provision_with, teardown).
//! Namespaces are held by fds, never pinned; IPv6 is off (the engine's default).
//!
//! Two regimes (design.md): COLD creates every namespace inside the timed step; WARM
//! starts the engine with a pool of N namespaces (pool_low = 1, pool_high = N) and waits in
//! the untimed setup until the pool is full. `netslot-unbounded` is COLD with the
//! engine's RTNL hold budget off, to show what the budget costs and what it spares others.
//! `netslot-microvm` is COLD with `kind: SlotKind::Microvm` (a tap owned by `TAP_OWNER` in
//! every slot), everything else as `netslot`. The engine has no public "pool ready" query,
//! so setup watches this process's fd count: each pooled namespace holds one socket.

use std::time::{Duration, Instant};

use netslot::microvm::{SlotKind, TapConfig};
use netslot::{Engine, EngineConfig, Slot};

use super::{Provision, RunSpec, System, SystemError, TAP_OWNER};

/// How long WARM setup waits for the pool to fill.
const FILL_MAX: Duration = Duration::from_secs(300);

/// The engine and the slots it made.
pub struct NetslotSystem {
    /// Pre-fill the pool with N namespaces before the timed step.
    pub warm: bool,
    /// The engine's RTNL hold budget (`EngineConfig::max_rtnl_hold`).
    pub max_rtnl_hold: Option<Duration>,
    /// What every slot is (`EngineConfig::kind`).
    pub kind: SlotKind,
    engine: Option<Engine>,
    slots: Vec<Slot>,
}

impl Default for NetslotSystem {
    /// COLD, with the engine's own defaults (the hold budget on).
    fn default() -> Self {
        Self {
            warm: false,
            max_rtnl_hold: EngineConfig::default().max_rtnl_hold,
            kind: SlotKind::Standard,
            engine: None,
            slots: Vec::new(),
        }
    }
}

impl NetslotSystem {
    /// COLD with the hold budget off: host ends come up by one group change for the
    /// whole batch, however long it holds RTNL (the fewest acquisitions).
    pub fn unbounded() -> Self {
        Self {
            max_rtnl_hold: None,
            ..Self::default()
        }
    }

    /// COLD, microVM slots: a tap named `tap0`, owned by `TAP_OWNER`, single-queue, in
    /// every slot; everything else as [`NetslotSystem::default`].
    pub fn microvm() -> Self {
        Self {
            kind: SlotKind::Microvm(TapConfig {
                owner: Some(TAP_OWNER),
                ..TapConfig::default()
            }),
            ..Self::default()
        }
    }

    /// The WARM regime: the pool holds N namespaces before the timed step.
    pub fn warm() -> Self {
        Self {
            warm: true,
            ..Self::default()
        }
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

impl System for NetslotSystem {
    fn setup(&mut self, spec: &RunSpec) -> Result<(), SystemError> {
        let base = open_fds();
        // WARM: refill below 1, up to N: full before the step, and no refilling during it
        // until the pool runs dry at the very end.
        let (pool_low, pool_high) = if self.warm { (1, spec.n) } else { (0, 0) };
        let engine = Engine::new(EngineConfig {
            prefix: spec.prefix.clone(),
            group: spec.group,
            pool_low,
            pool_high,
            max_rtnl_hold: self.max_rtnl_hold,
            kind: self.kind.clone(),
            ..Default::default()
        })
        .map_err(SystemError::ctx("Engine::new"))?;
        self.engine = Some(engine);
        if self.warm {
            // Engine::new opened a few fds of its own (host socket, ring, netns fd).
            let t = Instant::now();
            while open_fds() < base + spec.n {
                if t.elapsed() > FILL_MAX {
                    return Err(SystemError(format!(
                        "the pool did not fill to {} namespaces in {FILL_MAX:?}",
                        spec.n
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    fn provision(&mut self, spec: &RunSpec) -> Result<Provision, SystemError> {
        let engine = self.engine.as_mut().expect("setup ran");
        // The engine shows completion per chunk only (progress callback after a chunk's
        // slot and host requests are acknowledged): each slot of a chunk gets the time
        // from the previous callback to its chunk's callback.
        let mut latencies = Vec::with_capacity(spec.n);
        let mut last = Instant::now();
        let mut last_done = 0;
        let out = engine
            .provision_with(spec.n, |done, _| {
                let now = Instant::now();
                let us = (now - last).as_secs_f64() * 1e6;
                latencies.extend(std::iter::repeat_n(us, done - last_done));
                last = now;
                last_done = done;
            })
            .map_err(SystemError::ctx("provision"))?;
        let report = out.report;
        let mut first_error = None;
        for s in out.slots {
            match s {
                Ok(slot) => self.slots.push(slot),
                Err(e) => {
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        Ok(Provision {
            ok: report.provisioned,
            failed: report.failed,
            latencies_us: latencies,
            latency_kind: "chunk: previous progress callback to this chunk's callback \
                           (excludes the final group up)"
                .into(),
            extra: serde_json::to_value(&report).ok(),
            first_error,
        })
    }

    fn verify_slots(&mut self, _spec: &RunSpec) -> Result<Option<usize>, SystemError> {
        if self.kind.tap().is_none() {
            return Ok(None);
        }
        let mut paths = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let fd = slot.netns_fd().map_err(SystemError::ctx(format!(
                "namespace of slot {}",
                slot.spec().id
            )))?;
            paths.push(std::path::PathBuf::from(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&fd)
            )));
        }
        super::common::taps_up(paths.iter().map(|p| p.as_path())).map(Some)
    }

    fn teardown(&mut self, _spec: &RunSpec) -> Result<(), SystemError> {
        let slots = std::mem::take(&mut self.slots);
        if let Some(mut engine) = self.engine.take() {
            engine
                .teardown(slots)
                .map_err(SystemError::ctx("teardown"))?;
        }
        Ok(())
    }
}
