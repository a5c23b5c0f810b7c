//! internals: the engine's sans-IO steps (plan, batch, ACK parsing, reconcile) exposed for
//! the criterion benches in bench/ and for fuzz targets. Feature `internals`; not stable.
//!
//! Everything here calls the engine's own code paths: nothing is re-implemented, so a
//! bench of these functions measures what `Engine::provision` spends outside the kernel.
//! File descriptors are placeholders (-1): planning only records which socket a send
//! goes to; nothing is sent.

use netlink_packet_core::NLM_F_ACK;

use crate::batch::{Flight, Limits};
use crate::config::EngineConfig;
use crate::plan::{self, GroupChange, HostEnds, PerDevice, PoolShape, TcFilter, WHOLE_BATCH};
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
    /// The limits each flight was packed under, in flight order.
    limits: Vec<Limits>,
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
            plan::SlotRoute::Default,
        ));
    }
    flights.extend(plan::host_addresses(
        &mut ledger,
        sock::nominal_host_limits(),
        NO_FD,
        specs.iter().enumerate(),
        HostEnds::default(),
        &mut None,
    ));
    flights.extend(plan::group_changes(
        &mut ledger,
        sock::nominal_host_limits(),
        NO_FD,
        &[(
            WHOLE_BATCH,
            GroupChange {
                group: shape.group,
                xdp_fd: None,
                ipv6_off: true,
            },
        )],
        0,
    ));
    let limits = vec![slot_limits; specs.len()]
        .into_iter()
        .chain(std::iter::repeat(sock::nominal_host_limits()))
        .take(flights.len())
        .collect();
    Planned {
        ledger,
        flights,
        limits,
    }
}

/// What a host end gets besides its address ([`PlanInput::per_device`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerDeviceChoice {
    /// Nothing (counters, if any, ride the group change).
    Nothing,
    /// An IFLA_XDP attachment per host end (placeholder program fd).
    Xdp,
    /// A clsact qdisc on the pool's shared tc block per host end.
    Clsact,
}

/// Everything a fuzzer (or a test) may vary about one planned batch. Socket buffer sizes
/// are the sizes `getsockopt` would report (already doubled by the kernel).
#[derive(Debug, Clone)]
pub struct PlanInput {
    /// Name prefix of the pool.
    pub prefix: String,
    /// Device group (non-zero).
    pub group: u32,
    /// IPv4 pool, e.g. `100.64.0.0/16`.
    pub ipv4_pool: String,
    /// Slot ids of the batch, in batch order.
    pub ids: Vec<u32>,
    /// MTU of both ends.
    pub mtu: u32,
    /// Keep IPv6 (false adds the IPv6-off requests).
    pub ipv6: bool,
    /// The per-device request of each host end.
    pub per_device: PerDeviceChoice,
    /// With [`PerDeviceChoice::Clsact`]: the pool's first call, which sends its one filter.
    pub tc_filter: bool,
    /// Fault injection: NLM_F_ACK on every host request.
    pub ack_every_host_request: bool,
    /// SO_SNDBUF / SO_RCVBUF of every slot socket.
    pub slot_buffers: (usize, usize),
    /// SO_SNDBUF / SO_RCVBUF of the host socket.
    pub host_buffers: (usize, usize),
}

/// Plans one batch as `plan` does, with every choice taken from `input`: the slot sends,
/// the host sends (addresses and per-device requests) and the group change. Refuses, as the engine
/// does, what `EngineConfig::check` refuses (ids checked as one range from the smallest
/// to the largest).
pub fn plan_with(input: &PlanInput) -> Result<Planned, String> {
    let config = EngineConfig {
        prefix: input.prefix.clone(),
        group: input.group,
        ipv4_pool: input.ipv4_pool.parse().map_err(|e| format!("{e}"))?,
        mtu: input.mtu,
        ipv6: input.ipv6,
        ..EngineConfig::default()
    };
    let (Some(&lo), Some(&hi)) = (input.ids.iter().min(), input.ids.iter().max()) else {
        return Err("no slots".into());
    };
    config
        .check(lo, (hi - lo) as usize + 1)
        .map_err(|e| e.to_string())?;
    let specs: Vec<SlotSpec> = input
        .ids
        .iter()
        .map(|&id| SlotSpec::derive(&config, id, IFINDEX_BASE))
        .collect();
    let slot_limits = sock::limits_from(input.slot_buffers.0, input.slot_buffers.1);
    let host_limits = sock::limits_from(input.host_buffers.0, input.host_buffers.1);
    let ipv6_off = !config.ipv6;
    let shape = PoolShape {
        group: config.group,
        host_netns_fd: NO_FD,
        ipv6_off,
    };
    let ack = if input.ack_every_host_request {
        NLM_F_ACK
    } else {
        0
    };
    let mut ledger = Ledger::new(1);
    let mut flights = Vec::new();
    let mut limits = Vec::new();
    let mut extend = |flights: &mut Vec<Flight>, more: Vec<Flight>, l: Limits| {
        limits.extend(std::iter::repeat_n(l, more.len()));
        flights.extend(more);
    };
    for (slot, spec) in specs.iter().enumerate() {
        let more = plan::slot_socket(
            &mut ledger,
            slot_limits,
            slot,
            spec,
            NO_FD,
            shape,
            plan::SlotRoute::Default,
        );
        extend(&mut flights, more, slot_limits);
    }
    let per_device = match input.per_device {
        PerDeviceChoice::Nothing => PerDevice::Nothing,
        PerDeviceChoice::Xdp => PerDevice::Xdp(NO_FD),
        PerDeviceChoice::Clsact => PerDevice::Clsact {
            block: config.tc_block_index(),
        },
    };
    let mut filter =
        (input.tc_filter && input.per_device == PerDeviceChoice::Clsact).then(|| TcFilter {
            block: config.tc_block_index(),
            prog_fd: NO_FD,
            prog_name: netslot_bpf::Hook::Tc.prog_name(),
        });
    let more = plan::host_addresses(
        &mut ledger,
        host_limits,
        NO_FD,
        specs.iter().enumerate(),
        HostEnds { per_device, ack },
        &mut filter,
    );
    extend(&mut flights, more, host_limits);
    let more = plan::group_changes(
        &mut ledger,
        host_limits,
        NO_FD,
        &[(
            WHOLE_BATCH,
            GroupChange {
                group: config.group,
                xdp_fd: None,
                ipv6_off,
            },
        )],
        ack,
    );
    extend(&mut flights, more, host_limits);
    Ok(Planned {
        ledger,
        flights,
        limits,
    })
}

/// One planned send as a fuzz target checks it: its bytes, what it waits for, and the
/// limits it was packed under.
#[derive(Debug, Clone, Copy)]
pub struct SendView<'a> {
    /// The encoded requests and end marker, exactly as sendmsg would get them.
    pub bytes: &'a [u8],
    /// Sequence numbers of the requests, in send order.
    pub requests: &'a [u32],
    /// Sequence number of the end marker.
    pub marker: u32,
    /// Longest send the socket takes (sk_sndbuf - 32).
    pub max_bytes: usize,
    /// Most requests per send whose error replies fit the receive buffer.
    pub max_requests: usize,
}

impl Planned {
    /// Number of sendmsg calls the batch needs.
    pub fn sends(&self) -> usize {
        self.flights.len()
    }

    /// Every send, in send order (before any reconcile: settled requests leave `requests`).
    pub fn send_views(&self) -> Vec<SendView<'_>> {
        self.flights
            .iter()
            .zip(&self.limits)
            .map(|(f, l)| SendView {
                bytes: &f.bytes,
                requests: &f.pending.requests,
                marker: f.pending.marker,
                max_bytes: l.max_bytes,
                max_requests: l.max_requests,
            })
            .collect()
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

    /// Feeds one received datagram `reply` (any bytes) to send `index`'s reconcile; returns
    /// how many of its requests settled done and how many failed. Panics if `index` is
    /// not a send of the batch.
    pub fn reconcile_send(&mut self, index: usize, reply: &[u8]) -> (usize, usize) {
        let flight = &mut self.flights[index];
        let (mut done, mut failed) = (0, 0);
        for s in flight.pending.on_reply(&mut self.ledger, reply) {
            match s {
                Settled::Done { .. } => done += 1,
                Settled::Failed { .. } => failed += 1,
            }
        }
        (done, failed)
    }
}

/// One reply as the ACK parser read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckView {
    /// Sequence number of the request it answers.
    pub seq: u32,
    /// 0 for success, otherwise the positive errno.
    pub errno: i32,
    /// The extended-ACK text, if any.
    pub message: Option<String>,
}

/// Parses one received buffer as the ring's receive path does; returns every reply in it,
/// or the parse error's text.
pub fn parse_ack_list(buf: &[u8]) -> Result<Vec<AckView>, String> {
    ack::parse(buf)
        .map(|acks| {
            acks.into_iter()
                .map(|a| AckView {
                    seq: a.seq,
                    errno: a.errno,
                    message: a.message,
                })
                .collect()
        })
        .map_err(|e| e.to_string())
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

    fn input(ids: Vec<u32>) -> PlanInput {
        PlanInput {
            prefix: "ns".into(),
            group: 7600,
            ipv4_pool: "100.64.0.0/16".into(),
            ids,
            mtu: 1500,
            ipv6: false,
            per_device: PerDeviceChoice::Nothing,
            tc_filter: false,
            ack_every_host_request: false,
            slot_buffers: (212_992, 212_992),
            host_buffers: (8 << 20, 32 << 20),
        }
    }

    #[test]
    fn plan_with_defaults_is_plan() {
        let p = plan_with(&input((0..100).collect())).unwrap();
        let q = plan(&specs(100));
        assert_eq!((p.sends(), p.bytes()), (q.sends(), q.bytes()));
    }

    #[test]
    fn plan_with_refuses_what_the_engine_refuses() {
        let mut i = input(vec![0, 1]);
        i.mtu = 10;
        assert!(plan_with(&i).is_err());
        assert!(plan_with(&input(vec![])).is_err());
    }

    #[test]
    fn plan_with_tc_block_settles_on_success() {
        let mut i = input((0..10).collect());
        i.per_device = PerDeviceChoice::Clsact;
        i.tc_filter = true;
        let mut p = plan_with(&i).unwrap();
        let requests: usize = p.send_views().iter().map(|s| s.requests.len()).sum();
        // Slot sends: 5 each. Host: address and qdisc each; one filter; group IPv6 off
        // and group up.
        assert_eq!(requests, 10 * 5 + 10 * 2 + 1 + 2);
        let replies = p.success_replies();
        assert_eq!(p.reconcile(&replies), (requests, 0));
    }

    #[test]
    fn a_cut_success_reply_settles_nothing() {
        let mut p = plan(&specs(1));
        let reply = p.success_replies().remove(0);
        assert_eq!(p.reconcile_send(0, &reply[..reply.len() - 1]), (0, 5));
    }

    /// Writes the committed seed corpus of fuzz/ (real replies of a planned batch). Run
    /// `NETSLOT_WRITE_SEEDS=1 cargo test -p netslot --features internals --lib
    /// write_fuzz_seeds -- --ignored` to regenerate it.
    #[test]
    #[ignore = "writes fuzz/corpus; run by hand"]
    fn write_fuzz_seeds() {
        if std::env::var_os("NETSLOT_WRITE_SEEDS").is_none() {
            return;
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let ack = root.join("ack_parser");
        std::fs::create_dir_all(&ack).unwrap();
        let p = plan(&specs(2));
        let success = p.success_replies();
        let refused = p.first_request_refused_replies();
        // The target's first byte picks the mode (low 2 bits) and the send (the rest).
        let with_mode = |mode: u8, body: &[u8]| [&[mode][..], body].concat();
        let seeds: [(&str, Vec<u8>); 6] = [
            ("raw-success", with_mode(0, &success[0])),
            ("raw-refused", with_mode(0, &refused[0])),
            ("raw-reply-buffer-12", with_mode(0, &reply_buffer(12))),
            ("cut-success", with_mode(1 | 4, &[7, 0])),
            ("cut-refused", with_mode(2, &[40, 0])),
            ("xor-none", with_mode(3 | 8, &[0; 4])),
        ];
        for (name, bytes) in seeds {
            std::fs::write(ack.join(name), bytes).unwrap();
        }
        let plan = root.join("plan_roundtrip");
        std::fs::create_dir_all(&plan).unwrap();
        std::fs::write(plan.join("zeros"), [0u8; 64]).unwrap();
        std::fs::write(plan.join("ones"), [0xffu8; 64]).unwrap();
        let ramp: Vec<u8> = (0..64u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect();
        std::fs::write(plan.join("ramp"), ramp).unwrap();
    }

    #[test]
    fn reply_buffer_parses_back() {
        assert_eq!(parse_acks(&reply_buffer(1000)), Ok(1000));
    }
}
