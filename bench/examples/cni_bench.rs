//! cni_bench: ADD and DEL latency and throughput of `netslot-cni` (through `netslot serve`,
//! with its own /31s and with `host-local` IPAM: IPv4, dual stack, IPv6 only) side by side with
//! the reference `ptp` plugin + `host-local` IPAM (IPv4 and dual stack), on the same kind
//! of containers, in one run. Runs itself inside private network and mount namespaces (a tmpfs on
//! /run), so it leaves nothing behind. Needs root.
//!
//! ```sh
//! cargo build --release -p netslot-cli -p netslot-bench --bins --examples
//! sudo target/release/examples/cni_bench [--rounds 5] [--concurrent 64] [--alone 50] [--only TEXT]
//! ```
//!
//! `--only TEXT` runs only the systems whose name contains TEXT (e.g. `host-local`);
//! `--reverse` runs them in the opposite order (each round runs them one after the other,
//! so the order may favour some).
//!
//! Each ADD and each DEL is timed as a runtime sees it: from exec of the plugin to its
//! exit. The namespaces are made beforehand (`ip netns add`), as a runtime does, and
//! removed afterwards (`ip netns del`); neither is timed. "Alone" runs one command at a
//! time; "concurrent" starts `--concurrent` ADDs at once, then, once all have returned,
//! that many DELs at once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const INSIDE: &str = "NETSLOT_CNI_BENCH_INSIDE";
const SOCKET: &str = "/run/netslot/netslot.sock";

fn main() {
    if std::env::var(INSIDE).is_err() {
        let exe = std::env::current_exe().expect("own path");
        let st = Command::new("unshare")
            .args(["--net", "--mount", "--propagation", "private", "sh", "-euc"])
            // All of /run: a host directory under it could be removed by someone else,
            // which would detach a mount made on it.
            .arg("mount -t tmpfs b /run; mkdir -p /run/netns /run/netslot; ip link set lo up; exec \"$@\"")
            .arg("sh")
            .arg(exe)
            .args(std::env::args().skip(1))
            .env(INSIDE, "1")
            .status()
            .expect("run unshare");
        std::process::exit(st.code().unwrap_or(1));
    }
    let arg = |name: &str, default: usize| -> usize {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse().expect("a number"))
            .unwrap_or(default)
    };
    let rounds = arg("--rounds", 5);
    let n = arg("--concurrent", 64);
    let alone = arg("--alone", 50);
    let only: Option<String> = {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1).cloned())
    };

    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf();
    let mut daemon = Command::new(dir.join("netslot"))
        .args([
            "serve", "--socket", SOCKET, "--prefix", "bq", "--group", "7900",
        ])
        .stderr(Stdio::null())
        .spawn()
        .expect("start netslot serve");
    let t = Instant::now();
    while netslot::daemon::client::call(
        Path::new(SOCKET),
        netslot::daemon::protocol::Operation::Status,
    )
    .is_err()
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let systems = [
        System {
            name: "netslot serve, protocol only (no plugin exec)",
            plugin: PathBuf::new(),
            conf: Value::Null,
        },
        System {
            name: "netslot-cni (daemon)",
            plugin: dir.join("netslot-cni"),
            conf: json!({"cniVersion": "1.0.0", "name": "bench", "type": "netslot-cni", "socket": SOCKET}),
        },
        System {
            name: "netslot-cni (daemon) + host-local",
            plugin: dir.join("netslot-cni"),
            conf: json!({"cniVersion": "1.0.0", "name": "bench-ipam", "type": "netslot-cni",
                "socket": SOCKET,
                "ipam": {"type": "host-local", "subnet": "10.201.0.0/16",
                         "routes": [{"dst": "0.0.0.0/0"}],
                         "dataDir": "/run/netslot/host-local"}}),
        },
        System {
            name: "netslot-cni (daemon) + host-local, dual stack",
            plugin: dir.join("netslot-cni"),
            conf: json!({"cniVersion": "1.0.0", "name": "bench-dual", "type": "netslot-cni",
                "socket": SOCKET,
                "ipam": {"type": "host-local",
                         "ranges": [[{"subnet": "10.202.0.0/16"}], [{"subnet": "fd00:202::/64"}]],
                         "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                         "dataDir": "/run/netslot/host-local"}}),
        },
        System {
            name: "netslot-cni (daemon) + host-local, IPv6 only",
            plugin: dir.join("netslot-cni"),
            conf: json!({"cniVersion": "1.0.0", "name": "bench-v6", "type": "netslot-cni",
                "socket": SOCKET,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "fd00:204::/64"}]],
                         "routes": [{"dst": "::/0"}],
                         "dataDir": "/run/netslot/host-local"}}),
        },
        System {
            name: "ptp + host-local",
            plugin: PathBuf::from("/usr/lib/cni/ptp"),
            conf: json!({"cniVersion": "1.0.0", "name": "bench", "type": "ptp", "ipMasq": false,
                "ipam": {"type": "host-local", "subnet": "10.200.0.0/16",
                         "dataDir": "/run/netslot/host-local"}}),
        },
        System {
            name: "ptp + host-local, dual stack",
            plugin: PathBuf::from("/usr/lib/cni/ptp"),
            conf: json!({"cniVersion": "1.0.0", "name": "bench-ptp-dual", "type": "ptp",
                "ipMasq": false,
                "ipam": {"type": "host-local",
                         "ranges": [[{"subnet": "10.203.0.0/16"}], [{"subnet": "fd00:203::/64"}]],
                         "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                         "dataDir": "/run/netslot/host-local"}}),
        },
    ];
    let mut systems: Vec<System> = systems
        .into_iter()
        .filter(|s| only.as_deref().is_none_or(|o| s.name.contains(o)))
        .collect();
    if std::env::args().any(|a| a == "--reverse") {
        systems.reverse();
    }
    let mut report: Vec<Report> = Vec::new();
    for (s, sys) in systems.iter().enumerate() {
        let names: Vec<String> = (0..alone).map(|i| format!("a{s}-{i}")).collect();
        let mut r = Report {
            name: sys.name,
            ..Report::default()
        };
        r.add.alone = names.iter().map(|c| sys.add(c)).collect();
        r.del.alone = names.iter().map(|c| sys.del(c)).collect();
        netns_del(&names);
        report.push(r);
    }
    for r in 0..rounds {
        // Alternate the systems round by round: both see the same background load.
        for (s, sys) in systems.iter().enumerate() {
            let names: Vec<String> = (0..n).map(|i| format!("c{s}-{r}-{i}")).collect();
            for c in &names {
                netns_add(c);
            }
            report[s].add.together(&names, |c| sys.add_made(c));
            report[s].del.together(&names, |c| sys.del(c));
            netns_del(&names);
        }
    }
    let stats = netslot::daemon::client::call(
        Path::new(SOCKET),
        netslot::daemon::protocol::Operation::Stats,
    )
    .ok()
    .and_then(|r| r.stats);
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();

    for (cmd, of) in [
        ("ADD", (|r: &Report| &r.add) as fn(&Report) -> &Times),
        ("DEL", |r: &Report| &r.del),
    ] {
        println!(
            "| system | 1 {cmd} alone p50 / p99 (ms) | under {n} concurrent {cmd}s p50 / p99 (ms) | {cmd}s/s ({n} concurrent, {rounds} rounds) |"
        );
        println!("|---|---|---|---|");
        for r in &report {
            let t = of(r);
            println!(
                "| {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.0} |",
                r.name,
                ms(pct(&t.alone, 50.0)),
                ms(pct(&t.alone, 99.0)),
                ms(pct(&t.concurrent, 50.0)),
                ms(pct(&t.concurrent, 99.0)),
                t.concurrent.len() as f64 / t.wall.as_secs_f64()
            );
        }
        println!();
    }
    if let Some(s) = stats {
        println!(
            "daemon: {} attach batches for {} ADDs (largest round {} requests), {} batches in all",
            s.attach_batches, s.attached, s.largest_round, s.batches
        );
        println!(
            "daemon: {:.1} ms inside Engine::attach per batch on average ({:.2} ms per ADD)",
            s.attach_busy_us as f64 / 1e3 / s.attach_batches.max(1) as f64,
            s.attach_busy_us as f64 / 1e3 / s.attached.max(1) as f64
        );
    }
}

/// One system's latencies, for one command.
#[derive(Default)]
struct Times {
    /// One command at a time.
    alone: Vec<Duration>,
    /// Every command of every concurrent round.
    concurrent: Vec<Duration>,
    /// The concurrent rounds' wall time, summed: from their start to the last exit.
    wall: Duration,
}

impl Times {
    /// Runs `f` for every name at once (threads released by one barrier), and records
    /// each one's latency and the round's wall time.
    fn together(&mut self, names: &[String], f: impl Fn(&str) -> Duration + Sync) {
        let barrier = Barrier::new(names.len() + 1);
        let t = std::thread::scope(|scope| {
            let threads: Vec<_> = names
                .iter()
                .map(|c| {
                    let (f, b) = (&f, &barrier);
                    scope.spawn(move || {
                        b.wait();
                        f(c)
                    })
                })
                .collect();
            barrier.wait();
            let t = Instant::now();
            let lat: Vec<Duration> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            self.wall += t.elapsed();
            lat
        });
        self.concurrent.extend(t);
    }
}

#[derive(Default)]
struct Report {
    name: &'static str,
    add: Times,
    del: Times,
}

struct System {
    name: &'static str,
    plugin: PathBuf,
    conf: Value,
}

impl System {
    /// Makes the namespace, then times one ADD.
    fn add(&self, c: &str) -> Duration {
        netns_add(c);
        self.add_made(c)
    }

    fn add_made(&self, c: &str) -> Duration {
        let t = Instant::now();
        if self.conf.is_null() {
            let r = netslot::daemon::client::call(Path::new(SOCKET), attach(c)).expect("attach");
            assert!(r.ok, "attach {c}: {:?}", r.error);
            return t.elapsed();
        }
        let out = self.exec("ADD", c);
        let took = t.elapsed();
        assert!(
            out.status.success(),
            "{} ADD {c}: {}",
            self.name,
            String::from_utf8_lossy(&out.stdout)
        );
        took
    }

    /// Times one DEL. The namespace stays (see [`netns_del`]).
    fn del(&self, c: &str) -> Duration {
        let t = Instant::now();
        let took = if self.conf.is_null() {
            let r = netslot::daemon::client::call(
                Path::new(SOCKET),
                netslot::daemon::protocol::Operation::Detach { key: key(c) },
            );
            assert!(r.expect("detach").ok, "detach {c}");
            t.elapsed()
        } else {
            let out = self.exec("DEL", c);
            let took = t.elapsed();
            assert!(
                out.status.success(),
                "{} DEL {c}: {}",
                self.name,
                String::from_utf8_lossy(&out.stdout)
            );
            took
        };
        took
    }

    fn exec(&self, command: &str, c: &str) -> std::process::Output {
        let mut child = Command::new(&self.plugin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", c)
            .env("CNI_NETNS", format!("/run/netns/{c}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("exec plugin");
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(self.conf.to_string().as_bytes());
        child.wait_with_output().expect("plugin output")
    }
}

fn key(c: &str) -> netslot::daemon::protocol::AttachmentKey {
    netslot::daemon::protocol::AttachmentKey {
        network: String::new(),
        container_id: c.to_owned(),
        ifname: "eth0".to_owned(),
    }
}

fn attach(c: &str) -> netslot::daemon::protocol::Operation {
    netslot::daemon::protocol::Operation::Attach {
        key: key(c),
        netns: PathBuf::from(format!("/run/netns/{c}")),
        netns_fd: false,
        mtu: None,
        mac: None,
        ipv4: None,
        ipv6: None,
    }
}

fn netns_add(name: &str) {
    let st = Command::new("ip")
        .args(["netns", "add", name])
        .status()
        .unwrap();
    assert!(st.success(), "ip netns add {name}");
}

/// Removes the namespaces once their DELs have all returned, so that no DEL is timed
/// against a namespace's teardown.
fn netns_del(names: &[String]) {
    for c in names {
        let _ = Command::new("ip").args(["netns", "del", c]).status();
    }
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
