//! Kernel test: the engine's way, one RTM_NEWLINK group change (IFLA_GROUP + IFLA_XDP) via iproute2.

mod common;

use std::path::Path;

use common::{in_private, ip, make_mounts_private, privileged, unique_tag, xdp_prog_id};
use netslot_bpf::{unpin, Counters, BPFFS_ROOT, PROG_PIN};

/// Any group but 0 (0 is every default device, lo included).
const GROUP: &str = "4077";

#[test]
fn one_group_change_attaches_every_host_end() {
    if !privileged("one_group_change_attaches_every_host_end") {
        return;
    }
    // `ip` cannot take our fd, so it gets the program from a pin: private
    // mount namespace (bpffs mount, if needed, dies with the thread) and
    // private network namespace.
    in_private(libc::CLONE_NEWNET | libc::CLONE_NEWNS, || {
        make_mounts_private();
        let tag = unique_tag();
        let dir = Path::new(BPFFS_ROOT).join(format!("netslot-bpf-test-{tag}"));
        let counters = Counters::load().expect("load");
        counters.pin(&dir).expect("pin");

        let hosts: Vec<String> = (0..3).map(|i| format!("nbg{i}{tag}")).collect();
        for (i, h) in hosts.iter().enumerate() {
            let p = format!("nbq{i}{tag}");
            ip(&[
                "link", "add", h, "group", GROUP, "type", "veth", "peer", "name", &p,
            ]);
        }
        let prog = dir.join(PROG_PIN);
        // RTM_NEWLINK, ifi_index 0, IFLA_GROUP + IFLA_XDP: rtnl_group_changelink.
        ip(&[
            "link",
            "set",
            "group",
            GROUP,
            "xdp",
            "pinned",
            prog.to_str().unwrap(),
        ]);
        for h in &hosts {
            assert_eq!(
                xdp_prog_id(h),
                Some(counters.prog_id()),
                "{h} runs our program"
            );
        }
        ip(&["link", "set", "group", GROUP, "xdp", "off"]);
        for h in &hosts {
            assert_eq!(xdp_prog_id(h), None, "{h} detached");
        }
        ip(&["link", "del", "group", GROUP]);
        unpin(&dir).expect("unpin");
        assert!(!dir.exists());
    });
}
