//! request_line: arbitrary bytes as one request line of the daemon's protocol, through
//! what the daemon does with a line before anything acts on it
//! (`netslot::daemon::protocol::judge_request_line`: UTF-8, parse, version, field rules; see
//! docs/reliability.md, "Fuzzing").
//!
//! Properties: nothing panics; a refusal is one answer line; a served request is written
//! back as one line that is judged the same, with the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netslot::daemon::protocol::{judge_request_line, VERSION};

fuzz_target!(|data: &[u8]| {
    let req = match judge_request_line(data) {
        Ok(Some(req)) => req,
        Ok(None) => return,
        Err(answer) => {
            assert!(!answer.ok, "a refusal that says ok");
            let line = serde_json::to_string(&answer).expect("responses serialize");
            assert!(!line.contains('\n'), "a multi-line answer: {line}");
            return;
        }
    };
    assert_eq!(req.v, VERSION, "a request of another version was served");
    let line = serde_json::to_string(&req).expect("a served request serializes");
    assert!(!line.contains('\n'), "a multi-line request: {line}");
    let again = judge_request_line(line.as_bytes())
        .unwrap_or_else(|e| panic!("a written request is refused: {e:?}: {line}"))
        .unwrap_or_else(|| panic!("a written request reads as blank: {line}"));
    assert_eq!(
        serde_json::to_value(&again).expect("serializes"),
        serde_json::to_value(&req).expect("serializes"),
        "{line}"
    );
});
