//! `kiln run` end to end on the host: job summaries (printed after the table, in the report,
//! in `--summary-dir`, masked, 1 MiB per step) and several workflows triggered by one event
//! running at the same time.

mod run_support;

use std::time::Duration;

use run_support::*;

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn job_summaries_are_printed_reported_written_and_masked() {
    let repo = repo_with_workflow(
        r##"
name: sums
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: |
          echo "# Build report" >> "$GITHUB_STEP_SUMMARY"
          echo "token is ${{ secrets.TOKEN }}" >> "$GITHUB_STEP_SUMMARY"
      - run: printf '| a | b |\n|---|---|\n| 1 | 2 |' >> "$GITHUB_STEP_SUMMARY"
      - run: head -c 1100000 /dev/zero | tr '\0' x >> "$GITHUB_STEP_SUMMARY"
  quiet:
    runs-on: ubuntu-latest
    steps:
      - run: echo no summary here
"##,
    );
    let summaries = tempfile::tempdir().expect("temp dir");
    let dir = summaries.path().to_string_lossy().into_owned();
    let out = kiln_run(
        repo.path(),
        &[
            "--executor",
            "host",
            "-s",
            "TOKEN=hunter2-secret",
            "--summary-dir",
            &dir,
        ],
        LIMIT,
    );
    out.assert_success();
    let expected = "# Build report\ntoken is ***\n| a | b |\n|---|---|\n| 1 | 2 |\n";
    assert!(
        !out.all_output().contains("hunter2-secret"),
        "{}",
        out.stdout
    );
    let block =
        format!("──── summary of build ────\n{expected}──── end of summary of build ────\n");
    let table = out.stdout.find("JOB ").expect("summary table");
    let printed = out
        .stdout
        .find(&block)
        .unwrap_or_else(|| panic!("the summary block is missing:\n{}", out.stdout));
    assert!(table < printed, "the summary comes after the table");
    assert!(!out.stdout.contains("summary of quiet"), "{}", out.stdout);
    assert!(
        out.stdout.contains(
            "$GITHUB_STEP_SUMMARY upload aborted, supports content up to a size of 1024k, got 1074k."
        ),
        "{}",
        out.stdout
    );
    assert_eq!(out.job("build")["summary"], expected);
    assert_eq!(out.job("quiet")["summary"], serde_json::Value::Null);
    let written =
        std::fs::read_to_string(summaries.path().join("sums/build.md")).expect("summary file");
    assert_eq!(written, expected);
    assert!(!summaries.path().join("sums/quiet.md").exists());
}

/// Each workflow's job leaves its mark, then waits (bounded) for the other's: both succeed
/// only when they run at the same time.
fn rendezvous(me: &str, other: &str) -> String {
    format!(
        r#"
name: same name
on: push
jobs:
  meet:
    runs-on: ubuntu-latest
    steps:
      - run: |
          touch "$MARKS/{me}"
          for i in $(seq 1 100); do [ -e "$MARKS/{other}" ] && exit 0; sleep 0.1; done
          echo "{other} never started while {me} ran"; exit 1
"#
    )
}

#[test]
fn workflows_triggered_by_one_event_run_concurrently() {
    let repo = empty_repo();
    repo.write(".github/workflows/a.yml", &rendezvous("a", "b"));
    repo.write(".github/workflows/b.yml", &rendezvous("b", "a"));
    repo.write(
        ".github/workflows/c.yml",
        "name: failing\non: push\njobs:\n  boom:\n    runs-on: ubuntu-latest\n    steps:\n      - run: exit 3\n",
    );
    repo.commit();
    let marks = tempfile::tempdir().expect("temp dir");
    let marks_dir = marks.path().to_string_lossy().into_owned();
    let out = kiln_run_env(
        repo.path(),
        &["--executor", "host", "--parallel", "2"],
        &[("MARKS", &marks_dir)],
        LIMIT,
    );
    assert_eq!(out.status, 1, "one workflow failed:\n{}", out.all_output());
    let reports = out.report().as_array().expect("one report per workflow");
    let conclusions: Vec<(&str, &str)> = reports
        .iter()
        .map(|r| {
            (
                r["workflow"].as_str().unwrap_or_default(),
                r["conclusion"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        conclusions,
        [
            ("same name", "success"),
            ("same name", "success"),
            ("failing", "failure")
        ],
        "{}",
        out.stdout
    );
    // Two workflows share a name, so their lines carry their files instead.
    for prefix in [
        "[.github/workflows/a.yml/meet]",
        "[.github/workflows/b.yml/meet]",
        "[failing/boom]",
    ] {
        assert!(out.stdout.contains(prefix), "{prefix}:\n{}", out.stdout);
    }
    let files: Vec<&str> = reports
        .iter()
        .map(|r| r["file"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        files,
        [
            ".github/workflows/a.yml",
            ".github/workflows/b.yml",
            ".github/workflows/c.yml"
        ]
    );
    for row in [
        ".github/workflows/a.yml/meet",
        ".github/workflows/b.yml/meet",
        "failing/boom",
    ] {
        assert!(out.stdout.contains(row), "{row}:\n{}", out.stdout);
    }
}
