//! What a `uses:` names and where a remote action's files come from: `--local-repository`,
//! the action cache directory, an earlier clone in this run, the run's own repository at the
//! commit being run (for `$/path`), or a fresh `git` clone.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use kiln_workflow::commands::AnnotationLevel;
use kiln_workflow::uses::{self_repository_path, RepositoryRef};
use kiln_workflow::value::Value;

use crate::executor::job::{JobRunner, SETUP_STEP};

const DEFAULT_BASE_URL: &str = "https://github.com";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionRef {
    /// `./path/to/action`, relative to the workspace.
    Local(String),
    /// `docker://image:tag`.
    Docker(String),
    Remote(RemoteAction),
}

/// `owner/repo[/path]@ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAction {
    pub owner: String,
    pub repo: String,
    pub path: Option<String>,
    pub git_ref: String,
}

impl RemoteAction {
    pub fn repository(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }

    /// `owner/repo@ref`, the folder name in the action cache.
    pub fn cache_name(&self) -> String {
        format!("{}/{}@{}", self.owner, self.repo, self.git_ref)
    }

    pub(crate) fn display(&self) -> String {
        match &self.path {
            Some(path) => format!("{}/{}/{path}@{}", self.owner, self.repo, self.git_ref),
            None => self.cache_name(),
        }
    }

    pub(crate) fn within(&self, root: PathBuf) -> PathBuf {
        match &self.path {
            Some(path) => root.join(path),
            None => root,
        }
    }
}

/// What `uses` names, for a step of a file read from `base` (the repository a `$/path`
/// refers to: `$/path` is `base`'s `owner/repo/path@ref`).
pub fn parse_uses(uses: &str, base: &RepositoryRef) -> Result<ActionRef, String> {
    let uses = uses.trim();
    if let Some(image) = uses.strip_prefix("docker://") {
        if image.is_empty() {
            return Err("`docker://` needs an image name".to_owned());
        }
        return Ok(ActionRef::Docker(image.to_owned()));
    }
    if uses.starts_with("./") || uses == "." {
        if uses.split('/').any(|part| part == "..") {
            return Err(format!(
                "`{uses}`: a local action must stay inside the workspace"
            ));
        }
        return Ok(ActionRef::Local(uses.to_owned()));
    }
    if let Some(path) = self_repository_path(uses)? {
        return parse_uses(&base.reference(path), base);
    }
    let invalid = || {
        format!("`{uses}` is not a valid action reference: use owner/repo@ref, owner/repo/path@ref, ./path, $/path or docker://image")
    };
    let (name, git_ref) = uses.rsplit_once('@').ok_or_else(invalid)?;
    let mut parts = name.splitn(3, '/');
    let (Some(owner), Some(repo)) = (parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let path = parts.next().map(str::to_owned);
    let safe = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains('\\');
    let path_ok = path
        .as_deref()
        .is_none_or(|p| p.split('/').all(|part| part != ".." && !part.is_empty()));
    if !safe(owner) || !safe(repo) || !safe(git_ref) || git_ref.contains("..") || !path_ok {
        return Err(invalid());
    }
    Ok(ActionRef::Remote(RemoteAction {
        owner: owner.to_owned(),
        repo: repo.to_owned(),
        path,
        git_ref: git_ref.to_owned(),
    }))
}

impl JobRunner {
    /// The folder holding a remote action's files.
    pub async fn resolve_remote(&self, action: &RemoteAction) -> Result<PathBuf, String> {
        let wanted = action.cache_name();
        if let Some((_, path)) = self
            .req
            .local_repositories
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&wanted))
        {
            return Ok(action.within(path.clone()));
        }
        if let Some(cache) = &self.req.action_cache {
            let root = cache
                .join(&action.owner)
                .join(format!("{}@{}", action.repo, action.git_ref));
            if root.is_dir() {
                return Ok(action.within(root));
            }
        }
        let clones = self.req.dirs.actions();
        let root = clones
            .join(&action.owner)
            .join(format!("{}@{}", action.repo, action.git_ref));
        if root.is_dir() {
            return Ok(action.within(root));
        }
        if let Some(sha) = self.run_repository_commit(action) {
            return self.export_run_repository(action, &sha, &root).await;
        }
        if self.req.offline {
            let cache_hint = match &self.req.action_cache {
                Some(cache) => format!("put a copy at {}", cache.join(&wanted).display()),
                None => format!("pass --action-cache DIR with a copy at DIR/{wanted}/"),
            };
            return Err(format!(
                "the action `{}` is not available offline: {cache_hint}, or pass --local-repository {wanted}=PATH",
                action.display()
            ));
        }
        let base = self
            .req
            .action_base_url
            .as_deref()
            .unwrap_or(DEFAULT_BASE_URL)
            .trim_end_matches('/');
        let url = format!("{base}/{}/{}", action.owner, action.repo);
        clone(&url, &action.git_ref, &root).await.map_err(|error| {
            format!(
                "cannot fetch the action `{}` from {url}: {error}. Provide it with --action-cache DIR (layout DIR/{wanted}/) or --local-repository {wanted}=PATH",
                action.display()
            )
        })?;
        Ok(action.within(root))
    }
}

impl JobRunner {
    /// The repository a `$/path` in the job's workflow refers to: the workflow's own when it
    /// was called from another repository, else the run's repository at the commit being run.
    pub fn workflow_base(&self) -> RepositoryRef {
        if let Some(origin) = &self.req.workflow.origin {
            return origin.clone();
        }
        let (repository, sha) = self.run_repository();
        RepositoryRef {
            repository,
            git_ref: sha,
        }
    }

    /// `github.repository` and `github.sha`: the repository kiln runs in, at its HEAD.
    fn run_repository(&self) -> (String, String) {
        let key = |name: &str| match self.contexts.get("github") {
            Some(Value::Object(github)) => github
                .get(name)
                .map(Value::to_display_string)
                .unwrap_or_default(),
            _ => String::new(),
        };
        (key("repository"), key("sha"))
    }

    /// The commit when `action` is in the run's own repository at the commit being run.
    fn run_repository_commit(&self, action: &RemoteAction) -> Option<String> {
        let (repository, sha) = self.run_repository();
        (action.repository().eq_ignore_ascii_case(&repository) && action.git_ref == sha)
            .then_some(sha)
    }

    /// The run's own repository at `sha`, read from git's objects (so uncommitted edits do not
    /// leak in) into `dest`, once per run; a repository without commits is used as its working
    /// tree, with a warning.
    async fn export_run_repository(
        &self,
        action: &RemoteAction,
        sha: &str,
        dest: &Path,
    ) -> Result<PathBuf, String> {
        let source = self.req.source_repo.clone();
        let uncommitted = sha.is_empty() || sha.bytes().all(|b| b == b'0');
        if uncommitted && !self.warned_uncommitted.swap(true, Ordering::SeqCst) {
            self.emitter.annotate(
                &self.log,
                SETUP_STEP,
                AnnotationLevel::Warning,
                &format!(
                    "the repository in {} has no commit: `$/` actions are read from its working tree",
                    source.display()
                ),
            );
        }
        let (dest_owned, sha_owned) = (dest.to_path_buf(), sha.to_owned());
        tokio::task::spawn_blocking(move || {
            let staging = staging_next_to(&dest_owned)?;
            if uncommitted {
                copy_working_tree(&source, staging.path())?;
            } else {
                export_commit(&source, &sha_owned, staging.path())?;
            }
            move_into_place(staging, &dest_owned)
        })
        .await
        .map_err(|e| format!("reading the repository at {sha} failed: {e}"))?
        .map_err(|error| {
            format!(
                "cannot read `{}` at the commit being run ({sha}) from {}: {error}",
                action.display(),
                self.req.source_repo.display()
            )
        })?;
        Ok(action.within(dest.to_path_buf()))
    }
}

/// A temporary folder next to `dest`, filled and then moved there with [`move_into_place`],
/// so concurrent jobs never see a half-written copy.
fn staging_next_to(dest: &Path) -> Result<tempfile::TempDir, String> {
    let parent = dest.parent().ok_or("the target has no parent folder")?;
    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    tempfile::Builder::new()
        .prefix(".fill-")
        .tempdir_in(parent)
        .map_err(|e| e.to_string())
}

fn move_into_place(staging: tempfile::TempDir, dest: &Path) -> Result<(), String> {
    let kept = staging.keep();
    if let Err(e) = std::fs::rename(&kept, dest) {
        // Another job finished the same copy first; theirs is as good as ours.
        let _ = std::fs::remove_dir_all(&kept);
        if !dest.is_dir() {
            return Err(e.to_string());
        }
    }
    Ok(())
}

/// The files of a repository without commits, `.git` left out.
fn copy_working_tree(repo: &Path, dest: &Path) -> Result<(), String> {
    let entries = walkdir::WalkDir::new(repo)
        .into_iter()
        .filter_entry(|entry| entry.file_name() != ".git");
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let relative = entry.path().strip_prefix(repo).unwrap_or(entry.path());
        let target = dest.join(relative);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
        } else if entry.file_type().is_file() {
            std::fs::copy(entry.path(), &target)
                .map_err(|e| format!("cannot copy {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Writes the tree of `sha` below the working directory `repo` (a folder inside a larger
/// repository gives that folder's tree, as `./` paths do) into `dest`.
fn export_commit(repo: &Path, sha: &str, dest: &Path) -> Result<(), String> {
    let mut child = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["archive", "--format=tar", &format!("{sha}:./")])
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run git: {e}"))?;
    let stdout = child.stdout.take().ok_or("git archive has no output")?;
    let unpacked = tar::Archive::new(stdout).unpack(dest);
    let output = child
        .wait_with_output()
        .map_err(|e| format!("git archive failed: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "git archive failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    unpacked.map_err(|e| format!("unpacking git archive: {e}"))
}

/// Fetches one ref of a repository into `dest`, through a temporary folder so concurrent
/// jobs never see a half-written clone.
async fn clone(url: &str, git_ref: &str, dest: &Path) -> Result<(), String> {
    let staging = staging_next_to(dest)?;
    let dir = staging.path();
    git(dir, &["init", "-q"]).await?;
    git(dir, &["fetch", "-q", "--depth", "1", url, git_ref]).await?;
    git(dir, &["checkout", "-q", "--detach", "FETCH_HEAD"]).await?;
    move_into_place(staging, dest)
}

/// Runs `git` in `dir`: its trimmed stdout, or its stderr as the error.
pub async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        // URLs come from workflows and schedulers: never through git's `ext::` transport,
        // which runs a command.
        .env("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
        .stdin(std::process::Stdio::null())
        // A job stopped mid-clone must not leave git writing into its folder.
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run git: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RepositoryRef {
        RepositoryRef {
            repository: "octo/tools".into(),
            git_ref: "v2".into(),
        }
    }

    #[test]
    fn references_are_classified() {
        let parse = |uses: &str| parse_uses(uses, &base());
        assert_eq!(parse("./a/b"), Ok(ActionRef::Local("./a/b".into())));
        assert_eq!(
            parse("docker://alpine:3"),
            Ok(ActionRef::Docker("alpine:3".into()))
        );
        let ActionRef::Remote(remote) = parse("o/r/sub/dir@v1").unwrap() else {
            panic!("remote expected");
        };
        assert_eq!(remote.path.as_deref(), Some("sub/dir"));
        assert_eq!(remote.cache_name(), "o/r@v1");
        assert!(parse("o@v1").is_err());
        assert!(parse("o/r").is_err());
        assert!(parse("o/../x@v1").is_err());
        assert!(parse("./../x").is_err());
    }

    #[test]
    fn a_self_reference_is_the_containing_files_repository_at_its_ref() {
        let ActionRef::Remote(remote) = parse_uses("$/actions/lint", &base()).unwrap() else {
            panic!("remote expected");
        };
        assert_eq!(remote.display(), "octo/tools/actions/lint@v2");
        assert!(parse_uses("$/lint@v1", &base()).is_err());
        assert!(parse_uses("$/../up", &base()).is_err());
    }
}
