//! config: what a pool of slots looks like, and the checks made before any kernel call.
//! Leaves the kernel alone: validation here is pure, so bad input never half-creates a slot.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Largest slot id a MAC can carry: the last three octets (see `slot::host_end_mac`).
pub const MAX_SLOT_ID: u32 = (1 << 24) - 1;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// Name of the slot end of every veth pair, inside the slot's namespace.
pub const SLOT_IFNAME: &str = "eth0";
/// Default device group of a pool's host ends (never 0: group 0 is every default device).
pub const DEFAULT_GROUP: u32 = 7600;
/// Default IPv4 pool: the shared address space of RFC 6598, one /31 per slot.
pub const DEFAULT_IPV4_POOL: &str = "100.64.0.0/16";
/// Default device group of the daemon's pool (`netslot serve`): not the CLI's, so the
/// two never share a pool.
pub const DEFAULT_DAEMON_GROUP: u32 = 7601;
/// Default IPv4 pool of the daemon: the next /16 of RFC 6598's space, so that the daemon
/// and a CLI pool with their defaults do not overlap.
pub const DEFAULT_DAEMON_IPV4_POOL: &str = "100.65.0.0/16";
/// Smallest and largest MTU a slot takes. veth takes 68..=65535 (ETH_MIN_MTU,
/// ETH_MAX_MTU), but below IPV6_MIN_MTU (1280) the kernel creates no IPv6 state for a
/// device (addrconf_notify): with IPv6 on it would silently not run, and with it off the
/// engine's per-device "IPv6 off" request is refused with EAFNOSUPPORT (measured on 6.18:
/// `netslot up --mtu 1279` failed every slot).
pub const MTU_RANGE: (u32, u32) = (1280, 65535);
/// Largest MTU of a veth pair that takes an XDP program without multi-buffer support,
/// as veth_xdp_set (drivers/net/veth.c) computes it on x86_64 with 4 KiB pages:
/// SKB_WITH_OVERHEAD(PAGE_SIZE - VETH_XDP_HEADROOM) - ETH_HLEN = 4096 - 256 - 320 - 14.
/// Above it the group change is refused with ERANGE ("Peer MTU is too large to set
/// XDP"; measured: 3506 works, 3507 fails).
pub const XDP_MAX_MTU: u32 = 3506;
/// Default RTNL hold budget: a neighbour waiting this long for RTNL barely notices.
pub const DEFAULT_MAX_RTNL_HOLD: Duration = Duration::from_millis(5);

/// An IPv4 prefix such as `100.64.0.0/16`, parsed and compared by `ipnet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr(ipnet::Ipv4Net);

/// Ranges no pool may touch, with why (RFC 6890's special-purpose registry): the kernel
/// treats their addresses specially or they are not unicast.
const RESERVED: [(&str, &str); 4] = [
    (
        "0.0.0.0/8",
        "\"this network\" (0.0.0.0/8) is not assignable",
    ),
    (
        "127.0.0.0/8",
        "loopback (127.0.0.0/8) belongs to lo in every namespace",
    ),
    ("224.0.0.0/4", "multicast (224.0.0.0/4) is not unicast"),
    (
        "240.0.0.0/4",
        "reserved (240.0.0.0/4, with the broadcast address) is not assignable",
    ),
];

impl Ipv4Cidr {
    /// A prefix; host bits of `addr` must be zero, and it must not touch a reserved range.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Self, ConfigError> {
        if prefix_len > 31 {
            return Err(ConfigError::Cidr(format!(
                "{addr}/{prefix_len}: a pool needs at least a /31 (one slot)"
            )));
        }
        let net = ipnet::Ipv4Net::new(addr, prefix_len)
            .map_err(|e| ConfigError::Cidr(format!("{addr}/{prefix_len}: {e}")))?;
        if net.network() != addr {
            return Err(ConfigError::Cidr(format!(
                "{addr}/{prefix_len}: host bits are set (did you mean {}/{prefix_len}?)",
                net.network()
            )));
        }
        for (range, why) in RESERVED {
            let r: ipnet::Ipv4Net = range.parse().expect("valid constant");
            if r.contains(&net) || net.contains(&r) {
                return Err(ConfigError::Cidr(format!("{net}: {why}")));
            }
        }
        Ok(Self(net))
    }

    /// How many /31 point-to-point pairs fit in the prefix.
    pub fn pairs(&self) -> u64 {
        1u64 << (31 - u32::from(self.0.prefix_len()))
    }

    /// The (host end, slot end) addresses of pair `index`.
    pub fn pair(&self, index: u32) -> Option<(Ipv4Addr, Ipv4Addr)> {
        if u64::from(index) >= self.pairs() {
            return None;
        }
        let host = u32::from(self.0.network()) + 2 * index;
        Some((Ipv4Addr::from(host), Ipv4Addr::from(host + 1)))
    }

    /// The network address and prefix length.
    pub fn network_and_len(&self) -> (Ipv4Addr, u8) {
        (self.0.network(), self.0.prefix_len())
    }

    /// Whether `ip` is in the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.contains(&ip)
    }

    /// Whether the prefix and `addr/len` share any address.
    pub fn overlaps(&self, addr: Ipv4Addr, len: u8) -> bool {
        ipnet::Ipv4Net::new(addr, len.min(32)).is_ok_and(|other| {
            let other = other.trunc();
            self.0.contains(&other) || other.contains(&self.0)
        })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::Cidr(format!("{s:?} is not an IPv4 prefix like 100.64.0.0/16"));
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        Self::new(addr, len)
    }
}

/// How the counters program reaches the host ends: the attachment, whatever its hook.
///
/// The cost of each is in RTNL acquisitions, netslot's measure (docs/ebpf.md has the
/// figures and the kernel functions they come from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CountersAttach {
    /// XDP: IFLA_XDP in the one group change that brings the host ends up
    /// (rtnl_group_changelink): no acquisition of its own, whatever the batch size.
    #[default]
    Group,
    /// XDP: one RTM_SETLINK with IFLA_XDP per host end, sent with the host addresses: one
    /// RTNL acquisition per device. For comparison, or for hosts whose tooling expects it.
    PerDevice,
    /// tc: a clsact qdisc on every host end whose ingress block is the pool's shared block
    /// (index [`EngineConfig::tc_block_index`]), sent with the host addresses (RTM_NEWQDISC
    /// runs under RTNL: one acquisition per device), and ONE direct-action cls_bpf filter on
    /// that block, made by the pool's first call (one acquisition in all). Later calls'
    /// host ends join the block by their qdisc alone. For users who need tc semantics (the
    /// program sees an skb) or want to move counting to egress.
    TcBlock,
}

impl CountersAttach {
    /// The name the CLI uses (`--attach`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Group => "group",
            Self::PerDevice => "per-device",
            Self::TcBlock => "tc-block",
        }
    }

    /// The hook of the program this attachment needs.
    pub fn hook(self) -> netslot_bpf::Hook {
        match self {
            Self::Group | Self::PerDevice => netslot_bpf::Hook::Xdp,
            Self::TcBlock => netslot_bpf::Hook::Tc,
        }
    }
}

impl fmt::Display for CountersAttach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that shapes a pool of standard slots.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Host ends and pinned namespaces are named `<prefix><id>`.
    pub prefix: String,
    /// Base device group of the pool (1..=65535): the engine owns every device in it and
    /// in its sub-batch groups `group + k * 65536` (see [`crate::groups`]).
    pub group: u32,
    /// Where the /31 pairs come from.
    pub ipv4_pool: Ipv4Cidr,
    /// MTU of both ends.
    pub mtu: u32,
    /// Keep IPv6 on the slot devices (link-local addresses, DAD). Off by default: with it
    /// off, both ends are created with IPv6 address generation disabled.
    pub ipv6: bool,
    /// Namespace that receives the host ends: a path such as /run/netns/NAME or
    /// /proc/PID/ns/net. `None` means the namespace of the thread creating the engine.
    pub host_netns: Option<PathBuf>,
    /// Attach the per-slot packet/byte counters (bpf/) to every host end.
    pub xdp_counters: bool,
    /// How the counters are attached, XDP or tc (see [`CountersAttach`]). The field keeps
    /// its first name so existing configurations build unchanged.
    pub xdp_attach: CountersAttach,
    /// Pin the XDP program and its map in this bpffs directory (e.g.
    /// `/sys/fs/bpf/netslot/<group>`) so a later process can read the counters (`netslot
    /// stats`). `None`: they live while the engine or an attached device holds them.
    pub bpf_pin_dir: Option<PathBuf>,
    /// Bind-mount each slot's namespace at `<dir>/<name>` (e.g. /run/netns, for
    /// `ip netns exec`). `None`: namespaces live as long as their `Slot` is held.
    pub pin_dir: Option<PathBuf>,
    /// Threads creating namespaces. Creation is mostly outside RTNL, so a second thread
    /// uses what the RTNL-bound link work leaves of the CPUs.
    pub pool_threads: usize,
    /// The namespace pool refills when it holds fewer than this many namespaces…
    pub pool_low: usize,
    /// …up to this many. Demand beyond it is produced as it is requested.
    pub pool_high: usize,
    /// Slots per ring submission: the sendmsg of each slot socket in a chunk go to the
    /// kernel in one io_uring_enter.
    pub chunk: usize,
    /// Longest RTNL hold the engine may cause with one multi-device request (a group
    /// change holds RTNL for every device of the group at once, and every other network
    /// change on the host waits). Host ends are split into sub-batches, each a device
    /// group of its own (see [`crate::groups`]), sized from measured costs so that no
    /// group change is expected to pass it. `None`: no budget, one group change per call
    /// (fewest acquisitions, however long it holds).
    pub max_rtnl_hold: Option<Duration>,
    /// Directory of pool ownership records (e.g. [`crate::ownership::gc::DEFAULT_RUN_DIR`]). When
    /// set, the engine claims its pool there for its whole life (a second engine or
    /// `netslot gc` is refused while it lives) and first reclaims what a dead owner of
    /// the same pool left in the kernel (see [`crate::ownership::gc`]). `None`: no claim, no
    /// reclaim; the caller answers for the group.
    pub run_dir: Option<PathBuf>,
    /// Adopt, instead of removing, the live attachments a dead or stopped owner of the
    /// pool listed in its record (`netslot serve` sets it, so that a restart leaves every
    /// container's interface in place). Kept are the host ends the record names whose
    /// device the kernel still shows as the pool's and whose container namespace still
    /// lives; everything else of the pool is removed as without it. See
    /// [`crate::Engine::adopted`]. Needs `run_dir`; off by default.
    pub adopt: bool,
    /// What every slot is: the standard slot, or a microVM slot with a tap for the guest
    /// ([`crate::microvm`]).
    pub kind: crate::microvm::SlotKind,
    /// Fault injection for tests only; the default injects nothing.
    pub faults: FaultInjection,
}

/// Conditions the engine never chooses itself, so tests can make the kernel hit them:
/// small host socket buffers (the send limit, EMSGSIZE, and the receive limit, ENOBUFS).
/// The default changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultInjection {
    /// SO_SNDBUF of the host socket instead of the forced 4 MiB. The kernel doubles it
    /// and enforces a minimum; the engine reads the result back and splits its sends
    /// to fit (netlink_sendmsg refuses a longer send with EMSGSIZE).
    pub host_sndbuf: Option<usize>,
    /// SO_RCVBUF of the host socket instead of the forced 16 MiB.
    pub host_rcvbuf: Option<usize>,
    /// Do not bound requests per host send by the receive buffer, so their replies can
    /// overrun it (netlink_overrun: replies dropped, ENOBUFS on the next read).
    pub unbounded_host_requests: bool,
    /// Ask for an ACK on every host request (NLM_F_ACK), so every request has a reply
    /// to lose.
    pub ack_every_host_request: bool,
    /// Skip the open-file check before a call (`limits`), so that a test can make the
    /// kernel refuse namespaces with EMFILE part-way instead.
    pub ignore_fd_limit: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            prefix: "ns".into(),
            group: DEFAULT_GROUP,
            ipv4_pool: DEFAULT_IPV4_POOL.parse().expect("valid default"),
            mtu: 1500,
            ipv6: false,
            host_netns: None,
            pin_dir: None,
            xdp_counters: true,
            xdp_attach: CountersAttach::Group,
            max_rtnl_hold: Some(DEFAULT_MAX_RTNL_HOLD),
            bpf_pin_dir: None,
            pool_threads: 1,
            pool_low: 0,
            pool_high: 0,
            chunk: 256,
            run_dir: None,
            adopt: false,
            kind: crate::microvm::SlotKind::Standard,
            faults: FaultInjection::default(),
        }
    }
}

impl EngineConfig {
    /// Checks that `count` slots with ids starting at `first_id` can be made as configured.
    pub fn check(&self, first_id: u32, count: usize) -> Result<(), ConfigError> {
        if count == 0 {
            return Err(ConfigError::NoSlots);
        }
        if self.group == 0 {
            return Err(ConfigError::GroupZero);
        }
        if self.group > crate::groups::MAX_BASE_GROUP {
            return Err(ConfigError::GroupTooLarge(self.group));
        }
        check_prefix(&self.prefix)?;
        let last = u64::from(first_id) + count as u64 - 1;
        let longest = self.prefix.len() + last.to_string().len();
        if longest > MAX_IFNAME_LEN {
            return Err(ConfigError::NameTooLong {
                example: format!("{}{last}", self.prefix),
                len: longest,
            });
        }
        if last >= self.ipv4_pool.pairs() {
            return Err(ConfigError::PoolTooSmall {
                cidr: self.ipv4_pool,
                capacity: self.ipv4_pool.pairs(),
                wanted: last + 1,
            });
        }
        if last > u64::from(MAX_SLOT_ID) {
            return Err(ConfigError::TooManySlots { wanted: last + 1 });
        }
        self.check_slot_mtu(self.mtu)?;
        if let Some(tap) = self.kind.tap() {
            self.check_tap(tap)?;
        }
        if self.chunk == 0 || self.pool_high < self.pool_low {
            return Err(ConfigError::Pool {
                low: self.pool_low,
                high: self.pool_high,
                chunk: self.chunk,
            });
        }
        Ok(())
    }

    /// A microVM pool's tap: a usable name other than the slot end's, ids the kernel
    /// takes, and host ends with an XDP program. The guest's frames reach the veth by
    /// XDP_REDIRECT (veth_xdp_xmit), which delivers only to a peer whose XDP ring runs,
    /// so the host ends must carry the XDP counters.
    fn check_tap(&self, tap: &crate::microvm::TapConfig) -> Result<(), ConfigError> {
        check_ifname(&tap.name)?;
        if tap.name == SLOT_IFNAME || tap.name == "lo" {
            return Err(ConfigError::Tap(format!(
                "the tap cannot be named {:?}: the slot's namespace has a device of that name",
                tap.name
            )));
        }
        for (what, id) in [("owner uid", tap.owner), ("group gid", tap.group)] {
            if id == Some(u32::MAX) {
                return Err(ConfigError::Tap(format!(
                    "{what} 4294967295 is the kernel's \"no id\" (-1); leave it unset instead"
                )));
            }
        }
        let xdp = self.xdp_counters
            && matches!(
                self.xdp_attach,
                CountersAttach::Group | CountersAttach::PerDevice
            );
        if !xdp {
            return Err(ConfigError::Tap(
                "microVM slots need the XDP counters on their host ends (the default, \
                 --attach group or per-device): the guest's frames are redirected into the \
                 veth by XDP, and a veth delivers a redirected frame only to a peer whose \
                 XDP program runs"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Index of the pool's shared tc block ([`CountersAttach::TcBlock`]): the pool's group.
    ///
    /// Shared block indexes are per network namespace (tcf_net's idr in cls_api.c) and
    /// must not be 0 (qdisc_block_indexes_set refuses it), as groups must not: so the
    /// group, which already names the pool in the host namespace, names its block too.
    pub fn tc_block_index(&self) -> u32 {
        self.group
    }

    /// Name of slot `id`'s host end and pinned namespace.
    pub fn slot_name(&self, id: u32) -> String {
        format!("{}{id}", self.prefix)
    }
}

impl EngineConfig {
    /// Whether a slot of this configuration can carry `mtu`: within [`MTU_RANGE`], and at
    /// most [`XDP_MAX_MTU`] when XDP counters are attached at the XDP hook. The pool's
    /// own MTU and each attach target's own MTU are checked alike.
    pub fn check_slot_mtu(&self, mtu: u32) -> Result<(), ConfigError> {
        if !(MTU_RANGE.0..=MTU_RANGE.1).contains(&mtu) {
            return Err(ConfigError::Mtu(mtu));
        }
        if self.xdp_counters
            && self.xdp_attach.hook() == netslot_bpf::Hook::Xdp
            && mtu > XDP_MAX_MTU
        {
            return Err(ConfigError::MtuTooLargeForXdp(mtu));
        }
        Ok(())
    }
}

/// Checks a caller-chosen interface name (CNI_IFNAME) against dev_valid_name
/// (net/core/dev.c): 1..=15 bytes, not "." or "..", no '/', ':' or whitespace.
pub fn check_ifname(name: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| ConfigError::IfName {
        name: name.to_owned(),
        why: why.to_owned(),
    };
    if name.is_empty() || name.len() > MAX_IFNAME_LEN {
        return Err(bad("it must be 1 to 15 bytes long"));
    }
    if name == "." || name == ".." {
        return Err(bad("it must not be \".\" or \"..\""));
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        return Err(bad("'/', ':', NUL and whitespace are not allowed"));
    }
    Ok(())
}

/// Interface-name rules of dev_valid_name (net/core/dev.c), plus what keeps names
/// usable as file names under /run/netns.
fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| ConfigError::Prefix {
        prefix: prefix.to_owned(),
        why: why.to_owned(),
    };
    if prefix.is_empty() {
        return Err(bad("it is empty"));
    }
    if prefix.len() >= MAX_IFNAME_LEN {
        return Err(bad("it leaves no room for a slot number in 15 bytes"));
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(bad(
            "only ASCII letters, digits, '-', '_' and '.' are allowed",
        ));
    }
    if prefix.starts_with('.') || prefix.starts_with('-') {
        return Err(bad("it must not start with '.' or '-'"));
    }
    Ok(())
}

/// Input that cannot be provisioned; found before any kernel call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Zero slots requested.
    #[error("nothing to do: the slot count must be at least 1")]
    NoSlots,
    /// Group 0 holds every default device (lo, eth0): never usable as a pool's group.
    #[error("group 0 is the default group of every device (lo, eth0 …); choose another")]
    GroupZero,
    /// A base group must leave room for its sub-batch groups (`groups`).
    #[error("group {0} is too large: a pool's base group is 1..=65535 (its sub-batch groups are group + k * 65536)")]
    GroupTooLarge(u32),
    /// Prefix unusable in an interface name.
    #[error("prefix {prefix:?} is not usable: {why}")]
    Prefix {
        /// The prefix given.
        prefix: String,
        /// What is wrong with it.
        why: String,
    },
    /// `<prefix><id>` would pass the kernel's 15-byte name limit.
    #[error("name {example:?} would be {len} bytes; interface names are at most 15: use a shorter prefix or fewer slots")]
    NameTooLong {
        /// The longest name the request would make.
        example: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A caller-chosen interface name the kernel would refuse.
    #[error("interface name {name:?} is not usable: {why}")]
    IfName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// Bad CIDR text.
    #[error("bad IPv4 pool: {0}")]
    Cidr(String),
    /// The pool has fewer /31 pairs than slots.
    #[error("IPv4 pool {cidr} holds {capacity} slots (one /31 each), {wanted} needed: use a shorter prefix length")]
    PoolTooSmall {
        /// The pool.
        cidr: Ipv4Cidr,
        /// Slots it can address.
        capacity: u64,
        /// Slots the request needs.
        wanted: u64,
    },
    /// MTU out of the range a slot can carry.
    #[error("MTU {0} is outside 1280..=65535: below 1280 (IPv6's minimum) the kernel keeps no IPv6 state on a device, so IPv6 could neither run nor be turned off per device")]
    Mtu(u32),
    /// A slot end's MAC that a device cannot have as its own (multicast or all zeros).
    #[error("MAC {0} is not a unicast address; a slot end needs one")]
    SlotMac(String),
    /// MTU too large for the XDP counters on veth.
    #[error("MTU {0} is above 3506, the largest a veth pair can carry with an XDP program attached (veth_xdp_set refuses it with ERANGE); use --no-xdp, or --attach tc-block to count with tc")]
    MtuTooLargeForXdp(u32),
    /// A microVM pool's tap configuration cannot be made or cannot carry the guest.
    #[error("microVM tap: {0}")]
    Tap(String),
    /// The call's slots would not fit the process's open-file limit.
    #[error("{wanted} slots hold {per_slot} open file(s) each, but RLIMIT_NOFILE {limit} with {open} open leaves room for {fit} (beside {overhead} for the engine itself): raise the limit (ulimit -n / LimitNOFILE=) or ask for fewer slots per call")]
    FdLimit {
        /// Slots asked for.
        wanted: usize,
        /// Fds each slot holds.
        per_slot: usize,
        /// The soft RLIMIT_NOFILE.
        limit: u64,
        /// Fds open when the call was asked for.
        open: usize,
        /// Slots that fit.
        fit: usize,
        /// Fds kept for the engine itself.
        overhead: usize,
    },
    /// More slots than a MAC can number.
    #[error(
        "{wanted} slots: a pool numbers at most 16777216 slots (24 bits of the host end's MAC)"
    )]
    TooManySlots {
        /// Slots the request needs.
        wanted: u64,
    },
    /// Inconsistent pool sizing.
    #[error("pool sizing low={low} high={high} chunk={chunk}: need low <= high and chunk >= 1")]
    Pool {
        /// Low water mark.
        low: usize,
        /// High water mark.
        high: usize,
        /// Slots per submission.
        chunk: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_counts_pairs() {
        let c: Ipv4Cidr = "100.64.0.0/16".parse().unwrap();
        assert_eq!(c.pairs(), 32768);
        assert_eq!(
            c.pair(1),
            Some((Ipv4Addr::new(100, 64, 0, 2), Ipv4Addr::new(100, 64, 0, 3)))
        );
        assert_eq!(c.pair(32768), None);
        assert_eq!("10.0.0.0/31".parse::<Ipv4Cidr>().unwrap().pairs(), 1);
    }

    #[test]
    fn cidr_rejects_garbage_and_host_bits() {
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0.1/24",
            "x/8",
            "10.0.0.0/32",
            "0.0.0.0/24",
            "0.0.0.0/0",
            "127.0.0.0/24",
            "224.0.0.0/24",
            "240.0.0.0/24",
            "255.255.255.254/31",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs_tell_containment_and_overlap() {
        let c: Ipv4Cidr = "100.64.0.0/16".parse().unwrap();
        assert!(c.contains(Ipv4Addr::new(100, 64, 9, 9)));
        assert!(!c.contains(Ipv4Addr::new(100, 65, 0, 0)));
        assert!(c.overlaps(Ipv4Addr::new(100, 64, 1, 0), 24));
        assert!(c.overlaps(Ipv4Addr::new(100, 64, 0, 0), 10));
        assert!(!c.overlaps(Ipv4Addr::new(100, 65, 0, 0), 16));
        assert_eq!(c.to_string(), "100.64.0.0/16");
    }

    #[test]
    fn ifnames_follow_dev_valid_name() {
        for ok in ["eth0", "net1", "a", "fifteen-bytes-x"] {
            assert!(check_ifname(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "sixteen-bytes-xx"] {
            assert!(
                matches!(check_ifname(bad), Err(ConfigError::IfName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn checks_name_length_against_count() {
        let cfg = EngineConfig {
            prefix: "abcdefghijkl".into(), // 12 bytes: ids up to 999 fit
            ..Default::default()
        };
        assert!(cfg.check(0, 1000).is_ok());
        assert!(matches!(
            cfg.check(0, 1001),
            Err(ConfigError::NameTooLong { len: 16, .. })
        ));
    }

    #[test]
    fn rejects_each_bad_input() {
        let ok = EngineConfig::default();
        assert_eq!(ok.check(0, 0), Err(ConfigError::NoSlots));
        let g0 = EngineConfig {
            group: 0,
            ..Default::default()
        };
        assert_eq!(g0.check(0, 1), Err(ConfigError::GroupZero));
        let g_big = EngineConfig {
            group: 65536,
            ..Default::default()
        };
        assert_eq!(g_big.check(0, 1), Err(ConfigError::GroupTooLarge(65536)));
        let small = EngineConfig {
            ipv4_pool: "10.0.0.0/30".parse().unwrap(),
            ..Default::default()
        };
        assert!(small.check(0, 2).is_ok());
        assert!(matches!(
            small.check(0, 3),
            Err(ConfigError::PoolTooSmall { wanted: 3, .. })
        ));
        for prefix in ["", "a/b", "a b", ".x", "ab:c", "fifteen-bytes-x"] {
            let c = EngineConfig {
                prefix: prefix.into(),
                ..Default::default()
            };
            assert!(
                matches!(c.check(0, 1), Err(ConfigError::Prefix { .. })),
                "{prefix:?}"
            );
        }
        let mtu = EngineConfig {
            mtu: 1279,
            ..Default::default()
        };
        assert_eq!(mtu.check(0, 1), Err(ConfigError::Mtu(1279)));
        let jumbo = EngineConfig {
            mtu: 9000,
            ..Default::default()
        };
        assert_eq!(jumbo.check(0, 1), Err(ConfigError::MtuTooLargeForXdp(9000)));
        let jumbo_tc = EngineConfig {
            xdp_attach: CountersAttach::TcBlock,
            ..jumbo.clone()
        };
        assert!(jumbo_tc.check(0, 1).is_ok());
        let jumbo_plain = EngineConfig {
            xdp_counters: false,
            ..jumbo
        };
        assert!(jumbo_plain.check(0, 1).is_ok());
        // An attach target's own MTU is judged by the same rules.
        let daemon = EngineConfig::default();
        assert!(daemon.check_slot_mtu(1400).is_ok());
        assert!(daemon.check_slot_mtu(3506).is_ok());
        assert_eq!(daemon.check_slot_mtu(1000), Err(ConfigError::Mtu(1000)));
        assert_eq!(
            daemon.check_slot_mtu(3507),
            Err(ConfigError::MtuTooLargeForXdp(3507))
        );
        assert!(jumbo_tc.check_slot_mtu(9000).is_ok());
    }

    #[test]
    fn a_microvm_pool_needs_xdp_on_its_host_ends_and_a_tap_name_of_its_own() {
        use crate::microvm::{SlotKind, TapConfig};
        let microvm = |tap: TapConfig| EngineConfig {
            kind: SlotKind::Microvm(tap),
            ..Default::default()
        };
        assert_eq!(microvm(TapConfig::default()).check(0, 1), Ok(()));
        let says = |c: EngineConfig, what: &str| match c.check(0, 1) {
            Err(ConfigError::Tap(why)) => assert!(why.contains(what), "{why}"),
            other => panic!("{other:?}"),
        };
        let tc = EngineConfig {
            xdp_attach: CountersAttach::TcBlock,
            ..microvm(TapConfig::default())
        };
        says(tc, "need the XDP counters");
        let c = EngineConfig {
            xdp_counters: false,
            ..microvm(TapConfig::default())
        };
        says(c, "need the XDP counters");
        let eth0 = TapConfig {
            name: "eth0".into(),
            ..TapConfig::default()
        };
        says(microvm(eth0), "cannot be named");
        let no_id = TapConfig {
            owner: Some(u32::MAX),
            ..TapConfig::default()
        };
        says(microvm(no_id), "no id");
        let long = TapConfig {
            name: "a-tap-name-too-long".into(),
            ..TapConfig::default()
        };
        assert!(matches!(
            microvm(long).check(0, 1),
            Err(ConfigError::IfName { .. })
        ));
    }
}
