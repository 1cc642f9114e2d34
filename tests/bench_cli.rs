//! `kiln bench cache` end to end: the JSON document's shape (`totals`, `steps`, `commits`),
//! the table, flag errors, and this repository's own CI workflow replayed with `-W`.

mod bench_support;
mod run_support;

use bench_support::{lockfile_history, OUTCOMES};
use run_support::kiln;
use serde_json::Value;
use std::path::Path;

fn bench_json(repo: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["bench", "cache", "--format", "json"];
    args.extend_from_slice(extra);
    let (status, out, err) = kiln(repo, &args);
    assert_eq!(status, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn json_has_totals_steps_and_each_commits_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = lockfile_history(dir.path());
    let report = bench_json(&repo, &[]);
    let totals = &report["totals"];
    let counts = |v: &Value| {
        ["lookups", "exact_hits", "restore_key_hits", "misses"].map(|f| v[f].as_u64().unwrap())
    };
    assert_eq!(counts(totals), [5, 2, 2, 1]);
    assert!((totals["hit_rate"].as_f64().unwrap() - 0.8).abs() < 1e-9);
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1);
    let step = &steps[0];
    assert_eq!(
        (&step["job"], &step["step"], &step["key_family"]),
        (
            &"build".into(),
            &"cargo cache".into(),
            &"Linux-cargo-*".into()
        )
    );
    assert_eq!(counts(step), [5, 2, 2, 1]);
    assert!((step["hit_rate"].as_f64().unwrap() - 0.8).abs() < 1e-9);
    // The key changed at the third and fifth commits, because of Cargo.lock.
    let changes = step["key_changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["causes"][0], "Cargo.lock (changed)");
    let outcomes: Vec<&str> = report["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["steps"][0]["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, OUTCOMES);
    assert_eq!(report["bytes_are_estimates"], true);
    assert_eq!(step["content"], "modelled");

    // The table says the same.
    let (status, table, err) = kiln(&repo, &["bench", "cache", "--commits", "3"]);
    assert_eq!(status, 0, "{err}");
    assert!(table.starts_with("3 commits of repo replayed"), "{table}");
    assert!(
        table.contains("build / cargo cache  Linux-cargo-*"),
        "{table}"
    );
    assert!(
        table.contains("estimates from the content model"),
        "{table}"
    );
}

#[test]
fn bad_flags_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let repo = lockfile_history(dir.path());
    let (status, _, err) = kiln(&repo, &["bench", "cache", "--content-model", "churn=2"]);
    assert_eq!(status, 2, "{err}");
    assert!(err.contains("churn must be a number from 0 to 1"), "{err}");
    let (status, _, err) = kiln(&repo, &["bench", "cache", "--compare-step", "x"]);
    assert_ne!(status, 0);
    assert!(err.contains("--compare-key"), "{err}");
    let (status, _, err) = kiln(dir.path(), &["bench", "cache", "--repo", "nowhere"]);
    assert_ne!(status, 0);
    assert!(err.contains("nowhere"), "{err}");
}

#[test]
fn this_repositorys_ci_workflow_caches_on_its_lock_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !root.join(".git").exists() {
        eprintln!("SKIPPED: {} is not a git checkout", root.display());
        return;
    }
    let report = bench_json(root, &["-W", ".github/workflows/ci.yml", "--commits", "1"]);
    let step = &report["steps"][0];
    assert_eq!(
        (&step["job"], &step["step"], &step["key_family"]),
        (
            &"test".into(),
            &"cargo cache".into(),
            &"Linux-cargo-*".into()
        )
    );
    assert_eq!(step["lookups"], 1);
    assert_eq!(report["commits"][0]["steps"][0]["error"], Value::Null);
}
