//! engine: the thin driver of provisioning. Owns what lives longer than one call (the
//! host namespace, the ring, the namespace pool thread, the pool's claim and counters
//! program, the slot ids) and feeds each `call::Call` from them (`drive`).
//!
//! `Engine::new` is here; attaching into caller-given namespaces and detaching is in
//! `attach`, pinning in `pin`, the driving loop in `drive`.

use std::collections::BTreeSet;

use crate::call::{Groups, Kept};
use crate::config::EngineConfig;
use crate::hold::HoldBudget;
use crate::host::HostNs;
use crate::ownership::claim;
use crate::ownership::gc::GcReport;
use crate::ownership::record::{AttachmentRecord, PoolLock, PoolPhase};
use crate::pool::NsPool;
use crate::result::EngineError;
use crate::ring::Ring;
use crate::slot::{Slot, SlotSpec};
use crate::sock;

/// Provisions standard slots. Use it from one thread at a time; it is `Send`.
#[derive(Debug)]
pub struct Engine {
    pub(crate) config: EngineConfig,
    pub(crate) host: HostNs,
    pub(crate) host_limits: crate::batch::Limits,
    pub(crate) slot_limits: crate::batch::Limits,
    pub(crate) ring: Ring,
    pub(crate) pool: NsPool,
    pub(crate) ifindex_base: u32,
    pub(crate) next_id: u32,
    /// Ids given back by `detach` / `release_slots`, reused lowest first so that names and
    /// addresses of a long-running engine stay inside the configured pool.
    pub(crate) free_ids: BTreeSet<u32>,
    /// The counters program (XDP or tc, per `config.xdp_attach`) and its map.
    pub(crate) counters: Option<netslot_bpf::Counters>,
    /// The tap redirect program of a microVM pool (`config.kind`), attached to each slot's
    /// tap and slot end.
    pub(crate) tap_redirect: Option<netslot_bpf::TapRedirect>,
    /// What calls hand on to the next one (hold budget, groups, host ends up, ...);
    /// None only while a call has it.
    pub(crate) kept: Option<Kept>,
    /// The claim on the pool (with `EngineConfig::run_dir`), held for the engine's life.
    pub(crate) lock: Option<PoolLock>,
    /// What a dead owner of the pool had left, removed by `new`.
    reclaimed: Option<GcReport>,
    /// Names of devices and pins like the pool's that the pool did not make, each with
    /// what holds it.
    names_taken: std::collections::BTreeMap<String, String>,
    /// Whether this engine pinned the counters (`config.bpf_pin_dir`).
    pinned_counters: bool,
    /// Whether slots of this engine may still exist in the kernel.
    pub(crate) holds_slots: bool,
    /// Whether [`Engine::commit`] was called.
    committed: bool,
    /// Attachments of an earlier owner kept in place (`EngineConfig::adopt`), until the
    /// caller takes them with [`Engine::adopted`].
    adopted: Vec<AttachmentRecord>,
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
        let pool = NsPool::start(
            config.pool_threads,
            config.pool_low,
            config.pool_high,
            config.kind.tap().cloned(),
        )
        .map_err(EngineError::io("start the namespace pool thread"))?;
        let xdp = load_counters(&config)?;
        let tap_redirect = match config.kind.tap() {
            Some(_) => {
                // Refused here, once, rather than by every namespace the pool makes.
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/net/tun")
                    .map_err(EngineError::io(
                        "open /dev/net/tun, which microVM slots make their taps through \
                         (load the tun module: modprobe tun)",
                    ))?;
                Some(netslot_bpf::TapRedirect::load().map_err(|e| {
                    EngineError::io("load the microVM tap redirect program")(std::io::Error::other(
                        e,
                    ))
                })?)
            }
            None => None,
        };
        let pinned_counters = xdp.is_some() && config.bpf_pin_dir.is_some();
        let config_max_hold = config.max_rtnl_hold;
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
        let kept = Kept {
            budget: HoldBudget::new(config_max_hold),
            groups: Groups::new(config.group, groups_used),
            host_ends: adopted.len(),
            tc_filter_made: false,
            recovered: 0,
        };
        Ok(Self {
            config,
            host,
            host_limits,
            slot_limits,
            ring,
            pool,
            ifindex_base,
            next_id,
            free_ids,
            counters: xdp,
            tap_redirect,
            kept: Some(kept),
            lock,
            reclaimed,
            names_taken,
            pinned_counters,
            holds_slots: !adopted.is_empty(),
            committed: false,
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
                spec.tap = None; // attachments are standard slots (see `attach`)
                spec.ifindex = a.ifindex;
                spec.slot_ifname = a.ifname.clone();
                if let Some(mtu) = a.mtu {
                    spec.mtu = mtu;
                }
                if let Some(mac) = a.mac.as_deref().and_then(crate::slot::parse_mac) {
                    spec.slot_mac = mac;
                }
                spec.leases(a.lease(), a.lease_ipv6());
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
            crate::ownership::record::PoolRecord::new(&self.config.prefix, self.config.group)
        });
        r.attachments = attachments;
        lock.write(r).map_err(crate::ownership::gc::GcError::from)?;
        Ok(())
    }

    /// Marks the pool as meant to outlive this engine (its slots are pinned): the
    /// ownership record says `committed`, so `gc` keeps its complete slots after the
    /// engine is gone. Without it, a pool whose engine died is all garbage to `gc`.
    pub fn commit(&mut self) -> Result<(), EngineError> {
        if let Some(lock) = &mut self.lock {
            lock.set_phase(&self.config.prefix, PoolPhase::Committed)
                .map_err(crate::ownership::gc::GcError::from)?;
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
    /// one for [`crate::CountersAttach::TcBlock`]), when the counters are on.
    pub fn xdp_prog_id(&self) -> Option<u32> {
        self.counters.as_ref().map(netslot_bpf::Counters::prog_id)
    }

    /// Per-slot packets and bytes counted by the counters program, for every slot of this
    /// engine that has seen traffic. Empty when the counters are off.
    pub fn counters(&self) -> Result<Vec<crate::result::SlotCounters>, EngineError> {
        let Some(xdp) = &self.counters else {
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

    /// Fds each slot of a call holds once handed back: one, the netlink socket made inside
    /// its namespace (it keeps the namespace alive; [`Slot::netns_fd`] opens an nsfs fd on
    /// demand). A pinned slot's nsfs fd, opened to bind-mount it, is closed once it is
    /// pinned.
    pub fn fds_per_slot(&self) -> usize {
        1
    }

    /// Refuses, before any kernel call, `count` slots that would not fit the process's
    /// open-file limit (see `limits`).
    pub(crate) fn check_fd_budget(&self, count: usize) -> Result<(), EngineError> {
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
    pub(crate) fn take_ids(&mut self, count: usize) -> Result<Vec<u32>, EngineError> {
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

    /// Deletes every host end of the pool's group in one request, unpins the given slots
    /// and closes them, many fds per io_uring_enter. The kernel destroys the namespaces in
    /// a batch (cleanup_net).
    ///
    /// A tc-block pool's block and filter go with the last host end: each device's
    /// unregistration destroys its clsact qdisc (clsact_destroy → tcf_block_put_ext), and
    /// the last put of the shared block flushes its chains, which frees the filter and
    /// drops its program reference (cls_bpf_destroy). A later call makes the filter again.
    pub fn teardown(&mut self, slots: Vec<Slot>) -> Result<(), EngineError> {
        let kept = self.kept_mut();
        kept.tc_filter_made = false;
        let groups = kept.groups.take_used();
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
        self.kept_mut().host_ends = 0;
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
    /// What calls hand on to the next one.
    pub(crate) fn kept_mut(&mut self) -> &mut Kept {
        self.kept.as_mut().expect("no call is running")
    }

    /// Marks every sub-batch group of the pool as handed out, as a long-lived engine that
    /// has given out all 65536 would have them, so that a test can drive the re-read of
    /// the groups in use from the kernel in seconds instead of 65536 calls.
    #[cfg(feature = "internals")]
    pub fn hand_out_every_sub_batch_group(&mut self) {
        self.kept_mut().groups.hand_out_all();
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

/// The counters program the configuration asks for (XDP or tc), loaded, and pinned when
/// it names a bpffs directory; None when the counters are off.
fn load_counters(config: &EngineConfig) -> Result<Option<netslot_bpf::Counters>, EngineError> {
    if !config.xdp_counters {
        return Ok(None);
    }
    let hook = config.xdp_attach.hook();
    let counters = netslot_bpf::Counters::load_hook(hook).map_err(|source| EngineError::Bpf {
        what: format!("load the counters program {}", hook.prog_name()),
        source,
    })?;
    if let Some(dir) = &config.bpf_pin_dir {
        counters.pin(dir).map_err(|source| EngineError::Bpf {
            what: format!("pin the counters in {}", dir.display()),
            source,
        })?;
    }
    Ok(Some(counters))
}
