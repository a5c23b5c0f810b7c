//! tap_forwarding: the two ways of joining a microVM slot's tap and its veth end, measured
//! side by side in one run: the engine's XDP redirect, and IPv4 routing inside the slot's
//! namespace.
//!
//! Usage (root): `tap_forwarding [--k 2000] [--burst 100000] [--repeat 3] [--warmup 200]
//! [--json FILE|-]`.
//!
//! The process first moves into a private network namespace, the host namespace of the
//! pool. It provisions two microVM slots with the library (`SlotKind::Microvm`, the default
//! counters attach on the host ends) and leaves the first as the engine made it:
//!
//! - `xdp-redirect`: `tap_redirect` on `tap0` and `eth0` hands every frame to the other
//!   device; `eth0` has no address, the namespace no route.
//!
//! The second it turns into the routing layout, from a thread inside the slot's namespace,
//! with iproute2 and sysctl writes:
//!
//! - `routing`: `ip link set dev tap0 xdp off` and `ip link set dev eth0 xdp off` (building
//!   only: a routing engine would never attach them, so they are not counted), then
//!   `net.ipv4.ip_forward=1`, proxy ARP on `tap0` (the guest's ARP for its gateway) and on
//!   `eth0` (the host end's ARP for the guest), proxy delay 0 on both (else each first ARP
//!   waits up to 0.8 s in pneigh_enqueue), `ip route add <slot>/32 dev tap0` and
//!   `ip route add default via <host> dev eth0 onlink`.
//!
//! Everything else is the same in both: the namespace, the veth pair, the tap and its
//! owner, the host end with its address and its counters program, the guest's address
//! (`spec.slot_ip/31`, gateway `spec.host_ip`) and MAC.
//!
//! Then, as the guest, through each slot's tap (opened as a VMM opens it: IFF_TAP |
//! IFF_NO_PI | IFF_VNET_HDR, non-blocking, waiting in poll), it learns its gateway's MAC by
//! ARP, and per repeat and layout (the order flips every repeat):
//!
//! - ping-pong: K TCP SYNs, one at a time, to a closed port of the host end's address,
//!   each waiting for the host's RST (answering any ARP for the guest meanwhile): round trip
//!   p50 and p99, and round trips per second;
//! - burst: M TCP RSTs to a closed port written as fast as the guest can (the host answers
//!   none of them); the host namespace's TCP counts what arrives (Tcp InSegs, read from
//!   /proc/thread-self/net/snmp): frames per second the host received.
//!
//! It prints a table of medians over the repeats, each layout's per-slot requests beyond the
//! veth pair (with the RTNL each costs, from the kernel source: RTNL cannot be counted on
//! this project's VM), and with `--json` every figure as one JSON document. The slots are
//! torn down at the end; the private namespace goes with the process.

#![allow(unsafe_code)] // unshare, and the tap's TUNSETIFF and poll: each block has its SAFETY note

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use netslot::microvm::{SlotKind, TapConfig};
use netslot::{Engine, EngineConfig, Slot};
use netslot_bench::output::Machine;
use netslot_kernel_tests::guest::{self, Frame, Guest, Segment, RST, SYN, VNET_HDR_LEN};
use serde::Serialize;

/// The pool of the run (prefix, base group), inside the run's own host namespace.
const PREFIX: &str = "tf";
const GROUP: u32 = 7730;
/// The tap's owner (TUNSETOWNER), as a VMM's uid would be; the guest here opens it as root.
const VMM_UID: u32 = 4242;
/// A port nothing listens on in the host namespace: every SYN gets a RST.
const CLOSED_PORT: u16 = 9;
/// Longest wait for one answer before the round trip counts as lost.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// Most lost round trips a run tolerates.
const MAX_LOST: usize = 20;
/// Distinct frames a burst cycles through (each its own source port).
const BURST_FRAMES: u16 = 1024;

#[derive(Parser, Debug)]
#[command(about = "XDP redirect versus routing between a microVM slot's tap and veth end")]
struct Cli {
    /// Round trips per run (one SYN, wait for its RST).
    #[arg(long, default_value_t = 2000)]
    k: usize,
    /// Frames per burst run (0: no burst).
    #[arg(long, default_value_t = 100_000)]
    burst: usize,
    /// Repeats (the layouts alternate within each; the order flips every repeat).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Round trips before the first run of each layout, not recorded.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Write every figure as one JSON document to this file (`-`: standard output).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Layout {
    XdpRedirect,
    Routing,
}

impl Layout {
    const ALL: [Layout; 2] = [Layout::XdpRedirect, Layout::Routing];

    fn name(self) -> &'static str {
        match self {
            Self::XdpRedirect => "xdp-redirect",
            Self::Routing => "routing",
        }
    }
}

/// One per-slot kernel request a layout needs beyond the veth pair.
#[derive(Debug, Clone, Serialize)]
struct Request {
    /// `netlink` or `sysctl`.
    via: &'static str,
    /// The request.
    what: String,
    /// RTNL acquisitions, from the kernel source.
    rtnl: u32,
    /// Where in the kernel, and why.
    source: &'static str,
}

/// The requests `layout` needs per slot after the veth pair, for slot end `eth0`, tap `tap`,
/// guest address `slot` and gateway `host`.
fn requests(layout: Layout, tap: &str, slot: Ipv4Addr, host: Ipv4Addr) -> Vec<Request> {
    let nl = |what: String, rtnl, source| Request {
        via: "netlink",
        what,
        rtnl,
        source,
    };
    let sysctl = |what: String, rtnl, source| Request {
        via: "sysctl",
        what,
        rtnl,
        source,
    };
    match layout {
        Layout::XdpRedirect => vec![
            nl(
                format!("RTM_SETLINK {tap}: up, MTU, MAC, IPv6 address generation off, IFLA_XDP tap_redirect"),
                1,
                "rtnetlink_rcv_msg -> rtnl_setlink -> do_setlink; dev_change_xdp_fd -> tun_xdp_set",
            ),
            nl(
                "RTM_SETLINK eth0: IPv6 address generation off, IFLA_XDP tap_redirect".into(),
                1,
                "do_setlink; dev_change_xdp_fd -> veth_xdp_set (turns on eth0's NAPI, veth_enable_xdp)",
            ),
        ],
        Layout::Routing => vec![
            nl(
                format!("RTM_SETLINK {tap}: up, MTU, MAC, IPv6 address generation off"),
                1,
                "rtnl_setlink -> do_setlink",
            ),
            nl(
                "RTM_SETLINK eth0: IPv6 address generation off".into(),
                1,
                "rtnl_setlink -> do_setlink (the standard slot's Ipv6Off request)",
            ),
            nl(
                format!("RTM_NEWROUTE {slot}/32 dev {tap}"),
                1,
                "inet_rtm_newroute runs under RTNL (an IPv4 route: 1)",
            ),
            nl(
                format!("RTM_NEWROUTE default via {host} dev eth0 onlink"),
                1,
                "inet_rtm_newroute",
            ),
            sysctl(
                "net.ipv4.ip_forward=1".into(),
                1,
                "devinet_sysctl_forward: rtnl_trylock, else restart_syscall (the write retries \
                 while anyone holds RTNL); inet_forward_change walks every device of the \
                 namespace (dev_disable_lro, a netconf notification each), then rt_cache_flush",
            ),
            sysctl(
                format!("net.ipv4.conf.{tap}.proxy_arp=1"),
                0,
                "devinet_conf_proc: a netconf notification, no RTNL",
            ),
            sysctl(
                "net.ipv4.conf.eth0.proxy_arp=1".into(),
                0,
                "devinet_conf_proc",
            ),
            sysctl(
                format!("net.ipv4.neigh.{tap}.proxy_delay=0"),
                0,
                "neigh_proc_dointvec_userhz_jiffies, no RTNL; without it the guest's first ARP \
                 for its gateway is answered after up to 0.8 s (pneigh_enqueue)",
            ),
            sysctl(
                "net.ipv4.neigh.eth0.proxy_delay=0".into(),
                0,
                "as above, for the host end's first ARP for the guest",
            ),
        ],
    }
}

/// What both layouts need per slot besides these, so that the difference is what is listed.
const COMMON: &str = "both layouts also make the tap (TUNSETIFF, TUNSETOWNER, TUNSETPERSIST: \
    3 RTNL, __tun_chr_ioctl takes rtnl_lock for each) and the veth pair (1), and give the \
    host end its address (1) and a share of the group change that brings the host ends up \
    with the counters program (1/N); the standard slot sends 3 requests after its veth pair \
    (IPv6 off, address, default route: 3 RTNL)";

/// RTNL cannot be counted on this machine.
const RTNL_NOTE: &str = "RTNL per slot from the source: acquisitions were not counted, the \
    kernel of this machine refuses hardware breakpoints on kernel addresses (the watchpoint \
    the RTNL counter needs)";

/// One queue of a slot's tap, as a VMM holds it.
struct TapQueue {
    file: File,
    buf: Vec<u8>,
}

impl TapQueue {
    /// Opens tap `name` in namespace `ns`: /dev/net/tun opened in that namespace
    /// (tun_chr_open records it; TUNSETIFF finds the tap there), IFF_TAP | IFF_NO_PI |
    /// IFF_VNET_HDR as Firecracker asks, non-blocking.
    fn open(ns: BorrowedFd<'_>, name: &str) -> io::Result<Self> {
        let name = name.to_owned();
        let fd = netslot_test_support::in_netns(ns, move || -> io::Result<OwnedFd> {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open("/dev/net/tun")?;
            let mut req = [0u8; 40];
            req[..name.len()].copy_from_slice(name.as_bytes());
            let flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
            req[16..18].copy_from_slice(&flags.to_ne_bytes());
            // SAFETY: TUNSETIFF reads and writes one 40-byte struct ifreq, which `req` is;
            // the fd is open for the call.
            let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, req.as_mut_ptr()) };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(OwnedFd::from(file))
        })?;
        Ok(Self {
            file: File::from(fd),
            buf: vec![0u8; 65536],
        })
    }

    /// Writes one frame that already carries its virtio_net_hdr (see [`with_hdr`]).
    fn write(&self, frame_with_hdr: &[u8]) -> io::Result<()> {
        (&self.file).write_all(frame_with_hdr)
    }

    /// The next frame within `timeout` (its virtio_net_hdr removed), waiting in poll.
    fn read(&mut self, timeout: Duration) -> io::Result<Option<&[u8]>> {
        let mut pfd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: one pollfd, alive for the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(None)
            } else {
                Err(e)
            };
        }
        if r == 0 {
            return Ok(None);
        }
        match (&self.file).read(&mut self.buf) {
            Ok(n) if n >= VNET_HDR_LEN => Ok(Some(&self.buf[VNET_HDR_LEN..n])),
            Ok(_) => Ok(Some(&[])),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// `frame` behind a zeroed virtio_net_hdr (no offloads), as written to the tap.
fn with_hdr(frame: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; VNET_HDR_LEN];
    buf.extend_from_slice(frame);
    buf
}

/// The guest's broadcast ARP request for `target`.
fn arp_request(guest: Guest, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&guest.mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&guest.mac);
    f.extend_from_slice(&guest.ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// The sender MAC of an ARP reply from `from` (guest::parse reads requests only).
fn arp_reply_from(f: &[u8], from: Ipv4Addr) -> Option<[u8; 6]> {
    let p = f.get(14..42)?;
    if f[12..14] != [0x08, 0x06] || p[6..8] != [0, 2] || p[14..18] != from.octets() {
        return None;
    }
    p[8..14].try_into().ok()
}

/// One guest: its tap, identity and gateway, and the source ports it has used.
struct GuestSide {
    layout: Layout,
    tap: TapQueue,
    guest: Guest,
    host_ip: Ipv4Addr,
    host_end: String,
    gateway_mac: [u8; 6],
    next_port: u32,
    /// ARP requests for the guest seen (who asked: MAC and sender address).
    arp_askers: Vec<([u8; 6], Ipv4Addr)>,
}

impl GuestSide {
    fn port(&mut self) -> u16 {
        let p = 1024 + (self.next_port % 64_000) as u16;
        self.next_port += 1;
        p
    }

    /// Answers an ARP request for the guest; whether `frame` was one.
    fn answer_arp(&mut self, frame: &Frame) -> io::Result<bool> {
        if let Frame::ArpRequest { mac, ip, target } = *frame {
            if target == self.guest.ip {
                if !self.arp_askers.contains(&(mac, ip)) {
                    self.arp_askers.push((mac, ip));
                }
                self.tap
                    .write(&with_hdr(&guest::arp_reply(self.guest, mac, ip)))?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// ARP for the gateway until it answers, then SYNs until the first RST: the link is
    /// usable (a fresh veth passes traffic once linkwatch has activated it).
    fn first_contact(&mut self) -> io::Result<Contact> {
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(20);
        let ask = with_hdr(&arp_request(self.guest, self.host_ip));
        let mut last = t0 - Duration::from_secs(1);
        let mac = loop {
            if Instant::now() > end {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{}: the gateway never answered ARP", self.layout.name()),
                ));
            }
            if last.elapsed() >= Duration::from_millis(200) {
                self.tap.write(&ask)?;
                last = Instant::now();
            }
            let Some(f) = self.tap.read(Duration::from_millis(50))? else {
                continue;
            };
            if let Some(mac) = arp_reply_from(f, self.host_ip) {
                break mac;
            }
            let frame = guest::parse(f);
            self.answer_arp(&frame)?;
        };
        let arp = t0.elapsed();
        self.gateway_mac = mac;
        let mut last = t0 - Duration::from_secs(1);
        loop {
            if Instant::now() > end {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{}: the host never answered a SYN", self.layout.name()),
                ));
            }
            if last.elapsed() >= Duration::from_millis(200) {
                let sport = self.port();
                let syn = self.syn(sport);
                self.tap.write(&syn)?;
                last = Instant::now();
            }
            let Some(f) = self.tap.read(Duration::from_millis(50))? else {
                continue;
            };
            let frame = guest::parse(f);
            if self.answer_arp(&frame)? {
                continue;
            }
            if let Frame::Tcp { seg, .. } = frame {
                if seg.src == self.host_ip && seg.flags & RST != 0 {
                    break;
                }
            }
        }
        Ok(Contact {
            gateway_mac: netslot::mac_to_string(&mac),
            arp_answered_ms: arp.as_secs_f64() * 1e3,
            first_rst_ms: t0.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// A SYN from `sport` to the host end's closed port, with its virtio_net_hdr.
    fn syn(&self, sport: u16) -> Vec<u8> {
        let seg = Segment {
            src: self.guest.ip,
            dst: self.host_ip,
            sport,
            dport: CLOSED_PORT,
            seq: u32::from(sport).wrapping_mul(2_654_435_761),
            ack: 0,
            flags: SYN,
        };
        with_hdr(&guest::tcp_frame(self.guest, self.gateway_mac, seg))
    }

    /// `k` round trips, one at a time: write a SYN, read until its RST.
    fn ping_pong(&mut self, k: usize) -> io::Result<PingPong> {
        let mut rtts: Vec<u64> = Vec::with_capacity(k);
        let (mut lost, mut arps) = (0usize, 0usize);
        let start = Instant::now();
        for _ in 0..k {
            let sport = self.port();
            let syn = self.syn(sport);
            let t0 = Instant::now();
            self.tap.write(&syn)?;
            let deadline = t0 + ANSWER_TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    lost += 1;
                    break;
                }
                let Some(f) = self.tap.read(left)? else {
                    continue;
                };
                let frame = guest::parse(f);
                if self.answer_arp(&frame)? {
                    arps += 1;
                    continue;
                }
                if let Frame::Tcp { seg, .. } = frame {
                    if seg.src == self.host_ip && seg.dport == sport && seg.flags & RST != 0 {
                        rtts.push(t0.elapsed().as_nanos() as u64);
                        break;
                    }
                }
            }
            if lost > MAX_LOST {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{}: {lost} round trips lost", self.layout.name()),
                ));
            }
        }
        let wall = start.elapsed();
        rtts.sort_unstable();
        let pct = |p: usize| rtts[(rtts.len() * p / 100).min(rtts.len() - 1)] as f64 / 1e3;
        let mean = rtts.iter().sum::<u64>() as f64 / rtts.len() as f64 / 1e3;
        Ok(PingPong {
            round_trips: rtts.len(),
            lost,
            arps_answered: arps,
            p50_us: pct(50),
            p99_us: pct(99),
            mean_us: mean,
            min_us: rtts[0] as f64 / 1e3,
            max_us: rtts[rtts.len() - 1] as f64 / 1e3,
            round_trips_per_s: rtts.len() as f64 / wall.as_secs_f64(),
        })
    }

    /// `m` RSTs to a closed port, written back to back; what the host's TCP received.
    fn burst(&mut self, m: usize) -> io::Result<Burst> {
        let frames: Vec<Vec<u8>> = (0..BURST_FRAMES)
            .map(|i| {
                let seg = Segment {
                    src: self.guest.ip,
                    dst: self.host_ip,
                    sport: 30_000 + i,
                    dport: CLOSED_PORT,
                    seq: u32::from(i),
                    ack: 0,
                    flags: RST,
                };
                with_hdr(&guest::tcp_frame(self.guest, self.gateway_mac, seg))
            })
            .collect();
        let rx_before = host_end_rx_packets(&self.host_end);
        let before = tcp_in_segs()?;
        let t0 = Instant::now();
        for i in 0..m {
            self.tap.write(&frames[i % frames.len()])?;
        }
        let written = t0.elapsed();
        // The host's TCP may still be working through the last frames: wait until its
        // counter has not moved for 50 ms, and take the time of its last move.
        let mut last = tcp_in_segs()?;
        let mut moved = t0 + written;
        loop {
            std::thread::sleep(Duration::from_millis(1));
            let now = tcp_in_segs()?;
            if now != last {
                last = now;
                moved = Instant::now();
            } else if moved.elapsed() >= Duration::from_millis(50) {
                break;
            }
        }
        let received = last - before;
        let seconds = (moved - t0).as_secs_f64();
        let rx_after = host_end_rx_packets(&self.host_end);
        // Whatever the guest got meanwhile (an ARP, say): answered, not counted.
        while let Some(f) = self.tap.read(Duration::from_millis(1))? {
            let frame = guest::parse(f);
            self.answer_arp(&frame)?;
        }
        Ok(Burst {
            sent: m,
            received: received as usize,
            host_end_rx_packets: rx_after.zip(rx_before).map(|(a, b)| a - b),
            write_per_s: m as f64 / written.as_secs_f64(),
            seconds,
            rx_per_s: received as f64 / seconds,
        })
    }
}

/// The host namespace's Tcp InSegs (the calling thread's namespace: /proc/thread-self).
fn tcp_in_segs() -> io::Result<u64> {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp")?;
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next(), tcp.next());
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "no Tcp InSegs in snmp");
    let (names, values) = names.zip(values).ok_or_else(bad)?;
    let at = names
        .split_whitespace()
        .position(|n| n == "InSegs")
        .ok_or_else(bad)?;
    values
        .split_whitespace()
        .nth(at)
        .and_then(|v| v.parse().ok())
        .ok_or_else(bad)
}

/// The host end's rx_packets (`ip -s -j link show dev X`), if iproute2 reports it.
fn host_end_rx_packets(dev: &str) -> Option<u64> {
    let out = Command::new("ip")
        .args(["-s", "-j", "link", "show", "dev", dev])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["stats64"]["rx"]["packets"].as_u64()
}

#[derive(Debug, Clone, Serialize)]
struct Contact {
    gateway_mac: String,
    arp_answered_ms: f64,
    first_rst_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
struct PingPong {
    round_trips: usize,
    lost: usize,
    arps_answered: usize,
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
    min_us: f64,
    max_us: f64,
    round_trips_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Burst {
    sent: usize,
    received: usize,
    host_end_rx_packets: Option<u64>,
    write_per_s: f64,
    seconds: f64,
    rx_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Run {
    repeat: usize,
    /// Place of this layout within its repeat (0 first).
    position: usize,
    ping_pong: PingPong,
    burst: Option<Burst>,
}

#[derive(Debug, Clone, Serialize)]
struct Medians {
    rtt_p50_us: f64,
    rtt_p99_us: f64,
    round_trips_per_s: f64,
    burst_rx_per_s: Option<f64>,
    burst_received_share: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct LayoutReport {
    layout: Layout,
    netlink_requests: usize,
    sysctl_writes: usize,
    rtnl_per_slot_from_source: u32,
    requests: Vec<Request>,
    first_contact: Contact,
    arp_askers: Vec<String>,
    runs: Vec<Run>,
    medians: Medians,
}

#[derive(Debug, Serialize)]
struct Report {
    command: String,
    date: String,
    machine: Machine,
    k: usize,
    burst: usize,
    repeat: usize,
    warmup: usize,
    rtnl_note: &'static str,
    common: &'static str,
    layouts: Vec<LayoutReport>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `ip <args>` in the calling thread's namespace.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Turns a microVM slot into the routing layout (see the module's description), from a
/// thread inside its namespace. Checks that neither device keeps an XDP program.
fn make_routing(slot: &Slot) -> Result<(), String> {
    let spec = slot.spec();
    let tap = spec.tap.as_ref().expect("a microVM slot").name.clone();
    let eth0 = spec.slot_ifname.clone();
    let (slot_ip, host_ip) = (spec.slot_ip.to_string(), spec.host_ip.to_string());
    let ns = slot
        .netns_fd()
        .map_err(|e| format!("slot namespace: {e}"))?;
    netslot_test_support::in_netns(ns, move || {
        // Building only: the engine attached the redirect (to lo too, by its group
        // change; lo's copy passes everything).
        ip(&["link", "set", "dev", &tap, "xdp", "off"])?;
        ip(&["link", "set", "dev", &eth0, "xdp", "off"])?;
        ip(&["link", "set", "dev", "lo", "xdp", "off"])?;
        // What the routing layout itself needs.
        for (path, value) in [
            ("/proc/sys/net/ipv4/ip_forward".to_owned(), "1"),
            (format!("/proc/sys/net/ipv4/conf/{tap}/proxy_arp"), "1"),
            (format!("/proc/sys/net/ipv4/conf/{eth0}/proxy_arp"), "1"),
            (format!("/proc/sys/net/ipv4/neigh/{tap}/proxy_delay"), "0"),
            (format!("/proc/sys/net/ipv4/neigh/{eth0}/proxy_delay"), "0"),
        ] {
            std::fs::write(&path, value).map_err(|e| format!("{path}: {e}"))?;
        }
        ip(&["route", "add", &format!("{slot_ip}/32"), "dev", &tap])?;
        ip(&[
            "route", "add", "default", "via", &host_ip, "dev", &eth0, "onlink",
        ])?;
        let out = Command::new("ip")
            .args(["-j", "-d", "link", "show"])
            .output()
            .map_err(|e| format!("ip: {e}"))?;
        let links: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("ip -j: {e}"))?;
        for l in links.as_array().into_iter().flatten() {
            if !l["xdp"].is_null() {
                return Err(format!("{} still has XDP: {}", l["ifname"], l["xdp"]));
            }
        }
        Ok(())
    })
}

/// Flushes the neighbour entries of the device that sends to the guest: the host end
/// (redirect: the guest is on its wire) or the tap (routing: the slot's namespace forwards).
fn forget_guest(side: &GuestSide, slot: &Slot) -> Result<(), String> {
    match side.layout {
        Layout::XdpRedirect => ip(&["neigh", "flush", "dev", &side.host_end]),
        Layout::Routing => {
            let tap = slot
                .spec()
                .tap
                .as_ref()
                .expect("a microVM slot")
                .name
                .clone();
            let ns = slot
                .netns_fd()
                .map_err(|e| format!("slot namespace: {e}"))?;
            netslot_test_support::in_netns(ns, move || ip(&["neigh", "flush", "dev", &tap]))
        }
    }
}

fn us(v: f64) -> String {
    format!("{v:.1} µs")
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.k == 0 || cli.repeat == 0 {
        eprintln!("--k and --repeat must be at least 1");
        return std::process::ExitCode::FAILURE;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("tap_forwarding needs root (namespaces, veth, taps, XDP)");
        return std::process::ExitCode::FAILURE;
    }
    // The whole process in a private network namespace, before any thread exists, so
    // every thread (the engine's pool thread, the in-namespace helpers) and child inherits
    // it, and /proc/thread-self/net is the host namespace's everywhere but in the helpers.
    // SAFETY: unshare takes a flag word and touches no memory of ours.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!("unshare: {}", io::Error::last_os_error());
        return std::process::ExitCode::FAILURE;
    }
    match run(&cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tap_forwarding: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let mut engine = Engine::new(EngineConfig {
        prefix: PREFIX.into(),
        group: GROUP,
        kind: SlotKind::Microvm(TapConfig {
            owner: Some(VMM_UID),
            ..TapConfig::default()
        }),
        ..Default::default()
    })
    .map_err(|e| format!("engine: {e}"))?;
    let slots: Vec<Slot> = engine
        .provision(2)
        .map_err(|e| format!("provision: {e}"))?
        .slots
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("slot: {e}"))?;
    let result = measure(cli, &slots);
    let torn = engine.teardown(slots).map_err(|e| format!("teardown: {e}"));
    result.and(torn)
}

fn measure(cli: &Cli, slots: &[Slot]) -> Result<(), String> {
    make_routing(&slots[1])?;
    let mut sides = Vec::new();
    for (layout, slot) in Layout::ALL.into_iter().zip(slots) {
        let spec = slot.spec();
        let tap = spec.tap.as_ref().expect("a microVM slot");
        let ns = slot
            .netns_fd()
            .map_err(|e| format!("slot namespace: {e}"))?;
        let queue = TapQueue::open(ns, &tap.name).map_err(|e| format!("open the tap: {e}"))?;
        sides.push(GuestSide {
            layout,
            tap: queue,
            guest: Guest {
                mac: tap.guest_mac,
                ip: spec.slot_ip,
            },
            host_ip: spec.host_ip,
            host_end: spec.name.clone(),
            gateway_mac: [0; 6],
            next_port: 0,
            arp_askers: Vec::new(),
        });
    }
    let mut contacts = Vec::new();
    for (side, slot) in sides.iter_mut().zip(slots) {
        let contact = side.first_contact().map_err(|e| e.to_string())?;
        // Who asks for the guest's MAC once the guest's own ARP has been forgotten (the
        // guest's request for its gateway taught its neighbour the guest's MAC): the host
        // end (redirect), or the slot's namespace on the tap (routing), and from which
        // address. Then the warm-up.
        forget_guest(side, slot)?;
        side.ping_pong(cli.warmup.max(1))
            .map_err(|e| format!("warm-up: {e}"))?;
        contacts.push(contact);
    }
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(), Vec::new()];
    for repeat in 0..cli.repeat {
        let order: [usize; 2] = if repeat % 2 == 0 { [0, 1] } else { [1, 0] };
        for (position, &i) in order.iter().enumerate() {
            let side = &mut sides[i];
            std::thread::sleep(Duration::from_millis(200));
            let ping_pong = side.ping_pong(cli.k).map_err(|e| e.to_string())?;
            let burst = if cli.burst > 0 {
                std::thread::sleep(Duration::from_millis(200));
                Some(side.burst(cli.burst).map_err(|e| e.to_string())?)
            } else {
                None
            };
            eprintln!(
                "repeat {repeat} {:<12} p50 {:>9} p99 {:>9} {:>7.0} round trips/s{}",
                side.layout.name(),
                us(ping_pong.p50_us),
                us(ping_pong.p99_us),
                ping_pong.round_trips_per_s,
                burst.as_ref().map_or(String::new(), |b| format!(
                    "  burst {:.0}/s received ({} of {})",
                    b.rx_per_s, b.received, b.sent
                )),
            );
            runs[i].push(Run {
                repeat,
                position,
                ping_pong,
                burst,
            });
        }
    }

    let mut layouts = Vec::new();
    for (((side, runs), first_contact), slot) in sides.iter().zip(runs).zip(contacts).zip(slots) {
        let tap = &slot.spec().tap.as_ref().expect("a microVM slot").name;
        let requests = requests(side.layout, tap, side.guest.ip, side.host_ip);
        let bursts: Vec<&Burst> = runs.iter().filter_map(|r| r.burst.as_ref()).collect();
        let medians = Medians {
            rtt_p50_us: median(runs.iter().map(|r| r.ping_pong.p50_us).collect()),
            rtt_p99_us: median(runs.iter().map(|r| r.ping_pong.p99_us).collect()),
            round_trips_per_s: median(runs.iter().map(|r| r.ping_pong.round_trips_per_s).collect()),
            burst_rx_per_s: (!bursts.is_empty())
                .then(|| median(bursts.iter().map(|b| b.rx_per_s).collect())),
            burst_received_share: (!bursts.is_empty()).then(|| {
                median(
                    bursts
                        .iter()
                        .map(|b| b.received as f64 / b.sent as f64)
                        .collect(),
                )
            }),
        };
        layouts.push(LayoutReport {
            layout: side.layout,
            netlink_requests: requests.iter().filter(|r| r.via == "netlink").count(),
            sysctl_writes: requests.iter().filter(|r| r.via == "sysctl").count(),
            rtnl_per_slot_from_source: requests.iter().map(|r| r.rtnl).sum(),
            requests,
            first_contact,
            arp_askers: side
                .arp_askers
                .iter()
                .map(|(mac, ip)| format!("{} ({ip})", netslot::mac_to_string(mac)))
                .collect(),
            runs,
            medians,
        });
    }
    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        date: Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default(),
        machine: Machine::probe(),
        k: cli.k,
        burst: cli.burst,
        repeat: cli.repeat,
        warmup: cli.warmup,
        rtnl_note: RTNL_NOTE,
        common: COMMON,
        layouts,
    };
    print_table(&report);
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&report).expect("serializable");
        if path.as_os_str() == "-" {
            println!("{text}");
        } else {
            std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "tap_forwarding: {} round trips and {} burst frames per run, medians of {} repeats \
         ({} {}, {} CPUs, {})",
        r.k, r.burst, r.repeat, r.machine.kernel, r.machine.cpu_model, r.machine.cpus, r.date
    );
    println!();
    println!(
        "| layout | netlink requests | sysctl writes | RTNL per slot (source) | RTT p50 | RTT p99 | round trips/s | burst received/s | burst received |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for l in &r.layouts {
        let m = &l.medians;
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {} | {} |",
            l.layout.name(),
            l.netlink_requests,
            l.sysctl_writes,
            l.rtnl_per_slot_from_source,
            us(m.rtt_p50_us),
            us(m.rtt_p99_us),
            m.round_trips_per_s,
            m.burst_rx_per_s.map_or("-".into(), |v| format!("{v:.0}")),
            m.burst_received_share
                .map_or("-".into(), |v| format!("{:.1} %", v * 100.0)),
        );
    }
    println!();
    for l in &r.layouts {
        println!(
            "{}: gateway MAC {} (ARP answered after {:.1} ms, first RST after {:.1} ms); ARP for the guest from {}",
            l.layout.name(),
            l.first_contact.gateway_mac,
            l.first_contact.arp_answered_ms,
            l.first_contact.first_rst_ms,
            if l.arp_askers.is_empty() {
                "nobody".to_owned()
            } else {
                l.arp_askers.join(", ")
            }
        );
        for q in &l.requests {
            println!("  {:<7} {} [RTNL {}: {}]", q.via, q.what, q.rtnl, q.source);
        }
    }
    println!();
    println!("Beyond the veth pair; {}.", r.common);
    println!("{}.", r.rtnl_note);
}
