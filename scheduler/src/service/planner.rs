//! What a submission asks for, and the planner that turns it into runs: [`DiscoveryPlanner`]
//! plans with `kiln run`'s own discovery, selection and [`RunRequest::workflow_spec`]; the
//! service only sees its result, stores it, and rebuilds engines from what it stored. The
//! [`RunPlanner`] trait lets tests and benches plan from memory, without a repository.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use kiln_workflow::Value;
use serde::{Deserialize, Serialize};

use crate::discover::{discover, select, DEFAULT_WORKFLOW_DIR};
use crate::github::{new_run_id, RepoState, NULL_SHA};
use crate::request::{RequestError, RunRequest, RunTarget, RunValues};

/// Where a run's workspace comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSpec {
    /// The commit the run is for (`github.sha`).
    pub sha: String,
    pub origin: SourceOrigin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceOrigin {
    /// A git bundle uploaded with UploadSnapshot, by its blake3 digest.
    Snapshot { digest: String, size: u64 },
    /// A repository runners clone themselves.
    Git { url: String },
}

/// A submission (`kiln submit`'s flags), as the control service received it.
#[derive(Debug, Clone, Default)]
pub struct SubmitRequest {
    pub event_name: String,
    /// The event payload (`github.event`), JSON; empty for the default payload.
    pub event_json: String,
    pub source: Option<SourceSpec>,
    /// `owner/repo`.
    pub repository: String,
    pub git_ref: String,
    pub actor: String,
    /// `-W`: a file or directory relative to the repository; empty for `.github/workflows`.
    pub workflows_path: String,
    /// `-j`.
    pub job: String,
    pub matrix: Vec<(String, String)>,
    pub inputs: Vec<(String, String)>,
    pub vars: Vec<(String, String)>,
    pub secrets: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
}

/// One run to start: one workflow the event triggers, with everything its engine is built
/// from. Texts, not parsed values, so the service stores them and a restart rebuilds the very
/// same engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRun {
    /// `.github/workflows/ci.yml`.
    pub workflow_path: String,
    pub workflow_text: String,
    /// The text of every reusable workflow a job of this run may call, by the `uses:` value
    /// the parser asks for (nested callees too).
    pub callees: BTreeMap<String, String>,
    /// The `github` context without job keys, a JSON object.
    pub github: serde_json::Value,
    pub inputs: serde_json::Map<String, serde_json::Value>,
    pub vars: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
    /// `--env-file` values, later entries win.
    pub env: Vec<(String, String)>,
    pub job_filter: Option<String>,
    pub matrix_filter: Vec<(String, String)>,
}

/// What planning a submission produced.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// One per triggered workflow, in discovery order; none when no workflow runs on the
    /// event (the notices say so).
    pub runs: Vec<PlannedRun>,
    /// Messages for the submitter (warnings, "no workflow runs on push").
    pub notices: Vec<String>,
}

/// Turns a submission and its checked-out source into runs.
pub trait RunPlanner: Send + Sync {
    /// `checkout` is the submission's source at `source.sha` (an empty directory when the
    /// submission has no source). `Err` is shown to the submitter as is: say what to fix.
    fn plan(&self, request: &SubmitRequest, checkout: &Path) -> Result<Plan, String>;
}

/// The planner `kiln scheduler` runs: each workflow the submission's event triggers in the
/// submitted source becomes a run whose texts (the file and every callee it loaded) the
/// scheduler stores, so it rebuilds the very same engine after a restart.
pub struct DiscoveryPlanner;

impl RunPlanner for DiscoveryPlanner {
    fn plan(&self, request: &SubmitRequest, checkout: &Path) -> Result<Plan, String> {
        plan(request, checkout).map_err(|e| e.to_string())
    }
}

/// Why a submission cannot be planned.
#[derive(Debug, thiserror::Error)]
enum PlanError {
    #[error("the workflow path `{0}` must be relative to the repository and stay inside it")]
    OutsidePath(String),
    #[error("the event payload is not valid JSON: {0}")]
    Payload(serde_json::Error),
    #[error("cannot read {path} again: {source}")]
    Reread {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Request(#[from] RequestError),
}

impl From<crate::discover::DiscoverError> for PlanError {
    fn from(error: crate::discover::DiscoverError) -> Self {
        PlanError::Request(error.into())
    }
}

impl SubmitRequest {
    /// Which workflows the submission is about.
    fn target(&self) -> RunTarget {
        RunTarget {
            event_name: self.event_name.clone(),
            workflows: Some(self.workflows_path.as_str())
                .filter(|p| !p.is_empty())
                .map(Into::into),
            job: Some(self.job.clone()).filter(|j| !j.is_empty()),
        }
    }

    /// The submission as the request `kiln run` would have made of the same flags.
    fn run_request(&self) -> Result<RunRequest, PlanError> {
        let event = match self.event_json.trim() {
            "" => None,
            text => Some(serde_json::from_str(text).map_err(PlanError::Payload)?),
        };
        Ok(RunRequest {
            target: self.target(),
            event,
            matrix_filter: self.matrix.clone(),
            values: RunValues {
                secrets: self.secrets.clone(),
                vars: self.vars.clone(),
                inputs: self.inputs.clone(),
                env: self.env.clone(),
            },
        })
    }

    /// The repository as the submitter's checkout described it, at `root`.
    fn repo_state(&self, root: &Path) -> RepoState {
        let or = |value: &str, default: &str| {
            if value.is_empty() {
                default.to_owned()
            } else {
                value.to_owned()
            }
        };
        RepoState {
            root: root.to_path_buf(),
            sha: or(
                self.source.as_ref().map_or("", |s| s.sha.as_str()),
                NULL_SHA,
            ),
            head_ref: Some(self.git_ref.clone()).filter(|r| r.starts_with("refs/")),
            repository: or(&self.repository, "local/repository"),
            actor: or(&self.actor, "kiln"),
        }
    }
}

fn plan(submitted: &SubmitRequest, checkout: &Path) -> Result<Plan, PlanError> {
    let relative = Path::new(&submitted.workflows_path);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(PlanError::OutsidePath(submitted.workflows_path.clone()));
    }
    let root = std::fs::canonicalize(checkout).unwrap_or_else(|_| checkout.to_path_buf());
    let repo = submitted.repo_state(&root);
    let target = submitted.target();
    let discovery = discover(&target.workflows_in(&root), &repo, &[])?;
    let (selected, mut notices) =
        select(&discovery.files, &target.event_name, target.job.as_deref())?;
    if selected.is_empty() {
        let shown = target
            .workflows
            .as_deref()
            .map_or(DEFAULT_WORKFLOW_DIR.into(), Path::to_string_lossy);
        notices.push(format!(
            "no workflow in {shown} runs on `{}`",
            target.event_name
        ));
    }
    let request = submitted.run_request()?;
    let run_id = new_run_id();
    let mut runs = Vec::new();
    for file in selected {
        let spec = request.workflow_spec(file, &repo, run_id)?;
        let text = std::fs::read_to_string(root.join(&file.display_path)).map_err(|source| {
            PlanError::Reread {
                path: file.display_path.clone(),
                source,
            }
        })?;
        let inputs = match Value::object(spec.inputs).to_json() {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        runs.push(PlannedRun {
            workflow_path: file.display_path.clone(),
            workflow_text: text,
            callees: discovery.callees.clone(),
            github: Value::object(spec.github).to_json(),
            inputs,
            vars: last_wins(&request.values.vars),
            secrets: last_wins(&request.values.secrets),
            env: request.values.env.clone(),
            job_filter: spec.job_filter,
            matrix_filter: spec.matrix_filter,
        });
    }
    Ok(Plan { runs, notices })
}

fn last_wins(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let file = root.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }

    fn request(event: &str) -> SubmitRequest {
        SubmitRequest {
            event_name: event.to_owned(),
            repository: "octo/app".to_owned(),
            git_ref: "refs/heads/main".to_owned(),
            secrets: vec![("TOKEN".to_owned(), "s".to_owned())],
            ..SubmitRequest::default()
        }
    }

    #[test]
    fn a_submission_is_planned_as_kiln_run_would_with_every_callee_text_kept() {
        let dir = tempfile::tempdir().unwrap();
        let callee = "on: workflow_call\njobs:\n  inner:\n    runs-on: linux\n    steps:\n      - run: 'true'\n";
        write(dir.path(), ".github/workflows/callee.yml", callee);
        write(
            dir.path(),
            ".github/workflows/ci.yml",
            "name: CI\non: push\njobs:\n  call:\n    uses: ./.github/workflows/callee.yml\n",
        );
        write(
            dir.path(),
            ".github/workflows/release.yml",
            "on: release\njobs:\n  r:\n    runs-on: linux\n    steps:\n      - run: 'true'\n",
        );
        let plan = DiscoveryPlanner.plan(&request("push"), dir.path()).unwrap();
        assert_eq!(plan.runs.len(), 1, "only the workflow on push");
        let run = &plan.runs[0];
        assert_eq!(run.workflow_path, ".github/workflows/ci.yml");
        assert_eq!(
            run.callees
                .get("./.github/workflows/callee.yml")
                .map(String::as_str),
            Some(callee)
        );
        assert_eq!(run.github["repository"], "octo/app");
        assert_eq!(run.github["ref"], "refs/heads/main");
        assert_eq!(run.secrets.get("TOKEN").map(String::as_str), Some("s"));
        assert!(
            plan.notices
                .iter()
                .any(|n| n.contains("skipping .github/workflows/release.yml")),
            "{:?}",
            plan.notices
        );
        let none = DiscoveryPlanner
            .plan(&request("schedule"), dir.path())
            .unwrap();
        assert!(none.runs.is_empty());
        assert!(
            none.notices.iter().any(|n| n.contains("no workflow")),
            "{:?}",
            none.notices
        );
    }

    #[test]
    fn a_workflow_path_outside_the_repository_and_bad_workflows_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut outside = request("push");
        outside.workflows_path = "../elsewhere".to_owned();
        let refused = DiscoveryPlanner.plan(&outside, dir.path()).unwrap_err();
        assert!(refused.contains("stay inside"), "{refused}");
        write(
            dir.path(),
            ".github/workflows/bad.yml",
            "on: push\njobs: 3\n",
        );
        let refused = DiscoveryPlanner
            .plan(&request("push"), dir.path())
            .unwrap_err();
        assert!(refused.contains("bad.yml"), "{refused}");
    }
}
