//! The `github` context of a run, built from the repository's git state so that
//! `${{ github.* }}` means what it means on GitHub: sha, ref, repository from the origin
//! remote, the event payload (from `-e FILE` or a minimal synthesized one), and the run's ids.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_workflow::value::{Object, Value};
use serde_json::json;

pub const NULL_SHA: &str = "0000000000000000000000000000000000000000";

/// What git says about the repository `kiln run` was started in.
#[derive(Debug, Clone)]
pub struct RepoState {
    /// The directory `kiln run` works in (cwd or `-C`): the workspace, and where `./` paths
    /// resolve. Like act, kiln does not move up to git's top level, so a workflow repository
    /// nested in another (the examples) runs on its own.
    pub root: PathBuf,
    pub sha: String,
    /// `refs/heads/main`, or `None` on a detached HEAD or outside git.
    pub head_ref: Option<String>,
    /// `owner/name`.
    pub repository: String,
    pub actor: String,
}

impl RepoState {
    /// Reads the state with two git processes (a few milliseconds); outside a git repository (or without git) the
    /// repository is named after the directory and the sha is all zeros, as act does.
    pub fn read(dir: &Path) -> RepoState {
        let revs = git(dir, &["rev-parse", "HEAD", "--symbolic-full-name", "HEAD"]);
        let mut lines = revs.as_deref().unwrap_or("").lines();
        let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let sha = lines
            .next()
            .filter(|l| l.len() == 40 && l.bytes().all(|b| b.is_ascii_hexdigit()))
            .unwrap_or(NULL_SHA)
            .to_owned();
        let head_ref = lines
            .next()
            .filter(|l| l.starts_with("refs/"))
            .map(str::to_owned);
        let config = git(
            dir,
            &[
                "config",
                "--get-regexp",
                r"^(remote\.origin\.url|user\.name)$",
            ],
        )
        .unwrap_or_default();
        let mut origin = None;
        let mut user = None;
        for line in config.lines() {
            match line.split_once(' ') {
                Some(("remote.origin.url", url)) => origin = Some(url.trim().to_owned()),
                Some(("user.name", name)) => user = Some(name.trim().to_owned()),
                _ => {}
            }
        }
        let repository = origin
            .as_deref()
            .and_then(repository_from_url)
            .unwrap_or_else(|| format!("local/{}", directory_name(&root)));
        let actor = user
            .or_else(|| std::env::var("USER").ok())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "kiln".to_owned());
        RepoState {
            root,
            sha,
            head_ref,
            repository,
            actor,
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    // rev-parse prints what it could resolve even when one argument fails (no commit yet).
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (!text.is_empty()).then_some(text)
}

fn directory_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repository".to_owned())
}

/// `owner/name` from `https://github.com/owner/name.git`, `git@github.com:owner/name`,
/// `ssh://git@host/owner/name.git`, or a local path ending in `owner/name`.
pub fn repository_from_url(url: &str) -> Option<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    let path = match trimmed.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map(|(_, p)| p)?,
        None => match trimmed.split_once(':') {
            Some((host, p)) if !host.contains('/') => p,
            _ => trimmed,
        },
    };
    let mut parts = path.rsplit('/').filter(|p| !p.is_empty());
    let name = parts.next()?;
    let owner = parts.next()?;
    Some(format!("{owner}/{name}"))
}

/// Everything the `github` context needs besides the repository state.
pub struct GithubInputs<'a> {
    pub event_name: &'a str,
    /// The payload from `-e FILE`, if given.
    pub event: Option<serde_json::Value>,
    /// The workflow's `name:` (or its path when unnamed).
    pub workflow_name: &'a str,
    /// The workflow's path relative to the repository root, `.github/workflows/ci.yml`.
    pub workflow_path: &'a str,
    pub token: Option<&'a str>,
    pub run_id: u64,
}

/// A run id that differs between runs (GitHub's are large integers).
pub fn new_run_id() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs() * 1000 + u64::from(now.subsec_millis())
}

/// The `github` context without job-specific keys (`job`, `action`, ...: the executor adds those).
pub fn github_context(repo: &RepoState, inputs: &GithubInputs) -> Object {
    let event = inputs
        .event
        .clone()
        .unwrap_or_else(|| synthesized_event(repo, inputs.event_name));
    // A payload's ref (a push to a tag, a pull request's head) overrides the checkout's.
    let git_ref = event
        .get("ref")
        .and_then(|r| r.as_str())
        .filter(|r| r.starts_with("refs/"))
        .map(str::to_owned)
        .or_else(|| {
            (inputs.event_name.starts_with("pull_request"))
                .then(|| {
                    event
                        .pointer("/pull_request/number")
                        .and_then(|n| n.as_u64())
                })
                .flatten()
                .map(|n| format!("refs/pull/{n}/merge"))
        })
        .or_else(|| repo.head_ref.clone())
        .unwrap_or_default();
    let (ref_type, ref_name) = if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        ("tag", tag.to_owned())
    } else if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        ("branch", branch.to_owned())
    } else if let Some(pull) = git_ref.strip_prefix("refs/pull/") {
        ("branch", pull.to_owned())
    } else {
        ("branch", git_ref.clone())
    };
    let sha = event
        .get("after")
        .and_then(|s| s.as_str())
        .filter(|s| s.len() == 40 && *s != NULL_SHA)
        .unwrap_or(&repo.sha)
        .to_owned();
    let owner = repo.repository.split('/').next().unwrap_or("").to_owned();
    let head_ref = event
        .pointer("/pull_request/head/ref")
        .and_then(|r| r.as_str())
        .unwrap_or("");
    let base_ref = event
        .pointer("/pull_request/base/ref")
        .and_then(|r| r.as_str())
        .unwrap_or("");

    let mut github = Object::new();
    let mut put = |key: &str, value: &str| github.insert(key, Value::string(value));
    put("event_name", inputs.event_name);
    put("sha", &sha);
    put("ref", &git_ref);
    put("ref_name", &ref_name);
    put("ref_type", ref_type);
    put("ref_protected", "false");
    put("head_ref", head_ref);
    put("base_ref", base_ref);
    put("repository", &repo.repository);
    put("repository_owner", &owner);
    put(
        "repositoryUrl",
        &format!("git://github.com/{}.git", repo.repository),
    );
    put("actor", &repo.actor);
    put("triggering_actor", &repo.actor);
    put("workspace", &repo.root.to_string_lossy());
    put("run_id", &inputs.run_id.to_string());
    put("run_number", "1");
    put("run_attempt", "1");
    put("retention_days", "90");
    put("server_url", "https://github.com");
    put("api_url", "https://api.github.com");
    put("graphql_url", "https://api.github.com/graphql");
    put("workflow", inputs.workflow_name);
    let workflow_ref = format!("{}/{}@{}", repo.repository, inputs.workflow_path, git_ref);
    put("workflow_ref", &workflow_ref);
    put("workflow_sha", &sha);
    put("job_workflow_sha", &sha);
    put("secret_source", "None");
    put("token", inputs.token.unwrap_or(""));
    github.insert("event", Value::from_json(&event));
    github
}

/// The smallest payload that makes common expressions (`github.event.head_commit.id`,
/// `github.event.pull_request.head.ref`, `github.event.inputs.x`) work.
fn synthesized_event(repo: &RepoState, event_name: &str) -> serde_json::Value {
    let (owner, name) = repo
        .repository
        .split_once('/')
        .unwrap_or(("local", &repo.repository));
    let branch = repo
        .head_ref
        .as_deref()
        .and_then(|r| r.strip_prefix("refs/heads/"))
        .unwrap_or("main");
    let repository = json!({
        "name": name,
        "full_name": repo.repository,
        "owner": {"login": owner, "name": owner},
        "default_branch": branch,
    });
    let sender = json!({"login": repo.actor});
    match event_name {
        "push" => json!({
            "ref": repo.head_ref.clone().unwrap_or_default(),
            "before": NULL_SHA,
            "after": repo.sha,
            "head_commit": {"id": repo.sha},
            "repository": repository,
            "sender": sender,
        }),
        "pull_request" | "pull_request_target" => json!({
            "action": "opened",
            "number": 1,
            "pull_request": {
                "number": 1,
                "head": {"ref": branch, "sha": repo.sha},
                "base": {"ref": branch, "sha": repo.sha},
            },
            "repository": repository,
            "sender": sender,
        }),
        _ => json!({"repository": repository, "sender": sender}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_from_remote_urls() {
        for url in [
            "https://github.com/octo/hello.git",
            "git@github.com:octo/hello.git",
            "ssh://git@github.com/octo/hello",
            "/srv/git/octo/hello.git",
        ] {
            assert_eq!(
                repository_from_url(url).as_deref(),
                Some("octo/hello"),
                "{url}"
            );
        }
        assert_eq!(repository_from_url("hello"), None);
    }

    fn state() -> RepoState {
        RepoState {
            root: PathBuf::from("/src/hello"),
            sha: "a".repeat(40),
            head_ref: Some("refs/heads/feature".into()),
            repository: "octo/hello".into(),
            actor: "mona".into(),
        }
    }

    fn inputs(event: Option<serde_json::Value>) -> GithubInputs<'static> {
        GithubInputs {
            event_name: "push",
            event,
            workflow_name: "ci",
            workflow_path: ".github/workflows/ci.yml",
            token: None,
            run_id: 7,
        }
    }

    fn text(object: &Object, key: &str) -> String {
        object
            .get(key)
            .map(Value::to_display_string)
            .unwrap_or_default()
    }

    #[test]
    fn context_from_the_checkout() {
        let github = github_context(&state(), &inputs(None));
        assert_eq!(text(&github, "ref"), "refs/heads/feature");
        assert_eq!(text(&github, "ref_name"), "feature");
        assert_eq!(text(&github, "ref_type"), "branch");
        assert_eq!(text(&github, "repository_owner"), "octo");
        assert_eq!(
            text(&github, "workflow_ref"),
            "octo/hello/.github/workflows/ci.yml@refs/heads/feature"
        );
        let event = github.get("event").expect("event");
        let head = event
            .index(&Value::string("head_commit"))
            .index(&Value::string("id"));
        assert_eq!(head.to_display_string(), "a".repeat(40));
    }

    #[test]
    fn event_payload_ref_wins() {
        let github = github_context(&state(), &inputs(Some(json!({"ref": "refs/tags/v1.2"}))));
        assert_eq!(text(&github, "ref_type"), "tag");
        assert_eq!(text(&github, "ref_name"), "v1.2");
    }
}
