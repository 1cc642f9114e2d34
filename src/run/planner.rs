//! The scheduler's planner: a submission planned with `kiln run`'s own discovery, selection
//! and `github` context code, over the submitted source checked out at its commit. Each
//! triggered workflow becomes a run whose texts (the file and every callee it loaded) the
//! scheduler stores, so it rebuilds the very same engine after a restart.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use kiln_scheduler::service::{Plan, PlannedRun, RunPlanner, SubmitRequest};
use kiln_workflow::Value;

use super::config::RunValues;
use super::discover::{load_workflows, workflow_paths, CalleeSource};
use super::github::{new_run_id, GithubInputs, RepoState};
use super::{select, workflow_contexts};

const NULL_SHA: &str = "0000000000000000000000000000000000000000";

pub struct DiscoveryPlanner;

impl RunPlanner for DiscoveryPlanner {
    fn plan(&self, request: &SubmitRequest, checkout: &Path) -> Result<Plan, String> {
        plan(request, checkout).map_err(|e| format!("{e:#}"))
    }
}

fn plan(request: &SubmitRequest, checkout: &Path) -> anyhow::Result<Plan> {
    let relative = Path::new(&request.workflows_path);
    anyhow::ensure!(
        relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir)),
        "the workflow path `{}` must be relative to the repository and stay inside it",
        request.workflows_path
    );
    let root = std::fs::canonicalize(checkout).unwrap_or_else(|_| checkout.to_path_buf());
    let sha = request
        .source
        .as_ref()
        .map(|s| s.sha.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| NULL_SHA.to_owned());
    let repo = RepoState {
        root: root.clone(),
        sha: sha.clone(),
        head_ref: Some(request.git_ref.clone()).filter(|r| r.starts_with("refs/")),
        repository: if request.repository.is_empty() {
            "local/repository".to_owned()
        } else {
            request.repository.clone()
        },
        actor: if request.actor.is_empty() {
            "kiln".to_owned()
        } else {
            request.actor.clone()
        },
    };
    let callees = CalleeSource {
        repo_root: &root,
        local_repositories: &[],
        repository: &repo.repository,
        sha: &sha,
        warnings: Default::default(),
        loaded: Default::default(),
    };
    let target = if request.workflows_path.is_empty() {
        root.join(".github/workflows")
    } else {
        root.join(relative)
    };
    let files = load_workflows(&workflow_paths(&target, &root)?, &callees)?;
    let job = Some(request.job.as_str()).filter(|j| !j.is_empty());
    let (selected, mut notices) = select(&files, &request.event_name, job)?;
    if selected.is_empty() {
        notices.push(format!(
            "no workflow in {} runs on `{}`",
            if request.workflows_path.is_empty() {
                ".github/workflows"
            } else {
                &request.workflows_path
            },
            request.event_name
        ));
    }
    let event = match request.event_json.trim() {
        "" => None,
        text => Some(
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| anyhow::anyhow!("the event payload is not valid JSON: {e}"))?,
        ),
    };
    let values = RunValues {
        secrets: request.secrets.clone(),
        vars: request.vars.clone(),
        inputs: request.inputs.clone(),
        env: request.env.clone(),
    };
    let token = request
        .secrets
        .iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case("GITHUB_TOKEN"))
        .map(|(_, v)| v.as_str());
    let run_id = new_run_id();
    let loaded = callees.loaded.borrow().clone();
    let mut runs = Vec::new();
    for file in selected {
        let (github, inputs) = workflow_contexts(
            file,
            &repo,
            &GithubInputs {
                event_name: &request.event_name,
                event: event.clone(),
                workflow_name: &file.name(),
                workflow_path: &file.display_path,
                token,
                run_id,
            },
            &values,
            job,
        )?;
        let text = std::fs::read_to_string(root.join(&file.display_path))
            .map_err(|e| anyhow::anyhow!("cannot read {} again: {e}", file.display_path))?;
        let inputs = match Value::object(inputs).to_json() {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        runs.push(PlannedRun {
            workflow_path: file.display_path.clone(),
            workflow_text: text,
            callees: loaded.clone(),
            github: Value::object(github).to_json(),
            inputs,
            vars: last_wins(&request.vars),
            secrets: last_wins(&request.secrets),
            env: request.env.clone(),
            job_filter: job.map(str::to_owned),
            matrix_filter: request.matrix.clone(),
        });
    }
    Ok(Plan { runs, notices })
}

fn last_wins(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}
