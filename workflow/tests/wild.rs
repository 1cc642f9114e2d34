//! Workflows shaped like real projects' must parse, validate and plan exactly as GitHub takes
//! them. `tests/wild/` is our own corpus, written for this test to exercise what public
//! workflows use (anchors and aliases, flow collections over several lines, CRLF without a
//! final newline, emoji, large `include` matrices, matrices from `fromJSON` and from other
//! jobs' outputs, reusable workflows called locally and remotely, every input type, services,
//! containers, the common publishing jobs...). Any diagnostic is a false positive, except for
//! the files GitHub itself rejects, listed in `EXPECTED` with the message GitHub gives.
//!
//! Set `KILN_WORKFLOW_CORPUS=DIR` to check a folder of other workflows too, for instance real
//! files collected locally (which must not be committed: they are third-party text):
//!
//! ```text
//! KILN_WORKFLOW_CORPUS=/path/to/corpus cargo test -p kiln-workflow --test wild
//! ```
//!
//! Files in that folder named `owner__repo__file.yml` resolve `./.github/workflows/x.yml` to
//! `owner__repo__x.yml` beside them. A failure lists every unexpected diagnostic as
//! `file:line:col`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_workflow::plan::{plan, PlanContext};
use kiln_workflow::{parse_workflow_with, ParseOptions};

/// Files GitHub rejects, with the message of the error GitHub reports. Entries for our own
/// corpus must name a file in it; the others apply to `KILN_WORKFLOW_CORPUS` when it holds
/// a file of that name.
const EXPECTED: &[(&str, &str)] = &[
    // The schema gives `merge_group` only `types`, `branches` and `branches-ignore`.
    (
        "expected-merge-group-paths.yml",
        "Unexpected value 'paths-ignore'",
    ),
    // GitHub reads anchors and aliases but not merge keys: `<<` stays a key.
    ("expected-merge-key.yml", "Unexpected value '<<'"),
    // A real workflow with the same `merge_group` path filter (GitHub rejects it too).
    (
        "rust-itertools__itertools__ci.yml",
        "Unexpected value 'paths-ignore'",
    ),
];

/// Fewer of our own files than this means the corpus was lost, not that everything passed.
const MIN_OWN_FILES: usize = 45;

/// The environment variable naming an extra folder of workflows to check.
const EXTRA_CORPUS: &str = "KILN_WORKFLOW_CORPUS";

fn own_corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wild")
}

/// Every `*.yml`/`*.yaml` file of a folder by name, read as text.
fn corpus(dir: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
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

/// `owner__repo__` of a collected file's name (the repository it came from), else empty.
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

/// Checks every file of a corpus: unexpected diagnostics and expected errors not reported.
fn check(corpus: &BTreeMap<String, String>) -> (Vec<String>, Vec<String>) {
    let mut unexpected = Vec::new();
    let mut missing = Vec::new();
    for (name, text) in corpus {
        let expected: Vec<&str> = EXPECTED
            .iter()
            .filter(|(file, _)| file == name)
            .map(|(_, message)| *message)
            .collect();
        let found = findings(name, text, corpus);
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
    (unexpected, missing)
}

fn assert_clean(dir: &Path, corpus: &BTreeMap<String, String>) {
    let (unexpected, missing) = check(corpus);
    assert!(
        unexpected.is_empty() && missing.is_empty(),
        "{}: {} unexpected diagnostic(s):\n{}\n{} expected error(s) not reported:\n{}",
        dir.display(),
        unexpected.len(),
        unexpected.join("\n"),
        missing.len(),
        missing.join("\n")
    );
}

#[test]
fn wild_workflows_validate_and_plan_without_false_diagnostics() {
    let dir = own_corpus_dir();
    let corpus = corpus(&dir);
    assert!(
        corpus.len() >= MIN_OWN_FILES,
        "only {} workflow files in {}",
        corpus.len(),
        dir.display()
    );
    assert_clean(&dir, &corpus);
}

#[test]
fn workflows_of_the_extra_corpus_validate_and_plan_without_false_diagnostics() {
    let Some(dir) = std::env::var_os(EXTRA_CORPUS) else {
        eprintln!("{EXTRA_CORPUS} is not set: only tests/wild/ is checked");
        return;
    };
    let dir = PathBuf::from(dir);
    let corpus = corpus(&dir);
    assert!(!corpus.is_empty(), "no workflow files in {}", dir.display());
    assert_clean(&dir, &corpus);
}

#[test]
fn every_expected_error_of_our_corpus_names_one_of_its_files() {
    let corpus = corpus(&own_corpus_dir());
    for (file, _) in EXPECTED {
        let collected = !repository_prefix(file).is_empty();
        assert!(
            collected || corpus.contains_key(*file),
            "{file} is not in tests/wild/"
        );
    }
}

#[test]
fn crlf_without_final_newline_is_kept_byte_exact() {
    // The folder's .gitattributes keeps git from normalising line endings; without it this
    // file would silently lose what it is there to test.
    let text = std::fs::read(own_corpus_dir().join("crlf-no-final-newline.yml")).expect("read");
    assert!(
        text.windows(2).any(|w| w == b"\r\n"),
        "CRLF line endings lost"
    );
    assert!(!text.ends_with(b"\n"), "the file gained a final newline");
}
