//! Shared plumbing for the conformance suites: where the third-party data lives, and the
//! `suite: N passed, N failed` tally each suite prints (with its failures, by name, in a log
//! under target/conformance/).

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// `../shared/conformance` beside the project root, or `KILN_CONFORMANCE_DIR`. Missing data
/// is a hard failure: a suite that silently ran nothing would prove nothing.
pub fn conformance_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("KILN_CONFORMANCE_DIR") {
        return PathBuf::from(dir);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("../shared/conformance");
    assert!(
        dir.is_dir(),
        "conformance data not found at {}: check out shared/ beside the project or set KILN_CONFORMANCE_DIR",
        dir.display()
    );
    dir
}

/// Counts one suite's cases and remembers each failure with its reason.
pub struct Tally {
    pub suite: String,
    pub passed: usize,
    pub failures: Vec<(String, String)>,
}

impl Tally {
    pub fn new(suite: &str) -> Self {
        Tally {
            suite: suite.to_string(),
            passed: 0,
            failures: Vec::new(),
        }
    }

    pub fn record(&mut self, name: impl Into<String>, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.passed += 1,
            Err(reason) => self.failures.push((name.into(), reason)),
        }
    }

    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// Prints the one summary line and writes every failure to
    /// `target/conformance/<suite>.log`, returning the log's path.
    pub fn report(&self) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/conformance");
        let _ = std::fs::create_dir_all(&dir);
        let log = dir.join(format!("{}.log", self.suite));
        let mut text = format!(
            "{}: {} passed, {} failed\n",
            self.suite,
            self.passed,
            self.failed()
        );
        for (name, reason) in &self.failures {
            let _ = writeln!(text, "FAIL {name}: {reason}");
        }
        let _ = std::fs::write(&log, &text);
        println!(
            "{}: {} passed, {} failed",
            self.suite,
            self.passed,
            self.failed()
        );
        if !self.failures.is_empty() {
            println!("  failures listed in {}", log.display());
        }
        log
    }
}
