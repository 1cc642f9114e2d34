//! `kiln cache stats` against a server used by the stock `@actions/cache` npm client and by
//! kiln's built-in cache step (`kiln run --cache-server`), with hits and misses known in
//! advance; and the cache fields `kiln run` puts in its summary and `--report`.
//! Needs node and `cd tests/npm && npm ci` (done by .ci/run).

#[path = "../cache-server/tests/support/mod.rs"]
mod cache_support;
#[path = "npm/harness.rs"]
mod npm;
mod run_support;

use cache_support::TestServer;
use npm::{require_node, Api, NpmJob};
use run_support::*;
use serde_json::Value;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
const MAIN: &str = "refs/heads/main";

const WORKFLOW: &str = r#"on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - id: deps
        name: deps cache
        uses: actions/cache@v4
        with:
          path: deps
          key: kiln-deps-${{ hashFiles('lock.txt') }}
          restore-keys: |
            kiln-deps-
      - if: steps.deps.outputs.cache-hit != 'true'
        run: mkdir -p deps && head -c 100000 /dev/urandom > deps/blob && cat lock.txt > deps/lock
"#;

fn hex(seed: char) -> String {
    std::iter::repeat_n(seed, 64).collect()
}

/// The `cache` object of the step named `deps cache` in a run's report.
fn cache_of(out: &Outcome) -> Value {
    out.job("build")["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["name"] == "deps cache")
        .unwrap_or_else(|| panic!("no deps step: {:#}", out.report()))["cache"]
        .clone()
}

fn group<'a>(report: &'a Value, family: &str) -> &'a Value {
    report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["key_family"] == family && g["scope"] == MAIN)
        .unwrap_or_else(|| panic!("no group {family}: {report:#}"))
}

fn counts(g: &Value) -> [u64; 6] {
    [
        "lookups",
        "exact_hits",
        "restore_key_hits",
        "misses",
        "saves",
        "entries",
    ]
    .map(|f| g[f].as_u64().unwrap_or_else(|| panic!("{f} in {g:#}")))
}

#[test]
fn stats_count_what_the_npm_client_and_the_builtin_step_did() {
    require_node();
    let data = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let token = server.token("o/r", MAIN, None, false);

    // The stock client: a miss, a save, an exact hit, a restore-key hit.
    let npm = NpmJob::new(
        &server.url,
        Api::V2,
        token.clone(),
        MAIN,
        root.path(),
        "npm",
    );
    let (k1, k2) = (
        format!("npm-deps-{}", hex('a')),
        format!("npm-deps-{}", hex('b')),
    );
    assert_eq!(npm.restore(&k1, &["npm-deps-"]), None);
    std::fs::create_dir_all(npm.workspace.join("data")).unwrap();
    std::fs::write(npm.workspace.join("data/x"), "npm content").unwrap();
    assert!(npm.save(&k1) > 0);
    assert_eq!(npm.restore(&k1, &[]).as_deref(), Some(k1.as_str()));
    assert_eq!(
        npm.restore(&k2, &["npm-deps-"]).as_deref(),
        Some(k1.as_str())
    );

    // kiln's built-in step: miss and save, exact hit, then a new lock file restores the old
    // entry by its restore key and saves a new one.
    let repo = repo_with_workflow(WORKFLOW);
    let run = |lock: &str| {
        if std::fs::read_to_string(repo.path().join("lock.txt"))
            .ok()
            .as_deref()
            != Some(lock)
        {
            repo.write("lock.txt", lock);
            repo.commit();
        }
        let args = [
            "--executor",
            "host",
            "--cache-server",
            &server.url,
            "--cache-token",
            &token,
        ];
        let out = kiln_run(repo.path(), &args, LIMIT);
        out.assert_success();
        out
    };
    let first = run("v1");
    let c = cache_of(&first);
    assert_eq!(
        (&c["lookup"], &c["save"]),
        (&"miss".into(), &"saved".into())
    );
    assert_eq!(c["matched_key"], Value::Null);
    assert!(c["saved_bytes"].as_u64() >= Some(100_000), "{c:#}");
    assert!(c["uploaded_bytes"].as_u64() > Some(0), "{c:#}");
    let k_v1 = c["key"].as_str().unwrap().to_string();
    assert!(k_v1.starts_with("kiln-deps-"), "{k_v1}");
    assert!(
        first
            .stdout
            .contains(&format!("build / deps cache: miss ({k_v1}); saved {k_v1}")),
        "{}",
        first.stdout
    );

    let second = run("v1");
    let c = cache_of(&second);
    assert_eq!(
        (&c["lookup"], &c["save"]),
        (&"exact".into(), &"not-needed".into())
    );
    assert_eq!(c["matched_key"], k_v1.as_str());
    assert!(c["restored_bytes"].as_u64() >= Some(100_000), "{c:#}");
    assert_eq!(c["uploaded_bytes"], 0);

    let third = run("v2");
    let c = cache_of(&third);
    assert_eq!(
        (&c["lookup"], &c["save"]),
        (&"restore-key".into(), &"saved".into())
    );
    assert_eq!(c["matched_key"], k_v1.as_str());
    assert!(
        third
            .stdout
            .contains(&format!("build / deps cache: restore-key hit ({k_v1})")),
        "{}",
        third.stdout
    );
    // Steps that are not cache steps carry no cache object.
    let steps = third.job("build")["steps"].as_array().unwrap().clone();
    assert!(steps.iter().any(|s| s["cache"].is_null()));

    // What the server saw, through its HTTP endpoint with the job token, and from its data
    // directory.
    let dir = repo.path();
    let stats_json = |args: &[&str]| -> Value {
        let mut all = vec!["cache", "stats", "--format", "json"];
        all.extend_from_slice(args);
        let (status, json, err) = kiln(dir, &all);
        assert_eq!(status, 0, "{err}");
        serde_json::from_str(&json).unwrap()
    };
    let over_http = stats_json(&["--url", &server.url, "--token", &token]);
    let data_dir = data.path().to_str().unwrap();
    let from_disk = stats_json(&["--data", data_dir]);
    for report in [&over_http, &from_disk] {
        // lookups, exact, restore-key, misses, saves, entries
        assert_eq!(counts(group(report, "npm-deps-*")), [3, 1, 1, 1, 1, 1]);
        assert_eq!(counts(group(report, "kiln-deps-*")), [3, 1, 1, 1, 2, 2]);
        let t = &report["totals"];
        assert_eq!(t["lookups"], 6);
        assert!((t["hit_rate"].as_f64().unwrap() - 4.0 / 6.0).abs() < 1e-9);
        let kiln = group(report, "kiln-deps-*");
        assert!(
            kiln["bytes_served"].as_u64() >= Some(2 * 100_000),
            "{kiln:#}"
        );
        assert!(kiln["bytes_uploaded"].as_u64() >= Some(100_000), "{kiln:#}");
        assert_eq!(report["days"].as_array().unwrap().len(), 2, "{report:#}");
    }
    // Only the data directory shows the whole store.
    assert!(from_disk["store_chunk_bytes"].as_u64() > Some(0));
    assert_eq!(over_http["store_chunk_bytes"], Value::Null);

    let (status, table, err) = kiln(dir, &["cache", "stats", "--data", data_dir]);
    assert_eq!(status, 0, "{err}");
    for family in ["npm-deps-*", "kiln-deps-*"] {
        assert!(table.contains(family), "{table}");
    }
    // A token of another repository sees none of it.
    let other = server.token("x/y", MAIN, None, true);
    let theirs = stats_json(&["--url", &server.url, "--token", &other]);
    assert_eq!(theirs["totals"]["lookups"], 0);
}
