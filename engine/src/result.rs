//! result: what provisioning hands back: slots, per-slot errors, engine errors, the report.
//! Data only; produced by `engine`.

use std::fmt;
use std::io;
use std::time::Duration;

use serde::Serialize;

use crate::config::ConfigError;
use crate::op::Op;
use crate::slot::Slot;

/// The fate of one slot of a provisioning call.
pub type SlotResult = Result<Slot, SlotError>;

/// Why one slot failed. Everything of the slot was rolled back before this was returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotError {
    /// Slot number.
    pub id: u32,
    /// Slot name (host end / namespace).
    pub name: String,
    /// The operation that failed first.
    pub op: Op,
    /// The kernel's errno (positive), or 0 when the failure was not a kernel refusal.
    pub errno: i32,
    /// The kernel's extended-ACK text, when it gave one.
    pub ext_ack: Option<String>,
    /// What else is known (e.g. a lost or unreadable reply).
    pub detail: Option<String>,
}

impl fmt::Display for SlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot {} ({}): {} failed", self.id, self.name, self.op)?;
        if self.errno != 0 {
            write!(f, ": {}", io::Error::from_raw_os_error(self.errno))?;
        }
        if let Some(text) = &self.ext_ack {
            write!(f, ": kernel says {text:?}")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for SlotError {}

/// Failures of the engine itself (not of one slot).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Input rejected before any kernel call.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The running kernel lacks a feature netslot needs (see [`crate::features`]).
    #[error(transparent)]
    Kernel(#[from] crate::features::MissingFeature),
    /// A system call of the engine's own setup or bookkeeping failed.
    #[error("{what}: {source}")]
    Io {
        /// What the engine was doing.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The pool's group already holds devices the engine did not make.
    #[error("device group {group} already holds {count} device(s) in the host namespace (first: {first}); the engine owns its group: pick another or remove them (netslot down --group {group})")]
    GroupInUse {
        /// The group.
        group: u32,
        /// How many devices are in it.
        count: usize,
        /// Name of one of them.
        first: String,
    },
    /// The pool was finished on purpose by an earlier owner and still has slots.
    #[error("pool {prefix}/group {group} already exists with {slots} slot(s) (record committed): remove it first (netslot down --prefix {prefix} --group {group}) or choose another --prefix/--group")]
    PoolInUse {
        /// The pool's prefix.
        prefix: String,
        /// The pool's group.
        group: u32,
        /// How many of its slots the kernel shows.
        slots: usize,
    },
    /// Something the pool would use is someone else's; nothing was touched.
    #[error("{what}")]
    Taken {
        /// What is taken, and by whom.
        what: String,
    },
    /// A name a new slot would take belongs to a device or pin the pool did not make.
    #[error("slot {id}: the name {name:?} is taken by {by}, which this pool did not make; nothing was created: choose another --prefix")]
    NameTaken {
        /// The slot id.
        id: u32,
        /// The name.
        name: String,
        /// What holds it (a device or a namespace pin).
        by: String,
    },
    /// Loading, pinning or reading the XDP counters failed.
    #[error("{what}: {source}")]
    Bpf {
        /// What the engine was doing.
        what: String,
        /// The eBPF layer's error (names its own operation and OS error).
        #[source]
        source: netslot_bpf::BpfError,
    },
    /// The pool is owned by a live process, or its ownership record is unusable.
    #[error(transparent)]
    Claim(#[from] crate::ownership::gc::GcError),
    /// Reclaiming what a dead owner left failed in part; nothing new was created.
    #[error("reclaiming what a dead owner of group {group} left failed: {}", errors.join("; "))]
    Leftovers {
        /// The group.
        group: u32,
        /// Each names the object, the operation and the error.
        errors: Vec<String>,
    },
    /// Something failed that the engine could not attribute to a slot.
    #[error("{0}")]
    Protocol(String),
}

impl EngineError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> EngineError {
        let what = what.into();
        move |source| EngineError::Io { what, source }
    }
}

/// Packets and bytes the XDP program counted arriving on one slot's host end (sent by
/// the slot towards the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SlotCounters {
    /// Slot number.
    pub id: u32,
    /// Host end ifindex.
    pub ifindex: u32,
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen.
    pub bytes: u64,
}

/// Where the time of one provisioning call went. In JSON each field is whole
/// microseconds, named with `_us` (`namespaces_us`, ...).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseTimes {
    /// Time the pool thread spent creating namespaces (overlaps the rest).
    #[serde(rename = "namespaces_us", serialize_with = "micros")]
    pub namespaces: Duration,
    /// Time the engine waited for the pool.
    #[serde(rename = "pool_wait_us", serialize_with = "micros")]
    pub pool_wait: Duration,
    /// Netlink work through the ring: every slot socket's send (lo up, veth, IPv6 off,
    /// address, route), the host addresses and the final group change, which share
    /// submissions (chunk k's host addresses ride with chunk k+1's slot sends).
    #[serde(rename = "links_us", serialize_with = "micros")]
    pub links: Duration,
    /// Bind mounts under the pin directory.
    #[serde(rename = "pin_us", serialize_with = "micros")]
    pub pin: Duration,
    /// Undoing failed slots.
    #[serde(rename = "rollback_us", serialize_with = "micros")]
    pub rollback: Duration,
}

/// Durations serialize as whole microseconds, under a name ending in `_us` (the rule of
/// every JSON document netslot prints).
fn micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Figures of one provisioning call. In JSON every duration is whole microseconds, named
/// with `_us` (`wall_us`, `group_changes_took_us`, ...).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProvisionReport {
    /// Slots asked for.
    pub requested: usize,
    /// Slots made.
    pub provisioned: usize,
    /// Slots that failed (and were rolled back).
    pub failed: usize,
    /// Wall time of the call.
    #[serde(rename = "wall_us", serialize_with = "micros")]
    pub wall: Duration,
    /// Where the time went.
    pub phases: PhaseTimes,
    /// Namespaces the pool created during the call (beyond the slots: those pre-made
    /// for the water marks).
    pub namespaces_created: u64,
    /// io_uring_enter calls made.
    pub ring_enters: u64,
    /// sendmsg operations submitted (one per slot socket plus the host socket's).
    pub sendmsgs: u64,
    /// Netlink requests sent (excluding end markers).
    pub requests: u64,
    /// Group changes made: one per sub-batch (each sub-batch is a device group of its own,
    /// sized by `max_rtnl_hold`).
    pub group_changes: usize,
    /// Time spent sending them, send to reply, all sub-batches together.
    #[serde(rename = "group_changes_took_us", serialize_with = "micros")]
    pub group_changes_took: Duration,
    /// Host ends whose IPv6 went off through their `disable_ipv6` sysctl before the group
    /// changes (only under a budget; see docs/rtnl-hold.md). The others' sub-batches used
    /// the netlink `IPv6 off` group change.
    pub ipv6_sysctl: usize,
    /// Time spent writing them, every round of EINTR retries included.
    #[serde(rename = "ipv6_sysctl_took_us", serialize_with = "micros")]
    pub ipv6_sysctl_took: Duration,
    /// Requests whose replies a receive-buffer overrun (ENOBUFS) dropped, settled from
    /// the kernel's state instead (address dump, or sent again alone).
    pub recovered_after_overrun: u64,
}

impl ProvisionReport {
    /// Slots made per second of wall time.
    pub fn slots_per_sec(&self) -> f64 {
        let s = self.wall.as_secs_f64();
        if s > 0.0 {
            self.provisioned as f64 / s
        } else {
            0.0
        }
    }
}

/// Everything one provisioning call produced.
#[derive(Debug)]
pub struct Provisioned {
    /// One entry per requested slot, in id order.
    pub slots: Vec<SlotResult>,
    /// Figures.
    pub report: ProvisionReport,
}
