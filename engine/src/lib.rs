//! netslot provisions Linux "network slots" (a namespace, an in-place veth pair, /31
//! addresses, a default route) in bulk, taking the RTNL lock and making system calls as
//! few times as the kernel allows.
//!
//! The data path, one file per step:
//!
//! ```text
//!  pool ──> plan ──> batch ──> ring ──> reconcile ──> result
//!  namespaces   requests   send buffers   io_uring   seq -> (owner, op)   Slot / SlotError
//!  (own thread) per socket  + end marker  enter
//! ```
//!
//! - `pool`: a thread makes namespaces ahead of demand (unshare, socket).
//! - `plan`: each slot's requests, on its own socket and on the host socket.
//! - `batch`: NLMSG_ALIGNed send buffers, split at the send/receive buffer limits.
//! - `ring`: every send of a step in one io_uring_enter, each linked to its receive.
//! - `reconcile`: replies matched by sequence number (`seq`: one ledger per socket) to
//!   their `owner` (a slot, a sub-batch, the pool); end markers settle the rest.
//! - `result`: slots, per-slot errors with errno and extended-ACK text, the report.
//!
//! `call` decides one provisioning call from end to end (chunks, carry-over of host
//! addresses, sub-batches, recovery, rollback) as a sans-IO state machine; `drive` is
//! the engine's driver of it, and the benches and fuzzers drive the same `Call` through
//! `internals`. [`Engine`] (`engine`, `attach`, `pin`) owns what outlives a call;
//! `recycle` takes released slots back when the kernel shows them as the pool made them.
//!
//! A pool's slots are of one [`microvm::SlotKind`]: the standard slot, or a microVM slot
//! whose namespace also holds a tap for a guest ([`microvm`]; the pool thread makes the
//! tap through `tap`).
//!
//! Beside them: `wire` (netlink encoding via netlink-packet-route), `sock`, `netns`, `tap`
//! and `ring` (the only unsafe code), `host` (the host namespace and kernel read-back),
//! `config`, [`features`] (the start-up check of the kernel: Linux 6.18 or later),
//! [`doctor`] (the host limits that N slots run into, `netslot doctor`).
//!
//! Three folders serve the tools around the engine:
//! - [`ownership`]: who owns a pool ([`ownership::record`]), which objects the kernel
//!   proves the pool made (the census), what an engine claims before it makes anything,
//!   and removing what dead owners left ([`ownership::gc`]).
//! - [`daemon`]: the wire format of `netslot serve` ([`daemon::protocol`]), a blocking
//!   client of it ([`daemon::client`]), and the judgement of the namespaces its peers
//!   hand it ([`daemon::target`]); see docs/serve.md.
//! - [`cni`]: what the `netslot-cni` plugin makes of its configuration
//!   ([`cni::conf`]), of the daemon's answers ([`cni::reply`]) and of an IPAM plugin's
//!   ([`cni::ipam`]), and its results per CNI version ([`cni::result`]).
//!
//! [`Engine::attach`] runs the same steps on namespaces the caller owns (a CNI runtime's
//! CNI_NETNS) instead of the pool's.
#![deny(unsafe_code)]

mod attach;
mod batch;
mod call;
pub mod cni;
pub mod config;
pub mod daemon;
pub mod doctor;
mod drive;
mod engine;
pub mod features;
pub mod groups;
mod hold;
pub mod host;
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals;
pub mod limits;
pub mod microvm;
mod netns;
mod op;
mod owner;
pub mod ownership;
mod pin;
mod plan;
mod pool;
mod reconcile;
mod recycle;
mod result;
mod ring;
mod seq;
mod slot;
mod sock;
mod sysctl;
mod tap;
mod wire;

pub use attach::{AttachTarget, Attached};
pub use config::{ConfigError, CountersAttach, EngineConfig, FaultInjection, Ipv4Cidr};
pub use engine::Engine;
pub use host::{AddrRecord, HostNs, LinkRecord};
pub use netns::{ns_id, open_network_namespace};
/// The XDP counters program (crate `netslot-bpf`), for reading pinned counters.
pub use netslot_bpf as bpf;
pub use op::Op;
pub use pin::release;
pub use recycle::{Destroyed, Dirty, Recycled};
pub use result::{
    EngineError, PhaseTimes, ProvisionReport, Provisioned, SlotCounters, SlotError, SlotResult,
};
pub use slot::{
    guest_mac, host_end_mac, is_unicast_mac, mac_to_string, parse_mac, slot_end_mac, Ipv4Lease,
    Ipv6Lease, Slot, SlotSpec,
};
