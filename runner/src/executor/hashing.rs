//! `hashFiles()` for step expressions, against the job's workspace.

use std::path::Path;

/// Delegates to kiln-workflow's hashFiles once that module is on this branch; until then a
/// step using `hashFiles` fails with this message instead of hashing nothing.
pub fn hash_files(_workspace: &Path, _patterns: &[String]) -> Result<String, String> {
    Err("hashFiles is not available in this build: kiln-workflow's hashfiles module has not been merged into the runner yet".to_owned())
}
