//! Helpers for netslot's kernel tests: private namespaces, root checks, and an independent
//! view of kernel state through iproute2's JSON output (never through netslot's own code).
#![allow(unsafe_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

pub use netslot_test_support::{in_netns, in_private_netns, require_root};

pub mod guest;

/// Provisions `n` slots with `e`, panicking unless every one was made.
pub fn provision(e: &mut netslot::Engine, n: usize) -> Vec<netslot::Slot> {
    e.provision(n)
        .expect("provision")
        .slots
        .into_iter()
        .map(|s| s.expect("slot"))
        .collect()
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

/// Links of the pool whose base group is `group`: in it or in one of its sub-batch groups
/// (`netslot::groups`; iproute2 prints numeric groups as strings).
pub fn links_in_group(group: u32) -> Vec<Value> {
    links().into_iter().filter(|l| in_pool(l, group)).collect()
}

/// Whether a link in `ip -j link` output belongs to the pool with base group `base`.
pub fn in_pool(link: &Value, base: u32) -> bool {
    link_group(link).is_some_and(|g| netslot::groups::owns(base, g))
}

/// The device group of a link in `ip -j link` output (a number: pools use no named groups).
pub fn link_group(link: &Value) -> Option<u32> {
    link["group"].as_str()?.parse().ok()
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

/// The `disable_ipv6` sysctl of device `dev` in the calling thread's namespace
/// (/proc/sys/net follows the reading thread's namespace).
pub fn ipv6_disabled(dev: &str) -> bool {
    let path = format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.trim() == "1"
}

/// Waits up to 30 s for `cond`, polling every 50 ms; panics naming `what` if it never
/// holds. For the kernel's asynchronous work (linkwatch, addrconf).
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "after 30 s, still not: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Waits until every device in `devs` has operstate UP, i.e. linkwatch has activated it
/// (the kernel's asynchronous part of bringing a device up: its qdisc, and addrconf's
/// NETDEV_CHANGE work).
pub fn wait_operstate_up(devs: &[&str]) {
    wait_for("every device operationally up", || {
        let links = ip_json(&["link", "show"]);
        devs.iter().all(|d| {
            links
                .as_array()
                .into_iter()
                .flatten()
                .any(|l| l["ifname"].as_str() == Some(d) && l["operstate"].as_str() == Some("UP"))
        })
    });
}

/// Whether device `dev` has the IPv6 multicast route (ff00::/8, table local) that
/// addrconf adds when an IPv6-enabled device comes up.
pub fn has_ipv6_multicast_route(dev: &str) -> bool {
    ip_json(&["-6", "route", "show", "table", "local", "dev", dev])
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["dst"].as_str() == Some("ff00::/8"))
}

/// Whether a link's flags include `flag` (e.g. "UP", "LOWER_UP").
pub fn has_flag(link: &Value, flag: &str) -> bool {
    link["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x.as_str() == Some(flag)))
}

/// A TCP connect to a closed port: a refusal (RST) proves packets went both ways.
pub fn tcp_refused(addr: std::net::Ipv4Addr) -> Result<(), String> {
    tcp_refused_ip(addr.into())
}

/// [`tcp_refused`] for an address of either family.
pub fn tcp_refused_ip(addr: std::net::IpAddr) -> Result<(), String> {
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

/// The `netslot` binary built next to this test (cargo builds workspace binaries first).
pub fn netslot() -> PathBuf {
    workspace_bin("netslot")
}

/// A binary of the `netslot-cli` crate (`netslot`, `netslot-cni`), built next to this test
/// (cargo builds workspace binaries first), refused when older than the sources.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} missing: run `cargo build -p netslot-cli` first (make test does)",
        bin.display()
    );
    // `cargo test` does not rebuild another package's binary: refuse to test a stale one.
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // Its sources: the library's and its own (cargo relinks one binary of netslot-cli
    // without touching the other when only the other's sources changed).
    let own = format!("cli/src/bin/{name}");
    let newest = ["engine/src", own.as_str()]
        .iter()
        .filter_map(|d| newest_file(&root.join(d)))
        .max();
    if let Some((_, newer)) = newest.filter(|(t, _)| *t > built) {
        panic!(
            "{} is older than {}: run `cargo build -p netslot-cli` first (make test does)",
            bin.display(),
            newer.display()
        );
    }
    bin
}

/// The most recently modified file under `dir`.
fn newest_file(dir: &std::path::Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_file(&path)
        } else {
            let modified = entry.metadata().and_then(|m| m.modified()).ok();
            modified.map(|t| (t, path))
        };
        if let Some(c) = candidate {
            if newest.as_ref().is_none_or(|n| c.0 > n.0) {
                newest = Some(c);
            }
        }
    }
    newest
}

/// Runs a shell script inside new network and mount namespaces, with a private tmpfs on
/// /run (so /run/netns pins and /run/netslot ownership records are private) and a private
/// bpffs on /sys/fs/bpf: pins are files there, and a private mount namespace alone hides
/// mounts but not files on a shared filesystem. Steps write their output to files in a
/// scratch directory ($D); $NS is the netslot binary.
pub fn in_private_world(script: &str) -> (String, Scratch) {
    in_private_world_env(script, &[])
}

/// [`in_private_world`] with extra environment variables for the script.
pub fn in_private_world_env(script: &str, env: &[(&str, &str)]) -> (String, Scratch) {
    let dir = std::env::temp_dir().join(format!(
        "netslot-cli-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "mount -t tmpfs netslot-test /run\nmkdir /run/netns\nmount -t bpf netslot-test /sys/fs/bpf\n{script}"
    );
    let out = Command::new("unshare")
        .args([
            "--net",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-euc",
            &script,
        ])
        .env("NS", netslot())
        .env("D", &dir)
        .envs(env.iter().copied())
        .output()
        .expect("run unshare");
    let log = format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "script failed (its files are in {}): {log}",
        dir.display()
    );
    (log, Scratch(dir))
}

/// A test's scratch directory ($D of the scripts): removed when dropped, unless the test
/// is failing (a panic is unwinding), when it is left for inspection.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A suffix that makes scratch names unique.
pub fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A file the script wrote into its scratch directory.
pub fn read(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A JSON file the script wrote into its scratch directory.
pub fn json(dir: &std::path::Path, name: &str) -> Value {
    let text = read(dir, name);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"))
}

/// Runs `f` on a fresh thread whose credentials are `uid`, `gid` and no supplementary
/// groups, as an unprivileged peer of the daemon would be. Raw system calls: they change
/// the calling thread only (glibc's wrappers would change every thread of the process).
pub fn as_ids<T: Send + 'static>(uid: u32, gid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: setgroups with size 0 reads no memory; setresgid and setresuid take
        // plain ids. Each changes the calling thread's credentials only.
        let r = unsafe {
            [
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
                libc::syscall(libc::SYS_setresgid, gid, gid, gid),
                libc::syscall(libc::SYS_setresuid, uid, uid, uid),
            ]
        };
        assert_eq!(
            r,
            [0, 0, 0],
            "drop to uid {uid} gid {gid}: {}",
            std::io::Error::last_os_error()
        );
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Raises this process's RLIMIT_NOFILE (soft and hard) to at least `n`.
pub fn raise_nofile(n: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `lim`, a live local.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur = lim.rlim_cur.max(n);
    lim.rlim_max = lim.rlim_max.max(n);
    // SAFETY: setrlimit reads one rlimit from `lim`, a live local.
    let r = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(r, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// Resident memory of process `pid` in KiB (VmRSS in /proc/PID/status).
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}"))
}
