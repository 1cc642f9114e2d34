//! Replays the committed fuzz corpora through the fuzz targets' own code, so every input that
//! once found a problem (and every seed) keeps being checked on stable Rust in CI.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/common/expression.rs"]
mod expression;

#[path = "../../fuzz/common/workflow.rs"]
mod workflow;

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "fuzz corpus {} is empty", dir.display());
    files
}

#[test]
fn expression_corpus_replays_without_panicking() {
    for file in corpus_files("expression") {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let outcome = std::panic::catch_unwind(|| expression::run(&data));
        assert!(outcome.is_ok(), "fuzz case {} panicked", file.display());
    }
}

#[test]
fn workflow_corpus_replays_without_panicking() {
    for file in corpus_files("workflow") {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let outcome = std::panic::catch_unwind(|| workflow::run(&data));
        assert!(outcome.is_ok(), "fuzz case {} panicked", file.display());
    }
}
