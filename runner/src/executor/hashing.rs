//! `hashFiles()` for step expressions, against the job's workspace (the host path, also for
//! container jobs, as the runner does with `github.host-workspace`).

use std::path::Path;

pub fn hash_files(workspace: &Path, patterns: &[String]) -> Result<String, String> {
    kiln_workflow::hashfiles::hash_files(workspace, patterns).map_err(|e| {
        format!(
            "hashFiles('{}') failed. Fail to hash files under directory '{}': {e}",
            patterns.join(", "),
            workspace.display()
        )
    })
}
