//! internals: the engine's sans-IO steps (plan, batch, ACK parsing, reconcile) exposed for
//! the criterion benches in bench/ and for fuzz targets. Feature `internals`; not stable.
//!
//! Everything here calls the engine's own code paths: nothing is re-implemented, so a
//! bench of these functions measures what `Engine::provision` spends outside the kernel.
//! File descriptors are placeholders (-1): planning only records which socket a send
//! goes to; nothing is sent.

use crate::batch::{Flight, Limits};
use crate::config::EngineConfig;
use crate::plan::{self, GroupChange, PerDevice, PoolShape};
use crate::reconcile::{Ledger, Settled};
use crate::slot::SlotSpec;
use crate::sock;
use crate::wire::ack;

/// Placeholder socket for planned sends that are never sent.
const NO_FD: i32 = -1;
/// First ifindex of the planned pool (any value above lo's works).
const IFINDEX_BASE: u32 = 2;

/// The specs of slots `0..n` of a default pool (the standard slot).
pub fn specs(n: u32) -> Vec<SlotSpec> {
    let config = EngineConfig::default();
    (0..n)
        .map(|id| SlotSpec::derive(&config, id, IFINDEX_BASE))
        .collect()
}

/// A planned batch: every send, encoded, with the ledger that knows each sequence number.
pub struct Planned {
    ledger: Ledger,
    flights: Vec<Flight>,
}

/// Plans and encodes `specs` as one engine batch does: each slot's send on its own
/// socket (default buffer limits), then the host addresses and the group change on the
/// host socket (forced buffer limits), IPv6 off and no XDP as in the default config.
pub fn plan(specs: &[SlotSpec]) -> Planned {
    let (snd, rcv) = sock::default_buffers();
    let slot_limits: Limits = sock::limits_from(snd, rcv);
    let shape = PoolShape {
        group: EngineConfig::default().group,
        host_netns_fd: NO_FD,
        ipv6_off: true,
    };
    let mut ledger = Ledger::new(1);
    let mut flights = Vec::with_capacity(specs.len() + 1);
    for (slot, spec) in specs.iter().enumerate() {
        flights.extend(plan::slot_socket(
            &mut ledger,
            slot_limits,
            slot,
            spec,
            NO_FD,
            shape,
        ));
    }
    flights.extend(plan::host_addresses(
        &mut ledger,
        sock::nominal_host_limits(),
        NO_FD,
        specs.iter().enumerate(),
        PerDevice::Nothing,
        None,
        &mut None,
        0,
    ));
    flights.extend(plan::group_change(
        &mut ledger,
        sock::nominal_host_limits(),
        NO_FD,
        GroupChange {
            group: shape.group,
            xdp_fd: None,
            ipv6_off: true,
        },
        0,
    ));
    Planned { ledger, flights }
}

impl Planned {
    /// Number of sendmsg calls the batch needs.
    pub fn sends(&self) -> usize {
        self.flights.len()
    }

    /// Encoded bytes of every send together.
    pub fn bytes(&self) -> usize {
        self.flights.iter().map(|f| f.bytes.len()).sum()
    }

    /// The replies the kernel sends when every request succeeds: one capped ACK of each
    /// send's end marker (requests carry no NLM_F_ACK), one datagram per send.
    pub fn success_replies(&self) -> Vec<Vec<u8>> {
        self.flights
            .iter()
            .map(|f| ack::reply(f.pending.marker, 0, &echoed(f.pending.marker), true, None))
            .collect()
    }

    /// The replies when the first request of every send is refused with EEXIST and the
    /// kernel's extended-ACK text, then the marker's ACK: the error path of reconcile.
    pub fn first_request_refused_replies(&self) -> Vec<Vec<u8>> {
        self.flights
            .iter()
            .map(|f| {
                let mut d = Vec::new();
                if let Some(&seq) = f.pending.requests.first() {
                    d.extend(ack::reply(
                        seq,
                        -libc::EEXIST,
                        &echoed(seq),
                        true,
                        Some("File exists"),
                    ));
                }
                d.extend(ack::reply(
                    f.pending.marker,
                    0,
                    &echoed(f.pending.marker),
                    true,
                    None,
                ));
                d
            })
            .collect()
    }

    /// Feeds `replies` (one datagram per send, in send order) to reconcile; returns how
    /// many requests settled done and how many failed.
    pub fn reconcile(&mut self, replies: &[Vec<u8>]) -> (usize, usize) {
        let (mut done, mut failed) = (0, 0);
        for (flight, reply) in self.flights.iter_mut().zip(replies) {
            for s in flight.pending.on_reply(&mut self.ledger, reply) {
                match s {
                    Settled::Done { .. } => done += 1,
                    Settled::Failed { .. } => failed += 1,
                }
            }
        }
        (done, failed)
    }
}

/// Parses one received buffer as the ring's receive path does; returns the number of
/// replies in it, or the parse error's text.
pub fn parse_acks(buf: &[u8]) -> Result<usize, String> {
    ack::parse(buf).map(|a| a.len()).map_err(|e| e.to_string())
}

/// `n` replies in one buffer, as a receive returns them: every tenth an EEXIST refusal
/// with extended-ACK text, the rest capped success ACKs.
pub fn reply_buffer(n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for seq in 1..=n {
        if seq % 10 == 0 {
            out.extend(ack::reply(
                seq,
                -libc::EEXIST,
                &echoed(seq),
                true,
                Some("File exists"),
            ));
        } else {
            out.extend(ack::reply(seq, 0, &echoed(seq), true, None));
        }
    }
    out
}

/// The nlmsghdr a capped ACK echoes (NETLINK_CAP_ACK): the request's header only.
fn echoed(seq: u32) -> Vec<u8> {
    let mut h = 16u32.to_ne_bytes().to_vec();
    h.extend_from_slice(&16u16.to_ne_bytes()); // RTM_NEWLINK
    h.extend_from_slice(&0u16.to_ne_bytes());
    h.extend_from_slice(&seq.to_ne_bytes());
    h.extend_from_slice(&0u32.to_ne_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planned_batch_settles_fully_on_its_success_replies() {
        let specs = specs(100);
        let mut p = plan(&specs);
        assert_eq!(
            p.sends(),
            102,
            "one send per slot, the host addresses, the group change"
        );
        let replies = p.success_replies();
        // lo up, veth, ipv6 off, address, route per slot; host address per slot; 2 group.
        assert_eq!(p.reconcile(&replies), (100 * 5 + 100 + 2, 0));
    }

    #[test]
    fn refusals_fail_exactly_their_requests() {
        let mut p = plan(&specs(10));
        let replies = p.first_request_refused_replies();
        assert_eq!(p.reconcile(&replies), (10 * 4 + 10 + 2 - 2, 12));
    }

    #[test]
    fn reply_buffer_parses_back() {
        assert_eq!(parse_acks(&reply_buffer(1000)), Ok(1000));
    }
}
