//! ack_parser: arbitrary bytes into the engine's ACK parser and into the settling of one
//! send of a small production call (docs/reliability.md, "Fuzzing").
//!
//! Properties: nothing panics; the two parser entry points agree; a send settles a request
//! done only on evidence (its marker's success ACK, or the request's own success ACK);
//! an unreadable reply settles nothing done and fails every request of its send; and no
//! strict prefix of a real reply (a truncated datagram) settles anything done.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use netslot::internals::{self, Ask, CallInput, CallSim};

/// A two-slot call with every host request acked (so explicit ACKs are in play), driven
/// to its first exchange (the slot sends) or, with `host`, to its second (the host
/// addresses, after every slot send succeeded).
fn small_call(host: bool) -> CallSim {
    let mut input = CallInput::standard(2);
    input.ack_every_host_request = true;
    let mut sim = CallSim::new(&input).expect("a valid call");
    assert!(matches!(sim.ask(), Ask::Namespaces { .. }));
    sim.namespaces(&[Ok(()), Ok(())]);
    assert_eq!(sim.ask(), Ask::Exchange);
    if host {
        let markers: Vec<(usize, u32)> = sim.round().iter().map(|s| (s.index, s.marker)).collect();
        for (index, marker) in markers {
            sim.settle(index, 1, Ok(&internals::success_reply(marker)));
        }
        sim.end_round(Duration::ZERO);
        assert_eq!(sim.ask(), Ask::Exchange);
    }
    sim
}

/// The success reply of send `index`, or its first request refused then its marker.
fn real_reply(sim: &CallSim, index: usize, refused: bool) -> Vec<u8> {
    let v = sim.round()[index];
    let mut out = Vec::new();
    if refused {
        out.extend(internals::error_reply(v.requests[0], 17, Some("File exists")));
    }
    out.extend(internals::success_reply(v.marker));
    out
}

/// Feeds `reply` to send `index` and checks what reconcile settled against what the
/// parser read.
fn check_reconcile(sim: &mut CallSim, index: usize, reply: &[u8]) -> (usize, usize) {
    let (requests, marker, send) = {
        let v = sim.round()[index];
        (v.requests.to_vec(), v.marker, v.index)
    };
    let (done, failed) = sim.settle(send, 1, Ok(reply));
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
    let mut p = small_call(mode & 4 != 0);
    let sends = p.round().len();
    let index = usize::from(mode >> 3) % sends;
    match mode & 3 {
        // Arbitrary bytes as the send's reply.
        0 => {
            check_reconcile(&mut p, index, rest);
        }
        // A real reply (success, or a refusal then the marker), cut short.
        1 | 2 => {
            let reply = real_reply(&p, index, mode & 3 == 2);
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
            let mut reply = real_reply(&p, index, false);
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
