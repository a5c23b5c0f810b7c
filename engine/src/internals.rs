//! internals: the production [`Call`](crate::call) state machine, driven by hand, for the
//! criterion benches in bench/ and the fuzz targets. Feature `internals`; not stable.
//!
//! A [`CallSim`] is the very `Call` that `Engine::provision` drives; here the driver is
//! the caller, who plays the kernel: it hands over namespaces, and for every send of a
//! round the reply datagram (or a lost, truncated or refused one). Nothing is sent and
//! no file descriptor exists: the fds encoded into requests are placeholders (-1).

use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_core::NLM_F_ACK;

use crate::batch::{Limits, Sock};
use crate::call::{Call, Choices, Groups, Kept, Next, Outcome};
use crate::config::EngineConfig;
use crate::hold::HoldBudget;
use crate::plan::{PerDevice, PoolShape, SlotRoute, TcFilter};
use crate::reconcile::Failure;
use crate::seq::Ledger;
use crate::slot::SlotSpec;
use crate::sock;
use crate::wire::ack;

/// Placeholder fd for requests that carry one (never used: nothing is sent).
const NO_FD: i32 = -1;
/// First ifindex of the simulated pool (any value above lo's works).
const IFINDEX_BASE: u32 = 2;

/// What a host end gets besides its address ([`CallInput::per_device`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerDeviceChoice {
    /// Nothing (counters, if any, ride the group change).
    Nothing,
    /// An IFLA_XDP attachment per host end (placeholder program fd).
    Xdp,
    /// A clsact qdisc on the pool's shared tc block per host end.
    Clsact,
    /// The counters attached by the group changes (group attach).
    Group,
}

/// Everything a fuzzer (or a bench) may vary about one call. Socket buffer sizes are the
/// sizes `getsockopt` would report (already doubled by the kernel).
#[derive(Debug, Clone)]
pub struct CallInput {
    /// Name prefix of the pool.
    pub prefix: String,
    /// Device group (non-zero).
    pub group: u32,
    /// IPv4 pool, e.g. `100.64.0.0/16`.
    pub ipv4_pool: String,
    /// Slot ids of the call, in call order.
    pub ids: Vec<u32>,
    /// MTU of both ends.
    pub mtu: u32,
    /// Keep IPv6 (false adds the IPv6-off requests).
    pub ipv6: bool,
    /// The counters' attachment.
    pub per_device: PerDeviceChoice,
    /// With [`PerDeviceChoice::Clsact`]: the pool's first call, which sends its filter.
    pub tc_filter: bool,
    /// Fault injection: NLM_F_ACK on every host request.
    pub ack_every_host_request: bool,
    /// SO_SNDBUF / SO_RCVBUF of every slot socket.
    pub slot_buffers: (usize, usize),
    /// SO_SNDBUF / SO_RCVBUF of the host socket.
    pub host_buffers: (usize, usize),
    /// The RTNL hold budget (None: one group change per call).
    pub max_rtnl_hold: Option<Duration>,
    /// Host ends of the pool already up before the call.
    pub host_ends_up: usize,
    /// Most and fewest namespaces per chunk.
    pub chunk: usize,
    pub min_chunk: usize,
    /// Whether the call pins its slots.
    pub pin: bool,
    /// Slots (by position) added without the default route, as a second attach into one
    /// namespace is.
    pub without_route: Vec<usize>,
}

impl CallInput {
    /// `n` standard slots of the default pool, as `netslot up` provisions them.
    pub fn standard(n: u32) -> Self {
        let (snd, rcv) = sock::default_buffers();
        let host = sock::nominal_host_limits();
        Self {
            prefix: "ns".into(),
            group: EngineConfig::default().group,
            ipv4_pool: "100.64.0.0/16".into(),
            ids: (0..n).collect(),
            mtu: 1500,
            ipv6: false,
            per_device: PerDeviceChoice::Nothing,
            tc_filter: false,
            ack_every_host_request: false,
            slot_buffers: (snd, rcv),
            host_buffers: (host.max_bytes + 32, (host.max_requests + 1) * 2048),
            max_rtnl_hold: Some(Duration::from_millis(5)),
            host_ends_up: 0,
            chunk: EngineConfig::default().chunk,
            min_chunk: 32,
            pin: false,
            without_route: Vec::new(),
        }
    }
}

/// What the call asks of its driver next (the crate's `Next`, with plain data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Namespaces for at least `min` and at most `max` more slots.
    Namespaces { min: usize, max: usize },
    /// One round of sends and receives ([`CallSim::round`]).
    Exchange,
    /// The host's address dump ([`CallSim::host_addresses`]).
    HostAddresses,
    /// `disable_ipv6` writes for this many host ends ([`CallSim::ipv6_disabled`]).
    DisableIpv6(usize),
    /// Pins for these slots ([`CallSim::pinned`]).
    Pin(Vec<usize>),
    /// These slots' namespaces are to be closed.
    Close(Vec<usize>),
    /// The call is over ([`CallSim::finish`]).
    Done,
}

/// One send of a round, as the kernel would get it.
#[derive(Debug, Clone, Copy)]
pub struct SendView<'a> {
    /// Index to hand its outcome back with.
    pub index: usize,
    /// Slot whose own socket it goes to; None for the host socket.
    pub slot: Option<usize>,
    /// The encoded requests and end marker (first round only; later rounds only read).
    pub bytes: Option<&'a [u8]>,
    /// Sequence numbers still awaited, in send order.
    pub requests: &'a [u32],
    /// Sequence number of the end marker.
    pub marker: u32,
    /// Longest send the socket takes (sk_sndbuf - 32).
    pub max_bytes: usize,
    /// Most requests per send whose error replies fit the receive buffer.
    pub max_requests: usize,
}

/// The production call, driven by hand.
#[derive(Debug)]
pub struct CallSim {
    call: Call,
    host: Ledger,
    host_limits: Limits,
    slot_limits: Limits,
}

/// How a finished call ended, per slot and in total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEnd {
    /// Per slot: None if provisioned, else the failed op's name and errno.
    pub slots: Vec<Option<(&'static str, i32)>>,
    /// Per slot: pinned.
    pub pinned: Vec<bool>,
    /// Requests the call sent (end markers not counted).
    pub requests: u64,
    /// Group changes sent.
    pub group_changes: usize,
    /// Requests settled from kernel state after an overrun.
    pub recovered: u64,
    /// Sequence numbers of the host socket still in flight (0 when the call settled all).
    pub host_in_flight: usize,
    /// Host ends up once the call is over.
    pub host_ends_up: usize,
}

impl CallSim {
    /// A provisioning call as the engine starts one, with every choice from `input`.
    /// Refuses, as the engine does, what `EngineConfig::check` refuses.
    pub fn new(input: &CallInput) -> Result<Self, String> {
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
        let routes = (0..specs.len())
            .map(|i| {
                if input.without_route.contains(&i) {
                    SlotRoute::None
                } else {
                    SlotRoute::Default
                }
            })
            .collect();
        let slot_limits = sock::limits_from(input.slot_buffers.0, input.slot_buffers.1);
        let host_limits = sock::limits_from(input.host_buffers.0, input.host_buffers.1);
        let block = config.tc_block_index();
        let (group_xdp, per_device) = match input.per_device {
            PerDeviceChoice::Nothing => (None, PerDevice::Nothing),
            PerDeviceChoice::Xdp => (None, PerDevice::Xdp(NO_FD)),
            PerDeviceChoice::Clsact => (None, PerDevice::Clsact { block }),
            PerDeviceChoice::Group => (Some(NO_FD), PerDevice::Nothing),
        };
        let budget = HoldBudget::new(input.max_rtnl_hold);
        let choices = Choices {
            shape: PoolShape {
                group: config.group,
                host_netns_fd: NO_FD,
                ipv6_off: !config.ipv6,
                tap_xdp_fd: None,
            },
            group_xdp,
            per_device,
            ack: if input.ack_every_host_request {
                NLM_F_ACK
            } else {
                0
            },
            tc_filter: (input.tc_filter && input.per_device == PerDeviceChoice::Clsact).then(
                || TcFilter {
                    block,
                    prog_fd: NO_FD,
                    prog_name: netslot_bpf::Hook::Tc.prog_name(),
                },
            ),
            first_attach_alone: budget.is_bounded() && input.per_device == PerDeviceChoice::Group,
            chunk: input.chunk.max(1),
            min_chunk: input.min_chunk.max(1),
            host_limits,
            slot_limits,
            pin: input.pin,
        };
        let kept = Kept {
            budget,
            groups: Groups::new(config.group, Default::default()),
            host_ends: input.host_ends_up,
            tc_filter_made: false,
            recovered: 0,
        };
        Ok(Self {
            call: Call::provision(specs, routes, choices, kept),
            host: Ledger::new(1),
            host_limits,
            slot_limits,
        })
    }

    /// Slots of the call.
    pub fn len(&self) -> usize {
        self.call.len()
    }

    /// Whether the call has no slots (never: `new` refuses that).
    pub fn is_empty(&self) -> bool {
        self.call.len() == 0
    }

    /// Slot `i`'s host end: its ifindex and host address, as an address dump shows it.
    pub fn host_address_of(&self, i: usize) -> (u32, IpAddr) {
        let s = &self.call.specs()[i];
        (s.ifindex, IpAddr::V4(s.host_ip))
    }

    /// Slot `i`'s ifindex (both ends).
    pub fn ifindex_of(&self, i: usize) -> u32 {
        self.call.specs()[i].ifindex
    }

    /// What the call asks next.
    pub fn ask(&mut self) -> Ask {
        match self.call.next(&mut self.host) {
            Next::Namespaces { min, max } => Ask::Namespaces { min, max },
            Next::Exchange => Ask::Exchange,
            Next::HostAddresses => Ask::HostAddresses,
            Next::DisableIpv6(names) => Ask::DisableIpv6(names.len()),
            Next::Pin(slots) => Ask::Pin(slots),
            Next::Close(slots) => Ask::Close(slots),
            Next::Done => Ask::Done,
        }
    }

    /// Namespaces for the next slots, in order: Ok, or the errno of their creation.
    pub fn namespaces(&mut self, made: &[Result<(), i32>]) {
        let got = made
            .iter()
            .map(|r| {
                r.map(|()| None).map_err(|errno| Failure {
                    errno,
                    ext_ack: None,
                    detail: Some("creating the namespace".into()),
                })
            })
            .collect();
        self.call.namespaces(got, Duration::ZERO);
    }

    /// The sends of the current round.
    pub fn round(&self) -> Vec<SendView<'_>> {
        self.call
            .round()
            .into_iter()
            .map(|s| {
                let (slot, l) = match s.to {
                    Sock::Host => (None, self.host_limits),
                    Sock::Slot(i) => (Some(i), self.slot_limits),
                };
                SendView {
                    index: s.index,
                    slot,
                    bytes: s.bytes,
                    requests: s.requests,
                    marker: s.marker,
                    max_bytes: l.max_bytes,
                    max_requests: l.max_requests,
                }
            })
            .collect()
    }

    /// What send `index` got in this round: sendmsg's result (bytes, or -errno; first
    /// round only) and one datagram or the receive's errno. Returns the requests of the
    /// step settled (done, failed) so far.
    pub fn settle(&mut self, index: usize, sent: i32, reply: Result<&[u8], i32>) -> (usize, usize) {
        self.call
            .settle(&mut self.host, index, Outcome { sent, reply });
        self.call.settled_counts()
    }

    /// Ends the round; `took` is what the budget learns from for group changes.
    pub fn end_round(&mut self, took: Duration) {
        self.call.end_round(took);
    }

    /// The address dump after an overrun: (ifindex, address) pairs, or why it failed.
    pub fn host_addresses(&mut self, dump: Result<Vec<(u32, IpAddr)>, String>) {
        self.call
            .host_addresses(dump.as_deref().map_err(Clone::clone));
    }

    /// Per host end of [`Ask::DisableIpv6`]: written, or the errno.
    pub fn ipv6_disabled(&mut self, each: Vec<Result<(), i32>>) {
        self.call.ipv6_disabled(each, Duration::ZERO);
    }

    /// Per slot of [`Ask::Pin`]: pinned, or the errno.
    pub fn pinned(&mut self, results: Vec<(usize, Result<(), i32>)>) {
        let results = results
            .into_iter()
            .map(|(i, r)| {
                (
                    i,
                    r.map_err(|errno| Failure {
                        errno,
                        ext_ack: None,
                        detail: Some("bind-mounting".into()),
                    }),
                )
            })
            .collect();
        self.call.pinned(results, Duration::ZERO);
    }

    /// The call's end.
    pub fn finish(self) -> CallEnd {
        let host_in_flight = self.host.in_flight();
        let f = self.call.finish();
        CallEnd {
            slots: f
                .slots
                .errors
                .iter()
                .map(|e| e.as_ref().map(|e| (e.op.as_str(), e.errno)))
                .collect(),
            pinned: f.slots.pinned,
            requests: f.tally.requests,
            group_changes: f.tally.group_changes,
            recovered: f.tally.recovered,
            host_in_flight,
            host_ends_up: f.kept.host_ends,
        }
    }

    /// Drives the call to its end as a kernel that accepts everything does: every
    /// namespace made, one success ACK of each send's end marker, every sysctl write and
    /// pin done.
    pub fn run_accepting(self) -> Driven {
        self.run_with(|s| success_reply(s.marker))
    }

    /// Drives the call to its end with every namespace made, every sysctl write and pin
    /// done, and `kernel`'s one datagram for each send of each round.
    pub fn run_with(mut self, mut kernel: impl FnMut(&SendView<'_>) -> Vec<u8>) -> Driven {
        let (mut sends, mut closed) = (0, Vec::new());
        loop {
            match self.ask() {
                Ask::Namespaces { max, .. } => self.namespaces(&vec![Ok(()); max]),
                Ask::Exchange => {
                    let replies: Vec<(usize, Vec<u8>)> = self
                        .round()
                        .iter()
                        .map(|s| {
                            sends += usize::from(s.bytes.is_some());
                            (s.index, kernel(s))
                        })
                        .collect();
                    for (index, reply) in replies {
                        self.settle(index, 1, Ok(&reply));
                    }
                    self.end_round(Duration::from_micros(100));
                }
                Ask::HostAddresses => self.host_addresses(Ok(Vec::new())),
                Ask::DisableIpv6(n) => self.ipv6_disabled(vec![Ok(()); n]),
                Ask::Pin(slots) => self.pinned(slots.into_iter().map(|i| (i, Ok(()))).collect()),
                Ask::Close(slots) => closed.extend(slots),
                Ask::Done => {
                    return Driven {
                        end: self.finish(),
                        sends,
                        closed,
                    }
                }
            }
        }
    }
}

/// What [`CallSim::run_with`] saw.
#[derive(Debug)]
pub struct Driven {
    /// How the call ended.
    pub end: CallEnd,
    /// Sends made (sendmsg calls).
    pub sends: usize,
    /// Slots whose namespaces the call closed (rolled back), in order.
    pub closed: Vec<usize>,
}

/// The kernel's reply to a send whose every request succeeded: one capped ACK of its end
/// marker (requests carry no NLM_F_ACK).
pub fn success_reply(marker: u32) -> Vec<u8> {
    ack::reply(marker, 0, &echoed(marker), true, None)
}

/// A capped error reply to request `seq` with `errno` (positive) and the kernel's
/// extended-ACK text.
pub fn error_reply(seq: u32, errno: i32, text: Option<&str>) -> Vec<u8> {
    ack::reply(seq, -errno, &echoed(seq), true, text)
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
            out.extend(error_reply(seq, libc::EEXIST, Some("File exists")));
        } else {
            out.extend(success_reply(seq));
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
    fn an_accepted_call_provisions_every_slot() {
        let Driven { end, sends, .. } = CallSim::new(&CallInput::standard(100))
            .unwrap()
            .run_accepting();
        assert!(end.slots.iter().all(Option::is_none), "{:?}", end.slots);
        // lo up, veth, IPv6 off, address, route per slot; a host address per slot; IPv6
        // goes off by sysctl, so each group change is one request.
        assert_eq!(end.requests, 100 * 5 + 100 + end.group_changes as u64);
        assert!(end.group_changes >= 1);
        assert_eq!(end.host_in_flight, 0);
        assert_eq!(end.host_ends_up, 100);
        // One send per slot socket, and few on the host socket.
        assert!(sends > 100 && sends < 110, "{sends} sends");
    }

    #[test]
    fn a_refused_veth_fails_its_slot_alone_and_rolls_nothing_back() {
        let sim = CallSim::new(&CallInput::standard(3)).unwrap();
        let driven = sim.run_with(|s| {
            let mut r = Vec::new();
            if s.slot == Some(1) && s.bytes.is_some() {
                r.extend(error_reply(s.requests[1], libc::EEXIST, Some("x")));
            }
            r.extend(success_reply(s.marker));
            r
        });
        assert_eq!(driven.closed, vec![1]);
        let end = driven.end;
        assert_eq!(end.slots[1], Some(("veth", libc::EEXIST)));
        assert!(end.slots[0].is_none() && end.slots[2].is_none());
        assert_eq!(end.host_ends_up, 2);
    }

    #[test]
    fn reply_buffer_parses_back() {
        assert_eq!(parse_acks(&reply_buffer(1000)), Ok(1000));
    }
}
