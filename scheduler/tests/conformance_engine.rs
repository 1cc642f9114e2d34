//! Third-party data replayed through the engine:
//! - `engine_status_functions`: runner-extra.json `status_functions` (the non-composite cases),
//!   read at job level: the job status the runner sees is produced by a need that succeeded,
//!   failed, or was cancelled with the run, and a dependant with `if: <fn>` must run exactly
//!   when the case expects true.
//! - `engine_matrix`: matrix-cases.json, each matrix handed over as a deferred
//!   `${{ fromJSON(needs.plan.outputs.m) }}`, checking the legs' matrix contexts and display
//!   names, or the job failing with the expected error.

#[path = "../../workflow/tests/support/mod.rs"]
mod conformance;
mod support;

use std::path::Path;

use kiln_workflow::{Conclusion, Value};
use support::*;

fn status_case(function: &str, job_status: Option<&str>) -> Result<bool, String> {
    let yaml = format!(
        "on: push
jobs:
  need: {{runs-on: x, steps: [run: echo]}}
  probe: {{needs: need, if: \"{function}\", runs-on: x, steps: [run: echo]}}
"
    );
    let conclusion = match job_status {
        None | Some("success") => Conclusion::Success,
        Some("failure") => Conclusion::Failure,
        Some("cancelled") => Conclusion::Cancelled,
        Some(other) => return Err(format!("unknown job_status {other}")),
    };
    let mut driver = Driver::new(move |_| Outcome {
        conclusion,
        outputs: Vec::new(),
    });
    if conclusion == Conclusion::Cancelled {
        // A cancelled status comes from cancelling the run while `need` runs.
        driver = Driver::new(|_| ok()).cancel_after(0);
    }
    let run = driver.run(spec(&yaml));
    Ok(run.ran("probe"))
}

fn status_functions(data: &Path, tally: &mut conformance::Tally) {
    let path = data.join("runner-extra.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let data: serde_json::Value = serde_json::from_str(&text).expect("runner-extra.json is JSON");
    let cases = data["status_functions"]["cases"]
        .as_array()
        .expect("status_functions.cases");
    for case in cases
        .iter()
        .filter(|c| !c["composite"].as_bool().unwrap_or(false))
    {
        let function = case["fn"].as_str().unwrap_or_default();
        let job_status = case["job_status"].as_str();
        let expected = case["expected"].as_bool().unwrap_or(false);
        let name = format!(
            "{function} with job_status {}",
            job_status.unwrap_or("null")
        );
        let outcome = status_case(function, job_status).and_then(|ran| {
            if ran == expected {
                Ok(())
            } else {
                Err(format!(
                    "expected the dependant to run: {expected}, it ran: {ran}"
                ))
            }
        });
        tally.record(name, outcome);
    }
}

fn matrix_case(case: &serde_json::Value) -> Result<(), String> {
    let matrix_json = serde_json::to_string(&case["matrix"]).map_err(|e| e.to_string())?;
    let yaml = "on: push
jobs:
  plan: {runs-on: x, steps: [run: echo]}
  build:
    needs: plan
    runs-on: x
    strategy:
      fail-fast: false
      matrix: ${{ fromJSON(needs.plan.outputs.m) }}
    steps: [run: echo]
";
    let run = Driver::new(only("plan", ok().out("m", &matrix_json))).run(spec(yaml));
    let expected = &case["expected"];
    if let Some(errors) = expected["errors"].as_array() {
        let message = run.job("build").message.clone().unwrap_or_default();
        let wanted = errors.first().and_then(|e| e.as_str()).unwrap_or_default();
        if run.conclusion("build") != "failure" || !message.contains(wanted) {
            return Err(format!(
                "expected failure with '{wanted}', got {} '{message}'",
                run.conclusion("build")
            ));
        }
        return Ok(());
    }
    let legs: Vec<_> = run
        .dispatched
        .iter()
        .filter(|d| d.job_id == "build")
        .collect();
    let got: Vec<serde_json::Value> = legs
        .iter()
        .map(|d| {
            d.contexts
                .get("matrix")
                .map(Value::to_json)
                .unwrap_or_default()
        })
        .collect();
    let combinations = expected["combinations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if got != combinations {
        return Err(format!(
            "combinations: expected {combinations:?}, got {got:?}"
        ));
    }
    let names: Vec<&str> = legs.iter().map(|d| d.name.as_str()).collect();
    let wanted: Vec<String> = expected["display_segments"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|segments| {
                    let segments: Vec<String> = segments
                        .as_array()
                        .map(|s| {
                            s.iter()
                                .map(|v| v.as_str().unwrap_or_default().to_string())
                                .collect()
                        })
                        .unwrap_or_default();
                    kiln_workflow::matrix::display_name("build", &segments)
                })
                .collect()
        })
        .unwrap_or_default();
    if names != wanted {
        return Err(format!("names: expected {wanted:?}, got {names:?}"));
    }
    Ok(())
}

fn matrix_cases(data: &Path, tally: &mut conformance::Tally) {
    let path = data.join("matrix-cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let data: serde_json::Value = serde_json::from_str(&text).expect("matrix-cases.json is JSON");
    for case in data["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().unwrap_or("unnamed").to_string();
        let outcome = std::panic::catch_unwind(|| matrix_case(case))
            .unwrap_or_else(|_| Err("panicked".to_string()));
        tally.record(name, outcome);
    }
}

fn main() {
    let Some(data) =
        conformance::conformance_dir("engine (engine_status_functions, engine_matrix)")
    else {
        return;
    };
    let mut status = conformance::Tally::new("engine_status_functions");
    status_functions(&data, &mut status);
    status.report();
    let mut matrix = conformance::Tally::new("engine_matrix");
    matrix_cases(&data, &mut matrix);
    matrix.report();
    // Every case must pass: these are the engine's own semantics, not a port's approximation.
    if status.failed() > 0 || matrix.failed() > 0 || status.passed < 16 || matrix.passed < 20 {
        std::process::exit(1);
    }
}
