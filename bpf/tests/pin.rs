//! Kernel test: pin under bpffs, reopen from the pins, unpin, leave nothing behind.

mod common;

use std::path::{Path, PathBuf};

use common::{in_private, make_mounts_private, privileged, run, unique_tag};
use netslot_bpf::{unpin, BpfError, Counters, Hook, PinnedCounters, BPFFS_ROOT, MAP_PIN, PROG_PIN};

const PREFIX: &str = "netslot-bpf-test-";

fn ours_under_bpffs() -> Vec<PathBuf> {
    std::fs::read_dir(BPFFS_ROOT)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(PREFIX))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pin_reopen_unpin_leaves_nothing() {
    if !privileged("pin_reopen_unpin_leaves_nothing") {
        return;
    }
    // Own mount namespace, private propagation: if this test has to mount
    // bpffs at /sys/fs/bpf, the mount dies with the thread. If the host
    // already has bpffs there, the copy shows the same instance and the pins
    // below are really on the host's bpffs (and removed by unpin).
    in_private(libc::CLONE_NEWNS, || {
        make_mounts_private();
        let group = format!("{PREFIX}{}", unique_tag());
        let dir = Path::new(BPFFS_ROOT).join(&group).join("g7");

        let counters = Counters::load().expect("load");
        counters.pin(&dir).expect("pin");
        assert_eq!(
            run("stat", &["-f", "-c", "%T", BPFFS_ROOT]).trim(),
            "bpf_fs",
            "kernel reports bpffs at {BPFFS_ROOT}"
        );

        // The kernel knows the pinned objects under our ids.
        let prog_path = dir.join(PROG_PIN);
        let map_path = dir.join(MAP_PIN);
        let shown = run(
            "bpftool",
            &["-j", "prog", "show", "pinned", prog_path.to_str().unwrap()],
        );
        let shown: serde_json::Value = serde_json::from_str(&shown).expect("bpftool json");
        assert_eq!(shown["id"].as_u64(), Some(u64::from(counters.prog_id())));
        assert_eq!(shown["type"].as_str(), Some("xdp"));
        let map: serde_json::Value = serde_json::from_str(&run(
            "bpftool",
            &["-j", "map", "show", "pinned", map_path.to_str().unwrap()],
        ))
        .expect("bpftool json");
        assert_eq!(map["type"].as_str(), Some("percpu_hash"));
        assert_eq!(
            map["max_entries"].as_u64(),
            Some(netslot_bpf::MAX_DEVICES as u64),
            "MAX_DEVICES matches the kernel map"
        );

        // Pinning again fails (EEXIST) and keeps the first pins intact.
        assert!(matches!(counters.pin(&dir), Err(BpfError::Libbpf { .. })));
        assert!(prog_path.exists() && map_path.exists());

        // Reopen as a later process would: only the paths.
        drop(counters);
        let pinned = PinnedCounters::open(&dir).expect("open pinned");
        assert_eq!(u64::from(pinned.prog_id()), shown["id"].as_u64().unwrap());
        assert_eq!(pinned.read_all().expect("read pinned"), vec![]);
        pinned.forget(1).expect("forget missing key");

        // Opening something that is not ours is refused.
        let wrong = PinnedCounters::open(&dir.join("nowhere"));
        assert!(matches!(wrong, Err(BpfError::Libbpf { .. })), "{wrong:?}");

        unpin(&dir).expect("unpin");
        unpin(&dir).expect("unpin is idempotent");
        assert!(!dir.exists());
        // unpin leaves parents; the test removes the one it named.
        std::fs::remove_dir(dir.parent().unwrap()).expect("rmdir test group dir");
        assert_eq!(
            ours_under_bpffs(),
            Vec::<PathBuf>::new(),
            "nothing left under bpffs"
        );
        // The program and map live on only while `pinned` holds their fds.
        drop(pinned);
    });
}

#[test]
fn pin_outside_bpffs_is_refused() {
    if !privileged("pin_outside_bpffs_is_refused") {
        return;
    }
    let counters = Counters::load().expect("load");
    let dir = std::env::temp_dir().join(format!("{PREFIX}{}", unique_tag()));
    match counters.pin(&dir) {
        Err(BpfError::NotBpffs { .. }) => {}
        other => panic!("pin under {}: {other:?}", dir.display()),
    }
    assert!(!dir.exists(), "nothing created outside bpffs");
}

#[test]
fn tc_program_pins_and_reopens_as_tc() {
    if !privileged("tc_program_pins_and_reopens_as_tc") {
        return;
    }
    in_private(libc::CLONE_NEWNS, || {
        make_mounts_private();
        let group = format!("{PREFIX}{}", unique_tag());
        let dir = Path::new(BPFFS_ROOT).join(&group).join("g7");

        let counters = netslot_bpf::Counters::load_hook(Hook::Tc).expect("load tc");
        assert_eq!(counters.hook(), Hook::Tc);
        // The per-device XDP calls refuse the tc program before asking the kernel.
        assert!(matches!(
            counters.attach_per_device(1),
            Err(BpfError::Mismatch { .. })
        ));
        counters.pin(&dir).expect("pin");
        let prog_path = dir.join(PROG_PIN);
        let shown: serde_json::Value = serde_json::from_str(&run(
            "bpftool",
            &["-j", "prog", "show", "pinned", prog_path.to_str().unwrap()],
        ))
        .expect("bpftool json");
        assert_eq!(shown["id"].as_u64(), Some(u64::from(counters.prog_id())));
        assert_eq!(shown["type"].as_str(), Some("sched_cls"));
        assert_eq!(shown["name"].as_str(), Some("tc_counters"));

        drop(counters);
        let pinned = PinnedCounters::open(&dir).expect("open pinned tc");
        assert_eq!(pinned.hook(), Hook::Tc);
        assert_eq!(pinned.read_all().expect("read pinned"), vec![]);
        drop(pinned);

        unpin(&dir).expect("unpin");
        std::fs::remove_dir(dir.parent().unwrap()).expect("rmdir test group dir");
        assert_eq!(ours_under_bpffs(), Vec::<PathBuf>::new());
    });
}
