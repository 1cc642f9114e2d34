//! Arbitrary bytes as a workflow (following its own reusable-workflow calls) and as an
//! action.yml: the parser must never panic, hang or run out of memory, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../common/workflow.rs"]
mod workflow;

fuzz_target!(|data: &[u8]| workflow::run(data));
