//! cni_reply: what `netslot-cni` makes of one answer of the daemon: the CNI result or the
//! CNI error (SPEC.md "Error") it prints, with the spec's well-known error codes.
//!
//! No I/O: [`handle`] takes the answer's bytes exactly as they came off the socket and
//! never panics, whatever they hold (the `cni_reply` fuzz target of fuzz/ checks that).
//! An answer that is not a response of the protocol, or lacks what the operation needs
//! (`ok: false` without `error`, `ok: true` without the attachment for ADD or CHECK),
//! is error 6 ("failed to decode content") naming what was wrong, with the start of the
//! answer in `details`.

use serde_json::{json, Value};

use crate::cni::result::{convert, Version};
use crate::daemon::protocol::{Attachment, ErrorCode, Response};

pub use super::error::{CniError, Code, SPEC_VERSION};

/// How much of an undecodable answer goes into an error's `details`.
const ANSWER_IN_DETAILS: usize = 256;

/// The operation an answer is for, with what an ADD result is built from.
#[derive(Debug, Clone, Copy)]
pub enum Asked<'a> {
    /// ADD: the network configuration (for `cniVersion` and a chained `prevResult`) and
    /// CNI_NETNS (the container interface's `sandbox`).
    Add {
        /// The configuration read on stdin.
        conf: &'a Value,
        /// CNI_NETNS.
        netns: &'a str,
    },
    /// DEL.
    Del,
    /// CHECK.
    Check,
    /// GC.
    Gc,
    /// STATUS.
    Status,
}

impl Asked<'_> {
    fn name(&self) -> &'static str {
        match self {
            Asked::Add { .. } => "ADD",
            Asked::Del => "DEL",
            Asked::Check => "CHECK",
            Asked::Gc => "GC",
            Asked::Status => "STATUS",
        }
    }
}

/// What a successful answer gives the plugin.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Nothing to print (DEL, GC, STATUS).
    Done,
    /// ADD: the CNI result to print.
    Result(Value),
    /// CHECK: the attachment the daemon holds, to compare with what the kernel shows
    /// inside CNI_NETNS.
    Attachment(Box<Attachment>),
}

/// The CNI outcome of the daemon's answer `answer` (one line, with or without its
/// newline) to `asked`. Never panics.
pub fn handle(asked: Asked<'_>, answer: &[u8]) -> Result<Outcome, CniError> {
    let undecodable = |what: String| {
        let shown = answer.get(..ANSWER_IN_DETAILS).unwrap_or(answer);
        let more = if shown.len() < answer.len() {
            "..."
        } else {
            ""
        };
        CniError::new(
            Code::Decode,
            format!("the netslot daemon's answer to {}: {what}", asked.name()),
        )
        .details(format!(
            "answer: {:?}{more}",
            String::from_utf8_lossy(shown)
        ))
    };
    let r: Response = serde_json::from_slice(answer)
        .map_err(|e| undecodable(format!("not a response of the protocol: {e}")))?;
    if !r.ok {
        let Some(body) = r.error else {
            return Err(undecodable("a failure without an error".into()));
        };
        if let Asked::Status = asked {
            return Err(CniError::new(
                Code::NotAvailable,
                format!("the netslot daemon is not available: {}", body.message),
            ));
        }
        return Err(CniError::new(refused_code(body.code), body.message));
    }
    match asked {
        Asked::Add { conf, netns } => match r.attachment {
            Some(a) => Ok(Outcome::Result(add_result(conf, netns, &a))),
            None => Err(undecodable("a success without the attachment".into())),
        },
        Asked::Check => match r.attachment {
            Some(a) => Ok(Outcome::Attachment(Box::new(a))),
            None => Err(undecodable("a success without the attachment".into())),
        },
        Asked::Del | Asked::Gc => Ok(Outcome::Done),
        Asked::Status => match r.status {
            Some(s) if s.ready => Ok(Outcome::Done),
            Some(_) => Err(CniError::new(
                Code::NotAvailable,
                "the netslot daemon is not ready",
            )),
            None => Err(undecodable("a success without the status".into())),
        },
    }
}

/// The CNI code of a daemon's refusal.
fn refused_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::NotFound | ErrorCode::Netns => Code::ContainerUnknown,
        ErrorCode::BadRequest | ErrorCode::Exists => Code::InvalidConfig,
        ErrorCode::UnsupportedVersion => Code::IncompatibleVersion,
        ErrorCode::ShuttingDown | ErrorCode::Busy => Code::TryAgainLater,
        ErrorCode::NotAllowed => Code::Io,
        ErrorCode::Kernel => Code::Kernel,
    }
}

/// The ADD result: a chained `prevResult`'s interfaces, IPs and routes, then ours, and the
/// configuration's `dns` (else `prevResult`'s; [`crate::cni::conf::dns`]),
/// written in the configuration's `cniVersion` ([`crate::cni::result::convert`]; a
/// version the plugin does not speak is echoed on the 1.1.0 format).
fn add_result(conf: &Value, netns: &str, a: &Attachment) -> Value {
    let prev = &conf["prevResult"];
    let list = |field: &str| prev[field].as_array().cloned().unwrap_or_default();
    let (mut interfaces, mut ips, mut routes) = (list("interfaces"), list("ips"), list("routes"));
    interfaces.push(json!({ "name": a.host_ifname, "mac": a.host_mac }));
    interfaces.push(json!({
        "name": a.key.ifname,
        "mac": a.mac,
        "mtu": a.mtu,
        "sandbox": netns,
    }));
    ips.push(json!({
        "address": a.address,
        "gateway": a.gateway,
        // The container end, just pushed: never below zero.
        "interface": interfaces.len().saturating_sub(1),
    }));
    // A dual-stack attachment's IPv6 address, on the same interface.
    if let Some(v6) = &a.ipv6 {
        ips.push(json!({
            "address": v6.address,
            "gateway": v6.gateway,
            "interface": interfaces.len().saturating_sub(1),
        }));
    }
    // A later interface of a container that has its default route already gets none.
    if a.default_route {
        // An IPv6-only attachment's gateway is IPv6.
        let dst = if a.gateway.contains(':') {
            "::/0"
        } else {
            "0.0.0.0/0"
        };
        routes.push(json!({ "dst": dst, "gw": a.gateway }));
        if let Some(v6) = &a.ipv6 {
            routes.push(json!({ "dst": "::/0", "gw": v6.gateway }));
        }
    }
    let result = json!({
        "cniVersion": conf["cniVersion"],
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
        "dns": crate::cni::conf::dns(conf),
    });
    match conf["cniVersion"].as_str().and_then(Version::parse) {
        Some(v) => convert(&result, v),
        None => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTACHMENT: &str = r#"{"container_id":"c","ifname":"eth0","netns":"/run/netns/c",
        "slot_id":0,"host_ifname":"nsl0","ifindex":5,"host_mac":"02:00:00:00:00:01",
        "mac":"02:00:00:00:00:02","address":"100.64.0.1/31","gateway":"100.64.0.0",
        "mtu":1500,"default_route":true}"#;

    fn ok_with_attachment() -> String {
        format!(r#"{{"v":1,"id":1,"ok":true,"attachment":{ATTACHMENT}}}"#).replace('\n', "")
    }

    fn conf() -> Value {
        json!({"cniVersion": "1.1.0", "name": "n", "type": "netslot-cni"})
    }

    fn add(conf: &Value, answer: &[u8]) -> Result<Outcome, CniError> {
        handle(
            Asked::Add {
                conf,
                netns: "/run/netns/c",
            },
            answer,
        )
    }

    #[test]
    fn an_attachment_becomes_the_add_result() {
        let Ok(Outcome::Result(v)) = add(&conf(), ok_with_attachment().as_bytes()) else {
            panic!("no result");
        };
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["interfaces"][0]["name"], "nsl0");
        assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/c");
        assert_eq!(v["ips"][0]["interface"], 1);
        assert_eq!(v["ips"][0]["address"], "100.64.0.1/31");
        assert_eq!(v["routes"][0]["gw"], "100.64.0.0");
        assert_eq!(v["dns"], json!({}));
    }

    #[test]
    fn the_add_result_is_written_in_the_configurations_version() {
        for v in crate::cni::result::SUPPORTED {
            let c = json!({"cniVersion": v, "name": "n", "type": "netslot-cni"});
            let Ok(Outcome::Result(r)) = add(&c, ok_with_attachment().as_bytes()) else {
                panic!("no result at {v}");
            };
            assert_eq!(r["cniVersion"], *v);
            let old = v.starts_with("0.");
            assert_eq!(r["ips"][0].get("version").is_some(), old, "{v}: {r}");
            if old {
                assert_eq!(r["ips"][0]["version"], "4");
            }
            assert_eq!(
                r["interfaces"][1].get("mtu").is_some(),
                *v == "1.1.0",
                "{v}: {r}"
            );
            assert_eq!(r["interfaces"][1]["sandbox"], "/run/netns/c");
            assert_eq!(r["interfaces"][1]["mac"], "02:00:00:00:00:02");
        }
    }

    #[test]
    fn a_chained_add_keeps_the_previous_result_first() {
        let mut c = conf();
        c["prevResult"] = json!({
            "interfaces": [{"name": "a"}], "ips": [{"address": "10.0.0.2/24", "interface": 0}],
            "routes": [], "dns": {"nameservers": ["10.0.0.1"]},
        });
        let Ok(Outcome::Result(v)) = add(&c, ok_with_attachment().as_bytes()) else {
            panic!("no result");
        };
        assert_eq!(v["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(v["ips"][1]["interface"], 2);
        assert_eq!(v["dns"]["nameservers"][0], "10.0.0.1");
    }

    #[test]
    fn a_check_answer_hands_back_the_attachment() {
        let Ok(Outcome::Attachment(a)) = handle(Asked::Check, ok_with_attachment().as_bytes())
        else {
            panic!("no attachment");
        };
        assert_eq!(a.address, "100.64.0.1/31");
    }

    #[test]
    fn refusals_map_to_the_spec_codes() {
        let cases = [
            ("not-found", Code::ContainerUnknown),
            ("netns", Code::ContainerUnknown),
            ("bad-request", Code::InvalidConfig),
            ("exists", Code::InvalidConfig),
            ("unsupported-version", Code::IncompatibleVersion),
            ("shutting-down", Code::TryAgainLater),
            ("not-allowed", Code::Io),
            ("kernel", Code::Kernel),
        ];
        for (daemon, cni) in cases {
            let answer = format!(
                r#"{{"v":1,"id":1,"ok":false,"error":{{"code":"{daemon}","message":"why"}}}}"#
            );
            for asked in [Asked::Del, Asked::Check, Asked::Gc] {
                let e = handle(asked, answer.as_bytes()).unwrap_err();
                assert_eq!(e.code, cni as u32, "{daemon}");
                assert_eq!(e.msg, "why");
            }
            let e = add(&conf(), answer.as_bytes()).unwrap_err();
            assert_eq!(e.code, cni as u32, "{daemon}");
            // STATUS has one failure: not available.
            let e = handle(Asked::Status, answer.as_bytes()).unwrap_err();
            assert_eq!(e.code, Code::NotAvailable as u32);
            assert!(e.msg.contains("why"), "{e:?}");
        }
    }

    #[test]
    fn answers_lacking_what_the_operation_needs_are_decode_errors() {
        let cases: [(Asked<'_>, &str); 6] = [
            (Asked::Del, r#"{"v":1,"id":1,"ok":false}"#),
            (Asked::Gc, r#"{"v":1,"id":1,"ok":false}"#),
            (Asked::Check, r#"{"v":1,"id":1,"ok":false}"#),
            (Asked::Check, r#"{"v":1,"id":1,"ok":true}"#),
            (Asked::Status, r#"{"v":1,"id":1,"ok":true}"#),
            (Asked::Status, r#"{"v":1,"id":1,"ok":false}"#),
        ];
        for (asked, answer) in cases {
            let e = handle(asked, answer.as_bytes()).unwrap_err();
            assert_eq!(e.code, Code::Decode as u32, "{asked:?} {answer}");
            assert!(e.msg.contains(asked.name()), "{e:?}");
            assert!(e.details.contains("answer:"), "{e:?}");
        }
        let c = conf();
        for answer in [
            r#"{"v":1,"id":1,"ok":false}"#,
            r#"{"v":1,"id":1,"ok":true}"#,
        ] {
            assert_eq!(
                add(&c, answer.as_bytes()).unwrap_err().code,
                Code::Decode as u32
            );
        }
    }

    #[test]
    fn bytes_that_are_not_a_response_are_decode_errors() {
        let long = "x".repeat(10_000);
        let answers: [&[u8]; 9] = [
            b"",
            b"\n",
            b"not json",
            b"\xff\xfe\xfd",
            b"[]",
            br#"{"ok":true}"#,
            br#"{"v":1,"id":1,"ok":"yes"}"#,
            br#"{"v":1,"id":1,"ok":true,"attachment":{"ifname":7}}"#,
            long.as_bytes(),
        ];
        for answer in answers {
            for asked in [Asked::Del, Asked::Check, Asked::Gc, Asked::Status] {
                let e = handle(asked, answer).unwrap_err();
                assert_eq!(e.code, Code::Decode as u32, "{answer:?}");
                assert!(!e.msg.is_empty());
                assert!(
                    e.details.len() < 2 * ANSWER_IN_DETAILS,
                    "{}",
                    e.details.len()
                );
            }
        }
    }

    #[test]
    fn successes_without_a_payload_are_done_where_none_is_needed() {
        let ok = br#"{"v":1,"id":1,"ok":true}"#;
        assert!(matches!(handle(Asked::Del, ok), Ok(Outcome::Done)));
        assert!(matches!(handle(Asked::Gc, ok), Ok(Outcome::Done)));
        let ready = br#"{"v":1,"id":1,"ok":true,"status":{"ready":true,"daemon_version":"x",
            "protocol_versions":[1],"attachments":0,"pooled":0}}"#;
        assert!(matches!(handle(Asked::Status, ready), Ok(Outcome::Done)));
        let stopping = String::from_utf8_lossy(ready).replace("true,\"d", "false,\"d");
        let e = handle(Asked::Status, stopping.as_bytes()).unwrap_err();
        assert_eq!(e.code, Code::NotAvailable as u32);
    }

    #[test]
    fn an_error_prints_as_the_spec_shape() {
        let e = CniError::new(Code::Decode, "m").details("d");
        let v: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion": "1.1.0", "code": 6, "msg": "m", "details": "d"})
        );
    }
}
