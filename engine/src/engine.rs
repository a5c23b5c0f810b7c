//! engine: drives one provisioning call through pool -> plan -> batch -> ring -> reconcile.
//! Owns the ring, the pool thread and the sequence ledger; the steps themselves live in
//! their own modules.

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::batch::{Flight, Limits};
use crate::claim;
use crate::config::{CountersAttach, EngineConfig};
use crate::gc::GcReport;
use crate::groups;
use crate::hold::HoldBudget;
use crate::host::HostNs;
use crate::netns;
use crate::op::Op;
use crate::plan::{self, PerDevice, PoolShape, WHOLE_BATCH};
use crate::pool::NsPool;
use crate::reconcile::{Failure, Ledger, Settled};
use crate::record::{AttachmentRecord, PinRecord, PoolLock, PoolPhase};
use crate::result::{EngineError, PhaseTimes, ProvisionReport, Provisioned, SlotError};
use crate::ring::{Exchange, Ring};
use crate::slot::{PooledNs, Slot, SlotSpec};
use crate::sock;

/// Room for one reply datagram: an error reply echoes at most a capped header or one
/// small request, plus the extended-ACK text.
const REPLY_BUF: usize = 8192;

/// Namespace fds opened for pinning that are closed together (one io_uring_enter).
const PIN_CLOSE_BATCH: usize = 32;

/// Fewest namespaces a chunk waits for: enough to keep io_uring_enter and host sendmsg
/// counts far below one per slot, few enough that link work starts while the pool thread
/// is still creating the rest (their overlap is most of the speed).
const MIN_CHUNK: usize = 32;

/// What bringing a call's host ends up did (`Engine::bring_up`).
#[derive(Debug, Default)]
struct BroughtUp {
    group_changes: usize,
    group_changes_took: Duration,
    /// Host ends whose IPv6 went off through `disable_ipv6`.
    ipv6_sysctl: usize,
    ipv6_sysctl_took: Duration,
}

/// Provisions standard slots. Use it from one thread at a time; it is `Send`.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    host: HostNs,
    host_limits: Limits,
    slot_limits: Limits,
    ring: Ring,
    pool: NsPool,
    ledger: Ledger,
    ifindex_base: u32,
    next_id: u32,
    /// Ids given back by `detach` / `release_slots`, reused lowest first so that names and
    /// addresses of a long-running engine stay inside the configured pool.
    free_ids: BTreeSet<u32>,
    /// The counters program (XDP or tc, per `config.xdp_attach`) and its map.
    xdp: Option<netslot_bpf::Counters>,
    /// Whether the pool's tc filter is on its shared block (tc-block only). The block
    /// and its filter live as long as one qdisc is bound to it, so this is set by the
    /// call whose filter request succeeded and cleared by teardown.
    tc_filter_made: bool,
    /// The RTNL hold budget and the measured cost of group changes.
    budget: HoldBudget,
    /// The pool's host ends that are up: a group change's cost per device grows with it.
    host_ends: usize,
    /// Index of the next sub-batch group (`groups::sub_batch_group`).
    next_sub_batch: u16,
    /// Sub-batch groups that may hold host ends: what teardown deletes.
    groups_used: BTreeSet<u32>,
    /// The claim on the pool (with `EngineConfig::run_dir`), held for the engine's life.
    lock: Option<PoolLock>,
    /// What a dead owner of the pool had left, removed by `new`.
    reclaimed: Option<GcReport>,
    /// Names of devices and pins like the pool's that the pool did not make, each with
    /// what holds it.
    names_taken: std::collections::BTreeMap<String, String>,
    /// Whether this engine pinned the counters (`config.bpf_pin_dir`).
    pinned_counters: bool,
    /// Whether slots of this engine may still exist in the kernel.
    holds_slots: bool,
    /// Whether [`Engine::commit`] was called.
    committed: bool,
    /// Requests settled from kernel state after an overrun dropped their replies.
    recovered: u64,
    /// Attachments of an earlier owner kept in place (`EngineConfig::adopt`), until the
    /// caller takes them with [`Engine::adopted`].
    adopted: Vec<AttachmentRecord>,
}

/// How a slot's veth request ended, which decides what rollback must delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VethFate {
    /// Not settled yet, or refused by the kernel: nothing to delete.
    Absent,
    /// Created, or possibly created (its reply was lost): delete on rollback.
    Present,
}

impl Engine {
    /// Checks the kernel (Linux 6.18 or later, see [`crate::features`]); opens the host
    /// namespace; claims the pool (with `run_dir`: refused while a live process owns it);
    /// refuses, before touching anything, a group that holds a device the pool did not
    /// make, a committed pool that still exists, counters pins or an address range that
    /// are someone else's; removes only what the kernel proves a dead owner of this pool
    /// left (see `ownership`); then starts the namespace pool and the ring. With
    /// `adopt`, the live attachments the record lists are kept instead (see `claim`):
    /// their ids and groups stay taken, and [`Engine::adopted`] hands them to the caller.
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        config.check(0, 1)?;
        // Before any kernel change: a kernel without what the engine needs is refused whole.
        crate::features::check()?;
        let host = match &config.host_netns {
            Some(path) => HostNs::open(path).map_err(EngineError::io(format!(
                "open host namespace {}",
                path.display()
            )))?,
            None => HostNs::current().map_err(EngineError::io("open the host namespace"))?,
        };
        let claim::Claimed {
            lock,
            reclaimed,
            names_taken,
            links,
            adopted,
        } = claim::claim(&config, &host)?;
        // What reclaiming removed is logged (at warn, by name) by gc::apply.
        // Explicit ifindexes above every existing one: both ends get base + id, so host
        // addresses can be sent without looking the device up.
        let ifindex_base = links.iter().map(|l| l.index).max().unwrap_or(1) + 1;
        let faults = &config.faults;
        sock::set_buffers(host.socket(), faults.host_sndbuf, faults.host_rcvbuf)
            .map_err(EngineError::io("set host socket buffers (fault injection)"))?;
        let mut host_limits =
            sock::limits(host.socket()).map_err(EngineError::io("read host socket buffers"))?;
        if faults.unbounded_host_requests {
            host_limits.max_requests = usize::MAX;
        }
        let (snd, rcv) = sock::default_buffers();
        let slot_limits = sock::limits_from(snd, rcv);
        let ring = Ring::new(config.chunk + 8).map_err(EngineError::io("create io_uring"))?;
        let pool = NsPool::start(config.pool_threads, config.pool_low, config.pool_high)
            .map_err(EngineError::io("start the namespace pool thread"))?;
        let mut pinned_counters = false;
        let xdp = if config.xdp_counters {
            let hook = config.xdp_attach.hook();
            let xdp =
                netslot_bpf::Counters::load_hook(hook).map_err(|source| EngineError::Bpf {
                    what: format!("load the counters program {}", hook.prog_name()),
                    source,
                })?;
            if let Some(dir) = &config.bpf_pin_dir {
                xdp.pin(dir).map_err(|source| EngineError::Bpf {
                    what: format!("pin the counters in {}", dir.display()),
                    source,
                })?;
                pinned_counters = true;
            }
            Some(xdp)
        } else {
            None
        };
        let config_max_hold = config.max_rtnl_hold;
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        // Adopted slots keep their ids (new slots take the others, lowest first) and
        // their sub-batch groups (no new host end joins them, and teardown deletes them).
        let adopted_ids: BTreeSet<u32> = adopted.iter().map(|a| a.slot_id).collect();
        let next_id = adopted_ids.last().map_or(0, |&id| id + 1);
        let free_ids: BTreeSet<u32> = (0..next_id)
            .filter(|id| !adopted_ids.contains(id))
            .collect();
        let adopted_index: BTreeSet<u32> = adopted.iter().map(|a| a.ifindex).collect();
        let groups_used: BTreeSet<u32> = links
            .iter()
            .filter(|l| adopted_index.contains(&l.index))
            .map(|l| l.group)
            .collect();
        Ok(Self {
            config,
            host,
            host_limits,
            slot_limits,
            ring,
            pool,
            ledger: Ledger::new(seed),
            ifindex_base,
            next_id,
            budget: HoldBudget::new(config_max_hold),
            host_ends: adopted.len(),
            next_sub_batch: 0,
            groups_used,
            free_ids,
            xdp,
            tc_filter_made: false,
            lock,
            reclaimed,
            names_taken,
            pinned_counters,
            holds_slots: !adopted.is_empty(),
            committed: false,
            recovered: 0,
            adopted,
        })
    }

    /// Takes the attachments kept in place at start (`EngineConfig::adopt`), each with
    /// the spec its slot has now: the recorded ifindex, slot-end name, MTU, MAC and IPAM
    /// lease, the rest derived from the configuration as for a new slot.
    /// [`Engine::detach`] and [`Engine::teardown`] remove them like the engine's own.
    /// Empty on a second call.
    pub fn adopted(&mut self) -> Vec<(AttachmentRecord, SlotSpec)> {
        std::mem::take(&mut self.adopted)
            .into_iter()
            .map(|a| {
                let mut spec = SlotSpec::derive(&self.config, a.slot_id, self.ifindex_base);
                spec.ifindex = a.ifindex;
                spec.slot_ifname = a.ifname.clone();
                if let Some(mtu) = a.mtu {
                    spec.mtu = mtu;
                }
                if let Some(mac) = a.mac.as_deref().and_then(crate::slot::parse_mac) {
                    spec.slot_mac = mac;
                }
                if let Some(lease) = a.lease() {
                    spec.lease(lease);
                }
                (a, spec)
            })
            .collect()
    }

    /// Replaces the attachments listed in the pool's record (one atomic rewrite), so that
    /// an engine started with `adopt` after this one can keep them. Nothing without a
    /// claim (`run_dir`).
    pub fn record_attachments(
        &mut self,
        attachments: Vec<AttachmentRecord>,
    ) -> Result<(), EngineError> {
        let Some(lock) = &mut self.lock else {
            return Ok(());
        };
        let mut r = lock.current().cloned().unwrap_or_else(|| {
            crate::record::PoolRecord::new(&self.config.prefix, self.config.group)
        });
        r.attachments = attachments;
        lock.write(r).map_err(crate::gc::GcError::from)?;
        Ok(())
    }

    /// Marks the pool as meant to outlive this engine (its slots are pinned): the
    /// ownership record says `committed`, so `gc` keeps its complete slots after the
    /// engine is gone. Without it, a pool whose engine died is all garbage to `gc`.
    pub fn commit(&mut self) -> Result<(), EngineError> {
        if let Some(lock) = &mut self.lock {
            lock.set_phase(&self.config.prefix, PoolPhase::Committed)
                .map_err(crate::gc::GcError::from)?;
        }
        self.committed = true;
        Ok(())
    }

    /// What a dead owner of this pool had left in the kernel, removed before anything
    /// was made (with `EngineConfig::run_dir`).
    pub fn reclaimed(&self) -> Option<&GcReport> {
        self.reclaimed.as_ref()
    }

    /// Refuses, before any kernel call, a request for `count` new slots whose names are
    /// taken by devices or namespace pins that the pool did not make (seen when the
    /// engine started). Without it such a slot fails alone, refused by the kernel.
    pub fn check_names(&self, count: usize) -> Result<(), EngineError> {
        let reused = self.free_ids.iter().copied().take(count);
        let fresh = (self.next_id..).take(count.saturating_sub(self.free_ids.len()));
        for id in reused.chain(fresh) {
            let name = self.config.slot_name(id);
            if let Some(by) = self.names_taken.get(&name) {
                return Err(EngineError::NameTaken {
                    id,
                    name,
                    by: by.clone(),
                });
            }
        }
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The host namespace.
    pub fn host(&self) -> &HostNs {
        &self.host
    }

    /// Id of the counters program attached to the host ends (the XDP program, or the tc
    /// one for [`CountersAttach::TcBlock`]), when the counters are on.
    pub fn xdp_prog_id(&self) -> Option<u32> {
        self.xdp.as_ref().map(netslot_bpf::XdpCounters::prog_id)
    }

    /// Per-slot packets and bytes counted by the counters program, for every slot of this
    /// engine that has seen traffic. Empty when the counters are off.
    pub fn counters(&self) -> Result<Vec<crate::result::SlotCounters>, EngineError> {
        let Some(xdp) = &self.xdp else {
            return Ok(Vec::new());
        };
        let all = xdp.read_all().map_err(|source| EngineError::Bpf {
            what: "read the counters".into(),
            source,
        })?;
        Ok(all
            .into_iter()
            .filter(|c| {
                c.ifindex >= self.ifindex_base && c.ifindex - self.ifindex_base < self.next_id
            })
            .map(|c| crate::result::SlotCounters {
                id: c.ifindex - self.ifindex_base,
                ifindex: c.ifindex,
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect())
    }

    /// Provisions `count` standard slots. See [`Engine::provision_with`].
    pub fn provision(&mut self, count: usize) -> Result<Provisioned, EngineError> {
        self.provision_with(count, |_, _| {})
    }

    /// Provisions `count` standard slots, calling `progress(done, count)` after each chunk.
    ///
    /// A slot that fails is rolled back completely and returned as its error; the others
    /// stand. `Err` is returned only for bad input (before any kernel call) or when the
    /// engine itself cannot go on (the ring fails).
    pub fn provision_with(
        &mut self,
        count: usize,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Provisioned, EngineError> {
        self.check_fd_budget(count)?;
        let ids = self.take_ids(count)?;
        let specs: Vec<SlotSpec> = ids
            .iter()
            .map(|&id| SlotSpec::derive(&self.config, id, self.ifindex_base))
            .collect();
        self.pool.demand(count);
        let pin_dir = self.config.pin_dir.clone();
        self.run(&specs, NsSource::Pool, pin_dir.as_deref(), &mut progress)
    }

    /// Provisions one standard slot INTO each caller-given namespace (a CNI runtime's
    /// CNI_NETNS): the veth pair is created in place from a socket inside that namespace,
    /// named `ifname` there and `<prefix><id>` in the host namespace, with `lo` up, the
    /// slot address and (unless the target says `default_route: false`) the default
    /// route, exactly as in a pooled slot. One short-lived helper thread opens all the
    /// sockets (setns into each in turn): RTM_NEWADDR and RTM_NEWROUTE act in the sending
    /// socket's namespace only (docs/serve.md), so the namespace side cannot be sent from
    /// the host socket.
    ///
    /// The engine keeps nothing of the caller's namespaces: their sockets are closed before
    /// this returns, and the slots are given back by [`Engine::detach`].
    pub fn attach(&mut self, targets: Vec<AttachTarget>) -> Result<Attached, EngineError> {
        for t in &targets {
            crate::config::check_ifname(&t.ifname)?;
            if let Some(mtu) = t.mtu {
                self.config.check_slot_mtu(mtu)?;
            }
            if let Some(mac) = t.mac.filter(|m| !crate::slot::is_unicast_mac(m)) {
                return Err(EngineError::Config(crate::ConfigError::SlotMac(
                    crate::slot::mac_to_string(&mac),
                )));
            }
        }
        let ids = self.take_ids(targets.len())?;
        let specs: Vec<SlotSpec> = ids
            .iter()
            .zip(&targets)
            .map(|(&id, t)| {
                let mut spec = SlotSpec::derive(&self.config, id, self.ifindex_base);
                spec.slot_ifname = t.ifname.clone();
                if let Some(mtu) = t.mtu {
                    spec.mtu = mtu;
                }
                if let Some(mac) = t.mac {
                    spec.slot_mac = mac;
                }
                if let Some(lease) = t.ipv4 {
                    spec.lease(lease);
                }
                spec
            })
            .collect();
        let default_route: Vec<bool> = targets.iter().map(|t| t.default_route).collect();
        let fds: Vec<_> = targets.into_iter().map(|t| t.netns).collect();
        let opened = netns::sockets_in(fds).map_err(EngineError::io(
            "open sockets in the target namespaces (helper thread)",
        ))?;
        let out = self.run(
            &specs,
            NsSource::Given {
                sockets: opened.into_iter(),
                default_route,
            },
            None,
            &mut |_, _| {},
        )?;
        let mut freed = Vec::new();
        let slots = out
            .slots
            .into_iter()
            .map(|r| match r {
                Ok(slot) => Ok(slot.spec),
                Err(e) => {
                    freed.push(e.id);
                    Err(e)
                }
            })
            .collect();
        self.free_ids.extend(freed);
        Ok(Attached {
            slots,
            report: out.report,
        })
    }

    /// Deletes the host end of each slot (the kernel takes the other end with it), all in
    /// as few sends as fit, and gives their ids back. A slot whose device is already gone
    /// (ENODEV: its namespace was destroyed) counts as detached, so this is idempotent.
    pub fn detach(
        &mut self,
        specs: &[SlotSpec],
    ) -> Result<Vec<Result<(), SlotError>>, EngineError> {
        let mut out: Vec<Result<(), SlotError>> = vec![Ok(()); specs.len()];
        if specs.is_empty() {
            return Ok(out);
        }
        let mut flights = plan::delete_host_ends(
            &mut self.ledger,
            self.host_limits,
            self.host.socket_fd(),
            specs.iter().enumerate(),
            Op::Detach,
        );
        for s in self.fly(&mut flights)? {
            if let Settled::Failed { slot, op, why } = s {
                if why.errno != libc::ENODEV && slot < specs.len() {
                    out[slot] = Err(SlotError {
                        id: specs[slot].id,
                        name: specs[slot].name.clone(),
                        op,
                        errno: why.errno,
                        ext_ack: why.ext_ack,
                        detail: why.detail,
                    });
                }
            }
        }
        for (spec, r) in specs.iter().zip(&out) {
            if r.is_ok() {
                self.host_ends = self.host_ends.saturating_sub(1);
                self.free_ids.insert(spec.id);
            }
        }
        Ok(out)
    }

    /// Gives pooled slots back one by one (unlike [`Engine::teardown`], which takes the
    /// whole group): their host ends deleted in one batch, pins removed, namespaces closed.
    pub fn release_slots(
        &mut self,
        slots: Vec<Slot>,
    ) -> Result<Vec<Result<(), SlotError>>, EngineError> {
        let specs: Vec<SlotSpec> = slots.iter().map(|s| s.spec.clone()).collect();
        let out = self.detach(&specs)?;
        let unpinned = self.unpin_slots(&slots);
        drop(slots);
        unpinned.map(|()| out)
    }

    /// Fds each slot of a call holds once handed back: one, the netlink socket made inside
    /// its namespace (it keeps the namespace alive; [`Slot::netns_fd`] opens an nsfs fd on
    /// demand). A pinned slot's nsfs fd, opened to bind-mount it, is closed once it is
    /// pinned.
    pub fn fds_per_slot(&self) -> usize {
        1
    }

    /// Refuses, before any kernel call, `count` slots that would not fit the process's
    /// open-file limit (see `limits`).
    fn check_fd_budget(&self, count: usize) -> Result<(), EngineError> {
        if self.config.faults.ignore_fd_limit {
            return Ok(());
        }
        let files = crate::limits::OpenFiles::read().map_err(EngineError::io(
            "read the open-file limit (/proc/self/limits)",
        ))?;
        let per_slot = self.fds_per_slot();
        let fit = files.slots_that_fit(per_slot);
        if count > fit {
            return Err(crate::config::ConfigError::FdLimit {
                wanted: count,
                per_slot,
                limit: files.limit,
                open: files.open,
                fit,
                overhead: crate::limits::OVERHEAD,
            }
            .into());
        }
        Ok(())
    }

    /// The lowest free ids, checked against the name length and the address pool before
    /// any is taken.
    fn take_ids(&mut self, count: usize) -> Result<Vec<u32>, EngineError> {
        if count == 0 {
            return Err(crate::config::ConfigError::NoSlots.into());
        }
        let reused = self.free_ids.len().min(count);
        let fresh =
            u32::try_from(count - reused).map_err(|_| crate::config::ConfigError::NoSlots)?;
        let highest = if fresh > 0 {
            self.next_id.saturating_add(fresh - 1)
        } else {
            *self.free_ids.iter().nth(reused - 1).expect("counted")
        };
        self.config.check(highest, 1)?;
        let mut ids: Vec<u32> = (0..reused)
            .map(|_| self.free_ids.pop_first().expect("counted"))
            .collect();
        ids.extend(self.next_id..self.next_id + fresh);
        self.next_id += fresh;
        Ok(ids)
    }

    /// One provisioning call over `specs`, namespaces taken from `source`.
    fn run(
        &mut self,
        specs: &[SlotSpec],
        mut source: NsSource,
        pin_dir: Option<&Path>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Provisioned, EngineError> {
        let count = specs.len();
        self.holds_slots = true;
        let recovered0 = self.recovered;
        let started = Instant::now();
        let pool_before = self.pool.stats();
        let (enters0, sends0) = (self.ring.enters, self.ring.sends);
        let mut batch = Batch::new(specs);
        let mut phases = PhaseTimes::default();
        let shape = PoolShape {
            group: self.config.group,
            host_netns_fd: self.host.netns_fd().as_raw_fd(),
            ipv6_off: !self.config.ipv6,
        };
        let prog_fd = self.xdp.as_ref().map(|x| x.prog_fd().as_raw_fd());
        let mut sub_batches = SubBatches::default();
        let block = self.config.tc_block_index();
        let (group_xdp, per_device) = match (self.config.xdp_attach, prog_fd) {
            (_, None) => (None, PerDevice::Nothing),
            (CountersAttach::Group, Some(fd)) => (Some(fd), PerDevice::Nothing),
            (CountersAttach::PerDevice, Some(fd)) => (None, PerDevice::Xdp(fd)),
            (CountersAttach::TcBlock, Some(_)) => (None, PerDevice::Clsact { block }),
        };
        let group = plan::GroupChange {
            group: self.config.group,
            xdp_fd: group_xdp,
            ipv6_off: !self.config.ipv6,
        };
        let ack = if self.config.faults.ack_every_host_request {
            netlink_packet_core::NLM_F_ACK
        } else {
            0
        };
        // Once per pool: a later call's host ends join the block by their qdisc.
        let mut tc_filter = match (self.config.xdp_attach, prog_fd) {
            (CountersAttach::TcBlock, Some(fd)) if !self.tc_filter_made => Some(plan::TcFilter {
                block,
                prog_fd: fd,
                prog_name: netslot_bpf::Hook::Tc.prog_name(),
            }),
            _ => None,
        };

        // Chunk k's host addresses ride in chunk k+1's submission (its slot ends exist by
        // then), so each chunk costs one io_uring_enter; the group changes follow, all in
        // a send of their own.
        let mut carry: Option<std::ops::Range<usize>> = None;
        let mut next = 0;
        while next < count || carry.is_some() {
            let mut chunk = next..next;
            if next < count {
                let t = Instant::now();
                let remaining = count - next;
                let got: Vec<_> = match &mut source {
                    NsSource::Pool => self
                        .pool
                        .take(MIN_CHUNK.min(remaining), self.config.chunk.min(remaining)),
                    NsSource::Given { sockets, .. } => {
                        sockets.by_ref().take(self.config.chunk).collect()
                    }
                };
                phases.pool_wait += t.elapsed();
                chunk = next..next + got.len();
                next = chunk.end;
                for (i, made) in chunk.clone().zip(got) {
                    match made {
                        Ok(ns) => batch.ns[i] = Some(ns),
                        Err(e) => batch.fail(
                            i,
                            Op::Namespace,
                            Failure {
                                errno: e.raw_os_error().unwrap_or(0),
                                ext_ack: None,
                                detail: Some(format!("creating the namespace: {e}")),
                            },
                        ),
                    }
                }
            }

            let t = Instant::now();
            let mut flights = Vec::new();
            for i in chunk.clone() {
                if let Some(ns) = &batch.ns[i] {
                    let fd = ns.sock.as_raw_fd();
                    let group = self.sub_batch_for(&mut sub_batches, i);
                    let route = match &source {
                        NsSource::Given { default_route, .. } if !default_route[i] => {
                            plan::SlotRoute::None
                        }
                        _ => plan::SlotRoute::Default,
                    };
                    flights.extend(plan::slot_socket(
                        &mut self.ledger,
                        self.slot_limits,
                        i,
                        &specs[i],
                        fd,
                        PoolShape { group, ..shape },
                        route,
                    ));
                }
            }
            if let Some(prev) = carry.clone() {
                let ok = prev.filter(|&i| batch.is_ok(i));
                let host_sock = self.host.socket_fd();
                let mut host = plan::host_addresses(
                    &mut self.ledger,
                    self.host_limits,
                    host_sock,
                    ok.map(|i| (i, &specs[i])),
                    plan::HostEnds { per_device, ack },
                    &mut tc_filter,
                );
                flights.append(&mut host);
            }
            batch.count_requests(&flights);
            let settled = self.fly(&mut flights)?;
            let settled = self.recover_lost(settled, specs, &[], per_device);
            if settled.iter().any(|s| {
                matches!(
                    s,
                    Settled::Done {
                        slot: WHOLE_BATCH,
                        op: Op::TcFilter
                    }
                )
            }) {
                self.tc_filter_made = true;
            }
            batch.apply(settled);
            phases.links += t.elapsed();
            progress(next, count);

            if let Some(prev) = carry.take() {
                let t = Instant::now();
                self.roll_back(&mut batch, prev)?;
                phases.rollback += t.elapsed();
            }
            if !chunk.is_empty() {
                carry = Some(chunk);
            }
        }

        let each = plan::HostEnds { per_device, ack };
        let brought = self.bring_up(&mut batch, sub_batches, group, each)?;
        phases.links += brought.group_changes_took + brought.ipv6_sysctl_took;

        if let Some(dir) = pin_dir {
            let t = Instant::now();
            self.pin_all(&mut batch, dir);
            phases.pin = t.elapsed();
        }
        let t = Instant::now();
        self.roll_back(&mut batch, 0..count)?;
        phases.rollback += t.elapsed();

        let pool_after = self.pool.stats();
        phases.namespaces = pool_after.busy.saturating_sub(pool_before.busy);
        let requests = batch.requests;
        let slots = batch.finish(specs, pin_dir);
        let failed = slots.iter().filter(|s| s.is_err()).count();
        let report = ProvisionReport {
            requested: count,
            provisioned: count - failed,
            failed,
            wall: started.elapsed(),
            phases,
            namespaces_created: pool_after.created - pool_before.created,
            ring_enters: self.ring.enters - enters0,
            sendmsgs: self.ring.sends - sends0,
            requests,
            group_changes: brought.group_changes,
            group_changes_took: brought.group_changes_took,
            ipv6_sysctl: brought.ipv6_sysctl,
            ipv6_sysctl_took: brought.ipv6_sysctl_took,
            recovered_after_overrun: self.recovered - recovered0,
        };
        Ok(Provisioned { slots, report })
    }

    /// Deletes every host end of the pool's group in one request, unpins the given slots
    /// and closes them, many fds per io_uring_enter. The kernel destroys the namespaces in
    /// a batch (cleanup_net).
    ///
    /// A tc-block pool's block and filter go with the last host end: each device's
    /// unregistration destroys its clsact qdisc (clsact_destroy → tcf_block_put_ext), and
    /// the last put of the shared block flushes its chains, which frees the filter and
    /// drops its program reference (cls_bpf_destroy). A later call makes the filter again.
    pub fn teardown(&mut self, slots: Vec<Slot>) -> Result<(), EngineError> {
        self.tc_filter_made = false;
        let groups = std::mem::take(&mut self.groups_used);
        // Only the pool's own host ends, judged from the kernel as `gc` judges them: a
        // group is deleted whole only when it holds nothing else (a stranger may have put
        // a device in it meanwhile), its devices one by one otherwise.
        let links = self
            .host
            .links()
            .map_err(EngineError::io("dump links before teardown"))?;
        let doomed: Vec<u32> = links
            .iter()
            .filter(|l| groups.contains(&l.group))
            .filter(|l| {
                crate::ownership::host_end_id(l, &self.config.prefix, self.config.group).is_some()
            })
            .map(|l| l.index)
            .collect();
        let deleted = self.host.delete_devices(&doomed, &links);
        if let Some(first) = deleted.errors.into_iter().next() {
            return Err(EngineError::Io {
                what: "delete the pool's host ends".into(),
                source: std::io::Error::other(first),
            });
        }
        self.host_ends = 0;
        let unpinned = self.unpin_slots(&slots);
        let mut fds = Vec::with_capacity(slots.len() * 2);
        for slot in slots {
            let ns = slot.ns;
            fds.push(sock::into_owned(ns.sock));
            fds.extend(ns.nsfd.into_inner());
        }
        self.ring
            .close_all(fds)
            .map_err(EngineError::io("close slot namespaces"))?;
        if unpinned.is_ok() {
            self.holds_slots = false;
        }
        unpinned
    }

    /// The group of slot `slot`'s host end: the open sub-batch's, or a new sub-batch's,
    /// sized by the budget for the host ends that will be up when its group change runs.
    fn sub_batch_for(&mut self, sub_batches: &mut SubBatches, slot: usize) -> u32 {
        if sub_batches.room == 0 {
            // Every host end given a group so far in this call comes up before this one.
            let before: usize = sub_batches.list.iter().map(|(_, s)| s.len()).sum();
            let up = self.host_ends + before;
            sub_batches.room = if self.first_attach_alone(up) {
                1
            } else {
                self.budget.group_size(up)
            };
            let g = self.free_group(sub_batches);
            sub_batches.list.push((g, Vec::new()));
        }
        sub_batches.room -= 1;
        let (g, members) = sub_batches.list.last_mut().expect("opened above");
        members.push(slot);
        *g
    }

    /// Whether the next sub-batch, with `up` of the pool's host ends up before it, is the
    /// first XDP attach of the counters program, to be brought up alone. The first host
    /// end to get the program also adds it to the kernel's XDP dispatcher, which waits out
    /// an RCU grace period under RTNL (bpf_dispatcher_update → synchronize_rcu; 6.6–25 ms on
    /// a 2-vCPU VM). Alone in its group change, that wait is not added to a full sub-batch.
    fn first_attach_alone(&self, up: usize) -> bool {
        up == 0
            && self.budget.is_bounded()
            && self.xdp.is_some()
            && self.config.xdp_attach == CountersAttach::Group
    }

    /// The next of the pool's groups that holds nothing of this engine, marked used.
    ///
    /// Groups are not given back as slots are released one by one (`release_slots`,
    /// `detach`), so a long-lived engine (the daemon) can hand all 65536 out. Then the
    /// kernel says which still hold host ends, and the others are free again (with the
    /// groups of the call in progress, whose host ends may not exist yet).
    fn free_group(&mut self, in_progress: &SubBatches) -> u32 {
        for pass in 0..2 {
            for _ in 0..=u16::MAX {
                let g = groups::sub_batch_group(self.config.group, self.next_sub_batch);
                self.next_sub_batch = self.next_sub_batch.wrapping_add(1);
                if self.groups_used.insert(g) {
                    return g;
                }
            }
            if pass == 0 {
                if let Ok(links) = self.host.links() {
                    let base = self.config.group;
                    self.groups_used = links
                        .iter()
                        .map(|l| l.group)
                        .filter(|&g| groups::owns(base, g))
                        .chain(in_progress.list.iter().map(|(g, _)| *g))
                        .collect();
                }
            }
        }
        // All 65536 hold host ends: share one. Its group change then also touches the
        // earlier devices (a longer hold, the same result).
        groups::sub_batch_group(self.config.group, self.next_sub_batch)
    }

    /// Marks every sub-batch group of the pool as handed out, as a long-lived engine that
    /// has given out all 65536 would have them, so that a test can drive `free_group`'s
    /// re-read of the groups in use from the kernel in seconds instead of 65536 calls.
    #[cfg(feature = "internals")]
    pub fn hand_out_every_sub_batch_group(&mut self) {
        let base = self.config.group;
        self.groups_used = (0..=u16::MAX)
            .map(|k| groups::sub_batch_group(base, k))
            .collect();
    }

    /// Sends every flight and settles every reply, reading again from sockets whose end
    /// marker has not arrived yet (each earlier error reply is its own datagram).
    fn fly(&mut self, flights: &mut [Flight]) -> Result<Vec<Settled>, EngineError> {
        let mut settled = Vec::new();
        let mut bufs = vec![vec![0u8; REPLY_BUF]; flights.len()];
        let mut first = true;
        loop {
            let active: Vec<usize> = (0..flights.len())
                .filter(|&i| !flights[i].pending.complete)
                .collect();
            if active.is_empty() {
                return Ok(settled);
            }
            let mut results = Vec::with_capacity(active.len());
            {
                let mut by_index: Vec<Option<&mut Vec<u8>>> = bufs.iter_mut().map(Some).collect();
                let mut exchanges: Vec<Exchange<'_>> = active
                    .iter()
                    .map(|&i| {
                        let f = &flights[i];
                        let send = first.then_some(&f.bytes[..]);
                        let buf = by_index[i].take().expect("each flight once");
                        Exchange::new(f.fd, send, buf)
                    })
                    .collect();
                if let Err(e) = self.ring.run(&mut exchanges) {
                    drop(exchanges);
                    if self.ring.is_broken() {
                        // Operations may still point at the sends and the reply buffers:
                        // leak them rather than free them under the kernel (ring.rs).
                        for f in flights.iter_mut() {
                            std::mem::forget(std::mem::take(&mut f.bytes));
                        }
                        std::mem::forget(std::mem::take(&mut bufs));
                    }
                    return Err(EngineError::io("io_uring submit")(e));
                }
                for ex in &exchanges {
                    results.push((ex.sent, ex.reply().map(<[u8]>::len)));
                }
            }
            for (&i, (sent, reply)) in active.iter().zip(results) {
                let pending = &mut flights[i].pending;
                if first && sent < 0 {
                    settled.extend(pending.give_up(
                        &mut self.ledger,
                        -sent,
                        "sendmsg refused the whole send; nothing of it was processed".into(),
                    ));
                    continue;
                }
                match reply {
                    Ok(len) => settled.extend(pending.on_reply(&mut self.ledger, &bufs[i][..len])),
                    // The receive buffer overran: replies were dropped. Read on what is
                    // still queued; the marker no longer proves success (see reconcile).
                    Err(libc::ENOBUFS) => pending.overrun = true,
                    Err(libc::EAGAIN) if pending.overrun => settled.extend(pending.give_up(
                        &mut self.ledger,
                        libc::ENOBUFS,
                        crate::reconcile::LOST_TO_OVERRUN.into(),
                    )),
                    Err(libc::EAGAIN) => settled.extend(pending.give_up(
                        &mut self.ledger,
                        0,
                        "no reply for this request: the kernel's replies stopped before the end marker".into(),
                    )),
                    Err(libc::EMSGSIZE) => settled.extend(pending.give_up(
                        &mut self.ledger,
                        0,
                        format!("a reply was longer than {REPLY_BUF} bytes"),
                    )),
                    Err(errno) => settled.extend(pending.give_up(
                        &mut self.ledger,
                        errno,
                        "reading replies failed; replies may have been lost".into(),
                    )),
                }
            }
            first = false;
        }
    }

    /// Brings every sub-batch of the call up, once all host addresses are settled and
    /// failed slots rolled back: one send with each sub-batch's group changes, timed as a
    /// whole so that the budget learns what they cost. Each change is its own RTNL
    /// acquisition, bounded by its sub-batch. A failed change fails the slots of its own
    /// sub-batch only.
    ///
    /// All at the end rather than chunk by chunk as the call goes: interleaved with the
    /// rest of the provisioning, the same group changes held RTNL longer in all and more
    /// often past the budget (docs/rtnl-hold.md).
    ///
    /// Under a budget, IPv6 goes off through each host end's `disable_ipv6` first
    /// (`sysctl`), which halves what the group changes cost per device; a sub-batch
    /// with a host end whose write did not land falls back to the netlink `IPv6 off`
    /// group change. Without a budget, that change alone does it: one acquisition per
    /// call instead of one per slot, the fewest the kernel allows.
    fn bring_up(
        &mut self,
        batch: &mut Batch,
        sub_batches: SubBatches,
        template: plan::GroupChange,
        each: plan::HostEnds,
    ) -> Result<BroughtUp, EngineError> {
        let mut brought = BroughtUp::default();
        let live: Vec<(u32, Vec<usize>)> = sub_batches
            .list
            .into_iter()
            .map(|(g, slots)| (g, slots.into_iter().filter(|&i| batch.is_ok(i)).collect()))
            .filter(|(_, ok): &(u32, Vec<usize>)| !ok.is_empty())
            .collect();
        let mut sysctl_done = vec![false; live.len()];
        if template.ipv6_off && self.budget.is_bounded() && !live.is_empty() {
            let t = Instant::now();
            let names: Vec<&str> = live
                .iter()
                .flat_map(|(_, ok)| ok.iter().map(|&i| batch.specs[i].name.as_str()))
                .collect();
            // A failure here costs speed, not slots: the fallback does the same job.
            let (each, rounds) =
                crate::sysctl::disable_ipv6(&mut self.ring, self.host.netns_fd(), &names)
                    .map(|d| (d.each, d.rounds))
                    .unwrap_or_else(|e| {
                        let errno = e.raw_os_error().unwrap_or(libc::EIO);
                        (vec![Err(errno); names.len()], 0)
                    });
            let mut results = each.iter();
            for ((_, ok), done) in live.iter().zip(sysctl_done.iter_mut()) {
                let landed = results
                    .by_ref()
                    .take(ok.len())
                    .filter(|r| r.is_ok())
                    .count();
                *done = landed == ok.len();
                brought.ipv6_sysctl += landed;
            }
            brought.ipv6_sysctl_took = t.elapsed();
            let first_error = each.iter().find_map(|r| r.err());
            tracing::debug!(
                devices = names.len(),
                landed = brought.ipv6_sysctl,
                rounds,
                took = ?brought.ipv6_sysctl_took,
                "disable_ipv6 written"
            );
            if let Some(errno) = first_error {
                tracing::warn!(
                    not_written = names.len() - brought.ipv6_sysctl,
                    error = %std::io::Error::from_raw_os_error(errno),
                    "disable_ipv6 of some host ends could not be written; their sub-batches \
                     turn IPv6 off by netlink instead (slower group changes, see \
                     docs/rtnl-hold.md)"
                );
            }
        }
        let mut changes = Vec::new();
        let mut members = Vec::new();
        let mut weights = Vec::new();
        let mut up = self.host_ends;
        for ((g, ok), sysctl_done) in live.into_iter().zip(sysctl_done) {
            let key = ok[0];
            changes.push((
                key,
                plan::GroupChange {
                    group: g,
                    ipv6_off: template.ipv6_off && !sysctl_done,
                    ..template
                },
            ));
            weights.push((ok.len(), up));
            up += ok.len();
            members.push((key, ok));
        }
        if changes.is_empty() {
            return Ok(brought);
        }
        // The pool's first XDP attach waits out an RCU grace period (first_attach_alone):
        // its change goes in a send of its own, which the budget does not learn from,
        // since the model has no term for it.
        let split = usize::from(self.first_attach_alone(self.host_ends));
        let mut took = Duration::ZERO;
        for (range, learn) in [(0..split, false), (split..changes.len(), true)] {
            if range.is_empty() {
                continue;
            }
            let t = Instant::now();
            let mut flights = plan::group_changes(
                &mut self.ledger,
                self.host_limits,
                self.host.socket_fd(),
                &changes[range.clone()],
                each.ack,
            );
            batch.count_requests(&flights);
            let settled = self.fly(&mut flights)?;
            let settled = self.recover_lost(
                settled,
                batch.specs,
                &changes[range.clone()],
                each.per_device,
            );
            batch.apply(for_members(settled, &members[range.clone()]));
            let dt = t.elapsed();
            if learn {
                self.budget.observe(dt, &weights[range]);
            }
            took += dt;
        }
        tracing::debug!(
            groups = changes.len(),
            devices = up - self.host_ends,
            up_before = self.host_ends,
            ?took,
            "group changes"
        );
        self.host_ends = up;
        brought.group_changes = changes.len();
        brought.group_changes_took = took;
        Ok(brought)
    }

    /// Settles from the kernel's own state the host requests whose replies a receive-buffer
    /// overrun may have dropped: a host address is done if the address dump shows it on
    /// its host end; a group change (of `groups`, by key) or an XDP attach (idempotent) is
    /// sent again, alone, with an ACK. Anything else stays failed, naming the overrun.
    fn recover_lost(
        &mut self,
        settled: Vec<Settled>,
        specs: &[SlotSpec],
        groups: &[(usize, plan::GroupChange)],
        per_device: PerDevice,
    ) -> Vec<Settled> {
        let per_device_xdp = match per_device {
            PerDevice::Xdp(fd) => Some(fd),
            PerDevice::Nothing | PerDevice::Clsact { .. } => None,
        };
        let lost =
            |s: &Settled| matches!(s, Settled::Failed { why, .. } if why.errno == libc::ENOBUFS);
        if !settled.iter().any(lost) {
            return settled;
        }
        let addrs = self.host.addresses().ok();
        let mut out = Vec::with_capacity(settled.len());
        for s in settled {
            let Settled::Failed { slot, op, why } = s else {
                out.push(s);
                continue;
            };
            if why.errno != libc::ENOBUFS {
                out.push(Settled::Failed { slot, op, why });
                continue;
            }
            let recovered = match op {
                Op::HostAddr if slot != WHOLE_BATCH => {
                    let spec = &specs[slot];
                    match &addrs {
                        Some(a) => {
                            if a.iter().any(|r| {
                                r.index == spec.ifindex
                                    && r.addr == std::net::IpAddr::V4(spec.host_ip)
                            }) {
                                Ok(())
                            } else {
                                Err("the kernel's address dump shows the address missing".into())
                            }
                        }
                        None => Err("the address dump to check it failed too".to_owned()),
                    }
                }
                _ => request_again(op, slot, specs, groups, per_device_xdp).and_then(|msg| {
                    self.host
                        .resend(msg)
                        .map_err(|e| format!("sent again alone: {e}"))
                }),
            };
            match recovered {
                Ok(()) => {
                    self.recovered += 1;
                    out.push(Settled::Done { slot, op });
                }
                Err(more) => out.push(Settled::Failed {
                    slot,
                    op,
                    why: Failure {
                        detail: Some(format!("{}; {more}", why.detail.unwrap_or_default())),
                        ..why
                    },
                }),
            }
        }
        out
    }

    /// Deletes the host end of every failed slot in `range` that may have one, then closes
    /// the slot's namespace.
    fn roll_back(
        &mut self,
        batch: &mut Batch,
        range: std::ops::Range<usize>,
    ) -> Result<(), EngineError> {
        let doomed: Vec<usize> = range
            .filter(|&i| batch.errors[i].is_some() && batch.ns[i].is_some())
            .collect();
        let with_device: Vec<usize> = doomed
            .iter()
            .copied()
            .filter(|&i| batch.veth[i] == VethFate::Present)
            .collect();
        if !with_device.is_empty() {
            let mut flights = plan::delete_host_ends(
                &mut self.ledger,
                self.host_limits,
                self.host.socket_fd(),
                with_device.iter().map(|&i| (i, &batch.specs[i])),
                Op::Rollback,
            );
            batch.count_requests(&flights);
            for s in self.fly(&mut flights)? {
                if let Settled::Failed { slot, why, .. } = s {
                    // ENODEV: the device was never made, or already went with its namespace.
                    if why.errno != libc::ENODEV {
                        batch.note(
                            slot,
                            format!("rollback could not delete the host end: {}", describe(&why)),
                        );
                    }
                }
            }
        }
        for i in doomed {
            batch.ns[i] = None; // closes the namespace
            batch.veth[i] = VethFate::Absent;
        }
        Ok(())
    }

    fn pin_all(&mut self, batch: &mut Batch, dir: &Path) {
        let fail_all = |batch: &mut Batch, why: Failure| {
            for i in 0..batch.specs.len() {
                if batch.is_ok(i) {
                    batch.fail(i, Op::Pin, why.clone());
                }
            }
        };
        if let Err(e) = netns::prepare_pin_dir(dir) {
            fail_all(
                batch,
                io_failure(&e, format!("preparing {}", dir.display())),
            );
            return;
        }
        // The record names every pin, with its namespace's id, before the pin exists: no
        // pin of this pool is ever without the record's evidence (`ownership`).
        let mut planned = Vec::new();
        for i in 0..batch.specs.len() {
            if !batch.is_ok(i) {
                continue;
            }
            let ns = batch.ns[i].as_ref().expect("ok slots hold a namespace");
            // The namespace's id from its socket: no nsfs fd is opened for it yet.
            match sock::netns_cookie(&ns.sock) {
                Ok(ns_id) => planned.push((i, ns_id)),
                Err(e) => batch.fail(
                    i,
                    Op::Pin,
                    io_failure(&e, "reading the namespace id".into()),
                ),
            }
        }
        let names: Vec<PinRecord> = planned
            .iter()
            .map(|&(i, ns_id)| PinRecord {
                name: batch.specs[i].name.clone(),
                ns_id,
            })
            .collect();
        if let Err(e) = self.record_pins(names, &[]) {
            let e = std::io::Error::other(e.to_string());
            fail_all(batch, io_failure(&e, "recording the pins".into()));
            return;
        }
        let mut failed = Vec::new();
        // Each nsfs fd opened to pin is closed once pinned, a few at a time through the
        // ring: a pinned slot holds one fd (its socket), and pinning needs only a handful
        // more at any moment, whatever the number of slots.
        let mut opened = Vec::with_capacity(PIN_CLOSE_BATCH);
        for (i, _) in planned {
            let path = dir.join(&batch.specs[i].name);
            let ns = batch.ns[i].as_mut().expect("ok slots hold a namespace");
            let pinned = ns.nsfd().and_then(|fd| netns::pin(fd, &path));
            opened.extend(ns.nsfd.take());
            if opened.len() >= PIN_CLOSE_BATCH {
                if let Err(e) = self.ring.close_all(std::mem::take(&mut opened)) {
                    tracing::warn!("closing namespace fds after pinning: {e}");
                }
            }
            match pinned {
                Ok(()) => batch.pinned[i] = true,
                Err(e) => {
                    failed.push(batch.specs[i].name.clone());
                    batch.fail(
                        i,
                        Op::Pin,
                        io_failure(&e, format!("bind-mounting {}", path.display())),
                    )
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
    }

    /// Adds `add` to the record's pins and drops those named in `drop` (one atomic
    /// rewrite); nothing without a claim.
    fn record_pins(
        &mut self,
        add: Vec<PinRecord>,
        drop: &[String],
    ) -> Result<(), crate::record::RecordError> {
        let Some(lock) = &mut self.lock else {
            return Ok(());
        };
        let mut r = lock.current().cloned().unwrap_or_else(|| {
            crate::record::PoolRecord::new(&self.config.prefix, self.config.group)
        });
        r.pins
            .retain(|p| !drop.contains(&p.name) && !add.iter().any(|a| a.name == p.name));
        r.pins.extend(add);
        lock.write(r)
    }

    /// Unpins `slots` and drops their pins from the record, after they are gone.
    fn unpin_slots(&mut self, slots: &[Slot]) -> Result<(), EngineError> {
        let unpinned = unpin_all(slots);
        let names: Vec<String> = slots
            .iter()
            .filter(|s| s.pinned_at().is_some())
            .map(|s| s.spec.name.clone())
            .collect();
        if !names.is_empty() {
            self.record_pins(Vec::new(), &names)
                .map_err(crate::gc::GcError::from)?;
        }
        unpinned
    }
}

impl Drop for Engine {
    /// Removes the counters pins and the ownership record of a pool that is gone (torn
    /// down, or every slot failed, and never committed), so nothing of it is left;
    /// otherwise the record stays for `gc` to judge.
    fn drop(&mut self) {
        if self.committed || self.holds_slots {
            return;
        }
        if self.pinned_counters {
            if let Some(dir) = &self.config.bpf_pin_dir {
                let _ = netslot_bpf::unpin(dir);
                if let Some(parent) = dir.parent() {
                    let _ = std::fs::remove_dir(parent); // only when no other pool uses it
                }
            }
        }
        if let Some(mut lock) = self.lock.take() {
            let _ = lock.remove();
        }
    }
}

/// The request to send again, alone, for an op whose reply an overrun dropped: only the
/// idempotent ones (a group change of `groups`, filed under its key; an XDP attach).
fn request_again(
    op: Op,
    slot: usize,
    specs: &[SlotSpec],
    groups: &[(usize, plan::GroupChange)],
    per_device_xdp: Option<std::os::fd::RawFd>,
) -> Result<netlink_packet_route::RouteNetlinkMessage, String> {
    use crate::wire::link;
    let group = groups.iter().find(|(key, _)| *key == slot).map(|(_, g)| *g);
    match (op, group) {
        (Op::GroupUp, Some(g)) => Ok(link::group_up(g.group, g.xdp_fd)),
        (Op::Ipv6Off, Some(g)) => Ok(link::group_ipv6_addr_gen_none(g.group)),
        (Op::Xdp, None) if slot != WHOLE_BATCH => match per_device_xdp {
            Some(fd) => Ok(link::attach_xdp(specs[slot].ifindex, fd)),
            None => Err("no program to attach".into()),
        },
        _ => Err("not recoverable from kernel state".into()),
    }
}

/// The host ends of one call, split into sub-batches: one device group each.
#[derive(Debug, Default)]
struct SubBatches {
    /// (group, slots) in the order the group changes run.
    list: Vec<(u32, Vec<usize>)>,
    /// Host ends the open sub-batch can still take.
    room: usize,
}

/// Group changes' replies, each failure (filed under its sub-batch's key) spread to the
/// slots of that sub-batch (`members`: key, slots) and to no other.
fn for_members(settled: Vec<Settled>, members: &[(usize, Vec<usize>)]) -> Vec<Settled> {
    let mut out = Vec::with_capacity(settled.len());
    for s in settled {
        match s {
            Settled::Failed { slot, op, why } => {
                match members.iter().find(|(key, _)| *key == slot) {
                    Some((_, slots)) => out.extend(slots.iter().map(|&slot| Settled::Failed {
                        slot,
                        op,
                        why: why.clone(),
                    })),
                    None => out.push(Settled::Failed { slot, op, why }),
                }
            }
            other => out.push(other),
        }
    }
    out
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

fn io_failure(e: &std::io::Error, doing: String) -> Failure {
    Failure {
        errno: e.raw_os_error().unwrap_or(0),
        ext_ack: None,
        detail: Some(format!("{doing}: {e}")),
    }
}

fn describe(f: &Failure) -> String {
    let mut s = std::io::Error::from_raw_os_error(f.errno).to_string();
    if let Some(t) = &f.ext_ack {
        s.push_str(&format!(": kernel says {t:?}"));
    }
    s
}

/// Where a call's namespaces come from.
enum NsSource {
    /// The engine's own pool (new namespaces).
    Pool,
    /// Namespaces the caller owns, each with a socket opened inside it.
    Given {
        sockets: std::vec::IntoIter<std::io::Result<PooledNs>>,
        /// Per slot of the call: whether it gets the default route.
        default_route: Vec<bool>,
    },
}

/// One caller-given namespace to provision a slot into (see [`Engine::attach`]).
#[derive(Debug)]
pub struct AttachTarget {
    /// An fd of the namespace (e.g. opened from CNI_NETNS); closed by the engine.
    pub netns: std::os::fd::OwnedFd,
    /// Name of the slot end inside it (CNI_IFNAME), at most 15 bytes.
    pub ifname: String,
    /// Whether the slot adds the default route via its host end inside the namespace.
    /// `false` for a second slot in a namespace that already has one (a second
    /// default route would fail with EEXIST): that slot gets its address only, and its
    /// host end is reached through the /31's connected route.
    pub default_route: bool,
    /// MTU of this slot's veth pair (both ends), instead of the configuration's `mtu`.
    /// It must pass [`EngineConfig::check_slot_mtu`]. `None`: the configuration's.
    pub mtu: Option<u32>,
    /// MAC of the slot end (inside `netns`), instead of the one derived from the slot id.
    /// It must be a unicast address ([`crate::is_unicast_mac`]). `None`: the derived one.
    pub mac: Option<[u8; 6]>,
    /// An IPAM lease to use instead of the pool's /31 (see [`SlotSpec::leased`]); the
    /// default route, when `default_route`, goes via its gateway. `None`: the pool's /31.
    pub ipv4: Option<crate::slot::Ipv4Lease>,
}

/// What [`Engine::attach`] hands back: per target, in order, the slot's facts or why it
/// failed (everything of a failed slot rolled back), and the call's report.
#[derive(Debug)]
pub struct Attached {
    /// One entry per target.
    pub slots: Vec<Result<SlotSpec, SlotError>>,
    /// Counts and timings of the call.
    pub report: ProvisionReport,
}

/// Per-slot state of one provisioning call.
struct Batch<'s> {
    specs: &'s [SlotSpec],
    ns: Vec<Option<PooledNs>>,
    errors: Vec<Option<SlotError>>,
    veth: Vec<VethFate>,
    pinned: Vec<bool>,
    requests: u64,
}

impl<'s> Batch<'s> {
    fn new(specs: &'s [SlotSpec]) -> Self {
        let n = specs.len();
        Self {
            specs,
            ns: (0..n).map(|_| None).collect(),
            errors: vec![None; n],
            veth: vec![VethFate::Absent; n],
            pinned: vec![false; n],
            requests: 0,
        }
    }

    fn is_ok(&self, i: usize) -> bool {
        self.errors[i].is_none() && self.ns[i].is_some()
    }

    fn count_requests(&mut self, flights: &[Flight]) {
        self.requests += flights
            .iter()
            .map(|f| f.pending.requests.len() as u64)
            .sum::<u64>();
    }

    /// Records slot `i`'s first failure (later ones are consequences of it).
    fn fail(&mut self, i: usize, op: Op, why: Failure) {
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

    fn note(&mut self, i: usize, text: String) {
        if let Some(e) = &mut self.errors[i] {
            e.detail = Some(match e.detail.take() {
                Some(d) => format!("{d}; {text}"),
                None => text,
            });
        }
    }

    fn apply(&mut self, settled: Vec<Settled>) {
        for s in settled {
            match s {
                Settled::Done { slot, op } => {
                    if slot != WHOLE_BATCH && op == Op::Veth {
                        self.veth[slot] = VethFate::Present;
                    }
                }
                Settled::Failed { slot, op, why } => {
                    if slot == WHOLE_BATCH {
                        for i in 0..self.specs.len() {
                            if self.is_ok(i) {
                                self.fail(i, op, why.clone());
                            }
                        }
                        continue;
                    }
                    // A lost reply (errno 0) leaves the veth possibly created.
                    if op == Op::Veth && why.errno == 0 {
                        self.veth[slot] = VethFate::Present;
                    }
                    self.fail(slot, op, why);
                }
            }
        }
    }

    fn finish(
        mut self,
        specs: &[SlotSpec],
        pin_dir: Option<&Path>,
    ) -> Vec<crate::result::SlotResult> {
        (0..specs.len())
            .map(|i| match self.errors[i].take() {
                Some(e) => Err(e),
                None => Ok(Slot {
                    spec: specs[i].clone(),
                    ns: self.ns[i].take().expect("ok slots hold a namespace"),
                    pinned: self.pinned[i]
                        .then(|| pin_dir.map(|d| d.join(&specs[i].name)))
                        .flatten(),
                }),
            })
            .collect()
    }
}
