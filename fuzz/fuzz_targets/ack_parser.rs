//! ack_parser: arbitrary bytes into the engine's ACK parser and into reconcile of a small
//! planned batch (docs/reliability.md, "Fuzzing").
//!
//! Properties: nothing panics; the two parser entry points agree; a send settles a request
//! done only on evidence (its marker's success ACK, or the request's own success ACK);
//! an unreadable reply settles nothing done and fails every request of its send; and no
//! strict prefix of a real reply (a truncated datagram) settles anything done.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netslot::internals::{self, PerDeviceChoice, PlanInput, Planned};

/// Two slots, default pool, every host request acked so explicit ACKs are in play.
fn small_batch() -> Planned {
    internals::plan_with(&PlanInput {
        prefix: "ns".into(),
        group: 7600,
        ipv4_pool: "100.64.0.0/16".into(),
        ids: vec![0, 1],
        mtu: 1500,
        ipv6: false,
        per_device: PerDeviceChoice::Nothing,
        tc_filter: false,
        ack_every_host_request: true,
        slot_buffers: (212_992, 212_992),
        host_buffers: (8 << 20, 32 << 20),
    })
    .expect("a valid batch")
}

/// Feeds `reply` to send `index` and checks what reconcile settled against what the
/// parser read.
fn check_reconcile(p: &mut Planned, index: usize, reply: &[u8]) -> (usize, usize) {
    let (requests, marker) = {
        let v = p.send_views()[index];
        (v.requests.to_vec(), v.marker)
    };
    let (done, failed) = p.reconcile_send(index, reply);
    assert!(
        done + failed <= requests.len(),
        "settled {done}+{failed} of {} requests",
        requests.len()
    );
    match internals::parse_ack_list(reply) {
        Err(_) => {
            assert_eq!(done, 0, "an unreadable reply settled requests done");
            assert_eq!(
                failed,
                requests.len(),
                "an unreadable reply left requests open"
            );
        }
        Ok(acks) => {
            let marker_ok = acks.iter().any(|a| a.seq == marker && a.errno == 0);
            let explicit_ok = acks
                .iter()
                .filter(|a| a.errno == 0 && requests.contains(&a.seq))
                .count();
            let evidence = if marker_ok {
                requests.len()
            } else {
                explicit_ok
            };
            assert!(
                done <= evidence,
                "{done} settled done on evidence for {evidence} (marker ok: {marker_ok})"
            );
        }
    }
    (done, failed)
}

fuzz_target!(|data: &[u8]| {
    // The parser alone.
    let list = internals::parse_ack_list(data);
    let count = internals::parse_acks(data);
    assert_eq!(list.as_ref().map(Vec::len), count.as_ref().map(|&n| n));

    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut p = small_batch();
    let sends = p.sends();
    let index = usize::from(mode >> 2) % sends;
    match mode & 3 {
        // Arbitrary bytes as the send's reply.
        0 => {
            check_reconcile(&mut p, index, rest);
        }
        // A real reply (success, or a refusal then the marker), cut short.
        1 | 2 => {
            let reply = if mode & 3 == 1 {
                p.success_replies().swap_remove(index)
            } else {
                p.first_request_refused_replies().swap_remove(index)
            };
            let cut = rest
                .get(..2)
                .map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])))
                % reply.len();
            let (done, _) = check_reconcile(&mut p, index, &reply[..cut]);
            assert_eq!(
                done,
                0,
                "a reply cut at {cut} of {} settled done",
                reply.len()
            );
        }
        // A real success reply with fuzzer bytes XORed over its start, then the rest of
        // the input appended (a corrupted or padded datagram).
        _ => {
            let mut reply = p.success_replies().swap_remove(index);
            for (r, x) in reply.iter_mut().zip(rest) {
                *r ^= x;
            }
            if rest.len() > reply.len() {
                reply.extend_from_slice(&rest[reply.len()..]);
            }
            check_reconcile(&mut p, index, &reply);
        }
    }
});
