//! call: one provisioning call (or one detach) as a sans-IO state machine. It owns every
//! decision of the call: chunks of namespaces, what each socket is sent and when (a
//! chunk's host addresses ride with the next chunk's slot sends), sub-batches and their
//! group changes, recovery after an overrun, and rollback of failed slots. It never
//! touches a file descriptor, a clock or the kernel.
//!
//! A driver (`Engine`, the benches, the fuzzers) asks [`Call::next`] what to do and
//! hands back what happened:
//!
//! ```text
//!  Next::Namespaces   -> Call::namespaces     (the pool, or the caller's namespaces)
//!  Next::Exchange     -> Call::round, Call::settle, Call::end_round   (the ring)
//!  Next::HostAddresses-> Call::host_addresses (an address dump, after an overrun)
//!  Next::DisableIpv6  -> Call::ipv6_disabled  (sysctl writes through the ring)
//!  Next::Pin          -> Call::pinned         (bind mounts and the ownership record)
//!  Next::Close        (drop these slots' namespaces: they were rolled back)
//!  Next::Done         -> Call::finish
//! ```
//!
//! Sequence numbers: each slot socket has its own [`Ledger`], kept here; the host
//! socket's ledger belongs to `HostNs` and is lent to every method that plans or settles
//! a host send.

mod bring_up;
mod flights;
mod recover;
mod slots;
mod step;
mod sub_batch;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::batch::Limits;
use crate::hold::HoldBudget;
use crate::op::Op;
use crate::owner::Owner;
use crate::plan::{self, GroupChange, HostEnds, PerDevice, PoolShape, SlotRoute, TcFilter};
use crate::reconcile::Failure;
use crate::seq::Ledger;
use crate::slot::SlotSpec;

pub(crate) use flights::{Outcome, REPLY_BUF};
pub(crate) use slots::Slots;
pub(crate) use sub_batch::Groups;

use flights::Flights;
use recover::Recovery;
use sub_batch::SubBatches;

/// What every slot of one call shares: the pool's shape and the counters' choices.
#[derive(Debug, Clone)]
pub(crate) struct Choices {
    /// The pool's base group (each sub-batch gets its own), host namespace fd, IPv6 off.
    pub shape: PoolShape,
    /// The counters program attached by the group changes (group attach).
    pub group_xdp: Option<RawFd>,
    /// What each host end gets besides its address.
    pub per_device: PerDevice,
    /// 0, or NLM_F_ACK on every host request (fault injection).
    pub ack: u16,
    /// The pool's one tc filter, sent by the first call that makes a qdisc.
    pub tc_filter: Option<TcFilter>,
    /// Whether the pool's first host end brings the XDP program up alone: the first
    /// attach adds it to the kernel's XDP dispatcher, which waits out an RCU grace period
    /// under RTNL (bpf_dispatcher_update → synchronize_rcu; 6.6–25 ms on a 2-vCPU VM).
    /// Alone in its group change, that wait is not added to a full sub-batch.
    pub first_attach_alone: bool,
    /// Most namespaces per chunk, and fewest a chunk waits for.
    pub chunk: usize,
    pub min_chunk: usize,
    pub host_limits: Limits,
    pub slot_limits: Limits,
    /// Whether the call pins its slots (`Next::Pin`).
    pub pin: bool,
}

/// What the engine keeps from one call to the next; lent to each call and handed back
/// by [`Call::finish`].
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    /// The RTNL hold budget and what group changes were measured to cost.
    pub budget: HoldBudget,
    /// The pool's sub-batch groups handed out.
    pub groups: Groups,
    /// The pool's host ends that are up: a group change's cost per device grows with it.
    pub host_ends: usize,
    /// Whether the pool's tc filter exists (tc-block only).
    pub tc_filter_made: bool,
    /// Requests settled from kernel state after an overrun dropped their replies.
    pub recovered: u64,
}

/// What the driver must do next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Hand over namespaces for at least `min` (waiting for them) and at most `max` more
    /// slots, in order: [`Call::namespaces`].
    Namespaces { min: usize, max: usize },
    /// Run one round of [`Call::round`]'s sends and receives.
    Exchange,
    /// Dump the host's addresses: [`Call::host_addresses`].
    HostAddresses,
    /// Write `disable_ipv6` of these host ends: [`Call::ipv6_disabled`].
    DisableIpv6(Vec<String>),
    /// Pin these slots: [`Call::pinned`].
    Pin(Vec<usize>),
    /// Close these slots' namespaces (rolled back).
    Close(Vec<usize>),
    /// Nothing more: [`Call::finish`].
    Done,
}

/// Time and counts of one call, as far as the call itself sees them.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    pub requests: u64,
    pub pool_wait: Duration,
    pub links: Duration,
    pub rollback: Duration,
    pub pin: Duration,
    pub group_changes: usize,
    pub group_changes_took: Duration,
    pub ipv6_sysctl: usize,
    pub ipv6_sysctl_took: Duration,
    pub recovered: u64,
}

/// What a finished call hands back.
#[derive(Debug)]
pub(crate) struct Finished {
    pub slots: Slots,
    pub tally: Tally,
    pub kept: Kept,
}

/// Where the call is between two driver answers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// The next chunk's namespaces, or the last carried host addresses, or bring-up.
    Take,
    /// `Next::Namespaces` was handed out.
    AwaitNamespaces,
    /// A chunk has its namespaces: plan its slot sends with the carried host addresses.
    Plan(Range<usize>),
    /// Every chunk settled: IPv6 off through sysctl, then the group changes.
    BringUp,
    AwaitIpv6,
    /// The group changes' sends: 0 the first attach alone, 1 the rest.
    Groups(usize),
    Pin,
    AwaitPin,
    FinalRollback,
    Done,
}

/// What a step's settled replies are for.
#[derive(Debug, Clone)]
enum Purpose {
    /// A chunk's slot sends and the previous chunk's host addresses.
    Links {
        chunk: Range<usize>,
        prev: Option<Range<usize>>,
    },
    /// The group changes `changes[range]`; `learn`: the budget learns from their time.
    GroupChanges { range: Range<usize>, learn: bool },
    /// Deleting the host ends of the failed slots `doomed`, then going to `then`.
    Rollback { doomed: Vec<usize>, then: Stage },
    /// Giving slots back.
    Detach,
}

/// A step in the air.
#[derive(Debug)]
struct Step {
    flights: Flights,
    purpose: Purpose,
    /// Set while the flight is a resend of a recovery: the recovery, the time so far,
    /// and the requests still to send again.
    recovery: Option<(Recovery, Duration, Vec<Again>)>,
}

/// A request to send again after an overrun.
type Again = (Owner, Op, netlink_packet_route::RouteNetlinkMessage);

/// One provisioning call, or one detach.
#[derive(Debug)]
pub(crate) struct Call {
    slots: Slots,
    routes: Vec<SlotRoute>,
    slot_seqs: Vec<Ledger>,
    choices: Choices,
    kept: Kept,
    stage: Stage,
    /// Slots handed a namespace (or failed without one) so far.
    taken: usize,
    /// Slots whose chunk has settled (progress).
    settled: usize,
    /// The chunk whose host addresses ride with the next chunk's sends.
    carry: Option<Range<usize>>,
    sub: SubBatches,
    /// Per sub-batch, its slots still standing at bring-up.
    members: Vec<Vec<usize>>,
    /// Per sub-batch: whether `disable_ipv6` landed on all its host ends.
    sysctl_done: Vec<bool>,
    /// The group changes (sub-batch, change) and their weights (devices, up before).
    changes: Vec<(usize, GroupChange)>,
    weights: Vec<(usize, usize)>,
    /// Host ends up once every group change has run.
    up_after: usize,
    step: Option<Step>,
    /// A recovery waiting for the address dump.
    awaiting_addresses: Option<(Purpose, Recovery, Duration)>,
    /// A recovery whose dump came back, to continue with its resends.
    resume: Option<(Purpose, Recovery, Duration)>,
    to_close: Vec<usize>,
    tally: Tally,
}

impl Call {
    /// A provisioning call of `specs`, each slot with its route choice (`routes`, one per
    /// spec).
    pub fn provision(
        specs: Vec<SlotSpec>,
        routes: Vec<SlotRoute>,
        choices: Choices,
        kept: Kept,
    ) -> Self {
        assert_eq!(specs.len(), routes.len(), "one route choice per slot");
        let n = specs.len();
        Self::with(
            specs,
            routes,
            choices,
            kept,
            (0..n).map(|_| Ledger::new(1)).collect(),
        )
    }

    /// Deletes the host ends of `specs` (the kernel takes the other ends with them), all
    /// in as few sends as fit. A slot whose device is already gone (ENODEV) counts as
    /// detached.
    pub fn detach(specs: Vec<SlotSpec>, choices: Choices, kept: Kept, host: &mut Ledger) -> Self {
        let mut call = Self::with(specs, Vec::new(), choices, kept, Vec::new());
        let flights = plan::delete_host_ends(
            host,
            call.choices.host_limits,
            call.slots.specs.iter().enumerate(),
            Op::Detach,
        );
        call.launch(flights, Purpose::Detach);
        call.stage = Stage::Done;
        call
    }

    fn with(
        specs: Vec<SlotSpec>,
        routes: Vec<SlotRoute>,
        choices: Choices,
        kept: Kept,
        slot_seqs: Vec<Ledger>,
    ) -> Self {
        Self {
            slots: Slots::new(specs),
            routes,
            slot_seqs,
            choices,
            kept,
            stage: Stage::Take,
            taken: 0,
            settled: 0,
            carry: None,
            sub: SubBatches::default(),
            members: Vec::new(),
            sysctl_done: Vec::new(),
            changes: Vec::new(),
            weights: Vec::new(),
            up_after: 0,
            step: None,
            awaiting_addresses: None,
            resume: None,
            to_close: Vec::new(),
            tally: Tally::default(),
        }
    }

    /// Slots of the call.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Slots whose chunk has settled.
    pub fn progress(&self) -> usize {
        self.settled
    }

    /// The specs of the call's slots.
    pub fn specs(&self) -> &[SlotSpec] {
        &self.slots.specs
    }

    /// What the driver must do next. `host`: the host socket's ledger.
    pub fn next(&mut self, host: &mut Ledger) -> Next {
        loop {
            if !self.to_close.is_empty() {
                return Next::Close(std::mem::take(&mut self.to_close));
            }
            if let Some((purpose, rec, took)) = self.resume.take() {
                self.resend(host, purpose, rec, took);
                continue;
            }
            if self.awaiting_addresses.is_some() {
                return Next::HostAddresses;
            }
            if let Some(step) = &self.step {
                if !step.flights.is_done() {
                    return Next::Exchange;
                }
                let step = self.step.take().expect("checked");
                if let Some(next) = self.settle_step(host, step) {
                    return next;
                }
                continue;
            }
            if let Some(next) = self.advance(host) {
                return next;
            }
        }
    }

    /// Moves the stage on; returns what the driver must do, or None to look again.
    fn advance(&mut self, host: &mut Ledger) -> Option<Next> {
        match self.stage.clone() {
            Stage::Take => {
                let remaining = self.len() - self.taken;
                if remaining > 0 {
                    self.stage = Stage::AwaitNamespaces;
                    return Some(self.namespaces_wanted());
                }
                self.stage = if self.carry.is_some() {
                    Stage::Plan(self.len()..self.len())
                } else {
                    Stage::BringUp
                };
            }
            Stage::AwaitNamespaces => return Some(self.namespaces_wanted()),
            Stage::Plan(chunk) => self.plan_links(host, chunk),
            Stage::BringUp => return self.bring_up(),
            Stage::AwaitIpv6 => return Some(Next::DisableIpv6(self.bring_up_names())),
            Stage::Groups(send) => self.send_groups(host, send),
            Stage::Pin => {
                let ok: Vec<usize> = (0..self.len()).filter(|&i| self.slots.is_ok(i)).collect();
                if self.choices.pin && !ok.is_empty() {
                    self.stage = Stage::AwaitPin;
                    return Some(Next::Pin(ok));
                }
                self.stage = Stage::FinalRollback;
            }
            Stage::AwaitPin => {
                let ok = (0..self.len()).filter(|&i| self.slots.is_ok(i)).collect();
                return Some(Next::Pin(ok));
            }
            Stage::FinalRollback => self.roll_back(host, 0..self.len(), Stage::Done),
            Stage::Done => return Some(Next::Done),
        }
        None
    }

    fn namespaces_wanted(&self) -> Next {
        let remaining = self.len() - self.taken;
        let max = self.choices.chunk.min(remaining);
        Next::Namespaces {
            min: self.choices.min_chunk.min(max),
            max,
        }
    }

    /// The namespaces the driver took for the next slots, in order (each Ok, or why it
    /// could not be made), after waiting `took`. Fewer than asked is fine; none at all
    /// fails every slot still without one.
    ///
    /// Each Ok carries the ifindex of the microVM tap the namespace holds, if any; a
    /// microVM slot (its spec has a tap) takes it into its spec, and fails without one.
    pub fn namespaces(&mut self, got: Vec<Result<Option<u32>, Failure>>, took: Duration) {
        if self.stage != Stage::AwaitNamespaces {
            return;
        }
        self.tally.pool_wait += took;
        let start = self.taken;
        let end = (start + got.len()).min(self.len());
        for (i, made) in (start..end).zip(got) {
            let spec = &mut self.slots.specs[i];
            match (made, spec.tap.as_mut()) {
                (Ok(_), None) => self.slots.has_ns[i] = true,
                (Ok(Some(ifindex)), Some(tap)) => {
                    tap.ifindex = ifindex;
                    self.slots.has_ns[i] = true;
                }
                (Ok(None), Some(tap)) => {
                    let detail =
                        format!("the namespace handed to the call has no tap {}", tap.name);
                    self.slots.fail(
                        i,
                        Op::Namespace,
                        Failure {
                            errno: libc::ENODEV,
                            ext_ack: None,
                            detail: Some(detail),
                        },
                    );
                }
                (Err(why), _) => self.slots.fail(i, Op::Namespace, why),
            }
        }
        let end = if end == start {
            for i in start..self.len() {
                self.slots.fail(
                    i,
                    Op::Namespace,
                    Failure {
                        errno: libc::ENOENT,
                        ext_ack: None,
                        detail: Some("no namespace was handed to the call for it".into()),
                    },
                );
            }
            self.len()
        } else {
            end
        };
        self.taken = end;
        self.stage = Stage::Plan(start..end);
    }

    /// One step: each slot of `chunk` on its own socket, and the carried chunk's host
    /// addresses on the host socket, in one exchange.
    fn plan_links(&mut self, host: &mut Ledger, chunk: Range<usize>) {
        let mut flights = Vec::new();
        for i in chunk.clone() {
            if !self.slots.has_ns[i] {
                continue;
            }
            let group = self.sub.place(
                i,
                &self.kept.budget,
                &mut self.kept.groups,
                self.kept.host_ends,
                self.choices.first_attach_alone,
            );
            flights.extend(plan::slot_socket(
                &mut self.slot_seqs[i],
                self.choices.slot_limits,
                i,
                &self.slots.specs[i],
                PoolShape {
                    group,
                    ..self.choices.shape
                },
                self.routes[i],
            ));
        }
        let prev = self.carry.take();
        if let Some(prev) = prev.clone() {
            let slots = &self.slots;
            let ok = prev.filter(|&i| slots.is_ok(i));
            flights.extend(plan::host_addresses(
                host,
                self.choices.host_limits,
                ok.map(|i| (i, &slots.specs[i])),
                HostEnds {
                    per_device: self.choices.per_device,
                    ack: self.choices.ack,
                },
                &mut self.choices.tc_filter,
            ));
        }
        self.launch(flights, Purpose::Links { chunk, prev });
        self.stage = Stage::Take;
    }

    fn launch(&mut self, flights: Vec<crate::batch::Flight>, purpose: Purpose) {
        let flights = Flights::new(flights);
        self.tally.requests += flights.requests() as u64;
        self.step = Some(Step {
            flights,
            purpose,
            recovery: None,
        });
    }
}
