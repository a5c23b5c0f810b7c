//! Helpers for netslot's kernel tests: private namespaces, root checks, and an independent
//! view of kernel state through iproute2's JSON output (never through netslot's own code).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};
use std::process::{Command, Output};

use serde_json::Value;

/// Whether the tests can touch the kernel. Unprivileged runs skip with a reason; with
/// CI=true a skip is a failure, so CI never passes by testing nothing.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let why = format!("{test}: skipped: needs root (namespaces, veth, mounts)");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}, and CI=true forbids skipping");
    }
    eprintln!("{why}");
    false
}

/// Runs `f` on a fresh thread moved into a new, private network namespace. Everything the
/// test makes in it goes away with the thread's namespace, even when the test fails.
pub fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespace; no memory is involved.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Runs `f` on a thread inside the namespace `ns` (e.g. a slot's), so that processes it
/// spawns (iproute2) see that namespace.
pub fn in_netns<T: Send + 'static>(
    ns: BorrowedFd<'_>,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let fd = ns.try_clone_to_owned().expect("dup namespace fd");
    std::thread::spawn(move || {
        // SAFETY: setns reads the fd and flag only.
        let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Runs a command, returning its output (panics if it cannot start).
pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

/// `ip -j <args>` parsed, in the calling thread's namespace.
pub fn ip_json(args: &[&str]) -> Value {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let out = run("ip", &all);
    assert!(
        out.status.success(),
        "ip {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip {all:?}: bad JSON: {e}: {text}"))
}

/// `tc -j <args>` parsed, in the calling thread's namespace (`Err` with tc's stderr when
/// tc fails, e.g. for a block that does not exist).
pub fn tc_json(args: &[&str]) -> Result<Value, String> {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let out = run("tc", &all);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Ok(Value::Array(vec![]));
    }
    serde_json::from_str(&text).map_err(|e| format!("tc {all:?}: bad JSON: {e}: {text}"))
}

/// The links of the calling thread's namespace, with details (`ip -d link show`).
pub fn links() -> Vec<Value> {
    ip_json(&["-d", "link", "show"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Links whose group is `group` (iproute2 prints numeric groups as strings).
pub fn links_in_group(group: u32) -> Vec<Value> {
    links()
        .into_iter()
        .filter(|l| l["group"].as_str() == Some(&group.to_string()))
        .collect()
}

/// The IPv4 addresses (`addr/prefix`) of device `dev` in the calling thread's namespace.
pub fn ipv4_addrs(dev: &str) -> Vec<String> {
    ip_json(&["-4", "addr", "show", "dev", dev])
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect()
}

/// Whether any IPv6 address is on device `dev`.
pub fn has_ipv6(dev: &str) -> bool {
    ip_json(&["-6", "addr", "show", "dev", dev])
        .as_array()
        .into_iter()
        .flatten()
        .any(|l| l["addr_info"].as_array().is_some_and(|a| !a.is_empty()))
}

/// Whether a link's flags include `flag` (e.g. "UP", "LOWER_UP").
pub fn has_flag(link: &Value, flag: &str) -> bool {
    link["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x.as_str() == Some(flag)))
}

/// A TCP connect to a closed port: a refusal (RST) proves packets went both ways.
pub fn tcp_refused(addr: std::net::Ipv4Addr) -> Result<(), String> {
    // A fresh veth passes traffic only once linkwatch has activated the qdisc of the end
    // that was up before its peer (dev_activate waits for carrier; linkwatch_do_dev runs
    // under RTNL, so on a loaded machine it can lag seconds). SYN and ARP retransmits
    // cover the wait: one connect with a 15 s timeout sees SYNs at 0, 1, 3 and 7 s.
    let sa = std::net::SocketAddr::from((addr, 9));
    match std::net::TcpStream::connect_timeout(&sa, std::time::Duration::from_secs(15)) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(format!("connect {sa}: {e} (expected a refusal)")),
        Ok(_) => Err(format!("connect {sa}: unexpectedly accepted")),
    }
}
