//! op: the operations a slot is made of, as errors and the sequence ledger name them.
//! Names only; how each is encoded lives in `plan` and `wire`.

use std::fmt;

use serde::Serialize;

/// One step of provisioning a slot. Each kernel request carries exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Op {
    /// Taking a namespace from the pool (unshare, socket, setsockopt).
    Namespace,
    /// `lo` up inside the slot (RTM_SETLINK).
    LoUp,
    /// The veth pair created in place (RTM_NEWLINK with a peer in the host namespace).
    Veth,
    /// No IPv6 address generation on a slot end or the host ends (IPv6 off).
    Ipv6Off,
    /// The slot end's /31 address (RTM_NEWADDR in the slot).
    SlotAddr,
    /// The slot's default route via the host end (RTM_NEWROUTE in the slot).
    Route,
    /// The host end's /31 address (RTM_NEWADDR in the host namespace).
    HostAddr,
    /// Bringing one dual-stack slot's host end up on its own (RTM_SETLINK), before its
    /// IPv6 address (see `plan::host_addresses`).
    HostUp,
    /// Bringing a sub-batch's host ends up in one group change (RTM_NEWLINK by
    /// IFLA_GROUP).
    GroupUp,
    /// Attaching the XDP counters to one host end (per-device attach only).
    Xdp,
    /// The clsact qdisc of one host end, joining the pool's shared tc block (tc-block only).
    Qdisc,
    /// The one cls_bpf filter on the pool's shared tc block (tc-block only, first call).
    TcFilter,
    /// A microVM slot's tap MTU, when not the tap's default (RTM_SETLINK in the slot).
    TapMtu,
    /// A microVM slot's devices (lo, tap, slot end) up, IPv6 off, with the tap redirect
    /// program: one group change in the slot.
    SlotRedirect,
    /// Bind-mounting the slot's namespace under the pin directory.
    Pin,
    /// Undoing a failed slot (RTM_DELLINK of its host end).
    Rollback,
    /// Giving a slot back (RTM_DELLINK of its host end).
    Detach,
}

impl Op {
    /// The name used in errors and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Namespace => "namespace",
            Op::LoUp => "lo-up",
            Op::Veth => "veth",
            Op::Ipv6Off => "ipv6-off",
            Op::SlotAddr => "slot-addr",
            Op::Route => "route",
            Op::HostAddr => "host-addr",
            Op::HostUp => "host-up",
            Op::GroupUp => "group-up",
            Op::Xdp => "xdp",
            Op::Qdisc => "qdisc",
            Op::TcFilter => "tc-filter",
            Op::TapMtu => "tap-mtu",
            Op::SlotRedirect => "slot-redirect",
            Op::Pin => "pin",
            Op::Rollback => "rollback",
            Op::Detach => "detach",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
