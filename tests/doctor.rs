//! `netslot doctor` against the real kernel: each test lowers a limit inside private
//! namespaces (never a host-wide sysctl) or raises N past a host limit it only reads, and
//! checks that the verdict flips and the fix names the right setting and value.

use std::path::Path;
use std::process::Command;

use netslot_kernel_tests::{in_private_world, json, netslot, read, require_root};
use serde_json::Value;

/// The check named `name` in doctor's JSON.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

fn fix(c: &Value) -> &str {
    c["fix"].as_str().unwrap_or_else(|| panic!("no fix in {c}"))
}

#[test]
fn nofile_is_read_from_the_process_doctor_runs_in() {
    if !require_root("nofile_is_read_from_the_process_doctor_runs_in") {
        return;
    }
    let (_, dir) = in_private_world(
        "prlimit --nofile=4096:4096 $NS doctor --slots 1000 --json > $D/ok.json || true\n\
         prlimit --nofile=64:64 $NS doctor --slots 1000 --json > $D/low.json && exit 1\n\
         echo $? > $D/low.rc\n\
         prlimit --nofile=64:64 $NS doctor --slots 1000 > $D/low.txt || true\n",
    );
    let ok = json(&dir, "ok.json");
    assert_eq!(ok["schema"], 1);
    assert_eq!(ok["slots"], 1000);
    let c = check(&ok, "RLIMIT_NOFILE");
    assert_eq!(c["verdict"], "ok", "{c}");
    assert_eq!(c["value"], "soft 4096, hard 4096");
    assert!(c["fix"].is_null());

    let low = json(&dir, "low.json");
    let c = check(&low, "RLIMIT_NOFILE");
    assert_eq!(c["verdict"], "fail", "{c}");
    assert_eq!(c["value"], "soft 64, hard 64");
    // 2 fds per slot + 64: 2064 needed, the fix asks for twice that.
    assert_eq!(c["needed"], 2064);
    assert!(fix(c).starts_with("ulimit -n 4128 "), "{c}");
    assert!(
        c["breaks"].as_str().unwrap().contains("this process"),
        "{c}"
    );
    assert_eq!(read(&dir, "low.rc").trim(), "1", "any fail exits 1");
    let text = read(&dir, "low.txt");
    assert!(
        text.lines()
            .any(|l| l.starts_with("fail") && l.contains("RLIMIT_NOFILE")),
        "{text}"
    );
    assert!(text.contains("fix: ulimit -n 4128"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bpffs_fails_when_something_else_is_mounted_at_sys_fs_bpf() {
    if !require_root("bpffs_fails_when_something_else_is_mounted_at_sys_fs_bpf") {
        return;
    }
    // The private world mounts bpffs at /sys/fs/bpf; a tmpfs over it hides it.
    let (_, dir) = in_private_world(
        "$NS doctor --slots 10 --json > $D/with.json || true\n\
         mount -t tmpfs netslot-test /sys/fs/bpf\n\
         $NS doctor --slots 10 --json > $D/without.json || true\n",
    );
    let with = json(&dir, "with.json");
    assert_eq!(check(&with, "bpffs")["verdict"], "ok");
    let without = json(&dir, "without.json");
    let c = check(&without, "bpffs");
    assert_eq!(c["verdict"], "fail", "{c}");
    assert_eq!(fix(c), "mount -t bpf bpf /sys/fs/bpf");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn max_net_namespaces_is_lowered_in_a_private_user_namespace() {
    if !require_root("max_net_namespaces_is_lowered_in_a_private_user_namespace") {
        return;
    }
    // user.* limits belong to the user namespace: root of a new one may lower its own,
    // and the host's stays as it is.
    let host_before = std::fs::read_to_string("/proc/sys/user/max_net_namespaces").unwrap();
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "--mount", "sh", "-euc"])
        .arg("echo 10 > /proc/sys/user/max_net_namespaces\n\"$NS\" doctor --slots 1000 --json || true")
        .env("NS", netslot())
        .output()
        .expect("run unshare");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("doctor JSON");
    let c = check(&report, "user.max_net_namespaces");
    assert_eq!(c["verdict"], "fail", "{c}");
    assert_eq!(c["value"], 10);
    let needed = c["needed"].as_u64().unwrap();
    assert!(needed >= 1000, "{c}");
    assert_eq!(
        fix(c),
        format!("sysctl -w user.max_net_namespaces={}", 2 * needed)
    );
    let host_after = std::fs::read_to_string("/proc/sys/user/max_net_namespaces").unwrap();
    assert_eq!(host_before, host_after, "the host's limit must not change");
}

#[test]
fn neighbour_table_limit_is_global_and_flips_with_n() {
    if !require_root("neighbour_table_limit_is_global_and_flips_with_n") {
        return;
    }
    // gc_thresh3 is one value for every namespace (only the initial one shows the
    // sysctl), so the test does not lower it: it asks for enough slots to pass it.
    let (_, dir) = in_private_world(
        "$NS doctor --slots 1 --json > $D/one.json || true\n\
         ip -s ntable show name arp_cache > $D/ntable.txt\n",
    );
    let one = json(&dir, "one.json");
    let c = check(&one, "net.ipv4.neigh.default.gc_thresh3");
    let thresh3 = c["value"]
        .as_u64()
        .expect("gc_thresh3 read from a private namespace");
    let ntable = read(&dir, "ntable.txt");
    assert!(
        ntable.contains(&format!("thresh3 {thresh3} ")),
        "doctor and `ip ntable` disagree: {thresh3} vs {ntable}"
    );
    let slots = thresh3 / 2 + 1;
    let (_, dir2) = in_private_world(&format!(
        "$NS doctor --slots {slots} --json > $D/many.json || true\n"
    ));
    let many = json(&dir2, "many.json");
    let c = check(&many, "net.ipv4.neigh.default.gc_thresh3");
    assert_eq!(c["verdict"], "fail", "{c}");
    let needed = c["needed"].as_u64().unwrap();
    assert!(needed > thresh3, "{c}");
    assert_eq!(
        fix(c),
        format!("sysctl -w net.ipv4.neigh.default.gc_thresh3={}", 2 * needed)
    );
    for d in [dir, dir2] {
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn ipv6_route_max_size_is_read_per_namespace_and_is_soft() {
    if !require_root("ipv6_route_max_size_is_read_per_namespace_and_is_soft") {
        return;
    }
    if !Path::new("/proc/sys/net/ipv6").exists() {
        eprintln!("ipv6_route_max_size: skipped: no IPv6");
        return;
    }
    // Per namespace: lowered in the private one only. On Linux >= 6.3 it is a GC
    // trigger, so even 1 is ok.
    let (_, dir) = in_private_world(
        "echo 1 > /proc/sys/net/ipv6/route/max_size\n\
         $NS doctor --slots 1000 --json > $D/r.json || true\n",
    );
    let r = json(&dir, "r.json");
    let c = check(&r, "net.ipv6.route.max_size");
    assert_eq!(c["value"], 1);
    assert_eq!(c["verdict"], "ok", "{c}");
    std::fs::remove_dir_all(&dir).unwrap();
}
