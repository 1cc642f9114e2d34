//! What registered runners call: registration, leasing (a long poll), renewals, step reports,
//! logs and completions. Everything but a completion is the store's alone; a completion also
//! goes into the run's engine, in the same transaction.

use crate::store::prelude::*;
use std::time::Duration;

use super::events::EventPayload;
use super::job::{Endpoint, JobPayload, LeasedJob};
use super::planner::SourceOrigin;
use super::stored::{Op, StoredCompletion, StoredStep};
use super::{millis, Result, Scheduler, ServiceError};
use crate::store::{
    Assignment, Completion, JobRef, JobResult, LeaseStatus, LogAck, LogLine, RunnerRecord,
    RunnerRegistration, StepAck, StepPhase, StepReport, StoreError, StoreExt as _, TokenKind,
};

impl Scheduler {
    /// Exchanges the registration token for a runner identity and its token.
    pub fn register(
        &self,
        registration_token: &str,
        registration: &RunnerRegistration,
    ) -> Result<(RunnerRecord, String)> {
        if !self
            .store
            .check_token(TokenKind::Registration, registration_token)?
        {
            return Err(ServiceError::Unauthenticated(
                "the registration token is not this scheduler's; copy it from the scheduler's \
                 data directory (registration-token)"
                    .to_owned(),
            ));
        }
        if registration.name.trim().is_empty() {
            return Err(ServiceError::Invalid("a runner needs a name".to_owned()));
        }
        let now = self.now();
        Ok(self
            .store
            .write(|tx| tx.register_runner(registration, now))?)
    }

    /// The runner a bearer token belongs to.
    pub fn authenticate_runner(&self, token: &str) -> Result<RunnerRecord> {
        self.store
            .authenticate_runner(token)?
            .ok_or_else(unknown_runner)
    }

    /// [`Scheduler::authenticate_runner`]'s answer when it needs no database read, so the
    /// caller need not move to a blocking thread; None otherwise.
    pub fn authenticate_runner_cached(&self, token: &str) -> Option<Result<RunnerRecord>> {
        self.store
            .cached_runner(token)
            .map(|known| known.ok_or_else(unknown_runner))
    }

    /// Leases the oldest queued job the runner's labels cover, if any.
    pub fn lease(&self, runner: &RunnerRecord, poll_id: &str) -> Result<Option<LeasedJob>> {
        let now = self.now();
        let ttl = millis(self.config.lease_ttl);
        let assignment = self.store.write(|tx| {
            let assignment = tx.lease(&runner.id, poll_id, now, ttl)?;
            if let Some(a) = &assignment {
                tx.append_event(
                    &a.run_id,
                    &EventPayload::Job(a.job_ref.job_id.clone()).encode(),
                    now,
                )?;
            }
            Ok(assignment)
        })?;
        assignment.map(|a| self.leased_job(a)).transpose()
    }

    /// Waits up to `timeout` for a job the runner may take (PollJob's long poll).
    pub async fn poll(
        &self,
        runner: &RunnerRecord,
        poll_id: &str,
        timeout: Duration,
    ) -> Result<Option<LeasedJob>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut queue = self.store.subscribe_queue();
        loop {
            queue.borrow_and_update();
            if let Some(job) = self.lease(runner, poll_id)? {
                return Ok(Some(job));
            }
            tokio::select! {
                changed = queue.changed() => {
                    if changed.is_err() {
                        return Ok(None);
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Ok(None),
            }
        }
    }

    /// A lease as the runner gets it: the queued payload, and tokens minted now.
    fn leased_job(&self, assignment: Assignment) -> Result<LeasedJob> {
        let job_id = &assignment.job_ref.job_id;
        let mut payload = JobPayload::decode(job_id, &assignment.payload)?;
        if payload.needs_text() {
            payload.join_text(job_id, &*self.run_texts(&assignment.run_id)?)?;
        }
        let base = self.config.public_url.trim_end_matches('/').to_owned();
        let snapshot = match payload.source.as_ref().map(|s| &s.origin) {
            Some(SourceOrigin::Snapshot { digest, .. }) => Some(Endpoint {
                url: format!("{base}/snapshots/{digest}"),
                token: self.keys.snapshot_token(&assignment.job_ref.job_id, digest),
            }),
            _ => None,
        };
        let cache = Endpoint {
            url: base.clone(),
            token: self.keys.cache_token(
                &payload.repository,
                &payload.git_ref,
                self.config.cache_token_ttl,
            )?,
        };
        let artifacts = Endpoint {
            url: base,
            token: self.keys.artifacts_token(&assignment.run_id),
        };
        Ok(LeasedJob {
            job_ref: assignment.job_ref,
            expires_ms: assignment.expires_ms,
            payload,
            snapshot,
            cache,
            artifacts,
        })
    }

    pub fn renew(&self, runner: &RunnerRecord, job_ref: &JobRef) -> Result<LeaseStatus> {
        let now = self.now();
        let ttl = millis(self.config.lease_ttl);
        Ok(self
            .store
            .write(|tx| tx.renew(&runner.id, job_ref, now, ttl))?)
    }

    pub fn report_step(
        &self,
        runner: &RunnerRecord,
        job_ref: &JobRef,
        report: &StepReport,
    ) -> Result<StepAck> {
        let now = self.now();
        Ok(self.store.write(|tx| {
            let ack = tx.report_step(&runner.id, job_ref, report)?;
            if ack.new {
                let run_id = run_of(&job_ref.job_id);
                let event = EventPayload::Step {
                    job_id: job_ref.job_id.clone(),
                    index: report.index,
                    started: report.phase == StepPhase::Started,
                    step_id: report.step_id.clone(),
                    name: report.name.clone(),
                    conclusion: report.conclusion,
                    unix_ms: report.unix_ms,
                };
                tx.append_event(&run_id, &event.encode(), now)?;
            }
            Ok(ack)
        })?)
    }

    pub fn append_logs(
        &self,
        runner: &RunnerRecord,
        job_ref: &JobRef,
        lines: &[LogLine],
    ) -> Result<LogAck> {
        Ok(self
            .store
            .write(|tx| tx.append_logs(&runner.id, job_ref, lines))?)
    }

    /// The job's end as its runner reports it. A repeat of the same completion changes
    /// nothing; a completion for a lease that is no longer current is refused (stale).
    pub fn complete(
        &self,
        runner: &RunnerRecord,
        job_ref: &JobRef,
        result: &JobResult,
    ) -> Result<()> {
        let now = self.now();
        let completed = self.mutate(|core, tx| {
            let record = match tx.complete_job(&runner.id, job_ref, result, now)? {
                Completion::Completed(record) => record,
                Completion::AlreadyCompleted => return Ok(false),
            };
            tx.append_event(
                &record.run_id,
                &EventPayload::Job(record.job_id.clone()).encode(),
                now,
            )?;
            let completion = StoredCompletion {
                conclusion: result.conclusion,
                outputs: result.outputs.clone(),
                started_ms: result.started_ms,
                finished_ms: result.finished_ms,
                steps: result.steps.iter().map(StoredStep::from).collect(),
                summary: result.summary.clone(),
            };
            core.apply(
                tx,
                &record.run_id,
                Op::Complete {
                    leg: record.leg,
                    completion,
                },
                now,
            )?;
            Ok(true)
        })?;
        if completed {
            self.counters().completed(result.conclusion);
        }
        Ok(())
    }

    /// Records that the runner is alive; answers which of the jobs it says it runs were
    /// cancelled, and which are no longer its own.
    pub fn heartbeat(
        &self,
        runner: &RunnerRecord,
        running: &[JobRef],
    ) -> Result<(Vec<JobRef>, Vec<JobRef>)> {
        let now = self.now();
        self.store.write(|tx| tx.touch_runner(&runner.id, now))?;
        let mut cancel = Vec::new();
        let mut stale = Vec::new();
        for job_ref in running {
            match self.store.lease_status(&runner.id, job_ref) {
                Ok(status) if status.cancel_requested => cancel.push(job_ref.clone()),
                Ok(_) => {}
                Err(
                    StoreError::Stale { .. }
                    | StoreError::NotFound { .. }
                    | StoreError::NotHolder { .. },
                ) => stale.push(job_ref.clone()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok((cancel, stale))
    }
}

fn unknown_runner() -> ServiceError {
    ServiceError::Unauthenticated(
        "unknown runner token (the runner was replaced or never registered); register the \
         runner again"
            .to_owned(),
    )
}

/// The run a job id belongs to (`<run>.<leg>`).
fn run_of(job_id: &str) -> String {
    job_id
        .rsplit_once('.')
        .map_or(job_id, |(run, _)| run)
        .to_owned()
}
