//! One job from start to end: directories, backend setup, the step loop, post steps, job
//! outputs and cleanup.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use indexmap::IndexMap;
use kiln_workflow::commands::AnnotationLevel;
use kiln_workflow::expr::JobStatus;
use kiln_workflow::model::JobKind;
use kiln_workflow::value::{Object, Value};
use kiln_workflow::Conclusion;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::context::{job_context, RunnerInfo};
use super::files::{thousands, ValueBudget, MAX_VALUE_BYTES};
use super::job_keys::{JobKeys, JobScope};
use super::layout::JobLayout;
use super::output::{Emitter, LogState};
use super::prestart::Prestarted;
use super::scope::Scope;
use super::status::{ScopeStatus, StatusView};
use super::{JobEvent, JobRequest, JobResult, JobStop, StepRecord};
use crate::backend::{host_base_env, Backend, ContainerSpec, JobEnv, ServiceSpec};

/// Composite actions may nest this deep; GitHub's limit is 10 as well.
pub const MAX_ACTION_DEPTH: usize = 10;

/// The step label for messages outside of any step.
pub const SETUP_STEP: &str = "Set up job";
pub const COMPLETE_STEP: &str = "Complete job";

/// The host directories of one job.
#[derive(Debug, Clone)]
pub struct JobPaths {
    pub dir: PathBuf,
    pub workspace: PathBuf,
    pub temp: PathBuf,
    pub files: PathBuf,
}

/// A post step registered by an action, run at job end in reverse order.
pub struct PostStep {
    pub name: String,
    pub condition: String,
    /// The action run whose saved state the post stage receives as `STATE_*`.
    pub state_key: Option<crate::actions::stages::StageKey>,
    pub run: super::step::PostRun,
}

/// The `steps` context and status of one scope: the job, or one composite action.
pub struct Frame {
    pub steps: Object,
    pub status: ScopeStatus,
    pub composite: Option<super::step::CompositeScope>,
    pub depth: usize,
}

impl Frame {
    pub fn job() -> Self {
        Frame {
            steps: Object::new(),
            status: ScopeStatus::default(),
            composite: None,
            depth: 0,
        }
    }
}

pub struct JobRunner {
    pub req: JobRequest,
    /// Unique per job in this process: names the job's folder and backend objects.
    pub key: String,
    pub backend: Arc<dyn Backend>,
    pub job_env: Option<JobEnv>,
    pub emitter: Emitter,
    pub log: LogState,
    pub cancel: CancellationToken,
    /// Stops even the steps that run on cancellation.
    pub kill: CancellationToken,
    pub timed_out: Arc<AtomicBool>,
    /// The engine's contexts plus `runner`.
    pub contexts: Object,
    /// `github` with the job's keys (job, workspace).
    pub github: Value,
    /// Workflow env, job env, then `GITHUB_ENV` writes: the env every step starts from.
    pub env: IndexMap<String, String>,
    /// `GITHUB_PATH` entries, most recent first.
    pub path_additions: Vec<String>,
    pub status: ScopeStatus,
    /// The job-level `steps` context, for job outputs and post steps.
    pub job_steps: Object,
    pub records: Vec<StepRecord>,
    /// What cache steps did, by the index their step's record takes in `records`.
    pub caches: std::collections::BTreeMap<usize, kiln_workflow::StepCache>,
    pub post_steps: Vec<PostStep>,
    /// Pre/post bookkeeping of the job's actions.
    pub stages: crate::actions::Stages,
    pub sequence: u64,
    pub paths: JobPaths,
    pub runner: RunnerInfo,
    /// Host mode: PATH, HOME, locale of the host. Docker mode: empty (the image decides).
    pub base_env: Vec<(String, String)>,
    pub bash_available: Option<bool>,
    pub summaries: Vec<String>,
    /// Empty file-command files of earlier steps, reused by the next step.
    pub spare_files: super::files::SpareFiles,
    /// What the job's steps may still hand on through outputs, state, env and PATH.
    pub budget: ValueBudget,
    /// The job's container, started before the job was ready; `prepare` adopts it.
    pub prestarted: Option<Prestarted>,
    /// `container:` and `services:`, evaluated on this machine.
    pub container: Option<ContainerSpec>,
    pub services: Vec<ServiceSpec>,
    /// The warning that `$/` reads an uncommitted repository's working tree was given.
    pub warned_uncommitted: AtomicBool,
}

/// Runs one job leg to its end (see [`super::run_job`]), stopped as `stop` says.
pub async fn run(
    req: JobRequest,
    backend: Arc<dyn Backend>,
    events: UnboundedSender<JobEvent>,
    stop: JobStop,
    prestarted: Option<Prestarted>,
) -> JobResult {
    let started_at = SystemTime::now();
    // Killing the job cancels it too.
    let job_cancel = stop.cancel.child_token();
    let kill = stop.kill.clone();
    let cancel_on_kill = {
        let (kill, job_cancel) = (kill.clone(), job_cancel.clone());
        tokio::spawn(async move {
            kill.cancelled().await;
            job_cancel.cancel();
        })
    };
    let timed_out = Arc::new(AtomicBool::new(false));
    let timer = {
        let (token, flag, timeout) = (job_cancel.clone(), timed_out.clone(), req.timeout);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            flag.store(true, Ordering::SeqCst);
            token.cancel();
        })
    };
    let emitter = Emitter { events };
    let created = JobRunner::new(
        req,
        backend,
        emitter.clone(),
        (job_cancel, kill),
        timed_out,
        prestarted,
    );
    let mut runner = match created {
        Ok(runner) => runner,
        Err(error) => {
            timer.abort();
            cancel_on_kill.abort();
            emitter.send(JobEvent::Log {
                step: SETUP_STEP.to_owned(),
                line: format!("##[error]{error}"),
            });
            return JobResult {
                conclusion: Conclusion::Failure,
                outputs: IndexMap::new(),
                steps: Vec::new(),
                started_at,
                finished_at: SystemTime::now(),
                error: Some(error),
                summaries: Vec::new(),
                caches: Default::default(),
            };
        }
    };
    let mut error = runner.execute().await;
    timer.abort();
    cancel_on_kill.abort();
    if let Some(cleanup_error) = runner.cleanup().await {
        error.get_or_insert(cleanup_error);
    }
    let outputs = if error.is_none() || runner.job_env.is_some() {
        runner.job_outputs().unwrap_or_else(|too_large| {
            error.get_or_insert(too_large);
            IndexMap::new()
        })
    } else {
        IndexMap::new()
    };
    let mut conclusion = runner.status.conclusion();
    if error.is_some() && conclusion == Conclusion::Success {
        conclusion = Conclusion::Failure;
    }
    if runner.timed_out.load(Ordering::SeqCst) {
        conclusion = Conclusion::Failure;
    }
    JobResult {
        conclusion,
        outputs,
        steps: std::mem::take(&mut runner.records),
        started_at,
        finished_at: SystemTime::now(),
        error,
        summaries: std::mem::take(&mut runner.summaries),
        caches: std::mem::take(&mut runner.caches),
    }
}

impl JobRunner {
    fn new(
        req: JobRequest,
        backend: Arc<dyn Backend>,
        emitter: Emitter,
        (cancel, kill): (CancellationToken, CancellationToken),
        timed_out: Arc<AtomicBool>,
        prestarted: Option<Prestarted>,
    ) -> Result<JobRunner, String> {
        let layout = match &prestarted {
            Some(prestarted) => prestarted.layout.clone(),
            None => JobLayout::create(&req)?,
        };
        let JobLayout { key, paths } = layout;
        let mut log = LogState::default();
        for secret in &req.secrets {
            log.masker.add(secret);
        }
        if let Some(cache) = &req.cache {
            log.masker.add(&cache.token);
        }
        let docker = backend.name() == "docker";
        let scope = JobScope::new(&req, &paths);
        let JobKeys {
            env,
            container,
            services,
        } = JobKeys::evaluate(&req, &scope, &paths.workspace)?;
        let JobScope {
            runner,
            contexts,
            github,
        } = scope;
        Ok(JobRunner {
            key,
            backend,
            job_env: None,
            emitter,
            log,
            cancel,
            kill,
            timed_out,
            contexts,
            github,
            env,
            path_additions: Vec::new(),
            status: ScopeStatus::default(),
            job_steps: Object::new(),
            records: Vec::new(),
            caches: Default::default(),
            post_steps: Vec::new(),
            stages: Default::default(),
            sequence: 0,
            paths,
            runner,
            base_env: if docker { Vec::new() } else { host_base_env() },
            bash_available: None,
            summaries: Vec::new(),
            spare_files: Default::default(),
            budget: ValueBudget::default(),
            prestarted,
            container,
            services,
            warned_uncommitted: AtomicBool::new(false),
            req,
        })
    }
}

impl JobRunner {
    /// Prepares the backend and runs every step and post step. `Some(error)` when the job
    /// failed outside of its steps.
    async fn execute(&mut self) -> Option<String> {
        let steps = match &self.req.job.kind {
            JobKind::Steps(steps) => steps.clone(),
            JobKind::Call(call) => {
                return Some(format!(
                    "job `{}` calls the reusable workflow `{}`; its jobs must be run by the engine, not the executor",
                    self.req.job_id, call.uses.value
                ))
            }
        };
        if let Err(error) = self.prepare().await {
            self.emitter
                .log(&self.log, SETUP_STEP, &format!("##[error]{error}"));
            return Some(error);
        }
        if let Err(error) = self.resolve_actions_at_setup(&steps).await {
            self.emitter
                .log(&self.log, SETUP_STEP, &format!("##[error]{error}"));
            return Some(error);
        }
        // As on GitHub: every action's pre stage runs at job start, before the first step.
        self.run_pre_steps(&steps).await;
        let mut frame = Frame::job();
        for step in &steps {
            self.run_step(&mut frame, step).await;
        }
        self.run_post_steps().await;
        None
    }

    async fn prepare(&mut self) -> Result<(), String> {
        let layout = JobLayout {
            key: self.key.clone(),
            paths: self.paths.clone(),
        };
        let spec = layout.job_spec(
            &self.req,
            self.backend.name(),
            self.container.clone(),
            self.services.clone(),
        );
        let adopted = match self.prestarted.take() {
            Some(prestarted) => prestarted.adopt(&spec).await,
            None => None,
        };
        let prepared = match adopted {
            Some(prepared) => prepared,
            None => self.backend.prepare(&spec, &self.cancel).await,
        };
        match prepared {
            Ok(env) => {
                self.job_env = Some(env);
                Ok(())
            }
            Err(error) => {
                // Sweep whatever a half-done prepare left behind.
                let _ = self.backend.cleanup(&JobEnv::unprepared(&spec)).await;
                if self.cancel.is_cancelled() {
                    self.status.cancel();
                }
                Err(error.to_string())
            }
        }
    }

    async fn run_post_steps(&mut self) {
        while let Some(mut post) = self.post_steps.pop() {
            if let Some(key) = &post.state_key {
                self.stages.prepare_post(key, &mut post.run.work);
            }
            self.run_post_step(post).await;
        }
    }

    /// Removes the backend's objects and the job's folder. `Some(error)` when that failed.
    async fn cleanup(&mut self) -> Option<String> {
        let mut error = None;
        if let Some(prestarted) = self.prestarted.take() {
            // The job ended before `prepare` adopted it (a reusable-workflow call).
            error = prestarted.discard().await.err();
        }
        if let Some(env) = self.job_env.take() {
            if let Err(e) = self.backend.cleanup(&env).await {
                error = Some(format!("cleaning up the job failed: {e}"));
            }
            self.job_env = Some(env);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.paths.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                error.get_or_insert(format!("cannot remove {}: {e}", self.paths.dir.display()));
            }
        }
        error
    }

    /// Evaluates `jobs.<id>.outputs` after the steps. An output holding a secret is not sent:
    /// it becomes empty and a warning says so, as GitHub redacts it. Outputs larger than
    /// GitHub's 1 MiB in all fail the job with GitHub's message, and none is sent.
    fn job_outputs(&mut self) -> Result<IndexMap<String, String>, String> {
        let mut outputs = IndexMap::new();
        let job = self.req.job.clone();
        if job.outputs.is_empty() {
            return Ok(outputs);
        }
        let frame_steps = Value::object(self.job_steps.clone());
        let env = self.env_value(&[]);
        let job_ctx = job_context(self.status_word(), self.job_env.as_ref());
        let scope = Scope {
            contexts: &self.contexts,
            env: &env,
            steps: &frame_steps,
            github: &self.github,
            job: &job_ctx,
            action_inputs: None,
            status: StatusView::job(self.status.status()),
            workspace: &self.paths.workspace,
        };
        let mut warnings = Vec::new();
        for (name, template) in &job.outputs {
            let value = match scope.string(template) {
                Ok(value) => value,
                Err(error) => {
                    warnings.push(format!("output `{}`: {error}", name.value));
                    String::new()
                }
            };
            if self.log.mask(&value) != value {
                warnings.push(format!(
                    "Skip output '{}' since it may contain secret.",
                    name.value
                ));
                outputs.insert(name.value.clone(), String::new());
            } else {
                outputs.insert(name.value.clone(), value);
            }
        }
        for warning in warnings {
            self.emitter
                .annotate(&self.log, COMPLETE_STEP, AnnotationLevel::Warning, &warning);
        }
        let size: usize = outputs.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > MAX_VALUE_BYTES {
            let message = format!("Job outputs exceed {} bytes", thousands(MAX_VALUE_BYTES));
            self.emitter
                .annotate(&self.log, COMPLETE_STEP, AnnotationLevel::Error, &message);
            return Err(message);
        }
        Ok(outputs)
    }

    pub fn status_word(&self) -> &'static str {
        match self.status.status() {
            JobStatus::Success => "success",
            JobStatus::Failure => "failure",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Marks the job cancelled once its token fired (Ctrl-C, fail-fast or the job timeout).
    pub fn observe_cancellation(&mut self) {
        if self.cancel.is_cancelled() && self.status.status() != JobStatus::Cancelled {
            self.status.cancel();
            let message = if self.timed_out.load(Ordering::SeqCst) {
                format!(
                    "The job running on runner kiln has exceeded the maximum execution time of {} minutes.",
                    self.req.timeout.as_secs_f64() / 60.0
                )
            } else {
                "The operation was canceled.".to_owned()
            };
            self.emitter
                .annotate(&self.log, &self.req.name, AnnotationLevel::Error, &message);
        }
    }

    /// The `env` context: the job's env plus extra pairs (a step's or composite's env).
    pub fn env_value(&self, extra: &[(String, String)]) -> Value {
        let mut env = Object::case_sensitive();
        for (name, value) in self.env.iter().chain(extra.iter().map(|(k, v)| (k, v))) {
            env.insert(name.clone(), Value::string(value.as_str()));
        }
        Value::object(env)
    }

    pub fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }
}
