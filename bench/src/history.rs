//! Which commits to replay, in which order, and the scope each run reads and writes, by
//! GitHub's rules: a run writes to its own ref and reads it, then its base branch, then the
//! default branch.
//!
//! Without `--branches` the first-parent history of the revision is replayed, every commit a
//! push to the default branch. With it, every local branch takes part: the default branch's
//! first-parent commits are pushes to it; the commits a merge into it brought in are replayed
//! as a pull request's runs (`refs/pull/N/merge`, base the default branch; N and the head
//! branch are read from GitHub's merge message `Merge pull request #N from owner/branch`, or
//! the branch from git's `Merge branch 'name'`, else numbered in merge order); commits only
//! on another branch are pushes to that branch. A pull request's run is replayed on the head
//! commit's tree (GitHub runs it on the merge of head into base, a commit that is not in the
//! history).

use crate::error::{BenchError, Result};
use crate::git::{CommitInfo, Repo};
use std::collections::{HashMap, HashSet};

/// Which part of the history.
#[derive(Clone, Debug)]
pub enum Selection {
    /// The newest N commits (in replay order).
    Last(usize),
    /// `A..B`, first-parent (not with `--branches`).
    Range(String),
    All,
}

/// One replayed run.
#[derive(Clone, Debug)]
pub struct Run {
    pub commit: CommitInfo,
    /// The ref it writes to.
    pub scope: String,
    /// The refs it reads, in order.
    pub reads: Vec<String>,
    pub event: &'static str,
    pub base_ref: String,
    /// A pull request's head branch (`github.head_ref`); empty for pushes.
    pub head_ref: String,
}

/// The branch a repository's history is replayed as: `--default-branch`, else the branch
/// checked out, else `main`.
pub fn default_branch(repo: &Repo, given: Option<&str>) -> String {
    if let Some(b) = given {
        return b.trim_start_matches("refs/heads/").to_string();
    }
    repo.git(&["symbolic-ref", "--quiet", "--short", "HEAD"])
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "main".into())
}

fn heads(branch: &str) -> String {
    format!("refs/heads/{branch}")
}

pub fn plan(repo: &Repo, selection: &Selection, branches: bool, default: &str) -> Result<Vec<Run>> {
    let default_ref = heads(default);
    let push = |commit: CommitInfo, scope: String| Run {
        reads: if scope == default_ref {
            vec![scope.clone()]
        } else {
            vec![scope.clone(), default_ref.clone()]
        },
        commit,
        scope,
        event: "push",
        base_ref: String::new(),
        head_ref: String::new(),
    };
    if !branches {
        let commits = match selection {
            Selection::Range(range) => repo.commits(&["--first-parent", range.as_str()])?,
            Selection::Last(n) => repo.commits(&["--first-parent", &format!("-n{n}"), "HEAD"])?,
            Selection::All => repo.commits(&["--first-parent", "HEAD"])?,
        };
        return Ok(commits
            .into_iter()
            .map(|c| push(c, default_ref.clone()))
            .collect());
    }
    if let Selection::Range(range) = selection {
        return Err(BenchError::BadOption {
            what: "selection",
            value: range.clone(),
            reason: "--range cannot be combined with --branches; use --commits N".into(),
        });
    }
    let default_tip = repo
        .resolve(&default_ref)
        .map_err(|_| BenchError::BadOption {
            what: "default branch",
            value: default.to_string(),
            reason: "no such local branch; name it with --default-branch".into(),
        })?;
    let mainline = repo.commits(&["--first-parent", &default_tip])?;
    // Commit -> (scope, event, head branch).
    let mut scope_of: HashMap<String, (String, &'static str, String)> = HashMap::new();
    let on_main: HashSet<&str> = mainline.iter().map(|c| c.oid.as_str()).collect();
    for commit in &mainline {
        scope_of.insert(
            commit.oid.clone(),
            (default_ref.clone(), "push", String::new()),
        );
    }
    let mut used: HashSet<u64> = mainline
        .iter()
        .filter_map(|c| merged_pull_request(&c.subject).0)
        .collect();
    let mut next = 1;
    for merge in mainline.iter().filter(|c| c.parents.len() >= 2) {
        let side = repo.commits(&[&format!("{}..{}", merge.parents[0], merge.parents[1])])?;
        let side: Vec<_> = side
            .into_iter()
            .filter(|c| !on_main.contains(c.oid.as_str()) && !scope_of.contains_key(&c.oid))
            .collect();
        if side.is_empty() {
            continue;
        }
        let (number, head) = merged_pull_request(&merge.subject);
        let number = number.unwrap_or_else(|| {
            while used.contains(&next) {
                next += 1;
            }
            used.insert(next);
            next
        });
        for c in side {
            scope_of.insert(
                c.oid,
                (
                    format!("refs/pull/{number}/merge"),
                    "pull_request",
                    head.clone(),
                ),
            );
        }
    }
    let refs = repo.git(&["for-each-ref", "--format=%(refname)", "refs/heads"])?;
    let mut tips = vec![default_ref.clone()];
    for branch in refs.lines().map(str::trim).filter(|r| !r.is_empty()) {
        if branch == default_ref {
            continue;
        }
        tips.push(branch.to_string());
        for c in repo.commits(&[&format!("{default_ref}..{branch}")])? {
            scope_of
                .entry(c.oid)
                .or_insert((branch.to_string(), "push", String::new()));
        }
    }
    let mut args = vec!["--date-order"];
    let limit;
    if let Selection::Last(n) = selection {
        limit = format!("-n{n}");
        args.push(&limit);
    }
    args.extend(tips.iter().map(String::as_str));
    let ordered = repo.commits(&args)?;
    Ok(ordered
        .into_iter()
        .map(|commit| {
            let (scope, event, head_ref) = scope_of.get(&commit.oid).cloned().unwrap_or((
                default_ref.clone(),
                "push",
                String::new(),
            ));
            if event == "pull_request" {
                Run {
                    commit,
                    reads: vec![scope.clone(), default_ref.clone()],
                    scope,
                    event,
                    base_ref: default.to_string(),
                    head_ref,
                }
            } else {
                push(commit, scope)
            }
        })
        .collect())
}

/// The pull request number and head branch a merge commit's message names: GitHub's
/// `Merge pull request #12 from owner/branch`, or git's `Merge branch 'branch'`.
fn merged_pull_request(subject: &str) -> (Option<u64>, String) {
    if let Some(rest) = subject.strip_prefix("Merge pull request #") {
        let (number, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let head = rest
            .strip_prefix("from ")
            .map(|r| r.split_once('/').map_or(r, |(_, branch)| branch))
            .unwrap_or_default();
        return (number.parse().ok(), head.trim().to_string());
    }
    let head = subject
        .strip_prefix("Merge branch '")
        .and_then(|r| r.split_once('\''))
        .map(|(branch, _)| branch.to_string())
        .unwrap_or_default();
    (None, head)
}

#[cfg(test)]
mod tests {
    use super::merged_pull_request;

    #[test]
    fn merge_messages_name_the_pull_request_and_branch() {
        assert_eq!(
            merged_pull_request("Merge pull request #42 from octo/feature/x"),
            (Some(42), "feature/x".to_string())
        );
        assert_eq!(
            merged_pull_request("Merge branch 'topic' into main"),
            (None, "topic".to_string())
        );
        assert_eq!(merged_pull_request("Fix the build"), (None, String::new()));
    }
}
