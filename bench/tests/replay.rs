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

#[test]
fn setup_actions_with_cache_inputs_are_cache_steps() {
    let mut repo = TestRepo::new();
    repo.write(
        ".github/workflows/node.yml",
        "on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n    strategy:\n      matrix:\n        node: [18, 20]\n    steps:\n      - uses: actions/setup-node@v4\n        with:\n          node-version: ${{ matrix.node }}\n          cache: npm\n      - uses: actions/setup-go@v5\n        with:\n          go-version: '1.22'\n",
    );
    repo.write("package-lock.json", "1");
    repo.commit("one");
    repo.write("package-lock.json", "2");
    repo.commit("two");
    let report = bench_cache(&options(&repo)).unwrap();
    // Two legs of setup-node, and setup-go (which caches by default from v4 on), per commit.
    assert_eq!(report.commits[0].steps.len(), 4, "{:?}", report.commits[0]);
    let families: Vec<&str> = report.steps.iter().map(|s| s.key_family.as_str()).collect();
    assert!(
        families.contains(&"setup-node-Linux-x64-npm-18-*"),
        "{families:?}"
    );
    assert!(
        families.contains(&"setup-go-Linux-x64-go-1.22-"),
        "{families:?}"
    );
    let node: Vec<&str> = report
        .commits
        .iter()
        .map(|c| c.steps[0].outcome.as_str())
        .collect();
    assert_eq!(node, ["miss", "miss"], "setup-node has no restore keys");
}
