//! The scheduler service: submissions become runs (one engine each, built from what the
//! [`RunPlanner`] planned and the store kept), engine dispatches become queue entries that
//! runners lease, runners' completions and the scheduler's own verdicts (lease lost too
//! often, queue timeout, cancelled while queued) go back into the engines, and concurrency
//! groups are shared by all runs through one coordinator. Every change to an engine is an op
//! in its run's log, written in the same transaction as the rest of what it caused, so a
//! restart rebuilds exactly the same engines (see `core.rs`).
//!
//! The service is synchronous over the store (SQLite); the gRPC layer calls it from blocking
//! threads, except [`Scheduler::poll`], which waits asynchronously.

pub mod artifacts;
mod core;
pub mod events;
pub mod job;
pub mod planner;
mod runner;
mod snapshot;
pub mod stored;
pub mod tokens;

use crate::store::prelude::*;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kiln_workflow::Conclusion;

use self::core::Core;
use crate::store::{NewRun, RunState, SqliteStore, StoreError, StoreTx, Submission, UnixMs};
use events::EventPayload;
pub use job::{Endpoint, JobPayload, LeasedJob};
pub use planner::{Plan, PlannedRun, RunPlanner, SourceOrigin, SourceSpec, SubmitRequest};
pub use snapshot::SnapshotWriter;
use stored::{Op, RunTexts, StoredRun};
use tokens::Keys;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    NotFound(String),
    /// A request that cannot be served as sent.
    #[error("{0}")]
    Invalid(String),
    /// The planner refused the submission (its message says what to fix).
    #[error("{0}")]
    Plan(String),
    #[error("the scheduler's stored state cannot be read: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Unimplemented(String),
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Where time comes from: the system clock, or a test's.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> UnixMs;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> UnixMs {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// The service's timings and how runners reach it.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// How long a lease lasts without renewal (runners renew every third of it).
    pub lease_ttl: Duration,
    pub heartbeat_interval: Duration,
    /// The longest a PollJob waits for a job.
    pub poll_timeout: Duration,
    /// How long a job may wait in the queue for a runner before it fails.
    pub queue_timeout: Duration,
    /// The scheduler's HTTP base URL as runners reach it (`http://host:port`): snapshots,
    /// artifacts and the cache are served there.
    pub public_url: String,
    /// How long a job's cache token is valid (the longest a job may run, and then some).
    pub cache_token_ttl: Duration,
    /// How long artifacts are kept after they were stored.
    pub artifact_retention: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            lease_ttl: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            poll_timeout: Duration::from_secs(25),
            queue_timeout: Duration::from_secs(24 * 3600),
            public_url: "http://127.0.0.1:8470".to_owned(),
            cache_token_ttl: Duration::from_secs(7 * 3600),
            artifact_retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

pub struct Scheduler {
    store: Arc<SqliteStore>,
    planner: Arc<dyn RunPlanner>,
    config: ServiceConfig,
    keys: Keys,
    clock: Arc<dyn Clock>,
    core: Mutex<Core>,
    counters: crate::metrics::Counters,
    /// The workflow texts of runs whose jobs were leased lately (queued payloads name them;
    /// see `JobPayload::join_text`), loaded from the runs' stored specs on first use.
    texts: Mutex<HashMap<String, Arc<RunTexts>>>,
}

/// Runs whose texts [`Scheduler`] keeps in memory; beyond it one is dropped (and read again
/// from the store when needed).
const CACHED_RUN_TEXTS: usize = 64;

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Starts the service over an open store: gives every live lease the restart grace (a
    /// full TTL from now, so runners that kept working while the scheduler was down can
    /// renew), then rebuilds the engines of the unfinished runs from their op logs.
    pub fn open(
        store: Arc<SqliteStore>,
        planner: Arc<dyn RunPlanner>,
        config: ServiceConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Scheduler> {
        let (secret, _) = store.data_dir().load_or_create_token("service-key")?;
        let cache_dir = store.data_dir().root().join("cache");
        let cache = kiln_cache::token::Secret::load_or_create(&cache_dir)
            .map_err(|e| ServiceError::Invalid(format!("the cache's signing key: {e}")))?;
        remove_scratch(store.data_dir().root());
        let now = clock.now_ms();
        let ttl = millis(config.lease_ttl);
        store.write(|tx| tx.extend_leases(now + ttl))?;
        let core = Core::load(&*store, now)?;
        Ok(Scheduler {
            store,
            planner,
            config,
            keys: Keys::new(&secret, cache),
            clock,
            core: Mutex::new(core),
            counters: Default::default(),
            texts: Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> &Arc<SqliteStore> {
        &self.store
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn now(&self) -> UnixMs {
        self.clock.now_ms()
    }

    /// What runners did since start, for `/metrics`.
    pub fn counters(&self) -> &crate::metrics::Counters {
        &self.counters
    }

    /// Whether a runner called within three heartbeat intervals.
    pub fn is_online(&self, runner: &crate::store::RunnerRecord) -> bool {
        let silent =
            i64::try_from(self.config.heartbeat_interval.as_millis() * 3).unwrap_or(i64::MAX);
        self.now().saturating_sub(runner.last_seen_ms) <= silent
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while the lock was held left the engines in an unknown state; the next
        // mutation rebuilds them from the store (see `mutate`).
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the engines inside one store transaction. When the transaction fails the
    /// engines may hold changes the store does not: they are rebuilt from the store.
    fn mutate<T>(
        &self,
        f: impl FnOnce(&mut Core, &mut dyn StoreTx) -> Result<T, StoreError>,
    ) -> Result<T> {
        let mut core = self.lock();
        let result = self.store.write(|tx| f(&mut core, tx));
        if result.is_err() {
            if let Ok(rebuilt) = Core::load(&*self.store, self.now()) {
                *core = rebuilt;
            }
        }
        Ok(result?)
    }

    /// The workflow texts of a run, from memory or its stored spec.
    fn run_texts(&self, run_id: &str) -> Result<Arc<RunTexts>> {
        let cached = self
            .texts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
            .cloned();
        if let Some(texts) = cached {
            return Ok(texts);
        }
        let texts = Arc::new(StoredRun::from_spec(run_id, &self.store.run_spec(run_id)?)?.texts());
        let mut cache = self.texts.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHED_RUN_TEXTS {
            if let Some(old) = cache.keys().next().cloned() {
                cache.remove(&old);
            }
        }
        cache.insert(run_id.to_owned(), texts.clone());
        Ok(texts)
    }

    /// The runs the service is driving now.
    pub fn live_runs(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().runs.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Plans a submission and starts its runs; a repeated idempotency key returns what the
    /// first call created and starts nothing.
    pub fn submit(&self, request: &SubmitRequest, idempotency_key: &str) -> Result<Submission> {
        if request.event_name.trim().is_empty() {
            return Err(ServiceError::Invalid(
                "the submission names no event (give one, like `push`)".to_owned(),
            ));
        }
        if !idempotency_key.is_empty() {
            if let Some(earlier) = self.store.find_submission(idempotency_key)? {
                return Ok(earlier);
            }
        }
        let scratch = tempfile::Builder::new()
            .prefix("plan-")
            .tempdir_in(self.store.data_dir().root())
            .map_err(|e| ServiceError::Invalid(format!("cannot make a scratch directory: {e}")))?;
        let checkout = scratch.path().join("source");
        std::fs::create_dir_all(&checkout)
            .map_err(|e| ServiceError::Invalid(format!("cannot make a scratch directory: {e}")))?;
        if let Some(source) = &request.source {
            self.check_out(source, &checkout)?;
        }
        let plan = self
            .planner
            .plan(request, &checkout)
            .map_err(ServiceError::Plan)?;
        let mut new_runs = Vec::with_capacity(plan.runs.len());
        let mut stored_runs = Vec::with_capacity(plan.runs.len());
        for planned in plan.runs {
            let stored = StoredRun {
                planned,
                source: request.source.clone(),
                repository: request.repository.clone(),
                git_ref: request.git_ref.clone(),
                carried: Vec::new(),
            };
            // Parsed here too, so a run that cannot start is refused before anything is
            // stored.
            let spec = stored.run_spec()?;
            let workflow_name = match &spec.workflow.name {
                Some(name) => name.value.clone(),
                None => stored.planned.workflow_path.clone(),
            };
            new_runs.push(NewRun {
                workflow_name,
                workflow_path: stored.planned.workflow_path.clone(),
                event_name: request.event_name.clone(),
                sha: request
                    .source
                    .as_ref()
                    .map(|s| s.sha.clone())
                    .unwrap_or_default(),
                git_ref: request.git_ref.clone(),
                attempt: 1,
                rerun_of: None,
                spec: stored.to_spec(),
            });
            stored_runs.push(stored);
        }
        let now = self.now();
        self.mutate(|core, tx| {
            let submission = tx.submit(idempotency_key, &new_runs, &plan.notices, now)?;
            if submission.created {
                for (run, stored) in submission.runs.iter().zip(stored_runs) {
                    tx.append_event(&run.id, &EventPayload::Run.encode(), now)?;
                    core.start_run(tx, &run.id, stored, now)?;
                }
            }
            Ok(submission)
        })
    }

    /// Clones the submission's source into `dir` at its commit, for planning.
    fn check_out(&self, source: &SourceSpec, dir: &Path) -> Result<()> {
        let origin = match &source.origin {
            SourceOrigin::Snapshot { digest, .. } => {
                if self.store.snapshot_size(digest)?.is_none() {
                    return Err(ServiceError::Invalid(format!(
                        "snapshot {digest} was never uploaded; upload it (UploadSnapshot) before submitting"
                    )));
                }
                self.store.data_dir().snapshot_path(digest)?
            }
            SourceOrigin::Git { url } => {
                if url.trim().is_empty() || url.starts_with('-') || url.contains("::") {
                    return Err(ServiceError::Invalid(format!(
                        "`{url}` is not a git URL the scheduler clones (http, https, ssh, git or a path)"
                    )));
                }
                url.into()
            }
        };
        let git = |args: &[&std::ffi::OsStr]| -> Result<()> {
            let output = std::process::Command::new("git")
                .args(args)
                .env("GIT_TERMINAL_PROMPT", "0")
                // A submitted URL must not make the scheduler run a command (`ext::`) or read
                // through another transport than these.
                .env("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
                .env("GIT_PROTOCOL_FROM_USER", "0")
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| ServiceError::Invalid(format!("cannot run git: {e}")))?;
            if output.status.success() {
                return Ok(());
            }
            Err(ServiceError::Invalid(format!(
                "cannot check out the submitted source at {}: git {}: {}",
                source.sha,
                args.first()
                    .map(|a| a.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        };
        git(&[
            "clone".as_ref(),
            "-q".as_ref(),
            "--no-checkout".as_ref(),
            "--".as_ref(),
            origin.as_os_str(),
            dir.as_os_str(),
        ])?;
        git(&[
            "-C".as_ref(),
            dir.as_os_str(),
            "-c".as_ref(),
            "advice.detachedHead=false".as_ref(),
            "checkout".as_ref(),
            "-q".as_ref(),
            "--detach".as_ref(),
            source.sha.as_ref(),
        ])
    }

    /// Cancels a run as a user does: queued jobs conclude cancelled at once, running ones are
    /// told to stop through their runner's next reply. Cancelling a finished run changes
    /// nothing.
    pub fn cancel_run(&self, run_id: &str) -> Result<()> {
        let record = self
            .store
            .get_run(run_id)?
            .ok_or_else(|| ServiceError::NotFound(format!("run '{run_id}' does not exist")))?;
        if record.state == RunState::Done {
            return Ok(());
        }
        let now = self.now();
        self.mutate(|core, tx| {
            tx.append_event(
                run_id,
                &EventPayload::Notice("cancellation requested".to_owned()).encode(),
                now,
            )?;
            core.apply(tx, run_id, Op::CancelRun, now)
        })
    }

    /// Starts the next attempt of a finished run that did not succeed: legs that succeeded
    /// keep their result (dependants see their outputs) and do not run again; the others run
    /// as the engine decides, as GitHub's "re-run failed jobs" does.
    pub fn rerun_failed(&self, run_id: &str) -> Result<Submission> {
        let previous = self
            .store
            .get_run(run_id)?
            .ok_or_else(|| ServiceError::NotFound(format!("run '{run_id}' does not exist")))?;
        if previous.state != RunState::Done {
            return Err(ServiceError::Invalid(format!(
                "run {run_id} is still running; wait for it or cancel it, then re-run it"
            )));
        }
        if previous.conclusion == Some(Conclusion::Success) {
            return Err(ServiceError::Invalid(format!(
                "run {run_id} succeeded: no job failed, so there is nothing to re-run"
            )));
        }
        let mut stored = StoredRun::from_spec(run_id, &self.store.run_spec(run_id)?)?;
        let mut carried = Vec::new();
        for job in self.store.jobs_of_run(run_id)? {
            if job.conclusion != Some(Conclusion::Success) {
                continue;
            }
            // A leg carried into the previous attempt keeps its first result (its job row
            // holds no outputs).
            let earlier = stored
                .carried
                .iter()
                .find(|c| c.job_path == job.job_path && c.name == job.name)
                .cloned();
            carried.push(earlier.unwrap_or_else(|| stored::CarriedJob {
                job_path: job.job_path.clone(),
                name: job.name.clone(),
                from_attempt: previous.attempt,
                completion: stored::StoredCompletion {
                    conclusion: Conclusion::Success,
                    outputs: job.outputs.clone(),
                    started_ms: job.started_ms.unwrap_or(0),
                    finished_ms: job.finished_ms.unwrap_or(0),
                    steps: job.steps.iter().map(stored::StoredStep::from).collect(),
                    summary: job.summary.clone(),
                },
            }));
        }
        stored.carried = carried;
        let attempt = previous.attempt + 1;
        if let serde_json::Value::Object(github) = &mut stored.planned.github {
            github.insert(
                "run_attempt".to_owned(),
                serde_json::Value::String(attempt.to_string()),
            );
        }
        let new_run = NewRun {
            workflow_name: previous.workflow_name.clone(),
            workflow_path: previous.workflow_path.clone(),
            event_name: previous.event_name.clone(),
            sha: previous.sha.clone(),
            git_ref: previous.git_ref.clone(),
            attempt,
            rerun_of: Some(previous.id.clone()),
            spec: stored.to_spec(),
        };
        let now = self.now();
        self.mutate(|core, tx| {
            let submission = tx.submit("", std::slice::from_ref(&new_run), &[], now)?;
            for run in &submission.runs {
                tx.append_event(&run.id, &EventPayload::Run.encode(), now)?;
                core.start_run(tx, &run.id, stored.clone(), now)?;
            }
            Ok(submission)
        })
    }

    /// The periodic work: leases that ran out (re-queued, or concluded after too many
    /// losses), jobs that waited too long in the queue, and why queued jobs wait.
    pub fn tick(&self) -> Result<()> {
        let now = self.now();
        let queue_timeout = millis(self.config.queue_timeout);
        self.mutate(|core, tx| {
            for lost in tx.expire_leases(now)? {
                match lost.outcome {
                    crate::store::ExpiryOutcome::Requeued { attempt } => {
                        let text = format!(
                            "job {} lost its runner (lease expired); queued again as attempt {attempt}",
                            lost.job_ref.job_id
                        );
                        tx.append_event(&lost.run_id, &EventPayload::Notice(text).encode(), now)?;
                        tx.append_event(
                            &lost.run_id,
                            &EventPayload::Job(lost.job_ref.job_id.clone()).encode(),
                            now,
                        )?;
                    }
                    crate::store::ExpiryOutcome::Concluded { conclusion, .. } => {
                        tx.append_event(
                            &lost.run_id,
                            &EventPayload::Job(lost.job_ref.job_id.clone()).encode(),
                            now,
                        )?;
                        core.apply(tx, &lost.run_id, verdict(lost.leg, conclusion, now), now)?;
                    }
                }
            }
            for timed_out in tx.expire_queued(now, queue_timeout)? {
                tx.append_event(
                    &timed_out.run_id,
                    &EventPayload::Job(timed_out.job_id.clone()).encode(),
                    now,
                )?;
                core.apply(
                    tx,
                    &timed_out.run_id,
                    verdict(timed_out.leg, Conclusion::Failure, now),
                    now,
                )?;
            }
            Ok(())
        })?;
        self.expire_artifacts()?;
        self.update_waiting_reasons()
    }

    /// Forgets the artifacts older than the retention and removes their files.
    fn expire_artifacts(&self) -> Result<()> {
        let before = self
            .now()
            .saturating_sub(millis(self.config.artifact_retention));
        let expired = self.store.write(|tx| tx.expire_artifacts(before))?;
        for artifact in expired {
            if let Ok(run) = artifacts::RunArtifacts::open(self, &artifact.run_id) {
                run.remove(&artifact.name);
            }
        }
        Ok(())
    }

    /// Says, on each queued job, when no registered runner has all of its labels.
    fn update_waiting_reasons(&self) -> Result<()> {
        let runners = self.store.list_runners()?;
        let live = self.live_runs();
        let mut changes = Vec::new();
        for run_id in live {
            for job in self.store.jobs_of_run(&run_id)? {
                if job.state != crate::store::JobState::Queued {
                    continue;
                }
                let served = runners
                    .iter()
                    .any(|r| labels_cover(&r.runner.labels, &job.runs_on));
                let reason = if served {
                    String::new()
                } else if runners.is_empty() {
                    "no runner is registered".to_owned()
                } else {
                    format!(
                        "no registered runner has all of the labels: {}",
                        job.runs_on.join(", ")
                    )
                };
                if reason != job.waiting_reason {
                    changes.push((job.run_id.clone(), job.job_id.clone(), reason));
                }
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        let now = self.now();
        Ok(self.store.write(|tx| {
            for (run_id, job_id, reason) in &changes {
                tx.set_waiting_reason(job_id, reason)?;
                tx.append_event(run_id, &EventPayload::Job(job_id.to_string()).encode(), now)?;
            }
            Ok(())
        })?)
    }
}

/// Removes the planning checkouts a killed scheduler left behind (`plan-*`).
fn remove_scratch(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with("plan-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether a runner with `labels` may take a job asking for `wanted` (all of them, case
/// folded, as the store's queue matches).
pub fn labels_cover(labels: &[String], wanted: &[String]) -> bool {
    let fold = |l: &String| l.trim().to_lowercase();
    let have: Vec<String> = labels.iter().map(fold).collect();
    wanted.iter().all(|w| have.contains(&fold(w)))
}

fn verdict(leg: u32, conclusion: Conclusion, now: UnixMs) -> Op {
    Op::Complete {
        leg,
        completion: stored::StoredCompletion::verdict(conclusion, now),
    }
}
