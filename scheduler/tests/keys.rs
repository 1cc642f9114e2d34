//! Job-level keys evaluated per leg: runs-on, env, container, services, timeout, environment.

mod support;
use kiln_scheduler::{ContainerEval, EngineEvent};
use support::*;

#[test]
fn runs_on_env_and_container_are_evaluated_per_leg() {
    let run = run_ok(
        "on: push
env:
  SHARED: wf
  WF_ONLY: ${{ github.event_name }}
jobs:
  t:
    runs-on: [self-hosted, '${{ matrix.os }}']
    strategy: {matrix: {os: [linux, arm], tag: ['1.0']}}
    env:
      SHARED: job-${{ matrix.os }}
      TOKEN: ${{ secrets.TOKEN }}
      INDEX: ${{ strategy.job-index }}
    container:
      image: alpine:${{ matrix.tag }}
      env: {MODE: '${{ matrix.os }}'}
      ports: [8080]
      volumes: [/data:/data]
      options: --cpus 1
      credentials: {username: me, password: '${{ secrets.TOKEN }}'}
    services:
      db:
        image: postgres:${{ matrix.tag }}
        options: --health-cmd pg_isready
    steps: [run: echo]
",
    );
    let arm = run.dispatch("t (arm, 1.0)");
    assert_eq!(arm.runs_on, ["self-hosted", "arm"]);
    assert_eq!(
        arm.env,
        [
            ("SHARED".to_string(), "job-arm".to_string()),
            ("WF_ONLY".to_string(), "push".to_string()),
            ("TOKEN".to_string(), "s3cret".to_string()),
            ("INDEX".to_string(), "1".to_string()),
        ]
    );
    assert_eq!(
        arm.container,
        Some(ContainerEval {
            image: "alpine:1.0".to_string(),
            env: vec![("MODE".to_string(), "arm".to_string())],
            ports: vec!["8080".to_string()],
            volumes: vec!["/data:/data".to_string()],
            options: "--cpus 1".to_string(),
            credentials: Some(("me".to_string(), "s3cret".to_string())),
        })
    );
    assert_eq!(arm.services.len(), 1);
    assert_eq!(arm.services[0].0, "db");
    assert_eq!(arm.services[0].1.image, "postgres:1.0");
    assert_eq!(arm.services[0].1.options, "--health-cmd pg_isready");
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
        Some((
            "prod".to_string(),
            Some("https://prod.example.com".to_string())
        ))
    );
    let stage = run.dispatch("stage");
    assert_eq!(stage.environment, Some(("staging".to_string(), None)));
    assert_eq!(stage.timeout_minutes, 5.0);
}

#[test]
fn empty_container_image_means_no_container_and_empty_service_is_dropped() {
    let run = run_ok(
        "on: push
jobs:
  t:
    runs-on: x
    strategy:
      matrix:
        include:
          - {img: 'node:20', db: ''}
          - {img: '', db: 'redis'}
    container: ${{ matrix.img }}
    services:
      cache: {image: '${{ matrix.db }}'}
    steps: [run: echo]
",
    );
    let first = &run.dispatched[0];
    assert_eq!(
        first.container.as_ref().map(|c| c.image.as_str()),
        Some("node:20")
    );
    assert!(first.services.is_empty());
    let second = &run.dispatched[1];
    assert!(second.container.is_none());
    assert_eq!(second.services[0].1.image, "redis");
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
    env:
      A: ${{ fromJSON(matrix.cfg).a }}
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
        error.starts_with("Error evaluating 'jobs.<id>.env.A'"),
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
