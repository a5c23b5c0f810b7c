//! Soak: 20 cycles of provisioning and tearing down 1000 slots through one long-lived
//! `Engine`, in a private network namespace. After every cycle the process's open fds,
//! the devices of the namespace and the slot namespaces still alive must be back at their
//! starting values, and RSS must not creep. Ignored by default (about a minute or more);
//! run with `scripts/soak.sh` or
//! `cargo test -p netslot-kernel-tests --test soak -- --ignored --nocapture`.
//!
//! Figures are kernel-reported: fds from /proc/self/fd, RSS from /proc/self/status,
//! devices from `ip -j link show`, live slot namespaces from `ip -j netns list-id` (each
//! slot namespace has an nsid in the host namespace from its veth pair until cleanup_net
//! destroys it; "empty" is exact even though iproute2 shows only the first part of a long
//! list). The machine-wide net_namespace slab count is printed for context only.

use std::time::{Duration, Instant};

use netslot::{Engine, EngineConfig};
use netslot_kernel_tests::*;

const CYCLES: usize = 20;
const SLOTS: usize = 1000;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn nsids() -> usize {
    loop {
        let out = run("ip", &["-j", "netns", "list-id"]);
        // A dump racing with namespace destruction may be interrupted: read again.
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            if text.trim().is_empty() {
                return 0;
            }
            let v: serde_json::Value = serde_json::from_str(&text).expect("list-id JSON");
            return v.as_array().map_or(0, Vec::len);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn slab() -> String {
    std::fs::read_to_string("/proc/slabinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("net_namespace "))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_else(|| "?".into())
}

#[test]
#[ignore = "soak: 20 x 1000 slots; run with --ignored"]
fn twenty_cycles_of_a_thousand_slots_return_to_the_start() {
    if !require_root("twenty_cycles_of_a_thousand_slots_return_to_the_start") {
        return;
    }
    in_private_netns(|| {
        let mut e = Engine::new(EngineConfig {
            prefix: "soak".into(),
            group: 7970,
            ..Default::default()
        })
        .expect("engine");
        let start_fds = open_fds();
        let start_links = links().len();
        let start_rss = rss_kib();
        assert_eq!(nsids(), 0);
        eprintln!(
            "start: fds {start_fds} links {start_links} rss {start_rss} KiB slab net_namespace {}",
            slab()
        );
        eprintln!("cycle  up_s   slots/s  teardown_s  settle_s  fds  links  nsids  rss_KiB  slab");
        let mut rss = Vec::new();
        for cycle in 1..=CYCLES {
            let t = Instant::now();
            let out = e.provision(SLOTS).expect("provision");
            let up = t.elapsed();
            let failed: Vec<String> = out
                .slots
                .iter()
                .filter_map(|s| s.as_ref().err().map(ToString::to_string))
                .collect();
            assert!(failed.is_empty(), "cycle {cycle}: {failed:?}");
            assert_eq!(links_in_group(7970).len(), SLOTS, "cycle {cycle}");
            let slots: Vec<_> = out.slots.into_iter().map(Result::unwrap).collect();
            let t = Instant::now();
            e.teardown(slots).expect("teardown");
            let down = t.elapsed();
            // cleanup_net runs in a kernel worker: wait for the last slot namespace.
            let t = Instant::now();
            while nsids() > 0 && t.elapsed() < Duration::from_secs(120) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let settle = t.elapsed();
            let (fds, nlinks, ids, r) = (open_fds(), links().len(), nsids(), rss_kib());
            eprintln!(
                "{cycle:>5}  {:>5.2}  {:>7.0}  {:>10.2}  {:>8.2}  {fds:>3}  {nlinks:>5}  {ids:>5}  {r:>7}  {}",
                up.as_secs_f64(),
                SLOTS as f64 / up.as_secs_f64(),
                down.as_secs_f64(),
                settle.as_secs_f64(),
                slab()
            );
            assert_eq!(fds, start_fds, "cycle {cycle}: open fds");
            assert_eq!(nlinks, start_links, "cycle {cycle}: devices");
            assert_eq!(ids, 0, "cycle {cycle}: slot namespaces still alive");
            rss.push(r);
        }
        // RSS: allocator pools settle in the first cycles; after that it must stay flat.
        let after_first = rss[1];
        let last = *rss.last().unwrap();
        assert!(
            last <= after_first + 4096,
            "RSS crept from {after_first} KiB (cycle 2) to {last} KiB (cycle {CYCLES})"
        );
    });
}
