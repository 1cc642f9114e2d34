//! Reusable-workflow jobs expanded into their callee's jobs.

mod support;
use kiln_scheduler::{Dispatch, EngineEvent};
use support::*;

const BUILD: &str = "on:
  workflow_call:
    inputs:
      target: {type: string, required: true}
      count: {type: number, default: 2}
      debug: {type: boolean, default: false}
      label: {type: string, default: 'lbl-${{ github.event_name }}'}
    secrets:
      deploy-key: {required: false}
    outputs:
      artifact:
        value: ${{ jobs.compile.outputs.path }}
      verdict:
        value: ${{ jobs.test.result }}
env:
  CALLEE: yes
jobs:
  compile:
    runs-on: x
    outputs: {path: x}
    steps: [run: echo]
  test:
    needs: compile
    runs-on: x
    steps: [run: echo]
";

fn outputs_rule(d: &Dispatch) -> Outcome {
    if d.job_id.ends_with("compile") {
        ok().out(
            "path",
            &format!(
                "dist/{}",
                d.contexts
                    .get("inputs")
                    .expect("inputs")
                    .index(&kiln_workflow::Value::string("target"))
                    .to_display_string()
            ),
        )
    } else {
        ok()
    }
}

fn json(d: &Dispatch, context: &str) -> serde_json::Value {
    d.contexts
        .get(context)
        .map(|v| v.to_json())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn callee_jobs_run_in_place_of_the_caller_with_inputs_and_secrets() {
    let run = Driver::new(outputs_rule).run(spec_with(
        "on: push
jobs:
  call:
    uses: ./.github/workflows/build.yml
    with:
      target: linux
      debug: ${{ github.event_name == 'push' }}
    secrets:
      deploy-key: ${{ secrets.TOKEN }}
  after:
    needs: call
    runs-on: x
    steps: [run: echo]
",
        &[("./.github/workflows/build.yml", BUILD)],
    ));
    assert_eq!(run.names(), ["call / compile", "call / test", "after"]);
    let compile = run.dispatch("call / compile");
    assert_eq!(compile.job_id, "call/compile");
    assert_eq!(
        json(compile, "inputs"),
        serde_json::json!({"target": "linux", "count": 2, "debug": true, "label": "lbl-push"})
    );
    assert_eq!(
        json(compile, "secrets"),
        serde_json::json!({"deploy-key": "s3cret"})
    );
    // The callee's own `env:` applies to its jobs (the runner evaluates it).
    let env: Vec<&str> = compile
        .workflow
        .env
        .pairs()
        .map(|(k, _)| k.value.as_str())
        .collect();
    assert_eq!(env, ["CALLEE"]);
    assert_eq!(
        compile.workflow.jobs.len(),
        2,
        "the callee workflow is handed over"
    );
    assert_eq!(
        json(run.dispatch("call / test"), "needs")["compile"]["outputs"]["path"],
        "dist/linux"
    );
    assert_eq!(
        json(run.dispatch("after"), "needs"),
        serde_json::json!({"call": {"result": "success", "outputs": {"artifact": "dist/linux", "verdict": "success"}}})
    );
    assert_eq!(
        run.report_lines(),
        [
            "call / compile=success",
            "call / test=success",
            "after=success"
        ]
    );
}

#[test]
fn secrets_inherit_passes_every_secret_and_no_secrets_passes_none() {
    let run = run_with_callee(
        "on: push
jobs:
  inherit:
    uses: ./.github/workflows/build.yml
    with: {target: a}
    secrets: inherit
  none:
    uses: ./.github/workflows/build.yml
    with: {target: b}
",
    );
    assert_eq!(
        json(run.dispatch("inherit / compile"), "secrets"),
        serde_json::json!({"TOKEN": "s3cret", "OTHER": "x"})
    );
    assert_eq!(
        json(run.dispatch("none / compile"), "secrets"),
        serde_json::json!({})
    );
}

fn run_with_callee(yaml: &str) -> Run {
    Driver::new(outputs_rule).run(spec_with(yaml, &[("./.github/workflows/build.yml", BUILD)]))
}

#[test]
fn a_matrix_on_the_caller_multiplies_the_call() {
    let run = run_with_callee(
        "on: push
jobs:
  call:
    strategy: {matrix: {target: [linux, mac]}}
    uses: ./.github/workflows/build.yml
    with: {target: '${{ matrix.target }}', count: '${{ strategy.job-index }}'}
  after: {needs: call, runs-on: x, steps: [run: echo]}
",
    );
    assert_eq!(
        run.report_lines(),
        [
            "call (linux) / compile=success",
            "call (linux) / test=success",
            "call (mac) / compile=success",
            "call (mac) / test=success",
            "after=success"
        ]
    );
    assert_eq!(
        json(run.dispatch("call (mac) / compile"), "inputs")["count"],
        1
    );
    // Both invocations set the output; the one that finished last wins.
    assert_eq!(
        json(run.dispatch("after"), "needs")["call"]["outputs"]["artifact"],
        "dist/mac"
    );
}

#[test]
fn a_failing_callee_job_fails_the_caller() {
    let run = Driver::new(only("call / compile", fail())).run(spec_with(
        "on: push
jobs:
  call:
    uses: ./.github/workflows/build.yml
    with: {target: a}
  after: {needs: call, runs-on: x, steps: [run: echo]}
  on-failure: {needs: call, if: failure(), runs-on: x, steps: [run: echo]}
",
        &[("./.github/workflows/build.yml", BUILD)],
    ));
    assert_eq!(
        run.report_lines(),
        [
            "call / compile=failure",
            "call / test=skipped",
            "after=skipped",
            "on-failure=success"
        ]
    );
    assert_eq!(
        json(run.dispatch("on-failure"), "needs")["call"]["outputs"]["verdict"],
        "skipped"
    );
    assert_eq!(run.report.conclusion.as_str(), "failure");
}

#[test]
fn skipped_caller_is_one_entry() {
    let run = run_with_callee(
        "on: push
jobs:
  call:
    if: github.event_name == 'release'
    uses: ./.github/workflows/build.yml
    with: {target: a}
",
    );
    assert!(run.dispatched.is_empty());
    assert_eq!(run.report_lines(), ["call=skipped"]);
}

#[test]
fn a_callee_that_was_not_loaded_fails_the_caller_with_a_clear_message() {
    let run = Driver::new(|_| ok()).run(spec_unresolved(
        "on: push
jobs:
  call:
    uses: ./.github/workflows/build.yml
  other: {runs-on: x, steps: [run: echo]}
",
    ));
    assert_eq!(run.report_lines(), ["call=failure", "other=success"]);
    let message = run.job("call").message.clone().expect("a message");
    assert!(message.contains("was not loaded"), "{message}");
    assert!(run
        .events
        .iter()
        .any(|e| matches!(e, EngineEvent::JobFailedToStart { job_id, .. } if job_id == "call")));
}

#[test]
fn input_of_the_wrong_type_fails_the_call() {
    let run = run_with_callee(
        "on: push
jobs:
  call:
    uses: ./.github/workflows/build.yml
    with: {target: a, count: '${{ github.sha }}x'}
",
    );
    assert!(run.dispatched.is_empty());
    assert_eq!(run.report_lines(), ["call=failure"]);
    assert!(run
        .job("call")
        .message
        .as_deref()
        .is_some_and(|m| m.contains("Input count expects a number")));
}

#[test]
fn nested_reusable_workflows() {
    let middle = "on:
  workflow_call:
    outputs:
      deep: {value: '${{ jobs.inner.outputs.artifact }}'}
jobs:
  prep: {runs-on: x, steps: [run: echo]}
  inner:
    needs: prep
    uses: ./.github/workflows/build.yml
    with: {target: nested}
";
    let run = Driver::new(outputs_rule).run(spec_with(
        "on: push
jobs:
  outer:
    uses: ./.github/workflows/middle.yml
  last: {needs: outer, runs-on: x, steps: [run: echo]}
",
        &[
            ("./.github/workflows/middle.yml", middle),
            ("./.github/workflows/build.yml", BUILD),
        ],
    ));
    assert_eq!(
        run.names(),
        [
            "outer / prep",
            "outer / inner / compile",
            "outer / inner / test",
            "last"
        ]
    );
    assert_eq!(
        run.dispatch("outer / inner / compile").job_id,
        "outer/inner/compile"
    );
    assert_eq!(
        json(run.dispatch("last"), "needs")["outer"]["outputs"]["deep"],
        "dist/nested"
    );
}

#[test]
fn fail_fast_on_a_matrix_call_cancels_the_other_invocations() {
    let yaml = "on: push
jobs:
  call:
    strategy: {matrix: {target: [linux, mac]}}
    uses: ./.github/workflows/build.yml
    with: {target: '${{ matrix.target }}'}
";
    let run = Driver::new(only("call (linux) / compile", fail()))
        .run(spec_with(yaml, &[("./.github/workflows/build.yml", BUILD)]));
    assert_eq!(run.cancel_requests, ["call (mac) / compile"]);
    assert_eq!(
        run.report_lines(),
        [
            "call (linux) / compile=failure",
            "call (linux) / test=skipped",
            "call (mac) / compile=cancelled",
            "call (mac) / test=cancelled"
        ]
    );
    assert_eq!(run.report.conclusion.as_str(), "failure");
    let relaxed = yaml.replace("strategy: {", "strategy: {fail-fast: false, ");
    let run = Driver::new(only("call (linux) / compile", fail())).run(spec_with(
        &relaxed,
        &[("./.github/workflows/build.yml", BUILD)],
    ));
    assert!(run.cancel_requests.is_empty());
    assert_eq!(run.conclusion("call (mac) / test"), "success");
}
