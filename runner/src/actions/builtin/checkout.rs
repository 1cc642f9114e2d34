//! `actions/checkout`: the repository kiln was started in, at the event's commit, cloned
//! locally (objects are hard-linked, so it is fast and self-contained) into the workspace.

use std::path::Path;

use indexmap::IndexMap;

use super::{input, BuiltinResult};
use crate::actions::resolve::git;
use crate::executor::job::JobRunner;
use crate::executor::step::StepCtx;

impl JobRunner {
    pub(super) async fn checkout(
        &mut self,
        ctx: &StepCtx,
        inputs: &IndexMap<String, String>,
    ) -> BuiltinResult {
        let github = |key: &str| match &self.github {
            kiln_workflow::Value::Object(g) => g.get(key).map(|v| v.to_display_string()),
            _ => None,
        };
        if let Some(repository) = input(inputs, "repository") {
            let own = github("repository").unwrap_or_default();
            if !repository.eq_ignore_ascii_case(&own) {
                return Err(format!(
                    "kiln's built-in checkout only provides the local repository ({own}), not `{repository}`: clone it in a run step instead"
                ));
            }
        }
        let dest = self.workspace_path(input(inputs, "path").unwrap_or(""))?;
        let source = self.req.source_repo.clone();
        // A directory inside a larger repository (`kiln run -C examples/x`) is a repository
        // of its own for the run: its files at the commit, without the rest.
        let subdirectory = if source.join(".git").exists() {
            None
        } else {
            match git(&source, &["rev-parse", "--show-prefix"]).await {
                Ok(prefix) if !prefix.is_empty() => Some(prefix),
                _ => {
                    return Err(format!(
                        "{} is not a git repository, so there is nothing to check out",
                        source.display()
                    ))
                }
            }
        };
        let wanted = input(inputs, "ref")
            .map(str::to_owned)
            .or_else(|| github("sha").filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "HEAD".to_owned());
        // Like the real action, the target is emptied first (`clean: true`).
        if dest.exists() {
            let entries = std::fs::read_dir(&dest)
                .map_err(|e| format!("cannot read {}: {e}", dest.display()))?;
            for entry in entries.flatten() {
                let path = entry.path();
                let removed = if path.is_dir() && !path.is_symlink() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(|e| format!("cannot clean {}: {e}", path.display()))?;
            }
        }
        std::fs::create_dir_all(&dest)
            .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        let source_text = source.to_string_lossy().into_owned();
        if let Some(prefix) = subdirectory {
            let commit = files_of_subdirectory(&source, &prefix, &wanted, &dest)
                .await
                .map_err(|e| format!("commit `{wanted}` of {source_text}: {e}"))?;
            self.emitter.log(
                &self.log,
                &ctx.name,
                &format!(
                    "Checked out {} at {wanted} into {} (its files only: it is a directory of \
                     a larger git repository)",
                    prefix.trim_end_matches('/'),
                    dest.display()
                ),
            );
            return Ok(vec![
                ("ref".to_owned(), wanted),
                ("commit".to_owned(), commit),
            ]);
        }
        git(&dest, &["clone", "-q", "--no-checkout", &source_text, "."]).await?;
        git(&dest, &["checkout", "-q", "--detach", &wanted])
            .await
            .map_err(|e| format!("commit `{wanted}` is not in {source_text}: {e}"))?;
        let commit = git(&dest, &["rev-parse", "HEAD"]).await?;
        self.emitter.log(
            &self.log,
            &ctx.name,
            &format!(
                "Checked out {source_text} at {wanted} into {}",
                dest.display()
            ),
        );
        Ok(vec![
            ("ref".to_owned(), wanted),
            ("commit".to_owned(), commit),
        ])
    }
}

/// Writes the tree of `prefix` (a directory of the git work tree `source` is in) at `wanted`
/// into `dest`, through an index of its own so the repository's index and work tree are not
/// touched. Returns the commit.
async fn files_of_subdirectory(
    source: &Path,
    prefix: &str,
    wanted: &str,
    dest: &Path,
) -> Result<String, String> {
    let commit = git(
        source,
        &["rev-parse", "--verify", &format!("{wanted}^{{commit}}")],
    )
    .await?;
    // checkout-index run inside the directory would write only paths below it.
    let top = git(source, &["rev-parse", "--show-toplevel"]).await?;
    let index = tempfile::tempdir().map_err(|e| format!("cannot create a temporary index: {e}"))?;
    let tree = format!("{commit}:{}", prefix.trim_end_matches('/'));
    let destination = format!("--prefix={}/", dest.to_string_lossy().trim_end_matches('/'));
    for args in [
        vec!["read-tree", tree.as_str()],
        vec!["checkout-index", "--all", "--force", destination.as_str()],
    ] {
        let output = tokio::process::Command::new("git")
            .args(&args)
            .current_dir(&top)
            .env("GIT_INDEX_FILE", index.path().join("index"))
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run git: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }
    Ok(commit)
}
