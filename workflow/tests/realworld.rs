//! Real workflows from public repositories (`tests/realworld/`, sources in SOURCES.md) must
//! parse, validate and plan exactly as GitHub takes them: these files run on GitHub today, so
//! any diagnostic is a false positive, except for the few GitHub itself rejects, listed in
//! `EXPECTED` with the message GitHub gives. A failure lists every unexpected diagnostic as
//! `file:line:col`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_workflow::plan::{plan, PlanContext};
use kiln_workflow::{parse_workflow_with, ParseOptions};

/// Files GitHub rejects, with the message of the error GitHub reports.
const EXPECTED: &[(&str, &str)] = &[
    // The schema gives `merge_group` only `types`, `branches` and `branches-ignore`; the path
    // filter makes the file invalid for that event (vulkano-rs/vulkano#2731 removed the same
    // filter for this reason).
    (
        "rust-itertools__itertools__ci.yml",
        "Unexpected value 'paths-ignore'",
    ),
];

/// Fewer files than this means the corpus was lost, not that everything passed.
const MIN_FILES: usize = 150;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/realworld")
}

/// Every corpus file by name, read as text.
fn corpus() -> BTreeMap<String, String> {
    let dir = corpus_dir();
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        );
        if !is_yaml {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 file name")
            .to_string();
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        files.insert(name, text);
    }
    files
}

/// `owner__repo__` of a corpus file name: the repository it came from.
fn repository_prefix(name: &str) -> &str {
    name.rfind("__").map_or("", |at| &name[..at + 2])
}

/// Every diagnostic for one file, as `file:line:col: severity: message`, plus each event's
/// planning error.
fn findings(name: &str, text: &str, corpus: &BTreeMap<String, String>) -> Vec<String> {
    let prefix = repository_prefix(name);
    // A local `./.github/workflows/x.yml` is the same repository's file in the corpus.
    let resolver = |reference: &str| {
        let file = reference.strip_prefix("./.github/workflows/")?;
        let content = corpus.get(&format!("{prefix}{file}"))?;
        Some((format!(".github/workflows/{file}"), content.clone()))
    };
    let options = ParseOptions {
        resolver: Some(&resolver),
        ..ParseOptions::default()
    };
    let result = parse_workflow_with(name, text, &options);
    let mut found: Vec<String> = result.diagnostics.iter().map(ToString::to_string).collect();
    if let Some(workflow) = &result.value {
        let mut events: Vec<&str> = workflow.on.iter().map(|t| t.event.value.as_str()).collect();
        events.dedup();
        for event in events {
            if let Err(error) = plan(workflow, &PlanContext::before_run(workflow, event, name)) {
                found.push(format!("{name}: planning '{event}': {error}"));
            }
        }
    } else if found.is_empty() {
        found.push(format!("{name}: no workflow and no diagnostic"));
    }
    found
}

#[test]
fn real_workflows_validate_and_plan_without_false_diagnostics() {
    let corpus = corpus();
    assert!(
        corpus.len() >= MIN_FILES,
        "only {} workflow files in {}",
        corpus.len(),
        corpus_dir().display()
    );
    let mut unexpected = Vec::new();
    let mut missing = Vec::new();
    for (name, text) in &corpus {
        let expected: Vec<&str> = EXPECTED
            .iter()
            .filter(|(file, _)| file == name)
            .map(|(_, message)| *message)
            .collect();
        let found = findings(name, text, &corpus);
        for message in &expected {
            if !found.iter().any(|f| f.contains(message)) {
                missing.push(format!("{name}: expected `{message}`"));
            }
        }
        unexpected.extend(
            found
                .into_iter()
                .filter(|f| !expected.iter().any(|message| f.contains(message))),
        );
    }
    assert!(
        unexpected.is_empty() && missing.is_empty(),
        "{} unexpected diagnostic(s):\n{}\n{} expected error(s) not reported:\n{}",
        unexpected.len(),
        unexpected.join("\n"),
        missing.len(),
        missing.join("\n")
    );
}

#[test]
fn every_expected_error_names_a_corpus_file() {
    let corpus = corpus();
    for (file, _) in EXPECTED {
        assert!(corpus.contains_key(*file), "{file} is not in the corpus");
    }
}

#[test]
fn every_corpus_file_is_listed_in_sources() {
    let sources = std::fs::read_to_string(corpus_dir().join("SOURCES.md")).expect("SOURCES.md");
    let unlisted: Vec<String> = corpus()
        .into_keys()
        .filter(|name| !sources.contains(&format!("| {name} |")))
        .collect();
    assert!(unlisted.is_empty(), "not in SOURCES.md: {unlisted:?}");
}
