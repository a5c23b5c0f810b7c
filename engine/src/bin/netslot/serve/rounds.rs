//! rounds: the engine thread. Collects requests for one coalescing window (or until a
//! round is full), answers them with one engine batch per kind, and keeps the warm pool
//! between its water marks.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

use netslot::protocol::{
    Attachment, AttachmentKey, ErrorCode, Op, PooledSlot, Response, Stats, Status,
};
use netslot::{mac_to_string, AttachTarget, Engine, Slot, SlotError, SlotSpec};

/// What connection threads send the engine thread.
pub(crate) enum Work {
    /// A request and where its answer goes.
    Job {
        id: u64,
        op: Op,
        reply: Sender<Response>,
    },
    /// Stop: answer what came before, then tear down (unless kept).
    Shutdown,
}

/// How rounds are formed and the pool is kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoundConfig {
    /// How long the first request of a round waits for company.
    pub window: Duration,
    /// Most requests per round.
    pub max_round: usize,
    /// Refill the warm pool below this many slots…
    pub pool_low: usize,
    /// …up to this many.
    pub pool_high: usize,
    /// Leave every slot in place on exit.
    pub keep_on_exit: bool,
}

/// One attachment as the daemon holds it.
struct Held {
    spec: SlotSpec,
    netns: PathBuf,
    /// Whether it added the container's default route (its container's first attachment).
    default_route: bool,
}

/// The engine thread's state.
pub(crate) struct Rounds {
    engine: Engine,
    config: RoundConfig,
    attachments: BTreeMap<AttachmentKey, Held>,
    warm: VecDeque<Slot>,
    handed_out: BTreeMap<String, Slot>,
    stats: Stats,
}

type Job = (u64, Op, Sender<Response>);
/// A detach to make: whose, and who waits for the answer (none for GC's own).
type DetachJob = (AttachmentKey, Option<(u64, Sender<Response>)>);

impl Rounds {
    pub fn new(engine: Engine, config: RoundConfig, reconciled_removed: usize) -> Self {
        Self {
            engine,
            config,
            attachments: BTreeMap::new(),
            warm: VecDeque::new(),
            handed_out: BTreeMap::new(),
            stats: Stats {
                reconciled_removed,
                ..Default::default()
            },
        }
    }

    /// Serves until `Shutdown` (or every sender is gone), then tears down.
    pub fn serve(mut self, rx: Receiver<Work>) {
        let mut stopping = false;
        while !stopping {
            let first = if self.warm.len() < self.config.pool_low {
                match rx.try_recv() {
                    Ok(w) => w,
                    Err(TryRecvError::Empty) => {
                        self.refill();
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(w) => w,
                    Err(_) => break,
                }
            };
            let mut round: Vec<Job> = Vec::new();
            match first {
                Work::Job { id, op, reply } => round.push((id, op, reply)),
                Work::Shutdown => stopping = true,
            }
            let deadline = Instant::now() + self.config.window;
            while !stopping && round.len() < self.config.max_round {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(Work::Job { id, op, reply }) => round.push((id, op, reply)),
                    Ok(Work::Shutdown) => stopping = true,
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            if stopping {
                // Whatever was already queued is answered too.
                while let Ok(w) = rx.try_recv() {
                    if let Work::Job { id, op, reply } = w {
                        round.push((id, op, reply));
                    }
                }
            }
            if !round.is_empty() {
                self.round(round);
            }
        }
        self.finish();
    }

    /// Answers one round: cheap requests at once, then one engine batch per kind
    /// (detaches first, which frees ids for the attaches).
    fn round(&mut self, round: Vec<Job>) {
        let started = Instant::now();
        let requests = round.len();
        self.stats.largest_round = self.stats.largest_round.max(round.len());
        let mut attaches = Vec::new();
        let mut detaches: Vec<DetachJob> = Vec::new();
        let mut acquires = Vec::new();
        let mut releases = Vec::new();
        let mut gcs = Vec::new();
        for (id, op, reply) in round {
            match op {
                Op::Status => self.answer(&reply, self.status(id)),
                Op::Stats => {
                    let mut r = Response::ok(id);
                    r.stats = Some(self.current_stats());
                    self.answer(&reply, r);
                }
                Op::Check { key } => {
                    let r = self.check(id, &key);
                    self.answer(&reply, r);
                }
                Op::Attach { key, netns } => attaches.push((id, key, netns, reply)),
                Op::Detach { key } => detaches.push((key, Some((id, reply)))),
                Op::Gc { network, valid } => gcs.push((id, network, valid, reply)),
                Op::Acquire => acquires.push((id, reply)),
                Op::Release { name } => releases.push((id, name, reply)),
            }
        }
        for (id, network, valid, reply) in gcs {
            // A GC speaks for its own network only: the valid entries are that network's,
            // and attachments of other networks are not its to judge.
            let keep: std::collections::BTreeSet<AttachmentKey> = valid
                .into_iter()
                .map(|k| AttachmentKey {
                    network: network.clone(),
                    ..k
                })
                .collect();
            let gone: Vec<AttachmentKey> = self
                .attachments
                .keys()
                .filter(|k| k.network == network && !keep.contains(*k))
                .cloned()
                .collect();
            detaches.extend(gone.iter().map(|k| (k.clone(), None)));
            let mut r = Response::ok(id);
            r.removed = Some(gone);
            self.answer(&reply, r);
        }
        let counts = (
            attaches.len(),
            detaches.len(),
            acquires.len(),
            releases.len(),
        );
        self.detach_all(detaches);
        self.release_all(releases);
        self.attach_all(attaches);
        self.acquire_all(acquires);
        let (attach, detach, acquire, release) = counts;
        let took_us = started.elapsed().as_micros() as u64;
        if attach + detach + acquire + release > 0 {
            tracing::info!(requests, attach, detach, acquire, release, took_us, "round");
        } else {
            // Status, stats, checks: no kernel change, so not worth a line by default.
            tracing::debug!(requests, took_us, "round");
        }
    }

    fn answer(&mut self, reply: &Sender<Response>, r: Response) {
        self.stats.requests += 1;
        // A client that hung up has nobody to read the answer: nothing to do.
        let _ = reply.send(r);
    }

    fn status(&self, id: u64) -> Response {
        let mut r = Response::ok(id);
        r.status = Some(Status {
            ready: true,
            daemon_version: env!("CARGO_PKG_VERSION").into(),
            protocol_versions: vec![netslot::protocol::VERSION],
            attachments: self.attachments.len(),
            pooled: self.warm.len(),
        });
        r
    }

    fn current_stats(&self) -> Stats {
        Stats {
            attachments: self.attachments.len(),
            pooled: self.warm.len(),
            handed_out: self.handed_out.len(),
            ..self.stats.clone()
        }
    }

    /// An attachment is present when its host end exists in the kernel with the
    /// expected name, index and address (the container side is the plugin's to read).
    fn check(&self, id: u64, key: &AttachmentKey) -> Response {
        let Some(held) = self.attachments.get(key) else {
            return Response::err(id, ErrorCode::NotFound, format!("no attachment {key:?}"));
        };
        let spec = &held.spec;
        let host = self.engine.host();
        let link = host.links().map(|ls| {
            ls.into_iter()
                .any(|l| l.index == spec.ifindex && l.name == spec.name)
        });
        let addr = host.addresses().map(|a| {
            a.into_iter()
                .any(|a| a.index == spec.ifindex && a.addr == std::net::IpAddr::V4(spec.host_ip))
        });
        match (link, addr) {
            (Ok(true), Ok(true)) => {
                let mut r = Response::ok(id);
                r.attachment = Some(attachment(key, held));
                r
            }
            (Ok(false), _) => Response::err(
                id,
                ErrorCode::NotFound,
                format!(
                    "slot {} (host end {}): the kernel has no such device",
                    spec.id, spec.name
                ),
            ),
            (_, Ok(false)) => Response::err(
                id,
                ErrorCode::NotFound,
                format!(
                    "slot {} (host end {}): address {} missing",
                    spec.id, spec.name, spec.host_ip
                ),
            ),
            (Err(e), _) | (_, Err(e)) => Response::err(
                id,
                ErrorCode::Kernel,
                format!("slot {}: reading the host namespace: {e}", spec.id),
            ),
        }
    }

    fn attach_all(&mut self, jobs: Vec<(u64, AttachmentKey, PathBuf, Sender<Response>)>) {
        let mut targets = Vec::new();
        let mut waiting = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        // Containers given a default route by an earlier attach of this round.
        let mut routed = std::collections::BTreeSet::new();
        for (id, key, netns, reply) in jobs {
            if self.attachments.contains_key(&key) || !seen.insert(key.clone()) {
                let r = Response::err(
                    id,
                    ErrorCode::Exists,
                    format!(
                        "container {} already has {} on network {:?}: DEL it first",
                        key.container_id, key.ifname, key.network
                    ),
                );
                self.answer(&reply, r);
                continue;
            }
            if let Err(e) = netslot::config::check_ifname(&key.ifname) {
                self.answer(
                    &reply,
                    Response::err(id, ErrorCode::BadRequest, e.to_string()),
                );
                continue;
            }
            match std::fs::File::open(&netns) {
                Ok(f) => {
                    // Only a container's first attachment (in any network) gets the
                    // default route: a second one would fail with EEXIST, and CNI lets a
                    // plugin add routes only where it is asked to.
                    let default_route = !self
                        .attachments
                        .keys()
                        .any(|k| k.container_id == key.container_id)
                        && routed.insert(key.container_id.clone());
                    targets.push(AttachTarget {
                        netns: OwnedFd::from(f),
                        ifname: key.ifname.clone(),
                        default_route,
                    });
                    waiting.push((id, key, netns, default_route, reply));
                }
                Err(e) => {
                    let r = Response::err(
                        id,
                        ErrorCode::Netns,
                        format!(
                            "container {}: open namespace {}: {e}",
                            key.container_id,
                            netns.display()
                        ),
                    );
                    self.answer(&reply, r);
                }
            }
        }
        if targets.is_empty() {
            return;
        }
        self.stats.batches += 1;
        self.stats.attach_batches += 1;
        let started = Instant::now();
        let out = self.engine.attach(targets);
        self.stats.attach_busy_us += started.elapsed().as_micros() as u64;
        match out {
            Ok(out) => {
                for ((id, key, netns, default_route, reply), slot) in
                    waiting.into_iter().zip(out.slots)
                {
                    let r = match slot {
                        Ok(spec) => {
                            tracing::info!(
                                network = %key.network,
                                container = %key.container_id,
                                ifname = %key.ifname,
                                host_end = %spec.name,
                                address = %spec.slot_ip,
                                netns = %netns.display(),
                                "attached"
                            );
                            let held = Held {
                                spec,
                                netns,
                                default_route,
                            };
                            let mut r = Response::ok(id);
                            r.attachment = Some(attachment(&key, &held));
                            self.attachments.insert(key, held);
                            self.stats.attached += 1;
                            r
                        }
                        Err(e) => {
                            tracing::warn!(
                                network = %key.network,
                                container = %key.container_id,
                                ifname = %key.ifname,
                                "attach failed: {e}"
                            );
                            slot_error(id, &key, &e)
                        }
                    };
                    self.answer(&reply, r);
                }
            }
            Err(e) => {
                tracing::warn!(attaches = waiting.len(), "attach batch failed: {e}");
                for (id, key, _, _, reply) in waiting {
                    let r = Response::err(
                        id,
                        ErrorCode::Kernel,
                        format!("container {}: attach: {e}", key.container_id),
                    );
                    self.answer(&reply, r);
                }
            }
        }
    }

    fn detach_all(&mut self, jobs: Vec<DetachJob>) {
        let mut specs = Vec::new();
        let mut owners = Vec::new();
        for (key, reply) in jobs {
            match self.attachments.get(&key) {
                Some(held) if !owners.iter().any(|(k, _): &(AttachmentKey, _)| k == &key) => {
                    specs.push(held.spec.clone());
                    owners.push((key, reply));
                }
                // Unknown (or already in this round): DEL is idempotent.
                _ => {
                    if let Some((id, reply)) = reply {
                        self.answer(&reply, Response::ok(id));
                    }
                }
            }
        }
        if specs.is_empty() {
            return;
        }
        self.stats.batches += 1;
        let results = self.engine.detach(&specs);
        for (i, (key, reply)) in owners.into_iter().enumerate() {
            let outcome = match &results {
                Ok(r) => r[i].clone().map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let r = match outcome {
                Ok(()) => {
                    if let Some(held) = self.attachments.remove(&key) {
                        tracing::info!(
                            network = %key.network,
                            container = %key.container_id,
                            ifname = %key.ifname,
                            host_end = %held.spec.name,
                            by_gc = reply.is_none(),
                            "detached"
                        );
                    }
                    reply.as_ref().map(|(id, _)| Response::ok(*id))
                }
                Err(text) => {
                    tracing::warn!(
                        network = %key.network,
                        container = %key.container_id,
                        ifname = %key.ifname,
                        "detach failed: {text}"
                    );
                    reply.as_ref().map(|(id, _)| {
                        Response::err(
                            *id,
                            ErrorCode::Kernel,
                            format!("container {}: {text}", key.container_id),
                        )
                    })
                }
            };
            if let (Some(r), Some((_, reply))) = (r, reply) {
                self.answer(&reply, r);
            }
        }
    }

    fn acquire_all(&mut self, jobs: Vec<(u64, Sender<Response>)>) {
        let short = jobs.len().saturating_sub(self.warm.len());
        if short > 0 {
            self.stats.batches += 1;
            self.provision_warm(short);
        }
        for (id, reply) in jobs {
            let r = match self.warm.pop_front() {
                Some(slot) => {
                    let spec = slot.spec();
                    let mut r = Response::ok(id);
                    r.slot = Some(PooledSlot {
                        name: spec.name.clone(),
                        netns: slot.pinned_at().map(PathBuf::from).unwrap_or_default(),
                        address: format!("{}/{}", spec.slot_ip, spec.prefix_len),
                        gateway: spec.host_ip.to_string(),
                    });
                    self.handed_out.insert(spec.name.clone(), slot);
                    r
                }
                None => Response::err(
                    id,
                    ErrorCode::Kernel,
                    "the warm pool could not be refilled (see the daemon's log)",
                ),
            };
            self.answer(&reply, r);
        }
    }

    fn release_all(&mut self, jobs: Vec<(u64, String, Sender<Response>)>) {
        let mut slots = Vec::new();
        let mut owners = Vec::new();
        for (id, name, reply) in jobs {
            match self.handed_out.remove(&name) {
                Some(slot) => {
                    slots.push(slot);
                    owners.push((id, reply));
                }
                None => self.answer(
                    &reply,
                    Response::err(
                        id,
                        ErrorCode::NotFound,
                        format!("no handed-out slot {name:?}"),
                    ),
                ),
            }
        }
        if slots.is_empty() {
            return;
        }
        self.stats.batches += 1;
        let names: Vec<String> = slots.iter().map(|s| s.spec().name.clone()).collect();
        let results = self.engine.release_slots(slots);
        for (i, (id, reply)) in owners.into_iter().enumerate() {
            let r = match &results {
                Ok(r) => match &r[i] {
                    Ok(()) => Response::ok(id),
                    Err(e) => Response::err(id, ErrorCode::Kernel, e.to_string()),
                },
                Err(e) => Response::err(
                    id,
                    ErrorCode::Kernel,
                    format!("slot {}: release: {e}", names[i]),
                ),
            };
            self.answer(&reply, r);
        }
    }

    fn refill(&mut self) {
        let want = self.config.pool_high.max(self.config.pool_low) - self.warm.len();
        self.stats.refill_batches += 1;
        if !self.provision_warm(want) {
            // Do not spin on a kernel that refuses: wait for the next request instead.
            self.config.pool_low = 0;
        }
    }

    /// Provisions `count` pooled slots into the warm pool; false if none could be made.
    fn provision_warm(&mut self, count: usize) -> bool {
        match self.engine.provision(count) {
            Ok(out) => {
                let mut any = false;
                tracing::info!(count, "warm pool: provisioned");
                for s in out.slots {
                    match s {
                        Ok(slot) => {
                            self.warm.push_back(slot);
                            any = true;
                        }
                        Err(e) => tracing::warn!("warm pool: {e}"),
                    }
                }
                any
            }
            Err(e) => {
                tracing::error!("warm pool: provision {count}: {e}");
                false
            }
        }
    }

    /// Tears everything down (one group delete) unless told to keep it.
    fn finish(mut self) {
        if self.config.keep_on_exit {
            tracing::info!(
                attachments = self.attachments.len(),
                "keeping slots on exit (--keep-on-exit); the next start removes them"
            );
            // Pinned warm slots stay pinned; attachments stay in their namespaces.
            return;
        }
        let slots: Vec<Slot> = self
            .warm
            .drain(..)
            .chain(std::mem::take(&mut self.handed_out).into_values())
            .collect();
        if let Err(e) = self.engine.teardown(slots) {
            tracing::error!("teardown: {e}");
        }
    }
}

fn attachment(key: &AttachmentKey, held: &Held) -> Attachment {
    let s = &held.spec;
    Attachment {
        key: key.clone(),
        netns: held.netns.clone(),
        slot_id: s.id,
        host_ifname: s.name.clone(),
        ifindex: s.ifindex,
        host_mac: mac_to_string(&s.host_mac),
        mac: mac_to_string(&s.slot_mac),
        address: format!("{}/{}", s.slot_ip, s.prefix_len),
        gateway: s.host_ip.to_string(),
        mtu: s.mtu,
        default_route: held.default_route,
    }
}

fn slot_error(id: u64, key: &AttachmentKey, e: &SlotError) -> Response {
    Response::err(
        id,
        ErrorCode::Kernel,
        format!("container {} ({}): {e}", key.container_id, key.ifname),
    )
}
