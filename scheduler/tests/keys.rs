//! Job-level keys evaluated per leg: runs-on, env, container, services, timeout, environment.

mod support;
use kiln_scheduler::{EngineEvent, EnvironmentEval};
use support::*;

#[test]
fn runs_on_is_evaluated_per_leg_and_runner_keys_are_left_to_the_runner() {
    let run = run_ok(
        "on: push
env:
  WF_ONLY: ${{ github.event_name }}
jobs:
  t:
    runs-on: [self-hosted, '${{ matrix.os }}']
    strategy: {matrix: {os: [linux, arm], tag: ['1.0']}}
    env:
      SHARED: job-${{ matrix.os }}-${{ github.workspace }}
    container:
      image: alpine:${{ matrix.tag }}
      volumes: ['${{ github.workspace }}/cache:/cache']
    services:
      db:
        image: postgres:${{ matrix.tag }}
    steps: [run: echo]
",
    );
    let arm = run.dispatch("t (arm, 1.0)");
    assert_eq!(arm.runs_on, ["self-hosted", "arm"]);
    // env, container and services read `github.workspace`, which only the runner knows: the
    // dispatch carries what they are evaluated with, not their values.
    let contexts = kiln_workflow::Value::object(arm.contexts.clone()).to_json();
    assert_eq!(contexts["matrix"]["os"], "arm");
    assert_eq!(contexts["matrix"]["tag"], "1.0");
    assert_eq!(contexts["secrets"]["TOKEN"], "s3cret");
    assert_eq!(arm.timeout_minutes, 360.0);
    assert!(!arm.continue_on_error);
    assert!(arm.environment.is_none());
}

#[test]
fn contexts_for_steps_are_complete() {
    let mut s = spec(
        "on: workflow_dispatch
jobs:
  a: {runs-on: x, steps: [run: echo]}
",
    );
    s.inputs = object(serde_json::json!({"level": "3"}));
    s.vars = object(serde_json::json!({"REGION": "eu"}));
    let run = Driver::new(|_| ok()).run(s);
    let contexts = kiln_workflow::Value::object(run.dispatch("a").contexts.clone()).to_json();
    assert_eq!(contexts["github"]["job"], "a");
    assert_eq!(contexts["github"]["sha"], "abc123");
    assert_eq!(contexts["inputs"]["level"], "3");
    assert_eq!(contexts["vars"]["REGION"], "eu");
    assert_eq!(contexts["secrets"]["TOKEN"], "s3cret");
    assert_eq!(contexts["needs"], serde_json::json!({}));
    assert_eq!(contexts["matrix"], serde_json::Value::Null);
    assert_eq!(contexts["strategy"]["job-total"], 1);
}

#[test]
fn timeout_environment_and_continue_on_error_from_expressions() {
    let run = Driver::new(only("plan", ok().out("minutes", "7.5").out("env", "prod"))).run(spec(
        "on: push
jobs:
  plan: {runs-on: x, steps: [run: echo]}
  deploy:
    needs: plan
    runs-on: x
    timeout-minutes: ${{ fromJSON(needs.plan.outputs.minutes) }}
    continue-on-error: ${{ needs.plan.outputs.env != 'prod' }}
    environment:
      name: ${{ needs.plan.outputs.env }}
      url: https://${{ needs.plan.outputs.env }}.example.com
      deployment: ${{ needs.plan.outputs.env == 'prod' }}
    steps: [run: echo]
  stage:
    needs: plan
    runs-on: x
    environment: staging
    timeout-minutes: 5
    steps: [run: echo]
",
    ));
    let deploy = run.dispatch("deploy");
    assert_eq!(deploy.timeout_minutes, 7.5);
    assert!(!deploy.continue_on_error);
    assert_eq!(
        deploy.environment,
        Some(EnvironmentEval {
            name: "prod".to_string(),
            url: Some("https://prod.example.com".to_string()),
            deployment: true,
        })
    );
    let stage = run.dispatch("stage");
    assert_eq!(
        stage.environment,
        Some(EnvironmentEval {
            name: "staging".to_string(),
            url: None,
            deployment: true,
        })
    );
    assert_eq!(stage.timeout_minutes, 5.0);
}

#[test]
fn environment_deployment_may_be_an_expression() {
    let run = run_ok(
        "on: push
jobs:
  t:
    runs-on: x
    strategy: {matrix: {record: [true, false]}}
    environment:
      name: preview
      deployment: ${{ matrix.record }}
    steps: [run: echo]
",
    );
    let deployments: Vec<bool> = run
        .dispatched
        .iter()
        .map(|d| d.environment.as_ref().expect("environment").deployment)
        .collect();
    assert_eq!(deployments, [true, false]);
}

#[test]
fn runs_on_from_an_expression_array_or_group_object() {
    let run = run_ok(
        "on: push
jobs:
  a: {runs-on: \"${{ fromJSON('[\\\"self-hosted\\\", \\\"gpu\\\"]') }}\", steps: [run: echo]}
  b: {runs-on: \"${{ fromJSON('{\\\"group\\\": \\\"g\\\", \\\"labels\\\": [\\\"big\\\"]}') }}\", steps: [run: echo]}
  c: {runs-on: {group: mine, labels: [linux, x64]}, steps: [run: echo]}
",
    );
    assert_eq!(run.dispatch("a").runs_on, ["self-hosted", "gpu"]);
    assert_eq!(run.dispatch("b").runs_on, ["big"]);
    assert_eq!(run.dispatch("c").runs_on, ["linux", "x64"]);
}

#[test]
fn an_expression_error_in_a_key_fails_only_that_leg() {
    let run = run_ok(
        "on: push
jobs:
  t:
    runs-on: x
    strategy: {fail-fast: false, matrix: {cfg: ['{\"a\":1}', 'not json']}}
    timeout-minutes: ${{ fromJSON(matrix.cfg).a }}
    steps: [run: echo]
  other: {runs-on: x, steps: [run: echo]}
",
    );
    assert_eq!(run.names(), ["t ({\"a\":1})", "other"]);
    assert_eq!(
        run.report_lines(),
        [
            "t ({\"a\":1})=success",
            "t (not json)=failure",
            "other=success"
        ]
    );
    let error = run.job("t (not json)").message.clone().expect("a message");
    assert!(
        error.starts_with("Error evaluating 'timeout-minutes'"),
        "{error}"
    );
    assert!(run.events.iter().any(
        |e| matches!(e, EngineEvent::JobFailedToStart { name, .. } if name == "t (not json)")
    ));
}

#[test]
fn bad_timeout_is_reported_as_an_error() {
    let mut s = spec(
        "on: push
jobs:
  a:
    runs-on: x
    timeout-minutes: ${{ vars.T }}
    steps: [run: echo]
",
    );
    s.vars = object(serde_json::json!({"T": "soon"}));
    let run = Driver::new(|_| ok()).run(s);
    assert!(run.dispatched.is_empty());
    assert_eq!(run.report_lines(), ["a=failure"]);
    assert!(run
        .job("a")
        .message
        .as_deref()
        .is_some_and(|m| m.contains("timeout-minutes")));
}

#[test]
fn mappings_with_keys_known_only_once_evaluated() {
    let run = run_ok(
        "on: push
jobs:
  t:
    runs-on:
      group: mine
      ${{ insert }}: {labels: [linux, '${{ github.event_name }}']}
    environment:
      ${{ insert }}: {name: review, deployment: false}
    concurrency: '${{ fromJSON(''{\"group\": \"only-one\", \"cancel-in-progress\": true}'') }}'
    steps: [run: echo]
",
    );
    let t = run.dispatch("t");
    assert_eq!(t.runs_on, ["linux", "push"]);
    assert_eq!(
        t.environment,
        Some(EnvironmentEval {
            name: "review".to_string(),
            url: None,
            deployment: false,
        })
    );
}
