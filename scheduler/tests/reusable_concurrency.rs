//! A called workflow's own workflow-level `concurrency`: each invocation is one entry of its
//! group, so two invocations in the same group never run together, `cancel-in-progress`
//! cancels the running one, and a group the invocation is already inside is a deadlock.

mod support;
use kiln_scheduler::EngineEvent;
use support::*;

fn callee(concurrency: &str) -> String {
    format!(
        "on:
  workflow_call:
    inputs:
      env: {{type: string, required: true}}
concurrency: {concurrency}
jobs:
  deploy:
    runs-on: x
    steps: [run: echo]
  verify:
    needs: deploy
    runs-on: x
    steps: [run: echo]
"
    )
}

const CALLERS: &str = "on: push
jobs:
  first:
    uses: ./.github/workflows/deploy.yml
    with: {env: prod}
  second:
    uses: ./.github/workflows/deploy.yml
    with: {env: prod}
  staging:
    uses: ./.github/workflows/deploy.yml
    with: {env: staging}
";

fn spec_for(callers: &str, concurrency: &str) -> kiln_scheduler::RunSpec {
    spec_with(
        callers,
        &[("./.github/workflows/deploy.yml", &callee(concurrency))],
    )
}

fn run_with(callers: &str, concurrency: &str) -> Run {
    Driver::new(|_| ok()).run(spec_for(callers, concurrency))
}

#[test]
fn invocations_in_one_group_run_one_after_the_other() {
    let run = run_with(CALLERS, "deploy-${{ inputs.env }}");
    assert_eq!(
        run.snapshots[0],
        ["first / deploy", "staging / deploy"],
        "second waits for first; staging has a group of its own"
    );
    for a in ["first / deploy", "first / verify"] {
        for b in ["second / deploy", "second / verify"] {
            assert!(!run.ran_together(a, b), "{a} ran with {b}");
        }
    }
    assert!(run.ran_together("first / deploy", "staging / deploy"));
    assert_eq!(
        run.report_lines(),
        [
            "first / deploy=success",
            "first / verify=success",
            "second / deploy=success",
            "second / verify=success",
            "staging / deploy=success",
            "staging / verify=success"
        ]
    );
    assert!(run.events.iter().any(|e| matches!(e,
        EngineEvent::LegPending { leg: None, name, group } if name == "second" && group == "deploy-prod")));
}

#[test]
fn cancel_in_progress_cancels_the_running_invocation() {
    // first starts at once; second enters the group only after warmup and gate, while
    // first's verify job runs, and cancels it.
    let run = run_with(
        "on: push
jobs:
  first:
    uses: ./.github/workflows/deploy.yml
    with: {env: prod}
  warmup:
    runs-on: x
    steps: [run: echo]
  gate:
    needs: warmup
    runs-on: x
    steps: [run: echo]
  second:
    needs: gate
    uses: ./.github/workflows/deploy.yml
    with: {env: prod}
",
        "{group: 'deploy-${{ inputs.env }}', cancel-in-progress: true}",
    );
    assert_eq!(run.conclusion("first / deploy"), "success");
    assert_eq!(run.conclusion("first / verify"), "cancelled");
    assert_eq!(run.cancel_requests, ["first / verify"]);
    assert!(!run.ran_together("first / verify", "second / deploy"));
    assert_eq!(run.conclusion("second / deploy"), "success");
    assert_eq!(run.conclusion("second / verify"), "success");
}

#[test]
fn a_newer_waiting_invocation_replaces_an_older_waiting_one() {
    let run = run_with(
        "on: push
jobs:
  a:
    uses: ./.github/workflows/deploy.yml
    with: {env: prod}
  b:
    uses: ./.github/workflows/deploy.yml
    with: {env: prod}
  c:
    uses: ./.github/workflows/deploy.yml
    with: {env: prod}
",
        "deploy-${{ inputs.env }}",
    );
    assert_eq!(run.conclusion("a / deploy"), "success");
    assert_eq!(run.conclusion("b / deploy"), "cancelled");
    assert!(!run.ran("b / deploy"));
    assert_eq!(run.conclusion("c / verify"), "success");
}

#[test]
fn a_called_workflow_in_its_callers_group_is_a_deadlock() {
    let run = run_with(
        "on: push
concurrency: deploy-prod
jobs:
  call:
    uses: ./.github/workflows/deploy.yml
    with: {env: prod}
  other:
    runs-on: x
    steps: [run: echo]
",
        "deploy-${{ inputs.env }}",
    );
    assert_eq!(run.conclusion("call / deploy"), "cancelled");
    assert!(run
        .job("call / deploy")
        .message
        .as_deref()
        .is_some_and(|m| m.contains("deadlock")));
    assert_eq!(run.conclusion("other"), "success");
}

#[test]
fn cancelling_the_run_releases_an_invocation_waiting_for_its_group() {
    let run = Driver::new(|_| ok())
        .cancel_after(0)
        .run(spec_for(CALLERS, "deploy-${{ inputs.env }}"));
    assert!(!run.ran("second / deploy"));
    assert_ne!(run.conclusion("second / deploy"), "success");
}
