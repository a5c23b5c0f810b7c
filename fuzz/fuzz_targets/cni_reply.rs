//! cni_reply: arbitrary bytes as the daemon's answer to each CNI operation, through the
//! plugin's own reply handling (`netslot::cni::reply::handle`; docs/reliability.md,
//! "Fuzzing").
//!
//! Input: the first byte picks the operation (ADD, DEL, CHECK, GC, STATUS) and, for a
//! configuration that is a JSON object, its `cniVersion` (one of those the plugin speaks,
//! `netslot::cni::result::SUPPORTED`). If the rest holds a NUL byte, what comes before it
//! is the network configuration (when it is JSON; a plain one otherwise) and what follows
//! is the answer; else all of it is the answer.
//!
//! Properties: nothing panics; an error has a code the plugin documents, a message, and
//! prints as a JSON object carrying both; a success is the operation's kind of outcome
//! (an ADD result whose last IP names the container interface in CNI_NETNS, CHECK's
//! attachment, or nothing); an answer with `ok: false` is never a success; an ADD result
//! is in the configuration's version (its `cniVersion`; IPs with `version` "4" or "6"
//! below 1.0.0 and without it from 1.0.0; no interface `mtu` below 1.1.0).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netslot::cni::reply::{handle, Asked, Outcome};
use netslot::cni::result::{Version, SUPPORTED};
use netslot::daemon::protocol::Response;
use serde_json::{json, Value};

const NETNS: &str = "/run/netns/fuzz";
/// Codes the plugin may print: the spec's well-known ones it uses, and its own 100.
const CODES: &[u32] = &[1, 3, 4, 5, 6, 7, 11, 50, 100];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let plain = || json!({"cniVersion": "1.1.0", "name": "fuzz", "type": "netslot-cni"});
    let (mut conf, answer) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (
            serde_json::from_slice::<Value>(rest.get(..i).unwrap_or_default())
                .unwrap_or_else(|_| plain()),
            rest.get(i + 1..).unwrap_or_default(),
        ),
        None => (plain(), rest),
    };
    let picked = SUPPORTED[usize::from(mode / 5) % SUPPORTED.len()];
    if let Some(c) = conf.as_object_mut() {
        c.insert("cniVersion".into(), picked.into());
    }
    let version = conf["cniVersion"].as_str().and_then(Version::parse);
    let asked = match mode % 5 {
        0 => Asked::Add {
            conf: &conf,
            netns: NETNS,
        },
        1 => Asked::Del,
        2 => Asked::Check,
        3 => Asked::Gc,
        _ => Asked::Status,
    };
    let out = handle(asked, answer);
    match &out {
        Err(e) => {
            assert!(CODES.contains(&e.code), "code {}", e.code);
            assert!(!e.msg.is_empty(), "an error without a message");
            let printed: Value = serde_json::from_str(&e.to_json()).expect("errors print as JSON");
            assert_eq!(printed["code"], e.code);
            assert_eq!(printed["msg"], e.msg.as_str());
        }
        Ok(Outcome::Result(v)) => {
            assert!(matches!(asked, Asked::Add { .. }), "a result for {asked:?}");
            let interfaces = v["interfaces"].as_array().expect("interfaces");
            let ips = v["ips"].as_array().expect("ips");
            let ours = ips.last().expect("an IP")["interface"]
                .as_u64()
                .expect("an interface index");
            let ours = usize::try_from(ours).expect("an index");
            assert_eq!(
                ours + 1,
                interfaces.len(),
                "the IP is not on the last interface"
            );
            assert_eq!(interfaces[ours]["sandbox"], NETNS);
            if let Some(ver) = version {
                assert_eq!(v["cniVersion"], ver.as_str());
                for ip in ips.iter().filter(|i| i.is_object()) {
                    match ip.get("version") {
                        Some(x) => assert!(ver < Version::V1_0_0 && (x == "4" || x == "6"), "{x}"),
                        None => assert!(ver >= Version::V1_0_0, "an IP without version at {ver:?}"),
                    }
                }
                if ver < Version::V1_1_0 {
                    assert!(
                        interfaces.iter().all(|i| i.get("mtu").is_none()),
                        "an interface mtu at {ver:?}"
                    );
                }
            }
            serde_json::to_string(v).expect("results print as JSON");
        }
        Ok(Outcome::Attachment(_)) => {
            assert!(matches!(asked, Asked::Check), "an attachment for {asked:?}");
        }
        Ok(Outcome::Done) => {
            assert!(
                matches!(asked, Asked::Del | Asked::Gc | Asked::Status),
                "nothing for {asked:?}"
            );
        }
    }
    if let Ok(r) = serde_json::from_slice::<Response>(answer) {
        assert!(r.ok || out.is_err(), "a failed answer became a success");
    }
});
