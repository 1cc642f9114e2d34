//! What a `uses:` names and where a remote action's files come from: `--local-repository`,
//! the action cache directory, an earlier clone in this run, or a fresh `git` clone.

use std::path::{Path, PathBuf};

use crate::executor::job::JobRunner;

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

    fn display(&self) -> String {
        match &self.path {
            Some(path) => format!("{}/{}/{path}@{}", self.owner, self.repo, self.git_ref),
            None => self.cache_name(),
        }
    }

    fn within(&self, root: PathBuf) -> PathBuf {
        match &self.path {
            Some(path) => root.join(path),
            None => root,
        }
    }
}

pub fn parse_uses(uses: &str) -> Result<ActionRef, String> {
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
    let invalid = || {
        format!("`{uses}` is not a valid action reference: use owner/repo@ref, owner/repo/path@ref, ./path or docker://image")
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

/// Fetches one ref of a repository into `dest`, through a temporary folder so concurrent
/// jobs never see a half-written clone.
async fn clone(url: &str, git_ref: &str, dest: &Path) -> Result<(), String> {
    let parent = dest
        .parent()
        .ok_or("the clone target has no parent folder")?;
    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    let staging = tempfile::Builder::new()
        .prefix(".clone-")
        .tempdir_in(parent)
        .map_err(|e| e.to_string())?;
    let dir = staging.path();
    git(dir, &["init", "-q"]).await?;
    git(dir, &["fetch", "-q", "--depth", "1", url, git_ref]).await?;
    git(dir, &["checkout", "-q", "--detach", "FETCH_HEAD"]).await?;
    let kept = staging.keep();
    if let Err(e) = std::fs::rename(&kept, dest) {
        // Another job finished the same clone first; theirs is as good as ours.
        let _ = std::fs::remove_dir_all(&kept);
        if !dest.is_dir() {
            return Err(e.to_string());
        }
    }
    Ok(())
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

    #[test]
    fn references_are_classified() {
        assert_eq!(parse_uses("./a/b"), Ok(ActionRef::Local("./a/b".into())));
        assert_eq!(
            parse_uses("docker://alpine:3"),
            Ok(ActionRef::Docker("alpine:3".into()))
        );
        let ActionRef::Remote(remote) = parse_uses("o/r/sub/dir@v1").unwrap() else {
            panic!("remote expected");
        };
        assert_eq!(remote.path.as_deref(), Some("sub/dir"));
        assert_eq!(remote.cache_name(), "o/r@v1");
        assert!(parse_uses("o@v1").is_err());
        assert!(parse_uses("o/r").is_err());
        assert!(parse_uses("o/../x@v1").is_err());
        assert!(parse_uses("./../x").is_err());
    }
}
