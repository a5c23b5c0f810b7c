//! MicroVM slots against the real kernel, with the test acting as the guest: it opens a
//! slot's tap as the VMM's uid, writes Ethernet frames carrying TCP SYNs and reads the
//! host's answers, and the host connects to the guest; a second slot's tap sees none of
//! it. Every check reads the kernel (iproute2 JSON, the tap itself), not the engine's view.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use netslot::microvm::{SlotKind, TapConfig};
use netslot::{Engine, EngineConfig, Slot};
use netslot_kernel_tests::guest::{self, Guest, Segment, Tap, ACK, RST, SYN};
use netslot_kernel_tests::*;

const GROUP: u32 = 7660;
/// The VMM's uid and gid: unprivileged, with no passwd entry needed.
const VMM_UID: u32 = 4242;
const VMM_GID: u32 = 4243;

fn microvm_engine(prefix: &str) -> Engine {
    Engine::new(EngineConfig {
        prefix: prefix.into(),
        group: GROUP,
        kind: SlotKind::Microvm(TapConfig {
            owner: Some(VMM_UID),
            ..TapConfig::default()
        }),
        ..Default::default()
    })
    .expect("engine")
}

fn guest_of(slot: &Slot) -> Guest {
    let tap = slot.spec().tap.as_ref().expect("a microVM slot has a tap");
    Guest {
        mac: tap.guest_mac,
        ip: slot.spec().slot_ip,
    }
}

fn open_tap(slot: &Slot, uid: u32) -> std::io::Result<Tap> {
    let name = &slot.spec().tap.as_ref().unwrap().name;
    Tap::open(slot.netns_fd().unwrap(), name, uid, VMM_GID)
}

/// `ip -j -d link show` inside the slot's namespace.
fn slot_links(slot: &Slot) -> Vec<serde_json::Value> {
    in_netns(slot.netns_fd().unwrap(), || {
        ip_json(&["-d", "link", "show"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    })
}

#[test]
fn each_slot_holds_a_persistent_tap_owned_by_the_vmm_and_the_guest_holds_the_address() {
    if !require_root(
        "each_slot_holds_a_persistent_tap_owned_by_the_vmm_and_the_guest_holds_the_address",
    ) {
        return;
    }
    in_private_netns(|| {
        let mut e = microvm_engine("mv");
        let slots = provision(&mut e, 3);
        let mut guest_macs = Vec::new();
        for slot in &slots {
            let spec = slot.spec();
            let tap = spec.tap.as_ref().unwrap();
            let links = slot_links(slot);
            let names: Vec<&str> = links.iter().filter_map(|l| l["ifname"].as_str()).collect();
            assert_eq!(names.len(), 3, "lo, eth0 and the tap only: {names:?}");
            let t = links
                .iter()
                .find(|l| l["ifname"] == "tap0")
                .unwrap_or_else(|| panic!("no tap0 in {names:?}"));
            let info = &t["linkinfo"];
            assert_eq!(info["info_kind"], "tun", "{t}");
            let data = &info["info_data"];
            assert_eq!(data["type"], "tap", "{t}");
            assert_eq!(data["persist"], true, "{t}");
            assert_eq!(data["pi"], false, "{t}");
            assert_eq!(data["vnet_hdr"], true, "{t}");
            assert_eq!(
                data["user"].to_string().trim_matches('"'),
                VMM_UID.to_string(),
                "{t}"
            );
            assert_eq!(t["ifindex"].as_u64(), Some(u64::from(tap.ifindex)), "{t}");
            assert!(has_flag(t, "UP"), "{t}");
            assert_eq!(t["mtu"].as_u64(), Some(u64::from(spec.mtu)), "{t}");
            assert!(
                t["xdp"]["prog"]["id"].as_u64().is_some(),
                "tap has the redirect: {t}"
            );
            let eth0 = links.iter().find(|l| l["ifname"] == "eth0").unwrap();
            assert_eq!(
                eth0["ifindex"].as_u64(),
                Some(u64::from(tap.slot_end_ifindex()))
            );
            assert_eq!(
                eth0["xdp"]["prog"]["id"], t["xdp"]["prog"]["id"],
                "one redirect program on both: {eth0}"
            );
            assert!(has_flag(eth0, "UP"), "{eth0}");
            // lo came up in the same group change and carries the program too, in
            // generic mode (it has no native XDP).
            let lo = links.iter().find(|l| l["ifname"] == "lo").unwrap();
            assert!(has_flag(lo, "UP"), "{lo}");
            assert_eq!(lo["xdp"]["mode"], 2, "generic (XDP_ATTACHED_SKB): {lo}");
            assert_eq!(lo["xdp"]["prog"]["id"], t["xdp"]["prog"]["id"], "{lo}");
            assert_eq!(t["xdp"]["mode"], 1, "native (XDP_ATTACHED_DRV): {t}");
            assert_eq!(eth0["xdp"]["mode"], 1, "native: {eth0}");
            // No link-local address on any device: IPv6 address generation is off.
            let v6 = in_netns(slot.netns_fd().unwrap(), || {
                ip_json(&["-6", "addr", "show"])
            });
            let scopes: Vec<String> = v6
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|d| d["addr_info"].as_array().cloned().unwrap_or_default())
                .map(|a| format!("{} {}", a["local"], a["scope"]))
                .collect();
            assert_eq!(scopes, ["\"::1\" \"host\""], "{v6}");
            // The slot end holds no address and the namespace no route but lo's: the
            // guest has the slot's address.
            let addrs = in_netns(slot.netns_fd().unwrap(), || {
                ip_json(&["-4", "addr", "show", "dev", "eth0"])
            });
            let none: Vec<serde_json::Value> = vec![];
            let list = addrs[0]["addr_info"].as_array().unwrap_or(&none);
            assert!(list.is_empty(), "eth0 has no address: {addrs}");
            let routes = in_netns(slot.netns_fd().unwrap(), || {
                ip_json(&["-4", "route", "show"])
            });
            assert_eq!(routes.as_array().map(Vec::len), Some(0), "{routes}");
            // The host end holds the gateway.
            assert_eq!(ipv4_addrs(&spec.name), vec![format!("{}/31", spec.host_ip)]);
            guest_macs.push(tap.guest_mac);
        }
        guest_macs.sort();
        guest_macs.dedup();
        assert_eq!(guest_macs.len(), 3, "every guest its own MAC");

        // The VMM's uid opens the tap; another unprivileged uid is refused (tun_not_capable).
        drop(open_tap(&slots[0], VMM_UID).expect("the owner opens its tap"));
        let refused = open_tap(&slots[0], VMM_UID + 1).expect_err("a stranger is refused");
        assert_eq!(refused.raw_os_error(), Some(libc::EPERM), "{refused}");
        e.teardown(slots).expect("teardown");
    });
}

#[test]
fn the_guest_reaches_the_host_and_the_host_reaches_the_guest_through_the_tap_only() {
    if !require_root(
        "the_guest_reaches_the_host_and_the_host_reaches_the_guest_through_the_tap_only",
    ) {
        return;
    }
    in_private_netns(|| {
        let mut e = microvm_engine("mg");
        let slots = provision(&mut e, 2);
        let (a, b) = (&slots[0], &slots[1]);
        let tap_a = open_tap(a, VMM_UID).expect("open slot 0's tap");
        let tap_b = open_tap(b, VMM_UID).expect("open slot 1's tap");
        let guest = guest_of(a);
        let host_ip = a.spec().host_ip;
        let host_mac = a.spec().host_mac;

        // Guest -> host: a SYN to a listener on the host end's address; the host's
        // SYN-ACK comes back through the tap (after the host's ARP for the guest, which
        // the guest answers).
        let listener = TcpListener::bind((host_ip, 7000)).expect("listen on the host end");
        let syn = Segment {
            src: guest.ip,
            dst: host_ip,
            sport: 40000,
            dport: 7000,
            seq: 1000,
            ack: 0,
            flags: SYN,
        };
        let frame = guest::tcp_frame(guest, host_mac, syn);
        let mut last = std::time::Instant::now() - Duration::from_secs(1);
        let got = guest::serve_until(
            &tap_a,
            guest,
            Duration::from_secs(20),
            || {
                // Retransmit each second, as a guest's TCP would: a fresh veth passes
                // traffic once linkwatch has activated its qdisc.
                if last.elapsed() >= Duration::from_secs(1) {
                    tap_a.write_frame(&frame).expect("write the SYN");
                    last = std::time::Instant::now();
                }
            },
            |s| s.src == host_ip && s.dst == guest.ip && s.dport == 40000,
        )
        .expect("read the tap");
        let (mac, seg) = got.expect("the host answered the guest's SYN through the tap");
        assert_eq!(mac, host_mac, "from the host end");
        assert_eq!(seg.flags & (SYN | ACK), SYN | ACK, "a SYN-ACK: {seg:?}");
        assert_eq!(seg.ack, 1001, "acknowledging the guest's SYN: {seg:?}");
        drop(listener);

        // Host -> guest: a connect to the guest's address; the guest answers the SYN
        // with a RST, which the host sees as a refusal.
        let dst = SocketAddr::from((guest.ip, 8000));
        let connect =
            std::thread::spawn(move || TcpStream::connect_timeout(&dst, Duration::from_secs(15)));
        let got = guest::serve_until(
            &tap_a,
            guest,
            Duration::from_secs(20),
            || {},
            |s| s.dst == guest.ip && s.dport == 8000 && s.flags & SYN != 0,
        )
        .expect("read the tap");
        let (mac, seg) = got.expect("the host's SYN reached the guest");
        assert_eq!(mac, host_mac);
        let rst = Segment {
            src: guest.ip,
            dst: seg.src,
            sport: 8000,
            dport: seg.sport,
            seq: 0,
            ack: seg.seq.wrapping_add(1),
            flags: RST | ACK,
        };
        tap_a
            .write_frame(&guest::tcp_frame(guest, mac, rst))
            .expect("write the RST");
        let answer = connect.join().unwrap();
        let refused = answer.expect_err("the guest refused the connection");
        assert_eq!(
            refused.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{refused}"
        );

        // The other slot's guest saw none of it.
        let stray = tap_b
            .drain(Duration::from_millis(500))
            .expect("read slot 1's tap");
        assert!(
            stray.is_empty(),
            "slot 1's tap got {} frame(s): {:?}",
            stray.len(),
            stray.iter().map(|f| guest::parse(f)).collect::<Vec<_>>()
        );
        drop((tap_a, tap_b));
        e.teardown(slots).expect("teardown");
    });
}

#[test]
fn taps_die_with_their_namespaces_and_are_never_handed_to_the_initial_namespace() {
    if !require_root("taps_die_with_their_namespaces_and_are_never_handed_to_the_initial_namespace")
    {
        return;
    }
    // A tap name no other test uses, so that a tap refunded to the initial namespace
    // (default_device_exit_net moves devices without rtnl_link_ops there) would be seen.
    let name = format!("mvt{}", rand_suffix() % 1_000_000);
    // The namespace the test process started in (the machine's), where
    // default_device_exit_net would move a device it refunds.
    let root = std::fs::File::open("/proc/self/ns/net").expect("the starting namespace");
    let root_has = move |name: &str| {
        let name = name.to_owned();
        in_netns(std::os::fd::AsFd::as_fd(&root), move || {
            links().iter().any(|l| l["ifname"] == name.as_str())
        })
    };
    in_private_netns(move || {
        let mut e = Engine::new(EngineConfig {
            prefix: "md".into(),
            group: GROUP + 1,
            kind: SlotKind::Microvm(TapConfig {
                name: name.clone(),
                owner: Some(VMM_UID),
                group: Some(VMM_GID),
                ..TapConfig::default()
            }),
            ..Default::default()
        })
        .expect("engine");
        let slots = provision(&mut e, 4);
        let t = slot_links(&slots[2])
            .into_iter()
            .find(|l| l["ifname"] == name.as_str())
            .expect("the tap");
        assert_eq!(
            t["linkinfo"]["info_data"]["group"]
                .to_string()
                .trim_matches('"'),
            VMM_GID.to_string(),
            "{t}"
        );
        e.teardown(slots).expect("teardown");
        // The namespaces' devices are gone once the host ends are (one cleanup_net
        // unregisters every device of a dying namespace).
        wait_for("the host ends to be destroyed", || {
            links_in_group(GROUP + 1).is_empty()
        });
        assert!(!root_has(&name), "a tap was moved to the initial namespace");
    });
}

#[test]
fn a_released_microvm_slot_is_recycled_unless_its_vmm_still_holds_or_changed_the_tap() {
    if !require_root(
        "a_released_microvm_slot_is_recycled_unless_its_vmm_still_holds_or_changed_the_tap",
    ) {
        return;
    }
    in_private_netns(|| {
        let mut e = microvm_engine("mr");
        let slots = provision(&mut e, 3);
        // Slot 0: a VMM came and went. Slot 1: its VMM still holds the tap. Slot 2: its
        // VMM handed the tap to another uid before it went.
        drop(open_tap(&slots[0], VMM_UID).expect("open slot 0's tap"));
        let held = open_tap(&slots[1], VMM_UID).expect("open slot 1's tap");
        let changed = open_tap(&slots[2], VMM_UID).expect("open slot 2's tap");
        changed
            .set_owner(VMM_UID + 7)
            .expect("TUNSETOWNER as the tenant");
        drop(changed);
        let names: Vec<String> = slots.iter().map(|s| s.spec().name.clone()).collect();
        let out = e.recycle(slots).expect("recycle");
        let clean: Vec<&str> = out.clean.iter().map(|s| s.spec().name.as_str()).collect();
        assert_eq!(
            clean,
            [names[0].as_str()],
            "only the untouched slot comes back"
        );
        let why = |name: &str| {
            out.destroyed
                .iter()
                .find(|d| d.spec.name == name)
                .map(|d| d.why.to_string())
                .unwrap_or_default()
        };
        assert!(
            why(&names[1]).contains("still held by a VMM"),
            "{}",
            why(&names[1])
        );
        assert!(
            why(&names[2]).contains("owner Some(4249)"),
            "{}",
            why(&names[2])
        );
        drop(held);
        // The recycled slot serves its next VMM: the tap opens for the owner again.
        drop(open_tap(&out.clean[0], VMM_UID).expect("the next VMM opens the tap"));
        wait_for("the destroyed slots' host ends to go", || {
            links_in_group(GROUP).len() == 1
        });
        e.teardown(out.clean).expect("teardown");
    });
}
