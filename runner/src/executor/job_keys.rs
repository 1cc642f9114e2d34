//! The job-level values GitHub's runner computes on the machine that runs the job, before its
//! first step: the `github` keys of the job (`job`, `workspace`), the `runner` context, and
//! the job's `env`, `container:` and `services:` evaluated with them, so that
//! `${{ github.workspace }}` in a job's env means the same folder as in its steps.

use std::path::Path;

use indexmap::IndexMap;
use kiln_workflow::eval::{evaluate_job_containers, evaluate_job_env, ContainerValues};
use kiln_workflow::expr::JobStatus;
use kiln_workflow::value::{Object, Value};

use super::context::{github_with, job_context, RunnerInfo};
use super::job::JobPaths;
use super::scope::Scope;
use super::status::StatusView;
use super::JobRequest;
use crate::backend::{ContainerSpec, ServiceSpec};

/// The contexts of a job on this machine.
pub(crate) struct JobScope {
    pub runner: RunnerInfo,
    /// The engine's contexts plus `runner`.
    pub contexts: Object,
    /// `github` with the job's keys (job, workspace).
    pub github: Value,
}

impl JobScope {
    pub fn new(req: &JobRequest, paths: &JobPaths) -> JobScope {
        let work = paths.workspace.parent().unwrap_or(&paths.workspace);
        let runner = RunnerInfo {
            name: "kiln".to_owned(),
            temp: paths.temp.to_string_lossy().into_owned(),
            tool_cache: std::env::var("RUNNER_TOOL_CACHE")
                .unwrap_or_else(|_| "/opt/hostedtoolcache".to_owned()),
            workspace: work.to_string_lossy().into_owned(),
            debug: false,
        };
        let mut contexts = req.contexts.clone();
        contexts.insert("runner", runner.context());
        let base_github = contexts.get("github").cloned().unwrap_or(Value::Null);
        let job_id = req.job_id.rsplit('/').next().unwrap_or(&req.job_id);
        let github = github_with(
            &base_github,
            &[
                ("job", job_id.to_owned()),
                ("workspace", paths.workspace.to_string_lossy().into_owned()),
            ],
        );
        JobScope {
            runner,
            contexts,
            github,
        }
    }
}

/// The job's env (below its steps' own) and its containers, evaluated.
pub(crate) struct JobKeys {
    /// `--env-file` values, then the workflow's `env`, then the job's.
    pub env: IndexMap<String, String>,
    pub container: Option<ContainerSpec>,
    pub services: Vec<ServiceSpec>,
}

impl JobKeys {
    /// Evaluates the workflow's and the job's `env`, then the job's `container:` and
    /// `services:` (whose `credentials` may read that env). An error names the key.
    pub fn evaluate(
        req: &JobRequest,
        scope: &JobScope,
        workspace: &Path,
    ) -> Result<JobKeys, String> {
        let empty = Value::object(Object::new());
        let job = job_context("success", None);
        let mut view = Scope {
            contexts: &scope.contexts,
            env: &empty,
            steps: &empty,
            github: &scope.github,
            job: &job,
            action_inputs: None,
            status: StatusView::job(JobStatus::Success),
            workspace,
        };
        let mut env: IndexMap<String, String> = req.env.iter().cloned().collect();
        env.extend(evaluate_job_env(&req.workflow, &req.job, &view)?);
        let mut env_context = Object::case_sensitive();
        for (name, value) in &env {
            env_context.insert(name.clone(), Value::string(value.as_str()));
        }
        let env_context = Value::object(env_context);
        view.env = &env_context;
        let (container, services) = evaluate_job_containers(&req.job, &view)?;
        Ok(JobKeys {
            env,
            container: container.map(container_spec),
            services: services
                .into_iter()
                .map(|(name, values)| ServiceSpec {
                    name,
                    container: container_spec(values),
                })
                .collect(),
        })
    }
}

fn container_spec(values: ContainerValues) -> ContainerSpec {
    ContainerSpec {
        image: values.image,
        env: values.env,
        ports: values.ports,
        volumes: values.volumes,
        options: values.options,
        credentials: values.credentials,
    }
}
