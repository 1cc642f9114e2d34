//! Finding the workflows a run executes: `-W PATH` (a file or a directory, default
//! `.github/workflows/`), parsed with reusable workflows loaded from the repository (or a
//! `--local-repository`), then selected by the event (and `-j`). `kiln run` and the
//! scheduler's planner discover and select alike, with [`discover`] and [`select`].

pub mod files;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_workflow::model::{JobKind, Workflow};
use kiln_workflow::uses::self_repository_path;

use files::{list_workflow_files, read_callee};
use kiln_workflow::{parse_workflow_with, Diagnostic, ParseOptions};

/// Where GitHub reads a repository's workflows from.
pub const DEFAULT_WORKFLOW_DIR: &str = ".github/workflows";

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no workflow files (*.yml, *.yaml) in {0}")]
    Empty(String),
    /// A link that leads outside the repository, or an unreadable directory.
    #[error("{0}")]
    Listing(String),
    #[error("{file} calls reusable workflows from other repositories, which kiln does not download:\n{listing}")]
    RemoteWorkflowsNotLoaded { file: String, listing: String },
    #[error("{count} workflow file(s) have errors:\n{listing}")]
    Invalid { count: usize, listing: String },
    #[error("no workflow triggered by `{event}` has a job `{job}`; list the jobs with `kiln run {event} -l`")]
    NoSuchJob { event: String, job: String },
}

/// One parsed workflow file.
#[derive(Debug, Clone)]
pub struct WorkflowFile {
    /// Path relative to the repository root as GitHub shows it: `.github/workflows/ci.yml`.
    pub display_path: String,
    pub workflow: Arc<Workflow>,
    /// Warnings found while parsing (errors make discovery fail).
    pub warnings: Vec<Diagnostic>,
}

impl WorkflowFile {
    /// The workflow's `name:`, else its path, as GitHub names runs.
    pub fn name(&self) -> String {
        match &self.workflow.name {
            Some(name) => name.value.clone(),
            None => self.display_path.clone(),
        }
    }

    pub fn triggers_on(&self, event: &str) -> bool {
        self.workflow.on.iter().any(|t| t.event.value == event)
    }

    pub fn events(&self) -> Vec<String> {
        self.workflow
            .on
            .iter()
            .map(|t| t.event.value.clone())
            .collect()
    }
}

/// The files `-W` names: the file itself, or every `*.yml`/`*.yaml` directly in the directory,
/// sorted by name so runs are reproducible. Symbolic links are handled as by every command
/// (see [`list_workflow_files`]): one that leads outside the repository `root` is an error.
pub fn workflow_paths(target: &Path, root: &Path) -> Result<Vec<PathBuf>, DiscoverError> {
    let paths = list_workflow_files(target, root).map_err(DiscoverError::Listing)?;
    if paths.is_empty() {
        return Err(DiscoverError::Empty(target.display().to_string()));
    }
    Ok(paths)
}

/// Where reusable workflows come from: `./path` in the repository's working tree, `$/path`
/// in the repository at the commit being run, or `owner/repo/path@ref` from a
/// `--local-repository owner/repo@ref=DIR` (which also overrides `$/`, as the
/// `owner/repo@sha` it stands for).
pub struct CalleeSource<'a> {
    pub repo_root: &'a Path,
    pub local_repositories: &'a [(String, PathBuf)],
    /// `owner/repo` and the commit being run (all zeros without a commit).
    pub repository: &'a str,
    pub sha: &'a str,
    /// Warnings of the loads since the last [`CalleeSource::take_warnings`].
    pub warnings: RefCell<Vec<String>>,
    /// The text of every callee loaded, by its `uses:` value: what a scheduler stores to
    /// parse the run again, identically, after a restart.
    pub loaded: RefCell<std::collections::BTreeMap<String, String>>,
}

impl CalleeSource<'_> {
    /// The callee's text; `None` when it is missing or a link leads outside its repository.
    fn load(&self, uses: &str) -> Option<(String, String)> {
        if let Some(relative) = uses.strip_prefix("./") {
            return Some((uses.to_owned(), read_callee(self.repo_root, relative)?));
        }
        if let Ok(Some(path)) = self_repository_path(uses) {
            return self.load_self(uses, path);
        }
        let (target, git_ref) = uses.rsplit_once('@')?;
        let mut segments = target.splitn(3, '/');
        let (owner, repo, inside) = (segments.next()?, segments.next()?, segments.next()?);
        let dir = self.local_repository(&format!("{owner}/{repo}@{git_ref}"))?;
        Some((uses.to_owned(), read_callee(dir, inside)?))
    }

    fn local_repository(&self, key: &str) -> Option<&PathBuf> {
        self.local_repositories
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, dir)| dir)
    }

    /// `$/path`: the file as committed at the commit being run, read from git's objects so
    /// uncommitted edits do not leak in; without a commit, the working tree's, with a warning.
    fn load_self(&self, uses: &str, path: &str) -> Option<(String, String)> {
        if let Some(dir) = self.local_repository(&format!("{}@{}", self.repository, self.sha)) {
            return Some((uses.to_owned(), read_callee(dir, path)?));
        }
        if self.sha.bytes().all(|b| b == b'0') {
            self.warnings.borrow_mut().push(format!(
                "`{uses}`: the repository has no commit, so it is read from the working tree"
            ));
            return Some((uses.to_owned(), read_callee(self.repo_root, path)?));
        }
        let output = std::process::Command::new("git")
            .arg("-C")
            .arg(self.repo_root)
            .args(["show", &format!("{}:./{path}", self.sha)])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        Some((uses.to_owned(), String::from_utf8(output.stdout).ok()?))
    }

    fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.borrow_mut())
    }
}

/// A reusable-workflow job whose workflow (from another repository) was not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnloadedCall {
    /// `caller` or `caller/inner` for a call inside a called workflow.
    pub job: String,
    /// `owner/repo/.github/workflows/x.yml@ref` as written.
    pub uses: String,
}

impl UnloadedCall {
    /// What to do about it: check the repository out and map it with `--local-repository`.
    fn advice(&self) -> String {
        let fix = match self.uses.rsplit_once('@') {
            Some((target, git_ref)) => {
                let repository: Vec<&str> = target.splitn(3, '/').take(2).collect();
                let repository = repository.join("/");
                format!(
                    "check out {repository} at {git_ref} and pass `--local-repository {repository}@{git_ref}=DIR`"
                )
            }
            None => {
                "pin it with `@ref` and pass `--local-repository OWNER/REPO@REF=DIR`".to_owned()
            }
        };
        format!("  job `{}` uses `{}`: {fix}", self.job, self.uses)
    }
}

/// The reusable-workflow calls of `workflow` (and of the workflows it calls) that have no
/// loaded workflow, limited to job `only` (`-j`) at the top level when given.
pub fn unloaded_calls(workflow: &Workflow, only: Option<&str>) -> Vec<UnloadedCall> {
    let mut found = Vec::new();
    collect_unloaded(workflow, only, "", &mut found);
    found
}

fn collect_unloaded(
    workflow: &Workflow,
    only: Option<&str>,
    prefix: &str,
    found: &mut Vec<UnloadedCall>,
) {
    for job in &workflow.jobs {
        if only.is_some_and(|id| !job.id.value.eq_ignore_ascii_case(id)) {
            continue;
        }
        let JobKind::Call(call) = &job.kind else {
            continue;
        };
        let path = format!("{prefix}{}", job.id.value);
        match &call.callee {
            Some(callee) => collect_unloaded(callee, None, &format!("{path}/"), found),
            None => found.push(UnloadedCall {
                job: path,
                uses: call.uses.value.clone(),
            }),
        }
    }
}

/// Fails when a job to run calls a reusable workflow that was not loaded, naming each call
/// and the `--local-repository` that provides it.
pub fn require_loaded_calls(file: &WorkflowFile, only: Option<&str>) -> Result<(), DiscoverError> {
    let missing = unloaded_calls(&file.workflow, only);
    if missing.is_empty() {
        return Ok(());
    }
    let listing: Vec<String> = missing.iter().map(UnloadedCall::advice).collect();
    Err(DiscoverError::RemoteWorkflowsNotLoaded {
        file: file.display_path.clone(),
        listing: listing.join("\n"),
    })
}

/// Parses every file; any error diagnostic fails discovery with all of them listed.
pub fn load_workflows(
    paths: &[PathBuf],
    callees: &CalleeSource,
) -> Result<Vec<WorkflowFile>, DiscoverError> {
    let resolver = |uses: &str| {
        let loaded = callees.load(uses);
        if let Some((_, text)) = &loaded {
            callees
                .loaded
                .borrow_mut()
                .insert(uses.to_owned(), text.clone());
        }
        loaded
    };
    let options = ParseOptions {
        resolver: Some(&resolver),
        ..ParseOptions::default()
    };
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let content = std::fs::read_to_string(path).map_err(|source| DiscoverError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let display_path = relative_display(path, callees.repo_root);
        let parsed = parse_workflow_with(&display_path, &content, &options);
        let (errs, mut warnings): (Vec<_>, Vec<_>) = parsed
            .diagnostics
            .into_iter()
            .partition(Diagnostic::is_error);
        warnings.extend(
            callees
                .take_warnings()
                .into_iter()
                .map(|w| Diagnostic::warning(&display_path, None, w)),
        );
        match parsed.value {
            Some(workflow) if errs.is_empty() => files.push(WorkflowFile {
                display_path,
                workflow: Arc::new(workflow),
                warnings,
            }),
            _ => errors.extend(errs.iter().map(ToString::to_string)),
        }
    }
    if !errors.is_empty() {
        return Err(DiscoverError::Invalid {
            count: errors.len(),
            listing: errors.join("\n"),
        });
    }
    Ok(files)
}

/// The workflows of a repository, parsed, with the text of every reusable workflow they
/// loaded.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub files: Vec<WorkflowFile>,
    /// The text of every callee loaded, by its `uses:` value: what a scheduler stores to
    /// parse a run again, identically, after a restart.
    pub callees: std::collections::BTreeMap<String, String>,
}

/// Parses the workflows at `target` (a file or a directory of them) of the repository `repo`,
/// with callees from the repository (`./`, `$/` at `repo.sha`) and `local_repositories`.
pub fn discover(
    target: &Path,
    repo: &crate::github::RepoState,
    local_repositories: &[(String, PathBuf)],
) -> Result<Discovery, DiscoverError> {
    let callees = CalleeSource {
        repo_root: &repo.root,
        local_repositories,
        repository: &repo.repository,
        sha: &repo.sha,
        warnings: RefCell::default(),
        loaded: RefCell::default(),
    };
    let files = load_workflows(&workflow_paths(target, &repo.root)?, &callees)?;
    Ok(Discovery {
        files,
        callees: callees.loaded.into_inner(),
    })
}

/// The workflows triggered by `event` (and, with `-j`, holding that job), and a notice for
/// every workflow left out (with the reason, so a typo in the event is visible) and every
/// warning of the selected files.
pub fn select<'a>(
    files: &'a [WorkflowFile],
    event: &str,
    job: Option<&str>,
) -> Result<(Vec<&'a WorkflowFile>, Vec<String>), DiscoverError> {
    let mut selected = Vec::new();
    let mut notices = Vec::new();
    for file in files {
        if !file.triggers_on(event) {
            let events = file.events().join(", ");
            notices.push(format!(
                "skipping {}: runs on {events}, not on {event}",
                file.display_path
            ));
            continue;
        }
        if let Some(job) = job {
            if file.workflow.job(job).is_none() {
                continue;
            }
        }
        notices.extend(file.warnings.iter().map(ToString::to_string));
        selected.push(file);
    }
    match job {
        Some(job) if selected.is_empty() => Err(DiscoverError::NoSuchJob {
            event: event.to_owned(),
            job: job.to_owned(),
        }),
        _ => Ok((selected, notices)),
    }
}

fn relative_display(path: &Path, root: &Path) -> String {
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    match absolute.strip_prefix(&root) {
        Ok(relative) => relative.to_string_lossy().into_owned(),
        Err(_) => path.to_string_lossy().into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_COMMIT: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn directory_listing_is_sorted_and_yaml_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["b.yml", "a.yaml", "notes.txt"] {
            std::fs::write(dir.path().join(name), "x").expect("write");
        }
        let names: Vec<_> = workflow_paths(dir.path(), dir.path())
            .expect("paths")
            .iter()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(names, ["a.yaml", "b.yml"]);
    }

    #[test]
    fn reusable_workflows_load_from_the_repository_and_local_repositories() {
        let repo = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        let wf = repo.path().join(".github/workflows");
        std::fs::create_dir_all(&wf).expect("mkdir");
        let callee = "on:\n  workflow_call:\njobs:\n  inner:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo in\n";
        std::fs::write(wf.join("callee.yml"), callee).expect("write");
        let other_wf = other.path().join(".github/workflows");
        std::fs::create_dir_all(&other_wf).expect("mkdir");
        std::fs::write(other_wf.join("remote.yml"), callee).expect("write");
        let caller = "on: push\njobs:\n  a:\n    uses: ./.github/workflows/callee.yml\n  b:\n    uses: octo/lib/.github/workflows/remote.yml@v1\n";
        std::fs::write(wf.join("caller.yml"), caller).expect("write");
        let locals = vec![("octo/lib@v1".to_owned(), other.path().to_path_buf())];
        let source = CalleeSource {
            repo_root: repo.path(),
            local_repositories: &locals,
            repository: "octo/app",
            sha: NO_COMMIT,
            warnings: RefCell::default(),
            loaded: RefCell::default(),
        };
        let files = load_workflows(&[wf.join("caller.yml")], &source).expect("valid");
        assert_eq!(files[0].display_path, ".github/workflows/caller.yml");
        assert!(files[0].triggers_on("push"));
        assert!(!files[0].triggers_on("pull_request"));
    }

    #[test]
    fn unloaded_calls_are_found_inside_called_workflows_and_respect_the_job_filter() {
        let repo = tempfile::tempdir().expect("tempdir");
        let wf = repo.path().join(".github/workflows");
        std::fs::create_dir_all(&wf).expect("mkdir");
        let middle = "on:\n  workflow_call:\njobs:\n  deep:\n    uses: octo/far/.github/workflows/x.yml@main\n";
        std::fs::write(wf.join("middle.yml"), middle).expect("write");
        let caller = "on: push\njobs:\n  outer:\n    uses: ./.github/workflows/middle.yml\n  other:\n    runs-on: x\n    steps:\n      - run: echo\n";
        std::fs::write(wf.join("caller.yml"), caller).expect("write");
        let source = CalleeSource {
            repo_root: repo.path(),
            local_repositories: &[],
            repository: "octo/app",
            sha: NO_COMMIT,
            warnings: RefCell::default(),
            loaded: RefCell::default(),
        };
        let files = load_workflows(&[wf.join("caller.yml")], &source).expect("valid");
        let found = unloaded_calls(&files[0].workflow, None);
        assert_eq!(
            found,
            [UnloadedCall {
                job: "outer/deep".to_owned(),
                uses: "octo/far/.github/workflows/x.yml@main".to_owned(),
            }]
        );
        assert!(unloaded_calls(&files[0].workflow, Some("other")).is_empty());
        let error = require_loaded_calls(&files[0], None).expect_err("not loaded");
        assert!(
            error
                .to_string()
                .contains("--local-repository octo/far@main=DIR"),
            "{error}"
        );
    }

    #[test]
    fn invalid_workflows_list_every_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.yml");
        std::fs::write(&path, "on: push\njobs:\n  a:\n    runs_on: x\n").expect("write");
        let source = CalleeSource {
            repo_root: dir.path(),
            local_repositories: &[],
            repository: "octo/app",
            sha: NO_COMMIT,
            warnings: RefCell::default(),
            loaded: RefCell::default(),
        };
        let error = load_workflows(&[path], &source).expect_err("invalid");
        assert!(error.to_string().contains("bad.yml:"), "{error}");
    }
}
