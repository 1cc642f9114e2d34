//! The typed model of a realistic workflow, with positions.

use kiln_workflow::model::{
    CallSecrets, Concurrency, JobKind, Matrix, MaybeExpr, Permissions, RunsOn, StepAction, Workflow,
};
use kiln_workflow::yaml::Pos;
use kiln_workflow::{parse_workflow, parse_workflow_with, ParseOptions, Value};

const CI: &str = r#"name: CI
run-name: Build ${{ github.ref }}
on:
  push:
    branches: [main]
    paths-ignore: ['docs/**']
  pull_request:
    types: [opened, synchronize]
  schedule:
    - cron: '0 3 * * *'
  workflow_dispatch:
    inputs:
      level:
        type: choice
        options: [low, high]
        default: low
permissions:
  contents: read
concurrency:
  group: ci-${{ github.ref }}
  cancel-in-progress: true
env:
  GLOBAL: 1
jobs:
  test:
    strategy:
      fail-fast: false
      matrix:
        os: [ubuntu-latest, windows-latest]
        node: [18, 20]
        include:
          - os: ubuntu-latest
            experimental: true
    runs-on: ${{ matrix.os }}
    container:
      image: node:20
      env:
        CI: true
    services:
      redis:
        image: redis:7
        ports: ['6379:6379']
    steps:
      - uses: actions/checkout@v4
      - name: Install
        run: npm ci
        shell: bash
      - run: npm test
        if: matrix.node == 20
        env:
          NODE: ${{ matrix.node }}
      - uses: actions/setup-node@v4
        with:
          node-version: ${{ matrix.node }}
          cache: npm
          check-latest: true
  deploy:
    needs: test
    uses: ./.github/workflows/deploy.yml
    with:
      environment: production
    secrets: inherit
"#;

fn parse() -> Workflow {
    let result = parse_workflow("ci.yml", CI);
    assert!(!result.has_errors(), "{:?}", result.diagnostics);
    result.value.expect("a workflow")
}

#[test]
fn triggers_and_workflow_keys() {
    let workflow = parse();
    assert_eq!(workflow.name.as_ref().map(|n| n.value.as_str()), Some("CI"));
    assert!(workflow
        .run_name
        .as_ref()
        .is_some_and(|t| t.has_expressions()));
    let events: Vec<&str> = workflow.on.iter().map(|t| t.event.value.as_str()).collect();
    assert_eq!(
        events,
        ["push", "pull_request", "schedule", "workflow_dispatch"]
    );
    assert_eq!(
        workflow.on[0]
            .branches
            .as_ref()
            .map(|b| b[0].value.as_str()),
        Some("main")
    );
    assert_eq!(workflow.on[1].types.len(), 2);
    assert_eq!(workflow.on[2].crons[0].value, "0 3 * * *");
    assert_eq!(workflow.on[3].inputs[0].options, ["low", "high"]);
    assert!(
        matches!(&workflow.permissions, Some(Permissions::Scopes(scopes, _)) if scopes.len() == 1)
    );
    assert!(matches!(
        &workflow.concurrency,
        Some(Concurrency::Mapping { cancel_in_progress: Some(MaybeExpr::Literal(b)), .. }) if b.value
    ));
    let (_, value) = workflow.env.pairs().next().expect("an env pair");
    assert_eq!(value.raw, "1");
}

#[test]
fn jobs_keep_matrix_container_services_and_positions() {
    let workflow = parse();
    let test = workflow.job("test").expect("job test");
    assert_eq!(test.id.pos, Pos { line: 25, col: 3 });
    assert_eq!(test.display_name().raw, "test");
    assert_eq!(test.condition.expression, "success()");
    let strategy = test.strategy.as_ref().expect("strategy");
    assert!(matches!(strategy.fail_fast, Some(MaybeExpr::Literal(ref b)) if !b.value));
    let Some(Matrix::Mapping(tree)) = &strategy.matrix else {
        panic!("matrix mapping")
    };
    let Some(Value::Object(matrix)) = tree.literal_value() else {
        panic!("object")
    };
    let keys: Vec<&String> = matrix.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["os", "node", "include"]);
    assert!(
        matches!(matrix.get("node"), Some(Value::Array(items)) if matches!(items[0], Value::Number(n) if n == 18.0))
    );
    assert!(
        matches!(&test.runs_on, Some(RunsOn::Expr(t)) if t.single_expression() == Some("matrix.os"))
    );
    let container = test.container.as_ref().expect("container");
    assert_eq!(container.image.raw, "node:20");
    let (name, redis) = test.services.pairs().next().expect("a service");
    assert_eq!(name.value, "redis");
    assert_eq!(redis.ports[0].raw, "6379:6379");
}

#[test]
fn steps_have_generated_ids_conditions_and_typed_inputs() {
    let workflow = parse();
    let JobKind::Steps(steps) = &workflow.job("test").expect("job").kind else {
        panic!("steps job")
    };
    let ids: Vec<&str> = steps.iter().map(|s| s.effective_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "__actions_checkout",
            "__run",
            "__run_2",
            "__actions_setup-node"
        ]
    );
    assert_eq!(
        steps[2].condition.expression,
        "success() && (matrix.node == 20)"
    );
    assert_eq!(steps[2].condition.pos, Pos { line: 49, col: 13 });
    let StepAction::Uses { with, .. } = &steps[3].action else {
        panic!("uses step")
    };
    let with: Vec<_> = with.pairs().collect();
    assert!(with[0].1.template.is_some());
    assert!(matches!(with[1].1.value, Value::String(ref s) if &**s == "npm"));
    assert!(matches!(with[2].1.value, Value::Bool(true)));
    let StepAction::Run { shell, .. } = &steps[1].action else {
        panic!("run step")
    };
    assert_eq!(shell.as_ref().map(|s| s.raw.as_str()), Some("bash"));
}

#[test]
fn reusable_job_with_inherited_secrets() {
    let workflow = parse();
    let deploy = workflow.job("deploy").expect("job deploy");
    assert_eq!(deploy.needs[0].value, "test");
    let JobKind::Call(call) = &deploy.kind else {
        panic!("call job")
    };
    assert_eq!(call.uses.value, "./.github/workflows/deploy.yml");
    assert!(matches!(call.secrets, CallSecrets::Inherit(_)));
    assert!(call.callee.is_none(), "no resolver, no callee");
}

#[test]
fn resolver_loads_and_checks_callees() {
    let callee = "on:\n  workflow_call:\n    inputs:\n      environment:\n        type: string\n        required: true\n    secrets:\n      token:\n        required: true\njobs:\n  go:\n    runs-on: x\n    steps: [{run: a}]\n";
    let resolver = |uses: &str| {
        (uses == "./.github/workflows/deploy.yml").then(|| (uses.to_string(), callee.to_string()))
    };
    let options = ParseOptions {
        resolver: Some(&resolver),
        ..ParseOptions::default()
    };
    let result = parse_workflow_with("ci.yml", CI, &options);
    assert!(!result.has_errors(), "{:?}", result.diagnostics);
    let workflow = result.value.expect("workflow");
    let JobKind::Call(call) = &workflow.job("deploy").expect("job").kind else {
        panic!("call job")
    };
    assert_eq!(call.callee.as_ref().map(|c| c.jobs.len()), Some(1));

    let missing = CI.replace("    secrets: inherit\n", "");
    let result = parse_workflow_with("ci.yml", &missing, &options);
    let messages: Vec<&str> = result.errors().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        ["Secret token is required, but not provided while calling."]
    );
}

#[test]
fn non_string_scalars_become_strings_as_github_formats_them() {
    let content = "on: push\nenv:\n  none: ~\n  yes: true\n  hex: 0x10\n  big: !!float 1587106672383762434\n  inf: .inf\n  on: on\njobs:\n  a:\n    runs-on: x\n    steps: [{run: a}]\n";
    let workflow = parse_workflow("env.yml", content).value.expect("workflow");
    let env: Vec<(&str, &str)> = workflow
        .env
        .pairs()
        .map(|(k, v)| (k.value.as_str(), v.raw.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("none", ""),
            ("yes", "true"),
            ("hex", "16"),
            ("big", "1.58710667238376E+18"),
            ("inf", "Infinity"),
            ("on", "on")
        ]
    );
}

#[test]
fn generated_ids_follow_githubs_rules() {
    let content = "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - uses: org/repo/sub/dir@v1\n      - uses: ./local\n      - uses: docker://ghcr.io/o/i:1\n      - uses: org/repo/sub/other@v2\n      - id: __run_x_ok\n        run: a\n";
    let result = parse_workflow("ids.yml", content);
    let JobKind::Steps(steps) = &result.value.expect("workflow").jobs[0].kind else {
        panic!("steps")
    };
    let ids: Vec<&str> = steps.iter().map(|s| s.effective_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "__org_repo",
            "__self",
            "__ghcr_io_o_i_1",
            "__org_repo_2",
            "__run_x_ok"
        ]
    );
    assert_eq!(
        result.diagnostics[0].message,
        "The identifier '__run_x_ok' is invalid. IDs starting with '__' are reserved."
    );
}
