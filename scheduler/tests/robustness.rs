//! Models the parser would reject still never panic or hang the engine; large runs stay cheap.

mod support;
use kiln_scheduler::{Engine, EngineError, JobCompletion, RunSpec};
use kiln_workflow::{parse_workflow, Conclusion};
use std::sync::Arc;
use support::*;

/// Builds a spec from a workflow even when the parser reported errors.
fn spec_ignoring_errors(yaml: &str) -> RunSpec {
    let parsed = parse_workflow("bad.yml", yaml);
    let mut spec = spec("on: push\njobs:\n  a: {runs-on: x, steps: [run: echo]}\n");
    spec.workflow = Arc::new(parsed.value.expect("a model"));
    spec
}

#[test]
fn a_needs_cycle_is_an_error_not_a_hang() {
    let spec = spec_ignoring_errors(
        "on: push
jobs:
  a: {needs: c, runs-on: x, steps: [run: echo]}
  b: {needs: a, runs-on: x, steps: [run: echo]}
  c: {needs: b, runs-on: x, steps: [run: echo]}
",
    );
    let error = Engine::new(spec).err().expect("an error");
    assert!(matches!(error, EngineError::Cycle(_)), "{error}");
}

#[test]
fn an_unknown_need_is_an_error() {
    let spec = spec_ignoring_errors(
        "on: push
jobs:
  a: {needs: ghost, runs-on: x, steps: [run: echo]}
",
    );
    let error = Engine::new(spec).err().expect("an error");
    assert_eq!(
        error,
        EngineError::UnknownNeed {
            job: "a".to_string(),
            need: "ghost".to_string()
        }
    );
}

#[test]
fn a_thousand_legs_are_scheduled() {
    let yaml = thousand_legs_yaml();
    let mut engine = Engine::new(spec(&yaml)).expect("engine");
    let started = std::time::Instant::now();
    let mut dispatched = 0;
    loop {
        let legs: Vec<_> = engine.poll().into_iter().map(|d| d.leg).collect();
        if legs.is_empty() {
            break;
        }
        dispatched += legs.len();
        for leg in legs {
            engine.complete(leg, JobCompletion::new(Conclusion::Success));
        }
    }
    assert_eq!(dispatched, 1000);
    assert!(engine.is_finished());
    assert_eq!(engine.report().jobs.len(), 1000);
    // Generous for an unoptimised build on a shared machine; the release bench shows ~10 ms.
    assert!(
        started.elapsed().as_secs() < 5,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn report_mid_run_lists_every_job() {
    let mut engine = Engine::new(spec(
        "on: push
jobs:
  a: {runs-on: x, steps: [run: echo]}
  b: {needs: a, runs-on: x, strategy: {matrix: {v: [1, 2]}}, steps: [run: echo]}
",
    ))
    .expect("engine");
    let first = engine.poll();
    assert_eq!(first.len(), 1);
    let report = engine.report();
    let names: Vec<&str> = report.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(!engine.is_finished());
    engine.complete(first[0].leg, JobCompletion::new(Conclusion::Success));
    let second = engine.poll();
    assert_eq!(
        second.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["b (1)", "b (2)"]
    );
    assert_eq!(engine.report().jobs.len(), 3);
}

#[test]
fn skipped_completion_from_the_executor_skips_dependants() {
    // The CLI skips a leg whose runs-on maps to no platform by completing it as skipped.
    let run = Driver::new(only(
        "a",
        Outcome {
            conclusion: Conclusion::Skipped,
            outputs: Vec::new(),
        },
    ))
    .run(spec(
        "on: push
jobs:
  a: {runs-on: windows-latest, steps: [run: echo]}
  b: {needs: a, runs-on: x, steps: [run: echo]}
  c: {runs-on: x, steps: [run: echo]}
",
    ));
    assert_eq!(run.report_lines(), ["a=skipped", "b=skipped", "c=success"]);
    assert_eq!(run.report.conclusion.as_str(), "success");
}
