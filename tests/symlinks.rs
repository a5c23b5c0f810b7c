//! Symlinks planted in the directories netslot works in (the run directory of ownership
//! records, the netns directory of pins, the daemon's pool directory, the bpffs directory
//! of counters pins) are refused, never followed: each target stays untouched, checked
//! from the filesystem and the kernel's mount table. Each test runs in a private network
//! and mount namespace with its own tmpfs on /run and its own bpffs.

use netslot_kernel_tests::*;
use serde_json::Value;

fn rc(dir: &std::path::Path, step: &str) -> String {
    read(dir, &format!("{step}.rc")).trim().to_owned()
}

#[test]
fn a_symlinked_record_or_lock_file_is_refused_and_its_target_kept() {
    if !require_root("a_symlinked_record_or_lock_file_is_refused_and_its_target_kept") {
        return;
    }
    let (log, dir) = in_private_world(
        r#"
        $NS up --slots 2 --prefix syr --group 7831 --cidr 100.67.0.0/24 > /dev/null
        rec=$(ls /run/netslot/*-group7831.json); lock=${rec%.json}.lock
        echo precious > /run/victim-rec; echo precious > /run/victim-lock
        mv "$rec" /run/saved.json; ln -s /run/victim-rec "$rec"
        rc=0; $NS down --prefix syr --group 7831 2> $D/down1.err || rc=$?; echo $rc > $D/down1.rc
        rm "$rec"; mv /run/saved.json "$rec"
        mv "$lock" /run/saved.lock; ln -s /run/victim-lock "$lock"
        rc=0; $NS gc --prefix syr --group 7831 2> $D/gc.err || rc=$?; echo $rc > $D/gc.rc
        rc=0; $NS down --prefix syr --group 7831 2> $D/down2.err || rc=$?; echo $rc > $D/down2.rc
        cat /run/victim-rec > $D/victim-rec; cat /run/victim-lock > $D/victim-lock
        ip -o link show > $D/links-mid
        rm "$lock"; mv /run/saved.lock "$lock"
        $NS down --prefix syr --group 7831 > /dev/null
        ip -o link show > $D/links-end
        "#,
    );
    for step in ["down1", "gc", "down2"] {
        assert_ne!(
            rc(&dir, step),
            "0",
            "{step} followed a planted symlink: {log}"
        );
    }
    assert!(
        read(&dir, "down1.err").contains("symlinks are refused"),
        "{log}"
    );
    assert_eq!(read(&dir, "victim-rec"), "precious\n");
    assert_eq!(read(&dir, "victim-lock"), "precious\n");
    let mid = read(&dir, "links-mid");
    assert!(mid.contains(": syr0@") && mid.contains(": syr1@"), "{mid}");
    assert!(!read(&dir, "links-end").contains(": syr"), "pool left");
}

#[test]
fn a_pin_symlinked_to_a_mount_point_is_never_unmounted() {
    if !require_root("a_pin_symlinked_to_a_mount_point_is_never_unmounted") {
        return;
    }
    let (log, dir) = in_private_world(
        r#"
        $NS up --slots 2 --prefix syp --group 7832 --cidr 100.67.1.0/24 > /dev/null
        mkdir -p /run/target && mount -t tmpfs syp-target /run/target && echo precious > /run/target/file
        # Keep slot 1's namespace alive elsewhere, then plant a symlink in place of its pin.
        mkdir -p /run/keep && touch /run/keep/k1 && mount --bind /run/netns/syp1 /run/keep/k1
        umount /run/netns/syp1 && rm /run/netns/syp1 && ln -s /run/target /run/netns/syp1
        $NS gc --prefix syp --group 7832 --json > $D/gc.json
        $NS down --prefix syp --group 7832 --json > $D/down.json
        grep -c ' /run/target ' /proc/self/mountinfo > $D/target-mounts || true
        cat /run/target/file > $D/target-file
        readlink /run/netns/syp1 > $D/link
        rm /run/netns/syp1; umount /run/target; umount /run/keep/k1
        "#,
    );
    assert_eq!(
        read(&dir, "target-mounts").trim(),
        "1",
        "target unmounted: {log}"
    );
    assert_eq!(read(&dir, "target-file"), "precious\n");
    assert_eq!(
        read(&dir, "link").trim(),
        "/run/target",
        "the symlink itself was removed"
    );
    let gc = json(&dir, "gc.json");
    assert!(
        gc["not_the_pools"]
            .as_array()
            .unwrap()
            .contains(&Value::from("/run/netns/syp1")),
        "{gc}"
    );
}

#[test]
fn the_daemons_pool_directory_symlinks_are_never_followed() {
    if !require_root("the_daemons_pool_directory_symlinks_are_never_followed") {
        return;
    }
    let (log, dir) = in_private_world(
        r#"
        mkdir -p /run/target /run/netslot/slots && mount -t tmpfs nsl-target /run/target
        ln -s /run/target /run/netslot/slots/nsl0
        $NS serve --socket /run/netslot/t.sock --pool-low 2 --pool-high 2 2> $D/serve.err & S=$!
        i=0; until [ -S /run/netslot/t.sock ]; do i=$((i+1)); [ $i -lt 300 ]; sleep 0.1; done
        sleep 1
        kill -TERM $S; wait $S || true
        grep -c ' /run/target ' /proc/self/mountinfo > $D/target-mounts || true
        readlink /run/netslot/slots/nsl0 > $D/link
        rm /run/netslot/slots/nsl0; umount /run/target
        "#,
    );
    assert_eq!(
        read(&dir, "target-mounts").trim(),
        "1",
        "target unmounted: {log}"
    );
    assert_eq!(read(&dir, "link").trim(), "/run/target");
}

#[test]
fn a_symlinked_counters_pin_directory_is_never_followed() {
    if !require_root("a_symlinked_counters_pin_directory_is_never_followed") {
        return;
    }
    let (log, dir) = in_private_world(
        r#"
        $NS up --slots 1 --prefix syb --group 7833 --cidr 100.67.2.0/24 > /dev/null
        $NS up --slots 1 --prefix syo --group 7834 --cidr 100.67.3.0/24 > /dev/null
        B=/sys/fs/bpf/netslot
        # bpffs does not rename a directory of pins: remove syb's own pins (its program
        # stays attached to its device) and plant the symlink in their place.
        rm $B/7833/prog $B/7833/counters && rmdir $B/7833
        ln -s $B/7834 $B/7833
        readlink $B/7833 > $D/planted
        rc=0; $NS down --prefix syb --group 7833 > $D/down.out 2>&1 || rc=$?; echo $rc > $D/down.rc
        ls $B/7834 > $D/other-pins
        rc=0; $NS stats --prefix syo --group 7834 > /dev/null || rc=$?; echo $rc > $D/stats.rc
        rm $B/7833
        $NS down --prefix syo --group 7834 > /dev/null
        "#,
    );
    assert_eq!(
        read(&dir, "planted").trim(),
        "/sys/fs/bpf/netslot/7834",
        "{log}"
    );
    let pins = read(&dir, "other-pins");
    assert!(
        pins.contains("prog") && pins.contains("counters"),
        "{pins} {log}"
    );
    assert_eq!(
        rc(&dir, "stats"),
        "0",
        "the other pool's counters broke: {log}"
    );
}
