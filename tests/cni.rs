//! `netslot serve` and `netslot-cni` driven as a container runtime drives them: the plugin
//! exec'd with CNI_* variables and the configuration on stdin, chained with Debian's
//! reference plugins. Each test re-runs itself inside new network and mount namespaces
//! (`unshare --net --mount`) with a private tmpfs on /run (so /run/netns and
//! /run/netslot are its own), so the daemon, its socket, the container namespaces and
//! every device go away with it.
//!
//! The last tests hold the daemon to its security model (docs/serve.md): targets a peer
//! could not enter, files that are not network namespaces, abusive lines and idle
//! connections, and per-uid limits.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use netslot::daemon::protocol::{Operation, Stats};
use netslot_kernel_tests::*;
use serde_json::{json, Value};

const SOCKET: &str = "/run/netslot/netslot.sock";
const CNI_DIR: &str = "/usr/lib/cni";
/// Marks the re-executed test process that runs inside the private namespaces.
const INSIDE: &str = "NETSLOT_CNI_TEST_INSIDE";

/// Whether this process is the one inside the private world. Outside, runs this test
/// again inside one and checks that it passed.
fn inside_private_world(test: &str) -> bool {
    if std::env::var(INSIDE).as_deref() == Ok(test) {
        return true;
    }
    if !require_root(test) {
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "sh", "-euc"])
        .arg(
            // A tmpfs over all of /run, not over directories of the host's /run: another
            // process removing such a directory on the host would detach the mount here.
            "mount -t tmpfs netslot-test /run; mkdir -p /run/netns /run/netslot; \
             ip link set lo up; exec \"$@\"",
        )
        .arg("sh")
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INSIDE, test)
        .output()
        .expect("run unshare");
    let log = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{test} failed inside its private world:\n{log}"
    );
    assert!(
        log.contains("1 passed"),
        "{test} did not run inside:\n{log}"
    );
    eprintln!("{test} inside:\n{log}");
    false
}

/// A binary of this workspace, built next to the test and no older than its sources.
fn bin(name: &str) -> PathBuf {
    workspace_bin(name)
}

/// A running `netslot serve`.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(prefix: &str, group: u32, extra: &[&str]) -> Self {
        Self::start_under(&[], prefix, group, extra)
    }

    /// Starts the daemon through `wrapper` (e.g. `prlimit --nofile=...`), if not empty.
    fn start_under(wrapper: &[&str], prefix: &str, group: u32, extra: &[&str]) -> Self {
        let g = group.to_string();
        let netslot = bin("netslot");
        let mut cmd = match wrapper.split_first() {
            None => Command::new(&netslot),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&netslot);
                c
            }
        };
        let child = cmd
            .args([
                "serve", "--socket", SOCKET, "--prefix", prefix, "--group", &g,
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start netslot serve");
        let started = Instant::now();
        while netslot::daemon::client::call(Path::new(SOCKET), Operation::Status).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "daemon never answered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child }
    }

    /// Waits until the warm pool holds `n` ready slots (30 s at most).
    fn wait_pooled(&self, n: usize) {
        let started = Instant::now();
        while self.stats().pooled < n {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "pool never filled"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stats(&self) -> Stats {
        let r = netslot::daemon::client::call(Path::new(SOCKET), Operation::Stats).expect("stats");
        r.stats.expect("stats in the answer")
    }

    /// SIGTERM, and waits for a clean exit.
    fn stop(mut self) {
        let r = run("kill", &["-TERM", &self.child.id().to_string()]);
        assert!(r.status.success());
        let st = self.child.wait().unwrap();
        assert!(st.success(), "daemon exit: {st}");
        assert!(!Path::new(SOCKET).exists(), "socket left behind");
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    /// A failing test must not leave its daemon running (it would hold the test's pipes
    /// and namespaces).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs one CNI plugin as a runtime does. Returns (success, stdout JSON or null).
fn exec_plugin(plugin: &Path, command: &str, env: &[(&str, &str)], conf: &Value) -> (bool, Value) {
    let mut child = Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", CNI_DIR)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("exec {}: {e}", plugin.display()));
    // A plugin may exit without reading all of stdin: a closed pipe is its business.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{command}: bad JSON {e}: {text}"))
    };
    if !out.status.success() && v.is_null() {
        panic!(
            "{} {command} failed without a result: {}",
            plugin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (out.status.success(), v)
}

fn container_env<'a>(id: &'a str, netns: &'a str, ifname: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", ifname),
    ]
}

fn plain_conf() -> Value {
    json!({"cniVersion": "1.1.0", "name": "slots", "type": "netslot-cni", "socket": SOCKET})
}

fn netns_add(name: &str) -> String {
    let r = run("ip", &["netns", "add", name]);
    assert!(r.status.success(), "ip netns add {name}");
    format!("/run/netns/{name}")
}

/// `ip -n <ns> -j <args>` parsed.
fn ip_in(ns: &str, args: &[&str]) -> Value {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip_json(&all)
}

/// The IPv4 addresses of `dev` inside namespace `ns`, as `a.b.c.d/len`.
fn addrs_in(ns: &str, dev: &str) -> Vec<String> {
    ip_in(ns, &["-4", "addr", "show", "dev", dev])
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn link_names_in(ns: &str) -> Vec<String> {
    ip_in(ns, &["link", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| l["ifname"].as_str().unwrap().to_owned())
        .collect()
}

/// A TCP connect from inside namespace `path` to `addr`:9 that must be refused.
fn refused_from(path: &str, addr: &str) {
    let ns = std::fs::File::open(path).unwrap();
    let addr: std::net::Ipv4Addr = addr.parse().unwrap();
    let r = in_netns(ns.as_fd(), move || tcp_refused(addr));
    r.unwrap_or_else(|e| panic!("from {path}: {e}"));
}

#[test]
fn sixty_four_concurrent_adds_share_few_batches_and_dels_clean_up() {
    let test = "sixty_four_concurrent_adds_share_few_batches_and_dels_clean_up";
    if !inside_private_world(test) {
        return;
    }
    const N: usize = 64;
    let group = 7811;
    let daemon = Daemon::start("cc", group, &["--window-us", "500"]);
    let plugin = bin("netslot-cni");
    let paths: Vec<String> = (0..N).map(|i| netns_add(&format!("c{i}"))).collect();

    let barrier = Arc::new(Barrier::new(N));
    let adds: Vec<_> = (0..N)
        .map(|i| {
            let (plugin, path, barrier) = (plugin.clone(), paths[i].clone(), barrier.clone());
            std::thread::spawn(move || {
                let id = format!("ctr-{i}");
                barrier.wait();
                exec_plugin(
                    &plugin,
                    "ADD",
                    &container_env(&id, &path, "eth0"),
                    &plain_conf(),
                )
            })
        })
        .collect();
    let results: Vec<(bool, Value)> = adds.into_iter().map(|t| t.join().unwrap()).collect();
    let stats = daemon.stats();
    eprintln!("64 ADDs: {stats:?}");
    assert_eq!(stats.attached, N as u64);
    assert!(
        stats.attach_batches <= 16,
        "64 concurrent ADDs took {} attach batches",
        stats.attach_batches
    );
    assert!(stats.largest_round > 1, "nothing was coalesced: {stats:?}");

    let mut seen = std::collections::BTreeSet::new();
    let host_links = links_in_group(group);
    assert_eq!(host_links.len(), N, "host ends in group {group}");
    for (i, (ok, result)) in results.iter().enumerate() {
        assert!(ok, "ADD {i}: {result}");
        assert_eq!(result["cniVersion"], "1.1.0");
        let ip = &result["ips"][0];
        let address = ip["address"].as_str().unwrap().to_owned();
        let iface = ip["interface"].as_u64().unwrap() as usize;
        assert_eq!(result["interfaces"][iface]["name"], "eth0");
        assert_eq!(result["interfaces"][iface]["sandbox"], paths[i].as_str());
        assert!(
            seen.insert(address.clone()),
            "address {address} handed out twice"
        );
        // The kernel's view inside the container namespace.
        let ns = format!("c{i}");
        assert_eq!(addrs_in(&ns, "eth0"), vec![address.clone()], "{ns}");
        let mac = ip_in(&ns, &["link", "show", "dev", "eth0"])[0]["address"].clone();
        assert_eq!(mac, result["interfaces"][iface]["mac"], "{ns} mac");
        let routes = ip_in(&ns, &["route", "show", "default"]);
        assert_eq!(routes[0]["gateway"], ip["gateway"], "{ns} default route");
        let host = result["interfaces"][0]["name"].as_str().unwrap();
        assert!(
            host_links.iter().any(|l| l["ifname"] == host),
            "host end {host} not in group {group}"
        );
    }
    // Reachability, proven by refusals from the far side.
    for i in [0, N / 2, N - 1] {
        let gw = results[i].1["ips"][0]["gateway"]
            .as_str()
            .unwrap()
            .to_owned();
        refused_from(&paths[i], &gw);
    }

    let dels: Vec<_> = (0..N)
        .map(|i| {
            let (plugin, path) = (plugin.clone(), paths[i].clone());
            std::thread::spawn(move || {
                let id = format!("ctr-{i}");
                exec_plugin(
                    &plugin,
                    "DEL",
                    &container_env(&id, &path, "eth0"),
                    &plain_conf(),
                )
            })
        })
        .collect();
    for t in dels {
        let (ok, out) = t.join().unwrap();
        assert!(ok, "DEL: {out}");
    }
    // DEL again: idempotent.
    let (ok, out) = exec_plugin(
        &plugin,
        "DEL",
        &container_env("ctr-0", &paths[0], "eth0"),
        &plain_conf(),
    );
    assert!(ok, "second DEL: {out}");
    assert!(links_in_group(group).is_empty(), "host ends left after DEL");
    for i in 0..N {
        assert_eq!(
            link_names_in(&format!("c{i}")),
            vec!["lo"],
            "c{i} after DEL"
        );
    }
    let stats = daemon.stats();
    assert_eq!(stats.attachments, 0);
    eprintln!("after DELs: {stats:?}");
    daemon.stop();
}

/// Runs a conflist's plugins in order for ADD (each gets the previous result) and in
/// reverse for DEL/CHECK (each gets the final result), as libcni does.
fn run_chain(
    command: &str,
    list: &Value,
    env: &[(&str, &str)],
    prev: Option<&Value>,
) -> (bool, Value) {
    let plugins = list["plugins"].as_array().unwrap().clone();
    let order: Vec<Value> = if command == "ADD" {
        plugins
    } else {
        plugins.into_iter().rev().collect()
    };
    let mut result = prev.cloned();
    let mut last = Value::Null;
    for p in order {
        let mut conf = p.clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf["name"] = list["name"].clone();
        if let Some(r) = &result {
            conf["prevResult"] = r.clone();
        }
        let ty = p["type"].as_str().unwrap();
        let path = if ty == "netslot-cni" {
            bin("netslot-cni")
        } else {
            Path::new(CNI_DIR).join(ty)
        };
        let (ok, out) = exec_plugin(&path, command, env, &conf);
        if !ok {
            return (false, json!({"plugin": ty, "error": out}));
        }
        if command == "ADD" {
            result = Some(out.clone());
        }
        last = out;
    }
    (
        true,
        if command == "ADD" {
            result.unwrap()
        } else {
            last
        },
    )
}

/// The podman-style chain netslot-cni → tuning → portmap at `version`, in a new namespace
/// `ns`: ADD (tuning's MTU and sysctl and portmap's DNAT seen in the kernel), CHECK
/// through netslot-cni and tuning, DEL (nothing left of the interface or the port).
fn chain_tuning_and_portmap(version: &str, ns: &str, group: u32) {
    let list = json!({
        "cniVersion": version,
        "name": "chained",
        "plugins": [
            {"type": "netslot-cni", "socket": SOCKET},
            {"type": "tuning", "mtu": 1400, "sysctl": {"net.ipv4.conf.eth0.rp_filter": "2"}},
            {"type": "portmap", "capabilities": {"portMappings": true},
             "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}
        ]
    });
    let path = netns_add(ns);
    let env = container_env("ctr-chain", &path, "eth0");
    let (ok, result) = run_chain("ADD", &list, &env, None);
    assert!(ok, "chained ADD at {version}: {result}");
    eprintln!("chained result at {version}: {result}");
    assert_eq!(result["cniVersion"], version);
    let ip = result["ips"][0].clone();
    let iface = ip["interface"].as_u64().unwrap() as usize;
    assert_eq!(result["interfaces"][iface]["name"], "eth0");
    assert_eq!(result["interfaces"][iface]["sandbox"], path.as_str());
    if version.starts_with("0.") {
        assert_eq!(ip["version"], "4", "{result}");
    }

    // tuning acted on our interface: the kernel reports its MTU and sysctl.
    let link = ip_in(ns, &["link", "show", "dev", "eth0"]);
    assert_eq!(link[0]["mtu"], 1400, "tuning's MTU: {link}");
    let rp = run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "cat",
            "/proc/sys/net/ipv4/conf/eth0/rp_filter",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&rp.stdout).trim(), "2");
    assert_eq!(addrs_in(ns, "eth0"), vec![ip["address"].as_str().unwrap()]);

    // portmap: host port 8080 on the host end's address is DNATed to the container's
    // port 80, where nothing listens: the container's refusal proves the path.
    let gw = ip["gateway"].as_str().unwrap();
    let sa: std::net::SocketAddr = format!("{gw}:8080").parse().unwrap();
    match std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(15)) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        other => panic!("connect {sa} through portmap: {other:?} (expected a refusal)"),
    }
    let nat = run("iptables-save", &["-t", "nat"]);
    assert!(
        String::from_utf8_lossy(&nat.stdout).contains("8080"),
        "no portmap rule"
    );

    // CHECK through netslot-cni and tuning. portmap's own CHECK fails in a namespace
    // without IPv6 NAT chains ("could not check ipv6 dnat"), whoever made the interface.
    let mut checked = list.clone();
    checked["plugins"].as_array_mut().unwrap().truncate(2);
    let (ok, out) = run_chain("CHECK", &checked, &env, Some(&result));
    assert!(ok, "chained CHECK at {version}: {out}");

    let (ok, out) = run_chain("DEL", &list, &env, Some(&result));
    assert!(ok, "chained DEL at {version}: {out}");
    assert_eq!(link_names_in(ns), vec!["lo"]);
    assert!(links_in_group(group).is_empty());
    let nat = run("iptables-save", &["-t", "nat"]);
    assert!(
        !String::from_utf8_lossy(&nat.stdout).contains("8080"),
        "portmap rule left"
    );
}

#[test]
fn a_conflist_chains_tuning_and_portmap_after_netslot() {
    let test = "a_conflist_chains_tuning_and_portmap_after_netslot";
    if !inside_private_world(test) {
        return;
    }
    let group = 7812;
    let daemon = Daemon::start("ch", group, &[]);
    // Debian's reference plugins (1.1.x) speak up to 1.0.0.
    chain_tuning_and_portmap("1.0.0", "chain0", group);

    // GC removes what is not listed; STATUS and VERSION answer.
    let p2 = netns_add("chain1");
    let p3 = netns_add("chain2");
    let plugin = bin("netslot-cni");
    for (id, p) in [("keep", &p2), ("drop", &p3)] {
        let (ok, out) = exec_plugin(&plugin, "ADD", &container_env(id, p, "eth0"), &plain_conf());
        assert!(ok, "{out}");
    }
    let mut gc = plain_conf();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let (ok, out) = exec_plugin(&plugin, "GC", &[], &gc);
    assert!(ok, "GC: {out}");
    assert_eq!(
        link_names_in("chain2"),
        vec!["lo"],
        "GC left the unlisted attachment"
    );
    assert!(
        link_names_in("chain1").contains(&"eth0".to_owned()),
        "GC took a valid one"
    );
    let (ok, _) = exec_plugin(&plugin, "STATUS", &[], &plain_conf());
    assert!(ok);
    let (ok, v) = exec_plugin(&plugin, "VERSION", &[], &plain_conf());
    assert!(ok);
    assert_eq!(v["supportedVersions"], json!(VERSIONS), "{v}");
    daemon.stop();
    assert!(links_in_group(group).is_empty(), "teardown left host ends");
    assert_eq!(link_names_in("chain1"), vec!["lo"]);

    // Without a daemon: ADD says "try again later", STATUS "not available", DEL succeeds.
    let (ok, v) = exec_plugin(
        &plugin,
        "ADD",
        &container_env("x", &p2, "eth0"),
        &plain_conf(),
    );
    assert!(!ok);
    assert_eq!(v["code"], 11, "{v}");
    let (ok, v) = exec_plugin(&plugin, "STATUS", &[], &plain_conf());
    assert!(!ok);
    assert_eq!(v["code"], 50, "{v}");
    let (ok, _) = exec_plugin(
        &plugin,
        "DEL",
        &container_env("x", &p2, "eth0"),
        &plain_conf(),
    );
    assert!(ok);
}

#[test]
fn the_chain_works_at_cni_version_0_4_0() {
    let test = "the_chain_works_at_cni_version_0_4_0";
    if !inside_private_world(test) {
        return;
    }
    let group = 7830;
    let daemon = Daemon::start("c4", group, &[]);
    chain_tuning_and_portmap("0.4.0", "chain4", group);
    daemon.stop();
}

/// The versions a runtime may write in a configuration, each with its result format.
const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[test]
fn add_check_del_at_each_cni_version() {
    let test = "add_check_del_at_each_cni_version";
    if !inside_private_world(test) {
        return;
    }
    let group = 7831;
    let daemon = Daemon::start("vv", group, &[]);
    let plugin = bin("netslot-cni");
    let (ok, v) = exec_plugin(&plugin, "VERSION", &[], &json!({"cniVersion": "0.3.1"}));
    assert!(ok, "{v}");
    assert_eq!(v["supportedVersions"], json!(VERSIONS), "{v}");
    for (n, version) in VERSIONS.iter().enumerate() {
        let ns = format!("v{n}");
        let path = netns_add(&ns);
        let env = container_env(&ns, &path, "eth0");
        let mut conf = plain_conf();
        conf["cniVersion"] = json!(version);

        let (ok, result) = exec_plugin(&plugin, "ADD", &env, &conf);
        assert!(ok, "ADD at {version}: {result}");
        eprintln!("ADD at {version}: {result}");
        assert_eq!(result["cniVersion"], *version);
        let ip = &result["ips"][0];
        let iface = ip["interface"].as_u64().unwrap() as usize;
        let ours = &result["interfaces"][iface];
        assert_eq!(ours["name"], "eth0");
        assert_eq!(ours["sandbox"], path.as_str());
        // IPs carry "version" up to 0.4.0 only; an interface's mtu exists from 1.1.0.
        let old = version.starts_with("0.");
        assert_eq!(ip.get("version").is_some(), old, "{version}: {result}");
        if old {
            assert_eq!(ip["version"], "4", "{result}");
        }
        for i in result["interfaces"].as_array().unwrap() {
            assert_eq!(
                i.get("mtu").is_some(),
                *version == "1.1.0" && i.get("sandbox").is_some(),
                "{version}: {result}"
            );
        }
        // Against the kernel inside the container.
        let address = ip["address"].as_str().unwrap();
        assert_eq!(addrs_in(&ns, "eth0"), vec![address.to_owned()], "{version}");
        let link = ip_in(&ns, &["link", "show", "dev", "eth0"]);
        assert_eq!(link[0]["address"], ours["mac"], "{version} mac");
        if *version == "1.1.0" {
            assert_eq!(link[0]["mtu"], ours["mtu"], "{version} mtu");
        }
        let routes = default_routes_in(&ns);
        assert_eq!(
            routes[0]["gateway"], ip["gateway"],
            "{version} default route"
        );
        assert_eq!(
            result["routes"][0]["gw"], ip["gateway"],
            "{version}: {result}"
        );

        // CHECK exists from 0.4.0: below, it is refused (code 1) before the daemon is asked.
        let mut checked = conf.clone();
        checked["prevResult"] = result.clone();
        let r = exec_plugin_raw(&plugin, "CHECK", &env, checked.to_string().as_bytes());
        if old && *version != "0.4.0" {
            assert_cni_error(&format!("CHECK at {version}"), &r, 1);
            assert_eq!(r.out["cniVersion"], *version, "{}", r.stdout);
        } else {
            assert_eq!(
                r.exit,
                Some(0),
                "CHECK at {version}: {} {}",
                r.stdout,
                r.stderr
            );
        }

        let mut del = conf.clone();
        del["prevResult"] = result.clone();
        let (ok, out) = exec_plugin(&plugin, "DEL", &env, &del);
        assert!(ok, "DEL at {version}: {out}");
        assert_eq!(link_names_in(&ns), vec!["lo"], "{version}");
    }
    daemon.stop();
    assert!(links_in_group(group).is_empty());
}

#[test]
fn check_fails_naming_what_prev_result_claims_and_the_kernel_lacks() {
    let test = "check_fails_naming_what_prev_result_claims_and_the_kernel_lacks";
    if !inside_private_world(test) {
        return;
    }
    let group = 7832;
    let daemon = Daemon::start("pr", group, &[]);
    let plugin = bin("netslot-cni");
    let path = netns_add("p0");
    let env = container_env("p0", &path, "eth0");
    for version in ["1.1.0", "1.0.0", "0.4.0"] {
        let mut conf = plain_conf();
        conf["cniVersion"] = json!(version);
        let (ok, result) = exec_plugin(&plugin, "ADD", &env, &conf);
        assert!(ok, "ADD at {version}: {result}");
        let iface = result["ips"][0]["interface"].as_u64().unwrap() as usize;
        let check = |prev: &Value| {
            let mut c = conf.clone();
            c["prevResult"] = prev.clone();
            exec_plugin_raw(&plugin, "CHECK", &env, c.to_string().as_bytes())
        };
        let r = check(&result);
        assert_eq!(
            r.exit,
            Some(0),
            "true prevResult at {version}: {}",
            r.stdout
        );

        let mut lies = Vec::new();
        let mut prev = result.clone();
        prev["ips"][0]["address"] = json!("10.1.2.3/24");
        lies.push((prev, "10.1.2.3/24"));
        let mut prev = result.clone();
        let real = result["ips"][0]["address"].as_str().unwrap();
        let wider = real.replace("/31", "/24");
        prev["ips"][0]["address"] = json!(wider);
        lies.push((prev, wider.as_str()));
        let mut prev = result.clone();
        prev["ips"]
            .as_array_mut()
            .unwrap()
            .push(json!({"address": "10.1.2.3/24", "interface": iface, "version": "4"}));
        lies.push((prev, "10.1.2.3/24"));
        let mut prev = result.clone();
        prev["interfaces"][iface]["mac"] = json!("02:de:ad:be:ef:01");
        lies.push((prev, "02:de:ad:be:ef:01"));
        let mut prev = result.clone();
        prev["routes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"dst": "10.9.0.0/16", "gw": result["ips"][0]["gateway"]}));
        lies.push((prev, "10.9.0.0/16"));
        for (prev, named) in &lies {
            let r = check(prev);
            assert_eq!(
                r.exit,
                Some(1),
                "a false prevResult passed at {version}: {prev}"
            );
            assert!(r.out["code"].as_u64().is_some(), "{}", r.stdout);
            let msg = r.out["msg"].as_str().unwrap_or_default();
            assert!(
                msg.contains(named),
                "{version}: {msg} does not name {named}"
            );
            eprintln!("CHECK at {version}: {msg}");
        }
        let (ok, out) = exec_plugin(&plugin, "DEL", &env, &conf);
        assert!(ok, "{out}");
    }
    daemon.stop();
}

/// Rust's debug syntax and errno text have no place in what a runtime shows.
fn assert_plain_words(what: &str, msg: &str) {
    for bad in ["{", "}", "\"", "AttachmentKey", "os error", "No such file"] {
        assert!(!msg.contains(bad), "{what}: {bad} in {msg:?}");
    }
}

#[test]
fn check_of_an_unknown_container_names_it_in_plain_words() {
    let test = "check_of_an_unknown_container_names_it_in_plain_words";
    if !inside_private_world(test) {
        return;
    }
    let group = 7833;
    let daemon = Daemon::start("pw", group, &[]);
    let plugin = bin("netslot-cni");
    let path = netns_add("w0");
    let env = container_env("c9", &path, "eth0");
    let mut conf = plain_conf();
    conf["cniVersion"] = json!("1.0.0");
    conf["prevResult"] = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": path}],
        "ips": [{"address": "100.64.0.1/31", "interface": 0}]});
    let r = exec_plugin_raw(&plugin, "CHECK", &env, conf.to_string().as_bytes());
    assert_cni_error("CHECK of an unknown container", &r, 3);
    let msg = r.out["msg"].as_str().unwrap();
    eprintln!("CHECK of an unknown container: {}", r.stdout);
    assert_plain_words("CHECK of an unknown container", msg);
    for named in ["c9", "eth0", "slots"] {
        assert!(msg.contains(named), "{msg} does not name {named}");
    }
    daemon.stop();
}

#[test]
fn add_without_a_daemon_is_try_again_later_naming_the_socket() {
    let test = "add_without_a_daemon_is_try_again_later_naming_the_socket";
    if !inside_private_world(test) {
        return;
    }
    let plugin = bin("netslot-cni");
    let path = netns_add("w1");
    let env = container_env("c9", &path, "eth0");
    // "try again later" naming the socket; the OS error only in details.
    let r = exec_plugin_raw(&plugin, "ADD", &env, plain_conf().to_string().as_bytes());
    assert_cni_error("ADD without a daemon", &r, 11);
    eprintln!("ADD without a daemon: {}", r.stdout);
    let msg = r.out["msg"].as_str().unwrap();
    assert_plain_words("ADD without a daemon", msg);
    assert!(msg.contains("not running"), "{msg}");
    assert!(msg.contains(&format!("no socket at {SOCKET}")), "{msg}");
    let details = r.out["details"].as_str().unwrap_or_default();
    assert!(details.contains("os error 2"), "details: {details}");
}

#[test]
fn a_daemon_killed_mid_traffic_leaves_nothing_after_restart() {
    let test = "a_daemon_killed_mid_traffic_leaves_nothing_after_restart";
    if !inside_private_world(test) {
        return;
    }
    const N: usize = 24;
    let group = 7813;
    let daemon = Daemon::start("kr", group, &["--pool-low", "4", "--pool-high", "8"]);
    let plugin = bin("netslot-cni");
    let paths: Vec<String> = (0..N).map(|i| netns_add(&format!("k{i}"))).collect();
    // Traffic: ADDs keep arriving while the daemon is killed.
    let workers: Vec<_> = (0..N)
        .map(|i| {
            let (plugin, path) = (plugin.clone(), paths[i].clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(5 * i as u64));
                let id = format!("k-{i}");
                exec_plugin(
                    &plugin,
                    "ADD",
                    &container_env(&id, &path, "eth0"),
                    &plain_conf(),
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(60));
    daemon.kill();
    let outcomes: Vec<(bool, Value)> = workers.into_iter().map(|t| t.join().unwrap()).collect();
    let added = outcomes.iter().filter(|(ok, _)| *ok).count();
    for (ok, v) in &outcomes {
        if !ok {
            assert_eq!(
                v["code"], 11,
                "an ADD during the kill must say try again: {v}"
            );
        }
    }
    eprintln!("{added} of {N} ADDs done before the kill");
    let before = links_in_group(group).len();
    assert!(
        before > 0,
        "the kill should leave slots behind to remove at start"
    );

    // The restart adopts every attachment the killed run recorded (each answered ADD at
    // least; one recorded but unanswered may join them) and removes the rest: the warm
    // pool and host ends made in a round whose record was never written.
    let daemon = Daemon::start("kr", group, &[]);
    let stats = daemon.stats();
    let adopted = stats.attachments;
    assert!(adopted >= added, "{stats:?}");
    assert_eq!(stats.removed_at_start, before - adopted, "{stats:?}");
    assert_eq!(
        links_in_group(group).len(),
        adopted,
        "host ends after restart other than the adopted ones"
    );
    let with_eth0 = (0..N)
        .filter(|i| link_names_in(&format!("k{i}")) != vec!["lo"])
        .count();
    assert_eq!(
        with_eth0, adopted,
        "containers with an interface after restart"
    );
    for (i, (ok, v)) in outcomes.iter().enumerate() {
        if *ok {
            refused_from(&paths[i], v["ips"][0]["gateway"].as_str().unwrap());
        }
    }
    assert!(
        std::fs::read_dir("/run/netslot/slots")
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "warm-pool pins left after restart"
    );
    // And it serves again: k-0 afresh.
    let (ok, v) = exec_plugin(
        &plugin,
        "DEL",
        &container_env("k-0", &paths[0], "eth0"),
        &plain_conf(),
    );
    assert!(ok, "{v}");
    let (ok, v) = exec_plugin(
        &plugin,
        "ADD",
        &container_env("k-0", &paths[0], "eth0"),
        &plain_conf(),
    );
    assert!(ok, "{v}");
    refused_from(&paths[0], v["ips"][0]["gateway"].as_str().unwrap());
    // A stop without --keep-on-exit tears down the adopted attachments too.
    daemon.stop();
    assert!(links_in_group(group).is_empty());
}

/// ifindex of host device `name`, as iproute2 shows it.
fn ifindex_of(name: &str) -> Option<u64> {
    links()
        .into_iter()
        .find(|l| l["ifname"] == name)
        .and_then(|l| l["ifindex"].as_u64())
}

/// After a restart: exactly the attachments `live` (index into `paths`, ADD result,
/// host end ifindex before) are in the daemon's table, each container still reaches its
/// host end, every host end kept its ifindex, and CHECK passes on each.
fn assert_adopted(daemon: &Daemon, plugin: &Path, paths: &[String], live: &[(usize, Value, u64)]) {
    let stats = daemon.stats();
    assert_eq!(stats.attachments, live.len(), "{stats:?}");
    for (i, result, index) in live {
        let host = result["interfaces"][0]["name"].as_str().unwrap();
        assert_eq!(ifindex_of(host), Some(*index), "host end {host} of c{i}");
        refused_from(&paths[*i], result["ips"][0]["gateway"].as_str().unwrap());
        let id = format!("c-{i}");
        let mut conf = plain_conf();
        conf["prevResult"] = result.clone();
        let (ok, v) = exec_plugin(
            plugin,
            "CHECK",
            &container_env(&id, &paths[*i], "eth0"),
            &conf,
        );
        assert!(ok, "CHECK of c{i} after restart: {v}");
    }
}

#[test]
fn a_restart_adopts_every_live_attachment_and_drops_dead_ones() {
    let test = "a_restart_adopts_every_live_attachment_and_drops_dead_ones";
    if !inside_private_world(test) {
        return;
    }
    const N: usize = 50;
    let group = 7831;
    // A warm pool too: its slots are not adopted, and new ids must avoid adopted ones.
    let args = ["--keep-on-exit", "--pool-low", "2", "--pool-high", "4"];
    let daemon = Daemon::start("ad", group, &args);
    let plugin = bin("netslot-cni");
    let paths: Vec<String> = (0..N).map(|i| netns_add(&format!("c{i}"))).collect();
    let mut live: Vec<(usize, Value, u64)> = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let id = format!("c-{i}");
        let (ok, v) = exec_plugin(
            &plugin,
            "ADD",
            &container_env(&id, path, "eth0"),
            &plain_conf(),
        );
        assert!(ok, "ADD c{i}: {v}");
        let host = v["interfaces"][0]["name"].as_str().unwrap().to_owned();
        let index = ifindex_of(&host).unwrap_or_else(|| panic!("no host end {host}"));
        live.push((i, v, index));
    }
    assert_adopted(&daemon, &plugin, &paths, &live);

    // SIGTERM with --keep-on-exit, then a new start.
    daemon.stop();
    let daemon = Daemon::start("ad", group, &args);
    assert_adopted(&daemon, &plugin, &paths, &live);

    // SIGKILL; two containers' namespaces go while the daemon is down. c0's is deleted
    // outright (the kernel destroys its veth pair with it); c1's path is deleted while a
    // process still holds the namespace, so its host end is still there at the start,
    // and the start must judge it (its recorded path no longer opens) and remove it.
    daemon.kill();
    let (dead, dead_result, _) = live.remove(0);
    let (held, held_result, _) = live.remove(0);
    let host_of = |r: &Value| r["interfaces"][0]["name"].as_str().unwrap().to_owned();
    let (dead_host, held_host) = (host_of(&dead_result), host_of(&held_result));
    let mut holder = Command::new("ip")
        .args(["netns", "exec", &format!("c{held}"), "sleep", "600"])
        .spawn()
        .expect("start a process in c1");
    wait_for("the holder in its namespace", || {
        std::fs::read_to_string(format!("/proc/{}/comm", holder.id()))
            .is_ok_and(|c| c.trim() == "sleep")
    });
    for i in [dead, held] {
        assert!(run("ip", &["netns", "del", &format!("c{i}")])
            .status
            .success());
    }
    assert!(
        ifindex_of(&held_host).is_some(),
        "the held namespace's host end went early"
    );
    let daemon = Daemon::start("ad", group, &args);
    assert_eq!(
        ifindex_of(&dead_host),
        None,
        "host end of the deleted container"
    );
    assert_eq!(
        ifindex_of(&held_host),
        None,
        "host end of the unlisted namespace"
    );
    let _ = holder.kill();
    let _ = holder.wait();
    assert_adopted(&daemon, &plugin, &paths, &live);
    // Its attachment is gone from the table: CHECK says so, DEL is a no-op.
    let mut conf = plain_conf();
    conf["prevResult"] = dead_result.clone();
    let gone = format!("c-{dead}");
    let r = exec_plugin_raw(
        &plugin,
        "CHECK",
        &container_env(&gone, &paths[dead], "eth0"),
        conf.to_string().as_bytes(),
    );
    assert_ne!(
        r.exit,
        Some(0),
        "CHECK of the dead container passed: {}",
        r.stdout
    );
    let (ok, v) = exec_plugin(
        &plugin,
        "DEL",
        &container_env(&gone, &paths[dead], "eth0"),
        &plain_conf(),
    );
    assert!(ok, "DEL of the dead container: {v}");

    // A new ADD works beside the adopted ones, then DEL of everything leaves nothing.
    let path = netns_add("fresh");
    let (ok, v) = exec_plugin(
        &plugin,
        "ADD",
        &container_env("fresh", &path, "eth0"),
        &plain_conf(),
    );
    assert!(ok, "ADD beside adopted ones: {v}");
    refused_from(&path, v["ips"][0]["gateway"].as_str().unwrap());
    let (ok, v) = exec_plugin(
        &plugin,
        "DEL",
        &container_env("fresh", &path, "eth0"),
        &plain_conf(),
    );
    assert!(ok, "{v}");
    for (i, _, _) in &live {
        let id = format!("c-{i}");
        let (ok, v) = exec_plugin(
            &plugin,
            "DEL",
            &container_env(&id, &paths[*i], "eth0"),
            &plain_conf(),
        );
        assert!(ok, "DEL c{i}: {v}");
        assert_eq!(
            link_names_in(&format!("c{i}")),
            vec!["lo"],
            "c{i} after DEL"
        );
    }
    // What the pool's groups still hold is the warm pool, nothing of an attachment.
    let stats = daemon.stats();
    assert_eq!(stats.attachments, 0, "{stats:?}");
    let in_group = links_in_group(group);
    assert_eq!(
        in_group.len(),
        stats.pooled,
        "host ends left after DEL: {in_group:?}"
    );
    for (_, result, _) in &live {
        let host = result["interfaces"][0]["name"].as_str().unwrap();
        assert_eq!(ifindex_of(host), None, "host end {host} left after DEL");
    }
    // The warm pool goes with a stop that does not keep: a plain start takes over.
    daemon.kill();
    let daemon = Daemon::start("ad", group, &[]);
    assert_eq!(daemon.stats().attachments, 0);
    daemon.stop();
    assert!(
        links_in_group(group).is_empty(),
        "host ends left at the end"
    );
}

#[test]
fn a_peer_outside_the_allowed_group_is_refused() {
    let test = "a_peer_outside_the_allowed_group_is_refused";
    if !inside_private_world(test) {
        return;
    }
    let group = 7814;
    let daemon = Daemon::start(
        "pr",
        group,
        &["--allow-gid", "4242", "--socket-mode", "666"],
    );
    // A copy that `nobody` can execute (the build tree may not be reachable).
    let copy = Path::new("/run/netslot/netslot-cni");
    std::fs::copy(bin("netslot-cni"), copy).unwrap();
    let path = netns_add("p0");
    // A namespace uid 65534 made itself (in its own user namespace): one it can enter.
    let own = OwnNetns::new(65534, 4242);
    let as_user = |regid: &str, command: &str, netns: &str| {
        let mut child = Command::new("setpriv")
            .args([
                "--reuid=65534",
                &format!("--regid={regid}"),
                "--clear-groups",
            ])
            .arg(copy)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "p")
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(plain_conf().to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.success(), v)
    };
    let (ok, v) = as_user("65534", "ADD", &path);
    assert!(!ok, "nobody was served: {v}");
    assert!(
        v["msg"].as_str().unwrap().contains("may not use netslot"),
        "{v}"
    );
    assert_eq!(link_names_in("p0"), vec!["lo"]);
    assert!(links_in_group(group).is_empty());
    // The allowed group is served, in a namespace it could enter itself...
    let (ok, v) = as_user("4242", "ADD", &own.path);
    assert!(ok, "group 4242 was refused: {v}");
    assert!(own.link_names().contains(&"eth0".to_owned()));
    let (ok, v) = as_user("4242", "DEL", &own.path);
    assert!(ok, "{v}");
    assert_eq!(own.link_names(), vec!["lo"]);
    // ...and not in root's, which it can open (ip netns add makes it readable by all) but
    // not enter.
    let (ok, v) = as_user("4242", "ADD", &path);
    assert!(!ok, "group 4242 attached into root's namespace: {v}");
    assert!(
        v["msg"].as_str().unwrap().contains("could not enter"),
        "{v}"
    );
    assert_eq!(link_names_in("p0"), vec!["lo"]);
    daemon.stop();
    assert!(links_in_group(group).is_empty());
}

#[test]
fn the_warm_pool_hands_out_pinned_slots_and_takes_them_back() {
    let test = "the_warm_pool_hands_out_pinned_slots_and_takes_them_back";
    if !inside_private_world(test) {
        return;
    }
    let group = 7815;
    let daemon = Daemon::start(
        "wp",
        group,
        &["--pool-low", "4", "--pool-high", "8", "--no-recycle"],
    );
    let sock = Path::new(SOCKET);
    // The pool fills when idle.
    daemon.wait_pooled(4);
    let r = netslot::daemon::client::call(sock, Operation::Acquire).unwrap();
    assert!(r.ok, "{:?}", r.error);
    let slot = r.slot.unwrap();
    // The kernel's view through the pin: the address inside, reachability to the host end.
    let name = slot.netns.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(slot.netns, Path::new("/run/netslot/slots").join(&name));
    let ns = std::fs::File::open(&slot.netns).unwrap();
    let addrs = in_netns(ns.as_fd(), || ipv4_addrs("eth0"));
    assert_eq!(addrs, vec![slot.address.clone()]);
    refused_from(slot.netns.to_str().unwrap(), &slot.gateway);
    drop(ns);
    let r = netslot::daemon::client::call(sock, Operation::Release { name: name.clone() }).unwrap();
    assert!(r.ok, "{:?}", r.error);
    assert!(!slot.netns.exists(), "pin left after release");
    assert!(
        !links_in_group(group)
            .iter()
            .any(|l| l["ifname"] == name.as_str()),
        "host end left after release"
    );
    let r = netslot::daemon::client::call(sock, Operation::Release { name }).unwrap();
    assert!(!r.ok, "a second release must fail");
    daemon.stop();
    assert!(links_in_group(group).is_empty(), "teardown left host ends");
    assert_eq!(
        std::fs::read_dir("/run/netslot/slots")
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "teardown left pins"
    );
}

/// A `--kind microvm` daemon: each acquired slot's answer carries its guest network, the
/// tap it names is in the namespace it names (owned by the VMM's uid), and an attach is
/// refused, its namespace left alone.
#[test]
fn a_microvm_daemon_hands_out_slots_with_their_guest_network() {
    let test = "a_microvm_daemon_hands_out_slots_with_their_guest_network";
    if !inside_private_world(test) {
        return;
    }
    let group = 7870;
    let daemon = Daemon::start(
        "mvd",
        group,
        &[
            "--kind",
            "microvm",
            "--tap-uid",
            "4242",
            "--pool-low",
            "2",
            "--pool-high",
            "2",
            "--no-recycle",
        ],
    );
    let sock = Path::new(SOCKET);
    daemon.wait_pooled(2);
    let mut guest_macs = Vec::new();
    let mut names = Vec::new();
    for _ in 0..2 {
        let r = netslot::daemon::client::call(sock, Operation::Acquire).unwrap();
        assert!(r.ok, "{:?}", r.error);
        let slot = r.slot.unwrap();
        let mv = slot
            .microvm
            .clone()
            .expect("a microVM slot's answer has `microvm`");
        assert_eq!(mv.netns.as_deref(), slot.netns.to_str(), "{mv:?}");
        assert_eq!(
            mv.guest_address, slot.address,
            "the guest holds the slot's address"
        );
        assert_eq!(mv.gateway.to_string(), slot.gateway);
        assert_eq!(mv.tap, "tap0");
        assert_eq!(mv.firecracker.iface_id, "eth0");
        assert_eq!(mv.firecracker.host_dev_name, mv.tap);
        assert_eq!(mv.firecracker.guest_mac, mv.guest_mac);
        let mac = netslot::parse_mac(&mv.guest_mac).unwrap();
        assert!(netslot::is_unicast_mac(&mac), "{mv:?}");
        guest_macs.push(mac);
        // The kernel's view, through the pin the answer names.
        let ns = std::fs::File::open(&slot.netns).unwrap();
        let dev = mv.tap.clone();
        let tap = in_netns(ns.as_fd(), move || ip_json(&["-d", "link", "show", &dev]));
        let info = &tap[0]["linkinfo"];
        assert_eq!(info["info_kind"], "tun", "{tap}");
        assert_eq!(info["info_data"]["type"], "tap", "{tap}");
        assert_eq!(info["info_data"]["user"], 4242, "{tap}");
        names.push(slot.name);
    }
    assert_ne!(guest_macs[0], guest_macs[1], "guest MACs are per slot");

    let c1 = netns_add("mvc1");
    let r = netslot::daemon::client::call(sock, attach_op("c1", &c1, false)).unwrap();
    let e = r.error.expect("an attach to a microVM daemon is refused");
    assert_eq!(e.code, netslot::daemon::protocol::ErrorCode::BadRequest);
    assert!(e.message.contains("microVM"), "{}", e.message);
    assert_eq!(
        link_names_in("mvc1"),
        ["lo"],
        "the container's namespace was touched"
    );

    for name in &names {
        release(sock, name);
    }
    daemon.stop();
    assert!(links_in_group(group).is_empty(), "teardown left host ends");
}

/// The namespace id (nsfs NS_GET_ID: the netns cookie, never reused) of the namespace
/// mounted at `path`.
fn ns_cookie(path: &Path) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    netslot::ns_id(f.as_fd()).unwrap_or_else(|e| panic!("NS_GET_ID {}: {e}", path.display()))
}

/// Acquires a warm slot through the daemon; (name, pin, namespace id).
fn acquire(sock: &Path) -> (String, PathBuf, u64) {
    let r = netslot::daemon::client::call(sock, Operation::Acquire).unwrap();
    assert!(r.ok, "{:?}", r.error);
    let slot = r.slot.unwrap();
    let id = ns_cookie(&slot.netns);
    (slot.name, slot.netns, id)
}

fn release(sock: &Path, name: &str) {
    let op = Operation::Release {
        name: name.to_owned(),
    };
    let r = netslot::daemon::client::call(sock, op).unwrap();
    assert!(r.ok, "release {name}: {:?}", r.error);
}

/// Five cycles of 20 acquires and 20 releases against a warm pool of 20..40: released
/// slots go back to the pool (the same namespaces, by id, come round again) and a slot a
/// tenant changed is destroyed and replaced; with `--no-recycle` every claim gets a new
/// namespace.
#[test]
fn released_slots_are_recycled_unless_a_tenant_changed_them() {
    let test = "released_slots_are_recycled_unless_a_tenant_changed_them";
    if !inside_private_world(test) {
        return;
    }
    let group = 7816;
    let pool = ["--pool-low", "20", "--pool-high", "40"];
    let distinct = |extra: &[&str]| {
        let mut args = pool.to_vec();
        args.extend_from_slice(extra);
        let daemon = Daemon::start("wr", group, &args);
        let sock = Path::new(SOCKET);
        daemon.wait_pooled(20);
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..5 {
            let held: Vec<(String, PathBuf, u64)> = (0..20).map(|_| acquire(sock)).collect();
            for (name, _, id) in held {
                ids.insert(id);
                release(sock, &name);
            }
        }
        let stats = daemon.stats();
        daemon.stop();
        assert!(links_in_group(group).is_empty(), "teardown left host ends");
        (ids.len(), stats)
    };
    let (recycled, stats) = distinct(&[]);
    eprintln!("recycling: {recycled} namespaces for 100 claims, {stats:?}");
    assert!(
        recycled <= 40,
        "{recycled} namespaces for 100 claims: {stats:?}"
    );
    assert_eq!(stats.recycled, 100, "{stats:?}");
    assert_eq!(stats.destroyed_on_release, 0, "{stats:?}");
    let (destroyed, stats) = distinct(&["--no-recycle"]);
    eprintln!("--no-recycle: {destroyed} namespaces for 100 claims, {stats:?}");
    assert_eq!(destroyed, 100, "{stats:?}");
    assert_eq!(stats.destroyed_on_release, 100, "{stats:?}");

    // A tenant's change: an address added inside the slot. The slot is destroyed on
    // release (pin and host end gone); its replacement carries no trace of it.
    let daemon = Daemon::start("wr", group, &["--pool-low", "2", "--pool-high", "2"]);
    let sock = Path::new(SOCKET);
    daemon.wait_pooled(2);
    let (name, pin, _) = acquire(sock);
    let ns = std::fs::File::open(&pin).unwrap();
    in_netns(ns.as_fd(), || {
        let r = run("ip", &["addr", "add", "10.77.0.1/24", "dev", "eth0"]);
        assert!(r.status.success(), "{r:?}");
    });
    drop(ns);
    release(sock, &name);
    assert!(!pin.exists(), "a changed slot's pin left after release");
    assert!(
        !links_in_group(group)
            .iter()
            .any(|l| l["ifname"] == name.as_str()),
        "a changed slot's host end left after release"
    );
    let stats = daemon.stats();
    assert_eq!(
        (stats.recycled, stats.destroyed_on_release),
        (0, 1),
        "{stats:?}"
    );
    for _ in 0..3 {
        let (name, pin, _) = acquire(sock);
        let ns = std::fs::File::open(&pin).unwrap();
        let addrs = in_netns(ns.as_fd(), || ipv4_addrs("eth0"));
        assert!(
            !addrs.iter().any(|a| a.starts_with("10.77.")),
            "{name}: {addrs:?}"
        );
        drop(ns);
        release(sock, &name);
    }
    daemon.stop();
    assert!(links_in_group(group).is_empty(), "teardown left host ends");
}

/// A single-plugin configuration for network `name`.
fn conf_named(name: &str) -> Value {
    json!({"cniVersion": "1.1.0", "name": name, "type": "netslot-cni", "socket": SOCKET})
}

/// The default routes inside namespace `ns`, as iproute2 reports them.
fn default_routes_in(ns: &str) -> Vec<Value> {
    ip_in(ns, &["-4", "route", "show", "default"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Whether a CNI result lists a default route.
fn lists_default_route(result: &Value) -> bool {
    result["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["dst"] == "0.0.0.0/0")
}

#[test]
fn gc_of_one_network_leaves_another_networks_attachments() {
    let test = "gc_of_one_network_leaves_another_networks_attachments";
    if !inside_private_world(test) {
        return;
    }
    let group = 7816;
    let daemon = Daemon::start("nw", group, &[]);
    let plugin = bin("netslot-cni");
    let pa = netns_add("na1");
    let pb = netns_add("nb1");
    let (ok, ra) = exec_plugin(
        &plugin,
        "ADD",
        &container_env("a1", &pa, "eth0"),
        &conf_named("netA"),
    );
    assert!(ok, "ADD a1 on netA: {ra}");
    let (ok, rb) = exec_plugin(
        &plugin,
        "ADD",
        &container_env("b1", &pb, "eth0"),
        &conf_named("netB"),
    );
    assert!(ok, "ADD b1 on netB: {rb}");
    let b_addr = rb["ips"][0]["address"].as_str().unwrap().to_owned();
    let b_gw = rb["ips"][0]["gateway"].as_str().unwrap().to_owned();
    assert_eq!(addrs_in("nb1", "eth0"), vec![b_addr.clone()]);

    // GC of netA, with a1 valid: nothing of netA goes, and netB is not netA's to judge.
    let mut gc = conf_named("netA");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "a1", "ifname": "eth0"}]);
    let (ok, out) = exec_plugin(&plugin, "GC", &[], &gc);
    assert!(ok, "GC netA: {out}");
    assert_eq!(
        link_names_in("nb1"),
        vec!["lo", "eth0"],
        "GC of netA touched netB's b1"
    );
    assert_eq!(
        addrs_in("nb1", "eth0"),
        vec![b_addr],
        "b1's address after GC of netA"
    );
    assert_eq!(link_names_in("na1"), vec!["lo", "eth0"], "a1 after GC");
    assert_eq!(links_in_group(group).len(), 2, "host ends after GC of netA");
    refused_from(&pb, &b_gw);
    assert_eq!(daemon.stats().attachments, 2);

    // GC of netB with nothing valid takes b1, and only b1.
    let mut gc = conf_named("netB");
    gc["cni.dev/valid-attachments"] = json!([]);
    let (ok, out) = exec_plugin(&plugin, "GC", &[], &gc);
    assert!(ok, "GC netB: {out}");
    assert_eq!(link_names_in("nb1"), vec!["lo"], "GC of netB left b1");
    assert_eq!(
        link_names_in("na1"),
        vec!["lo", "eth0"],
        "GC of netB took a1"
    );
    assert_eq!(links_in_group(group).len(), 1, "host ends after GC of netB");

    // The same container id and ifname on netB again is another attachment than a1's.
    let (ok, out) = exec_plugin(
        &plugin,
        "DEL",
        &container_env("a1", &pa, "eth0"),
        &conf_named("netB"),
    );
    assert!(ok, "DEL a1 on netB (unknown there): {out}");
    assert_eq!(
        link_names_in("na1"),
        vec!["lo", "eth0"],
        "DEL on netB took a1"
    );
    let (ok, out) = exec_plugin(
        &plugin,
        "DEL",
        &container_env("a1", &pa, "eth0"),
        &conf_named("netA"),
    );
    assert!(ok, "DEL a1 on netA: {out}");
    assert_eq!(link_names_in("na1"), vec!["lo"]);
    assert!(links_in_group(group).is_empty(), "host ends left");
    daemon.stop();
}

#[test]
fn a_second_interface_in_a_container_gets_its_address_and_no_default_route() {
    let test = "a_second_interface_in_a_container_gets_its_address_and_no_default_route";
    if !inside_private_world(test) {
        return;
    }
    let group = 7817;
    let daemon = Daemon::start("mi", group, &[]);
    let plugin = bin("netslot-cni");
    let path = netns_add("m1");
    let (ok, r0) = exec_plugin(
        &plugin,
        "ADD",
        &container_env("c1", &path, "eth0"),
        &conf_named("slots"),
    );
    assert!(ok, "ADD eth0: {r0}");
    assert!(lists_default_route(&r0), "eth0's result: {r0}");
    let gw0 = r0["ips"][0]["gateway"].as_str().unwrap().to_owned();

    // A second interface, on another network (as Multus adds one).
    let (ok, r1) = exec_plugin(
        &plugin,
        "ADD",
        &container_env("c1", &path, "net1"),
        &conf_named("side"),
    );
    assert!(ok, "ADD net1: {r1}");
    eprintln!("net1's result: {r1}");
    assert!(
        !lists_default_route(&r1),
        "net1's result lists a default route: {r1}"
    );
    let ip1 = &r1["ips"][0];
    assert_eq!(
        r1["interfaces"][ip1["interface"].as_u64().unwrap() as usize]["name"],
        "net1"
    );
    let addr1 = ip1["address"].as_str().unwrap().to_owned();
    let gw1 = ip1["gateway"].as_str().unwrap().to_owned();
    assert_ne!(gw1, gw0);

    // The kernel's view: one default route, via eth0's peer; net1 holds its /31.
    let routes = default_routes_in("m1");
    assert_eq!(routes.len(), 1, "default routes: {routes:?}");
    assert_eq!(routes[0]["dev"], "eth0", "{routes:?}");
    assert_eq!(routes[0]["gateway"], gw0.as_str(), "{routes:?}");
    assert_eq!(addrs_in("m1", "net1"), vec![addr1]);
    // Both host ends answer from inside: net1's over its /31, eth0's too.
    refused_from(&path, &gw1);
    refused_from(&path, &gw0);

    // DEL net1: eth0 stays, with its route, and works.
    let (ok, out) = exec_plugin(
        &plugin,
        "DEL",
        &container_env("c1", &path, "net1"),
        &conf_named("side"),
    );
    assert!(ok, "DEL net1: {out}");
    assert_eq!(link_names_in("m1"), vec!["lo", "eth0"]);
    let routes = default_routes_in("m1");
    assert_eq!(routes.len(), 1, "default routes after DEL net1: {routes:?}");
    assert_eq!(routes[0]["gateway"], gw0.as_str());
    refused_from(&path, &gw0);

    // DEL eth0: nothing is left.
    let (ok, out) = exec_plugin(
        &plugin,
        "DEL",
        &container_env("c1", &path, "eth0"),
        &conf_named("slots"),
    );
    assert!(ok, "DEL eth0: {out}");
    assert_eq!(link_names_in("m1"), vec!["lo"]);
    assert!(default_routes_in("m1").is_empty());
    assert!(links_in_group(group).is_empty(), "host ends left");
    assert_eq!(daemon.stats().attachments, 0);
    daemon.stop();
}

#[test]
fn two_interfaces_of_one_container_in_one_round_share_one_default_route() {
    let test = "two_interfaces_of_one_container_in_one_round_share_one_default_route";
    if !inside_private_world(test) {
        return;
    }
    let group = 7818;
    // A long window, so that both ADDs land in the same round.
    let daemon = Daemon::start("mr", group, &["--window-us", "500000"]);
    let plugin = bin("netslot-cni");
    let path = netns_add("m2");
    let barrier = Arc::new(Barrier::new(2));
    let adds: Vec<_> = ["eth0", "net1"]
        .into_iter()
        .map(|ifname| {
            let (plugin, path, barrier) = (plugin.clone(), path.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                exec_plugin(
                    &plugin,
                    "ADD",
                    &container_env("c2", &path, ifname),
                    &conf_named("slots"),
                )
            })
        })
        .collect();
    let results: Vec<(bool, Value)> = adds.into_iter().map(|t| t.join().unwrap()).collect();
    for (ok, r) in &results {
        assert!(ok, "ADD: {r}");
    }
    let stats = daemon.stats();
    assert_eq!(
        stats.attach_batches, 1,
        "the ADDs did not share a round: {stats:?}"
    );
    let routed: Vec<&Value> = results
        .iter()
        .map(|(_, r)| r)
        .filter(|r| lists_default_route(r))
        .collect();
    assert_eq!(
        routed.len(),
        1,
        "results listing a default route: {results:?}"
    );
    let ip = &routed[0]["ips"][0];
    let dev = routed[0]["interfaces"][ip["interface"].as_u64().unwrap() as usize]["name"].clone();
    let routes = default_routes_in("m2");
    assert_eq!(routes.len(), 1, "default routes: {routes:?}");
    assert_eq!(routes[0]["dev"], dev, "{routes:?}");
    assert_eq!(routes[0]["gateway"], ip["gateway"], "{routes:?}");
    for (_, r) in &results {
        refused_from(&path, r["ips"][0]["gateway"].as_str().unwrap());
    }
    daemon.stop();
    assert!(links_in_group(group).is_empty(), "teardown left host ends");
    assert_eq!(link_names_in("m2"), vec!["lo"]);
}

// The daemon's security model (docs/serve.md, "Security model").

/// A process of `uid`/`gid` holding a user namespace it created and a network namespace
/// that user namespace owns: what an unprivileged (rootless) container runtime makes, and
/// a namespace that uid can enter. Killed on drop.
struct OwnNetns {
    child: Child,
    path: String,
}

impl OwnNetns {
    fn new(uid: u32, gid: u32) -> Self {
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let child = Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
                "unshare",
                "--user",
                "--net",
                "sleep",
                "600",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("setpriv unshare");
        let path = format!("/proc/{}/ns/net", child.id());
        wait_for("the holder in its own network namespace", || {
            std::fs::read_link(&path).is_ok_and(|l| l != ours)
        });
        Self { child, path }
    }

    /// `ip -j <args>` inside the namespace.
    fn ip(&self, args: &[&str]) -> Value {
        let ns = std::fs::File::open(&self.path).unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        in_netns(ns.as_fd(), move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            ip_json(&a)
        })
    }

    fn link_names(&self) -> Vec<String> {
        self.ip(&["link", "show"])
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| l["ifname"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for OwnNetns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An attach request of container `id` (interface eth0) naming `netns`.
fn attach_op(id: &str, netns: &str, by_fd: bool) -> Operation {
    Operation::Attach {
        key: netslot::daemon::protocol::AttachmentKey {
            network: String::new(),
            container_id: id.into(),
            ifname: "eth0".into(),
        },
        netns: netns.into(),
        netns_fd: by_fd,
        mtu: None,
        mac: None,
        ipv4: None,
        ipv6: None,
    }
}

/// Sends `op` with the namespace at `path` as an fd (opened by the calling thread, with
/// `flags`); the answer and how long it took.
fn attach_by_fd(
    id: &str,
    path: &str,
    flags: libc::c_int,
) -> (netslot::daemon::protocol::Response, Duration) {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
    let started = Instant::now();
    let r = netslot::daemon::client::call_with_fd(
        Path::new(SOCKET),
        attach_op(id, path, true),
        f.as_fd(),
    )
    .unwrap_or_else(|e| panic!("attach {id} by fd: {e}"));
    (r, started.elapsed())
}

/// Sends raw bytes on a fresh connection; the first answer line as JSON and how long it
/// took, or why none came within 5 s.
fn ask_raw(line: &[u8]) -> Result<(Value, Duration), String> {
    use std::io::{BufRead, BufReader};
    let s = std::os::unix::net::UnixStream::connect(SOCKET).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    // A refused connection is answered and closed without its line being read: a failed
    // send still leaves that answer to read.
    let sent = (&s).write_all(line);
    let mut answer = String::new();
    BufReader::new(&s)
        .read_line(&mut answer)
        .map_err(|e| format!("no answer within 5 s: {e}"))?;
    let took = started.elapsed();
    if answer.is_empty() {
        return Err(format!("closed without an answer (send: {sent:?})"));
    }
    serde_json::from_str(&answer)
        .map(|v| (v, took))
        .map_err(|e| format!("answer {answer:?}: {e}"))
}

fn code(r: &netslot::daemon::protocol::Response) -> String {
    r.error
        .as_ref()
        .map(|e| {
            serde_json::to_value(e.code)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .unwrap_or_else(|| "ok".into())
}

#[test]
fn an_allowed_peer_cannot_attach_into_a_namespace_it_could_not_enter() {
    let test = "an_allowed_peer_cannot_attach_into_a_namespace_it_could_not_enter";
    if !inside_private_world(test) {
        return;
    }
    let group = 7819;
    let daemon = Daemon::start(
        "pe",
        group,
        &["--allow-gid", "4242", "--socket-mode", "666"],
    );
    let victim = netns_add("victim");
    let links_before = ip_in("victim", &["-d", "link", "show"]);
    let routes_before = ip_in("victim", &["route", "show", "table", "all"]);

    // The path form, as in the report: uid 65534 with the allowed group.
    let line = format!(
        "{{\"v\":1,\"op\":\"attach\",\"container_id\":\"x\",\"ifname\":\"evil0\",\"netns\":\"{victim}\"}}\n"
    );
    let (v, _) = as_ids(65534, 4242, move || ask_raw(line.as_bytes())).unwrap();
    assert_eq!(v["error"]["code"], "not-allowed", "path form: {v}");
    // The fd form: nobody can open the pin (nsfs files are readable by all), and that
    // proves nothing: it cannot enter it.
    let path = victim.clone();
    let (r, _) = as_ids(65534, 4242, move || {
        attach_by_fd("x", &path, libc::O_RDONLY)
    });
    assert_eq!(code(&r), "not-allowed", "fd form: {r:?}");
    let msg = r.error.unwrap().message;
    assert!(
        msg.contains("container x: attach") && msg.contains("could not enter"),
        "{msg}"
    );
    // Nothing changed in the victim.
    assert_eq!(ip_in("victim", &["-d", "link", "show"]), links_before);
    assert_eq!(
        ip_in("victim", &["route", "show", "table", "all"]),
        routes_before
    );
    assert!(links_in_group(group).is_empty(), "a host end was made");

    // Its own namespace (made in its own user namespace) is served.
    let own = OwnNetns::new(65534, 4242);
    let path = own.path.clone();
    let (r, _) = as_ids(65534, 4242, move || {
        attach_by_fd("mine", &path, libc::O_RDONLY)
    });
    assert!(r.ok, "own namespace refused: {:?}", r.error);
    assert!(own.link_names().contains(&"eth0".to_owned()));
    let routes = own.ip(&["route", "show", "default"]);
    assert_eq!(routes.as_array().map(Vec::len), Some(1), "{routes}");
    // Another allowed uid may neither check nor detach it.
    let key = netslot::daemon::protocol::AttachmentKey {
        network: String::new(),
        container_id: "mine".into(),
        ifname: "eth0".into(),
    };
    for op in [
        Operation::Check { key: key.clone() },
        Operation::Detach { key: key.clone() },
    ] {
        let r = as_ids(65533, 4242, move || {
            netslot::daemon::client::call(Path::new(SOCKET), op).unwrap()
        });
        assert_eq!(code(&r), "not-allowed", "another uid: {r:?}");
    }
    assert!(own.link_names().contains(&"eth0".to_owned()));
    let r = as_ids(65534, 4242, move || {
        netslot::daemon::client::call(Path::new(SOCKET), Operation::Detach { key }).unwrap()
    });
    assert!(r.ok, "its own detach: {:?}", r.error);
    assert_eq!(own.link_names(), vec!["lo"]);
    daemon.stop();
}

#[test]
fn targets_that_are_not_network_namespaces_are_refused_at_once() {
    let test = "targets_that_are_not_network_namespaces_are_refused_at_once";
    if !inside_private_world(test) {
        return;
    }
    let group = 7820;
    let daemon = Daemon::start("nt", group, &[]);
    let t1 = netns_add("t1");
    let fifo = "/run/netslot/fifo";
    assert!(run("mkfifo", &[fifo]).status.success());
    let link = "/run/netslot/link-to-t1";
    std::os::unix::fs::symlink(&t1, link).unwrap();

    // status keeps being answered, promptly, while the refusals go on.
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let prober = {
        let (stop, answered) = (stop.clone(), answered.clone());
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                match ask_raw(b"{\"v\":1,\"op\":\"status\"}\n") {
                    Ok((v, took)) if v["ok"] == true => slowest = slowest.max(took),
                    other => return Err(format!("status: {other:?}")),
                }
                answered.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(slowest)
        })
    };
    wait_for("a first status answer", || {
        answered.load(Ordering::SeqCst) > 0
    });
    // Path form (uid 0 only): never opened blocking, never followed.
    for (path, want) in [
        (fifo, "not a namespace file (a FIFO"),
        ("/dev/null", "not a namespace file (a character device"),
        (link, "symbolic link"),
        ("/proc/self/ns/uts", "symbolic link"),
        ("/proc/self/ns/net", "symbolic link"),
    ] {
        let line = format!(
            "{{\"v\":1,\"op\":\"attach\",\"container_id\":\"c\",\"ifname\":\"eth0\",\"netns\":\"{path}\"}}\n"
        );
        let (v, took) = ask_raw(line.as_bytes()).unwrap_or_else(|e| panic!("{path}: {e}"));
        eprintln!("{path}: {took:?}: {v}");
        assert_eq!(v["error"]["code"], "netns", "{path}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(want) && msg.contains("container c: attach"),
            "{path}: {msg}"
        );
        assert!(
            took < Duration::from_millis(100),
            "{path}: answered after {took:?}"
        );
    }
    // Fd form: whatever the fd is, only fstat, fstatfs and nsfs ioctls touch it.
    let nonblock = libc::O_RDONLY | libc::O_NONBLOCK;
    for (path, flags, want_code, want) in [
        (fifo, nonblock, "netns", "not a namespace file (a FIFO"),
        (
            "/dev/null",
            nonblock,
            "netns",
            "not a namespace file (a character device",
        ),
        (
            "/proc/self/ns/uts",
            nonblock,
            "netns",
            "a uts namespace, not a network namespace",
        ),
        (t1.as_str(), libc::O_PATH, "netns", "O_PATH"),
        (
            "/proc/self/ns/net",
            nonblock,
            "not-allowed",
            "the daemon's own network namespace",
        ),
    ] {
        let (r, took) = attach_by_fd("c", path, flags);
        eprintln!("fd of {path}: {took:?}: {r:?}");
        assert_eq!(code(&r), want_code, "fd of {path}: {r:?}");
        let msg = r.error.unwrap().message;
        assert!(msg.contains(want), "fd of {path}: {msg}");
        assert!(
            took < Duration::from_millis(100),
            "fd of {path}: answered after {took:?}"
        );
    }
    // And status is still answered after them.
    let before = answered.load(Ordering::SeqCst);
    let started = Instant::now();
    while answered.load(Ordering::SeqCst) < before + 2 && started.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    let slowest = prober.join().unwrap().unwrap();
    let answered = answered.load(Ordering::SeqCst);
    eprintln!("status answered {answered} times, slowest {slowest:?}");
    assert!(answered >= before + 2, "status stopped being answered");
    assert!(
        slowest < Duration::from_millis(100),
        "slowest status: {slowest:?}"
    );
    assert!(
        links_in_group(group).is_empty(),
        "a refused target got a slot"
    );
    // A real namespace, by path and by fd, is served.
    let r = netslot::daemon::client::call(Path::new(SOCKET), attach_op("p", &t1, false)).unwrap();
    assert!(r.ok, "path form: {:?}", r.error);
    let t2 = netns_add("t2");
    let (r, _) = attach_by_fd("f", &t2, libc::O_RDONLY);
    assert!(r.ok, "fd form: {:?}", r.error);
    assert_eq!(r.attachment.unwrap().netns, Path::new(&t2));
    assert_eq!(link_names_in("t2"), vec!["lo", "eth0"]);
    daemon.stop();
}

#[test]
fn abusive_lines_are_refused_and_memory_comes_back() {
    let test = "abusive_lines_are_refused_and_memory_comes_back";
    if !inside_private_world(test) {
        return;
    }
    let daemon = Daemon::start("al", 7821, &[]);
    let pid = daemon.child.id();
    let idle = vm_rss_kib(pid);
    // 8 clients each send 100 MB without a newline.
    const MB: usize = 1 << 20;
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(idle));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                peak.fetch_max(vm_rss_kib(pid), std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                use std::io::{BufRead, BufReader};
                let s = std::os::unix::net::UnixStream::connect(SOCKET).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let writer = {
                    let s = s.try_clone().unwrap();
                    std::thread::spawn(move || {
                        let chunk = vec![b'a'; MB];
                        let mut sent = 0;
                        while sent < 100 * MB {
                            match (&s).write_all(&chunk) {
                                Ok(()) => sent += MB,
                                Err(_) => break,
                            }
                        }
                        sent
                    })
                };
                let mut answer = String::new();
                BufReader::new(&s).read_line(&mut answer).unwrap();
                let sent = writer.join().unwrap();
                (answer, sent)
            })
        })
        .collect();
    for c in clients {
        let (answer, sent) = c.join().unwrap();
        let v: Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"));
        assert_eq!(v["error"]["code"], "bad-request", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("longer than 65536"),
            "{v}"
        );
        assert!(sent < 100 * MB, "the daemon read all 100 MB");
    }
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    sampler.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (peak, after) = (
        peak.load(std::sync::atomic::Ordering::SeqCst),
        vm_rss_kib(pid),
    );
    eprintln!("VmRSS idle {idle} KiB, peak {peak} KiB, after {after} KiB");
    assert!(
        peak < idle + 64 * 1024,
        "peak {peak} KiB over idle {idle} KiB"
    );
    assert!(
        after < idle + 64 * 1024,
        "after {after} KiB over idle {idle} KiB"
    );

    // Invalid UTF-8 is answered (bad-request), and the connection goes on.
    {
        use std::io::{BufRead, BufReader};
        let s = std::os::unix::net::UnixStream::connect(SOCKET).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (&s).write_all(b"{\"v\":1,\"op\":\"status\",\"x\":\"\xff\xfe\"}\n{\"v\":1,\"id\":2,\"op\":\"status\"}\n").unwrap();
        let mut lines = BufReader::new(&s).lines();
        let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(first["error"]["code"], "bad-request", "{first}");
        assert!(
            first["error"]["message"]
                .as_str()
                .unwrap()
                .contains("UTF-8"),
            "{first}"
        );
        let second: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(second["ok"], true, "{second}");
        assert_eq!(second["id"], 2);
    }
    // Field caps: CNI's container id rules, at most 256 bytes; ifname per dev_valid_name.
    for (id, ifname, want) in [
        ("a".repeat(257), "eth0", "longer than 256"),
        ("../etc".into(), "eth0", "only letters, digits"),
        ("ok".into(), "a-very-long-ifname0", "1 to 15 bytes"),
    ] {
        let line = format!(
            "{{\"v\":1,\"op\":\"detach\",\"container_id\":\"{id}\",\"ifname\":\"{ifname}\"}}\n"
        );
        let (v, _) = ask_raw(line.as_bytes()).unwrap();
        assert_eq!(v["error"]["code"], "bad-request", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(want),
            "{v}"
        );
        assert!(
            v.to_string().len() < 1024,
            "the answer echoes too much: {v}"
        );
    }
    daemon.stop();
}

#[test]
fn idle_connections_do_not_lock_out_a_client() {
    let test = "idle_connections_do_not_lock_out_a_client";
    if !inside_private_world(test) {
        return;
    }
    raise_nofile(8192);
    // systemd's default soft limit for the daemon.
    let daemon = Daemon::start_under(&["prlimit", "--nofile=1024:1024", "--"], "ic", 7822, &[]);
    let idle: Vec<std::os::unix::net::UnixStream> = (0..2000)
        .map(|i| {
            std::os::unix::net::UnixStream::connect(SOCKET)
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}"))
        })
        .collect();
    // Let the daemon take them all from its backlog.
    std::thread::sleep(Duration::from_secs(2));
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let (v, took) = ask_raw(b"{\"v\":1,\"op\":\"status\"}\n").unwrap();
        assert_eq!(v["ok"], true, "{v}");
        slowest = slowest.max(took);
    }
    eprintln!("status with 2000 idle connections open: slowest {slowest:?}");
    assert!(slowest < Duration::from_millis(100), "{slowest:?}");
    drop(idle);
    daemon.stop();

    // Over the cap with every connection busy: `busy`, at once. An idle connection is
    // closed after the idle timeout.
    let daemon = Daemon::start(
        "ib",
        7823,
        &[
            "--max-connections",
            "2",
            "--window-us",
            "10000000",
            "--idle-timeout-ms",
            "500",
        ],
    );
    // Two requests wait in the engine's long window: both connections are busy. The
    // readiness probe's connection must be gone first, and each busy connection must
    // have sent its line before the next one comes: a connection that has not is idle,
    // and rightly the one evicted to make room.
    std::thread::sleep(Duration::from_millis(500));
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let mut busy = Vec::new();
    for _ in 0..2 {
        let sent_tx = sent_tx.clone();
        busy.push(std::thread::spawn(move || {
            use std::io::{BufRead, BufReader};
            let s = std::os::unix::net::UnixStream::connect(SOCKET).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            (&s).write_all(b"{\"v\":1,\"op\":\"stats\"}\n").unwrap();
            sent_tx.send(()).unwrap();
            let mut answer = String::new();
            BufReader::new(&s).read_line(&mut answer).unwrap();
            serde_json::from_str::<Value>(&answer).map_err(|e| format!("{answer:?}: {e}"))
        }));
        sent_rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    // Time for the daemon to read both lines even on a machine loaded with builds, well
    // inside the 10 s window that keeps them busy.
    std::thread::sleep(Duration::from_millis(2000));
    let (v, took) = ask_raw(b"{\"v\":1,\"op\":\"status\"}\n").unwrap();
    assert_eq!(v["error"]["code"], "busy", "{v}");
    assert!(took < Duration::from_millis(100), "{took:?}");
    for b in busy {
        let v = b.join().unwrap().unwrap();
        assert_eq!(v["ok"], true, "{v}");
    }
    let s = std::os::unix::net::UnixStream::connect(SOCKET).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let n = std::io::Read::read(&mut &s, &mut [0u8; 16]).unwrap();
    assert_eq!(n, 0, "an idle connection got data");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    daemon.stop();
}

#[test]
fn per_uid_limits_bind_one_uid_and_leave_others_alone() {
    let test = "per_uid_limits_bind_one_uid_and_leave_others_alone";
    if !inside_private_world(test) {
        return;
    }
    let group = 7824;
    let daemon = Daemon::start(
        "ul",
        group,
        &[
            "--allow-gid",
            "4242",
            "--socket-mode",
            "666",
            "--max-attachments-per-uid",
            "2",
            "--max-acquired-per-uid",
            "1",
            "--pool-low",
            "2",
            "--pool-high",
            "4",
        ],
    );
    let nobody: Vec<OwnNetns> = (0..3).map(|_| OwnNetns::new(65534, 4242)).collect();
    let other = OwnNetns::new(65533, 4242);
    let attach_as = |uid: u32, id: &str, path: &str| {
        let (id, path) = (id.to_owned(), path.to_owned());
        as_ids(uid, 4242, move || {
            attach_by_fd(&id, &path, libc::O_RDONLY).0
        })
    };
    let call_as = |uid: u32, op: Operation| {
        as_ids(uid, 4242, move || {
            netslot::daemon::client::call(Path::new(SOCKET), op).unwrap()
        })
    };
    for (i, ns) in nobody.iter().take(2).enumerate() {
        let r = attach_as(65534, &format!("n{i}"), &ns.path);
        assert!(r.ok, "n{i}: {:?}", r.error);
    }
    let r = attach_as(65534, "n2", &nobody[2].path);
    assert_eq!(code(&r), "not-allowed", "{r:?}");
    let msg = r.error.unwrap().message;
    assert!(
        msg.contains("--max-attachments-per-uid 2") && msg.contains("container n2"),
        "{msg}"
    );
    assert_eq!(nobody[2].link_names(), vec!["lo"]);
    // Others are unaffected: another uid, and uid 0 (exempt).
    let r = attach_as(65533, "o0", &other.path);
    assert!(r.ok, "other uid: {:?}", r.error);
    let r0 = netns_add("r0");
    let r = netslot::daemon::client::call(Path::new(SOCKET), attach_op("r0", &r0, false)).unwrap();
    assert!(r.ok, "uid 0: {:?}", r.error);
    // Warm slots: one each.
    let r = call_as(65534, Operation::Acquire);
    assert!(r.ok, "{:?}", r.error);
    let slot = r.slot.unwrap().name;
    let r = call_as(65534, Operation::Acquire);
    assert_eq!(code(&r), "not-allowed", "{r:?}");
    assert!(r
        .error
        .unwrap()
        .message
        .contains("--max-acquired-per-uid 1"));
    let r = call_as(65533, Operation::Acquire);
    assert!(r.ok, "other uid's acquire: {:?}", r.error);
    let r = call_as(65533, Operation::Release { name: slot.clone() });
    assert_eq!(code(&r), "not-allowed", "released another's slot: {r:?}");
    // Room again after a detach and a release.
    let key = netslot::daemon::protocol::AttachmentKey {
        network: String::new(),
        container_id: "n0".into(),
        ifname: "eth0".into(),
    };
    let r = call_as(65534, Operation::Detach { key });
    assert!(r.ok, "{:?}", r.error);
    let r = attach_as(65534, "n2", &nobody[2].path);
    assert!(r.ok, "after a detach: {:?}", r.error);
    let r = call_as(65534, Operation::Release { name: slot });
    assert!(r.ok, "{:?}", r.error);
    let r = call_as(65534, Operation::Acquire);
    assert!(r.ok, "after a release: {:?}", r.error);
    assert_eq!(daemon.stats().attachments, 4);
    daemon.stop();
    assert!(links_in_group(group).is_empty(), "teardown left host ends");
}

/// What a runtime gets from one run of the plugin: exit code, stdout (JSON, or null when
/// empty) and stderr. Unlike `exec_plugin`, stdin is raw bytes and nothing here panics on
/// what the plugin printed, so a test can judge a crash (exit 101, empty stdout) itself.
struct PluginRun {
    exit: Option<i32>,
    out: Value,
    stdout: String,
    stderr: String,
}

fn exec_plugin_raw(plugin: &Path, command: &str, env: &[(&str, &str)], stdin: &[u8]) -> PluginRun {
    let mut child = Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", CNI_DIR)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("exec {}: {e}", plugin.display()));
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    PluginRun {
        exit: out.status.code(),
        out: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The run failed as the CNI spec says a plugin fails: exit 1 and an error object with
/// `code` and a non-empty `msg` on stdout.
fn assert_cni_error(what: &str, r: &PluginRun, code: u64) {
    let PluginRun {
        exit,
        out,
        stdout,
        stderr,
    } = r;
    assert_eq!(
        *exit,
        Some(1),
        "{what}: exit {exit:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(out["code"], code, "{what}: {stdout}");
    assert!(
        out["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: no msg: {stdout}"
    );
}

/// A stand-in for the daemon at `socket`: accepts one connection, reads one request line,
/// answers `answer` and a newline, and hangs up. The thread returns the request line.
fn fake_daemon(socket: &str, answer: &[u8]) -> std::thread::JoinHandle<String> {
    use std::io::{BufRead, BufReader};
    let _ = std::fs::remove_file(socket);
    let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
    let answer = answer.to_vec();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        let mut out = &stream;
        out.write_all(&answer).unwrap();
        out.write_all(b"\n").unwrap();
        line
    })
}

#[test]
fn a_cni_netns_that_is_not_a_network_namespace_is_an_unknown_container() {
    let test = "a_cni_netns_that_is_not_a_network_namespace_is_an_unknown_container";
    if !inside_private_world(test) {
        return;
    }
    let group = 7819;
    let daemon = Daemon::start("nn", group, &[]);
    let plugin = bin("netslot-cni");
    std::fs::write("/run/netslot/plain-file", "not a namespace").unwrap();
    let conf = plain_conf();
    let cases = [
        "/run/netslot/plain-file",
        "/run/netslot",
        // A namespace, of another type.
        "/proc/self/ns/uts",
        "/run/netns/absent",
    ];
    for netns in cases {
        let r = exec_plugin_raw(
            &plugin,
            "ADD",
            &container_env("x", netns, "eth0"),
            conf.to_string().as_bytes(),
        );
        assert_cni_error(&format!("ADD into {netns}"), &r, 3);
        assert!(
            r.out["msg"].as_str().unwrap().contains(netns),
            "{}",
            r.stdout
        );
        let mut check = conf.clone();
        check["prevResult"] = json!({"interfaces": [], "ips": []});
        let r = exec_plugin_raw(
            &plugin,
            "CHECK",
            &container_env("x", netns, "eth0"),
            check.to_string().as_bytes(),
        );
        assert_cni_error(&format!("CHECK of {netns}"), &r, 3);
    }
    assert!(links_in_group(group).is_empty(), "a host end was made");
    assert_eq!(daemon.stats().attachments, 0);
    daemon.stop();
}

#[test]
fn the_daemon_refuses_every_unusable_namespace_path_as_netns() {
    let test = "the_daemon_refuses_every_unusable_namespace_path_as_netns";
    if !inside_private_world(test) {
        return;
    }
    let group = 7820;
    let daemon = Daemon::start("na", group, &[]);
    std::fs::write("/run/netslot/plain-file", "not a namespace").unwrap();
    // Asked directly by uid 0, the only peer the path form serves (every other peer
    // must send an fd of a namespace it opened itself, so it cannot probe paths through
    // the daemon: see an_allowed_peer_cannot_attach_into_a_namespace_it_could_not_enter).
    // Each unusable path is refused as `netns`, with its reason, and nothing is made.
    let paths = [
        "/run/netslot/plain-file",
        "/run/netns/absent",
        "/proc/self/ns/uts",
    ];
    let answers: Vec<(String, String)> = paths
        .iter()
        .map(|p| {
            let op = Operation::Attach {
                key: netslot::daemon::protocol::AttachmentKey {
                    network: "slots".into(),
                    container_id: "x".into(),
                    ifname: "eth0".into(),
                },
                netns: PathBuf::from(p),
                netns_fd: false,
                mtu: None,
                mac: None,
                ipv4: None,
                ipv6: None,
            };
            let r = netslot::daemon::client::call(Path::new(SOCKET), op).expect("an answer");
            assert!(!r.ok, "{p}: attached");
            let e = r.error.expect("an error");
            (
                serde_json::to_value(e.code).unwrap().to_string(),
                e.message.replace(p, "<path>"),
            )
        })
        .collect();
    assert!(
        answers.iter().all(|(code, _)| code == "\"netns\""),
        "{answers:?}"
    );
    assert!(links_in_group(group).is_empty());
    daemon.stop();
}

#[test]
fn a_caller_learns_nothing_of_namespaces_it_cannot_open_itself() {
    let test = "a_caller_learns_nothing_of_namespaces_it_cannot_open_itself";
    if !inside_private_world(test) {
        return;
    }
    let group = 7821;
    let daemon = Daemon::start(
        "np",
        group,
        &["--allow-gid", "4242", "--socket-mode", "666"],
    );
    let copy = Path::new("/run/netslot/netslot-cni");
    std::fs::copy(bin("netslot-cni"), copy).unwrap();
    netns_add("h0");
    // A network namespace behind a directory only root may enter.
    let r = run(
        "sh",
        &[
            "-ec",
            "mkdir -m 700 /run/private; touch /run/private/ns; \
             mount --bind /run/netns/h0 /run/private/ns",
        ],
    );
    assert!(r.status.success(), "{r:?}");
    let as_user = |netns: &str| {
        let mut child = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=4242", "--clear-groups"])
            .arg(copy)
            .env_clear()
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", "h")
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(plain_conf().to_string().as_bytes());
        let out = child.wait_with_output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code(), v)
    };
    let (exit, there) = as_user("/run/private/ns");
    assert_eq!(exit, Some(1), "a namespace the caller cannot open: {there}");
    assert_eq!(
        link_names_in("h0"),
        vec!["lo"],
        "attached for a caller that cannot open it"
    );
    let (exit, absent) = as_user("/run/private/absent");
    assert_eq!(exit, Some(1), "{absent}");
    assert_eq!(there["code"], 3, "{there}");
    assert_eq!(
        there["msg"]
            .as_str()
            .unwrap()
            .replace("/run/private/ns", "<path>"),
        absent["msg"]
            .as_str()
            .unwrap()
            .replace("/run/private/absent", "<path>"),
        "the answers tell an existing namespace from a missing path"
    );
    assert!(links_in_group(group).is_empty());
    daemon.stop();
}

#[test]
fn a_configuration_that_is_not_utf8_fails_to_decode() {
    let test = "a_configuration_that_is_not_utf8_fails_to_decode";
    if !inside_private_world(test) {
        return;
    }
    let plugin = bin("netslot-cni");
    let path = netns_add("u0");
    let inputs: [&[u8]; 3] = [
        b"\xff\xfe\xfd",
        b"{\"cniVersion\":\"1.1.0\",\"name\":\"\xff\",\"type\":\"netslot-cni\"}",
        b"{\"cniVersion\":\"1.1.0\",\"name\":\"slots\",\"type\":\"netslot-cni\"}\xc3",
    ];
    for (i, stdin) in inputs.iter().enumerate() {
        for command in ["ADD", "DEL", "CHECK", "GC", "STATUS"] {
            let r = exec_plugin_raw(&plugin, command, &container_env("u", &path, "eth0"), stdin);
            assert_cni_error(&format!("{command} of input {i}"), &r, 6);
        }
    }
}

#[test]
fn every_answer_of_a_broken_daemon_is_a_cni_error() {
    let test = "every_answer_of_a_broken_daemon_is_a_cni_error";
    if !inside_private_world(test) {
        return;
    }
    let plugin = bin("netslot-cni");
    let path = netns_add("b0");
    let socket = "/run/netslot/fake.sock";
    let conf = json!({"cniVersion": "1.1.0", "name": "slots", "type": "netslot-cni",
        "socket": socket, "cni.dev/valid-attachments": [],
        "prevResult": {"interfaces": [], "ips": []}});
    let no_error = br#"{"v":1,"id":1,"ok":false}"#;
    let bare_ok = br#"{"v":1,"id":1,"ok":true}"#;
    let cases: [(&str, &[u8], u64); 14] = [
        ("ADD", no_error, 6),
        ("ADD", bare_ok, 6),
        ("CHECK", no_error, 6),
        ("CHECK", bare_ok, 6),
        ("DEL", no_error, 6),
        ("GC", no_error, 6),
        ("STATUS", no_error, 6),
        ("STATUS", bare_ok, 6),
        ("ADD", b"not json", 6),
        ("ADD", b"\xff\xfe", 6),
        (
            "ADD",
            br#"{"v":1,"id":1,"ok":true,"attachment":{"container_id":7}}"#,
            6,
        ),
        (
            "DEL",
            br#"{"v":1,"id":1,"ok":false,"error":{"code":"new-kind","message":"m"}}"#,
            6,
        ),
        // Well-formed refusals keep their codes and the daemon's message.
        (
            "ADD",
            br#"{"v":1,"id":1,"ok":false,"error":{"code":"kernel","message":"boom"}}"#,
            100,
        ),
        (
            "DEL",
            br#"{"v":1,"id":1,"ok":false,"error":{"code":"not-allowed","message":"no"}}"#,
            5,
        ),
    ];
    for (command, answer, code) in cases {
        let fake = fake_daemon(socket, answer);
        let what = format!("{command} answered {:?}", String::from_utf8_lossy(answer));
        let r = exec_plugin_raw(
            &plugin,
            command,
            &container_env("b", &path, "eth0"),
            conf.to_string().as_bytes(),
        );
        assert_cni_error(&what, &r, code);
        let asked = fake.join().expect("the fake daemon");
        assert!(asked.ends_with('\n'), "{what}: request {asked:?}");
    }
    assert_eq!(link_names_in("b0"), vec!["lo"]);
}

#[test]
fn gc_and_status_need_cni_version_1_1_0() {
    let test = "gc_and_status_need_cni_version_1_1_0";
    if !inside_private_world(test) {
        return;
    }
    let plugin = bin("netslot-cni");
    let socket = "/run/netslot/fake.sock";
    let conf = |version: &str| {
        json!({"cniVersion": version, "name": "slots", "type": "netslot-cni",
            "socket": socket, "cni.dev/valid-attachments": []})
        .to_string()
    };
    let ready = br#"{"v":1,"id":1,"ok":true,"status":{"ready":true,"daemon_version":"t","protocol_versions":[1],"attachments":0,"pooled":0}}"#;
    for command in ["GC", "STATUS"] {
        // Refused before the daemon is asked.
        let fake = fake_daemon(socket, ready);
        let r = exec_plugin_raw(&plugin, command, &[], conf("1.0.0").as_bytes());
        assert_cni_error(&format!("{command} at 1.0.0"), &r, 1);
        assert_eq!(r.out["cniVersion"], "1.0.0", "{}", r.stdout);
        assert!(!fake.is_finished(), "{command} at 1.0.0 asked the daemon");
        // Let the fake answer someone, then the same command at 1.1.0 succeeds.
        let r = exec_plugin_raw(&plugin, command, &[], conf("1.1.0").as_bytes());
        assert_eq!(
            r.exit,
            Some(0),
            "{command} at 1.1.0: {} {}",
            r.stdout,
            r.stderr
        );
        assert!(fake
            .join()
            .unwrap()
            .contains(&format!("\"op\":\"{}\"", command.to_lowercase())));
    }
}

/// One scrape of the daemon's metrics endpoint: (HTTP status line, body).
fn scrape(addr: &str, path: &str) -> (String, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// `netslot serve --metrics`: the Prometheus text format counts what the daemon did (two
/// ADDs and a refused duplicate, one DEL, the warm pool's level, the engine batches and
/// their group changes), and Prometheus's own `promtool check metrics` accepts it. Served
/// on loopback inside the test's private network namespace.
#[test]
fn metrics_count_what_the_daemon_did_and_pass_promtool() {
    let test = "metrics_count_what_the_daemon_did_and_pass_promtool";
    if !inside_private_world(test) {
        return;
    }
    let addr = "127.0.0.1:9477";
    let daemon = Daemon::start(
        "mx",
        7862,
        &["--metrics", addr, "--pool-low", "2", "--pool-high", "2"],
    );
    let plugin = bin("netslot-cni");
    let a = netns_add("mxa");
    let b = netns_add("mxb");
    for (id, path) in [("mx-a", &a), ("mx-b", &b)] {
        let (ok, out) = exec_plugin(
            &plugin,
            "ADD",
            &container_env(id, path, "eth0"),
            &plain_conf(),
        );
        assert!(ok, "ADD {id}: {out}");
    }
    let (ok, out) = exec_plugin(
        &plugin,
        "ADD",
        &container_env("mx-a", &a, "eth0"),
        &plain_conf(),
    );
    assert!(!ok, "a duplicate ADD succeeded: {out}");
    let (ok, out) = exec_plugin(
        &plugin,
        "DEL",
        &container_env("mx-b", &b, "eth0"),
        &plain_conf(),
    );
    assert!(ok, "DEL: {out}");
    wait_for("the warm pool filled", || daemon.stats().pooled == 2);

    let (status, body) = scrape(addr, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    for line in [
        "netslot_requests_total{op=\"attach\"} 3",
        "netslot_requests_total{op=\"detach\"} 1",
        "netslot_request_errors_total{code=\"exists\",op=\"attach\"} 1",
        "netslot_attachments 1",
        "netslot_warm_pool_slots 2",
        "netslot_engine_batches_total{kind=\"attach\"} 2",
        "netslot_engine_batches_total{kind=\"detach\"} 1",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "no line {line:?} in:\n{body}"
        );
    }
    for family in [
        "netslot_request_duration_seconds_bucket{op=\"attach\",le=",
        "netslot_round_requests_count ",
        "netslot_group_change_hold_seconds_count ",
    ] {
        assert!(body.contains(family), "no {family:?} in:\n{body}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed by scripts/install-deps.sh");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let (status, _) = scrape(addr, "/other");
    assert!(status.contains(" 404 "), "{status}");
    daemon.stop();
}

/// `mtu` of the link `dev` inside `ns` (or in this namespace when `ns` is None).
fn mtu_of(ns: Option<&str>, dev: &str) -> u64 {
    let v = match ns {
        Some(ns) => ip_in(ns, &["link", "show", "dev", dev]),
        None => ip_json(&["link", "show", "dev", dev]),
    };
    v[0]["mtu"]
        .as_u64()
        .unwrap_or_else(|| panic!("no mtu for {dev}: {v}"))
}

#[test]
fn the_configured_mtu_is_on_both_ends_and_in_the_result() {
    let test = "the_configured_mtu_is_on_both_ends_and_in_the_result";
    if !inside_private_world(test) {
        return;
    }
    let group = 7841;
    let daemon = Daemon::start("mt", group, &[]);
    let plugin = bin("netslot-cni");
    for (i, version) in ["1.1.0", "1.0.0"].into_iter().enumerate() {
        let name = format!("mt{i}");
        let path = netns_add(&name);
        let mut conf = plain_conf();
        conf["cniVersion"] = version.into();
        conf["mtu"] = 1400.into();
        let env = container_env(&name, &path, "eth0");
        let (ok, r) = exec_plugin(&plugin, "ADD", &env, &conf);
        assert!(ok, "ADD at {version}: {r}");
        let host = r["interfaces"][0]["name"].as_str().unwrap().to_owned();
        assert_eq!(
            mtu_of(Some(&name), "eth0"),
            1400,
            "container end at {version}"
        );
        assert_eq!(mtu_of(None, &host), 1400, "host end {host} at {version}");
        let ours = &r["interfaces"][1];
        assert_eq!(ours["name"], "eth0", "{r}");
        if version == "1.1.0" {
            assert_eq!(ours["mtu"], 1400, "1.1.0 result: {r}");
        } else {
            assert!(
                ours.get("mtu").is_none(),
                "{version} result has an mtu: {r}"
            );
        }
        let (ok, out) = exec_plugin(&plugin, "DEL", &env, &conf);
        assert!(ok, "DEL: {out}");
    }
    // Out of the range the daemon's slots carry: invalid network config, with the reason.
    let path = netns_add("mtbad");
    let mut conf = plain_conf();
    conf["mtu"] = 1000.into();
    let (ok, r) = exec_plugin(
        &plugin,
        "ADD",
        &container_env("mtbad", &path, "eth0"),
        &conf,
    );
    assert!(!ok, "ADD with mtu 1000 succeeded: {r}");
    assert_eq!(r["code"], 7, "{r}");
    assert!(r["msg"].as_str().unwrap().contains("1000"), "{r}");
    assert_eq!(link_names_in("mtbad"), vec!["lo"]);
    assert!(links_in_group(group).is_empty(), "host ends left");
    daemon.stop();
}

#[test]
fn the_configured_dns_is_echoed_in_the_result() {
    let test = "the_configured_dns_is_echoed_in_the_result";
    if !inside_private_world(test) {
        return;
    }
    let daemon = Daemon::start("dn", 7842, &[]);
    let plugin = bin("netslot-cni");
    let dns = json!({"nameservers": ["10.0.0.53", "fd00::53"], "domain": "example.test",
        "search": ["a.example.test"], "options": ["ndots:2"]});
    for version in ["0.3.1", "1.0.0", "1.1.0"] {
        let name = format!("dn{}", version.replace('.', ""));
        let path = netns_add(&name);
        let mut conf = plain_conf();
        conf["cniVersion"] = version.into();
        conf["dns"] = dns.clone();
        let env = container_env(&name, &path, "eth0");
        let (ok, r) = exec_plugin(&plugin, "ADD", &env, &conf);
        assert!(ok, "ADD at {version}: {r}");
        assert_eq!(r["dns"], dns, "{version} result: {r}");
        let (ok, out) = exec_plugin(&plugin, "DEL", &env, &conf);
        assert!(ok, "DEL: {out}");
    }
    daemon.stop();
}

#[test]
fn static_ips_without_an_ipam_plugin_are_refused_and_nothing_is_made() {
    let test = "static_ips_without_an_ipam_plugin_are_refused_and_nothing_is_made";
    if !inside_private_world(test) {
        return;
    }
    let group = 7843;
    let daemon = Daemon::start("ip", group, &[]);
    let plugin = bin("netslot-cni");
    let path = netns_add("ipam1");
    let env = container_env("ipam1", &path, "eth0");
    // Static IPs (the ips capability) need an IPAM plugin to give them.
    let mut conf = plain_conf();
    conf["runtimeConfig"] = json!({"ips": ["10.9.0.2/24"]});
    let (ok, r) = exec_plugin(&plugin, "ADD", &env, &conf);
    assert!(!ok, "ADD with runtimeConfig.ips succeeded: {r}");
    assert_eq!(r["code"], 7, "{r}");
    assert!(r["msg"].as_str().unwrap().contains("no IPAM plugin"), "{r}");
    // An ipam section without a plugin's name.
    let mut conf = plain_conf();
    conf["ipam"] = json!({"subnet": "10.9.0.0/24"});
    let (ok, r) = exec_plugin(&plugin, "ADD", &env, &conf);
    assert!(!ok, "ADD with an ipam without type succeeded: {r}");
    assert_eq!(r["code"], 7, "{r}");
    assert!(r["msg"].as_str().unwrap().contains("ipam.type"), "{r}");
    assert_eq!(link_names_in("ipam1"), vec!["lo"]);
    assert!(links_in_group(group).is_empty(), "a host end was made");
    assert_eq!(daemon.stats().attachments, 0);
    // DEL of it still succeeds: a runtime always calls DEL.
    let (ok, out) = exec_plugin(&plugin, "DEL", &env, &conf);
    assert!(ok, "DEL: {out}");
    daemon.stop();
}

/// Where host-local keeps the leases of the tests' networks (inside the private /run).
const LEASES: &str = "/run/netslot/host-local";

/// The addresses host-local holds leased for network `name`: its files named by address.
fn leases(name: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(Path::new(LEASES).join(name)) else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    out.sort();
    out
}

/// A configuration of network `name` at cniVersion 1.0.0, the newest Debian's IPAM
/// plugins speak.
fn conf_1_0(name: &str) -> Value {
    let mut conf = conf_named(name);
    conf["cniVersion"] = "1.0.0".into();
    conf
}

/// A configuration whose `ipam` is host-local on `subnet`, with a default route.
fn host_local_conf(name: &str, subnet: &str) -> Value {
    let mut conf = conf_1_0(name);
    conf["ipam"] = json!({"type": "host-local", "subnet": subnet, "dataDir": LEASES,
        "routes": [{"dst": "0.0.0.0/0"}]});
    conf
}

/// The IPv4 routes inside namespace `ns`, each as iproute2 prints it in one line.
fn routes_in(ns: &str) -> Vec<String> {
    let out = run("ip", &["-n", ns, "-4", "route", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn a_host_local_lease_is_the_container_address_routed_as_ptp_routes_it() {
    let test = "a_host_local_lease_is_the_container_address_routed_as_ptp_routes_it";
    if !inside_private_world(test) {
        return;
    }
    let group = 7846;
    let args = ["--keep-on-exit"];
    let daemon = Daemon::start("hl", group, &args);
    let plugin = bin("netslot-cni");
    let conf = host_local_conf("leased", "10.22.0.0/24");
    let mut results = Vec::new();
    for (c, version) in [("hl1", "1.0.0"), ("hl2", "0.4.0")] {
        let path = netns_add(c);
        let mut conf = conf.clone();
        conf["cniVersion"] = version.into();
        let (ok, r) = exec_plugin(&plugin, "ADD", &container_env(c, &path, "eth0"), &conf);
        assert!(ok, "ADD {c} at {version}: {r}");
        results.push((c, path, r));
    }
    // host-local leased .2 and .3 of the subnet, with .1 as the gateway.
    assert_eq!(leases("leased"), vec!["10.22.0.2", "10.22.0.3"]);
    for (i, (c, path, r)) in results.iter().enumerate() {
        let address = format!("10.22.0.{}", i + 2);
        assert_eq!(r["ips"][0]["address"], format!("{address}/24"), "{r}");
        assert_eq!(r["ips"][0]["gateway"], "10.22.0.1", "{r}");
        assert!(lists_default_route(r), "{r}");
        // The container end, as the kernel reports it: the lease with its prefix, the
        // gateway on the link, the prefix via the gateway, the default route; no route
        // of the prefix on the link (the kernel's was not made).
        assert_eq!(addrs_in(c, "eth0"), vec![format!("{address}/24")]);
        let routes = routes_in(c);
        for want in [
            "default via 10.22.0.1 dev eth0 proto static",
            "10.22.0.0/24 via 10.22.0.1 dev eth0 proto static",
            "10.22.0.1 dev eth0 proto static scope link",
        ] {
            assert!(
                routes.iter().any(|r| r == want),
                "{c} lacks {want:?}: {routes:?}"
            );
        }
        assert_eq!(routes.len(), 3, "{c}: {routes:?}");
        // The host end: the gateway as a /32 whose peer is the container, so the kernel
        // routes the container's address through it.
        let host = r["interfaces"][0]["name"].as_str().unwrap();
        let addr = ip_json(&["-4", "addr", "show", "dev", host]);
        let info = &addr[0]["addr_info"][0];
        assert_eq!(
            (&info["local"], &info["address"], &info["prefixlen"]),
            (&json!("10.22.0.1"), &json!(address), &json!(32)),
            "{host}: {addr}"
        );
        let out = run("ip", &["-4", "route", "show", "dev", host]);
        let host_routes = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            host_routes.contains(&format!("{address} proto kernel scope link src 10.22.0.1")),
            "{host}: {host_routes}"
        );
        // Both ways: the container reaches the gateway, the host the container.
        refused_from(path, "10.22.0.1");
        tcp_refused(address.parse().unwrap()).unwrap_or_else(|e| panic!("host to {c}: {e}"));
        // CHECK (IPAM CHECK, then prevResult against the kernel) agrees.
        let mut check = conf.clone();
        check["cniVersion"] = r["cniVersion"].clone();
        check["prevResult"] = r.clone();
        let (ok, out) = exec_plugin(&plugin, "CHECK", &container_env(c, path, "eth0"), &check);
        assert!(ok, "CHECK {c}: {out}");
    }
    // One container reaches the other through the host (which forwards here, as ptp
    // would have set it to): the prefix route goes via the gateway.
    assert!(run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
        .status
        .success());
    refused_from(&results[0].1, "10.22.0.3");
    // A restart adopts the attachment with its lease.
    daemon.stop();
    let daemon = Daemon::start("hl", group, &args);
    let key = netslot::daemon::protocol::AttachmentKey {
        network: "leased".into(),
        container_id: "hl1".into(),
        ifname: "eth0".into(),
    };
    let answer =
        netslot::daemon::client::call(Path::new(SOCKET), Operation::Check { key }).expect("check");
    let a = answer.attachment.expect("the adopted attachment");
    assert_eq!(
        (a.address.as_str(), a.gateway.as_str()),
        ("10.22.0.2/24", "10.22.0.1")
    );
    // DEL removes the interface and releases the lease.
    for (c, path, r) in &results {
        let mut conf = conf.clone();
        conf["cniVersion"] = r["cniVersion"].clone();
        let (ok, out) = exec_plugin(&plugin, "DEL", &container_env(c, path, "eth0"), &conf);
        assert!(ok, "DEL {c}: {out}");
        assert_eq!(link_names_in(c), vec!["lo"]);
    }
    assert_eq!(leases("leased"), Vec::<String>::new());
    assert!(links_in_group(group).is_empty(), "host ends left");
    // A second DEL still succeeds.
    let (c, path, _) = &results[0];
    let (ok, out) = exec_plugin(&plugin, "DEL", &container_env(c, path, "eth0"), &conf);
    assert!(ok, "second DEL: {out}");
    daemon.stop();
}

#[test]
fn a_static_lease_brings_its_dns_and_what_a_slot_cannot_carry_is_refused() {
    let test = "a_static_lease_brings_its_dns_and_what_a_slot_cannot_carry_is_refused";
    if !inside_private_world(test) {
        return;
    }
    let group = 7847;
    let daemon = Daemon::start("st", group, &[]);
    let plugin = bin("netslot-cni");
    let path = netns_add("st1");
    let env = container_env("st1", &path, "eth0");
    let dns = json!({"nameservers": ["10.23.0.53"], "domain": "example.test"});
    let mut conf = conf_1_0("static");
    conf["ipam"] = json!({"type": "static",
        "addresses": [{"address": "10.23.0.5/24", "gateway": "10.23.0.1"}],
        "routes": [{"dst": "0.0.0.0/0"}], "dns": dns});
    let (ok, r) = exec_plugin(&plugin, "ADD", &env, &conf);
    assert!(ok, "ADD: {r}");
    assert_eq!(r["dns"], dns, "{r}");
    assert_eq!(addrs_in("st1", "eth0"), vec!["10.23.0.5/24"]);
    refused_from(&path, "10.23.0.1");
    let (ok, out) = exec_plugin(&plugin, "DEL", &env, &conf);
    assert!(ok, "DEL: {out}");

    // What the slot cannot carry: invalid network config naming it, nothing made.
    let refusals = [
        (
            json!({"type": "static", "addresses": [{"address": "10.23.0.5/24"}]}),
            "without a gateway",
        ),
        (
            json!({"type": "static",
                "addresses": [{"address": "10.23.0.5/24", "gateway": "10.23.0.1"}],
                "routes": [{"dst": "10.0.0.0/8"}]}),
            "route 10.0.0.0/8",
        ),
        (json!({"type": "no-such-ipam"}), "not in CNI_PATH"),
        (
            json!({"type": "static",
                "addresses": [{"address": "100.65.7.5/24", "gateway": "100.65.7.1"}]}),
            "the daemon's own range 100.65.0.0/16",
        ),
    ];
    for (ipam, says) in refusals {
        let mut conf = conf_1_0("static");
        conf["ipam"] = ipam;
        let (ok, r) = exec_plugin(&plugin, "ADD", &env, &conf);
        assert!(!ok, "ADD with {} succeeded: {r}", conf["ipam"]);
        assert_eq!(r["code"], 7, "{r}");
        assert!(r["msg"].as_str().unwrap().contains(says), "{r}");
        assert_eq!(link_names_in("st1"), vec!["lo"]);
    }
    // A failed ADD (here the daemon refusing a lease in its own range) releases what the
    // IPAM plugin leased.
    let mut conf = conf_1_0("own");
    conf["ipam"] = json!({"type": "host-local", "subnet": "100.65.9.0/24", "dataDir": LEASES});
    let (ok, r) = exec_plugin(&plugin, "ADD", &env, &conf);
    assert!(!ok, "ADD of a lease in the daemon's range succeeded: {r}");
    assert_eq!(r["code"], 7, "{r}");
    assert_eq!(leases("own"), Vec::<String>::new());
    // An IPAM plugin's own error passes through with its code.
    let mut conf = conf_1_0("full");
    conf["ipam"] = json!({"type": "host-local", "dataDir": LEASES,
        "ranges": [[{"subnet": "10.24.0.0/30"}]]});
    let (ok, r) = exec_plugin(&plugin, "ADD", &env, &conf);
    assert!(ok, "ADD of the range's only address: {r}");
    let path2 = netns_add("st2");
    let env2 = container_env("st2", &path2, "eth0");
    let (ok, r2) = exec_plugin(&plugin, "ADD", &env2, &conf);
    assert!(!ok, "ADD past a full range succeeded: {r2}");
    assert!(
        r2["msg"]
            .as_str()
            .unwrap()
            .starts_with("IPAM plugin host-local ADD: "),
        "{r2}"
    );
    assert_ne!(r2["code"], 7, "{r2}");
    assert_eq!(link_names_in("st2"), vec!["lo"]);
    let (ok, out) = exec_plugin(&plugin, "DEL", &env, &conf);
    assert!(ok, "DEL: {out}");
    assert!(links_in_group(group).is_empty(), "host ends left");
    daemon.stop();
}

#[test]
fn a_runtime_config_mac_is_the_container_ends_mac() {
    let test = "a_runtime_config_mac_is_the_container_ends_mac";
    if !inside_private_world(test) {
        return;
    }
    let group = 7844;
    let daemon = Daemon::start("mc", group, &[]);
    let plugin = bin("netslot-cni");
    let path = netns_add("mac1");
    let mac = "0a:58:0a:09:00:07";
    let mut conf = plain_conf();
    conf["capabilities"] = json!({"mac": true});
    conf["runtimeConfig"] = json!({ "mac": mac });
    let env = container_env("mac1", &path, "eth0");
    let (ok, r) = exec_plugin(&plugin, "ADD", &env, &conf);
    assert!(ok, "ADD: {r}");
    assert_eq!(
        ip_in("mac1", &["link", "show", "dev", "eth0"])[0]["address"],
        mac
    );
    assert_eq!(r["interfaces"][1]["mac"], mac, "{r}");
    // CHECK agrees with the kernel.
    let mut check = conf.clone();
    check["prevResult"] = r.clone();
    let (ok, out) = exec_plugin(&plugin, "CHECK", &env, &check);
    assert!(ok, "CHECK: {out}");
    let (ok, out) = exec_plugin(&plugin, "DEL", &env, &conf);
    assert!(ok, "DEL: {out}");

    // A multicast MAC cannot be a device's own: invalid network config, nothing made.
    let path = netns_add("mac2");
    conf["runtimeConfig"] = json!({"mac": "01:00:5e:00:00:01"});
    let env = container_env("mac2", &path, "eth0");
    let (ok, r) = exec_plugin(&plugin, "ADD", &env, &conf);
    assert!(!ok, "ADD with a multicast MAC succeeded: {r}");
    assert_eq!(r["code"], 7, "{r}");
    assert!(r["msg"].as_str().unwrap().contains("unicast"), "{r}");
    assert_eq!(link_names_in("mac2"), vec!["lo"]);
    // A capability the plugin lacks, declared by the configuration: refused, named.
    conf["capabilities"] = json!({"bandwidth": true});
    conf["runtimeConfig"] = json!({"bandwidth": {"ingressRate": 1000}});
    let (ok, r) = exec_plugin(&plugin, "ADD", &env, &conf);
    assert!(!ok, "ADD with runtimeConfig.bandwidth succeeded: {r}");
    assert_eq!(r["code"], 7, "{r}");
    assert!(r["msg"].as_str().unwrap().contains("bandwidth"), "{r}");
    assert!(links_in_group(group).is_empty(), "host ends left");
    daemon.stop();
}

#[test]
fn a_restart_keeps_an_attachments_own_mtu_and_mac() {
    let test = "a_restart_keeps_an_attachments_own_mtu_and_mac";
    if !inside_private_world(test) {
        return;
    }
    let group = 7845;
    let args = ["--keep-on-exit"];
    let daemon = Daemon::start("rk", group, &args);
    let plugin = bin("netslot-cni");
    let path = netns_add("rk1");
    let mut conf = plain_conf();
    conf["mtu"] = 1400.into();
    conf["runtimeConfig"] = json!({"mac": "0a:58:0a:09:00:08"});
    let env = container_env("rk1", &path, "eth0");
    let (ok, r) = exec_plugin(&plugin, "ADD", &env, &conf);
    assert!(ok, "ADD: {r}");
    daemon.stop();
    let daemon = Daemon::start("rk", group, &args);
    let key = netslot::daemon::protocol::AttachmentKey {
        network: "slots".into(),
        container_id: "rk1".into(),
        ifname: "eth0".into(),
    };
    let answer =
        netslot::daemon::client::call(Path::new(SOCKET), Operation::Check { key }).expect("check");
    let a = answer.attachment.expect("the adopted attachment");
    assert_eq!((a.mtu, a.mac.as_str()), (1400, "0a:58:0a:09:00:08"));
    let (ok, out) = exec_plugin(&plugin, "DEL", &env, &conf);
    assert!(ok, "DEL: {out}");
    assert!(links_in_group(group).is_empty(), "host ends left");
    daemon.stop();
}

/// A TCP connect from inside namespace `path` to `addr`:9 (either family) that must be
/// refused.
fn refused_from_ip(path: &str, addr: &str) {
    let ns = std::fs::File::open(path).unwrap();
    let addr: std::net::IpAddr = addr.parse().unwrap();
    let r = in_netns(ns.as_fd(), move || tcp_refused_ip(addr));
    r.unwrap_or_else(|e| panic!("from {path}: {e}"));
}

/// The IPv6 routes of the main table inside namespace `ns` (or the test's own namespace,
/// `None`), each as iproute2 prints it in one line.
fn routes6_in(ns: Option<&str>, dev: &str) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["-6", "route", "show", "dev", dev]);
    let out = run("ip", &args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The IPv6 addresses of `dev` (inside `ns`, or here), each as (local, address, prefix
/// length, flags iproute2 names).
fn addrs6_of(ns: Option<&str>, dev: &str) -> Vec<(String, String, u64, Vec<String>)> {
    let mut args = Vec::new();
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend(["-6", "addr", "show", "dev", dev]);
    ip_json(&args)
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            let local = a["local"].as_str().unwrap_or_default().to_owned();
            let address = a["address"].as_str().unwrap_or(&local).to_owned();
            let flags = ["nodad", "noprefixroute", "tentative", "dadfailed"]
                .into_iter()
                .filter(|f| a[*f].as_bool() == Some(true))
                .map(str::to_owned)
                .collect();
            (local, address, a["prefixlen"].as_u64().unwrap(), flags)
        })
        .collect()
}

fn disable_ipv6_of(dev: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn a_dual_stack_lease_is_placed_on_both_ends_and_carries_ipv6_both_ways() {
    let test = "a_dual_stack_lease_is_placed_on_both_ends_and_carries_ipv6_both_ways";
    if !inside_private_world(test) {
        return;
    }
    let group = 7848;
    let args = ["--keep-on-exit"];
    let daemon = Daemon::start("ds", group, &args);
    let plugin = bin("netslot-cni");
    let mut conf = conf_1_0("dual");
    conf["ipam"] = json!({"type": "host-local", "dataDir": LEASES,
        "ranges": [[{"subnet": "10.25.0.0/24"}], [{"subnet": "fd00:25::/64"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]});
    let mut results = Vec::new();
    for (c, version) in [("ds1", "1.0.0"), ("ds2", "0.4.0")] {
        let path = netns_add(c);
        let mut conf = conf.clone();
        conf["cniVersion"] = version.into();
        let (ok, r) = exec_plugin(&plugin, "ADD", &container_env(c, &path, "eth0"), &conf);
        assert!(ok, "ADD {c} at {version}: {r}");
        results.push((c, path, r));
    }
    // An IPv4-only slot of the same daemon keeps IPv6 off on its host end.
    let v4_path = netns_add("ds4");
    let v4_conf = host_local_conf("single", "10.26.0.0/24");
    let (ok, v4) = exec_plugin(
        &plugin,
        "ADD",
        &container_env("ds4", &v4_path, "eth0"),
        &v4_conf,
    );
    assert!(ok, "ADD ds4: {v4}");
    let v4_host = v4["interfaces"][0]["name"].as_str().unwrap();
    assert_eq!(disable_ipv6_of(v4_host), "1", "{v4_host}");
    assert!(addrs6_of(None, v4_host).is_empty(), "{v4_host}");

    let mut held = leases("dual");
    held.sort();
    assert_eq!(held, ["10.25.0.2", "10.25.0.3", "fd00:25::2", "fd00:25::3"]);
    for (i, (c, path, r)) in results.iter().enumerate() {
        let v4 = format!("10.25.0.{}", i + 2);
        let v6 = format!("fd00:25::{}", i + 2);
        // The result: both addresses on the container end, both default routes.
        let ips: Vec<(&str, &str)> = r["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ip| {
                (
                    ip["address"].as_str().unwrap(),
                    ip["gateway"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ips,
            [
                (format!("{v4}/24").as_str(), "10.25.0.1"),
                (format!("{v6}/64").as_str(), "fd00:25::1")
            ],
            "{r}"
        );
        assert!(r["ips"]
            .as_array()
            .unwrap()
            .iter()
            .all(|ip| ip["interface"] == 1));
        let routes: Vec<&Value> = r["routes"].as_array().unwrap().iter().collect();
        assert!(
            routes.contains(&&json!({"dst": "::/0", "gw": "fd00:25::1"})),
            "{r}"
        );
        // The container end as the kernel has it: the IPv6 lease without DAD and without
        // the kernel's prefix route, the gateway on the link, the prefix and the default
        // via the gateway.
        let a6 = addrs6_of(Some(c), "eth0");
        assert_eq!(a6.len(), 1, "{c}: {a6:?}");
        assert_eq!((&a6[0].0, a6[0].2), (&v6, 64), "{c}: {a6:?}");
        assert!(a6[0].3.contains(&"nodad".to_owned()), "{c}: {a6:?}");
        assert!(a6[0].3.contains(&"noprefixroute".to_owned()), "{c}: {a6:?}");
        let r6 = routes6_in(Some(c), "eth0");
        for want in [
            "fd00:25::1 proto static metric 1024 pref medium",
            "fd00:25::/64 via fd00:25::1 proto static metric 1024 pref medium",
            "default via fd00:25::1 proto static metric 1024 pref medium",
        ] {
            assert!(r6.iter().any(|r| r == want), "{c} lacks {want:?}: {r6:?}");
        }
        assert!(
            !r6.iter()
                .any(|r| r.starts_with("fd00:25::/64 proto kernel")),
            "{c}: the kernel's prefix route: {r6:?}"
        );
        assert_eq!(addrs_in(c, "eth0"), vec![format!("{v4}/24")]);
        // The host end: IPv6 on, the gateway as a /128 whose peer is the container, and
        // the kernel's route to the container's address through it.
        let host = r["interfaces"][0]["name"].as_str().unwrap();
        assert_eq!(disable_ipv6_of(host), "0", "{host}");
        let h6 = addrs6_of(None, host);
        let gw = h6
            .iter()
            .find(|a| a.0 == "fd00:25::1")
            .unwrap_or_else(|| panic!("{host} lacks fd00:25::1: {h6:?}"));
        assert_eq!((&gw.1, gw.2), (&v6, 128), "{host}: {h6:?}");
        assert!(gw.3.contains(&"nodad".to_owned()), "{host}: {h6:?}");
        // Both ways over IPv6, then over IPv4: the container reaches its gateway, the
        // host the container.
        refused_from_ip(path, "fd00:25::1");
        tcp_refused_ip(v6.parse().unwrap()).unwrap_or_else(|e| panic!("host to {c}: {e}"));
        refused_from(path, "10.25.0.1");
        tcp_refused(v4.parse().unwrap()).unwrap_or_else(|e| panic!("host to {c}: {e}"));
        // The host's route to the container (added once the address left the tentative
        // state the host end had before it came up).
        let h6r = routes6_in(None, host);
        assert!(
            h6r.iter()
                .any(|r| r.starts_with(&format!("{v6} proto kernel"))),
            "{host}: {h6r:?}"
        );
        // CHECK compares the IPv6 addresses and routes of prevResult with the kernel.
        let mut check = conf.clone();
        check["cniVersion"] = r["cniVersion"].clone();
        check["prevResult"] = r.clone();
        let (ok, out) = exec_plugin(&plugin, "CHECK", &container_env(c, path, "eth0"), &check);
        assert!(ok, "CHECK {c}: {out}");
    }
    // One container reaches the other over IPv6 through the host (which forwards here).
    assert!(run("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"])
        .status
        .success());
    refused_from_ip(&results[0].1, "fd00:25::3");
    // CHECK sees an IPv6 route that went missing.
    let (c, path, r) = &results[0];
    let gone = run(
        "ip",
        &[
            "-n",
            c,
            "-6",
            "route",
            "del",
            "default",
            "via",
            "fd00:25::1",
        ],
    );
    assert!(gone.status.success());
    let mut check = conf.clone();
    check["prevResult"] = r.clone();
    let (ok, out) = exec_plugin(&plugin, "CHECK", &container_env(c, path, "eth0"), &check);
    assert!(!ok, "CHECK without the IPv6 default route passed: {out}");
    assert_eq!(out["code"], 100, "{out}");
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .contains("has no route to ::/0 via fd00:25::1"),
        "{out}"
    );
    // A restart adopts the attachment with both leases.
    daemon.stop();
    let daemon = Daemon::start("ds", group, &args);
    let key = netslot::daemon::protocol::AttachmentKey {
        network: "dual".into(),
        container_id: "ds2".into(),
        ifname: "eth0".into(),
    };
    let answer =
        netslot::daemon::client::call(Path::new(SOCKET), Operation::Check { key }).expect("check");
    let a = answer.attachment.expect("the adopted attachment");
    let v6 = a.ipv6.expect("the adopted IPv6 lease");
    assert_eq!(
        (v6.address.as_str(), v6.gateway.as_str()),
        ("fd00:25::3/64", "fd00:25::1")
    );
    // DEL removes the interfaces and releases both leases of each.
    for (c, path, r) in &results {
        let mut conf = conf.clone();
        conf["cniVersion"] = r["cniVersion"].clone();
        let (ok, out) = exec_plugin(&plugin, "DEL", &container_env(c, path, "eth0"), &conf);
        assert!(ok, "DEL {c}: {out}");
        assert_eq!(link_names_in(c), vec!["lo"]);
    }
    let (ok, out) = exec_plugin(
        &plugin,
        "DEL",
        &container_env("ds4", &v4_path, "eth0"),
        &v4_conf,
    );
    assert!(ok, "DEL ds4: {out}");
    assert_eq!(leases("dual"), Vec::<String>::new());
    assert_eq!(leases("single"), Vec::<String>::new());
    assert!(links_in_group(group).is_empty(), "host ends left");
    daemon.stop();
}

#[test]
fn an_ipv6_only_lease_has_no_ipv4_on_either_end_and_carries_ipv6_both_ways() {
    let test = "an_ipv6_only_lease_has_no_ipv4_on_either_end_and_carries_ipv6_both_ways";
    if !inside_private_world(test) {
        return;
    }
    let group = 7849;
    let args = ["--keep-on-exit"];
    let daemon = Daemon::start("v6", group, &args);
    let plugin = bin("netslot-cni");
    let mut conf = conf_1_0("only6");
    conf["ipam"] = json!({"type": "host-local", "dataDir": LEASES,
        "ranges": [[{"subnet": "fd00:27::/64"}]], "routes": [{"dst": "::/0"}]});
    let path = netns_add("v61");
    let env = container_env("v61", &path, "eth0");
    let (ok, r) = exec_plugin(&plugin, "ADD", &env, &conf);
    assert!(ok, "ADD: {r}");
    assert_eq!(leases("only6"), ["fd00:27::2"]);
    assert_eq!(
        r["ips"],
        json!([{"address": "fd00:27::2/64", "gateway": "fd00:27::1", "interface": 1}]),
        "{r}"
    );
    assert_eq!(
        r["routes"],
        json!([{"dst": "::/0", "gw": "fd00:27::1"}]),
        "{r}"
    );
    // No IPv4 on either end; the IPv6 layout as for dual stack.
    let host = r["interfaces"][0]["name"].as_str().unwrap();
    assert!(addrs_in("v61", "eth0").is_empty(), "IPv4 in v61");
    assert!(routes_in("v61").is_empty(), "IPv4 routes in v61");
    let v4_on_host = ip_json(&["-4", "addr", "show", "dev", host]);
    assert!(
        v4_on_host.as_array().is_none_or(|a| a.is_empty()),
        "{host}: {v4_on_host}"
    );
    let a6 = addrs6_of(Some("v61"), "eth0");
    assert_eq!(
        (a6.len(), a6[0].0.as_str(), a6[0].2),
        (1, "fd00:27::2", 64),
        "{a6:?}"
    );
    let r6 = routes6_in(Some("v61"), "eth0");
    assert!(
        r6.iter()
            .any(|r| r == "default via fd00:27::1 proto static metric 1024 pref medium"),
        "{r6:?}"
    );
    assert_eq!(disable_ipv6_of(host), "0", "{host}");
    refused_from_ip(&path, "fd00:27::1");
    tcp_refused_ip("fd00:27::2".parse().unwrap()).unwrap_or_else(|e| panic!("host to v61: {e}"));
    let mut check = conf.clone();
    check["prevResult"] = r.clone();
    let (ok, out) = exec_plugin(&plugin, "CHECK", &env, &check);
    assert!(ok, "CHECK: {out}");
    // A restart adopts it as IPv6-only.
    daemon.stop();
    let daemon = Daemon::start("v6", group, &args);
    let key = netslot::daemon::protocol::AttachmentKey {
        network: "only6".into(),
        container_id: "v61".into(),
        ifname: "eth0".into(),
    };
    let answer =
        netslot::daemon::client::call(Path::new(SOCKET), Operation::Check { key }).expect("check");
    let a = answer.attachment.expect("the adopted attachment");
    assert_eq!(
        (a.address.as_str(), a.gateway.as_str(), a.ipv6.is_none()),
        ("fd00:27::2/64", "fd00:27::1", true)
    );
    let (ok, out) = exec_plugin(&plugin, "DEL", &env, &conf);
    assert!(ok, "DEL: {out}");
    assert_eq!(link_names_in("v61"), vec!["lo"]);
    assert_eq!(leases("only6"), Vec::<String>::new());
    assert!(links_in_group(group).is_empty(), "host ends left");
    daemon.stop();
}
