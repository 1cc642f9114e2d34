//! Diagnostics: collected (not only the first), positioned, with did-you-mean hints.

use kiln_workflow::{parse_workflow, Diagnostic, Severity};

fn errors(content: &str) -> Vec<Diagnostic> {
    parse_workflow("ci.yml", content)
        .diagnostics
        .into_iter()
        .filter(Diagnostic::is_error)
        .collect()
}

#[test]
fn unknown_job_key_suggests_the_allowed_one() {
    let found = errors(
        "on: push\njobs:\n  build:\n    runs_on: ubuntu-latest\n    steps:\n      - run: echo\n",
    );
    let typo = found
        .iter()
        .find(|d| d.message == "Unexpected value 'runs_on'")
        .expect("typo reported");
    assert_eq!((typo.line, typo.col), (4, 5));
    assert_eq!(typo.hint.as_deref(), Some("did you mean `runs-on`?"));
    assert_eq!(
        typo.to_string(),
        "ci.yml:4:5: error: Unexpected value 'runs_on'\n  = help: did you mean `runs-on`?"
    );
}

#[test]
fn every_problem_in_a_file_is_reported() {
    let content = "\
on: push
nmae: typo
jobs:
  a:
    runs-on: ubuntu-latest
    timeout-minutes: soon
    steps:
      - run: echo ${{ secrets.x }}
        uses: actions/checkout@v4
      - id: '-bad'
        run: echo
  b:
    needs: [a, nowhere]
    runs-on: linux
    steps:
      - uses: not-a-ref
";
    let found = errors(content);
    let lines: Vec<(u32, &str)> = found.iter().map(|d| (d.line, d.message.as_str())).collect();
    let expect = [
        (2, "Unexpected value 'nmae'"),
        (6, "Unexpected value 'soon'"),
        (8, "Unexpected value 'run'"),
        (10, "The identifier '-bad' is invalid."),
        (13, "Job 'b' depends on unknown job 'nowhere'."),
        (
            16,
            "Expected format {org}/{repo}[/path]@ref. Actual 'not-a-ref'",
        ),
    ];
    for (line, text) in expect {
        assert!(
            lines.iter().any(|(l, m)| *l == line && m.starts_with(text)),
            "missing line {line}: {text}; got {lines:?}"
        );
    }
    assert!(found
        .iter()
        .all(|d| d.severity == Severity::Error && d.file == "ci.yml"));
}

#[test]
fn expression_contexts_are_checked_per_key() {
    let found = errors("on: push\njobs:\n  a:\n    runs-on: ${{ secrets.runner }}\n    steps:\n      - run: echo\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].line, found[0].col), (4, 14));
    assert!(
        found[0]
            .message
            .starts_with("Unrecognized named-value: 'secrets'"),
        "{}",
        found[0].message
    );
}

#[test]
fn job_needs_cycles_name_each_edge() {
    let content = "on: push\njobs:\n  start:\n    runs-on: x\n    steps: [{run: a}]\n  a:\n    needs: b\n    runs-on: x\n    steps: [{run: a}]\n  b:\n    needs: a\n    runs-on: x\n    steps: [{run: a}]\n";
    let found = errors(content);
    let cycles: Vec<&str> = found.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        cycles,
        [
            "Job 'a' depends on job 'b' which creates a cycle in the dependency graph.",
            "Job 'b' depends on job 'a' which creates a cycle in the dependency graph.",
        ]
    );
}

#[test]
fn yaml_problems_are_diagnostics() {
    let found = errors("on: push\njobs:\n  a: [unclosed\n");
    assert_eq!(found.len(), 1);
    assert!(
        found[0].line > 0,
        "a syntax error carries its position: {}",
        found[0]
    );
    let duplicate =
        errors("on: push\njobs:\n  a:\n    runs-on: x\n    runs-on: y\n    steps: [{run: a}]\n");
    assert_eq!(duplicate[0].message, "'runs-on' is already defined");
    assert_eq!((duplicate[0].line, duplicate[0].col), (5, 5));
}

#[test]
fn diagnostics_serialize_for_json_output() {
    let found = errors("on: push\n");
    let json = serde_json::to_value(&found[0]).expect("serializable");
    assert_eq!(json["message"], "Required property is missing: jobs");
    assert_eq!(json["severity"], "error");
    assert_eq!(json["line"], 1);
}

#[test]
fn background_step_references_are_checked() {
    let content = "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - id: server\n        run: serve\n        background: true\n      - wait: [server, nowhere]\n      - id: me\n        cancel: me\n      - wait-all: false\n";
    let found = errors(content);
    let messages: Vec<(u32, &str)> = found.iter().map(|d| (d.line, d.message.as_str())).collect();
    assert_eq!(
        messages,
        [
            (9, "Step references unknown step ID 'nowhere'"),
            (11, "Step 'me' cannot reference itself"),
            (12, "The value of 'wait-all' must be true or omitted"),
        ]
    );
}

#[test]
fn dispatch_inputs_and_crons_are_checked() {
    let content = "on:\n  schedule:\n    - cron: '61 * * * *'\n  workflow_dispatch:\n    inputs:\n      pick:\n        type: choice\n      flag:\n        type: boolean\n        default: maybe\n      text:\n        options: [a]\njobs:\n  a:\n    runs-on: x\n    steps: [{run: a}]\n";
    let found = errors(content);
    let messages: Vec<(u32, &str)> = found.iter().map(|d| (d.line, d.message.as_str())).collect();
    assert_eq!(
        messages,
        [
            (3, "Invalid cron expression. Expected format: '* * * * *' (minute hour day month weekday)"),
            (7, "Missing 'options' for choice input"),
            (10, "Unexpected value 'maybe'"),
            (12, "Input type is not 'choice', but 'options' is defined"),
        ]
    );
}

#[test]
fn filters_under_an_event_that_takes_none_are_a_warning_and_the_event_still_triggers() {
    let parsed = kiln_workflow::parse_workflow(
        "w.yml",
        "on:\n  create:\n    tags: ['v*']\n    branches: [main]\n  push:\n    tags: ['v*']\njobs:\n  a: {runs-on: x, steps: [run: echo]}\n",
    );
    assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
    let warnings: Vec<String> = parsed.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        warnings,
        [
            "w.yml:3:5: warning: The event 'create' takes no filters: 'tags' is ignored and the workflow runs for every create event",
            "w.yml:4:5: warning: The event 'create' takes no filters: 'branches' is ignored and the workflow runs for every create event",
        ]
    );
    let workflow = parsed.value.expect("workflow");
    assert!(workflow.on.iter().any(|t| t.event.value == "create"));
    // An event that takes filters still rejects ones it does not know.
    let found = errors(
        "on:\n  push:\n    types: [created]\njobs:\n  a: {runs-on: x, steps: [run: echo]}\n",
    );
    assert!(
        found
            .iter()
            .any(|d| d.message == "Unexpected value 'types'"),
        "{found:?}"
    );
}
