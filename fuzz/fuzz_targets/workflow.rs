//! Arbitrary bytes as a workflow and as an action.yml: the parser must never panic, hang or
//! run out of memory, whatever the input.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let workflow = kiln_workflow::parse_workflow(".github/workflows/fuzz.yml", &text);
    if let Some(parsed) = &workflow.value {
        let _ = kiln_workflow::unpinned_uses(parsed, ".github/workflows/fuzz.yml");
    }
    let _ = kiln_workflow::parse_action("action.yml", &text);
});
