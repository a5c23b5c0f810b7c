//! drive: feeds one `call::Call` from the engine's resources: namespaces from the pool
//! (or the caller's), each round of sends and receives through the ring, address dumps
//! and sysctl writes in the host namespace, pins; then turns its outcome into slots and
//! the call's report.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::Instant;

use crate::batch::Sock;
use crate::call::{Call, Choices, Next, Outcome, REPLY_BUF};
use crate::config::CountersAttach;
use crate::engine::Engine;
use crate::netns::PooledNs;
use crate::op::Op;
use crate::pin::io_failure;
use crate::plan::{self, PerDevice, PoolShape, SlotRoute};
use crate::result::{EngineError, PhaseTimes, ProvisionReport, Provisioned, SlotError};
use crate::ring::Exchange;
use crate::slot::{Slot, SlotSpec};

/// Fewest namespaces a chunk waits for: enough to keep io_uring_enter and host sendmsg
/// counts far below one per slot, few enough that link work starts while the pool thread
/// is still creating the rest (their overlap is most of the speed).
const MIN_CHUNK: usize = 32;

/// Where a call's namespaces come from.
pub(crate) enum NsSource {
    /// The engine's own pool (new namespaces).
    Pool,
    /// Namespaces the caller owns, each with a socket opened inside it.
    Given(std::vec::IntoIter<std::io::Result<PooledNs>>),
    /// None (a detach).
    None,
}

impl Engine {
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
        let routes = vec![SlotRoute::Default; specs.len()];
        self.run(
            specs,
            routes,
            NsSource::Pool,
            pin_dir.as_deref(),
            &mut progress,
        )
    }

    /// The choices every slot of a call shares, from the configuration and the counters.
    pub(crate) fn choices(&self, pin: bool) -> Choices {
        let prog_fd = self.counters.as_ref().map(|x| x.prog_fd().as_raw_fd());
        let block = self.config.tc_block_index();
        let attach = self.config.xdp_attach;
        let (group_xdp, per_device) = match (attach, prog_fd) {
            (_, None) => (None, PerDevice::Nothing),
            (CountersAttach::Group, Some(fd)) => (Some(fd), PerDevice::Nothing),
            (CountersAttach::PerDevice, Some(fd)) => (None, PerDevice::Xdp(fd)),
            (CountersAttach::TcBlock, Some(_)) => (None, PerDevice::Clsact { block }),
        };
        let kept = self.kept.as_ref().expect("no call is running");
        // Once per pool: a later call's host ends join the block by their qdisc.
        let tc_filter = match (attach, prog_fd) {
            (CountersAttach::TcBlock, Some(fd)) if !kept.tc_filter_made => Some(plan::TcFilter {
                block,
                prog_fd: fd,
                prog_name: netslot_bpf::Hook::Tc.prog_name(),
            }),
            _ => None,
        };
        Choices {
            shape: PoolShape {
                group: self.config.group,
                host_netns_fd: self.host.netns_fd().as_raw_fd(),
                ipv6_off: !self.config.ipv6,
                tap_xdp_fd: self.tap_redirect.as_ref().map(|p| p.prog_fd().as_raw_fd()),
            },
            group_xdp,
            per_device,
            ack: if self.config.faults.ack_every_host_request {
                netlink_packet_core::NLM_F_ACK
            } else {
                0
            },
            tc_filter,
            first_attach_alone: kept.budget.is_bounded()
                && self.counters.is_some()
                && attach == CountersAttach::Group,
            chunk: self.config.chunk,
            min_chunk: MIN_CHUNK,
            host_limits: self.host_limits,
            slot_limits: self.slot_limits,
            pin,
        }
    }

    /// One provisioning call over `specs` (each with its route), namespaces taken from
    /// `source`.
    pub(crate) fn run(
        &mut self,
        specs: Vec<SlotSpec>,
        routes: Vec<SlotRoute>,
        mut source: NsSource,
        pin_dir: Option<&Path>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Provisioned, EngineError> {
        let count = specs.len();
        self.holds_slots = true;
        self.refresh_groups(count);
        let started = Instant::now();
        let pool_before = self.pool.stats();
        let (enters0, sends0) = (self.ring.enters, self.ring.sends);
        let choices = self.choices(pin_dir.is_some());
        let kept = self.kept.take().expect("no call is running");
        let mut call = Call::provision(specs, routes, choices, kept);
        let mut ns: Vec<Option<PooledNs>> = (0..count).map(|_| None).collect();
        let driven = self.drive(&mut call, &mut ns, &mut source, pin_dir, progress);
        let finished = call.finish();
        self.kept = Some(finished.kept);
        driven?;

        let pool_after = self.pool.stats();
        let t = finished.tally;
        let slots = hand_back(finished.slots, ns, pin_dir);
        let failed = slots.iter().filter(|s| s.is_err()).count();
        let report = ProvisionReport {
            requested: count,
            provisioned: count - failed,
            failed,
            wall: started.elapsed(),
            phases: PhaseTimes {
                namespaces: pool_after.busy.saturating_sub(pool_before.busy),
                pool_wait: t.pool_wait,
                links: t.links,
                pin: t.pin,
                rollback: t.rollback,
            },
            namespaces_created: pool_after.created - pool_before.created,
            ring_enters: self.ring.enters - enters0,
            sendmsgs: self.ring.sends - sends0,
            requests: t.requests,
            group_changes: t.group_changes,
            group_changes_took: t.group_changes_took,
            ipv6_sysctl: t.ipv6_sysctl,
            ipv6_sysctl_took: t.ipv6_sysctl_took,
            recovered_after_overrun: t.recovered,
        };
        Ok(Provisioned { slots, report })
    }

    /// Before a call of `count` slots that could run out of sub-batch groups: groups are
    /// handed out, not given back slot by slot, so ask the kernel which still hold the
    /// pool's host ends.
    fn refresh_groups(&mut self, count: usize) {
        if self.kept_mut().groups.may_run_out(count) {
            if let Ok(links) = self.host.links() {
                self.kept_mut()
                    .groups
                    .refresh(links.iter().map(|l| l.group));
            }
        }
    }

    /// Answers `call` until it is done. `ns` holds each slot's namespace.
    pub(crate) fn drive(
        &mut self,
        call: &mut Call,
        ns: &mut [Option<PooledNs>],
        source: &mut NsSource,
        pin_dir: Option<&Path>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(), EngineError> {
        let count = call.len();
        let (mut handed, mut shown) = (0, 0);
        loop {
            let next = call.next(&mut self.host.seqs());
            match next {
                Next::Namespaces { min, max } => {
                    let t = Instant::now();
                    let got: Vec<_> = match source {
                        NsSource::Pool => self.pool.take(min, max),
                        NsSource::Given(sockets) => sockets.by_ref().take(max).collect(),
                        NsSource::None => Vec::new(),
                    };
                    let from = handed.min(ns.len());
                    let answers = hand_over(got, &mut ns[from..]);
                    handed += answers.len();
                    call.namespaces(answers, t.elapsed());
                }
                Next::Exchange => self.exchange(call, ns)?,
                Next::HostAddresses => {
                    let dump: Result<Vec<_>, String> = self
                        .host
                        .addresses()
                        .map(|a| a.iter().map(|r| (r.index, r.addr)).collect())
                        .map_err(|e| e.to_string());
                    call.host_addresses(dump.as_deref().map_err(Clone::clone));
                }
                Next::DisableIpv6(names) => {
                    let t = Instant::now();
                    let each = self.disable_ipv6(&names);
                    call.ipv6_disabled(each, t.elapsed());
                }
                Next::Pin(slots) => {
                    let t = Instant::now();
                    let dir = pin_dir.expect("a call pins only with a pin directory");
                    let specs = call.specs().to_vec();
                    let results = self.pin_all(&specs, ns, &slots, dir);
                    call.pinned(results, t.elapsed());
                }
                Next::Close(slots) => {
                    for i in slots {
                        if let Some(slot) = ns.get_mut(i) {
                            *slot = None;
                        }
                    }
                }
                Next::Done => return Ok(()),
            }
            if call.progress() != shown {
                shown = call.progress();
                progress(shown, count);
            }
        }
    }

    /// Writes `disable_ipv6` of the host ends `names`: per name, written or the errno. A
    /// failure costs speed, not slots: the call falls back to the netlink IPv6-off change.
    fn disable_ipv6(&mut self, names: &[String]) -> Vec<Result<(), i32>> {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        match crate::sysctl::disable_ipv6(&mut self.ring, self.host.netns_fd(), &refs) {
            Ok(d) => {
                tracing::debug!(
                    devices = refs.len(),
                    rounds = d.rounds,
                    "disable_ipv6 written"
                );
                d.each
            }
            Err(e) => vec![Err(e.raw_os_error().unwrap_or(libc::EIO)); refs.len()],
        }
    }

    /// One round of the call's sends and receives: every send of the round in one
    /// io_uring_enter, each linked to its receive.
    fn exchange(&mut self, call: &mut Call, ns: &[Option<PooledNs>]) -> Result<(), EngineError> {
        let t = Instant::now();
        let host_fd = self.host.socket_fd();
        let fd_of = |to: Sock| -> RawFd {
            match to {
                Sock::Host => host_fd,
                Sock::Slot(i) => ns
                    .get(i)
                    .and_then(Option::as_ref)
                    .map_or(-1, |n| n.sock.as_raw_fd()),
            }
        };
        let round = call.round();
        let mut bufs = vec![vec![0u8; REPLY_BUF]; round.len()];
        let mut seen = Vec::with_capacity(round.len());
        let failed = {
            let mut exchanges: Vec<Exchange<'_>> = round
                .iter()
                .zip(bufs.iter_mut())
                .map(|(s, buf)| Exchange::new(fd_of(s.to), s.bytes, buf))
                .collect();
            match self.ring.run(&mut exchanges) {
                Ok(()) => {
                    for (s, ex) in round.iter().zip(&exchanges) {
                        seen.push((s.index, ex.sent, ex.reply().map(<[u8]>::len)));
                    }
                    None
                }
                Err(e) => Some(e),
            }
        };
        drop(round);
        if let Some(e) = failed {
            if self.ring.is_broken() {
                // Operations may still point at the sends and the reply buffers: leak
                // them rather than free them under the kernel (ring.rs).
                call.leak_in_flight();
                std::mem::forget(bufs);
            }
            return Err(EngineError::io("io_uring submit")(e));
        }
        let mut seqs = self.host.seqs();
        for ((index, sent, reply), buf) in seen.into_iter().zip(&bufs) {
            let reply = reply.map(|len| &buf[..len]);
            call.settle(&mut seqs, index, Outcome { sent, reply });
        }
        drop(seqs);
        call.end_round(t.elapsed());
        Ok(())
    }
}

/// Each slot of a finished call as the caller gets it: its namespace and pin, or its
/// error.
fn hand_back(
    mut state: crate::call::Slots,
    mut ns: Vec<Option<PooledNs>>,
    pin_dir: Option<&Path>,
) -> Vec<crate::result::SlotResult> {
    (0..state.len())
        .map(|i| {
            let spec = state.specs[i].clone();
            match (state.errors[i].take(), ns[i].take()) {
                (None, Some(n)) => Ok(Slot {
                    pinned: (state.pinned[i])
                        .then(|| pin_dir.map(|d| d.join(&spec.name)))
                        .flatten(),
                    spec,
                    ns: n,
                }),
                (Some(e), _) => Err(e),
                (None, None) => Err(SlotError {
                    id: spec.id,
                    name: spec.name,
                    op: Op::Namespace,
                    errno: 0,
                    ext_ack: None,
                    detail: Some("the call ended without a namespace for it".into()),
                }),
            }
        })
        .collect()
}

/// Puts each namespace made into the next slot of `ns`, in order; per namespace, Ok or
/// why it could not be made.
fn hand_over(
    got: Vec<std::io::Result<PooledNs>>,
    ns: &mut [Option<PooledNs>],
) -> Vec<Result<Option<u32>, crate::reconcile::Failure>> {
    let mut slots = ns.iter_mut();
    got.into_iter()
        .map(|made| {
            let slot = slots.next();
            let n = made.map_err(|e| namespace_failure(&e))?;
            let tap = n.tap_ifindex;
            if let Some(slot) = slot {
                *slot = Some(n);
            }
            Ok(tap)
        })
        .collect()
}

/// Why the pool could not make a namespace: the tap's own step and errno when it was the
/// tap (`tap::TapFailure`), else the namespace's.
fn namespace_failure(e: &std::io::Error) -> crate::reconcile::Failure {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<crate::tap::TapFailure>())
    {
        Some(tap) => crate::reconcile::Failure {
            errno: tap.errno,
            ext_ack: None,
            detail: Some(tap.to_string()),
        },
        None => io_failure(e, "creating the namespace".into()),
    }
}
