//! Shared plumbing for the conformance suites: where the third-party data lives (and the
//! skip when it does not), and the `suite: N passed, N failed` tally each suite prints (with
//! its failures, by name, in a log under target/conformance/).

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Set to `1` (`.ci/run` does) to make missing conformance data a failure instead of a skip.
pub const REQUIRE_VAR: &str = "KILN_REQUIRE_CONFORMANCE";
/// Where the data is, when not at `../shared/conformance` beside the project root.
pub const DIR_VAR: &str = "KILN_CONFORMANCE_DIR";

/// `KILN_CONFORMANCE_DIR`, else `../shared/conformance` beside the project root.
pub fn data_location() -> PathBuf {
    match std::env::var_os(DIR_VAR) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance"),
    }
}

/// `Ok(Some(dir))` when the data is there; `Ok(None)` (skip) when it is not; `Err(why)` when it
/// is not and `required`.
pub fn locate(dir: PathBuf, required: bool) -> Result<Option<PathBuf>, String> {
    if dir.is_dir() {
        return Ok(Some(dir));
    }
    if required {
        return Err(format!(
            "{REQUIRE_VAR}=1 but the conformance data is not at {}: check out shared/ beside \
             the project or set {DIR_VAR}",
            dir.display()
        ));
    }
    Ok(None)
}

/// The conformance data, or `None` after one loud `SKIPPED:` line naming `suite`: a clone of
/// the repository on its own has no data, and its tests must still run. A suite that silently
/// ran nothing would prove nothing, so the line goes to the terminal even under libtest's
/// capture, and CI (`KILN_REQUIRE_CONFORMANCE=1`) fails instead.
///
/// # Panics
/// When the data is missing and `KILN_REQUIRE_CONFORMANCE=1`.
pub fn conformance_dir(suite: &str) -> Option<PathBuf> {
    let dir = data_location();
    let required = std::env::var(REQUIRE_VAR).as_deref() == Ok("1");
    match locate(dir.clone(), required) {
        Ok(Some(dir)) => Some(dir),
        Ok(None) => {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                use std::io::Write as _;
                // Written to the stream itself: libtest captures only the print macros.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: conformance data not found at {}, suite {suite} did not run \
                     (see README: Conformance data; set {DIR_VAR}=DIR, or {REQUIRE_VAR}=1 to \
                     make this a failure)",
                    dir.display()
                );
            });
            None
        }
        Err(why) => panic!("{why}"),
    }
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
