//! One fuzz case for the workflow parser, shared by the cargo-fuzz target and by
//! workflow/tests/fuzz_corpus_replay.rs so the corpus is replayed through the same code.
//! Any input is fine; the only failure is a panic, a hang or a crash.

use kiln_workflow::{parse_action, parse_workflow_with, unpinned_uses, ParseOptions};

const FILE: &str = ".github/workflows/fuzz.yml";

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // Every `uses:` resolves to the input itself, so reusable-workflow checks, nesting and
    // permissions run too.
    let content = text.to_string();
    let resolver = |uses: &str| Some((uses.to_string(), content.clone()));
    let options = ParseOptions {
        resolver: Some(&resolver),
        ..ParseOptions::default()
    };
    let result = parse_workflow_with(FILE, &text, &options);
    if let Some(workflow) = &result.value {
        let _ = unpinned_uses(workflow, FILE);
    }
    for diagnostic in &result.diagnostics {
        let _ = diagnostic.to_string();
    }
    let _ = parse_action("action.yml", &text);
}
