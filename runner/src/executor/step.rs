//! One step: its name, condition, env, `continue-on-error` and `timeout-minutes`; `run`
//! scripts; and the process execution every kind of step shares (file commands, workflow
//! commands, exit codes, timeouts, cancellation).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use kiln_workflow::commands::AnnotationLevel;
use kiln_workflow::envfile::{check_env_name, prepend_paths};
use kiln_workflow::eval::{evaluate_bool, evaluate_number, evaluate_run_defaults};
use kiln_workflow::expr::JobStatus;
use kiln_workflow::model::{Step, StepAction, Template};
use kiln_workflow::uses::RepositoryRef;
use kiln_workflow::value::Value;
use kiln_workflow::Conclusion;
use tokio_util::sync::CancellationToken;

use super::context::{github_variables, github_with, job_context};
use super::files::{event_file, StepFiles};
use super::job::{Frame, JobRunner, PostStep};
use super::output::StepSink;
use super::scope::Scope;
use super::shell::Shell;
use super::status::{step_context_entry, Gate, StatusView, StepOutcome};
use super::{JobEvent, StepRecord};
use crate::backend::{BackendError, ExecOutcome, ExecSpec, LogSink};

/// PATH inside a container when the image's own is not known.
const CONTAINER_DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a composite action's steps see instead of the job's scope.
#[derive(Clone)]
pub struct CompositeScope {
    pub inputs: Value,
    /// `github` with `action_path` and friends.
    pub github_keys: Vec<(&'static str, String)>,
    /// The `uses:` step's env, inherited by the action's steps.
    pub env: Vec<(String, String)>,
    /// The repository `$/path` in the action's steps refers to.
    pub base: RepositoryRef,
}

/// Everything known about a step once it has been decided to run.
#[derive(Clone)]
pub struct StepCtx {
    pub id: String,
    pub name: String,
    /// Composite env and the step's own env, evaluated (the job env is added at exec time).
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    /// The step's condition is still true once the job is cancelled (`always()`): it is not
    /// killed by cancellation.
    pub survives_cancel: bool,
    /// `github` for this step (`action`, and `action_path` for actions).
    pub github: Value,
    pub timeout_minutes: f64,
}

/// A process to run as (part of) a step.
pub struct Process {
    pub argv: Vec<String>,
    pub workdir: String,
    /// Variables set for this process only (`INPUT_*`, `STATE_*`), above the step env.
    pub extra_env: Vec<(String, String)>,
}

/// Runs a step's process somewhere other than the job (a Docker action runs as a container of
/// its own, see `actions::docker`); the rest of the step (file commands, output lines, the
/// result) stays with [`JobRunner::exec_process_with`].
#[async_trait::async_trait]
pub trait ProcessLauncher: Send + Sync {
    async fn launch(
        &self,
        spec: &ExecSpec,
        logs: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<ExecOutcome, BackendError>;
}

/// What a process step produced.
pub struct ProcessResult {
    pub result: Conclusion,
    pub outputs: Vec<(String, String)>,
    pub state: Vec<(String, String)>,
}

/// A post step's work, run at job end.
pub struct PostRun {
    pub ctx: StepCtx,
    pub work: PostWork,
}

pub enum PostWork {
    /// A node action's `post` script.
    Process(Process),
    /// The save half of the built-in `actions/cache`.
    CacheSave(crate::actions::CacheSave),
    /// A Docker action's `post-entrypoint`.
    Container(crate::actions::ContainerRun),
}

/// Owned values a [`Scope`] borrows, so the runner can be mutated once evaluation is done.
pub struct ScopeParts {
    pub env: Value,
    pub steps: Value,
    pub job: Value,
    pub inputs: Option<Value>,
    pub github: Value,
    pub status: StatusView,
}

impl ScopeParts {
    pub fn scope<'a>(&'a self, runner: &'a JobRunner) -> Scope<'a> {
        Scope {
            contexts: &runner.contexts,
            env: &self.env,
            steps: &self.steps,
            github: &self.github,
            job: &self.job,
            action_inputs: self.inputs.as_ref(),
            status: self.status,
            workspace: &runner.paths.workspace,
        }
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl JobRunner {
    /// Runs one step in `frame` and records its outcome there (and in the job's step list
    /// for top-level steps).
    pub fn run_step<'a>(
        &'a mut self,
        frame: &'a mut Frame,
        step: &'a Step,
    ) -> BoxFuture<'a, StepOutcome> {
        Box::pin(async move {
            let started = Instant::now();
            self.observe_cancellation();
            let id = step.effective_id.clone();
            let (outcome, name, outputs) = self.decide_and_run(frame, step).await;
            // The log and report are masked as a whole on GitHub: a secret the step itself
            // registered hides in its name from now on.
            let name = self.log.mask(&name);
            if step.id.is_some() {
                frame
                    .steps
                    .insert(id.clone(), step_context_entry(outcome, &outputs));
            }
            frame.status.record(outcome.conclusion);
            if frame.depth == 0 {
                self.status.record(outcome.conclusion);
                self.job_steps = frame.steps.clone();
                self.records.push(StepRecord {
                    id: id.clone(),
                    name: name.clone(),
                    outcome: outcome.outcome,
                    conclusion: outcome.conclusion,
                });
            }
            if frame.depth == 0 {
                self.emitter.send(JobEvent::StepFinished {
                    id,
                    name,
                    outcome: outcome.outcome,
                    conclusion: outcome.conclusion,
                    duration: started.elapsed(),
                });
            }
            outcome
        })
    }

    async fn decide_and_run(
        &mut self,
        frame: &mut Frame,
        step: &Step,
    ) -> (StepOutcome, String, Vec<(String, String)>) {
        let composite_env = frame
            .composite
            .as_ref()
            .map(|c| c.env.clone())
            .unwrap_or_default();
        let github = self.step_github(frame, &step.effective_id);
        let parts = self.scope_parts(frame, &composite_env, github.clone());
        let scope = parts.scope(self);
        let cancelled_view = StatusView {
            job: JobStatus::Cancelled,
            action: scope.status.action,
        };
        let name = match &step.name {
            Some(template) => scope
                .string(template)
                .unwrap_or_else(|_| template.raw.clone()),
            None => default_name(step),
        };
        let name = self.log.mask(&name);
        let gate = scope.gate(&step.condition);
        // A skipped step never started: it shows only as skipped, as on GitHub.
        if gate == Gate::Skip {
            return (StepOutcome::skipped(), name, Vec::new());
        }
        if frame.depth == 0 {
            self.emitter.send(JobEvent::StepStarted {
                id: step.effective_id.clone(),
                name: name.clone(),
            });
        }
        match gate {
            Gate::Skip => return (StepOutcome::skipped(), name, Vec::new()),
            Gate::Fail(message) => {
                self.emitter
                    .annotate(&self.log, &name, AnnotationLevel::Error, &message);
                return (
                    StepOutcome::new(Conclusion::Failure, false),
                    name,
                    Vec::new(),
                );
            }
            Gate::Run => {}
        }
        let survives_cancel = Scope {
            status: cancelled_view,
            ..scope
        }
        .gate(&step.condition)
            == Gate::Run;
        let prepared = prepare_step(&scope, step, composite_env);
        let continue_on_error = match &step.continue_on_error {
            Some(value) => evaluate_bool(value, &scope).unwrap_or(false),
            None => false,
        };
        let (step_env, timeout_minutes) = match prepared {
            Ok(prepared) => prepared,
            Err(message) => {
                self.emitter
                    .annotate(&self.log, &name, AnnotationLevel::Error, &message);
                return (
                    StepOutcome::new(Conclusion::Failure, continue_on_error),
                    name,
                    Vec::new(),
                );
            }
        };
        let ctx = StepCtx {
            id: step.effective_id.clone(),
            name: name.clone(),
            env: step_env,
            timeout: timeout_minutes.map(|m| Duration::from_secs_f64(m * 60.0)),
            survives_cancel,
            github,
            timeout_minutes: timeout_minutes.unwrap_or(0.0),
        };
        let (result, outputs) = match &step.action {
            StepAction::Run {
                run,
                shell,
                working_directory,
            } => {
                let (result, outputs) = self
                    .run_script(frame, &ctx, run, shell.as_ref(), working_directory.as_ref())
                    .await;
                (result, outputs)
            }
            StepAction::Uses { uses, with } => {
                self.run_action(frame, &ctx, &uses.value, with).await
            }
            _ => {
                self.emitter.annotate(
                    &self.log,
                    &name,
                    AnnotationLevel::Error,
                    "background, wait, cancel and parallel steps are not supported by kiln yet",
                );
                (Conclusion::Failure, Vec::new())
            }
        };
        (StepOutcome::new(result, continue_on_error), name, outputs)
    }

    pub fn scope_parts(
        &self,
        frame: &Frame,
        env: &[(String, String)],
        github: Value,
    ) -> ScopeParts {
        ScopeParts {
            env: self.env_value(env),
            steps: Value::object(frame.steps.clone()),
            job: job_context(self.status_word(), self.job_env.as_ref()),
            inputs: frame.composite.as_ref().map(|c| c.inputs.clone()),
            github,
            status: self.status_view(frame),
        }
    }

    pub fn status_view(&self, frame: &Frame) -> StatusView {
        StatusView {
            job: self.status.status(),
            action: frame.composite.as_ref().map(|_| frame.status.status()),
        }
    }

    /// The repository a `$/path` in `frame`'s steps refers to: the composite action's own, or
    /// the workflow's.
    pub fn frame_base(&self, frame: &Frame) -> RepositoryRef {
        match &frame.composite {
            Some(composite) => composite.base.clone(),
            None => self.workflow_base(),
        }
    }

    pub fn step_github(&self, frame: &Frame, action: &str) -> Value {
        let event_path = super::files::event_file_path(&self.paths.temp);
        let mut keys: Vec<(&str, String)> = vec![
            ("action", action.to_owned()),
            ("event_path", event_path.to_string_lossy().into_owned()),
        ];
        if let Some(composite) = &frame.composite {
            keys.extend(composite.github_keys.iter().map(|(k, v)| (*k, v.clone())));
        }
        github_with(&self.github, &keys)
    }

    async fn run_script(
        &mut self,
        frame: &Frame,
        ctx: &StepCtx,
        run: &Template,
        shell: Option<&Template>,
        working_directory: Option<&Template>,
    ) -> (Conclusion, Vec<(String, String)>) {
        let parts = self.scope_parts(frame, &ctx.env, ctx.github.clone());
        let scope = parts.scope(self);
        let evaluated = (|| -> Result<(String, Option<String>, String), String> {
            let script = scope.string(run)?;
            // Job and workflow `defaults.run` do not reach into composite actions; the job's
            // may use expressions, also in keys.
            let (default_shell, default_workdir) = if frame.composite.is_none() {
                let workflow = self.req.workflow.defaults.clone().unwrap_or_default();
                let (shell, workdir) = match &self.req.job.defaults {
                    Some(job) => evaluate_run_defaults(job, &scope)?,
                    None => (None, None),
                };
                let literal = |t: Option<Template>| t.map(|t| t.raw);
                (
                    shell.or(literal(workflow.shell)),
                    workdir.or(literal(workflow.working_directory)),
                )
            } else {
                (None, None)
            };
            let shell = match shell {
                Some(t) => Some(scope.string(t)?),
                None => default_shell,
            };
            let workdir = match working_directory {
                Some(t) => scope.string(t)?,
                None => default_workdir.unwrap_or_default(),
            };
            Ok((script, shell, workdir))
        })();
        let (script, shell, workdir) = match evaluated {
            Ok(values) => values,
            Err(message) => return (self.fail(&ctx.name, &message), Vec::new()),
        };
        let resolved = match shell {
            // Whether the container has bash is decided in it, by the step's own process:
            // asking first would cost a round trip to the daemon per job.
            None if self.backend.name() == "docker" => Ok(Shell::default_in_container()),
            None => Shell::resolve(None, self.bash_on_host()),
            Some(shell) => Shell::resolve(Some(&shell), true),
        };
        let shell = match resolved {
            Ok(shell) => shell,
            Err(message) => return (self.fail(&ctx.name, &message), Vec::new()),
        };
        let sequence = self.next_sequence();
        let script_path = self
            .paths
            .temp
            .join(format!("step-{sequence}{}", shell.extension));
        if let Err(e) = super::files::create_fresh(&script_path, shell.script(&script).as_bytes()) {
            let message = format!("cannot write the script {}: {e}", script_path.display());
            return (self.fail(&ctx.name, &message), Vec::new());
        }
        let process = Process {
            argv: shell.command(&script_path.to_string_lossy()),
            workdir,
            extra_env: Vec::new(),
        };
        let result = self.exec_process(ctx, process).await;
        let _ = std::fs::remove_file(&script_path);
        (result.result, result.outputs)
    }

    /// Logs an error for the step and returns the failure result.
    pub fn fail(&self, step: &str, message: &str) -> Conclusion {
        self.emitter
            .annotate(&self.log, step, AnnotationLevel::Error, message);
        Conclusion::Failure
    }

    /// Whether `bash` is on the host's PATH to be the default shell; asked once per job.
    fn bash_on_host(&mut self) -> bool {
        if let Some(known) = self.bash_available {
            return known;
        }
        let path = self.lookup_path();
        let found = std::env::split_paths(&path).any(|dir| dir.join("bash").is_file());
        self.bash_available = Some(found);
        found
    }

    /// PATH as steps see it on the host: `GITHUB_PATH` entries, then the env's PATH.
    pub fn lookup_path(&self) -> String {
        let base = self
            .env
            .get("PATH")
            .cloned()
            .or_else(|| {
                self.base_env
                    .iter()
                    .find(|(k, _)| k == "PATH")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| CONTAINER_DEFAULT_PATH.to_owned());
        if self.path_additions.is_empty() {
            return base;
        }
        format!("{}:{base}", self.path_additions.join(":"))
    }

    /// The complete environment of a step's process, lowest precedence first.
    fn process_env(
        &self,
        ctx: &StepCtx,
        files: &StepFiles,
        event_path: &std::path::Path,
        extra: &[(String, String)],
    ) -> Vec<(String, String)> {
        let mut env: IndexMap<String, String> = self.base_env.iter().cloned().collect();
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(ctx.env.iter().cloned());
        env.extend(extra.iter().cloned());
        let docker = self.backend.name() == "docker";
        if !docker || !self.path_additions.is_empty() || env.contains_key("PATH") {
            let base = env
                .get("PATH")
                .cloned()
                .unwrap_or_else(|| CONTAINER_DEFAULT_PATH.to_owned());
            let path = if self.path_additions.is_empty() {
                base
            } else {
                format!("{}:{base}", self.path_additions.join(":"))
            };
            env.insert("PATH".to_owned(), path);
        }
        let mut keys = files_keys(files);
        keys.push(("event_path", event_path.to_string_lossy().into_owned()));
        let github = github_with(&ctx.github, &keys);
        let mut runtime = Vec::new();
        github_variables(&github, &mut runtime);
        runtime.extend(self.runner.variables());
        if let Some(cache) = &self.req.cache {
            runtime.extend(cache.variables());
        }
        runtime.push(("GITHUB_ACTIONS".to_owned(), "true".to_owned()));
        env.extend(runtime);
        env.entry("CI".to_owned())
            .or_insert_with(|| "true".to_owned());
        env.into_iter().collect()
    }

    /// Runs one process as the step: fresh file commands, streamed and masked output,
    /// workflow commands, then the files are applied for later steps.
    pub async fn exec_process(&mut self, ctx: &StepCtx, process: Process) -> ProcessResult {
        self.exec_process_with(ctx, process, None).await
    }

    /// [`Self::exec_process`], with the process run by `launcher` instead of in the job.
    pub async fn exec_process_with(
        &mut self,
        ctx: &StepCtx,
        process: Process,
        launcher: Option<&dyn ProcessLauncher>,
    ) -> ProcessResult {
        let failed = |result| ProcessResult {
            result,
            outputs: Vec::new(),
            state: Vec::new(),
        };
        if self.kill.is_cancelled() {
            return failed(Conclusion::Cancelled);
        }
        let Some(job_env) = self.job_env.clone() else {
            return failed(self.fail(&ctx.name, "the job environment is not prepared"));
        };
        let sequence = self.next_sequence();
        let files = match StepFiles::create(&self.paths.files, sequence, &mut self.spare_files) {
            Ok(files) => files,
            Err(e) => {
                let message = format!("cannot create the step's file commands: {e}");
                return failed(self.fail(&ctx.name, &message));
            }
        };
        let event = match &ctx.github {
            Value::Object(github) => github.get("event").map(Value::to_json),
            _ => None,
        };
        let event_path = match event_file(
            &self.paths.temp,
            &event.unwrap_or_else(|| serde_json::json!({})),
        ) {
            Ok(path) => path,
            Err(e) => {
                let message = format!("cannot write the event payload file: {e}");
                return failed(self.fail(&ctx.name, &message));
            }
        };
        let env = self.process_env(ctx, &files, &event_path, &process.extra_env);
        let flag = |name: &str| {
            env.iter()
                .any(|(k, v)| k == name && v.eq_ignore_ascii_case("true"))
        };
        let (allow_unsecure, debug) = (
            flag("ACTIONS_ALLOW_UNSECURE_COMMANDS"),
            flag("ACTIONS_STEP_DEBUG"),
        );
        let spec = ExecSpec {
            argv: process.argv,
            env,
            workdir: process.workdir,
            timeout: ctx.timeout,
        };
        // A step that runs on cancellation (`always()`) is still stopped when the job is killed.
        let token = if ctx.survives_cancel {
            self.kill.clone()
        } else {
            self.cancel.clone()
        };
        let mut sink = StepSink::new(
            &mut self.log,
            &self.emitter,
            &ctx.name,
            &mut self.budget,
            allow_unsecure,
            debug,
        );
        let outcome = match launcher {
            Some(launcher) => launcher.launch(&spec, &mut sink, &token).await,
            None => self.backend.exec(&job_env, &spec, &mut sink, &token).await,
        };
        let effects = std::mem::take(&mut sink.effects);
        drop(sink);
        let written = files.collect(&mut self.spare_files, &mut self.budget);
        let mut result = match outcome {
            Ok(ExecOutcome::Exited(0)) => Conclusion::Success,
            Ok(ExecOutcome::Exited(code)) => self.fail(
                &ctx.name,
                &format!("Process completed with exit code {code}."),
            ),
            Ok(ExecOutcome::TimedOut) => self.fail(
                &ctx.name,
                &format!(
                    "The action '{}' has timed out after {} minutes.",
                    ctx.name, ctx.timeout_minutes
                ),
            ),
            Ok(ExecOutcome::Cancelled) => Conclusion::Cancelled,
            Err(e) if token.is_cancelled() => {
                self.emitter.log(&self.log, &ctx.name, &e.to_string());
                Conclusion::Cancelled
            }
            Err(e) => self.fail(&ctx.name, &e.to_string()),
        };
        for message in effects.failure_messages().iter().chain(&written.errors) {
            result = self.fail(&ctx.name, message);
        }
        for warning in &written.warnings {
            self.emitter
                .annotate(&self.log, &ctx.name, AnnotationLevel::Error, warning);
        }
        for (name, value) in effects.env.into_iter().chain(written.env) {
            match check_env_name(&name) {
                Ok(()) => {
                    self.env.insert(name, value);
                }
                Err(error) => self.emitter.annotate(
                    &self.log,
                    &ctx.name,
                    AnnotationLevel::Error,
                    &error.to_string(),
                ),
            }
        }
        let added: Vec<String> = effects.path.into_iter().chain(written.path).collect();
        prepend_paths(&mut self.path_additions, &added);
        if let Some(summary) = written.summary {
            let masked: String = summary
                .split('\n')
                .map(|line| self.log.mask(line))
                .collect::<Vec<_>>()
                .join("\n");
            self.summaries.push(masked.clone());
            self.emitter.send(JobEvent::Summary {
                step: ctx.name.clone(),
                markdown: masked,
            });
        }
        ProcessResult {
            result,
            outputs: effects.outputs.into_iter().chain(written.outputs).collect(),
            state: effects.state.into_iter().chain(written.state).collect(),
        }
    }

    /// A post step (`post:` of a node action) at job end; its `post-if` defaults to `always()`.
    pub async fn run_post_step(&mut self, post: PostStep) {
        let started = Instant::now();
        self.observe_cancellation();
        let id = format!("post_{}", post.run.ctx.id);
        let post = PostStep {
            name: self.log.mask(&post.name),
            ..post
        };
        self.emitter.send(JobEvent::StepStarted {
            id: id.clone(),
            name: post.name.clone(),
        });
        let gate = self.raw_condition_gate(&post.run.ctx, &post.condition);
        let outcome = match gate {
            Gate::Skip => StepOutcome::skipped(),
            Gate::Fail(message) => StepOutcome::new(self.fail(&post.name, &message), false),
            Gate::Run => {
                let mut ctx = post.run.ctx;
                ctx.name = post.name.clone();
                let result = match post.run.work {
                    PostWork::Process(process) => self.exec_process(&ctx, process).await.result,
                    PostWork::CacheSave(save) => self.cache_post(&ctx, save).await,
                    PostWork::Container(run) => self.run_container(&ctx, run).await.result,
                };
                StepOutcome::new(result, false)
            }
        };
        self.status.record(outcome.conclusion);
        self.records.push(StepRecord {
            id: id.clone(),
            name: post.name.clone(),
            outcome: outcome.outcome,
            conclusion: outcome.conclusion,
        });
        self.emitter.send(JobEvent::StepFinished {
            id,
            name: post.name,
            outcome: outcome.outcome,
            conclusion: outcome.conclusion,
            duration: started.elapsed(),
        });
    }
}

/// A step's evaluated env and its timeout in minutes.
type PreparedStep = (Vec<(String, String)>, Option<f64>);

/// The step's env and timeout; an evaluation error fails the step.
fn prepare_step(
    scope: &Scope<'_>,
    step: &Step,
    mut env: Vec<(String, String)>,
) -> Result<PreparedStep, String> {
    env.extend(scope.env(&step.env)?);
    let timeout = match &step.timeout_minutes {
        Some(value) => {
            let minutes = evaluate_number(value, scope).map_err(|e| e.message)?;
            if !minutes.is_finite() || minutes <= 0.0 {
                return Err(format!(
                    "timeout-minutes must be a positive number, not {minutes}"
                ));
            }
            Some(minutes)
        }
        None => None,
    };
    Ok((env, timeout))
}

fn files_keys(files: &StepFiles) -> Vec<(&'static str, String)> {
    files
        .variables()
        .into_iter()
        .map(|(var, path)| {
            let key = match var {
                "GITHUB_ENV" => "env",
                "GITHUB_OUTPUT" => "output",
                "GITHUB_STATE" => "state",
                "GITHUB_PATH" => "path",
                _ => "step_summary",
            };
            (key, path)
        })
        .collect()
}

/// GitHub's default display name: `Run <first line of the script>` or `Run <uses>`.
fn default_name(step: &Step) -> String {
    match &step.action {
        StepAction::Run { run, .. } => {
            let first = run
                .raw
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("");
            format!("Run {first}")
        }
        StepAction::Uses { uses, .. } => format!("Run {}", uses.value),
        _ => step.effective_id.clone(),
    }
}
