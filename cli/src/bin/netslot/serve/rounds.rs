//! rounds: the engine thread. Collects requests for one coalescing window (or until a
//! round is full), answers them with one engine batch per kind, and keeps the warm pool
//! (`warm`, shared with the connection threads, which hand out ready slots themselves)
//! between its water marks. It also keeps who owns each attachment: a peer other than
//! uid 0 acts on its own only, within its per-uid limits. Requests
//! arrive checked, with attach targets already opened (`conn`): nothing here waits on
//! what a peer sent.
//!
//! The attachment table outlives the process: after every round that changed it, and
//! before that round's answers go out, it is written into the pool's ownership record
//! (`Engine::record_attachments`, an atomic replace), and a start takes back what the
//! kernel confirms of it (`Engine::adopted`). So an answered ADD is always recorded, and
//! a restart or upgrade changes nothing for running containers.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netslot::daemon::protocol::{
    Attachment, AttachmentKey, ErrorCode, Ipv4Request, Ipv6Request, Operation, Response, Stats,
    Status,
};
use netslot::ownership::record::AttachmentRecord;
use netslot::{
    mac_to_string, AttachTarget, Engine, Ipv4Lease, Ipv6Lease, Slot, SlotError, SlotSpec,
};

use super::metrics::METRICS;
use super::warm::{Claim, Warm};

/// What connection threads send the engine thread.
pub(crate) enum Work {
    /// A request and where its answer goes.
    Job {
        id: u64,
        op: Operation,
        /// The peer's uid (SO_PEERCRED).
        uid: u32,
        /// An attach's target namespace, opened and checked by the connection thread.
        target: Option<OwnedFd>,
        reply: Sender<Response>,
    },
    /// A connection thread took a ready slot and the pool fell below its low mark:
    /// refill when idle.
    Nudge,
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
    /// Give released slots that are as the pool made them back to the warm pool.
    pub recycle: bool,
    /// Most attachments a uid other than 0 may hold.
    pub max_attachments_per_uid: usize,
}

/// One attachment as the daemon holds it.
struct Held {
    spec: SlotSpec,
    netns: PathBuf,
    /// The id of the namespace it was made in (NS_GET_ID): tells, after a restart,
    /// whether `netns` is still that namespace.
    netns_id: u64,
    /// Whether it added the container's default route (its container's first attachment).
    default_route: bool,
    /// Who attached it.
    uid: u32,
}

/// The engine thread's state.
pub(crate) struct Rounds {
    engine: Engine,
    config: RoundConfig,
    attachments: BTreeMap<AttachmentKey, Held>,
    /// The warm pool, shared with the connection threads (they hand out ready slots).
    warm: Arc<Warm>,
    /// Attachments held per uid (uid 0 not counted).
    attachments_of: BTreeMap<u32, usize>,
    stats: Stats,
    /// Answers of the round in progress that wait until the attachment table is recorded.
    held_answers: Vec<(Sender<Response>, Response)>,
    /// Whether the round in progress changed the attachment table.
    table_changed: bool,
}

/// One queued request.
struct Job {
    id: u64,
    op: Operation,
    uid: u32,
    target: Option<OwnedFd>,
    reply: Sender<Response>,
}
/// A detach to make: whose, and who waits for the answer (none for GC's own).
type DetachJob = (AttachmentKey, Option<(u64, Sender<Response>)>);
/// An attach to make: request id, owner, target namespace, peer uid, answer.
type AttachJob = (
    u64,
    AttachmentKey,
    PathBuf,
    OwnedFd,
    u32,
    Sender<Response>,
    Wanted,
);
/// What an attach asks of its slot beyond the daemon's defaults: MTU, container-end MAC
/// and IPAM leases, IPv4 and IPv6 (as the request wrote them; checked by
/// `protocol::check_fields`).
type Wanted = (
    Option<u32>,
    Option<String>,
    Option<Box<Ipv4Request>>,
    Option<Box<Ipv6Request>>,
);
/// An attach sent to the engine: request id, key, namespace path and id, default route,
/// peer uid, answer.
type Waiting = (
    u64,
    AttachmentKey,
    PathBuf,
    u64,
    bool,
    u32,
    Sender<Response>,
);

/// Whether `uid` may act on something `owner` made: its own, or anything for uid 0.
fn may_touch(uid: u32, owner: u32) -> bool {
    uid == 0 || uid == owner
}

fn bump(counts: &mut BTreeMap<u32, usize>, uid: u32, up: bool) {
    if uid == 0 {
        return;
    }
    let n = counts.entry(uid).or_insert(0);
    if up {
        *n += 1;
    } else {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(&uid);
        }
    }
}

impl Rounds {
    /// The engine thread's state, with the attachments `engine` adopted at start.
    pub fn new(
        mut engine: Engine,
        config: RoundConfig,
        warm: Arc<Warm>,
        removed_at_start: usize,
    ) -> Self {
        let mut attachments = BTreeMap::new();
        let mut attachments_of = BTreeMap::new();
        for (a, spec) in engine.adopted() {
            let key = AttachmentKey {
                network: a.network,
                container_id: a.container_id,
                ifname: a.ifname,
            };
            bump(&mut attachments_of, a.uid, true);
            attachments.insert(
                key,
                Held {
                    spec,
                    netns: a.netns,
                    netns_id: a.netns_id,
                    default_route: a.default_route,
                    uid: a.uid,
                },
            );
        }
        Self {
            engine,
            config,
            attachments,
            warm,
            attachments_of,
            stats: Stats {
                removed_at_start,
                ..Default::default()
            },
            held_answers: Vec::new(),
            table_changed: false,
        }
    }

    /// How many attachments the table holds (at start: how many were adopted).
    pub fn attachment_count(&self) -> usize {
        self.attachments.len()
    }

    /// Writes the attachment table into the pool's record if this round changed it,
    /// then sends the answers that waited for it.
    fn record_then_answer(&mut self) {
        if std::mem::take(&mut self.table_changed) {
            let list = self.attachment_records();
            if let Err(e) = self.engine.record_attachments(list) {
                // The attachments stand; a restart before the next good write would not
                // find the newest ones and would remove them.
                tracing::error!("record the attachments: {e}");
            }
        }
        for (reply, r) in std::mem::take(&mut self.held_answers) {
            self.answer(&reply, r);
        }
    }

    fn attachment_records(&self) -> Vec<AttachmentRecord> {
        let config = self.engine.config();
        self.attachments
            .iter()
            .map(|(k, h)| AttachmentRecord {
                network: k.network.clone(),
                container_id: k.container_id.clone(),
                ifname: k.ifname.clone(),
                slot_id: h.spec.id,
                host_ifname: h.spec.name.clone(),
                ifindex: h.spec.ifindex,
                netns: h.netns.clone(),
                netns_id: h.netns_id,
                default_route: h.default_route,
                uid: h.uid,
                // Written only when the attach asked for its own; absent, a restart
                // derives them again.
                mtu: (h.spec.mtu != config.mtu).then_some(h.spec.mtu),
                mac: (h.spec.slot_mac != netslot::slot_end_mac(config.group, h.spec.id))
                    .then(|| mac_to_string(&h.spec.slot_mac)),
                // Only for a lease: the pool's /31 is derived again.
                address: (h.spec.leased && !h.spec.ipv6_only)
                    .then(|| format!("{}/{}", h.spec.slot_ip, h.spec.prefix_len)),
                gateway: (h.spec.leased && !h.spec.ipv6_only).then(|| h.spec.host_ip.to_string()),
                ipv6_address: h.spec.ipv6.map(|v6| v6.to_strings().0),
                ipv6_gateway: h.spec.ipv6.map(|v6| v6.to_strings().1),
            })
            .collect()
    }

    /// An answer sent once the round's attachment table is recorded.
    fn answer_later(&mut self, reply: &Sender<Response>, r: Response) {
        self.held_answers.push((reply.clone(), r));
    }

    /// Serves until `Shutdown` (or every sender is gone), then tears down.
    pub fn serve(mut self, rx: Receiver<Work>) {
        let mut stopping = false;
        while !stopping {
            let first = if self.warm.ready() < self.config.pool_low {
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
                Work::Job {
                    id,
                    op,
                    uid,
                    target,
                    reply,
                } => round.push(Job {
                    id,
                    op,
                    uid,
                    target,
                    reply,
                }),
                Work::Nudge => continue,
                Work::Shutdown => stopping = true,
            }
            // An acquire a ready slot answers is answered at once.
            if !stopping && round.iter().all(|j| self.is_immediate(j)) {
                self.round(round);
                continue;
            }
            let deadline = Instant::now() + self.config.window;
            while !stopping && round.len() < self.config.max_round {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(Work::Job {
                        id,
                        op,
                        uid,
                        target,
                        reply,
                    }) => round.push(Job {
                        id,
                        op,
                        uid,
                        target,
                        reply,
                    }),
                    Ok(Work::Nudge) => {}
                    Ok(Work::Shutdown) => stopping = true,
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            if stopping {
                // Whatever was already queued is answered too.
                while let Ok(w) = rx.try_recv() {
                    if let Work::Job {
                        id,
                        op,
                        uid,
                        target,
                        reply,
                    } = w
                    {
                        round.push(Job {
                            id,
                            op,
                            uid,
                            target,
                            reply,
                        });
                    }
                }
            }
            if !round.is_empty() {
                self.round(round);
            }
        }
        self.finish();
    }

    /// Whether `job` needs no engine call and gains nothing from company: an acquire that
    /// a ready slot answers (one that a connection thread found no slot for, when a refill
    /// has made one since).
    fn is_immediate(&self, job: &Job) -> bool {
        matches!(job.op, Operation::Acquire) && self.warm.ready() > 0
    }

    /// Answers one round: cheap requests at once, then one engine batch per kind
    /// (detaches first, which frees ids for the attaches).
    fn round(&mut self, round: Vec<Job>) {
        let started = Instant::now();
        let requests = round.len();
        self.stats.largest_round = self.stats.largest_round.max(round.len());
        METRICS.round_requests.observe(round.len() as f64);
        let mut attaches = Vec::new();
        let mut detaches: Vec<DetachJob> = Vec::new();
        let mut acquires = Vec::new();
        let mut releases = Vec::new();
        let mut gcs = Vec::new();
        for Job {
            id,
            op,
            uid,
            target,
            reply,
        } in round
        {
            match op {
                Operation::Status => self.answer(&reply, self.status(id)),
                Operation::Stats => {
                    let mut r = Response::ok(id);
                    r.stats = Some(self.current_stats());
                    self.answer(&reply, r);
                }
                Operation::Check { key } => {
                    let r = self.check(id, &key, uid);
                    self.answer(&reply, r);
                }
                Operation::Attach {
                    key,
                    netns,
                    mtu,
                    mac,
                    ipv4,
                    ipv6,
                    ..
                } => match target {
                    Some(fd) => {
                        attaches.push((id, key, netns, fd, uid, reply, (mtu, mac, ipv4, ipv6)))
                    }
                    None => {
                        let r = Response::err(
                            id,
                            ErrorCode::BadRequest,
                            format!("container {}: attach: no namespace", key.container_id),
                        );
                        self.answer(&reply, r);
                    }
                },
                Operation::Detach { key } => match self.attachments.get(&key) {
                    Some(held) if !may_touch(uid, held.uid) => {
                        let r = not_yours(id, uid, &key, "detach", held.uid);
                        self.answer(&reply, r);
                    }
                    _ => detaches.push((key, Some((id, reply)))),
                },
                Operation::Gc { network, valid } => gcs.push((id, network, valid, uid, reply)),
                Operation::Acquire => acquires.push((id, uid, reply)),
                Operation::Release { name } => releases.push((id, name, uid, reply)),
            }
        }
        for (id, network, valid, uid, reply) in gcs {
            // A GC speaks for its own network only: the valid entries are that network's,
            // and attachments of other networks are not its to judge.
            let keep: std::collections::BTreeSet<AttachmentKey> = valid
                .into_iter()
                .map(|k| AttachmentKey {
                    network: network.clone(),
                    ..k
                })
                .collect();
            // A peer other than uid 0 collects its own attachments only.
            let gone: Vec<AttachmentKey> = self
                .attachments
                .iter()
                .filter(|(k, h)| {
                    k.network == network && !keep.contains(*k) && may_touch(uid, h.uid)
                })
                .map(|(k, _)| k.clone())
                .collect();
            detaches.extend(gone.iter().map(|k| (k.clone(), None)));
            let mut r = Response::ok(id);
            r.removed = Some(gone);
            self.answer_later(&reply, r);
        }
        let counts = (
            attaches.len(),
            detaches.len(),
            acquires.len(),
            releases.len(),
        );
        // Acquires that warm slots answer go first: they cost no kernel call, and should
        // not wait behind the round's engine batches. The rest wait for the releases,
        // which may give slots back.
        let ready = acquires.len().min(self.warm.ready());
        let later = acquires.split_off(ready);
        self.acquire_all(acquires);
        self.detach_all(detaches);
        self.release_all(releases);
        self.attach_all(attaches);
        self.record_then_answer();
        self.acquire_all(later);
        self.update_gauges();
        let (attach, detach, acquire, release) = counts;
        let took_us = started.elapsed().as_micros() as u64;
        if attach + detach + acquire + release > 0 {
            tracing::info!(requests, attach, detach, acquire, release, took_us, "round");
        } else {
            // Status, stats, checks: no kernel change, so not worth a line by default.
            tracing::debug!(requests, took_us, "round");
        }
    }

    /// The metrics that are levels, not counts.
    fn update_gauges(&self) {
        METRICS.warm_slots.set(self.warm.ready() as i64);
        METRICS.attachments.set(self.attachments.len() as i64);
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
            protocol_versions: vec![netslot::daemon::protocol::VERSION],
            attachments: self.attachments.len(),
            pooled: self.warm.ready(),
        });
        r
    }

    fn current_stats(&self) -> Stats {
        Stats {
            attachments: self.attachments.len(),
            pooled: self.warm.ready(),
            handed_out: self.warm.handed_out(),
            requests: self.stats.requests + self.warm.answered(),
            ..self.stats.clone()
        }
    }

    /// An attachment is present when its host end exists in the kernel with the
    /// expected name, index and address (the container side is the plugin's to read).
    fn check(&self, id: u64, key: &AttachmentKey, uid: u32) -> Response {
        let Some(held) = self.attachments.get(key) else {
            return Response::err(id, ErrorCode::NotFound, format!("no attachment for {key}"));
        };
        if !may_touch(uid, held.uid) {
            return not_yours(id, uid, key, "check", held.uid);
        }
        let spec = &held.spec;
        let host = self.engine.host();
        let link = host.links().map(|ls| {
            ls.into_iter()
                .any(|l| l.index == spec.ifindex && l.name == spec.name)
        });
        let addr = host.addresses().map(|a| {
            a.into_iter()
                .any(|a| a.index == spec.ifindex && a.addr == spec.host_address())
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
                    spec.id,
                    spec.name,
                    spec.host_address()
                ),
            ),
            (Err(e), _) | (_, Err(e)) => Response::err(
                id,
                ErrorCode::Kernel,
                format!("slot {}: reading the host namespace: {e}", spec.id),
            ),
        }
    }

    fn attach_all(&mut self, jobs: Vec<AttachJob>) {
        let mut targets = Vec::new();
        let mut waiting: Vec<Waiting> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        // Containers given a default route by an earlier attach of this round.
        let mut routed = std::collections::BTreeSet::new();
        // Attaches of this round per uid, on top of what each holds.
        let mut pending: BTreeMap<u32, usize> = BTreeMap::new();
        for (id, key, netns, fd, uid, reply, (mtu, mac, ipv4, ipv6)) in jobs {
            // A request's own MTU and MAC are checked here, one by one, so that one bad
            // value fails its own attach and not the engine call of the whole round.
            let mac = match mac.as_deref().map(|m| {
                netslot::parse_mac(m)
                    .filter(netslot::is_unicast_mac)
                    .ok_or(m)
            }) {
                Some(Err(m)) => {
                    let r = Response::err(
                        id,
                        ErrorCode::BadRequest,
                        format!(
                            "container {}: attach: MAC {m:?} is not a unicast MAC",
                            key.container_id
                        ),
                    );
                    self.answer_later(&reply, r);
                    continue;
                }
                Some(Ok(m)) => Some(m),
                None => None,
            };
            if let Some(Err(e)) = mtu.map(|m| self.engine.config().check_slot_mtu(m)) {
                let r = Response::err(
                    id,
                    ErrorCode::BadRequest,
                    format!("container {}: attach: {e}", key.container_id),
                );
                self.answer_later(&reply, r);
                continue;
            }
            let lease = match ipv4
                .as_ref()
                .map(|ip| Ipv4Lease::parse(&ip.address, &ip.gateway))
            {
                Some(Err(why)) => {
                    let r = Response::err(
                        id,
                        ErrorCode::BadRequest,
                        format!("container {}: attach: ipv4 lease: {why}", key.container_id),
                    );
                    self.answer_later(&reply, r);
                    continue;
                }
                // The daemon's own range routes its pool's /31s on the host: a lease in it
                // would clash with them.
                Some(Ok(l))
                    if [l.address, l.gateway]
                        .iter()
                        .any(|a| self.engine.config().ipv4_pool.contains(*a)) =>
                {
                    let r = Response::err(
                        id,
                        ErrorCode::BadRequest,
                        format!(
                            "container {}: attach: ipv4 lease {}/{} via {} lies in the \
                             daemon's own range {} (--cidr): give the IPAM plugin another",
                            key.container_id,
                            l.address,
                            l.prefix_len,
                            l.gateway,
                            self.engine.config().ipv4_pool
                        ),
                    );
                    self.answer_later(&reply, r);
                    continue;
                }
                Some(Ok(l)) => Some(l),
                None => None,
            };
            // Checked by protocol::check_fields: it parses.
            let lease6 = ipv6
                .as_ref()
                .and_then(|ip| Ipv6Lease::parse(&ip.address, &ip.gateway).ok());
            if self.attachments.contains_key(&key) || !seen.insert(key.clone()) {
                let r = Response::err(
                    id,
                    ErrorCode::Exists,
                    format!("{key} is attached already: DEL it first"),
                );
                self.answer_later(&reply, r);
                continue;
            }
            let limit = self.config.max_attachments_per_uid;
            if let Err(holds) = admit(&self.attachments_of, &mut pending, uid, limit) {
                let r = Response::err(
                    id,
                    ErrorCode::NotAllowed,
                    format!(
                        "container {}: attach: uid {uid} holds {holds} attachments, its limit \
                         (--max-attachments-per-uid {limit}); detach one first",
                        key.container_id,
                    ),
                );
                self.answer_later(&reply, r);
                continue;
            }
            let netns_id = match netslot::daemon::target::netns_id_of(fd.as_fd()) {
                Ok(ns) => ns,
                Err(e) => {
                    let r = Response::err(
                        id,
                        ErrorCode::Kernel,
                        format!("container {}: attach: NS_GET_ID: {e}", key.container_id),
                    );
                    self.answer_later(&reply, r);
                    continue;
                }
            };
            // Only a container's first attachment (in any network) gets the default
            // route: a second one would fail with EEXIST, and CNI lets a plugin add
            // routes only where it is asked to.
            // A lease without a default route asks for none (and takes no other's turn).
            // Beside an IPv4 lease, the IPv6 one follows it; alone, it asks for itself.
            let asked = match (&ipv4, &ipv6) {
                (Some(ip), _) => ip.default_route,
                (None, Some(ip)) => ip.default_route,
                (None, None) => true,
            };
            let default_route = asked
                && !self
                    .attachments
                    .keys()
                    .any(|k| k.container_id == key.container_id)
                && routed.insert(key.container_id.clone());
            targets.push(AttachTarget {
                netns: fd,
                ifname: key.ifname.clone(),
                default_route,
                mtu,
                mac,
                ipv4: lease,
                ipv6: lease6,
            });
            waiting.push((id, key, netns, netns_id, default_route, uid, reply));
        }
        if targets.is_empty() {
            return;
        }
        self.stats.batches += 1;
        self.stats.attach_batches += 1;
        let started = Instant::now();
        let out = self.engine.attach(targets);
        self.stats.attach_busy_us += started.elapsed().as_micros() as u64;
        METRICS.engine_call("attach", out.as_ref().ok().map(|o| &o.report));
        match out {
            Ok(out) => {
                for ((id, key, netns, netns_id, default_route, uid, reply), slot) in
                    waiting.into_iter().zip(out.slots)
                {
                    let r = match slot {
                        Ok(spec) => {
                            tracing::info!(
                                network = %key.network,
                                container = %key.container_id,
                                ifname = %key.ifname,
                                host_end = %spec.name,
                                address = %spec.slot_address(),
                                ipv6 = ?spec.ipv6.map(|l| l.address),
                                netns = %netns.display(),
                                "attached"
                            );
                            let held = Held {
                                spec,
                                netns,
                                netns_id,
                                default_route,
                                uid,
                            };
                            let mut r = Response::ok(id);
                            r.attachment = Some(attachment(&key, &held));
                            self.attachments.insert(key, held);
                            self.table_changed = true;
                            bump(&mut self.attachments_of, uid, true);
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
                    self.answer_later(&reply, r);
                }
            }
            Err(e) => {
                tracing::warn!(attaches = waiting.len(), "attach batch failed: {e}");
                for (id, key, _, _, _, _, reply) in waiting {
                    let r = Response::err(
                        id,
                        ErrorCode::Kernel,
                        format!("container {}: attach: {e}", key.container_id),
                    );
                    self.answer_later(&reply, r);
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
                        self.answer_later(&reply, Response::ok(id));
                    }
                }
            }
        }
        if specs.is_empty() {
            return;
        }
        self.stats.batches += 1;
        METRICS.engine_call("detach", None);
        let results = self.engine.detach(&specs);
        for (i, (key, reply)) in owners.into_iter().enumerate() {
            let outcome = match &results {
                Ok(r) => r[i].clone().map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let r = match outcome {
                Ok(()) => {
                    if let Some(held) = self.attachments.remove(&key) {
                        self.table_changed = true;
                        bump(&mut self.attachments_of, held.uid, false);
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
                self.answer_later(&reply, r);
            }
        }
    }

    /// Acquires the connection threads could not answer (no slot was ready then): from
    /// the warm pool, refilled by one `provision` call for what it lacks.
    fn acquire_all(&mut self, jobs: Vec<(u64, u32, Sender<Response>)>) {
        let mut waiting = Vec::new();
        for (id, uid, reply) in jobs {
            match self.warm.claim(id, uid) {
                Claim::Answered(r) => self.answer(&reply, *r),
                Claim::Empty => waiting.push((id, uid, reply)),
            }
        }
        if waiting.is_empty() {
            return;
        }
        self.stats.batches += 1;
        // The new slots go to the waiting requests directly: put in the pool first, a
        // connection thread's claim could take them.
        let mut made = self.provision(waiting.len()).into_iter();
        for (id, uid, reply) in waiting {
            let r = match made.next() {
                Some(slot) => self.warm.grant(id, uid, slot),
                None => Response::err(
                    id,
                    ErrorCode::Kernel,
                    "the warm pool could not be refilled (see the daemon's log)",
                ),
            };
            self.answer(&reply, r);
        }
        self.warm.add(made);
        self.update_gauges();
    }

    fn release_all(&mut self, jobs: Vec<(u64, String, u32, Sender<Response>)>) {
        let mut slots = Vec::new();
        let mut owners = Vec::new();
        for (id, name, uid, reply) in jobs {
            match self.warm.take_back(&name, uid) {
                Ok(slot) => {
                    slots.push(slot);
                    owners.push((id, reply));
                }
                Err((code, why)) => self.answer(&reply, Response::err(id, code, why)),
            }
        }
        if slots.is_empty() {
            return;
        }
        self.stats.batches += 1;
        let names: Vec<String> = slots.iter().map(|s| s.spec().name.clone()).collect();
        METRICS.engine_call("release", None);
        let results = if self.config.recycle {
            self.recycle(slots)
        } else {
            self.stats.destroyed_on_release += slots.len() as u64;
            self.engine.release_slots(slots)
        };
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

    /// Recycles released slots: the clean ones back into the warm pool (up to its high
    /// mark; past it they are destroyed), the others destroyed. Per slot, whether the
    /// release worked.
    fn recycle(
        &mut self,
        slots: Vec<Slot>,
    ) -> Result<Vec<Result<(), SlotError>>, netslot::EngineError> {
        let names: Vec<String> = slots.iter().map(|s| s.spec().name.clone()).collect();
        let out = self.engine.recycle(slots)?;
        let mut results: BTreeMap<String, Result<(), SlotError>> = BTreeMap::new();
        for d in out.destroyed {
            tracing::info!(slot = %d.spec.name, "release: destroyed, not recycled: {}", d.why);
            self.stats.destroyed_on_release += 1;
            results.insert(d.spec.name, d.result);
        }
        let room = self.config.pool_high.saturating_sub(self.warm.ready());
        let mut clean = out.clean;
        let surplus = clean.split_off(room.min(clean.len()));
        for slot in &clean {
            self.stats.recycled += 1;
            results.insert(slot.spec().name.clone(), Ok(()));
        }
        self.warm.add(clean);
        if !surplus.is_empty() {
            self.stats.destroyed_on_release += surplus.len() as u64;
            let specs: Vec<String> = surplus.iter().map(|s| s.spec().name.clone()).collect();
            let gone = self.engine.release_slots(surplus)?;
            results.extend(specs.into_iter().zip(gone));
        }
        Ok(names
            .iter()
            .map(|n| results.remove(n).unwrap_or(Ok(())))
            .collect())
    }

    fn refill(&mut self) {
        let want = self
            .config
            .pool_high
            .max(self.config.pool_low)
            .saturating_sub(self.warm.ready());
        self.stats.refill_batches += 1;
        if !self.provision_warm(want) {
            // Do not spin on a kernel that refuses: wait for the next request instead.
            self.config.pool_low = 0;
        }
    }

    /// Provisions `count` pooled slots into the warm pool; false if none could be made.
    fn provision_warm(&mut self, count: usize) -> bool {
        let made = self.provision(count);
        let any = !made.is_empty();
        self.warm.add(made);
        self.update_gauges();
        any
    }

    /// Provisions `count` pooled slots; those that were made.
    fn provision(&mut self, count: usize) -> Vec<Slot> {
        let out = self.engine.provision(count);
        METRICS.engine_call("warm", out.as_ref().ok().map(|o| &o.report));
        match out {
            Ok(out) => {
                tracing::info!(count, "warm pool: provisioned");
                out.slots
                    .into_iter()
                    .filter_map(|s| {
                        s.inspect_err(|e| {
                            METRICS.slot_failed(e);
                            tracing::warn!("warm pool: {e}");
                        })
                        .ok()
                    })
                    .collect()
            }
            Err(e) => {
                tracing::error!("warm pool: provision {count}: {e}");
                Vec::new()
            }
        }
    }

    /// Tears everything down (one group delete) unless told to keep it.
    fn finish(mut self) {
        if self.config.keep_on_exit {
            tracing::info!(
                attachments = self.attachments.len(),
                "keeping slots on exit (--keep-on-exit); the next start adopts the \
                 attachments and removes the warm pool"
            );
            // Pinned warm slots stay pinned; attachments stay in their namespaces, and
            // the record lists them.
            return;
        }
        // The attachments go with the teardown: a kill halfway through leaves none in
        // the record, so the next start removes what is left instead of adopting it.
        if let Err(e) = self.engine.record_attachments(Vec::new()) {
            tracing::warn!("record the attachments as gone: {e}");
        }
        let slots: Vec<Slot> = self.warm.drain();
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
        // An IPv6-only attachment's are its IPv6 ones (and `ipv6` is absent).
        address: s.slot_address(),
        gateway: s.host_address().to_string(),
        mtu: s.mtu,
        default_route: held.default_route,
        ipv6: s.ipv6.filter(|_| !s.ipv6_only).map(|v6| {
            let (address, gateway) = v6.to_strings();
            Ipv6Request {
                address,
                gateway,
                default_route: held.default_route,
            }
        }),
    }
}

/// The refusal of `op` on another uid's attachment.
fn not_yours(id: u64, uid: u32, key: &AttachmentKey, op: &str, owner: u32) -> Response {
    Response::err(
        id,
        ErrorCode::NotAllowed,
        format!(
            "container {} ({}): {op}: the attachment belongs to uid {owner}, not uid {uid}",
            key.container_id, key.ifname
        ),
    )
}

/// Admits one more of a per-uid limited thing for `uid` in this round: uid 0 always; any
/// other while what it holds (`held`) plus what this round already gave it (`pending`,
/// counted here) stays under `limit`. `Err` carries that count, for the refusal.
fn admit(
    held: &BTreeMap<u32, usize>,
    pending: &mut BTreeMap<u32, usize>,
    uid: u32,
    limit: usize,
) -> Result<(), usize> {
    if uid == 0 {
        return Ok(());
    }
    let holds = held.get(&uid).copied().unwrap_or(0);
    let more = pending.entry(uid).or_insert(0);
    if holds + *more >= limit {
        return Err(holds + *more);
    }
    *more += 1;
    Ok(())
}

fn slot_error(id: u64, key: &AttachmentKey, e: &SlotError) -> Response {
    METRICS.slot_failed(e);
    Response::err(
        id,
        ErrorCode::Kernel,
        format!("container {} ({}): {e}", key.container_id, key.ifname),
    )
}
