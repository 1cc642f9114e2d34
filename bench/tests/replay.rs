//! The replay against hand-computed outcomes: a history that changes a lockfile at known
//! commits, on the default branch alone and with a merged pull request and another branch.

mod support;

use kiln_bench::content::{ContentModel, Speeds};
use kiln_bench::history::Selection;
use kiln_bench::report::BenchReport;
use kiln_bench::{bench_cache, BenchOptions};
use support::{TestRepo, CARGO_WORKFLOW};

fn options(repo: &TestRepo) -> BenchOptions {
    BenchOptions {
        repo: repo.path.clone(),
        workflow: None,
        selection: Selection::All,
        branches: false,
        default_branch: None,
        // 8 chunks of 1 MiB, a quarter changed per save: small numbers to check by hand.
        content: ContentModel::parse("size=8MiB,churn=0.25,ratio=0.5").unwrap(),
        speeds: Speeds::default(),
        compare_key: None,
        compare_step: None,
        scratch: None,
    }
}

fn outcomes(report: &BenchReport) -> Vec<(String, String)> {
    report
        .commits
        .iter()
        .map(|c| {
            assert_eq!(c.steps.len(), 1, "one cache step per commit: {c:?}");
            (c.subject.clone(), c.steps[0].outcome.clone())
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

const MIB: u64 = 1 << 20;

#[test]
fn a_lockfile_history_gives_the_hits_misses_and_causes_computed_by_hand() {
    let mut repo = TestRepo::new();
    repo.write(".github/workflows/ci.yml", CARGO_WORKFLOW);
    repo.write("Cargo.lock", "v1");
    repo.commit("c1 lock v1"); // nothing stored: miss, save K1
    repo.write("README.md", "hello");
    repo.commit("c2 readme"); // K1 exactly
    repo.write("Cargo.lock", "v2");
    let c3 = repo.commit("c3 lock v2"); // K2: restore key finds K1; save K2
    repo.write("src/main.rs", "fn main() {}");
    repo.commit("c4 source"); // K2 exactly
    repo.write("sub/Cargo.lock", "v1");
    let c5 = repo.commit("c5 second lockfile"); // K3: restore key (newest: K2); save K3
    repo.commit("c6 empty"); // K3 exactly

    let report = bench_cache(&options(&repo)).unwrap();
    assert_eq!(
        outcomes(&report),
        pairs(&[
            ("c1 lock v1", "miss"),
            ("c2 readme", "exact"),
            ("c3 lock v2", "restore-key"),
            ("c4 source", "exact"),
            ("c5 second lockfile", "restore-key"),
            ("c6 empty", "exact"),
        ])
    );
    let t = &report.totals.counts;
    assert_eq!(
        (t.lookups, t.exact_hits, t.restore_key_hits, t.misses),
        (6, 3, 2, 1)
    );
    assert!((t.hit_rate - 5.0 / 6.0).abs() < 1e-9);
    assert_eq!(t.saves, 3);
    assert!(report.commits.iter().all(|c| c.scope == "refs/heads/main"));
    // c5 restored K2, the newest entry under the restore key.
    assert_eq!(
        report.commits[4].steps[0].matched_key.as_deref(),
        Some(report.commits[2].steps[0].key.as_str())
    );

    let [step] = &report.steps[..] else {
        panic!("one step row: {:?}", report.steps)
    };
    assert_eq!(
        (step.job.as_str(), step.step.as_str()),
        ("build", "cargo cache")
    );
    assert_eq!(step.key_family, "Linux-cargo-*");
    let causes: Vec<(&str, Vec<&str>)> = step
        .key_changes
        .iter()
        .map(|k| {
            (
                k.commit.as_str(),
                k.causes.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        causes,
        vec![
            (c3.as_str(), vec!["Cargo.lock (changed)"]),
            (c5.as_str(), vec!["sub/Cargo.lock (added)"]),
        ]
    );

    // Bytes: 8 chunks of 1 MiB at ratio 0.5 = 4 MiB an entry. Archives upload every save
    // whole; the chunked store only the 2 chunks each later save changed.
    let entry = 4 * MIB;
    assert_eq!(step.archive.uploaded, 3 * entry);
    assert_eq!(step.chunked.uploaded, entry + 2 * MIB / 2 * 2);
    assert_eq!(step.chunked.dedup_saved, 2 * (6 * MIB / 2));
    assert_eq!(step.archive.downloaded, 5 * entry);
    assert_eq!(step.chunked.downloaded, 5 * entry);
    assert_eq!(step.archive.stored, 3 * entry);
    assert_eq!(step.chunked.stored, (8 + 2 + 2) * MIB / 2);
    assert!(report.bytes_are_estimates);
    assert!(
        step.timing.kiln_restore_ms > 0.0 && step.timing.archive_save_ms > step.timing.kiln_save_ms
    );
}

#[test]
fn branches_and_a_merged_pull_request_read_their_own_scope_then_the_default_branch() {
    let mut repo = TestRepo::new();
    repo.write(".github/workflows/ci.yml", CARGO_WORKFLOW);
    repo.write("Cargo.lock", "v1");
    repo.commit("m1 lock v1"); // main: miss, save K1 in main
    repo.write("README.md", "x");
    repo.commit("m2 readme"); // main: K1 exactly
    repo.git(&["checkout", "-q", "-b", "feat"]);
    repo.write("Cargo.lock", "v2");
    repo.commit("f1 lock v2"); // PR 1: K2 misses in its scope and main; restore key finds K1 in main
    repo.write("src/lib.rs", "x");
    repo.commit("f2 source"); // PR 1: K2 exactly, in its own scope
    repo.git(&["checkout", "-q", "main"]);
    repo.merge("feat"); // main: K2 is in PR 1's scope only, so the restore key finds K1; save K2
    repo.git(&["checkout", "-q", "-b", "topic"]);
    repo.write("Cargo.lock", "v3");
    repo.commit("t1 lock v3"); // topic: restore key in main finds K2 (the newest there)
    repo.git(&["checkout", "-q", "main"]);

    let mut opts = options(&repo);
    opts.branches = true;
    let report = bench_cache(&opts).unwrap();
    let seen: Vec<(String, String, String)> = report
        .commits
        .iter()
        .map(|c| {
            (
                c.subject.clone(),
                c.scope.clone(),
                c.steps[0].outcome.clone(),
            )
        })
        .collect();
    let expected = [
        ("m1 lock v1", "refs/heads/main", "miss"),
        ("m2 readme", "refs/heads/main", "exact"),
        ("f1 lock v2", "refs/pull/1/merge", "restore-key"),
        ("f2 source", "refs/pull/1/merge", "exact"),
        ("merge feat", "refs/heads/main", "restore-key"),
        ("t1 lock v3", "refs/heads/topic", "restore-key"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(seen, expected);
    let key = |i: usize| report.commits[i].steps[0].key.clone();
    let matched = |i: usize| report.commits[i].steps[0].matched_key.clone();
    assert_eq!(matched(2), Some(key(0)), "the PR restores main's K1");
    assert_eq!(
        matched(3),
        Some(key(2)),
        "the PR's second run hits its own K2"
    );
    assert_eq!(matched(4), Some(key(0)), "main cannot read the PR's K2");
    assert_eq!(
        matched(5),
        Some(key(4)),
        "the branch restores main's newest entry"
    );
    let t = &report.totals.counts;
    assert_eq!(
        (t.lookups, t.exact_hits, t.restore_key_hits, t.misses),
        (6, 2, 3, 1)
    );

    // Without --branches only main's first-parent history runs, all in main's scope.
    let main_only = bench_cache(&options(&repo)).unwrap();
    assert_eq!(
        outcomes(&main_only),
        pairs(&[
            ("m1 lock v1", "miss"),
            ("m2 readme", "exact"),
            ("merge feat", "restore-key"),
        ])
    );
}

#[test]
fn a_workflow_from_the_working_tree_applies_to_every_commit_and_keys_can_be_compared() {
    let mut repo = TestRepo::new();
    // No workflow in the history at all: -W supplies it.
    for (i, lock) in ["a", "a", "b", "b", "c"].iter().enumerate() {
        repo.write("Cargo.lock", lock);
        repo.write("n.txt", &i.to_string());
        repo.commit(&format!("c{i}"));
    }
    let workflow = repo.path.join("../ci.yml");
    std::fs::write(&workflow, CARGO_WORKFLOW).unwrap();
    let mut opts = options(&repo);
    opts.workflow = Some(workflow);
    opts.selection = Selection::Last(4);
    // A key on every commit's whole tree: always a new key, always a restore-key hit.
    opts.compare_key = Some("${{ runner.os }}-cargo-${{ hashFiles('**') }}".into());
    let report = bench_cache(&opts).unwrap();
    assert_eq!(
        outcomes(&report),
        pairs(&[
            ("c1", "miss"),
            ("c2", "restore-key"),
            ("c3", "exact"),
            ("c4", "restore-key")
        ])
    );
    let other = report.comparison.as_ref().expect("comparison");
    let t = &other.totals.counts;
    assert_eq!(
        (t.lookups, t.exact_hits, t.restore_key_hits, t.misses),
        (4, 0, 3, 1)
    );
    assert_eq!(other.steps[0].key_family, "Linux-cargo-*");
}

/// The outcome and save result of the step `uses` (a prefix) of job `job` in commit `i`.
fn step_in(report: &BenchReport, i: usize, job: &str, uses: &str) -> (String, Option<String>) {
    let found: Vec<_> = report.commits[i]
        .steps
        .iter()
        .filter(|o| {
            let row = &report.steps[o.step];
            row.job == job && row.uses.starts_with(uses)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "commit {i}, {job}, {uses}: {:?}",
        report.commits[i]
    );
    (found[0].outcome.clone(), found[0].save.clone())
}

fn outcome(o: &str, save: Option<&str>) -> (String, Option<String>) {
    (o.to_string(), save.map(str::to_string))
}

#[test]
fn setup_actions_build_upstream_keys_per_platform_and_parallel_legs_conflict() {
    let mut repo = TestRepo::new();
    repo.write(
        ".github/workflows/node.yml",
        "on: push\njobs:\n  test:\n    runs-on: ${{ matrix.os }}\n    strategy:\n      matrix:\n        os: [ubuntu-latest, macos-14]\n        node: [18, 20]\n    steps:\n      - uses: actions/setup-node@v4\n        with:\n          node-version: ${{ matrix.node }}\n          cache: npm\n      - uses: actions/setup-go@v5\n        with:\n          go-version: '1.22'\n",
    );
    repo.write("package-lock.json", "1");
    repo.commit("c1 lock 1, no go.sum");
    repo.write("go.sum", "a");
    repo.commit("c2 go.sum");
    repo.write("package-lock.json", "2");
    repo.commit("c3 lock 2");
    let report = bench_cache(&options(&repo)).unwrap();

    // setup-node's key holds the OS and arch but not the node version: the two node legs of
    // one OS share it. They run at the same time, so both miss and the second save conflicts.
    let linux = ["test (ubuntu-latest, 18)", "test (ubuntu-latest, 20)"];
    let mac = ["test (macos-14, 18)", "test (macos-14, 20)"];
    for legs in [linux, mac] {
        let node = |i| {
            [
                step_in(&report, i, legs[0], "actions/setup-node"),
                step_in(&report, i, legs[1], "actions/setup-node"),
            ]
        };
        let go = |i| {
            [
                step_in(&report, i, legs[0], "actions/setup-go"),
                step_in(&report, i, legs[1], "actions/setup-go"),
            ]
        };
        assert_eq!(
            node(0),
            [
                outcome("miss", Some("saved")),
                outcome("miss", Some("conflict"))
            ]
        );
        assert_eq!(node(1), [outcome("exact", None), outcome("exact", None)]);
        // setup-node has a restore key (its prefix); the new lock file restores the old entry.
        assert_eq!(
            node(2),
            [
                outcome("restore-key", Some("saved")),
                outcome("restore-key", Some("conflict"))
            ]
        );
        // No go.sum at the root: setup-go fails the step; then it misses once and hits.
        assert_eq!(go(0)[0].0, "error");
        assert_eq!(
            go(1),
            [
                outcome("miss", Some("saved")),
                outcome("miss", Some("conflict"))
            ]
        );
        assert_eq!(go(2), [outcome("exact", None), outcome("exact", None)]);
    }
    let families: Vec<&str> = report.steps.iter().map(|s| s.key_family.as_str()).collect();
    for family in [
        "node-cache-Linux-x64-npm-*",
        "node-cache-macOS-arm64-npm-*",
        "setup-go-Linux-x64-ubuntu24-go-1.22-*",
        "setup-go-macOS-arm64-go-1.22-*",
    ] {
        assert!(families.contains(&family), "{family} in {families:?}");
    }
    let error = report.commits[0]
        .steps
        .iter()
        .find_map(|o| o.error.as_deref())
        .unwrap();
    assert!(error.contains("go.sum"), "{error}");
}

/// actions/cache/restore and actions/cache/save wired through `steps.<id>.outputs`, with `if:`
/// conditions on the event and on the restore's outcome.
const SPLIT_WORKFLOW: &str = r#"on: [push, pull_request]
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/cache/restore@v4
        id: restore
        with:
          path: target
          key: deps-${{ hashFiles('deps.txt') }}
      - run: make
      - uses: actions/cache/save@v4
        if: steps.restore.outputs.cache-hit != 'true'
        with:
          path: target
          key: ${{ steps.restore.outputs.cache-primary-key }}
      - name: push only
        if: github.event_name == 'push' && runner.os == 'Linux'
        uses: actions/cache@v4
        with:
          path: other
          key: other-${{ github.ref_name }}
"#;

#[test]
fn restore_and_save_steps_see_each_others_outputs_and_conditions_skip_steps() {
    let mut repo = TestRepo::new();
    repo.write(".github/workflows/ci.yml", SPLIT_WORKFLOW);
    repo.write("deps.txt", "1");
    repo.commit("c1");
    repo.commit("c2");
    repo.git(&["checkout", "-q", "-b", "feat"]);
    repo.write("deps.txt", "2");
    repo.commit("f1");
    repo.git(&["checkout", "-q", "main"]);
    repo.merge("feat");
    let mut opts = options(&repo);
    opts.branches = true;
    let report = bench_cache(&opts).unwrap();
    let job = "build";
    let restore = |i| step_in(&report, i, job, "actions/cache/restore");
    let save = |i| step_in(&report, i, job, "actions/cache/save");
    let other = |i| step_in(&report, i, job, "actions/cache@");
    // c1: restore misses; save runs (cache-hit unset) under the restore's primary key.
    assert_eq!(restore(0), outcome("miss", None));
    assert_eq!(save(0), outcome("save-only", Some("saved")));
    assert_eq!(other(0), outcome("miss", Some("saved")));
    // c2: exact hit, so the save step's `if:` skips it.
    assert_eq!(restore(1), outcome("exact", None));
    assert_eq!(save(1), outcome("skipped", None));
    assert_eq!(other(1), outcome("exact", None));
    // f1, a pull request's run: new deps miss (no restore keys); the push-only step is skipped.
    assert_eq!(report.commits[2].scope, "refs/pull/1/merge");
    assert_eq!(restore(2), outcome("miss", None));
    assert_eq!(save(2), outcome("save-only", Some("saved")));
    assert_eq!(other(2), outcome("skipped", None));
    // The merge on main: the PR's entry is not readable from main.
    assert_eq!(restore(3), outcome("miss", None));
    assert_eq!(
        report.commits[0].steps[1].key,
        report.commits[0].steps[0].key
    );
    let save_row = report
        .steps
        .iter()
        .find(|s| s.uses.starts_with("actions/cache/save"))
        .unwrap();
    assert_eq!((save_row.counts.saves, save_row.counts.skipped), (3, 1));
}

#[test]
fn tracked_paths_are_cached_as_real_files_and_deduplicated() {
    let mut repo = TestRepo::new();
    repo.write(
        ".github/workflows/ci.yml",
        "on: push\njobs:\n  docs:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/cache@v4\n        with:\n          path: vendor\n          key: vendor-${{ github.sha }}\n",
    );
    // Incompressible-looking content of a few chunks, so sizes are not trivial.
    let mut text = String::new();
    let mut x: u64 = 1;
    for _ in 0..60_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        text.push_str(&format!("{:x}\n", x >> 20));
    }
    repo.write("vendor/a.txt", &text);
    repo.write("vendor/sub/b.txt", "b");
    repo.commit("c1");
    repo.write("README.md", "x");
    repo.commit("c2 (vendor unchanged, new key)");
    let report = bench_cache(&options(&repo)).unwrap();
    let [step] = &report.steps[..] else {
        panic!("{:?}", report.steps)
    };
    assert_eq!(step.content, "real");
    assert!(!report.bytes_are_estimates);
    assert_eq!(step.counts.saves, 2);
    // The second save sends nothing: every chunk is stored already. The archive sends it all.
    let first = report.commits[0].steps[0].uploaded;
    assert!(first > 100_000, "{first}");
    assert_eq!(report.commits[1].steps[0].uploaded, 0);
    assert_eq!(step.chunked.uploaded, first);
    assert_eq!(step.archive.uploaded, 2 * first);
    assert_eq!(step.chunked.dedup_saved, first);
    assert_eq!(step.chunked.stored, first);
}

#[test]
fn a_compared_key_replaces_the_named_step_only() {
    let mut repo = TestRepo::new();
    repo.write(".github/workflows/ci.yml", SPLIT_WORKFLOW);
    for (i, deps) in ["1", "2", "2"].iter().enumerate() {
        repo.write("deps.txt", deps);
        repo.write("src.txt", &i.to_string());
        repo.commit(&format!("c{i}"));
    }
    let mut opts = options(&repo);
    opts.compare_key = Some("deps-${{ runner.os }}".into());
    let err = bench_cache(&opts).unwrap_err().to_string();
    assert!(err.contains("--compare-step"), "{err}");
    opts.compare_step = Some("nothing".into());
    let err = bench_cache(&opts).unwrap_err().to_string();
    assert!(err.contains("names none of the cache steps"), "{err}");

    opts.compare_step = Some("restore".into());
    let report = bench_cache(&opts).unwrap();
    // Exact hits: the restore at c2, the push-only step at c1 and c2.
    assert_eq!(report.totals.counts.exact_hits, 3);
    let other = report.comparison.as_ref().unwrap();
    assert_eq!(other.step.as_deref(), Some("restore"));
    let restore_outcomes = |commits: &[kiln_bench::report::CommitReport]| -> Vec<String> {
        commits.iter().map(|c| c.steps[0].outcome.clone()).collect()
    };
    assert_eq!(restore_outcomes(&report.commits), ["miss", "miss", "exact"]);
    assert_eq!(restore_outcomes(&other.commits), ["miss", "exact", "exact"]);
    // The save step follows the restore's primary key through steps.restore.outputs.
    assert_eq!(other.commits[0].steps[1].key, "deps-Linux");
    // The push-only step kept its own key.
    assert!(other.commits[0].steps[2].key.starts_with("other-"));
}
