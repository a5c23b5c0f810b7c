//! Fault injection against the real kernel: each test in its own private network
//! namespace, with its own prefix and group. Every failure must name the slot and the
//! operation, leave the other slots complete and leave nothing half-made of the failed
//! one; every check reads the kernel through iproute2.

use netslot::{ConfigError, Engine, EngineConfig, EngineError, FaultInjection, Op};
use netslot_kernel_tests::*;

fn config(prefix: &str, group: u32) -> EngineConfig {
    EngineConfig {
        prefix: prefix.into(),
        group,
        ..Default::default()
    }
}

/// Every host end of `group` is up with exactly its /31, per the kernel.
fn assert_complete(group: u32, slots: &[netslot::Slot]) {
    let in_group = links_in_group(group);
    assert_eq!(in_group.len(), slots.len(), "host ends in group {group}");
    for s in slots {
        let spec = s.spec();
        let l = in_group
            .iter()
            .find(|l| l["ifname"].as_str() == Some(&spec.name))
            .unwrap_or_else(|| panic!("{} missing", spec.name));
        assert!(has_flag(l, "UP"), "{} not up", spec.name);
        assert_eq!(ipv4_addrs(&spec.name), [format!("{}/31", spec.host_ip)]);
    }
}

#[test]
fn a_small_send_buffer_splits_host_sends_instead_of_failing() {
    if !require_root("a_small_send_buffer_splits_host_sends_instead_of_failing") {
        return;
    }
    in_private_netns(|| {
        // SO_SNDBUF 4096: the kernel makes it 8192, so one send carries at most 8160 bytes
        // (netlink_sendmsg refuses more with EMSGSIZE). A 256-slot chunk of host addresses
        // is about 10 KiB: it must go as two sends.
        let mut e = Engine::new(EngineConfig {
            faults: FaultInjection {
                host_sndbuf: Some(4096),
                ..Default::default()
            },
            ..config("fsnd", 7981)
        })
        .unwrap();
        let out = e.provision(600).unwrap();
        let errors: Vec<String> = out
            .slots
            .iter()
            .filter_map(|s| s.as_ref().err().map(ToString::to_string))
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        // One sendmsg per slot socket; the rest are host sends: three chunks would be
        // three or four with the default buffer, split they are at least five.
        let host_sends = out.report.sendmsgs - 600;
        eprintln!("host sends with an 8 KiB send buffer: {host_sends}");
        assert!(host_sends >= 5, "host sends: {host_sends}");
        let slots: Vec<_> = out.slots.into_iter().map(Result::unwrap).collect();
        assert_complete(7981, &slots);
        e.teardown(slots).unwrap();
        assert!(links_in_group(7981).is_empty());
    });
}

#[test]
fn acks_dropped_by_a_receive_overrun_are_settled_from_kernel_state() {
    if !require_root("acks_dropped_by_a_receive_overrun_are_settled_from_kernel_state") {
        return;
    }
    in_private_netns(|| {
        // A tiny receive buffer, a reply to every request and no bound on requests per
        // send: the kernel drops most ACKs (netlink_overrun) and the next read is ENOBUFS.
        // No op may be settled as done on the marker's word; each is settled from the
        // kernel's state instead.
        let mut e = Engine::new(EngineConfig {
            faults: FaultInjection {
                host_rcvbuf: Some(1024),
                unbounded_host_requests: true,
                ack_every_host_request: true,
                ..Default::default()
            },
            ..config("frcv", 7982)
        })
        .unwrap();
        let out = e.provision(300).unwrap();
        let errors: Vec<String> = out
            .slots
            .iter()
            .filter_map(|s| s.as_ref().err().map(ToString::to_string))
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        eprintln!(
            "requests settled from kernel state after ENOBUFS: {}",
            out.report.recovered_after_overrun
        );
        assert!(
            out.report.recovered_after_overrun > 0,
            "no overrun happened: the test proves nothing"
        );
        let slots: Vec<_> = out.slots.into_iter().map(Result::unwrap).collect();
        assert_complete(7982, &slots);
        e.teardown(slots).unwrap();
        assert!(links_in_group(7982).is_empty());
    });
}

#[test]
fn a_kernel_refusal_mid_batch_fails_only_its_slot() {
    if !require_root("a_kernel_refusal_mid_batch_fails_only_its_slot") {
        return;
    }
    in_private_netns(|| {
        let mut e = Engine::new(config("fref", 7983)).unwrap();
        let first: Vec<_> = e
            .provision(2)
            .unwrap()
            .slots
            .into_iter()
            .map(Result::unwrap)
            .collect();
        // Another device takes the ifindex the engine will give slot 7 (base + 7); its
        // peer gets one far away (left to itself it would take the next, slot 8's).
        let base = first[0].spec().ifindex - first[0].spec().id;
        let taken = (base + 7).to_string();
        let far = (base + 50_000).to_string();
        let out = run(
            "ip",
            &[
                "link", "add", "name", "alien", "index", &taken, "type", "veth", "peer", "name",
                "alien-p", "index", &far,
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = e.provision(10).unwrap();
        assert_eq!(out.report.failed, 1);
        let mut ok = first;
        for r in out.slots {
            match r {
                Ok(s) => ok.push(s),
                Err(err) => {
                    eprintln!("refused: {err}");
                    assert_eq!((err.id, err.name.as_str(), err.op), (7, "fref7", Op::Veth));
                    assert_ne!(err.errno, 0);
                    let text = err.to_string();
                    assert!(text.contains("fref7") && text.contains("veth"), "{text}");
                }
            }
        }
        assert_eq!(ok.len(), 11);
        assert_complete(7983, &ok);
        // Nothing of slot 7: no host end by its name, no address of its /31, and the
        // other device still holds its ifindex.
        assert!(!links().iter().any(|l| l["ifname"] == "fref7"));
        let (host_ip, _) = EngineConfig::default().ipv4_pool.pair(7).unwrap();
        let all = ip_json(&["-4", "addr", "show"]).to_string();
        assert!(
            !all.contains(&format!("\"{host_ip}\"")),
            "slot 7's address remains"
        );
        let alien = links()
            .into_iter()
            .find(|l| l["ifname"] == "alien")
            .unwrap();
        assert_eq!(alien["ifindex"].as_u64(), Some(u64::from(base + 7)));
        e.teardown(ok).unwrap();
        assert!(links_in_group(7983).is_empty());
    });
}

#[test]
fn pool_address_exhaustion_is_refused_and_leaves_the_pool_as_it_was() {
    if !require_root("pool_address_exhaustion_is_refused_and_leaves_the_pool_as_it_was") {
        return;
    }
    in_private_netns(|| {
        // A /29 holds four /31 pairs.
        let mut e = Engine::new(EngineConfig {
            ipv4_pool: "10.77.0.0/29".parse().unwrap(),
            ..config("fexh", 7984)
        })
        .unwrap();
        let three: Vec<_> = e
            .provision(3)
            .unwrap()
            .slots
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let before = links().len();
        let err = e.provision(2).unwrap_err();
        eprintln!("refused: {err}");
        assert!(
            matches!(
                err,
                EngineError::Config(ConfigError::PoolTooSmall {
                    capacity: 4,
                    wanted: 5,
                    ..
                })
            ),
            "{err}"
        );
        assert!(err.to_string().contains("10.77.0.0/29"), "{err}");
        assert_eq!(links().len(), before, "a refused call created devices");
        assert_complete(7984, &three);
        // The last pair is still usable.
        let one = e.provision(1).unwrap();
        assert_eq!(one.report.provisioned, 1);
        let mut all = three;
        all.extend(one.slots.into_iter().map(Result::unwrap));
        assert_complete(7984, &all);
        e.teardown(all).unwrap();
    });
}

#[test]
fn invalid_names_and_cidrs_are_refused_before_any_kernel_call() {
    if !require_root("invalid_names_and_cidrs_are_refused_before_any_kernel_call") {
        return;
    }
    in_private_netns(|| {
        let before = links().len();
        for (prefix, why) in [
            ("a/b", "not usable"),
            ("a b", "not usable"),
            ("", "not usable"),
            ("fifteen-bytes-x", "15"),
        ] {
            let err = Engine::new(config(prefix, 7985)).unwrap_err();
            eprintln!("prefix {prefix:?}: {err}");
            assert!(err.to_string().contains(why), "{prefix:?}: {err}");
        }
        for (cidr, why) in [
            ("10.0.0.1/24", "host bits"),
            ("10.0.0.0/32", "at least a /31"),
            ("10.0.0.0", "not an IPv4 prefix"),
            ("10.0.0.0/33", "at least a /31"),
            ("fd00::/64", "not an IPv4 prefix"),
        ] {
            let err = cidr.parse::<netslot::Ipv4Cidr>().unwrap_err();
            eprintln!("cidr {cidr:?}: {err}");
            assert!(err.to_string().contains(why), "{cidr:?}: {err}");
        }
        assert_eq!(links().len(), before, "a refused input created devices");
    });
}

/// Marks the re-executed test process that runs under a low open-file limit.
const UNDER_PRLIMIT: &str = "NETSLOT_FAULTS_UNDER_PRLIMIT";

/// Namespace creation fails part-way (the process runs out of file descriptors: each
/// pooled namespace is held by its socket). The slots whose namespace could not be made
/// fail with op `namespace`, errno EMFILE and the reason; every other slot is complete;
/// nothing of a failed slot exists. The engine refuses a call that cannot fit the limit
/// before any kernel call (see `open_file_limit_refuses_a_call_that_cannot_fit`), so the
/// check is switched off by fault injection here, as if other threads of the process had
/// opened the files meanwhile. The test re-runs itself under `prlimit --nofile=120:4096`
/// (soft 120), so the limit binds only that process; once the call is made it raises its
/// soft limit again, so that iproute2 can be run to check the kernel.
#[test]
fn namespace_creation_failure_fails_only_those_slots() {
    let name = "namespace_creation_failure_fails_only_those_slots";
    if std::env::var(UNDER_PRLIMIT).as_deref() != Ok(name) {
        if !require_root(name) {
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("prlimit")
            .arg("--nofile=120:4096")
            .arg(&exe)
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(UNDER_PRLIMIT, name)
            .output()
            .expect("run prlimit");
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && log.contains("1 passed"), "{log}");
        return;
    }
    in_private_netns(|| {
        let mut e = Engine::new(EngineConfig {
            faults: FaultInjection {
                ignore_fd_limit: true,
                ..Default::default()
            },
            ..config("fns", 7990)
        })
        .unwrap();
        let out = e.provision(200).unwrap();
        let mut ok = Vec::new();
        let mut failed_names = Vec::new();
        for r in out.slots {
            match r {
                Ok(s) => ok.push(s),
                Err(err) => {
                    assert_eq!(err.op, Op::Namespace, "{err}");
                    assert_eq!(err.errno, libc::EMFILE, "{err}");
                    assert!(
                        err.detail
                            .as_deref()
                            .is_some_and(|d| d.contains("creating the namespace")),
                        "{err}"
                    );
                    failed_names.push(err.name);
                }
            }
        }
        raise_soft_fd_limit(4096);
        assert!(!failed_names.is_empty(), "the fd limit never bit");
        assert!(!ok.is_empty(), "no slot survived");
        assert_eq!(ok.len() + failed_names.len(), 200);
        // Exactly the provisioned slots have a host end, each up with its address; none
        // of a failed slot exists.
        assert_complete(7990, &ok);
        for l in links_in_group(7990) {
            let n = l["ifname"].as_str().unwrap();
            assert!(
                !failed_names.iter().any(|f| f == n),
                "{n} failed yet exists"
            );
        }
        e.teardown(ok).unwrap();
        assert!(
            links_in_group(7990).is_empty(),
            "host ends left after teardown"
        );
    });
}

/// Raises this process's soft RLIMIT_NOFILE to `to` (at most the hard limit).
fn raise_soft_fd_limit(to: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct we own, alive for the calls.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        r.rlim_cur = to.min(r.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
    }
}

/// A call whose slots would not fit the process's open-file limit is refused before any
/// kernel call, naming the limit; nothing is created. Through the CLI under `prlimit`.
#[test]
fn open_file_limit_refuses_a_call_that_cannot_fit() {
    if !require_root("open_file_limit_refuses_a_call_that_cannot_fit") {
        return;
    }
    let (log, dir) = in_private_world(
        r#"
        rc=0; prlimit --nofile=200 $NS up --hold --slots 300 --prefix flm --group 7993 > $D/up.out 2> $D/up.err || rc=$?
        echo $rc > $D/up.rc
        ip -j link show > $D/after.json
        ls -A /run/netslot > $D/records 2>/dev/null || true
        "#,
    );
    assert_ne!(read(&dir, "up.rc").trim(), "0", "{log}");
    let err = read(&dir, "up.err");
    assert!(err.contains("RLIMIT_NOFILE 200"), "{err}");
    let made: Vec<_> = json(&dir, "after.json")
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| in_pool(l, 7993))
        .cloned()
        .collect();
    assert!(made.is_empty(), "a refused call created {made:?}");
    assert_eq!(
        read(&dir, "records").trim(),
        "",
        "a refused call left a record"
    );
}

/// Where `disable_ipv6` cannot be written (here /proc/sys is read-only, as in many
/// containers), each sub-batch falls back to the netlink `IPv6 off` group change: every
/// slot is still complete and without IPv6 addresses, the host ends keep IPv6 enabled
/// (so they have its multicast route), and the report says no host end went through the
/// sysctl. Run through the CLI in a private mount namespace, so the read-only /proc/sys
/// binds only it.
#[test]
fn a_read_only_proc_sys_falls_back_to_the_netlink_ipv6_change() {
    if !require_root("a_read_only_proc_sys_falls_back_to_the_netlink_ipv6_change") {
        return;
    }
    let (log, dir) = in_private_world(
        r#"
        mount --bind /proc/sys /proc/sys
        mount -o remount,bind,ro /proc/sys
        if echo 1 > /proc/sys/net/ipv6/conf/lo/disable_ipv6; then echo "/proc/sys still writable" >&2; exit 1; fi
        $NS up --hold --slots 40 --prefix fro --group 7992 --json > $D/up.json 2> $D/up.err & P=$!
        i=0; until grep -q '"report"' $D/up.json 2>/dev/null; do i=$((i+1)); [ $i -lt 600 ]; sleep 0.1; done
        # addrconf adds the multicast route from linkwatch's work, which can lag the
        # group change: wait for all 40 (or give up after 30 s and let the test say so).
        i=0; until [ "$(ip -6 route show table local | grep -c '^multicast ff00::/8 dev fro')" -ge 40 ] || [ $i -ge 300 ]; do i=$((i+1)); sleep 0.1; done
        ip -j -d link show > $D/held.json
        ip -j -6 addr show > $D/addr6.json
        ip -j -6 route show table local > $D/route6.json
        cat /proc/sys/net/ipv6/conf/fro*/disable_ipv6 > $D/disabled.txt
        kill -TERM $P; wait $P || true
        ip -j link show > $D/after.json
        "#,
    );
    let report = &json(&dir, "up.json")["report"];
    assert_eq!(report["provisioned"].as_u64(), Some(40), "{log}");
    assert_eq!(report["ipv6_sysctl"].as_u64(), Some(0), "{report}");
    let held: Vec<serde_json::Value> = json(&dir, "held.json")
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| in_pool(l, 7992))
        .cloned()
        .collect();
    assert_eq!(held.len(), 40, "{log}");
    let addr6 = json(&dir, "addr6.json");
    let routes = json(&dir, "route6.json");
    for l in &held {
        let name = l["ifname"].as_str().unwrap();
        assert!(has_flag(l, "UP"), "{l}");
        let addrs = addr6
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["ifname"].as_str() == Some(name))
            .flat_map(|a| a["addr_info"].as_array().cloned().unwrap_or_default())
            .count();
        assert_eq!(addrs, 0, "{name} has IPv6 addresses");
        let mroute = routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dev"].as_str() == Some(name) && r["dst"].as_str() == Some("ff00::/8"));
        assert!(mroute, "{name}: IPv6 was not left on (no multicast route)");
    }
    let disabled = read(&dir, "disabled.txt");
    assert_eq!(
        disabled.lines().filter(|l| *l == "0").count(),
        40,
        "{disabled}"
    );
    let after = json(&dir, "after.json");
    assert!(
        !after.as_array().unwrap().iter().any(|l| in_pool(l, 7992)),
        "host ends left after teardown"
    );
}
