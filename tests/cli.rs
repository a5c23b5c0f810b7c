//! The `netslot` command as a user runs it, against the real kernel. Each test runs in a
//! private network namespace, and where it pins namespaces also in a private mount
//! namespace (`unshare --net --mount`), so /run/netns of the machine is never touched.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use netslot_kernel_tests::*;
use serde_json::Value;

#[test]
fn up_pins_status_reads_back_and_down_leaves_nothing() {
    if !require_root("up_pins_status_reads_back_and_down_leaves_nothing") {
        return;
    }
    let (log, dir) = in_private_world(
        r#"
        find /sys/fs/bpf -mindepth 1 > $D/before-bpf
        $NS up --slots 5 --prefix cli --group 7700 --json > $D/up.json
        ip -j netns list > $D/netns.json
        ip netns exec cli2 ip -j -4 addr show dev eth0 > $D/cli2.json
        ip netns exec cli2 ip -j route show default > $D/cli2-route.json
        $NS status --prefix cli --group 7700 --json > $D/status.json
        ip netns exec cli1 bash -c 'for i in 1 2 3; do (echo > /dev/tcp/100.64.0.2/9) 2>/dev/null; done; true'
        $NS stats --prefix cli --group 7700 --json > $D/stats.json
        ls -A /sys/fs/bpf/netslot/7700 > $D/bpf-pins
        rc=0; $NS up --slots 1 --prefix cli --group 7700 2> $D/inuse.err || rc=$?; echo $rc > $D/inuse.rc
        $NS down --prefix cli --group 7700 --json > $D/down.json
        ip -j netns list > $D/after-netns.json
        ls -A /run/netns > $D/after-ls
        ip -j -d link show > $D/after-links.json
        grep -c ' /run/netns/cli' /proc/self/mountinfo > $D/after-mounts || true
        find /sys/fs/bpf -mindepth 1 > $D/after-bpf
        bpftool -j prog show > $D/after-progs.json
        "#,
    );
    let up = json(&dir, "up.json");
    assert_eq!(up["report"]["provisioned"], 5, "{log}");
    assert_eq!(up["slots"].as_array().unwrap().len(), 5);
    assert_eq!(up["slots"][2]["netns"], "/run/netns/cli2");

    let names: Vec<String> = json(&dir, "netns.json")
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect();
    for i in 0..5 {
        assert!(
            names.contains(&format!("cli{i}")),
            "ip netns list lacks cli{i}: {names:?}"
        );
    }
    // `ip netns exec` works on a pinned slot, and sees the slot's own address and route.
    let addr = json(&dir, "cli2.json");
    assert_eq!(
        addr[0]["addr_info"][0]["local"],
        up["slots"][2]["slot_ip"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
    );
    let route = json(&dir, "cli2-route.json");
    assert_eq!(
        route[0]["gateway"],
        up["slots"][2]["host_ip"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
    );

    let status = json(&dir, "status.json");
    let slots = status["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 5);
    assert!(slots
        .iter()
        .all(|s| s["host_up"] == true && s["pinned"].is_string()));

    // XDP counters: pinned by `up`, attached to every host end, counting slot 1 only.
    assert_eq!(
        read(&dir, "bpf-pins")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["counters", "prog"]
    );
    let stats = json(&dir, "stats.json");
    assert_eq!(stats["hook"], "xdp", "{stats}");
    let prog = stats["prog_id"].as_u64().unwrap();
    assert!(
        slots
            .iter()
            .all(|s| s["xdp_prog_id"].as_u64() == Some(prog)),
        "{status}"
    );
    let per_slot: Vec<(String, u64)> = stats["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["packets"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(per_slot.len(), 5);
    for (name, packets) in &per_slot {
        if name == "cli1" {
            assert!(*packets >= 3, "cli1 sent 3 SYNs, counted {packets}");
        } else {
            assert_eq!(*packets, 0, "{name} sent nothing, counted {packets}");
        }
    }

    // A committed pool of the same prefix and group: a collision (exit code 6).
    assert_eq!(read(&dir, "inuse.rc").trim(), "6");
    assert!(read(&dir, "inuse.err").contains("already exists"), "{log}");

    let down = json(&dir, "down.json");
    assert_eq!(down["host_ends_deleted"], 5);
    assert_eq!(down["namespaces_unpinned"], 5);
    assert_eq!(
        json(&dir, "after-netns.json"),
        Value::Array(vec![]),
        "namespaces left"
    );
    assert_eq!(
        read(&dir, "after-ls").trim(),
        "",
        "files left in /run/netns"
    );
    let left: Vec<Value> = json(&dir, "after-links.json")
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["group"] == "7700" || l["ifname"].as_str().is_some_and(|n| n.starts_with("cli"))
        })
        .cloned()
        .collect();
    assert!(left.is_empty(), "devices left: {left:?}");
    assert_eq!(read(&dir, "after-mounts").trim(), "0", "bind mounts left");
    // A fresh bpffs holds the kernel's own progs.debug/maps.debug: compare with it.
    assert_eq!(
        read(&dir, "after-bpf"),
        read(&dir, "before-bpf"),
        "bpffs entries left"
    );
    let progs = json(&dir, "after-progs.json");
    let left = progs
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["id"].as_u64() == Some(prog))
        .count();
    assert_eq!(left, 0, "XDP program {prog} still loaded after down");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_refused_and_creates_nothing() {
    if !require_root("bad_input_is_refused_and_creates_nothing") {
        return;
    }
    let cases: [(&str, &str); 5] = [
        ("--slots 0", "at least 1"),
        // 14-byte prefix: ids up to 9 fit in 15 bytes, id 10 does not.
        ("--slots 11 --prefix abcdefghijklmn", "15"),
        ("--slots 5 --cidr 10.1.0.0/30", "holds 2 slots"),
        ("--slots 1 --group 0", "group 0"),
        ("--slots 1 --prefix a/b", "not usable"),
    ];
    for (args, expect) in cases {
        let (log, dir) = in_private_world(&format!(
            r#"
            rc=0; $NS up {args} 2> $D/err || rc=$?; echo $rc > $D/rc
            ip -j link show > $D/links.json
            ls -A /run/netns 2>/dev/null > $D/ls || true
            "#
        ));
        assert_eq!(read(&dir, "rc").trim(), "2", "{args}: {log}");
        let err = read(&dir, "err");
        assert!(
            err.contains(expect),
            "{args}: expected {expect:?} in {err:?}"
        );
        let links = json(&dir, "links.json");
        assert_eq!(
            links.as_array().unwrap().len(),
            1,
            "{args}: only lo may exist: {links}"
        );
        assert_eq!(read(&dir, "ls").trim(), "", "{args}: pins created");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn refuses_to_run_without_root() {
    if !require_root("refuses_to_run_without_root") {
        return;
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(netslot())
        .args(["up", "--slots", "1"])
        .output()
        .expect("setpriv");
    // Exit code 3: permission.
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must run as root"));
}

#[test]
fn hold_keeps_slots_until_sigterm_then_tears_down() {
    if !require_root("hold_keeps_slots_until_sigterm_then_tears_down") {
        return;
    }
    in_private_netns(|| {
        // Only a network namespace here: the ownership record goes to a scratch directory,
        // not the machine's /run/netslot.
        let run_dir = std::env::temp_dir().join(format!("netslot-hold-{}", rand_suffix()));
        let mut child = Command::new(netslot())
            .args([
                "up", "--slots", "3", "--prefix", "hold", "--group", "7800", "--hold",
            ])
            .arg("--run-dir")
            .arg(&run_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn netslot");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let holding = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.starts_with("holding"));
        assert!(holding.is_some(), "netslot never said it was holding");
        let held = links_in_group(7800);
        assert_eq!(held.len(), 3, "{held:?}");
        // A live owner: gc refuses to touch its pool, naming the owner.
        let gc = Command::new(netslot())
            .args(["gc", "--prefix", "hold", "--group", "7800", "--run-dir"])
            .arg(&run_dir)
            .output()
            .unwrap();
        // Exit code 5: owned by a live process.
        assert_eq!(gc.status.code(), Some(5));
        let err = String::from_utf8_lossy(&gc.stderr);
        assert!(
            err.contains("owned by a running process") && err.contains(&child.id().to_string()),
            "{err}"
        );
        assert_eq!(links_in_group(7800).len(), 3, "gc touched a live pool");
        // No pins with --hold.
        assert!(!std::path::Path::new("/run/netns/hold0").exists());
        let r = run("kill", &["-TERM", &child.id().to_string()]);
        assert!(r.status.success());
        let status = child.wait().unwrap();
        assert!(status.success(), "exit {status}");
        assert!(links_in_group(7800).is_empty(), "SIGTERM left host ends");
        // The torn-down pool leaves no ownership record.
        let left: Vec<_> = std::fs::read_dir(&run_dir).unwrap().collect();
        assert!(left.is_empty(), "records left: {left:?}");
        std::fs::remove_dir(&run_dir).unwrap();
    });
}

#[test]
fn gc_keeps_a_committed_pool_and_removes_only_its_incomplete_slots() {
    if !require_root("gc_keeps_a_committed_pool_and_removes_only_its_incomplete_slots") {
        return;
    }
    // Incomplete slots of the pool: gco3 (pinned, host end gone) and gco4 (host end kept
    // alive by a bind mount elsewhere, its pin unmounted but its file left: a pin made
    // halfway). Strangers named like slots, made by iproute2 and never the pool's: a veth
    // gco7 in the pool's group (no pool MAC) and a plain file gco9 among the pins.
    let (log, dir) = in_private_world(
        r#"
        $NS up --slots 6 --prefix gco --group 7810 > /dev/null
        ip link del gco3
        mkdir -p /run/keep; touch /run/keep/k4
        mount --bind /run/netns/gco4 /run/keep/k4; umount /run/netns/gco4
        touch /run/netns/gco9
        ip link add name gco7 group 7810 type veth peer name peer7
        $NS gc --prefix gco --group 7810 --dry-run --json > $D/dry.json
        ip -j link show > $D/after-dry-links.json
        ls /run/netns > $D/after-dry-ls
        $NS gc --prefix gco --group 7810 --json > $D/gc.json
        $NS status --prefix gco --group 7810 --json > $D/status.json
        grep -c ' /run/netns/gco' /proc/self/mountinfo > $D/mounts || true
        $NS down --prefix gco --group 7810 > /dev/null
        ip -j link show > $D/final-links.json
        ls -A /run/netns > $D/final-netns
        ls -A /run/netslot > $D/final-records
        ip link del gco7; rm /run/netns/gco9; umount /run/keep/k4
        "#,
    );
    let names = |v: &Value, key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                x.as_str()
                    .map_or_else(|| x["name"].as_str().unwrap().to_owned(), str::to_owned)
            })
            .collect()
    };
    let dry = json(&dir, "dry.json");
    assert_eq!(dry["record"], "committed", "{log}");
    assert_eq!(dry["whole_pool"], false);
    assert_eq!(dry["kept_slots"], 4, "{dry}");
    assert_eq!(names(&dry, "host_ends"), ["gco4"], "{dry}");
    assert_eq!(names(&dry, "namespaces"), ["/run/netns/gco3"]);
    assert_eq!(names(&dry, "stale_files"), ["/run/netns/gco4"]);
    assert_eq!(names(&dry, "foreign_in_group"), ["gco7"]);
    assert_eq!(names(&dry, "not_the_pools"), ["/run/netns/gco9"]);
    // The dry run removed nothing.
    let still = json(&dir, "after-dry-links.json").to_string();
    assert!(
        still.contains("\"gco4\"") && still.contains("\"gco7\""),
        "{still}"
    );
    let ls = read(&dir, "after-dry-ls");
    assert!(
        ls.contains("gco3") && ls.contains("gco4") && ls.contains("gco9"),
        "{ls}"
    );

    let gc = json(&dir, "gc.json");
    assert_eq!(gc["errors"], Value::Array(vec![]), "{log}");
    assert_eq!(
        gc["by_group_delete"], false,
        "a committed pool keeps its group"
    );
    let status = json(&dir, "status.json");
    let slots = status["slots"].as_array().unwrap();
    let ids: Vec<u64> = slots.iter().map(|s| s["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [0, 1, 2, 5], "{status}");
    assert!(slots
        .iter()
        .all(|s| s["host_up"] == true && s["pinned"].is_string()));
    assert_eq!(read(&dir, "mounts").trim(), "4");
    // `down` removed the pool and its record, and neither stranger.
    let final_links = json(&dir, "final-links.json").to_string();
    assert!(
        final_links.contains("\"gco7\""),
        "down deleted a stranger: {final_links}"
    );
    assert_eq!(
        read(&dir, "final-netns")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["gco9"]
    );
    assert_eq!(read(&dir, "final-records").trim(), "", "records left");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn up_attach_tc_block_counts_through_one_filter_and_down_leaves_nothing() {
    if !require_root("up_attach_tc_block_counts_through_one_filter_and_down_leaves_nothing") {
        return;
    }
    let (log, dir) = in_private_world(
        r#"
        find /sys/fs/bpf -mindepth 1 > $D/before-bpf
        $NS up --slots 3 --prefix clt --group 7701 --attach tc-block --json > $D/up.json
        tc -j qdisc show > $D/qdiscs.json
        tc -j filter show block 7701 > $D/filters.json
        ip netns exec clt1 bash -c 'for i in 1 2 3; do (echo > /dev/tcp/100.64.0.2/9) 2>/dev/null; done; true'
        $NS stats --prefix clt --group 7701 --json > $D/stats.json
        $NS down --prefix clt --group 7701 --json > $D/down.json
        tc -j qdisc show > $D/after-qdiscs.json
        rc=0; tc filter show block 7701 2> $D/after-block.err || rc=$?; echo $rc > $D/after-block.rc
        find /sys/fs/bpf -mindepth 1 > $D/after-bpf
        bpftool -j prog show > $D/after-progs.json
        "#,
    );
    assert_eq!(json(&dir, "up.json")["report"]["provisioned"], 3, "{log}");
    let qdiscs = json(&dir, "qdiscs.json");
    for i in 0..3 {
        let name = format!("clt{i}");
        assert!(
            qdiscs
                .as_array()
                .unwrap()
                .iter()
                .any(|q| q["dev"] == name && q["kind"] == "clsact" && q["ingress_block"] == 7701),
            "{name} has no clsact on block 7701: {qdiscs}"
        );
    }
    let stats = json(&dir, "stats.json");
    assert_eq!(stats["hook"], "tc", "{stats}");
    let prog = stats["prog_id"].as_u64().unwrap();
    let filters = json(&dir, "filters.json");
    let ours: Vec<&Value> = filters
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["options"]["prog"]["id"].as_u64() == Some(prog))
        .collect();
    assert_eq!(ours.len(), 1, "one filter with program {prog}: {filters}");
    for s in stats["slots"].as_array().unwrap() {
        let packets = s["packets"].as_u64().unwrap();
        if s["name"] == "clt1" {
            assert!(packets >= 3, "clt1 sent 3 SYNs, counted {packets}");
        } else {
            assert_eq!(packets, 0, "{s}");
        }
    }
    assert_eq!(json(&dir, "down.json")["host_ends_deleted"], 3);
    assert!(
        !read(&dir, "after-qdiscs.json").contains("clsact"),
        "clsact qdiscs left"
    );
    assert_ne!(read(&dir, "after-block.rc").trim(), "0", "block 7701 left");
    assert_eq!(read(&dir, "after-bpf"), read(&dir, "before-bpf"));
    let left = json(&dir, "after-progs.json")
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["id"].as_u64() == Some(prog))
        .count();
    assert_eq!(left, 0, "tc program {prog} still loaded after down");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The error document `--json` prints on stdout, checked against the exit code.
fn json_error(dir: &std::path::Path, name: &str, kind: &str, code: i32) -> String {
    let rc: i32 = read(dir, &format!("{name}.rc")).trim().parse().unwrap();
    let doc = json(dir, &format!("{name}.json"));
    assert_eq!(rc, code, "{name}: exit code {rc}, not {code}: {doc}");
    assert_eq!(doc["schema"], 1, "{name}: {doc}");
    assert_eq!(doc["error"]["kind"], kind, "{name}: {doc}");
    assert_eq!(doc["error"]["code"], code, "{name}: {doc}");
    doc["error"]["message"].as_str().unwrap().to_owned()
}

/// Every duration of a report: a whole number of microseconds under a name ending in
/// `_us`; no other number in it is fractional.
fn durations_in_us(v: &Value, path: &str, found: &mut Vec<(String, u64)>) {
    let Some(map) = v.as_object() else { return };
    for (k, v) in map {
        let here = format!("{path}.{k}");
        if k.ends_with("_us") {
            let us = v
                .as_u64()
                .unwrap_or_else(|| panic!("{here} is not whole microseconds: {v}"));
            found.push((here, us));
        } else if v.is_object() {
            durations_in_us(v, &here, found);
        } else {
            assert!(
                !v.is_f64(),
                "{here} = {v} is fractional and not named as a duration"
            );
        }
    }
}

#[test]
fn every_json_document_is_schema_1_and_errors_are_json_with_their_exit_code() {
    if !require_root("every_json_document_is_schema_1_and_errors_are_json_with_their_exit_code") {
        return;
    }
    let (log, dir) = in_private_world(
        r#"
        U="setpriv --reuid 65534 --regid 65534 --clear-groups"
        step() { name=$1; shift; rc=0; "$@" > $D/$name.json 2> $D/$name.err || rc=$?; echo $rc > $D/$name.rc; }
        step up $NS up --slots 3 --prefix sj --group 7730 --json
        step status $NS status --prefix sj --group 7730 --json
        step stats $NS stats --prefix sj --group 7730 --json
        step gc-dry $NS gc --prefix sj --group 7730 --dry-run --json
        step gc $NS gc --prefix sj --group 7730 --json
        step status-nobody $U $NS status --prefix sj --group 7730 --json
        rc=0; $U $NS status --prefix sj --group 7730 > $D/status-nobody.txt 2>&1 || rc=$?; echo $rc > $D/status-nobody-text.rc
        step stats-nobody $U $NS stats --prefix sj --group 7730 --json
        step up-again $NS up --slots 1 --prefix sj --group 7730 --json
        step bad-cidr $NS up --slots 1 --prefix sk --group 7731 --cidr 10.1.0.0 --json
        step small-cidr $NS up --slots 5 --prefix sk --group 7731 --cidr 10.1.0.0/30 --json
        step nobody-up $U $NS up --slots 1 --prefix sk --group 7731 --json
        step nobody-gc $U $NS gc --prefix sj --group 7730 --json
        step no-stats $NS stats --prefix none --group 7739 --json
        step down $NS down --prefix sj --group 7730 --json
        ip -j link show > $D/links.json
        "#,
    );
    for name in [
        "up",
        "status",
        "stats",
        "gc-dry",
        "gc",
        "status-nobody",
        "down",
    ] {
        assert_eq!(
            read(&dir, &format!("{name}.rc")).trim(),
            "0",
            "{name}: {log}"
        );
        let doc = json(&dir, &format!("{name}.json"));
        assert_eq!(doc["schema"], 1, "{name}: {doc}");
        assert!(doc.get("error").is_none(), "{name}: {doc}");
    }

    // Durations: whole microseconds, named *_us; the phases fit in the wall time.
    let up = json(&dir, "up.json");
    let mut found = Vec::new();
    durations_in_us(&up["report"], "report", &mut found);
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "report.wall_us",
        "report.phases.links_us",
        "report.phases.pin_us",
        "report.group_changes_took_us",
    ] {
        assert!(names.contains(&want), "{want} missing: {names:?}");
    }
    let us = |name: &str| found.iter().find(|(n, _)| n == name).unwrap().1;
    assert!(us("report.wall_us") > 0, "{up}");
    assert!(us("report.phases.links_us") <= us("report.wall_us"), "{up}");
    assert!(up["report"].get("wall").is_none(), "{up}");

    // stats names its program after its hook.
    let stats = json(&dir, "stats.json");
    assert_eq!(stats["hook"], "xdp", "{stats}");
    assert!(
        stats["prog_id"].as_u64().is_some_and(|id| id > 0),
        "{stats}"
    );
    assert!(stats.get("xdp_prog_id").is_none(), "{stats}");

    // status without root: the same pool as root sees it.
    assert_eq!(
        json(&dir, "status-nobody.json"),
        json(&dir, "status.json"),
        "{log}"
    );
    assert_eq!(
        json(&dir, "status.json")["slots"].as_array().unwrap().len(),
        3
    );
    assert_eq!(read(&dir, "status-nobody-text.rc").trim(), "0", "{log}");
    assert!(
        read(&dir, "status-nobody.txt").contains("3 slot(s)"),
        "{log}"
    );
    // stats without root: the counters where the kernel lets anyone read them, else a
    // permission error that says root is needed.
    if read(&dir, "stats-nobody.rc").trim() == "0" {
        assert_eq!(json(&dir, "stats-nobody.json")["prog_id"], stats["prog_id"]);
    } else {
        let msg = json_error(&dir, "stats-nobody", "permission", 3);
        assert!(msg.contains("needs root"), "{msg}");
    }

    let msg = json_error(&dir, "up-again", "collision", 6);
    assert!(msg.contains("already exists"), "{msg}");
    let msg = json_error(&dir, "bad-cidr", "usage", 2);
    assert!(msg.contains("--cidr"), "{msg}");
    let msg = json_error(&dir, "small-cidr", "usage", 2);
    assert!(msg.contains("holds 2 slots"), "{msg}");
    let msg = json_error(&dir, "nobody-up", "permission", 3);
    assert!(msg.contains("must run as root"), "{msg}");
    json_error(&dir, "nobody-gc", "permission", 3);
    let msg = json_error(&dir, "no-stats", "usage", 2);
    assert!(msg.contains("no counters pinned"), "{msg}");
    // Under --json nothing goes to stderr but logs; errors are on stdout.
    assert!(
        !read(&dir, "up-again.err").contains("already exists"),
        "{log}"
    );

    let left = json(&dir, "links.json");
    assert_eq!(
        left.as_array().unwrap().len(),
        1,
        "only lo may be left: {left}"
    );
}

#[test]
fn a_live_owner_makes_gc_down_and_up_fail_as_owned() {
    if !require_root("a_live_owner_makes_gc_down_and_up_fail_as_owned") {
        return;
    }
    let (log, dir) = in_private_world(
        r#"
        step() { name=$1; shift; rc=0; "$@" > $D/$name.json 2> $D/$name.err || rc=$?; echo $rc > $D/$name.rc; }
        $NS up --hold --slots 2 --prefix so --group 7740 --json > $D/hold.json 2> $D/hold.err & P=$!
        i=0; until grep -q '"errors"' $D/hold.json 2>/dev/null; do i=$((i+1)); [ $i -lt 600 ]; sleep 0.1; done
        echo $P > $D/pid
        step gc $NS gc --prefix so --group 7740 --json
        step down $NS down --prefix so --group 7740 --json
        step up $NS up --slots 1 --prefix so --group 7740 --json
        kill -TERM $P; rc=0; wait $P || rc=$?; echo $rc > $D/hold.rc
        step gc-after $NS gc --prefix so --group 7740 --json
        "#,
    );
    let pid = read(&dir, "pid").trim().to_owned();
    let hold = json(&dir, "hold.json");
    assert_eq!(hold["schema"], 1, "{hold}");
    assert_eq!(hold["report"]["provisioned"], 2, "{log}");
    for step in ["gc", "down", "up"] {
        let msg = json_error(&dir, step, "owned", 5);
        assert!(
            msg.contains("owned by a running process") && msg.contains(&pid),
            "{step}: {msg}"
        );
    }
    assert_eq!(read(&dir, "hold.rc").trim(), "0", "{log}");
    assert_eq!(read(&dir, "gc-after.rc").trim(), "0", "{log}");
    assert_eq!(json(&dir, "gc-after.json")["schema"], 1);
}

/// `up` of more slots than the open-file limit could hold at once: made in several calls,
/// each call's handles closed once its slots are pinned, so it needs a bounded number of
/// fds. 2000 slots under a limit of 512, every one complete per the kernel.
#[test]
fn up_of_more_slots_than_the_fd_limit_holds_works_in_calls() {
    if !require_root("up_of_more_slots_than_the_fd_limit_holds_works_in_calls") {
        return;
    }
    let (log, dir) = in_private_world(
        r#"
        prlimit --nofile=512 $NS up --slots 2000 --prefix fdl --group 7821 --json > $D/up.json
        ip -o link show > $D/links
        grep -c ' /run/netns/fdl' /proc/self/mountinfo > $D/pins || true
        $NS down --prefix fdl --group 7821 > /dev/null
        grep -c ' /run/netns/fdl' /proc/self/mountinfo > $D/pins-after || true
        "#,
    );
    let up = json(&dir, "up.json");
    assert_eq!(up["report"]["provisioned"], 2000, "{log}");
    assert_eq!(up["report"]["failed"], 0, "{}", up["errors"]);
    assert!(
        up["calls"].as_u64().unwrap() > 1,
        "one call under 512 fds? {log}"
    );
    // One fd per pinned slot (its socket; the nsfs fd opened to pin it is closed): under
    // 512 fds a call holds more than 256 slots, which two fds per slot would not allow.
    let per_call = up["slots_per_call"].as_u64().unwrap();
    assert!((257..512).contains(&per_call), "{per_call} slots per call");
    let up_ends = read(&dir, "links")
        .lines()
        .filter(|l| l.contains(": fdl") && l.contains(",UP") && l.contains(" group "))
        .count();
    assert_eq!(up_ends, 2000, "host ends up");
    assert_eq!(read(&dir, "pins").trim(), "2000");
    assert_eq!(read(&dir, "pins-after").trim(), "0");
}

#[test]
fn up_kind_microvm_status_reads_each_tap_and_its_firecracker_body_and_down_leaves_nothing() {
    if !require_root(
        "up_kind_microvm_status_reads_each_tap_and_its_firecracker_body_and_down_leaves_nothing",
    ) {
        return;
    }
    let (log, dir) = in_private_world(
        r#"
        $NS up --kind microvm --tap-uid 4242 --slots 2 --prefix cmv --group 7706 --json > $D/up.json
        $NS status --prefix cmv --group 7706 --json > $D/status.json
        $NS status --prefix cmv --group 7706 > $D/status.txt
        for i in 0 1; do
            nsenter --net=/run/netns/cmv$i ip -j -d link show tap0 > $D/tap$i.json
        done
        $NS down --prefix cmv --group 7706 --json > $D/down.json
        ls -A /run/netns > $D/after-ls
        ip -j -d link show > $D/after-links.json
        "#,
    );
    let up = json(&dir, "up.json");
    assert_eq!(up["report"]["provisioned"], 2, "{log}");
    let status = json(&dir, "status.json");
    let slots = status["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 2, "{status}");
    let mut guest_macs = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        let pin = format!("/run/netns/cmv{i}");
        let mv = &s["microvm"];
        assert_eq!(mv["netns"], pin.as_str(), "{s}");
        assert_eq!(mv["tap"], "tap0", "{s}");
        // The guest holds the slot's address; the host end, its gateway, holds the other.
        let made = &up["slots"][i];
        assert_eq!(mv["guest_address"], made["slot_ip"], "{s}");
        assert_eq!(
            mv["gateway"].as_str(),
            made["host_ip"].as_str().unwrap().split('/').next(),
            "{s}"
        );
        // What the kernel shows is what `up` reported it made.
        assert_eq!(mv["firecracker"], made["microvm"]["firecracker"], "{s}");
        let body = &mv["firecracker"];
        assert_eq!(body["iface_id"], "eth0", "{s}");
        assert_eq!(body["host_dev_name"], "tap0", "{s}");
        assert_eq!(body["guest_mac"], mv["guest_mac"], "{s}");
        let mac = netslot::parse_mac(body["guest_mac"].as_str().unwrap()).unwrap();
        assert!(netslot::is_unicast_mac(&mac), "{s}");
        guest_macs.push(mac);

        // The tap, read by iproute2 inside the pinned namespace: a persistent tap owned
        // by the VMM's uid, whose own MAC is not the guest's.
        let tap = json(&dir, &format!("tap{i}.json"));
        let tap = &tap[0];
        assert_eq!(tap["linkinfo"]["info_kind"], "tun", "{tap}");
        let data = &tap["linkinfo"]["info_data"];
        assert_eq!(data["type"], "tap", "{tap}");
        assert_eq!(data["persist"], true, "{tap}");
        assert_eq!(data["multi_queue"], false, "{tap}");
        assert_eq!(data["user"], 4242, "{tap}");
        assert_ne!(tap["address"], body["guest_mac"], "{tap}");
    }
    assert_ne!(guest_macs[0], guest_macs[1], "guest MACs are per slot");
    let text = read(&dir, "status.txt");
    assert!(text.contains("2 microVM tap(s)"), "{text}");
    assert!(text.contains("tap tap0"), "{text}");

    let down = json(&dir, "down.json");
    assert_eq!(down["host_ends_deleted"], 2, "{down}");
    assert_eq!(down["namespaces_unpinned"], 2, "{down}");
    assert_eq!(read(&dir, "after-ls").trim(), "", "pins left");
    let left: Vec<Value> = json(&dir, "after-links.json")
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| in_pool(l, 7706) || l["ifname"].as_str().is_some_and(|n| n.starts_with("cmv")))
        .cloned()
        .collect();
    assert!(left.is_empty(), "host ends left: {left:?}");
}

#[test]
fn tap_options_without_kind_microvm_are_refused_and_create_nothing() {
    if !require_root("tap_options_without_kind_microvm_are_refused_and_create_nothing") {
        return;
    }
    let cases: [(&str, &str); 4] = [
        // clap's `requires`: the missing option is named.
        ("--tap-uid 4242", "--kind"),
        ("--tap-multi-queue", "--kind"),
        (
            "--kind standard --tap-uid 4242",
            "--tap-uid applies to microVM slots only",
        ),
        ("--kind microvm --no-xdp", "XDP counters"),
    ];
    for (args, expect) in cases {
        let (log, dir) = in_private_world(&format!(
            r#"
            rc=0; $NS up --slots 1 --prefix cmt {args} 2> $D/err || rc=$?; echo $rc > $D/rc
            rc=0; $NS up --slots 1 --prefix cmt {args} --json > $D/json.json || rc=$?; echo $rc > $D/json.rc
            ip -j link show > $D/links.json
            ls -A /run/netns > $D/ls
            "#
        ));
        assert_eq!(read(&dir, "rc").trim(), "2", "{args}: {log}");
        let err = read(&dir, "err");
        assert!(
            err.contains(expect),
            "{args}: expected {expect:?} in {err:?}"
        );
        // Under --json, the same refusal as a usage document, naming what is missing.
        let message = json_error(&dir, "json", "usage", 2);
        assert!(
            message.contains(expect),
            "{args}: expected {expect:?} in {message:?}"
        );
        let links = json(&dir, "links.json");
        assert_eq!(
            links.as_array().unwrap().len(),
            1,
            "{args}: only lo: {links}"
        );
        assert_eq!(read(&dir, "ls").trim(), "", "{args}: pins created");
    }
}
