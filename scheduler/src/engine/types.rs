//! The values the engine exchanges with its driver: what to run (`Dispatch`), how a leg ended
//! (`JobCompletion`), what happened (`EngineEvent`) and the final `RunReport`.

use indexmap::IndexMap;
use kiln_workflow::model::{Job, Workflow};
use kiln_workflow::{Conclusion, Object};
use std::sync::Arc;
use std::time::SystemTime;

/// Everything a run starts from; the engine never reads files or the environment itself.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub workflow: Arc<Workflow>,
    /// The path shown in logs and used for `github.workflow_ref`.
    pub workflow_file: String,
    /// The `github` context without job-specific keys (event, event_name, sha, ref, ...).
    pub github: Object,
    pub inputs: Object,
    pub vars: Object,
    /// Secret name -> value.
    pub secrets: Object,
    /// `-j JOB`: only that job runs, its `needs` ignored (as act does).
    pub job_filter: Option<String>,
    /// `--matrix k:v`: only legs whose `matrix.k` loosely equals `v`.
    pub matrix_filter: Vec<(String, String)>,
}

/// How the engine decides what cannot be known before jobs really run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// A dry run: no job produces outputs, so a matrix computed from `needs` (typically
    /// `fromJSON(needs.setup.outputs.matrix)`) cannot be expanded. Such a job is reported as
    /// deferred (`EngineEvent::JobDeferred`) and concludes as a success without legs, as
    /// GitHub's plan leaves it open until the needed jobs have run, instead of failing on
    /// the empty output.
    pub defer_matrices_from_needs: bool,
}

/// One job leg of a run: unique within the run, stable for its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u32);

/// A job leg ready to execute now.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub leg: LegId,
    /// `build`, or `caller/build` for a job of a called reusable workflow.
    pub job_id: String,
    /// `build (3.12, ubuntu)`, `caller / build`.
    pub name: String,
    pub job: Arc<Job>,
    /// The workflow the job belongs to (the callee for jobs of reusable workflows).
    pub workflow: Arc<Workflow>,
    /// None when the job has no matrix.
    pub matrix: Option<Object>,
    /// github, inputs, vars, secrets, needs, strategy, matrix: ready for the runner, which
    /// evaluates `env`, `container`, `services` and the steps with them (adding what only it
    /// knows: `github.workspace`, `runner`, `env`, `steps`, `job`).
    pub contexts: Object,
    pub runs_on: Vec<String>,
    pub timeout_minutes: f64,
    pub continue_on_error: bool,
    pub environment: Option<EnvironmentEval>,
}

/// An evaluated `environment:` (name, url, `deployment`).
pub use kiln_workflow::eval::EnvironmentValues as EnvironmentEval;

/// How a dispatched leg ended, as the executor reports it.
#[derive(Debug, Clone)]
pub struct JobCompletion {
    pub conclusion: Conclusion,
    pub outputs: IndexMap<String, String>,
    pub started_at: SystemTime,
    pub finished_at: SystemTime,
    pub steps: Vec<StepRecord>,
    /// The job's step summaries (`GITHUB_STEP_SUMMARY`) as one Markdown document; empty when
    /// no step wrote one.
    pub summary: String,
}

impl JobCompletion {
    /// A completion with no outputs or steps, started and finished now.
    pub fn new(conclusion: Conclusion) -> JobCompletion {
        let now = SystemTime::now();
        JobCompletion {
            conclusion,
            outputs: IndexMap::new(),
            started_at: now,
            finished_at: now,
            steps: Vec::new(),
            summary: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    pub id: String,
    pub name: String,
    pub outcome: Conclusion,
    pub conclusion: Conclusion,
    /// What the step did with the cache, when it is a cache step (passed through to reports).
    pub cache: Option<kiln_workflow::StepCache>,
}

/// Something the driver should tell the user about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// A job (all its legs) will not run.
    JobSkipped {
        job_id: String,
        name: String,
        reason: String,
    },
    /// A job or leg failed before it could be dispatched (an expression error, a bad matrix,
    /// a reusable workflow that was not loaded).
    JobFailedToStart {
        job_id: String,
        name: String,
        error: String,
    },
    /// A job whose legs cannot be known before the run (see
    /// [`EngineOptions::defer_matrices_from_needs`]); it counts as succeeded.
    JobDeferred {
        job_id: String,
        name: String,
        reason: String,
    },
    /// The engine cancelled a leg: fail-fast, a concurrency group, or run cancellation. When
    /// the leg was running, the driver also got its id back to stop it.
    LegCancelled {
        leg: LegId,
        name: String,
        reason: String,
    },
    /// A leg waits for a concurrency group to free up (`leg` is `None` for the invocation of
    /// a called workflow waiting for its workflow-level group; `name` is the calling job's).
    LegPending {
        leg: Option<LegId>,
        name: String,
        group: String,
    },
}

/// The whole run: every job and leg, also those that never ran.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub workflow: String,
    pub conclusion: Conclusion,
    pub jobs: Vec<JobReport>,
}

/// One leg, or one job that ended before it was split into legs (skipped, failed to start).
#[derive(Debug, Clone)]
pub struct JobReport {
    pub leg: Option<LegId>,
    pub id: String,
    pub name: String,
    pub matrix: Option<Object>,
    pub conclusion: Conclusion,
    pub outputs: IndexMap<String, String>,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub steps: Vec<StepRecord>,
    /// The leg's step summaries (see [`JobCompletion::summary`]).
    pub summary: String,
    /// Why the engine decided the conclusion itself (skip reason, evaluation error).
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("job '{0}' given with -j is not in the workflow; list the jobs with `kiln run -l`")]
    UnknownJob(String),
    #[error("job '{job}' needs unknown job '{need}'; fix `needs:` in the workflow")]
    UnknownNeed { job: String, need: String },
    #[error("job '{0}' is part of a cycle in `needs:`; the jobs can never start")]
    Cycle(String),
    #[error("the workflow has no jobs")]
    NoJobs,
    #[error("reusable workflows nest more than {0} levels deep")]
    TooDeep(usize),
}
