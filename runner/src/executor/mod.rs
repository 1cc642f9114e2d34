//! The job executor: runs one job leg's steps on a [`Backend`] the way GitHub's runner does,
//! streams masked logs as [`JobEvent`]s and returns a [`JobResult`].

pub(crate) mod context;
mod files;
pub mod hashing;
pub(crate) mod job;
mod job_keys;
mod layout;
mod output;
mod prestart;
pub mod scope;
mod shell;
pub mod status;
pub(crate) mod step;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use indexmap::IndexMap;
use kiln_workflow::commands::Annotation;
use kiln_workflow::model::{Job, Workflow};
use kiln_workflow::value::Object;
use kiln_workflow::Conclusion;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;

pub use files::{MAX_JOB_VALUE_BYTES, MAX_SUMMARY_BYTES, MAX_VALUE_BYTES};
/// [`run_job`] with both ways of stopping it ([`JobStop`]), on a container started ahead by
/// [`prestart`] when there is one.
pub use job::run as run_job_with;
pub use output::LogState;
pub use prestart::{prestart, Prestarted};
pub use shell::{Shell, INVALID_SHELL};

/// One job leg to execute.
#[derive(Clone)]
pub struct JobRequest {
    /// Display name (`build (3.12, ubuntu)`).
    pub name: String,
    /// Job id (`build`, or `caller/build` inside a reusable workflow).
    pub job_id: String,
    pub job: Arc<Job>,
    pub workflow: Arc<Workflow>,
    /// github, inputs, vars, secrets, needs, strategy, matrix: as the engine evaluated them.
    /// The executor evaluates the workflow's and job's `env`, the job's `container:` and
    /// `services:` and the steps with them, adding `github.workspace`, `runner` and `env`.
    pub contexts: Object,
    /// Variables below the workflow's `env` (`--env-file`); later entries win.
    pub env: Vec<(String, String)>,
    /// Docker executor: the image for a job without `container:`.
    pub platform_image: Option<String>,
    pub timeout: Duration,
    /// Values to mask in every log line, output and summary.
    pub secrets: Vec<String>,
    /// The repository `kiln run` was started in (checkout copies it, local actions live in it).
    pub source_repo: PathBuf,
    pub dirs: RunDirs,
    /// `--action-cache DIR`: remote actions at `DIR/owner/repo@ref/`.
    pub action_cache: Option<PathBuf>,
    /// Where remote actions are cloned from (`https://github.com` when unset).
    pub action_base_url: Option<String>,
    /// No network: remote actions come only from the cache and `local_repositories`.
    pub offline: bool,
    /// `--local-repository owner/repo@ref=PATH`.
    pub local_repositories: Vec<(String, PathBuf)>,
    /// The kiln cache server for `actions/cache` and for stock cache clients in steps. `None`:
    /// the built-in cache steps warn and miss.
    pub cache: Option<CacheEndpoint>,
    /// The scheduler's artifact store of the run. `None`: artifacts live in `dirs.artifacts()`.
    pub artifacts: Option<crate::actions::ArtifactServer>,
}

/// Where the job's cache lives and the job token for it (`CacheService::mint_token`).
///
/// `url` is used twice: by kiln's built-in `actions/cache` (on the host) and, exported as
/// `ACTIONS_CACHE_URL`/`ACTIONS_RESULTS_URL`, by cache clients inside the job. For host jobs
/// `http://127.0.0.1:PORT/` works. For container jobs it must be reachable from the host and
/// from the containers: serve on `0.0.0.0` (or the docker bridge address) and pass the bridge
/// gateway, e.g. `http://172.17.0.1:PORT/`, never `127.0.0.1`. Give it no path: stock v2
/// clients drop any path and call `/twirp/...` at the root.
#[derive(Clone, Debug)]
pub struct CacheEndpoint {
    pub url: String,
    pub token: String,
}

impl CacheEndpoint {
    /// What GitHub's runner exports for the cache toolkit, shaped for `@actions/cache` v1 (the
    /// URL ends in `/`) and v2 (the results URL is the origin only).
    pub fn variables(&self) -> Vec<(String, String)> {
        let base = format!("{}/", self.url.trim_end_matches('/'));
        let origin = match base.find("://") {
            Some(scheme_end) => match base[scheme_end + 3..].find('/') {
                Some(path_start) => base[..scheme_end + 3 + path_start + 1].to_owned(),
                None => base.clone(),
            },
            None => base.clone(),
        };
        vec![
            ("ACTIONS_CACHE_URL".to_owned(), base),
            ("ACTIONS_RESULTS_URL".to_owned(), origin),
            ("ACTIONS_RUNTIME_TOKEN".to_owned(), self.token.clone()),
            ("ACTIONS_CACHE_SERVICE_V2".to_owned(), "true".to_owned()),
        ]
    }
}

/// The directories of one run. Jobs get their own folders below `root`.
#[derive(Debug, Clone)]
pub struct RunDirs {
    pub root: PathBuf,
}

impl RunDirs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDirs { root: root.into() }
    }

    /// Per-job workspaces, temp and file-command folders.
    pub fn jobs(&self) -> PathBuf {
        self.root.join("jobs")
    }

    /// Artifacts uploaded by `actions/upload-artifact`, one folder per artifact name.
    pub fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }

    /// Remote actions cloned during the run.
    pub fn actions(&self) -> PathBuf {
        self.root.join("actions")
    }
}

/// Something that happened while the job ran. Text is already masked.
#[derive(Debug, Clone)]
pub enum JobEvent {
    StepStarted {
        id: String,
        name: String,
    },
    /// One line of output, or a message of the runner's own, for the step named `step`.
    Log {
        step: String,
        line: String,
    },
    StepFinished {
        id: String,
        name: String,
        outcome: Conclusion,
        conclusion: Conclusion,
        duration: Duration,
    },
    Annotation(AnnotationEvent),
    /// A step's `GITHUB_STEP_SUMMARY` Markdown.
    Summary {
        step: String,
        markdown: String,
    },
}

/// An `::error`/`::warning`/`::notice` command (message and title already masked), or an
/// error of the runner's own, and the step it came from.
#[derive(Debug, Clone)]
pub struct AnnotationEvent {
    pub step: String,
    pub annotation: Annotation,
}

/// A step as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    pub id: String,
    pub name: String,
    pub outcome: Conclusion,
    pub conclusion: Conclusion,
}

/// How the job ended.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub conclusion: Conclusion,
    /// Job outputs; an output holding a secret is sent empty, as GitHub redacts it.
    pub outputs: IndexMap<String, String>,
    pub steps: Vec<StepRecord>,
    pub started_at: SystemTime,
    pub finished_at: SystemTime,
    /// Why the job failed outside of its steps (setup, cleanup), for the summary.
    pub error: Option<String>,
    /// Every step summary, in step order (masked).
    pub summaries: Vec<String>,
    /// What cache steps did, by index in `steps` (a composite step's entry is its last cache
    /// step's).
    pub caches: std::collections::BTreeMap<usize, kiln_workflow::StepCache>,
}

/// How a running job is told to stop.
#[derive(Clone, Default)]
pub struct JobStop {
    /// Cancels the job as GitHub does: the running step is stopped unless it runs on
    /// cancellation (`if: always()`, `cancelled()`), and later steps run only if their `if:`
    /// still holds.
    pub cancel: CancellationToken,
    /// Stops everything the job still runs, those steps too; nothing more starts.
    pub kill: CancellationToken,
}

impl JobStop {
    /// Only `cancel`: nothing kills the job.
    pub fn cancelled_by(cancel: CancellationToken) -> JobStop {
        JobStop {
            cancel,
            kill: CancellationToken::new(),
        }
    }
}

/// Runs one job leg to its end. Never panics on input; everything the job created is removed
/// through [`Backend::cleanup`] whatever happens.
pub async fn run_job(
    req: JobRequest,
    backend: Arc<dyn Backend>,
    events: UnboundedSender<JobEvent>,
    cancel: CancellationToken,
) -> JobResult {
    job::run(req, backend, events, JobStop::cancelled_by(cancel), None).await
}

/// [`run_job`] on a container started ahead by [`prestart`] for this job. The job adopts it
/// when it needs the same container; otherwise it is removed and the job prepares its own.
pub async fn run_job_prestarted(
    req: JobRequest,
    backend: Arc<dyn Backend>,
    events: UnboundedSender<JobEvent>,
    cancel: CancellationToken,
    prestarted: Prestarted,
) -> JobResult {
    let stop = JobStop::cancelled_by(cancel);
    job::run(req, backend, events, stop, Some(prestarted)).await
}
