//! The runner agent behind `kiln runner register` and `kiln runner start`: a registered runner
//! that takes jobs from a kiln scheduler over gRPC (kiln-proto's `RunnerService`) and runs them
//! with the same executor as `kiln run`.
//!
//! - [`register`] trades a registration token for the runner's identity ([`Credentials`]).
//! - [`run`] is the runner: one loop (Heartbeat every heartbeat interval, PollJob while a slot
//!   is free) and one task per job (workspace source, executor, and the calls that report it).
//!
//! Prost types stay in this module: `client` speaks to the scheduler and `convert` turns its
//! messages into the executor's types and back. The library prints nothing: what happens is
//! sent as [`AgentEvent`]s for the binary to show.

mod client;
mod config;
mod convert;
mod credentials;
#[cfg(feature = "test-support")]
pub mod fake;
mod instance;
mod job;
mod logs;
mod reporter;
mod run;
mod source;
mod tracked;
mod workdir;

use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::platform::PlatformMap;

pub use client::{register, Registration};
pub use config::{AgentConfig, ExecOptions, Executor, Stop};
pub use credentials::{
    default_config_dir, Credentials, CredentialsError, Timings, CREDENTIALS_FILE,
};
pub use instance::{remove_objects_of_instance, Instance, RUNNER_LABEL, RUNNER_PROCESS_LABEL};
pub use job::JobOutcome;
pub use run::run;

/// What the runner did, for the binary to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// The work directory is ready and the loop starts.
    Started {
        name: String,
        url: String,
        capacity: usize,
    },
    /// Something an earlier instance of this runner left behind, and what became of it.
    Leftover(String),
    /// Calls to the scheduler fail; the runner keeps trying (first failure of a series).
    Unreachable {
        detail: String,
    },
    /// Calls succeed again after failures.
    Reachable,
    JobStarted {
        job_id: String,
        name: String,
        run_id: String,
        attempt: u32,
    },
    CancelRequested {
        job_id: String,
        name: String,
    },
    JobFinished {
        job_id: String,
        name: String,
        outcome: JobOutcome,
    },
    /// No more jobs are taken; the running ones finish.
    Draining {
        running: usize,
    },
    Warning(String),
}

/// Why the runner returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentExit {
    /// `--once`: the job ran and this is how it ended.
    Once(JobOutcome),
    /// Asked to drain: every running job finished.
    Drained,
    /// Asked to abort: the running jobs were stopped without reporting.
    Aborted,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the scheduler at {url} refused this runner's token ({detail}): the runner was removed, or registered again under its name; register it again with `kiln runner register`")]
    Unauthenticated { url: String, detail: String },
    #[error("the scheduler at {url} refused the registration token ({detail}): use the one in the scheduler's data directory (`registration-token`) or given to `kiln scheduler --registration-token`")]
    RegistrationRefused { url: String, detail: String },
    #[error("the scheduler at {url} rejected {call}: {detail} (a version mismatch between this runner and the scheduler, or a bug; not retried)")]
    Rejected {
        url: String,
        call: &'static str,
        detail: String,
    },
    #[error("cannot reach the scheduler at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("invalid scheduler URL `{url}`: {detail}")]
    Url { url: String, detail: String },
    #[error("the runner's work directory {0}")]
    WorkDir(String),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Docker(#[from] crate::backend::BackendError),
    #[error("Docker did not finish within {seconds} s")]
    DockerTimeout { seconds: u64 },
}

/// The cancel and stop tokens of one job.
#[derive(Clone, Default)]
pub(crate) struct JobControl {
    /// A user cancelled the job: the executor stops it and it completes as cancelled.
    pub cancel: CancellationToken,
    /// The job must end at once and nothing more be sent for it.
    pub stop: CancellationToken,
}

/// What every job task of one runner shares.
pub(crate) struct Shared {
    pub scheduler: client::Scheduler,
    pub timings: Timings,
    pub work: workdir::WorkDir,
    pub sources: source::Sources,
    pub executor: Executor,
    pub platforms: PlatformMap,
    pub options: ExecOptions,
    pub notify: UnboundedSender<AgentEvent>,
    pub retry_cap: Duration,
    pub reachability: std::sync::Arc<run::Reachability>,
    /// Put on every container and network of the runner's jobs (see [`instance`]).
    pub job_labels: Vec<(String, String)>,
}
