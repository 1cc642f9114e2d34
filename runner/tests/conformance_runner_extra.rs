//! The runner-behaviour sections of runner-extra.json that belong to the executor:
//! `status_functions` (the step-level truth table, also inside composite actions) and
//! `steps_runner` (which steps run, outcomes, conclusions and the job result). Each case is
//! driven through the executor's own condition scope and step bookkeeping.

#[path = "../../workflow/tests/support/mod.rs"]
mod support;

use std::path::Path;

use kiln_runner::executor::scope::Scope;
use kiln_runner::executor::status::{
    condition_expression, step_context_entry, Gate, ScopeStatus, StatusView, StepOutcome,
};
use kiln_workflow::expr::JobStatus;
use kiln_workflow::model::Condition;
use kiln_workflow::value::{Object, Value};
use kiln_workflow::Conclusion;
use serde_json::Value as Json;
use support::{conformance_dir, Tally};

fn job_status(value: &Json) -> JobStatus {
    match value.as_str() {
        Some("failure") => JobStatus::Failure,
        Some("cancelled") => JobStatus::Cancelled,
        _ => JobStatus::Success,
    }
}

fn conclusion(word: &str) -> Result<Conclusion, String> {
    match word {
        "success" => Ok(Conclusion::Success),
        "failure" => Ok(Conclusion::Failure),
        "cancelled" => Ok(Conclusion::Cancelled),
        "skipped" => Ok(Conclusion::Skipped),
        other => Err(format!("unknown result `{other}`")),
    }
}

fn gate(raw: &str, status: StatusView, steps: &Object) -> Gate {
    let expression = match condition_expression(raw) {
        Ok(expression) => expression,
        Err(error) => return Gate::Fail(error.message),
    };
    let condition = Condition {
        raw: raw.to_owned(),
        expression,
        pos: Default::default(),
    };
    let (contexts, env, github, job) = (
        Object::new(),
        Value::object(Object::case_sensitive()),
        Value::Null,
        Value::Null,
    );
    let steps = Value::object(steps.clone());
    Scope {
        contexts: &contexts,
        env: &env,
        steps: &steps,
        github: &github,
        job: &job,
        action_inputs: None,
        status,
        workspace: Path::new("."),
    }
    .gate(&condition)
}

fn status_case(case: &Json) -> Result<(), String> {
    let function = case["fn"].as_str().ok_or("case without fn")?;
    let view = StatusView {
        job: job_status(&case["job_status"]),
        action: case["composite"]
            .as_bool()
            .unwrap_or(false)
            .then(|| job_status(&case["action_status"])),
    };
    let expected = case["expected"].as_bool().ok_or("case without expected")?;
    // Evaluated as a whole condition, so the status function goes through the expression
    // evaluator exactly as a step's `if:` does.
    let got = match gate(function, view, &Object::new()) {
        Gate::Run => true,
        Gate::Skip => false,
        Gate::Fail(message) => return Err(message),
    };
    if got == expected {
        Ok(())
    } else {
        Err(format!("{function} gave {got}, expected {expected}"))
    }
}

fn steps_case(case: &Json) -> Result<(), String> {
    let steps = case["steps"].as_array().ok_or("case without steps")?;
    let mut status = ScopeStatus::default();
    let mut context = Object::new();
    let mut ran = Vec::new();
    for step in steps {
        let raw = step["if"].as_str().unwrap_or("");
        let outcome = match gate(raw, StatusView::job(status.status()), &context) {
            Gate::Run => {
                ran.push(true);
                let forced = conclusion(step["result"].as_str().unwrap_or("success"))?;
                StepOutcome::new(forced, step["continue_on_error"].as_bool().unwrap_or(false))
            }
            Gate::Skip => {
                ran.push(false);
                StepOutcome::skipped()
            }
            Gate::Fail(_) => {
                ran.push(false);
                StepOutcome::new(Conclusion::Failure, false)
            }
        };
        if let Some(id) = step["id"].as_str() {
            context.insert(id, step_context_entry(outcome, &[]));
        }
        status.record(outcome.conclusion);
    }
    if let Some(expected) = case["ran"].as_array() {
        let expected: Vec<bool> = expected
            .iter()
            .map(|v| v.as_bool().unwrap_or(false))
            .collect();
        if expected != ran {
            return Err(format!("ran {ran:?}, expected {expected:?}"));
        }
    }
    if let Some(expected) = case["job_result"].as_str() {
        let got = status.conclusion();
        if got != conclusion(expected)? {
            return Err(format!("job result {got}, expected {expected}"));
        }
    }
    if let Some(expected) = case["steps_context"].as_object() {
        for (id, entry) in expected {
            let got = context.get(id).map(Value::to_json).unwrap_or(Json::Null);
            for key in ["outcome", "conclusion"] {
                if got[key] != entry[key] {
                    return Err(format!(
                        "steps.{id}.{key} = {}, expected {}",
                        got[key], entry[key]
                    ));
                }
            }
        }
    }
    Ok(())
}

fn main() {
    let Some(data) = conformance_dir("runner_extra (status_functions, steps_runner)") else {
        return;
    };
    let path = data.join("runner-extra.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let data: Json = serde_json::from_str(&text).expect("runner-extra.json is valid JSON");
    let mut all_passed = true;

    let mut tally = Tally::new("status_functions");
    let cases = data["status_functions"]["cases"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (index, case) in cases.iter().enumerate() {
        tally.record(format!("#{index} {}", case["fn"]), status_case(case));
    }
    tally.report();
    all_passed &= tally.failed() == 0 && tally.passed == cases.len() && !cases.is_empty();

    let mut tally = Tally::new("steps_runner");
    let cases = data["steps_runner"].as_array().cloned().unwrap_or_default();
    for (index, case) in cases.iter().enumerate() {
        tally.record(format!("#{index} {}", case["test"]), steps_case(case));
    }
    tally.report();
    all_passed &= tally.failed() == 0 && tally.passed == cases.len() && !cases.is_empty();

    if !all_passed {
        std::process::exit(1);
    }
}
