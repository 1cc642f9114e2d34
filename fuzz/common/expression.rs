//! One fuzz case for the expression engine, shared by the cargo-fuzz target and by
//! workflow/tests/fuzz_corpus_replay.rs so the corpus is replayed through the same code.
//! Any input is fine; the only failure is a panic, a hang or a crash.

use std::sync::OnceLock;

use kiln_workflow::expr::{parse, template, to_json_string, Allowed, JobStatus, SimpleContext};

const NAMES: [&str; 8] = [
    "github", "matrix", "env", "steps", "needs", "foo", "test", "input",
];

fn context() -> &'static SimpleContext {
    static CONTEXT: OnceLock<SimpleContext> = OnceLock::new();
    CONTEXT.get_or_init(|| {
        let json = serde_json::json!({
            "github": {"event_name": "push", "ref": "refs/heads/main", "sha": "2ce6b095",
                       "event": {"commits": [{"id": "a", "author": {"name": "mona"}}, {"id": "b"}], "forced": false}},
            "matrix": {"os": "ubuntu-latest", "node": [18, 20], "include": [{"x": 1}, {"x": "2"}]},
            "env": {"CI": "true", "EMPTY": ""},
            "steps": {"build": {"outcome": "success", "outputs": {"flag": "false"}}},
            "needs": {"a": {"result": "failure", "outputs": {}}},
            "foo": [null, true, 1.5, "x", [1, [2, [3]]], {"bar": {"baz": [1, 2]}}],
            "test": {"one": "1", "*": "star", "": "empty"},
            "input": "0x1F"
        });
        SimpleContext::from_json(&json, JobStatus::Failure)
            .with_hash_files(Box::new(|patterns| Ok(format!("{:x}", patterns.len()))))
    })
}

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let allowed = Allowed::everything(NAMES);
    if let Ok(expr) = parse(text, &allowed) {
        let _ = expr.calls_status_function();
        if let Ok(value) = expr.evaluate(context()) {
            let _ = to_json_string(&value);
            let _ = value.to_display_string();
        }
    }
    if let Ok(segments) = template::split(text) {
        if let Some(source) = template::to_expression_source(&segments) {
            if let Ok(expr) = parse(&source, &allowed) {
                let _ = expr.evaluate(context());
            }
        }
    }
    if let Ok(source) = template::condition_source(text) {
        let _ = template::rewrite_condition(&source, &allowed);
    }
}
