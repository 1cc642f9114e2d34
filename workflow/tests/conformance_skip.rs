//! A clone of the repository on its own has no conformance data: every suite must then skip
//! with one loud line (which libtest's output capture does not swallow) and pass, unless
//! `KILN_REQUIRE_CONFORMANCE=1` (CI), where the missing data fails the suite.

#[path = "support/mod.rs"]
mod support;

use std::process::Command;

/// Set in the child process this file starts to play a suite.
const CHILD: &str = "KILN_CONFORMANCE_SKIP_CHILD";

#[test]
fn present_data_is_found_and_missing_data_skips_unless_required() {
    let dir = tempfile::tempdir().expect("temp dir");
    let present = dir.path().to_path_buf();
    assert_eq!(support::locate(present.clone(), true), Ok(Some(present)));
    let missing = dir.path().join("no-conformance-here");
    assert_eq!(support::locate(missing.clone(), false), Ok(None));
    let why = support::locate(missing.clone(), true).expect_err("required");
    assert!(
        why.contains("KILN_REQUIRE_CONFORMANCE=1") && why.contains(&missing.display().to_string()),
        "{why}"
    );
}

/// A suite in the child process: asks twice, as a file with several tests does.
#[test]
fn child_suite() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    assert_eq!(support::conformance_dir("child"), None);
    assert_eq!(support::conformance_dir("child"), None);
}

fn run_child(missing: &std::path::Path, required: bool) -> std::process::Output {
    let mut command = Command::new(std::env::current_exe().expect("this test binary"));
    command
        .args(["--exact", "child_suite", "--test-threads=1"])
        .env(CHILD, "1")
        .env(support::DIR_VAR, missing)
        .env_remove(support::REQUIRE_VAR);
    if required {
        command.env(support::REQUIRE_VAR, "1");
    }
    command.output().expect("the test binary runs")
}

#[test]
fn a_suite_without_data_passes_with_one_loud_line_or_fails_when_required() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-conformance-here");

    let skipped = run_child(&missing, false);
    let stderr = String::from_utf8_lossy(&skipped.stderr);
    assert!(skipped.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("SKIPPED")).collect();
    assert_eq!(
        lines,
        [format!(
            "SKIPPED: conformance data not found at {}, suite child did not run \
             (see README: Conformance data; set KILN_CONFORMANCE_DIR=DIR, or \
             KILN_REQUIRE_CONFORMANCE=1 to make this a failure)",
            missing.display()
        )],
        "{stderr}"
    );

    let required = run_child(&missing, true);
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&required.stdout),
        String::from_utf8_lossy(&required.stderr)
    );
    assert!(!required.status.success(), "{output}");
    assert!(
        output.contains("KILN_REQUIRE_CONFORMANCE=1 but the conformance data is not at"),
        "{output}"
    );
    assert!(!output.contains("SKIPPED"), "{output}");
}
