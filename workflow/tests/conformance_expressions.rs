//! Runs every case of GitHub's shared expression test data
//! (languageservices/expressions/testdata/*.json) through parse + evaluate.

#[path = "support/mod.rs"]
mod support;

use kiln_workflow::expr::{parse, Allowed, JobStatus, SimpleContext};
use kiln_workflow::Value;
use serde_json::Value as Json;

/// The bar: at least this many pass, and only cases GitHub marks as skipped for the
/// TypeScript implementation may fail.
const REQUIRED_PASSES: usize = 1015;

fn main() {
    let Some(data) = support::conformance_dir("expressions") else {
        return;
    };
    let dir = data.join("languageservices/expressions/testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        28,
        "expected the 28 expression test files in {}",
        dir.display()
    );

    let mut tally = support::Tally::new("expressions");
    let mut unexcused = Vec::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let groups: serde_json::Map<String, Json> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        for (group, cases) in &groups {
            for (i, case) in cases.as_array().into_iter().flatten().enumerate() {
                let name = format!("{stem}/{group}/{i}");
                let outcome = std::panic::catch_unwind(|| run_case(case))
                    .unwrap_or_else(|_| Err("panicked".to_string()));
                let skipped_for_typescript = case["options"]["skip"].as_array().is_some_and(|s| {
                    s.iter().any(|v| {
                        v.as_str()
                            .is_some_and(|s| s.eq_ignore_ascii_case("typescript"))
                    })
                });
                if outcome.is_err() && !skipped_for_typescript {
                    unexcused.push(name.clone());
                }
                tally.record(name, outcome);
            }
        }
    }
    tally.report();
    if tally.passed < REQUIRED_PASSES || !unexcused.is_empty() {
        println!("below the bar: need {REQUIRED_PASSES} passes and no failures outside TypeScript-skipped cases");
        for name in unexcused {
            println!("  unexcused failure: {name}");
        }
        std::process::exit(1);
    }
}

fn run_case(case: &Json) -> Result<(), String> {
    let source = case["expr"].as_str().ok_or("case without expr")?;
    let contexts = case
        .get("contexts")
        .cloned()
        .unwrap_or(Json::Object(Default::default()));
    let names: Vec<String> = contexts
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let allowed = Allowed::everything(names);
    let ctx = SimpleContext::from_json(&contexts, JobStatus::Success);
    let outcome = parse(source, &allowed).and_then(|e| e.evaluate(&ctx));

    if let Some(expected) = case.get("err") {
        let kind = expected["kind"].as_str().unwrap_or("");
        let text = expected["value"].as_str().unwrap_or("");
        return match outcome {
            Ok(v) => Err(format!(
                "expected {kind} error `{text}`, got {} {}",
                v.kind().name(),
                v.to_json()
            )),
            Err(e) if e.kind.name() != kind => Err(format!(
                "expected {kind} error, got {}: {}",
                e.kind.name(),
                e.message
            )),
            Err(e) if !e.message.contains(text) => Err(format!(
                "expected message containing `{text}`, got `{}`",
                e.message
            )),
            Err(_) => Ok(()),
        };
    }
    let expected = case
        .get("result")
        .ok_or("case with neither result nor err")?;
    let value =
        outcome.map_err(|e| format!("unexpected {} error: {}", e.kind.name(), e.message))?;
    let kind = expected["kind"].as_str().unwrap_or("");
    if value.kind().name() != kind {
        return Err(format!(
            "expected {kind}, got {} {}",
            value.kind().name(),
            value.to_json()
        ));
    }
    if same_value(&value, &expected["value"]) {
        Ok(())
    } else {
        Err(format!(
            "expected {}, got {}",
            expected["value"],
            value.to_json()
        ))
    }
}

fn same_value(actual: &Value, expected: &Json) -> bool {
    match (actual, expected) {
        (Value::Number(a), Json::Number(e)) => {
            let e = e.as_f64().unwrap_or(f64::NAN);
            // -0.0 only where the data spells it as a negative zero.
            (a.is_nan() && e.is_nan())
                || (*a == e && (e != 0.0 || e.is_sign_positive() || a.is_sign_negative()))
        }
        _ => same_json(&actual.to_json(), expected),
    }
}

/// Deep equality with numbers compared as doubles (the data mixes `1` and `1.0`).
fn same_json(actual: &Json, expected: &Json) -> bool {
    match (actual, expected) {
        (Json::Number(a), Json::Number(e)) => a.as_f64() == e.as_f64(),
        (Json::Array(a), Json::Array(e)) => {
            a.len() == e.len() && a.iter().zip(e).all(|(a, e)| same_json(a, e))
        }
        (Json::Object(a), Json::Object(e)) => {
            a.len() == e.len()
                && e.iter()
                    .all(|(k, ev)| a.get(k).is_some_and(|av| same_json(av, ev)))
        }
        _ => actual == expected,
    }
}
