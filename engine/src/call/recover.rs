//! call::recover: settles from the kernel's own state the host requests whose replies a
//! receive-buffer overrun may have dropped (ENOBUFS), instead of failing their slots.
//!
//! A host address is done if the kernel's address dump shows it on its host end. A group
//! change, a per-device XDP attach or a dual-stack host end's own up is idempotent: it is
//! sent again, asking for its own ACK. Anything else stays failed, naming the overrun.

use std::net::IpAddr;
use std::os::fd::RawFd;

use netlink_packet_route::RouteNetlinkMessage;

use crate::op::Op;
use crate::owner::Owner;
use crate::plan::GroupChange;
use crate::reconcile::{Failure, Settled};
use crate::slot::SlotSpec;
use crate::wire::link;

/// The lost requests of one step, while the call finds out what became of them.
#[derive(Debug)]
pub(crate) struct Recovery {
    /// Settled for good: what was not lost, and what recovery decided.
    done: Vec<Settled>,
    /// Lost, not decided yet.
    lost: Vec<(Owner, Op, Failure)>,
    /// Requests settled done from the kernel's state.
    pub recovered: u64,
}

fn is_lost(s: &Settled) -> bool {
    matches!(s, Settled::Failed { why, .. } if why.errno == libc::ENOBUFS)
}

impl Recovery {
    /// None when nothing of `settled` was lost to an overrun.
    pub fn start(settled: Vec<Settled>) -> Result<Self, Vec<Settled>> {
        if !settled.iter().any(is_lost) {
            return Err(settled);
        }
        let mut done = Vec::with_capacity(settled.len());
        let mut lost = Vec::new();
        for s in settled {
            match s {
                Settled::Failed { owner, op, why } if why.errno == libc::ENOBUFS => {
                    lost.push((owner, op, why))
                }
                other => done.push(other),
            }
        }
        Ok(Self {
            done,
            lost,
            recovered: 0,
        })
    }

    /// Whether a lost host address needs the kernel's address dump.
    pub fn needs_addresses(&self) -> bool {
        self.lost
            .iter()
            .any(|(o, op, _)| *op == Op::HostAddr && matches!(o, Owner::Slot(_)))
    }

    /// Settles the lost host addresses from the address dump (ifindex, address), or
    /// fails them with why the dump failed.
    pub fn addresses(&mut self, specs: &[SlotSpec], dump: Result<&[(u32, IpAddr)], String>) {
        let (addrs, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.lost)
            .into_iter()
            .partition(|(o, op, _)| *op == Op::HostAddr && matches!(o, Owner::Slot(_)));
        self.lost = rest;
        for (owner, op, why) in addrs {
            let Owner::Slot(i) = owner else { continue };
            let spec = &specs[i];
            // A dual-stack host end has two addresses under one op: both must be there.
            let wanted = std::iter::once(IpAddr::V4(spec.host_ip))
                .filter(|_| !spec.ipv6_only)
                .chain(spec.ipv6.map(|v6| IpAddr::V6(v6.gateway)));
            let found = match &dump {
                Ok(a) => wanted
                    .clone()
                    .all(|w| {
                        a.iter()
                            .any(|&(index, addr)| index == spec.ifindex && addr == w)
                    })
                    .then_some(())
                    .ok_or("the kernel's address dump shows the address missing".to_owned()),
                Err(e) => Err(format!("the address dump to check it failed too: {e}")),
            };
            self.decide(owner, op, why, found);
        }
    }

    /// The requests to send again (each asks for its ACK): a group change of `groups`
    /// (by sub-batch), a per-device XDP attach (with `per_device_xdp`). Every other lost
    /// request is failed for good.
    pub fn resends(
        &mut self,
        specs: &[SlotSpec],
        groups: &[(usize, GroupChange)],
        per_device_xdp: Option<RawFd>,
    ) -> Vec<(Owner, Op, RouteNetlinkMessage)> {
        let mut out = Vec::new();
        for (owner, op, why) in std::mem::take(&mut self.lost) {
            let group = match owner {
                Owner::SubBatch(k) => groups.iter().find(|(key, _)| *key == k).map(|(_, g)| *g),
                _ => None,
            };
            let message = match (op, owner, group) {
                (Op::GroupUp, _, Some(g)) => Ok(link::group_up(g.group, g.xdp_fd)),
                (Op::HostUp, Owner::Slot(i), None) => Ok(link::set_up(specs[i].ifindex)),
                (Op::Ipv6Off, _, Some(g)) => Ok(link::group_ipv6_addr_gen_none(g.group)),
                (Op::Xdp, Owner::Slot(i), None) => match per_device_xdp {
                    Some(fd) => Ok(link::attach_xdp(specs[i].ifindex, fd)),
                    None => Err("no program to attach".to_owned()),
                },
                _ => Err("not recoverable from kernel state".to_owned()),
            };
            match message {
                Ok(m) => {
                    out.push((owner, op, m));
                    self.lost.push((owner, op, why));
                }
                Err(e) => self.decide(owner, op, why, Err(e)),
            }
        }
        out
    }

    /// Settles the resent requests from their replies.
    pub fn resent(&mut self, settled: Vec<Settled>) {
        for s in settled {
            let (owner, op, again) = match s {
                Settled::Done { owner, op } => (owner, op, Ok(())),
                Settled::Failed { owner, op, why } => (owner, op, Err(describe(&why))),
            };
            let Some(pos) = self
                .lost
                .iter()
                .position(|(o, p, _)| *o == owner && *p == op)
            else {
                continue;
            };
            let (owner, op, why) = self.lost.swap_remove(pos);
            self.decide(
                owner,
                op,
                why,
                again.map_err(|e| format!("sent again alone: {e}")),
            );
        }
    }

    fn decide(&mut self, owner: Owner, op: Op, why: Failure, found: Result<(), String>) {
        match found {
            Ok(()) => {
                self.recovered += 1;
                self.done.push(Settled::Done { owner, op });
            }
            Err(more) => self.done.push(Settled::Failed {
                owner,
                op,
                why: Failure {
                    detail: Some(format!("{}; {more}", why.detail.unwrap_or_default())),
                    ..why
                },
            }),
        }
    }

    /// Everything settled; a request still undecided (its resend was never answered)
    /// stays failed as lost.
    pub fn finish(mut self) -> (Vec<Settled>, u64) {
        for (owner, op, why) in std::mem::take(&mut self.lost) {
            self.decide(owner, op, why, Err("sent again alone: no answer".into()));
        }
        (self.done, self.recovered)
    }
}

/// A failure as one line: the errno's text and the kernel's extended-ACK text.
pub(crate) fn describe(f: &Failure) -> String {
    let mut s = std::io::Error::from_raw_os_error(f.errno).to_string();
    if let Some(t) = &f.ext_ack {
        s.push_str(&format!(": kernel says {t:?}"));
    }
    s
}
