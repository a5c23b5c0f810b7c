//! Kernel tests of the RTNL counter: known iproute2 operations, counted for real.
//! Each runs in a private network namespace; unprivileged runs skip (fail with CI=true).

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use netslot_bench::rtnl::{RtnlCounter, RtnlReport};
use netslot_test_support::in_private_netns;

/// One counter at a time: x86 has 4 debug registers per CPU and counts must not mix.
static SERIAL: Mutex<()> = Mutex::new(());

const QUIET: Duration = Duration::from_millis(300);
const SETTLE_MAX: Duration = Duration::from_secs(5);

/// Root, and a kernel that takes the watchpoint. A kernel that refuses it to root (see
/// `CounterError::refused_by_kernel`) cannot count RTNL at all: these tests then skip
/// with the kernel's answer, under CI too, as the harness runs without RTNL figures.
/// Any other failure to start the counter fails the test.
fn privileged() -> bool {
    if !netslot_test_support::require_root("RTNL counter tests") {
        return false;
    }
    match RtnlCounter::start() {
        Ok(c) => {
            drop(c.stop());
            true
        }
        Err(e) if e.refused_by_kernel() => {
            eprintln!("RTNL counter tests: skipped: the kernel refuses the watchpoint: {e}");
            false
        }
        Err(e) => panic!("counter unavailable: {e}"),
    }
}

/// Runs `ip args`, returning its pid; panics unless it succeeds.
fn ip(args: &str) -> u32 {
    let mut child = Command::new("ip")
        .args(args.split_whitespace())
        .spawn()
        .expect("spawn ip");
    let pid = child.id();
    let status = child.wait().expect("wait ip");
    assert!(status.success(), "ip {args}: {status}");
    pid
}

/// Counts the RTNL acquisitions of `ip args` (by its pid) and everybody else's.
fn count(args: &str) -> (u64, u64, RtnlReport) {
    let counter = RtnlCounter::start().unwrap_or_else(|e| panic!("counter unavailable: {e}"));
    let pid = ip(args);
    counter.settle(QUIET, SETTLE_MAX);
    let report = counter.stop();
    let (own, others) = (report.count_by(&[pid]), report.count_others(&[pid]));
    eprintln!(
        "`ip {args}`: own {own}, others {others}, writes {}, longest hold {:?}, by pid {:?}, \
         holds ns {:?}, lost {}, throttled {}",
        report.writes(),
        report.longest_hold(),
        report.by_pid(),
        report.holds_ns(),
        report.lost_samples(),
        report.throttled()
    );
    assert!(report.is_complete(), "samples lost or throttled");
    assert_eq!(
        report.unclassified_writes(),
        0,
        "owner written outside mutex functions"
    );
    (own, others, report)
}

/// Deletes the named namespace on drop, so a failing assertion leaves nothing behind.
struct NamedNetns(String);

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Minimal rtnetlink request builder for the single-message tests.
mod nl {
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_ACK: u16 = 0x4;
    const NLM_F_EXCL: u16 = 0x200;
    const NLM_F_CREATE: u16 = 0x400;
    const IFLA_IFNAME: u16 = 3;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_INFO_KIND: u16 = 1;
    const IFLA_INFO_DATA: u16 = 2;
    const VETH_INFO_PEER: u16 = 1;
    const IFINFOMSG_LEN: usize = 16;
    const NLMSG_HDRLEN: usize = 16;

    fn pad(b: &mut Vec<u8>) {
        while b.len() % 4 != 0 {
            b.push(0);
        }
    }

    fn attr(b: &mut Vec<u8>, ty: u16, payload: &[u8]) {
        b.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(payload);
        pad(b);
    }

    fn nest(b: &mut Vec<u8>, ty: u16, inner: impl FnOnce(&mut Vec<u8>)) {
        let start = b.len();
        attr(b, ty, &[]);
        inner(b);
        let len = (b.len() - start) as u16;
        b[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn name(n: &str) -> Vec<u8> {
        let mut v = n.as_bytes().to_vec();
        v.push(0);
        v
    }

    fn message(flags: u16, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = vec![0u8; NLMSG_HDRLEN];
        b[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
        b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
        b[8..12].copy_from_slice(&1u32.to_ne_bytes());
        b.extend_from_slice(&[0; IFINFOMSG_LEN]);
        body(&mut b);
        let len = b.len() as u32;
        b[0..4].copy_from_slice(&len.to_ne_bytes());
        b
    }

    /// RTM_NEWLINK creating veth `a` with peer `b` in the socket's namespace.
    pub fn new_veth(a: &str, b: &str) -> Vec<u8> {
        message(NLM_F_EXCL | NLM_F_CREATE, |m| {
            attr(m, IFLA_IFNAME, &name(a));
            nest(m, IFLA_LINKINFO, |m| {
                attr(m, IFLA_INFO_KIND, b"veth\0");
                nest(m, IFLA_INFO_DATA, |m| {
                    nest(m, VETH_INFO_PEER, |m| {
                        m.extend_from_slice(&[0; IFINFOMSG_LEN]);
                        attr(m, IFLA_IFNAME, &name(b));
                    });
                });
            });
        })
    }

    /// The empty RTM_NEWLINK that iproute2 6.1 sends first (iplink_have_newlink()).
    pub fn iproute2_probe() -> Vec<u8> {
        message(0, |_| {})
    }

    /// Sends one request on a fresh NETLINK_ROUTE socket; returns the ACK's errno (0 = ok).
    pub fn request(msg: &[u8]) -> i32 {
        // SAFETY: plain socket(2) call; the fd is closed below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: `msg` is a valid buffer of msg.len() bytes; an unconnected netlink
        // socket sends to the kernel.
        let sent = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), 0) };
        assert_eq!(
            sent,
            msg.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
        let mut ack = [0u8; 8192];
        // SAFETY: `ack` is a writable buffer of ack.len() bytes.
        let got = unsafe { libc::recv(fd, ack.as_mut_ptr().cast(), ack.len(), 0) };
        // SAFETY: `fd` came from socket() above and is closed once.
        unsafe { libc::close(fd) };
        assert!(got >= 20, "recv: {got}");
        -i32::from_ne_bytes(ack[16..20].try_into().expect("4 bytes"))
    }
}

/// Counts this process's acquisitions while `f` runs; returns them and f's result.
fn count_own<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let counter = RtnlCounter::start().unwrap_or_else(|e| panic!("counter unavailable: {e}"));
    let out = f();
    counter.settle(QUIET, SETTLE_MAX);
    let report = counter.stop();
    assert!(report.is_complete(), "samples lost or throttled");
    let me = std::process::id();
    eprintln!(
        "own {} others {} by pid {:?}",
        report.count_by(&[me]),
        report.count_others(&[me]),
        report.by_pid()
    );
    (report.count_by(&[me]), out)
}

#[test]
fn veth_pair_in_place_costs_one_message_one_acquisition() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !privileged() {
        return;
    }
    let (own, errno) =
        in_private_netns(|| count_own(|| nl::request(&nl::new_veth("nsbra", "nsbrb"))));
    assert_eq!(errno, 0, "RTM_NEWLINK veth");
    assert_eq!(own, 1);
}

#[test]
fn iproute2_newlink_probe_costs_one() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !privileged() {
        return;
    }
    let (own, errno) = in_private_netns(|| count_own(|| nl::request(&nl::iproute2_probe())));
    assert_eq!(
        errno,
        libc::ENODEV,
        "the probe fails under RTNL with ENODEV"
    );
    assert_eq!(own, 1);
}

/// `ip link add` = iproute2's RTM_NEWLINK probe (1) + the veth RTM_NEWLINK (1).
#[test]
fn ip_link_add_veth_costs_probe_plus_one() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !privileged() {
        return;
    }
    let (own, _, _) = in_private_netns(|| count("link add nsbva type veth peer name nsbvb"));
    assert_eq!(own, 2);
}

/// `ip link set X up` = probe (1) + RTM_GETLINK by name (1) + RTM_NEWLINK IFF_UP (1).
#[test]
fn link_up_costs_three() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !privileged() {
        return;
    }
    let (own, _, _) = in_private_netns(|| {
        ip("link add nsbua type veth peer name nsbub");
        count("link set nsbua up")
    });
    assert_eq!(own, 3);
}

#[test]
fn netns_add_costs_two_and_del_none_of_its_own() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !privileged() {
        return;
    }
    let name = format!("netslot-bench-{}", std::process::id());
    let (add_own, del_own, del_others) = in_private_netns(move || {
        let (add_own, _, _) = count(&format!("netns add {name}"));
        let guard = NamedNetns(name.clone());
        let (del_own, del_others, _) = count(&format!("netns del {name}"));
        std::mem::forget(guard);
        (add_own, del_own, del_others)
    });
    eprintln!("netns del: {del_others} acquisitions by kernel workers");
    assert_eq!(add_own, 2);
    assert_eq!(del_own, 0);
}

#[test]
fn own_includes_forked_children() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !privileged() {
        return;
    }
    in_private_netns(|| {
        let counter = RtnlCounter::start().unwrap_or_else(|e| panic!("counter unavailable: {e}"));
        let pid = ip("link add nsbfa type veth peer name nsbfb");
        counter.settle(QUIET, SETTLE_MAX);
        let report = counter.stop();
        assert!(report.descendants(std::process::id()).contains(&pid));
        // iproute2 probe + the veth message, as in ip_link_add_veth_costs_probe_plus_one.
        assert_eq!(report.own(), 2);
        assert_eq!(report.comm(pid).as_deref(), Some("ip"));
    });
}
