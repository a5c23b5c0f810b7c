//! systems: the provisioning systems under test, each making the standard slot (S1), or,
//! for the microVM systems (`SystemKind::MICROVM`), the microVM slot: the standard slot's
//! namespace and veth pair plus a persistent tap in the slot (engine/src/microvm.rs).
//! Each runs inside a child process of the harness; timing and counting are the harness's.
//!
//! A system is driven in four steps: `setup` (untimed: open sockets, start pools),
//! `provision` (timed), `verify` (untimed: read the host namespace back, and the slots'
//! own namespaces where the system says how: `verify_slots`) and `teardown`.
//! Everything a system makes lives in the child's private network and mount namespaces.

mod cni;
mod common;
mod floor;
mod ip_batch;
mod ip_loop;
mod ip_tuntap;
mod netslot;
pub mod nl;
mod ns;
mod rtnetlink_crate;
mod threads;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use common::{verify_host, HostView, SlotPlan};

/// The uid that owns every microVM slot's tap in the microVM systems (TUNSETOWNER; no
/// such user needs to exist).
pub const TAP_OWNER: u32 = 4242;

/// What the systems share for one run: names, group, addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    /// Slots to make.
    pub n: usize,
    /// Host ends and named namespaces are `<prefix><id>`.
    pub prefix: String,
    /// Device group of the host ends.
    pub group: u32,
}

/// What a provisioning call reports besides its wall time (which the harness measures).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Provision {
    /// Slots made.
    pub ok: usize,
    /// Slots that failed.
    pub failed: usize,
    /// Per-slot latency in microseconds; empty when the system cannot show it.
    pub latencies_us: Vec<f64>,
    /// What `latencies_us` measures for this system.
    pub latency_kind: String,
    /// The system's own report (netslot: ProvisionReport), if it has one.
    pub extra: Option<serde_json::Value>,
    /// First error seen, if any.
    pub first_error: Option<String>,
}

/// A system failed as a whole.
#[derive(Debug)]
pub struct SystemError(pub String);

impl fmt::Display for SystemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SystemError {}

impl SystemError {
    /// Wraps any error with what was being done.
    pub fn ctx<E: fmt::Display>(what: impl fmt::Display) -> impl FnOnce(E) -> SystemError {
        move |e| SystemError(format!("{what}: {e}"))
    }
}

/// One provisioning system.
pub trait System {
    /// Untimed preparation (sockets, pools, runtimes).
    fn setup(&mut self, spec: &RunSpec) -> Result<(), SystemError>;
    /// Makes `spec.n` standard slots. Timed by the caller.
    fn provision(&mut self, spec: &RunSpec) -> Result<Provision, SystemError>;
    /// Removes everything (the harness waits for the kernel's asynchronous part).
    fn teardown(&mut self, spec: &RunSpec) -> Result<(), SystemError>;
    /// Untimed, after provisioning: how many slots' namespaces hold their microVM tap
    /// (named `tap0`, kind tun, up). `None` (the default): the system makes no taps.
    fn verify_slots(&mut self, _spec: &RunSpec) -> Result<Option<usize>, SystemError> {
        Ok(None)
    }
}

/// Every system, by its command-line name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SystemKind {
    /// The netslot library (namespaces held by fds), COLD: namespaces made in the step.
    Netslot,
    /// The same, WARM: the pool already holds N namespaces.
    NetslotWarm,
    /// As netslot (COLD) with the engine's RTNL hold budget off (`max_rtnl_hold: None`).
    NetslotUnbounded,
    /// iproute2, one command per step.
    IpLoop,
    /// `ip -batch`: one batch in the host namespace, one per slot namespace.
    IpBatch,
    /// Create-in-root-then-move, one request at a time, one thread per CPU.
    ThreadsCpus,
    /// The same with 8 threads.
    #[serde(rename = "threads-8", alias = "threads8")]
    Threads8,
    /// The rtnetlink crate, idiomatic (tokio, concurrent requests).
    Rtnetlink,
    /// CNI reference plugins: loopback + ptp with host-local, per slot.
    CniPtp,
    /// The bare syscalls: unshare, socket, one sendmsg + recv per slot.
    Floor,
    /// The microVM slot through the library: as netslot (COLD), with
    /// `kind: SlotKind::Microvm` (a tap owned by `TAP_OWNER` in every slot).
    NetslotMicrovm,
    /// The microVM slot with iproute2, one command per step (`ip tuntap add` + `ip link`).
    IpTuntap,
}

impl SystemKind {
    /// The standard-slot systems, in table order (`--systems all`).
    pub const ALL: &'static [SystemKind] = &[
        SystemKind::Netslot,
        SystemKind::NetslotWarm,
        SystemKind::NetslotUnbounded,
        SystemKind::IpLoop,
        SystemKind::IpBatch,
        SystemKind::ThreadsCpus,
        SystemKind::Threads8,
        SystemKind::Rtnetlink,
        SystemKind::CniPtp,
        SystemKind::Floor,
    ];

    /// The microVM comparison (`--systems microvm`): the standard slot through the
    /// library, the microVM slot through the library, and the microVM slot with iproute2.
    pub const MICROVM: &'static [SystemKind] = &[
        SystemKind::Netslot,
        SystemKind::NetslotMicrovm,
        SystemKind::IpTuntap,
    ];

    /// Every system, in table order: the standard-slot systems, then the microVM ones.
    pub const EVERY: &'static [SystemKind] = &[
        SystemKind::Netslot,
        SystemKind::NetslotWarm,
        SystemKind::NetslotUnbounded,
        SystemKind::IpLoop,
        SystemKind::IpBatch,
        SystemKind::ThreadsCpus,
        SystemKind::Threads8,
        SystemKind::Rtnetlink,
        SystemKind::CniPtp,
        SystemKind::Floor,
        SystemKind::NetslotMicrovm,
        SystemKind::IpTuntap,
    ];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            SystemKind::Netslot => "netslot",
            SystemKind::NetslotWarm => "netslot-warm",
            SystemKind::NetslotUnbounded => "netslot-unbounded",
            SystemKind::IpLoop => "ip-loop",
            SystemKind::IpBatch => "ip-batch",
            SystemKind::CniPtp => "cni-ptp",
            SystemKind::Rtnetlink => "rtnetlink",
            SystemKind::ThreadsCpus => "threads-cpus",
            SystemKind::Threads8 => "threads-8",
            SystemKind::Floor => "floor",
            SystemKind::NetslotMicrovm => "netslot-microvm",
            SystemKind::IpTuntap => "ip-tuntap",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::EVERY.iter().copied().find(|k| k.name() == s)
    }

    /// What part of the slot the system makes and how, for the table's notes.
    pub fn description(self) -> &'static str {
        match self {
            SystemKind::Netslot => {
                "library, COLD: pool thread makes namespaces (fds) inside the timed step, \
                 io_uring batches per chunk, group up; IPv6 off on the slot devices; \
                 RTNL hold budget on (engine default, max_rtnl_hold 5 ms: host ends come \
                 up by one group change per sub-batch, each sub-batch a device group of \
                 its own sized to the budget, after IPv6 went off on each host end \
                 through its disable_ipv6 sysctl, as io_uring writes); \
                 plus the XDP counters on every host end, which no baseline attaches"
            }
            SystemKind::NetslotUnbounded => {
                "library, COLD, as netslot but with the RTNL hold budget off \
                 (max_rtnl_hold: None): host ends come up by one group change for the \
                 whole call after one netlink IPv6-off group change, fewest \
                 acquisitions, however long that one hold is"
            }
            SystemKind::NetslotWarm => {
                "library, WARM: as netslot, but the pool holds N namespaces before the \
                 timed step (pool_low = 1, pool_high = N, filled in the untimed setup)"
            }
            SystemKind::IpLoop => {
                "iproute2 one command per step, slot after slot: netns add, lo up, veth in \
                 place (peer in the slot, host end in the group), host end up, host address, \
                 eth0 up, slot address, route (8 `ip` processes per slot); IPv6 left on; no XDP counters (the slot without its eBPF part)"
            }
            SystemKind::Rtnetlink => {
                "rtnetlink 0.24 as its README teaches: tokio, new_connection, builders, \
                 32 slots in flight; per slot NetworkNamespace::add (forks), veth in the \
                 host with the host end in the group and up, peer moved (setns_by_fd), host \
                 address, then a connection inside the slot: rename eth0 + up, lo up, \
                 address, route; IPv6 left on; no XDP counters (the slot without its eBPF part)"
            }
            SystemKind::CniPtp => {
                "CNI reference plugins per slot as a runtime drives them: the runtime pins a \
                 new namespace, then execs `loopback` and `ptp` (host-local IPAM). Differs \
                 from S1: host end named veth<random>, no device group, gateway address /32 \
                 on the host end, a host route per slot; IPv6 left on; teardown unpins \
                 (no plugin DEL); no XDP counters"
            }
            SystemKind::IpBatch => {
                "one `ip -batch` in the host namespace (netns add, veth in place with the \
                 peer in the slot, host address, group up) then one `ip -n NS -batch` per \
                 slot (lo up, eth0 up, address, route); IPv6 left on; no XDP counters (the slot without its eBPF part)"
            }
            SystemKind::ThreadsCpus | SystemKind::Threads8 => {
                "thread pool (one thread per CPU, or 8): per slot unshare + socket in the \
                 slot, veth created in root, peer moved (IFLA_NET_NS_FD), renamed eth0, \
                 up, lo up, addresses, host end up, route: 11 requests, each waiting for \
                 its ACK; IPv6 left on; no XDP counters (the slot without its eBPF part)"
            }
            SystemKind::Floor => {
                "kernel floor, one thread: per slot unshare, socket, one sendmsg of \
                 prebuilt messages (lo up, veth in place, address, route, end marker) and \
                 its recv; host addresses 1024 per sendmsg; one group change; no \
                 bookkeeping; IPv6 left on; no XDP counters (the slot without its eBPF part)"
            }
            SystemKind::NetslotMicrovm => {
                "library, COLD, the microVM slot (kind: SlotKind::Microvm, tap tap0 owned by \
                 uid 4242, otherwise as netslot): the pool thread makes each namespace and \
                 its persistent tap (open /dev/net/tun, TUNSETIFF with IFF_TAP|IFF_NO_PI|\
                 IFF_VNET_HDR, TUNSETOWNER, TUNSETPERSIST, SIOCGIFINDEX, close); per slot \
                 socket the veth in place and one group change on group 0 of the slot's \
                 namespace (lo, tap, eth0: up, IPv6 off, XDP redirect); eth0 \
                 holds no address and no route (the guest behind the tap holds the slot \
                 address); host address, hold budget and XDP counters as netslot"
            }
            SystemKind::IpTuntap => {
                "iproute2 one command per step, slot after slot, the microVM slot: netns \
                 add, `ip -n NS tuntap add tap0 mode tap user 4242 vnet_hdr`, veth in place \
                 from the slot (`ip -n NS link add eth0 up type veth peer name HOST netns \
                 <host pid> group G`), lo up, tap0 up, host address, host end up (7 `ip` \
                 processes per slot); eth0 holds no address and no route; IPv6 left on; \
                 no XDP (neither the counters nor the tap redirect, as ip-loop attaches \
                 none); teardown deletes the namespaces (taps and veths die with them)"
            }
        }
    }

    /// A fresh instance.
    pub fn make(self) -> Box<dyn System> {
        match self {
            SystemKind::Netslot => Box::new(netslot::NetslotSystem::default()),
            SystemKind::NetslotWarm => Box::new(netslot::NetslotSystem::warm()),
            SystemKind::NetslotUnbounded => Box::new(netslot::NetslotSystem::unbounded()),
            SystemKind::IpBatch => Box::new(ip_batch::IpBatch),
            SystemKind::IpLoop => Box::new(ip_loop::IpLoop),
            SystemKind::CniPtp => Box::new(cni::Cni::default()),
            SystemKind::Rtnetlink => Box::new(rtnetlink_crate::RtnetlinkCrate::default()),
            SystemKind::ThreadsCpus => Box::new(threads::ThreadPool::new(
                std::thread::available_parallelism().map_or(1, usize::from),
            )),
            SystemKind::Threads8 => Box::new(threads::ThreadPool::new(8)),
            SystemKind::Floor => Box::new(floor::Floor::default()),
            SystemKind::NetslotMicrovm => Box::new(netslot::NetslotSystem::microvm()),
            SystemKind::IpTuntap => Box::new(ip_tuntap::IpTuntap),
        }
    }
}

impl fmt::Display for SystemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_system_parses_by_name_and_all_is_the_standard_slot() {
        for &k in SystemKind::EVERY {
            assert_eq!(SystemKind::parse(k.name()), Some(k));
        }
        assert!(SystemKind::ALL
            .iter()
            .all(|k| SystemKind::EVERY.contains(k)));
        assert!(SystemKind::MICROVM
            .iter()
            .all(|k| SystemKind::EVERY.contains(k)));
        for k in [SystemKind::NetslotMicrovm, SystemKind::IpTuntap] {
            assert!(!SystemKind::ALL.contains(&k), "{k} makes no standard slot");
        }
        assert_eq!(SystemKind::parse("microvm"), None, "a list, not a system");
    }
}
