//! `uses: $/path`: an action or reusable workflow of the repository of the file that holds
//! the reference, at that file's commit.

use std::cell::RefCell;

use kiln_workflow::model::{JobKind, StepAction};
use kiln_workflow::uses::RepositoryRef;
use kiln_workflow::{parse_workflow, parse_workflow_with, ParseOptions};

const CALLEE: &str = "on:\n  workflow_call:\njobs:\n  inner:\n    runs-on: x\n    steps:\n      - uses: $/actions/lint\n";

#[test]
fn steps_may_use_the_same_repository_and_get_githubs_generated_id() {
    let parsed = parse_workflow(
        "w.yml",
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - uses: $/.github/actions/hello\n      - uses: $//tools/greet\n",
    );
    assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
    let workflow = parsed.value.expect("workflow");
    let JobKind::Steps(steps) = &workflow.jobs[0].kind else {
        panic!("steps")
    };
    let ids: Vec<&str> = steps.iter().map(|s| s.effective_id.as_str()).collect();
    assert_eq!(ids, ["__selfRepository", "__selfRepository_2"]);
    assert!(
        matches!(&steps[0].action, StepAction::Uses { uses, .. } if uses.value == "$/.github/actions/hello")
    );
    // Inherently pinned: no warning about a tag.
    assert!(kiln_workflow::unpinned_uses(&workflow, "w.yml").is_empty());
}

#[test]
fn malformed_self_references_are_errors() {
    for (uses, message) in [
        ("$/", "Expected format $/{path}. Actual '$/'"),
        (
            "$/act@v1",
            "A version cannot be specified for self-references",
        ),
        ("$/../outside", "must stay inside the repository"),
    ] {
        let yaml =
            format!("on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - uses: {uses}\n");
        let parsed = parse_workflow("w.yml", &yaml);
        assert!(
            parsed.errors().any(|d| d.message.contains(message)),
            "{uses}: {:?}",
            parsed.diagnostics
        );
    }
}

#[test]
fn reusable_workflows_are_loaded_from_the_same_repository_and_nested_ones_from_the_callees() {
    let asked = RefCell::new(Vec::new());
    let resolver = |uses: &str| {
        asked.borrow_mut().push(uses.to_string());
        let content = match uses {
            "$/.github/workflows/local.yml" => {
                "on:\n  workflow_call:\njobs:\n  mid:\n    uses: octo/lib/.github/workflows/remote.yml@v1\n"
            }
            "octo/lib/.github/workflows/remote.yml@v1" => {
                "on:\n  workflow_call:\njobs:\n  deep:\n    uses: $/.github/workflows/sibling.yml\n"
            }
            "octo/lib/.github/workflows/sibling.yml@v1" => CALLEE,
            _ => return None,
        };
        Some((uses.to_string(), content.to_string()))
    };
    let options = ParseOptions {
        resolver: Some(&resolver),
        ..ParseOptions::default()
    };
    let parsed = parse_workflow_with(
        "w.yml",
        "on: push\njobs:\n  call:\n    uses: $/.github/workflows/local.yml\n",
        &options,
    );
    assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
    assert_eq!(
        *asked.borrow(),
        [
            "$/.github/workflows/local.yml",
            "octo/lib/.github/workflows/remote.yml@v1",
            "octo/lib/.github/workflows/sibling.yml@v1"
        ]
    );
    let workflow = parsed.value.expect("workflow");
    let callee = |job: &kiln_workflow::model::Job| match &job.kind {
        JobKind::Call(call) => call.callee.clone().expect("loaded"),
        JobKind::Steps(_) => panic!("a call"),
    };
    let local = callee(&workflow.jobs[0]);
    assert_eq!(local.origin, None, "the run's own repository");
    let remote = callee(&local.jobs[0]);
    let octo = Some(RepositoryRef {
        repository: "octo/lib".into(),
        git_ref: "v1".into(),
    });
    assert_eq!(remote.origin, octo);
    // The steps of the innermost callee resolve `$/` against octo/lib@v1 at run time.
    assert_eq!(callee(&remote.jobs[0]).origin, octo);
}

#[test]
fn a_missing_self_repository_workflow_is_an_error() {
    let resolver = |_: &str| None;
    let options = ParseOptions {
        resolver: Some(&resolver),
        ..ParseOptions::default()
    };
    let parsed = parse_workflow_with(
        "w.yml",
        "on: push\njobs:\n  call:\n    uses: $/.github/workflows/gone.yml\n",
        &options,
    );
    assert!(
        parsed
            .errors()
            .any(|d| d.message == "Unable to find reusable workflow '$/.github/workflows/gone.yml'"),
        "{:?}",
        parsed.diagnostics
    );
}
