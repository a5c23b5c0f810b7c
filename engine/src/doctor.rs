//! doctor: the host's kernel-state limits that N slots run into: reading each one, and
//! judging it (ok / warn / fail) with what breaks at N and the setting that fixes it.
//!
//! Two halves. [`Readings::read`] only reads (sysctls, /proc/self/limits, one netlink
//! dump of the neighbour tables, /proc/self/mountinfo, /proc/kallsyms, and two probes that
//! create nothing visible: an `NS_GET_ID` ioctl and an io_uring instance that is closed at
//! once). [`judge`] is pure: readings and N in, one [`Check`] per limit out, so every
//! verdict rule is unit-tested without a kernel.
//!
//! Where a value is per namespace or per process, it is the one of the namespace and the
//! process doctor runs in: run it where `netslot up` will run (same network namespace,
//! same shell or unit, so the same RLIMIT_NOFILE).
//!
//! Fix values: what N needs is `needed`; a fix for a count limit sets twice that (room for
//! other users of the same limit and for churn), except `gc_thresh2`, set to `needed`
//! itself (it is where forced garbage collection starts, not a cap).

use std::io;
use std::path::Path;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::neighbour_table::{
    NeighbourTableAttribute, NeighbourTableHeader, NeighbourTableMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use serde::Serialize;

/// File descriptors `netslot up` holds per slot until it finishes: the socket that keeps
/// the pooled namespace alive and the namespace's nsfs fd, opened to pin it. Measured in
/// a private network and mount namespace: `prlimit --nofile=610:610 netslot up --slots
/// 300` fails every slot (EMFILE creating the ownership record), 620 is enough; 600
/// slots need at most 1220.
pub const FDS_PER_SLOT: u64 = 2;
/// File descriptors `netslot up` holds whatever N is (stdio, the host socket, the ring,
/// the BPF program and map, the record and lock files): about 20 in the measurement
/// above, with room for `--hold` and the daemon's extra sockets.
pub const FDS_BASE: u64 = 64;
/// Neighbour entries per slot that exchanges traffic: the host end's entry for the slot's
/// address (host namespace) and the slot's entry for its gateway (slot namespace). Both
/// are in the one IPv4 neighbour table that every namespace shares.
pub const NEIGH_PER_SLOT: u64 = 2;
/// The oldest kernel netslot supports (`NS_GET_ID` on network namespaces, io_uring ops).
pub const MIN_KERNEL: (u32, u32) = (6, 18);
/// Since this release BPF maps and programs are charged to the memory cgroup, not to
/// RLIMIT_MEMLOCK.
pub const MEMCG_BPF_KERNEL: (u32, u32) = (5, 11);
/// Since this release `net.ipv6.route.max_size` only triggers garbage collection of
/// IPv6 route cache entries; no route allocation fails on it.
pub const IPV6_MAX_SIZE_SOFT_KERNEL: (u32, u32) = (6, 3);
/// Fallback devices that tunnel drivers create in each new namespace while
/// `net.core.fb_tunnels_only_for_init_net` is 0.
pub const FALLBACK_TUNNELS: [&str; 9] = [
    "tunl0", "gre0", "gretap0", "erspan0", "ip_vti0", "sit0", "ip6tnl0", "ip6gre0", "ip6_vti0",
];
/// Where bpffs must be mounted for `netslot up` to pin counters and `stats` to read them.
pub const BPFFS: &str = "/sys/fs/bpf";

/// How a limit compares with what N slots need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Enough for N.
    Ok,
    /// Nothing fails outright, but something degrades or fails for others.
    Warn,
    /// An operation of `netslot up`, or traffic of the slots, fails at N.
    Fail,
}

impl Verdict {
    /// The word printed for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// One limit judged against N.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// The limit (a sysctl name, or a short name for non-sysctl limits).
    pub name: &'static str,
    /// Its current value (a number, or text when it is not a number or was not read).
    pub value: serde_json::Value,
    /// What N slots need of it (a number, or text).
    pub needed: serde_json::Value,
    /// The verdict.
    pub verdict: Verdict,
    /// What breaks when it is short at N (for an ok check: what would break).
    pub breaks: String,
    /// The command or setting that fixes it; None when ok.
    pub fix: Option<String>,
}

/// The IPv4 neighbour table (`arp_cache`): one for every namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighTable {
    /// `gc_thresh1`: below it the periodic GC leaves entries alone.
    pub thresh1: u32,
    /// `gc_thresh2`: above it every new entry runs a forced GC (at most every 5 s).
    pub thresh2: u32,
    /// `gc_thresh3`: a table holding this many GC-able entries refuses the next one.
    pub thresh3: u32,
    /// Entries now, all namespaces together.
    pub entries: u32,
}

/// Connection tracking, when the kernel has it (built in or module loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conntrack {
    /// `nf_conntrack_max`: one global cap applied to each namespace's own count.
    pub max: u64,
    /// `nf_conntrack_buckets`: the one hash table of all namespaces.
    pub buckets: u64,
    /// `nf_conntrack_count` of doctor's namespace.
    pub count: u64,
}

/// A resource limit (soft, hard); None is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// The limit in force.
    pub soft: Option<u64>,
    /// The ceiling an unprivileged process may raise the soft limit to.
    pub hard: Option<u64>,
}

/// How the kernel provides veth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VethSupport {
    /// Its code is in the running kernel (built in, or module loaded): /proc/kallsyms.
    InKernel,
    /// A module the kernel loads on the first veth request: modules.dep lists it.
    Module,
    /// Neither.
    Missing,
}

/// Everything doctor reads. `None` is "could not be read", with no guess.
#[derive(Debug, Clone)]
pub struct Readings {
    /// /proc/sys/kernel/osrelease.
    pub kernel_release: String,
    /// Parsed (major, minor) of the release.
    pub kernel: Option<(u32, u32)>,
    /// `arp_cache` as RTM_GETNEIGHTBL reports it.
    pub neigh: Option<NeighTable>,
    /// None: no connection tracking in this kernel.
    pub conntrack: Option<Conntrack>,
    /// RLIMIT_NOFILE of this process.
    pub nofile: Option<Rlimit>,
    /// `fs.nr_open`.
    pub nr_open: Option<u64>,
    /// `fs.file-max`.
    pub file_max: Option<u64>,
    /// Files allocated now (first field of `fs.file-nr`).
    pub files_allocated: Option<u64>,
    /// `user.max_net_namespaces` of this process's user namespace.
    pub max_net_namespaces: Option<u64>,
    /// Network namespaces in the kernel now: active `net_namespace` objects in
    /// /proc/slabinfo (an upper bound: it includes namespaces being destroyed and slab
    /// objects cached per CPU).
    pub net_namespaces: Option<u64>,
    /// RLIMIT_MEMLOCK of this process.
    pub memlock: Option<Rlimit>,
    /// Whether bpffs is mounted at [`BPFFS`] in this mount namespace.
    pub bpffs_mounted: bool,
    /// `net.core.fb_tunnels_only_for_init_net` (None: not visible from this network
    /// namespace, the kernel shows it in the initial one only).
    pub fb_tunnels_only_for_init_net: Option<u32>,
    /// Fallback tunnel devices present in this network namespace.
    pub fallback_devices: Vec<String>,
    /// `net.ipv6.route.max_size` (per namespace); None without IPv6.
    pub ipv6_route_max_size: Option<u64>,
    /// Result of `NS_GET_ID` on this thread's network namespace.
    pub ns_get_id: Result<u64, String>,
    /// `kernel.io_uring_disabled`.
    pub io_uring_disabled: Option<u32>,
    /// Result of creating (and closing) an io_uring instance.
    pub io_uring_probe: Result<(), String>,
    /// veth.
    pub veth: VethSupport,
}

impl Readings {
    /// Reads every limit, in the calling thread's network namespace and this process.
    /// Changes nothing.
    pub fn read() -> Self {
        let kernel_release = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default();
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        Readings {
            kernel: parse_release(&kernel_release),
            kernel_release,
            neigh: read_neigh_table().ok(),
            conntrack: read_conntrack(),
            nofile: parse_limits(&limits, "Max open files"),
            nr_open: read_u64("/proc/sys/fs/nr_open"),
            file_max: read_u64("/proc/sys/fs/file-max"),
            files_allocated: read_trimmed("/proc/sys/fs/file-nr")
                .and_then(|s| s.split_whitespace().next()?.parse().ok()),
            max_net_namespaces: read_u64("/proc/sys/user/max_net_namespaces"),
            net_namespaces: std::fs::read_to_string("/proc/slabinfo")
                .ok()
                .and_then(|s| parse_slabinfo(&s, "net_namespace")),
            memlock: parse_limits(&limits, "Max locked memory"),
            bpffs_mounted: std::fs::read_to_string("/proc/self/mountinfo")
                .is_ok_and(|m| mountinfo_has(&m, BPFFS, "bpf")),
            fb_tunnels_only_for_init_net: read_u64(
                "/proc/sys/net/core/fb_tunnels_only_for_init_net",
            )
            .and_then(|v| u32::try_from(v).ok()),
            fallback_devices: FALLBACK_TUNNELS
                .iter()
                .filter(|d| Path::new("/sys/class/net").join(d).exists())
                .map(|d| d.to_string())
                .collect(),
            ipv6_route_max_size: read_u64("/proc/sys/net/ipv6/route/max_size"),
            ns_get_id: crate::netns::open_current()
                .and_then(|fd| crate::netns::ns_id(std::os::fd::AsFd::as_fd(&fd)))
                .map_err(|e| e.to_string()),
            io_uring_disabled: read_u64("/proc/sys/kernel/io_uring_disabled")
                .and_then(|v| u32::try_from(v).ok()),
            io_uring_probe: io_uring::IoUring::new(2)
                .map(drop)
                .map_err(|e| e.to_string()),
            veth: read_veth(),
        }
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn read_u64(path: &str) -> Option<u64> {
    read_trimmed(path)?.parse().ok()
}

/// (major, minor) of a kernel release such as "6.18.44-fc".
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// One line of /proc/self/limits ("Max open files  1024  4096  files").
pub fn parse_limits(text: &str, what: &str) -> Option<Rlimit> {
    let rest = text.lines().find_map(|l| l.strip_prefix(what))?;
    let mut fields = rest.split_whitespace();
    let parse = |f: Option<&str>| -> Option<Option<u64>> {
        match f? {
            "unlimited" => Some(None),
            n => n.parse().ok().map(Some),
        }
    };
    Some(Rlimit {
        soft: parse(fields.next())?,
        hard: parse(fields.next())?,
    })
}

/// Active objects of slab cache `cache` in /proc/slabinfo.
pub fn parse_slabinfo(text: &str, cache: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == cache).then_some(())?;
        f.next()?.parse().ok()
    })
}

/// Whether /proc/self/mountinfo shows a filesystem of type `fstype` mounted at `point`
/// (the last such mount is the one visible).
pub fn mountinfo_has(text: &str, point: &str, fstype: &str) -> bool {
    let mut visible = false;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.get(4) == Some(&point) {
            visible = fields.get(sep + 1) == Some(&fstype);
        }
    }
    visible
}

fn read_conntrack() -> Option<Conntrack> {
    let max = read_u64("/proc/sys/net/netfilter/nf_conntrack_max")?;
    Some(Conntrack {
        max,
        buckets: read_u64("/proc/sys/net/netfilter/nf_conntrack_buckets").unwrap_or(0),
        count: read_u64("/proc/sys/net/netfilter/nf_conntrack_count").unwrap_or(0),
    })
}

fn read_veth() -> VethSupport {
    use std::io::BufRead;
    if Path::new("/sys/module/veth").exists() {
        return VethSupport::InKernel;
    }
    // A built-in driver without module parameters has no /sys/module entry; its symbols
    // are in kallsyms all the same (names are shown even where addresses are hidden).
    if let Ok(f) = std::fs::File::open("/proc/kallsyms") {
        let found = io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.ends_with(" veth_newlink") || l.contains(" veth_newlink\t"));
        if found {
            return VethSupport::InKernel;
        }
    }
    let release = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default();
    let dep = std::fs::read_to_string(format!("/lib/modules/{release}/modules.dep"));
    if dep.is_ok_and(|d| d.lines().any(|l| l.contains("/veth.ko"))) {
        return VethSupport::Module;
    }
    VethSupport::Missing
}

/// The IPv4 neighbour table's thresholds and entry count (RTM_GETNEIGHTBL dump, what
/// `ip ntable show name arp_cache` prints). The table is global, so this works from any
/// network namespace, unlike the `gc_thresh` sysctls, which only the initial namespace
/// shows.
fn read_neigh_table() -> io::Result<NeighTable> {
    let sock = crate::sock::slot_socket()?;
    // NeighbourTableMessage is non_exhaustive: no struct literal outside its crate.
    let mut msg = NeighbourTableMessage::default();
    msg.header = NeighbourTableHeader {
        family: AddressFamily::Inet,
    };
    let mut seq = 0;
    let replies = crate::sock::dump(
        &sock,
        RouteNetlinkMessage::GetNeighbourTable(msg),
        &mut || {
            seq += 1;
            seq
        },
    )?;
    for bytes in &replies {
        let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) else {
            continue;
        };
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbourTable(t)) = m.payload
        else {
            continue;
        };
        let mut name = None;
        let (mut t1, mut t2, mut t3, mut entries) = (None, None, None, None);
        for a in &t.attributes {
            match a {
                NeighbourTableAttribute::Name(n) => name = Some(n.as_str()),
                NeighbourTableAttribute::Threshold1(v) => t1 = Some(*v),
                NeighbourTableAttribute::Threshold2(v) => t2 = Some(*v),
                NeighbourTableAttribute::Threshold3(v) => t3 = Some(*v),
                NeighbourTableAttribute::Config(c) => entries = Some(c.entries),
                _ => {}
            }
        }
        if name == Some("arp_cache") {
            if let (Some(thresh1), Some(thresh2), Some(thresh3), Some(entries)) =
                (t1, t2, t3, entries)
            {
                return Ok(NeighTable {
                    thresh1,
                    thresh2,
                    thresh3,
                    entries,
                });
            }
        }
    }
    Err(io::Error::other(
        "no arp_cache table in the RTM_GETNEIGHTBL dump",
    ))
}

/// Every check, in a fixed order.
pub fn judge(r: &Readings, slots: u64) -> Vec<Check> {
    vec![
        kernel_version(&r.kernel_release, r.kernel),
        ns_get_id(&r.ns_get_id),
        io_uring(r.io_uring_disabled, &r.io_uring_probe),
        veth(&r.veth),
        bpffs(r.bpffs_mounted),
        neigh_thresh3(r.neigh, slots),
        neigh_thresh2(r.neigh, slots),
        neigh_thresh1(r.neigh),
        conntrack_max(r.conntrack, slots),
        conntrack_buckets(r.conntrack, slots),
        nofile(r.nofile, slots),
        nr_open(r.nr_open, slots),
        file_max(r.file_max, r.files_allocated, slots),
        net_namespaces(r.max_net_namespaces, r.net_namespaces, slots),
        memlock(r.memlock, r.kernel),
        fb_tunnels(r.fb_tunnels_only_for_init_net, &r.fallback_devices),
        ipv6_route_max_size(r.ipv6_route_max_size, r.kernel),
    ]
}

/// Whether any check is not ok (the CLI's exit code 1).
pub fn any_problem(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.verdict != Verdict::Ok)
}

fn num(v: u64) -> serde_json::Value {
    serde_json::Value::from(v)
}

fn text(s: impl Into<String>) -> serde_json::Value {
    serde_json::Value::String(s.into())
}

fn unread(name: &'static str, what: &str, breaks: &str) -> Check {
    Check {
        name,
        value: text("unreadable"),
        needed: text("?"),
        verdict: Verdict::Warn,
        breaks: breaks.to_owned(),
        fix: Some(format!("cannot read {what}: run doctor as root")),
    }
}

/// Linux >= 6.18.
pub fn kernel_version(release: &str, kernel: Option<(u32, u32)>) -> Check {
    let ok = kernel.is_some_and(|k| k >= MIN_KERNEL);
    Check {
        name: "kernel",
        value: text(release),
        needed: text(format!(">= {}.{}", MIN_KERNEL.0, MIN_KERNEL.1)),
        verdict: if ok { Verdict::Ok } else { Verdict::Fail },
        breaks: "netslot relies on interfaces of Linux 6.18 (nsfs NS_GET_ID on network namespaces, the io_uring operations it sends); older kernels refuse them".into(),
        fix: (!ok).then(|| format!("boot Linux {}.{} or newer", MIN_KERNEL.0, MIN_KERNEL.1)),
    }
}

/// nsfs `NS_GET_ID` answers on a network namespace.
pub fn ns_get_id(probe: &Result<u64, String>) -> Check {
    Check {
        name: "nsfs NS_GET_ID",
        value: match probe {
            Ok(id) => text(format!("works (this namespace's id is {id})")),
            Err(e) => text(format!("fails: {e}")),
        },
        needed: text("works"),
        verdict: if probe.is_ok() { Verdict::Ok } else { Verdict::Fail },
        breaks: "pool records and every ownership check identify namespaces by this id; without it up, down, gc and status refuse to run".into(),
        fix: probe.is_err().then(|| "boot a kernel with NS_GET_ID for network namespaces (Linux 6.18 or newer)".into()),
    }
}

/// io_uring can be used by this process.
pub fn io_uring(disabled: Option<u32>, probe: &Result<(), String>) -> Check {
    let value = match (disabled, probe) {
        (Some(d), Ok(())) => format!("kernel.io_uring_disabled={d}, io_uring_setup works"),
        (Some(d), Err(e)) => format!("kernel.io_uring_disabled={d}, io_uring_setup fails: {e}"),
        (None, Ok(())) => "io_uring_setup works".to_owned(),
        (None, Err(e)) => format!("io_uring_setup fails: {e}"),
    };
    let fix = probe.is_err().then(|| match disabled {
        Some(d) if d > 0 => "sysctl -w kernel.io_uring_disabled=0".to_owned(),
        _ => "boot a kernel with io_uring (CONFIG_IO_URING=y)".to_owned(),
    });
    Check {
        name: "kernel.io_uring_disabled",
        value: text(value),
        needed: text("0 (or 1 for a process with CAP_SYS_ADMIN); io_uring_setup must work"),
        verdict: if probe.is_ok() { Verdict::Ok } else { Verdict::Fail },
        breaks: "every netlink send and receive of up and down goes through io_uring: without it no slot is made".into(),
        fix,
    }
}

/// The veth driver is in the kernel or loadable.
pub fn veth(support: &VethSupport) -> Check {
    let (value, verdict) = match support {
        VethSupport::InKernel => ("in the running kernel", Verdict::Ok),
        VethSupport::Module => ("module, loaded on first use", Verdict::Ok),
        VethSupport::Missing => ("not found", Verdict::Fail),
    };
    Check {
        name: "veth",
        value: text(value),
        needed: text("in the kernel or loadable"),
        verdict,
        breaks: "creating each slot's veth pair fails (EOPNOTSUPP): no slot is made".into(),
        fix: (verdict != Verdict::Ok)
            .then(|| "build the kernel with CONFIG_VETH, or install its veth module".into()),
    }
}

/// bpffs at /sys/fs/bpf.
pub fn bpffs(mounted: bool) -> Check {
    Check {
        name: "bpffs",
        value: text(if mounted {
            format!("mounted at {BPFFS}")
        } else {
            format!("not mounted at {BPFFS}")
        }),
        needed: text(format!("mounted at {BPFFS}")),
        verdict: if mounted { Verdict::Ok } else { Verdict::Fail },
        breaks: format!("up cannot pin the counters program and map under {BPFFS}/netslot, so the per-slot counters do not outlive up and stats has nothing to read"),
        fix: (!mounted).then(|| format!("mount -t bpf bpf {BPFFS}")),
    }
}

/// Neighbour entries N busy slots need, with what the table holds already.
pub fn neigh_needed(t: &NeighTable, slots: u64) -> u64 {
    u64::from(t.entries) + NEIGH_PER_SLOT * slots
}

const NEIGH_SHARED: &str = "the IPv4 neighbour table is one for all namespaces: its thresholds are global and it counts the entries of the host and of every slot";

/// `gc_thresh3`: the hard cap.
pub fn neigh_thresh3(t: Option<NeighTable>, slots: u64) -> Check {
    let name = "net.ipv4.neigh.default.gc_thresh3";
    let breaks = format!("past it, new neighbour entries are refused (ENOBUFS, \"neighbor table overflow!\" in the kernel log) unless forced GC frees entries idle for 5 s: slots whose neighbour is not resolved yet get no traffic through ({NEIGH_SHARED})");
    let Some(t) = t else {
        return unread(name, "the neighbour table (RTM_GETNEIGHTBL)", &breaks);
    };
    let needed = neigh_needed(&t, slots);
    let short = needed > u64::from(t.thresh3);
    Check {
        name,
        value: num(u64::from(t.thresh3)),
        needed: num(needed),
        verdict: if short { Verdict::Fail } else { Verdict::Ok },
        breaks: format!(
            "{} entries now + {NEIGH_PER_SLOT} per busy slot; {breaks}",
            t.entries
        ),
        fix: short.then(|| format!("sysctl -w {name}={}", 2 * needed)),
    }
}

/// `gc_thresh2`: where forced GC starts.
pub fn neigh_thresh2(t: Option<NeighTable>, slots: u64) -> Check {
    let name = "net.ipv4.neigh.default.gc_thresh2";
    let breaks = format!("above it, creating an entry runs a forced GC (at most every 5 s) that drops entries idle for 5 s: their slots re-resolve (ARP) before the next packet ({NEIGH_SHARED})");
    let Some(t) = t else {
        return unread(name, "the neighbour table (RTM_GETNEIGHTBL)", &breaks);
    };
    let needed = neigh_needed(&t, slots);
    let short = needed > u64::from(t.thresh2);
    Check {
        name,
        value: num(u64::from(t.thresh2)),
        needed: num(needed),
        verdict: if short { Verdict::Warn } else { Verdict::Ok },
        breaks,
        fix: short.then(|| format!("sysctl -w {name}={needed}")),
    }
}

/// `gc_thresh1`: informational, nothing fails on it.
pub fn neigh_thresh1(t: Option<NeighTable>) -> Check {
    let name = "net.ipv4.neigh.default.gc_thresh1";
    let breaks = "nothing fails: below it the periodic GC leaves entries alone".to_owned();
    let Some(t) = t else {
        return unread(name, "the neighbour table (RTM_GETNEIGHTBL)", &breaks);
    };
    Check {
        name,
        value: num(u64::from(t.thresh1)),
        needed: text("any"),
        verdict: Verdict::Ok,
        breaks,
        fix: None,
    }
}

/// `nf_conntrack_max`: one global cap, compared with each namespace's own count; the host
/// namespace sees one flow per busy slot.
pub fn conntrack_max(ct: Option<Conntrack>, slots: u64) -> Check {
    let name = "net.netfilter.nf_conntrack_max";
    let Some(ct) = ct else {
        return not_loaded(name);
    };
    let needed = ct.count + slots;
    let short = needed > ct.max;
    Check {
        name,
        value: num(ct.max),
        needed: num(needed),
        verdict: if short { Verdict::Fail } else { Verdict::Ok },
        breaks: format!("{} tracked now in this namespace + 1 flow per busy slot; where connections are tracked (NAT or stateful rules), a namespace past it drops the first packet of each new flow (\"nf_conntrack: table full, dropping packet\")", ct.count),
        fix: short.then(|| format!("sysctl -w {name}={}", 2 * needed)),
    }
}

/// `nf_conntrack_buckets`: the one hash table of every namespace's entries.
pub fn conntrack_buckets(ct: Option<Conntrack>, slots: u64) -> Check {
    let name = "net.netfilter.nf_conntrack_buckets";
    let Some(ct) = ct else {
        return not_loaded(name);
    };
    let needed = ct.count + 2 * slots;
    let short = needed > ct.buckets;
    Check {
        name,
        value: num(ct.buckets),
        needed: num(needed),
        verdict: if short { Verdict::Warn } else { Verdict::Ok },
        breaks: "one flow per busy slot tracked in the host namespace and in the slot: more entries than buckets means every packet's lookup walks a chain longer than 1 (CPU per packet, no drops)".into(),
        fix: short.then(|| format!("sysctl -w {name}={}", needed.next_power_of_two())),
    }
}

fn not_loaded(name: &'static str) -> Check {
    Check {
        name,
        value: text("not loaded"),
        needed: text("-"),
        verdict: Verdict::Ok,
        breaks: "nothing: connection tracking (nf_conntrack) is not loaded".into(),
        fix: None,
    }
}

/// File descriptors `netslot up` holds at once for N slots.
pub fn fds_needed(slots: u64) -> u64 {
    FDS_PER_SLOT * slots + FDS_BASE
}

/// RLIMIT_NOFILE of the process doctor runs in.
pub fn nofile(limit: Option<Rlimit>, slots: u64) -> Check {
    let name = "RLIMIT_NOFILE";
    let breaks = format!("up holds {FDS_PER_SLOT} fds per slot + {FDS_BASE} until it finishes; past the soft limit it runs out of fds (EMFILE): slots fail where creating their namespace fails, and every slot fails when writing the ownership record does (read from this process: run doctor from the shell or unit that runs netslot up)");
    let Some(l) = limit else {
        return unread(name, "/proc/self/limits", &breaks);
    };
    let needed = fds_needed(slots);
    let short = l.soft.is_some_and(|s| s < needed);
    let show = |v: Option<u64>| v.map_or("unlimited".to_owned(), |v| v.to_string());
    Check {
        name,
        value: text(format!("soft {}, hard {}", show(l.soft), show(l.hard))),
        needed: num(needed),
        verdict: if short { Verdict::Fail } else { Verdict::Ok },
        breaks,
        fix: short.then(|| {
            let v = 2 * needed;
            format!("ulimit -n {v} in the shell that runs netslot up (LimitNOFILE={v} in a systemd unit)")
        }),
    }
}

/// `fs.nr_open`: the ceiling of any RLIMIT_NOFILE.
pub fn nr_open(value: Option<u64>, slots: u64) -> Check {
    let name = "fs.nr_open";
    let breaks = "no process can raise RLIMIT_NOFILE above it (setrlimit fails with EPERM), so ulimit -n cannot reach what up needs".to_owned();
    let Some(v) = value else {
        return unread(name, "/proc/sys/fs/nr_open", &breaks);
    };
    // The RLIMIT_NOFILE fix asks for twice the need: that must fit too.
    let needed = 2 * fds_needed(slots);
    let short = needed > v;
    Check {
        name,
        value: num(v),
        needed: num(needed),
        verdict: if short { Verdict::Fail } else { Verdict::Ok },
        breaks,
        fix: short.then(|| format!("sysctl -w {name}={needed}")),
    }
}

/// `fs.file-max`: open files of the whole system. Root (CAP_SYS_ADMIN) may exceed it.
pub fn file_max(value: Option<u64>, allocated: Option<u64>, slots: u64) -> Check {
    let name = "fs.file-max";
    let breaks = "system-wide open files: netslot (CAP_SYS_ADMIN) may go past it, but while it does every unprivileged process's open, socket and pipe fails with ENFILE".to_owned();
    let (Some(v), Some(allocated)) = (value, allocated) else {
        return unread(name, "/proc/sys/fs/file-max and file-nr", &breaks);
    };
    let needed = allocated + fds_needed(slots);
    let short = needed > v;
    Check {
        name,
        value: num(v),
        needed: num(needed),
        verdict: if short { Verdict::Warn } else { Verdict::Ok },
        breaks: format!("{allocated} files open now + what up holds; {breaks}"),
        fix: short.then(|| format!("sysctl -w {name}={}", 2 * needed)),
    }
}

/// `user.max_net_namespaces` against the namespaces that exist and N more.
pub fn net_namespaces(max: Option<u64>, current: Option<u64>, slots: u64) -> Check {
    let name = "user.max_net_namespaces";
    let breaks = "past it, creating a slot's namespace fails with ENOSPC and that slot fails (the limit is this user namespace's; those of its ancestors apply too)".to_owned();
    let Some(max) = max else {
        return unread(name, "/proc/sys/user/max_net_namespaces", &breaks);
    };
    let (needed, breaks) = match current {
        Some(c) => (
            c + slots,
            format!("{c} network namespaces now (at most: /proc/slabinfo active net_namespace objects) + 1 per slot; {breaks}"),
        ),
        None => (
            slots,
            format!("namespaces now not counted (/proc/slabinfo unreadable), 1 per slot; {breaks}"),
        ),
    };
    let short = needed > max;
    Check {
        name,
        value: num(max),
        needed: num(needed),
        verdict: if short { Verdict::Fail } else { Verdict::Ok },
        breaks,
        fix: short.then(|| format!("sysctl -w {name}={}", 2 * needed)),
    }
}

/// RLIMIT_MEMLOCK: irrelevant for BPF since memcg accounting (5.11).
pub fn memlock(limit: Option<Rlimit>, kernel: Option<(u32, u32)>) -> Check {
    let name = "RLIMIT_MEMLOCK";
    let shown = match limit {
        Some(Rlimit { soft: Some(s), .. }) => text(format!("{s} bytes")),
        Some(Rlimit { soft: None, .. }) => text("unlimited"),
        None => text("unreadable"),
    };
    let memcg = kernel.is_some_and(|k| k >= MEMCG_BPF_KERNEL);
    if memcg {
        return Check {
            name,
            value: shown,
            needed: text("any"),
            verdict: Verdict::Ok,
            breaks: format!("nothing on this kernel: since Linux {}.{} BPF maps and programs are charged to the memory cgroup, not to RLIMIT_MEMLOCK", MEMCG_BPF_KERNEL.0, MEMCG_BPF_KERNEL.1),
            fix: None,
        };
    }
    let unlimited = matches!(limit, Some(Rlimit { soft: None, .. }));
    Check {
        name,
        value: shown,
        needed: text("unlimited"),
        verdict: if unlimited { Verdict::Ok } else { Verdict::Warn },
        breaks: "before Linux 5.11 BPF maps and programs count against RLIMIT_MEMLOCK: loading the counters program and map can fail with EPERM".into(),
        fix: (!unlimited).then(|| "ulimit -l unlimited in the shell that runs netslot up".into()),
    }
}

/// `net.core.fb_tunnels_only_for_init_net`: fallback tunnel devices in every namespace.
pub fn fb_tunnels(value: Option<u32>, fallback_here: &[String]) -> Check {
    let name = "net.core.fb_tunnels_only_for_init_net";
    let devices = if fallback_here.is_empty() {
        "none here".to_owned()
    } else {
        fallback_here.join(" ")
    };
    let (shown, verdict) = match value {
        Some(v) if v >= 1 => (format!("{v}"), Verdict::Ok),
        Some(v) if fallback_here.is_empty() => (
            format!("{v} (no fallback tunnel devices: no tunnel driver loaded)"),
            Verdict::Ok,
        ),
        Some(v) => (format!("{v} (fallback devices: {devices})"), Verdict::Warn),
        // The kernel shows this sysctl in the initial namespace only; in another one, the
        // devices it got at creation tell.
        None if fallback_here.is_empty() => (
            "not visible from this namespace; it got no fallback tunnel devices".to_owned(),
            Verdict::Ok,
        ),
        None => (
            format!("not visible from this namespace; it got fallback devices: {devices}"),
            Verdict::Warn,
        ),
    };
    Check {
        name,
        value: text(shown),
        needed: text("1, or no tunnel driver loaded"),
        verdict,
        breaks: "at 0, each new slot namespace also gets a fallback device of every loaded tunnel driver (tunl0, gre0, sit0, ip6tnl0, ...): more devices, memory and RTNL time per slot, and as many to destroy at down".into(),
        fix: (verdict != Verdict::Ok).then(|| format!("sysctl -w {name}=1")),
    }
}

/// `net.ipv6.route.max_size`: a GC trigger only, since 6.3.
pub fn ipv6_route_max_size(value: Option<u64>, kernel: Option<(u32, u32)>) -> Check {
    let name = "net.ipv6.route.max_size";
    let Some(v) = value else {
        return Check {
            name,
            value: text("no IPv6"),
            needed: text("-"),
            verdict: Verdict::Ok,
            breaks: "nothing: IPv6 is off".into(),
            fix: None,
        };
    };
    let soft = kernel.is_some_and(|k| k >= IPV6_MAX_SIZE_SOFT_KERNEL);
    let (verdict, breaks) = if soft {
        (Verdict::Ok, format!("nothing fails on this kernel: since Linux {}.{} it only triggers GC of IPv6 route cache entries (netslot turns IPv6 off on host ends)", IPV6_MAX_SIZE_SOFT_KERNEL.0, IPV6_MAX_SIZE_SOFT_KERNEL.1))
    } else if v >= 4096 {
        (
            Verdict::Ok,
            "before Linux 6.3, IPv6 route cache entries past it fail with ENOMEM".into(),
        )
    } else {
        (Verdict::Warn, "before Linux 6.3, IPv6 route cache entries past it fail with ENOMEM: IPv6 traffic of the slots is dropped".into())
    };
    Check {
        name,
        value: num(v),
        needed: text(if soft { "any" } else { ">= 4096" }),
        verdict,
        breaks,
        fix: (verdict != Verdict::Ok).then(|| format!("sysctl -w {name}=2147483647")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(thresh3: u32, entries: u32) -> NeighTable {
        NeighTable {
            thresh1: 128,
            thresh2: 512,
            thresh3,
            entries,
        }
    }

    #[test]
    fn thresh3_fails_only_past_the_cap() {
        // 2 entries now + 2 per slot: 511 slots need 1024.
        let at = neigh_thresh3(Some(table(1024, 2)), 511);
        assert_eq!((at.verdict, at.needed.as_u64()), (Verdict::Ok, Some(1024)));
        assert_eq!(at.fix, None);
        let below = neigh_thresh3(Some(table(1024, 2)), 510);
        assert_eq!(below.verdict, Verdict::Ok);
        let above = neigh_thresh3(Some(table(1024, 2)), 512);
        assert_eq!(
            (above.verdict, above.needed.as_u64()),
            (Verdict::Fail, Some(1026))
        );
        assert_eq!(
            above.fix.as_deref(),
            Some("sysctl -w net.ipv4.neigh.default.gc_thresh3=2052")
        );
        assert_eq!(neigh_thresh3(None, 1).verdict, Verdict::Warn);
    }

    #[test]
    fn thresh2_warns_past_it_and_fixes_to_the_need() {
        let t = table(1024, 0);
        assert_eq!(neigh_thresh2(Some(t), 256).verdict, Verdict::Ok);
        assert_eq!(neigh_thresh2(Some(t), 255).verdict, Verdict::Ok);
        let above = neigh_thresh2(Some(t), 257);
        assert_eq!(above.verdict, Verdict::Warn);
        assert_eq!(
            above.fix.as_deref(),
            Some("sysctl -w net.ipv4.neigh.default.gc_thresh2=514")
        );
        assert_eq!(neigh_thresh1(Some(t)).verdict, Verdict::Ok);
    }

    #[test]
    fn conntrack_max_counts_this_namespace_and_one_flow_per_slot() {
        let ct = Conntrack {
            max: 1000,
            buckets: 1000,
            count: 10,
        };
        assert_eq!(conntrack_max(Some(ct), 990).verdict, Verdict::Ok);
        assert_eq!(conntrack_max(Some(ct), 989).verdict, Verdict::Ok);
        let above = conntrack_max(Some(ct), 991);
        assert_eq!(above.verdict, Verdict::Fail);
        assert_eq!(
            above.fix.as_deref(),
            Some("sysctl -w net.netfilter.nf_conntrack_max=2002")
        );
        let missing = conntrack_max(None, 1_000_000);
        assert_eq!(
            (missing.verdict, missing.value.as_str()),
            (Verdict::Ok, Some("not loaded"))
        );
        assert_eq!(
            conntrack_buckets(None, 1).value.as_str(),
            Some("not loaded")
        );
    }

    #[test]
    fn conntrack_buckets_warn_past_one_entry_per_bucket() {
        let ct = Conntrack {
            max: 1 << 20,
            buckets: 1000,
            count: 0,
        };
        assert_eq!(conntrack_buckets(Some(ct), 500).verdict, Verdict::Ok);
        assert_eq!(conntrack_buckets(Some(ct), 499).verdict, Verdict::Ok);
        let above = conntrack_buckets(Some(ct), 501);
        assert_eq!(above.verdict, Verdict::Warn);
        assert_eq!(
            above.fix.as_deref(),
            Some("sysctl -w net.netfilter.nf_conntrack_buckets=1024")
        );
    }

    #[test]
    fn nofile_compares_the_soft_limit() {
        let lim = |soft| {
            Some(Rlimit {
                soft: Some(soft),
                hard: Some(1 << 20),
            })
        };
        // 2 per slot + 64: 1000 slots need 2064.
        assert_eq!(nofile(lim(2064), 1000).verdict, Verdict::Ok);
        assert_eq!(nofile(lim(2065), 1000).verdict, Verdict::Ok);
        let below = nofile(lim(2063), 1000);
        assert_eq!(below.verdict, Verdict::Fail);
        assert!(below.fix.unwrap().starts_with("ulimit -n 4128 "));
        let unlimited = Rlimit {
            soft: None,
            hard: None,
        };
        assert_eq!(nofile(Some(unlimited), u64::MAX / 4).verdict, Verdict::Ok);
    }

    #[test]
    fn nr_open_must_fit_the_nofile_fix() {
        assert_eq!(nr_open(Some(4128), 1000).verdict, Verdict::Ok);
        assert_eq!(nr_open(Some(4129), 1000).verdict, Verdict::Ok);
        let below = nr_open(Some(4127), 1000);
        assert_eq!(below.verdict, Verdict::Fail);
        assert_eq!(below.fix.as_deref(), Some("sysctl -w fs.nr_open=4128"));
    }

    #[test]
    fn file_max_only_warns() {
        assert_eq!(file_max(Some(3064), Some(1000), 1000).verdict, Verdict::Ok);
        assert_eq!(file_max(Some(3065), Some(1000), 1000).verdict, Verdict::Ok);
        let below = file_max(Some(3063), Some(1000), 1000);
        assert_eq!(below.verdict, Verdict::Warn);
        assert_eq!(below.fix.as_deref(), Some("sysctl -w fs.file-max=6128"));
    }

    #[test]
    fn net_namespaces_count_what_exists() {
        assert_eq!(
            net_namespaces(Some(1010), Some(10), 1000).verdict,
            Verdict::Ok
        );
        assert_eq!(
            net_namespaces(Some(1011), Some(10), 1000).verdict,
            Verdict::Ok
        );
        let above = net_namespaces(Some(1009), Some(10), 1000);
        assert_eq!(above.verdict, Verdict::Fail);
        assert_eq!(
            above.fix.as_deref(),
            Some("sysctl -w user.max_net_namespaces=2020")
        );
        assert_eq!(net_namespaces(Some(1000), None, 1000).verdict, Verdict::Ok);
        assert_eq!(net_namespaces(Some(999), None, 1000).verdict, Verdict::Fail);
    }

    #[test]
    fn memlock_matters_only_before_memcg_accounting() {
        let zero = Some(Rlimit {
            soft: Some(0),
            hard: Some(0),
        });
        assert_eq!(memlock(zero, Some((5, 11))).verdict, Verdict::Ok);
        assert_eq!(memlock(zero, Some((6, 18))).verdict, Verdict::Ok);
        assert_eq!(memlock(zero, Some((5, 10))).verdict, Verdict::Warn);
        let unlimited = Some(Rlimit {
            soft: None,
            hard: None,
        });
        assert_eq!(memlock(unlimited, Some((5, 10))).verdict, Verdict::Ok);
    }

    #[test]
    fn fb_tunnels_warn_only_with_fallback_devices_at_zero() {
        let some = vec!["tunl0".to_owned()];
        assert_eq!(fb_tunnels(Some(1), &some).verdict, Verdict::Ok);
        assert_eq!(fb_tunnels(Some(2), &some).verdict, Verdict::Ok);
        assert_eq!(fb_tunnels(Some(0), &[]).verdict, Verdict::Ok);
        let warn = fb_tunnels(Some(0), &some);
        assert_eq!(warn.verdict, Verdict::Warn);
        assert_eq!(
            warn.fix.as_deref(),
            Some("sysctl -w net.core.fb_tunnels_only_for_init_net=1")
        );
        assert_eq!(fb_tunnels(None, &[]).verdict, Verdict::Ok);
        assert_eq!(fb_tunnels(None, &some).verdict, Verdict::Warn);
    }

    #[test]
    fn ipv6_max_size_is_soft_since_6_3() {
        assert_eq!(
            ipv6_route_max_size(Some(1), Some((6, 3))).verdict,
            Verdict::Ok
        );
        assert_eq!(
            ipv6_route_max_size(Some(1), Some((6, 2))).verdict,
            Verdict::Warn
        );
        assert_eq!(
            ipv6_route_max_size(Some(4096), Some((6, 2))).verdict,
            Verdict::Ok
        );
        assert_eq!(
            ipv6_route_max_size(Some(4095), Some((6, 2))).verdict,
            Verdict::Warn
        );
        assert_eq!(
            ipv6_route_max_size(None, Some((6, 18))).verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn kernel_features() {
        assert_eq!(kernel_version("6.18.0", Some((6, 18))).verdict, Verdict::Ok);
        assert_eq!(kernel_version("7.0.1", Some((7, 0))).verdict, Verdict::Ok);
        assert_eq!(
            kernel_version("6.17.9", Some((6, 17))).verdict,
            Verdict::Fail
        );
        assert_eq!(parse_release("6.18.44-fc-v769"), Some((6, 18)));
        assert_eq!(parse_release("7.0-rc1"), Some((7, 0)));
        assert_eq!(ns_get_id(&Ok(7)).verdict, Verdict::Ok);
        assert_eq!(ns_get_id(&Err("ENOTTY".into())).verdict, Verdict::Fail);
        assert_eq!(io_uring(Some(1), &Ok(())).verdict, Verdict::Ok);
        let off = io_uring(Some(2), &Err("EPERM".into()));
        assert_eq!(off.verdict, Verdict::Fail);
        assert_eq!(
            off.fix.as_deref(),
            Some("sysctl -w kernel.io_uring_disabled=0")
        );
        assert_eq!(veth(&VethSupport::Module).verdict, Verdict::Ok);
        assert_eq!(veth(&VethSupport::Missing).verdict, Verdict::Fail);
        assert_eq!(bpffs(true).verdict, Verdict::Ok);
        let b = bpffs(false);
        assert_eq!(b.verdict, Verdict::Fail);
        assert_eq!(b.fix.as_deref(), Some("mount -t bpf bpf /sys/fs/bpf"));
    }

    #[test]
    fn parsers() {
        let limits = "Limit  Soft Limit  Hard Limit  Units\nMax open files            64                   4096                 files     \nMax locked memory         unlimited            unlimited            bytes     \n";
        assert_eq!(
            parse_limits(limits, "Max open files"),
            Some(Rlimit {
                soft: Some(64),
                hard: Some(4096)
            })
        );
        assert_eq!(
            parse_limits(limits, "Max locked memory"),
            Some(Rlimit {
                soft: None,
                hard: None
            })
        );
        let slab = "net_namespace         28     63   4288    7    8 : tunables\n";
        assert_eq!(parse_slabinfo(slab, "net_namespace"), Some(28));
        let mi = "40 30 0:35 / /sys/fs/bpf rw,nosuid shared:14 - bpf bpf rw,mode=700\n";
        assert!(mountinfo_has(mi, "/sys/fs/bpf", "bpf"));
        let over = format!("{mi}41 40 0:40 / /sys/fs/bpf rw - tmpfs none rw\n");
        assert!(!mountinfo_has(&over, "/sys/fs/bpf", "bpf"));
        assert!(!mountinfo_has("", "/sys/fs/bpf", "bpf"));
    }

    #[test]
    fn any_problem_is_any_non_ok() {
        assert!(!any_problem(&[bpffs(true)]));
        assert!(any_problem(&[
            bpffs(true),
            neigh_thresh2(Some(table(1024, 0)), 1000)
        ]));
    }
}
