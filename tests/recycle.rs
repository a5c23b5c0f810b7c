//! Recycling released slots against the real kernel: a clean slot goes back with its
//! namespace and counters at zero; a slot a tenant changed (an address, a route, a
//! neighbour entry, a device, a process left inside) is destroyed, and what replaces it
//! carries none of that. Each test in its own private network namespace; every check
//! reads the kernel through iproute2 or the counters map, not the engine's own view.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use netslot::{Dirty, Engine, EngineConfig, Slot};
use netslot_kernel_tests::*;

const GROUP: u32 = 7650;

fn engine(prefix: &str) -> Engine {
    Engine::new(EngineConfig {
        prefix: prefix.into(),
        group: GROUP,
        ..Default::default()
    })
    .expect("engine")
}

/// The nsfs inode of a slot's namespace (unique while it lives).
fn ns_inode(slot: &Slot) -> u64 {
    let fd = slot.netns_fd().expect("netns fd");
    let f = std::fs::File::from(fd.try_clone_to_owned().expect("dup"));
    f.metadata().expect("fstat").ino()
}

/// Runs `ip args` inside the slot's namespace; panics unless it succeeds.
fn ip_in(slot: &Slot, args: &'static [&'static str]) {
    in_netns(slot.netns_fd().expect("netns fd"), move || {
        let out = run("ip", args);
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    });
}

/// `ip -j args` inside the slot's namespace.
fn ip_json_in(slot: &Slot, args: &'static [&'static str]) -> serde_json::Value {
    in_netns(slot.netns_fd().expect("netns fd"), move || ip_json(args))
}

#[test]
fn an_untouched_slot_comes_back_with_its_namespace_and_zeroed_counters() {
    if !require_root("an_untouched_slot_comes_back_with_its_namespace_and_zeroed_counters") {
        return;
    }
    in_private_netns(|| {
        let mut e = engine("rc");
        let slots = provision(&mut e, 3);
        let inodes: Vec<u64> = slots.iter().map(ns_inode).collect();
        // A tenant's traffic: TCP connects from slot 1 to its host end (a refusal proves
        // the path both ways), counted by the XDP program on the host end.
        let host_ip = slots[1].spec().host_ip;
        in_netns(slots[1].netns_fd().unwrap(), move || {
            for _ in 0..3 {
                tcp_refused(host_ip).unwrap();
            }
        });
        let ifindex = slots[1].spec().ifindex;
        let seen = |e: &Engine| {
            e.counters()
                .unwrap()
                .into_iter()
                .find(|c| c.ifindex == ifindex)
        };
        let before = seen(&e).expect("slot 1 counted its SYNs");
        assert!(before.packets >= 3, "{before:?}");

        let out = e.recycle(slots).expect("recycle");
        let why: Vec<String> = out
            .destroyed
            .iter()
            .map(|d| format!("{}: {}", d.spec.name, d.why))
            .collect();
        assert!(why.is_empty(), "fresh slots judged dirty: {why:?}");
        assert_eq!(out.clean.len(), 3);
        // The same namespaces, not new ones.
        let after: Vec<u64> = out.clean.iter().map(ns_inode).collect();
        assert_eq!(after, inodes);
        // The final counters are handed back, and the map starts from zero.
        let last = out.counters.iter().find(|c| c.ifindex == ifindex).copied();
        assert_eq!(last.map(|c| c.packets), Some(before.packets));
        assert_eq!(seen(&e), None, "counters of a recycled slot start at zero");
        // Still a working slot: traffic again, counted afresh.
        let clean = out.clean;
        in_netns(clean[1].netns_fd().unwrap(), move || {
            tcp_refused(host_ip).unwrap()
        });
        let again = seen(&e).expect("counted again");
        assert!(
            again.packets < before.packets + 3,
            "{again:?} vs {before:?}"
        );
        // A second recycle of the same slots is clean too (the gateway's learned ARP
        // entry is what the kernel would learn again).
        let out = e.recycle(clean).expect("recycle again");
        assert!(out.destroyed.is_empty(), "{:?}", out.destroyed);
        e.teardown(out.clean).expect("teardown");
        assert!(links_in_group(GROUP).is_empty(), "teardown left host ends");
    });
}

#[test]
fn a_tenants_changes_are_never_handed_to_the_next_tenant() {
    if !require_root("a_tenants_changes_are_never_handed_to_the_next_tenant") {
        return;
    }
    in_private_netns(|| {
        let mut e = engine("rd");
        let slots = provision(&mut e, 6);
        // Slot 0 stays untouched; each other one gets one kind of tenant change, made
        // with iproute2 inside the slot.
        ip_in(&slots[1], &["addr", "add", "10.1.1.1/24", "dev", "eth0"]);
        ip_in(&slots[2], &["route", "add", "10.9.0.0/16", "dev", "eth0"]);
        ip_in(
            &slots[3],
            &[
                "neigh",
                "add",
                "100.64.200.1",
                "lladdr",
                "aa:bb:cc:dd:ee:ff",
                "dev",
                "eth0",
            ],
        );
        ip_in(
            &slots[4],
            &[
                "link", "add", "rdx0", "type", "veth", "peer", "name", "rdx1",
            ],
        );
        // A process left running inside slot 5.
        let mut sleeper = in_netns(slots[5].netns_fd().unwrap(), || {
            Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("spawn sleep")
        });
        let names: Vec<String> = slots.iter().map(|s| s.spec().name.clone()).collect();
        let out = e.recycle(slots).expect("recycle");
        sleeper.kill().ok();
        sleeper.wait().ok();
        assert_eq!(out.clean.len(), 1, "{:?}", out.destroyed);
        assert_eq!(out.clean[0].spec().name, names[0]);
        let why = |i: usize| {
            out.destroyed
                .iter()
                .find(|d| d.spec.name == names[i])
                .map(|d| (d.why.clone(), d.result.clone()))
                .unwrap_or_else(|| panic!("{} not destroyed", names[i]))
        };
        for (i, says) in [
            (1, "address 10.1.1.1/24"),
            (2, "route 10.9.0.0/16"),
            (3, "neighbour Some(100.64.200.1)"),
            (4, "device rdx"),
            (5, "in use by pid"),
        ] {
            let (w, result) = why(i);
            assert!(w.to_string().contains(says), "{}: {w}", names[i]);
            assert!(result.is_ok(), "{}: {result:?}", names[i]);
        }
        assert!(matches!(why(5).0, Dirty::Occupied { .. }));
        // The destroyed slots' host ends are gone from the host namespace.
        let host: Vec<String> = links_in_group_names();
        for n in &names[1..] {
            assert!(!host.contains(n), "{n} still has its host end: {host:?}");
        }
        // Their replacements (the same ids, names and addresses) carry none of it.
        let fresh = provision(&mut e, 5);
        let mut fresh_names: Vec<String> = fresh.iter().map(|s| s.spec().name.clone()).collect();
        fresh_names.sort();
        let mut want = names[1..].to_vec();
        want.sort();
        assert_eq!(fresh_names, want, "the freed ids are reused");
        for s in &fresh {
            let addrs = ip_json_in(s, &["-4", "addr", "show"]).to_string();
            assert!(!addrs.contains("10.1.1.1"), "{}: {addrs}", s.spec().name);
            let routes = ip_json_in(s, &["route", "show"]).to_string();
            assert!(!routes.contains("10.9.0.0"), "{}: {routes}", s.spec().name);
            let neigh = ip_json_in(s, &["neigh", "show"]).to_string();
            assert!(
                !neigh.contains("100.64.200.1"),
                "{}: {neigh}",
                s.spec().name
            );
            let links = ip_json_in(s, &["link", "show"]).to_string();
            assert!(!links.contains("rdx"), "{}: {links}", s.spec().name);
        }
        let all: Vec<Slot> = out.clean.into_iter().chain(fresh).collect();
        e.teardown(all).expect("teardown");
        assert!(links_in_group(GROUP).is_empty(), "teardown left host ends");
    });
}

/// Names of the devices in the pool's groups (host ends), from the kernel.
fn links_in_group_names() -> Vec<String> {
    links()
        .iter()
        .filter(|l| in_pool(l, GROUP))
        .filter_map(|l| l["ifname"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_slot_mounted_elsewhere_is_not_recycled() {
    if !require_root("a_slot_mounted_elsewhere_is_not_recycled") {
        return;
    }
    // A private mount namespace too: the bind mount the "tenant" makes stays in it.
    netslot_test_support::in_private(libc::CLONE_NEWNET | libc::CLONE_NEWNS, || {
        let out = run("mount", &["--make-rprivate", "/"]);
        assert!(out.status.success(), "{out:?}");
        let mut e = engine("rm");
        let slots = provision(&mut e, 2);
        let dir = std::env::temp_dir().join(format!("netslot-recycle-{}", rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("kept");
        std::fs::File::create(&target).unwrap();
        // The mount runs in a child: name our fd through our pid, not /proc/self.
        let src = format!("/proc/{}/fd/{}", std::process::id(), {
            use std::os::fd::AsRawFd;
            slots[0].netns_fd().unwrap().as_raw_fd()
        });
        let out = run("mount", &["--bind", &src, target.to_str().unwrap()]);
        assert!(out.status.success(), "bind mount: {out:?}");
        let out = e.recycle(slots).expect("recycle");
        assert_eq!(out.clean.len(), 1);
        assert_eq!(out.destroyed.len(), 1);
        let w = out.destroyed[0].why.to_string();
        assert!(w.contains("a mount at"), "{w}");
        let out2 = run("umount", &[target.to_str().unwrap()]);
        assert!(out2.status.success(), "{out2:?}");
        std::fs::remove_dir_all(&dir).unwrap();
        e.teardown(out.clean).expect("teardown");
        assert!(links_in_group(GROUP).is_empty(), "teardown left host ends");
    });
}
