//! request_line: arbitrary bytes as one request line of the daemon's protocol, through
//! the daemon's own parser (`netslot::protocol::parse_request_line`) and its version
//! check (docs/reliability.md, "Fuzzing").
//!
//! Properties: nothing panics; a refusal is answered with one `bad-request` line; a
//! parsed request is written back as one line that parses to the same request, with the
//! same verdict of the version check (the daemon serves `v == VERSION` only).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netslot::protocol::{parse_request_line, ErrorCode, Response, VERSION};

fuzz_target!(|data: &[u8]| {
    let req = match parse_request_line(data) {
        Ok(req) => req,
        Err(e) => {
            // The daemon's answer to it: one line, whatever the error text holds.
            let answer = Response::err(0, ErrorCode::BadRequest, format!("not a request: {e}"));
            let line = serde_json::to_string(&answer).expect("responses serialize");
            assert!(!line.contains('\n'), "a multi-line answer: {line}");
            return;
        }
    };
    let served = req.v == VERSION;
    let line = serde_json::to_string(&req).expect("a parsed request serializes");
    assert!(!line.contains('\n'), "a multi-line request: {line}");
    let again = parse_request_line(line.as_bytes())
        .unwrap_or_else(|e| panic!("a written request does not parse: {e}: {line}"));
    assert_eq!((again.v, again.id), (req.v, req.id));
    assert_eq!(again.v == VERSION, served);
    assert_eq!(
        serde_json::to_value(&again).expect("serializes"),
        serde_json::to_value(&req).expect("serializes"),
        "{line}"
    );
});
