//! The scheduler's planner: a submission planned with `kiln run`'s own discovery, selection
//! and `github` context code, over the submitted source checked out at its commit. Each
//! triggered workflow becomes a run whose texts (the file and every callee it loaded) the
//! scheduler stores, so it rebuilds the very same engine after a restart.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use kiln_scheduler::service::{Plan, PlannedRun, RunPlanner, SubmitRequest};
use kiln_workflow::Value;

use super::config::{github_token, RunValues};
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
    let token = github_token(&request.secrets);
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
