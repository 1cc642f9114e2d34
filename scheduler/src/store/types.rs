//! The store's records: plain Rust values, no gRPC types (the services convert at their
//! edge). Times are milliseconds since the Unix epoch, given by the caller, so the store never
//! reads the clock and tests control it.

use super::error::{Result, StoreError};
use crate::engine::StepRecord;
use kiln_workflow::Conclusion;

/// Milliseconds since the Unix epoch.
pub type UnixMs = i64;

/// Infrastructure losses (leases that expired after the runner confirmed the job) a job
/// survives before it fails.
pub const MAX_ATTEMPTS: u32 = 3;

/// The id of a job leg: the run's id and the engine's leg number, unique across the
/// scheduler's lifetime because run ids are never reused.
pub fn job_id(run_id: &str, leg: u32) -> String {
    format!("{run_id}.{leg}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum JobState {
    /// Waiting for its needs or its concurrency group; not in the queue.
    Waiting,
    /// In the queue, waiting for a runner with matching labels.
    Queued,
    /// Leased to a runner.
    Running,
    Done,
}

/// Stored as 1 running, 2 done (the SQL uses the numbers).
impl RunState {
    pub(crate) fn from_code(code: i64) -> Result<RunState> {
        match code {
            1 => Ok(RunState::Running),
            2 => Ok(RunState::Done),
            _ => Err(StoreError::Corrupt(format!("run state {code}"))),
        }
    }
}

/// Stored as 1 waiting, 2 queued, 3 running, 4 done (the SQL and its partial indexes use
/// the numbers).
impl JobState {
    pub(crate) fn from_code(code: i64) -> Result<JobState> {
        match code {
            1 => Ok(JobState::Waiting),
            2 => Ok(JobState::Queued),
            3 => Ok(JobState::Running),
            4 => Ok(JobState::Done),
            _ => Err(StoreError::Corrupt(format!("job state {code}"))),
        }
    }
}

pub(crate) fn conclusion_from_str(text: &str) -> Result<Conclusion> {
    match text {
        "success" => Ok(Conclusion::Success),
        "failure" => Ok(Conclusion::Failure),
        "cancelled" => Ok(Conclusion::Cancelled),
        "skipped" => Ok(Conclusion::Skipped),
        _ => Err(StoreError::Corrupt(format!("conclusion '{text}'"))),
    }
}

pub(crate) fn optional_conclusion(text: Option<String>) -> Result<Option<Conclusion>> {
    text.as_deref().map(conclusion_from_str).transpose()
}

/// The serialized inputs a run's engine is rebuilt from (the resolved run spec), opaque to
/// the store. `format` says how `bytes` are encoded, so a later kiln can read older runs or
/// refuse them clearly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSpec {
    pub format: u32,
    pub bytes: Vec<u8>,
}

/// A run to create (one workflow, one attempt).
#[derive(Debug, Clone)]
pub struct NewRun {
    pub workflow_name: String,
    pub workflow_path: String,
    pub event_name: String,
    pub sha: String,
    pub git_ref: String,
    /// 1, then one more per rerun.
    pub attempt: u32,
    /// The run this one reruns.
    pub rerun_of: Option<String>,
    pub spec: StoredSpec,
}

/// A run's summary row (GetRun without jobs, ListRuns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub id: String,
    pub submission_id: String,
    pub workflow_name: String,
    pub workflow_path: String,
    pub event_name: String,
    pub sha: String,
    pub git_ref: String,
    pub attempt: u32,
    pub rerun_of: Option<String>,
    pub state: RunState,
    pub conclusion: Option<Conclusion>,
    pub created_ms: UnixMs,
    pub finished_ms: Option<UnixMs>,
}

/// What SubmitRun created, or what an earlier call with the same idempotency key created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub submission_id: String,
    pub runs: Vec<RunRecord>,
    pub notices: Vec<String>,
    /// False when the key was seen before and nothing was created.
    pub created: bool,
}

/// One operation applied to a run's engine, as the driver serialized it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOp {
    /// 1 for the run's first op.
    pub seq: u64,
    pub op: Vec<u8>,
}

/// A job leg the engine created.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub run_id: String,
    pub leg: u32,
    /// `build`, or `caller/build`.
    pub job_path: String,
    /// The display name.
    pub name: String,
    /// The leg's matrix values as a JSON object; None for a job without a matrix.
    pub matrix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub job_id: String,
    pub run_id: String,
    pub leg: u32,
    pub job_path: String,
    pub name: String,
    /// As the workflow spells them (matching folds case).
    pub runs_on: Vec<String>,
    pub state: JobState,
    pub conclusion: Option<Conclusion>,
    /// 1 for the first attempt; one more per re-queue after a confirmed lease was lost.
    pub attempt: u32,
    pub waiting_reason: String,
    /// When the job last entered the queue (the queue timeout counts from here).
    pub queued_ms: Option<UnixMs>,
    /// Why the scheduler concluded the job itself, or the runner's error.
    pub message: String,
    /// The runner holding or that held the current attempt.
    pub runner_name: String,
    pub started_ms: Option<UnixMs>,
    pub finished_ms: Option<UnixMs>,
    pub outputs: Vec<(String, String)>,
    pub steps: Vec<StepRecord>,
    pub summary: String,
    pub cancel_requested: bool,
    /// The leg's matrix values as a JSON object; None for a job without a matrix.
    pub matrix: Option<String>,
}

/// Identifies one lease of one attempt of a job (the protocol's `JobRef`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobRef {
    pub job_id: String,
    pub lease_id: String,
    pub attempt: u32,
}

/// A job leased to a runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub job_ref: JobRef,
    /// The runner holding the lease: the only one whose job-scoped calls are accepted.
    pub runner_id: String,
    pub run_id: String,
    pub expires_ms: UnixMs,
    /// The dispatch payload given to `enqueue`.
    pub payload: Vec<u8>,
}

/// A lease's state as the renewal, step and log replies report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseStatus {
    pub expires_ms: UnixMs,
    pub cancel_requested: bool,
}

/// A lease that expired, and what became of its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredLease {
    pub job_ref: JobRef,
    pub run_id: String,
    pub leg: u32,
    pub runner_id: String,
    /// Whether the attempt counts towards [`MAX_ATTEMPTS`]: a lease never confirmed (no
    /// renewal, step or log line) does not.
    pub counted: bool,
    pub outcome: ExpiryOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpiryOutcome {
    /// Back in the queue, to be leased as this attempt.
    Requeued { attempt: u32 },
    /// Concluded for good: failed after [`MAX_ATTEMPTS`] losses, or cancelled because a
    /// cancellation was pending. The driver completes the engine's leg with this conclusion
    /// and reason.
    Concluded {
        conclusion: Conclusion,
        reason: String,
    },
}

/// A job the queue timeout concluded as failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOutJob {
    pub job_id: String,
    pub run_id: String,
    pub leg: u32,
    pub reason: String,
}

/// How a runner says a job ended (CompleteJob).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    pub conclusion: Conclusion,
    pub outputs: Vec<(String, String)>,
    pub steps: Vec<StepRecord>,
    /// Why the job failed outside of its steps; empty otherwise.
    pub error: String,
    pub summary: String,
    pub started_ms: UnixMs,
    pub finished_ms: UnixMs,
    /// The highest log line the runner sent; the store refuses the completion while it holds
    /// fewer.
    pub last_log_seq: u64,
}

/// What `complete_job` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The job is done now.
    Completed(Box<JobRecord>),
    /// The same ref completed it before; nothing changed.
    AlreadyCompleted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPhase {
    Started,
    Finished,
}

impl StepPhase {
    pub(crate) fn code(self) -> i64 {
        match self {
            StepPhase::Started => 1,
            StepPhase::Finished => 2,
        }
    }
    pub(crate) fn from_code(code: i64) -> Result<StepPhase> {
        match code {
            1 => Ok(StepPhase::Started),
            2 => Ok(StepPhase::Finished),
            _ => Err(StoreError::Corrupt(format!("step phase {code}"))),
        }
    }
}

/// A step started or finished (ReportStep).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    pub index: u32,
    pub phase: StepPhase,
    pub step_id: String,
    pub name: String,
    /// Set when finished.
    pub outcome: Option<Conclusion>,
    pub conclusion: Option<Conclusion>,
    pub unix_ms: UnixMs,
}

/// The reply to a step report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepAck {
    /// False when the same (job, attempt, index, phase) was reported before.
    pub new: bool,
    pub cancel_requested: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// 1 for the attempt's first line.
    pub seq: u64,
    /// The step's index, or -1 for the runner's own lines.
    pub step_index: i32,
    pub unix_ms: UnixMs,
    pub text: String,
}

/// The reply to a log append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogAck {
    /// The highest line stored for the attempt.
    pub acked_seq: u64,
    /// How many of the given lines were new.
    pub appended: usize,
    pub cancel_requested: bool,
}

/// A runner as it registers.
#[derive(Debug, Clone)]
pub struct RunnerRegistration {
    pub name: String,
    pub labels: Vec<String>,
    pub capacity: u32,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerRecord {
    pub id: String,
    pub name: String,
    pub labels: Vec<String>,
    pub capacity: u32,
    pub version: String,
    pub registered_ms: UnixMs,
    pub last_seen_ms: UnixMs,
}

/// A runner with the jobs it holds leases for (ListRunners).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerInfo {
    pub runner: RunnerRecord,
    pub running_job_ids: Vec<String>,
}

/// The scheduler-wide secrets, stored as hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Exchanged by `kiln runner register` for a runner identity.
    Registration,
    /// Opens the control service (`kiln submit`, `kiln runs`...).
    Control,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Registration => "registration",
            TokenKind::Control => "control",
        }
    }
}

/// One row of the WatchRun stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Increasing across all runs, never reused.
    pub seq: u64,
    pub run_id: String,
    pub payload: Vec<u8>,
    pub created_ms: UnixMs,
}

/// A run artifact's metadata; its files live under `artifacts/<run>/<name>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRecord {
    pub run_id: String,
    pub name: String,
    pub size: u64,
    pub created_ms: UnixMs,
}
