//! Runs every case of matrix-cases.json through `matrix::expand`: the combinations must match
//! in order (keys in order too), as must the display segments, or the expected error text.

#[path = "support/mod.rs"]
mod support;

use kiln_workflow::matrix::{expand, MatrixLeg};
use kiln_workflow::{Object, Value};
use serde_json::Value as Json;

/// The brief and the data README both say 25 cases, but matrix-cases.json holds 23; the bar
/// is every case in the file, and a file with fewer than 23 means the data was damaged.
const MIN_CASES: usize = 23;

fn main() {
    let Some(data) = support::conformance_dir("matrix") else {
        return;
    };
    let path = data.join("matrix-cases.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let data: Json = serde_json::from_str(&text).expect("matrix-cases.json is valid JSON");
    let cases = data["cases"]
        .as_array()
        .expect("matrix-cases.json has a `cases` array");

    let mut tally = support::Tally::new("matrix");
    for case in cases {
        let name = case["name"].as_str().unwrap_or("<unnamed>").to_string();
        tally.record(name, run_case(case));
    }
    tally.report();
    if cases.len() < MIN_CASES || tally.passed < cases.len() || tally.failed() > 0 {
        std::process::exit(1);
    }
}

fn run_case(case: &Json) -> Result<(), String> {
    let Value::Object(matrix) = Value::from_json(&case["matrix"]) else {
        return Err("case `matrix` is not a mapping".into());
    };
    let matrix: &Object = &matrix;
    let expected = &case["expected"];
    match (expand(matrix), expected.get("errors")) {
        (Ok(legs), None) => compare_legs(&legs, expected),
        (Ok(legs), Some(errors)) => {
            Err(format!("expected errors {errors}, got {} legs", legs.len()))
        }
        (Err(error), Some(errors)) => {
            let message = error.to_string();
            let wanted: Vec<&str> = errors
                .as_array()
                .map(|list| list.iter().filter_map(Json::as_str).collect())
                .unwrap_or_default();
            if wanted.iter().any(|w| message.contains(w)) {
                Ok(())
            } else {
                Err(format!("expected error {wanted:?}, got `{message}`"))
            }
        }
        (Err(error), None) => Err(format!("unexpected error `{error}`")),
    }
}

fn compare_legs(legs: &[MatrixLeg], expected: &Json) -> Result<(), String> {
    // Serialised text compares key order as well as values, which `==` on maps would not.
    let got: Vec<String> = legs
        .iter()
        .map(|leg| Value::object(leg.context.clone()).to_json().to_string())
        .collect();
    let want: Vec<String> = expected["combinations"]
        .as_array()
        .map(|list| list.iter().map(Json::to_string).collect())
        .unwrap_or_default();
    if got != want {
        return Err(format!(
            "combinations differ:\n  got  {got:?}\n  want {want:?}"
        ));
    }
    let got_segments: Vec<&Vec<String>> = legs.iter().map(|leg| &leg.display_segments).collect();
    let want_segments: Vec<Vec<String>> =
        serde_json::from_value(expected["display_segments"].clone())
            .map_err(|e| format!("bad display_segments in data: {e}"))?;
    if got_segments.len() != want_segments.len()
        || got_segments
            .iter()
            .zip(&want_segments)
            .any(|(g, w)| *g != w)
    {
        return Err(format!(
            "display segments differ:\n  got  {got_segments:?}\n  want {want_segments:?}"
        ));
    }
    Ok(())
}
