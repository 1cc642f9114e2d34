//! Everything a running job tells the scheduler, from one task per job: RenewLease every renew
//! interval (the first one at once, which confirms the start), ReportStep for each step's start
//! and end, AppendLogs in batches, and CompleteJob once the executor is done and every line
//! and step report was accepted. Each kind of call has at most one request in flight and its
//! own backoff, so a scheduler that is away for a while gets the same calls again when it is
//! back; the lease keeps being renewed all along.
//!
//! A reply asking for cancellation fires the job's cancel token; FAILED_PRECONDITION (the lease
//! is not this runner's any more), UNAUTHENTICATED or INVALID_ARGUMENT fire its stop token and
//! end the reporting at once: nothing more is sent for the job.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::BoxFuture;
use kiln_proto::v1 as pb;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

use super::client::{answer, Backoff, Call, Failure, Scheduler};
use super::convert;
use super::logs::LogBuffer;
use super::run::Reachability;
use super::{AgentEvent, JobControl};
use crate::executor::{JobEvent, JobResult};

/// The first retry of a failed call comes this soon.
const RETRY_BASE: Duration = Duration::from_millis(200);

/// How the reporting of one job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReportEnd {
    /// CompleteJob was accepted.
    Completed,
    /// The job was stopped (its lease is lost, the runner is shutting down, or the scheduler
    /// refused the runner): nothing more was sent.
    Stopped(String),
    /// The scheduler refused the runner's token.
    Unauthenticated(String),
}

/// Which step the lines belong to: the index of the step running now, in execution order.
#[derive(Default)]
struct Steps {
    /// Steps finished so far: the index of the next step.
    finished: u32,
    running: bool,
}

impl Steps {
    fn started(&mut self) -> u32 {
        self.running = true;
        self.finished
    }

    /// A skipped step finishes without starting: it takes the next index as well.
    fn finished(&mut self) -> u32 {
        self.running = false;
        self.finished += 1;
        self.finished - 1
    }

    fn current(&self) -> i32 {
        if self.running {
            i32::try_from(self.finished).unwrap_or(i32::MAX)
        } else {
            -1
        }
    }
}

/// A retry schedule for one kind of call.
struct Retry {
    backoff: Backoff,
    at: Option<Instant>,
}

impl Retry {
    fn new(cap: Duration) -> Retry {
        Retry {
            backoff: Backoff::new(RETRY_BASE, cap),
            at: None,
        }
    }

    fn ready(&self, now: Instant) -> bool {
        self.at.is_none_or(|at| now >= at)
    }

    fn failed(&mut self, now: Instant) {
        self.at = Some(now + self.backoff.next_delay());
    }

    fn succeeded(&mut self) {
        self.backoff.reset();
        self.at = None;
    }
}

pub(crate) struct Reporter {
    scheduler: Scheduler,
    job: pb::JobRef,
    name: String,
    control: JobControl,
    notify: UnboundedSender<AgentEvent>,
    reachability: Arc<Reachability>,
    renew_every: Duration,
    retry_cap: Duration,
    logs: LogBuffer,
    steps: Steps,
    /// Step reports to send, each with the last log line produced before it: a report goes
    /// only once those lines are acknowledged, so whoever follows the run sees a step's lines
    /// between its start and its end, as `kiln run` shows them.
    reports: VecDeque<(pb::ReportStepRequest, u64)>,
    cancel_noted: bool,
}

impl Reporter {
    pub(crate) fn new(
        scheduler: Scheduler,
        job: pb::JobRef,
        name: String,
        control: JobControl,
        notify: UnboundedSender<AgentEvent>,
        reachability: Arc<Reachability>,
        renew_every: Duration,
        retry_cap: Duration,
    ) -> Reporter {
        Reporter {
            scheduler,
            job,
            name,
            control,
            notify,
            reachability,
            renew_every,
            // A renewal retried later than the renew interval risks the lease.
            retry_cap: retry_cap.min(renew_every).max(RETRY_BASE),
            logs: LogBuffer::default(),
            steps: Steps::default(),
            reports: VecDeque::new(),
            cancel_noted: false,
        }
    }

    fn take(&mut self, event: JobEvent) {
        let now = Instant::now();
        let unix_ms = convert::unix_ms(SystemTime::now());
        match event {
            JobEvent::StepStarted { id, name } => {
                let index = self.steps.started();
                let report = convert::step_report(&self.job, index, &id, &name, None);
                self.reports.push_back((report, self.logs.last_seq()));
            }
            JobEvent::StepFinished {
                id,
                name,
                outcome,
                conclusion,
                ..
            } => {
                let index = self.steps.finished();
                let ended = Some((outcome, conclusion));
                let report = convert::step_report(&self.job, index, &id, &name, ended);
                self.reports.push_back((report, self.logs.last_seq()));
            }
            JobEvent::Log { line, .. } => {
                self.logs.push(self.steps.current(), unix_ms, &line, now);
            }
            JobEvent::Annotation(annotation) => {
                let line = convert::annotation_line(&annotation);
                self.logs.push(self.steps.current(), unix_ms, &line, now);
            }
            // Summaries travel whole in CompleteJob.
            JobEvent::Summary { .. } => {}
        }
    }

    fn cancel_requested(&mut self) {
        if !self.cancel_noted {
            self.cancel_noted = true;
            let _ = self.notify.send(AgentEvent::CancelRequested {
                job_id: self.job.job_id.clone(),
                name: self.name.clone(),
            });
        }
        self.control.cancel.cancel();
    }

    /// A call's answer: `Ok(Some(reply))`, `Ok(None)` when it failed and a retry is set, or
    /// `Err(end)` when the job's reporting is over (the job was stopped: nothing more is sent).
    fn settle<T>(
        &self,
        call: &str,
        answer: Result<T, Failure>,
        retry: &mut Retry,
    ) -> Result<Option<T>, ReportEnd> {
        let failure = match answer {
            Ok(reply) => {
                retry.succeeded();
                self.reachability.succeeded();
                return Ok(Some(reply));
            }
            Err(failure) => failure,
        };
        let end = match failure {
            Failure::Transient(detail) => {
                self.reachability.failed(call, &detail);
                retry.failed(Instant::now());
                return Ok(None);
            }
            Failure::Stale(detail) => {
                ReportEnd::Stopped(format!("the scheduler says the lease is gone ({detail})"))
            }
            Failure::Invalid(detail) => ReportEnd::Stopped(format!(
                "the scheduler rejected {call} ({detail}); a bug or a version mismatch, not retried"
            )),
            Failure::Unauthenticated(detail) => ReportEnd::Unauthenticated(detail),
        };
        self.control.stop.cancel();
        Err(end)
    }

    /// Reports the job until CompleteJob is accepted or the job is stopped. `events` are the
    /// executor's; `result` arrives once the executor is done.
    pub(crate) async fn run(
        mut self,
        mut events: UnboundedReceiver<JobEvent>,
        result: oneshot::Receiver<JobResult>,
    ) -> ReportEnd {
        let scheduler = self.scheduler.clone();
        let job = self.job.clone();
        let mut renew_at = Instant::now();
        let mut renewal: Call<pb::RenewLeaseResponse> = None;
        let mut renew_retry = Retry::new(self.retry_cap);
        let mut append: Call<pb::AppendLogsResponse> = None;
        // The last line of the batch in flight.
        let mut append_through = 0;
        let mut append_retry = Retry::new(self.retry_cap);
        let mut report: Call<pb::ReportStepResponse> = None;
        let mut report_retry = Retry::new(self.retry_cap);
        let mut complete: Call<pb::CompleteJobResponse> = None;
        let mut complete_retry = Retry::new(self.retry_cap);
        let mut events_open = true;
        let mut result = Some(result);
        let mut done: Option<JobResult> = None;
        loop {
            let now = Instant::now();
            let finishing = !events_open && done.is_some();
            if renewal.is_none() && now >= renew_at {
                let request = pb::RenewLeaseRequest {
                    job: Some(job.clone()),
                };
                renewal = Some(boxed(scheduler.clone(), move |s| async move {
                    s.renew(request).await
                }));
            }
            // A step report waiting for the lines before it makes them due now.
            let report_waits = self
                .reports
                .front()
                .is_some_and(|(_, after)| !self.logs.acked_through(*after));
            let logs_due =
                self.logs
                    .due_at()
                    .map(|due| if finishing || report_waits { now } else { due });
            if append.is_none() && append_retry.ready(now) && logs_due.is_some_and(|d| now >= d) {
                let lines = self.logs.batch();
                append_through = lines.last().map_or(0, |l| l.seq);
                let request = pb::AppendLogsRequest {
                    job: Some(job.clone()),
                    lines,
                };
                append = Some(boxed(scheduler.clone(), move |s| async move {
                    s.append_logs(request).await
                }));
            }
            if report.is_none() && report_retry.ready(now) && !report_waits {
                if let Some((request, _)) = self.reports.front().cloned() {
                    report = Some(boxed(scheduler.clone(), move |s| async move {
                        s.report_step(request).await
                    }));
                }
            }
            if finishing
                && complete.is_none()
                && complete_retry.ready(now)
                && self.logs.is_flushed()
                && self.reports.is_empty()
            {
                if let Some(result) = &done {
                    let request = convert::completion(&job, result, self.logs.last_seq());
                    complete = Some(boxed(scheduler.clone(), move |s| async move {
                        s.complete(request).await
                    }));
                }
            }
            let mut wake = renew_at;
            for at in [
                append_retry.at,
                report_retry.at,
                complete_retry.at,
                logs_due.filter(|_| append.is_none()),
            ]
            .into_iter()
            .flatten()
            {
                wake = wake.min(at.max(now));
            }
            tokio::select! {
                biased;
                _ = self.control.stop.cancelled() => {
                    return ReportEnd::Stopped("the job was stopped".to_owned());
                }
                event = events.recv(), if events_open => match event {
                    Some(event) => self.take(event),
                    None => events_open = false,
                },
                finished = async { result.as_mut().expect("guarded").await }, if result.is_some() => {
                    result = None;
                    match finished {
                        Ok(finished) => done = Some(finished),
                        // The job ended without a result: it was stopped.
                        Err(_) => return ReportEnd::Stopped("the job was stopped".to_owned()),
                    }
                    self.logs.close(Instant::now());
                }
                answer = answer(&mut renewal) => match self.settle("RenewLease", answer, &mut renew_retry) {
                    Err(end) => return end,
                    Ok(Some(reply)) => {
                        renew_at = Instant::now() + self.renew_interval(reply.lease_expires_unix_ms);
                        if reply.cancel_requested {
                            self.cancel_requested();
                        }
                    }
                    Ok(None) => renew_at = renew_retry.at.unwrap_or_else(Instant::now),
                },
                answer = answer(&mut append) => match self.settle("AppendLogs", answer, &mut append_retry) {
                    Err(end) => return end,
                    Ok(Some(reply)) => {
                        self.logs.ack(reply.acked_seq, Instant::now());
                        if reply.acked_seq < append_through {
                            // The scheduler kept fewer lines than were sent: the rest go again,
                            // after a pause rather than in a tight loop.
                            append_retry.failed(Instant::now());
                        }
                        if reply.cancel_requested {
                            self.cancel_requested();
                        }
                    }
                    Ok(None) => {}
                },
                answer = answer(&mut report) => match self.settle("ReportStep", answer, &mut report_retry) {
                    Err(end) => return end,
                    Ok(Some(reply)) => {
                        self.reports.pop_front();
                        if reply.cancel_requested {
                            self.cancel_requested();
                        }
                    }
                    Ok(None) => {}
                },
                answer = answer(&mut complete) => match self.settle("CompleteJob", answer, &mut complete_retry) {
                    Err(end) => return end,
                    Ok(Some(_)) => return ReportEnd::Completed,
                    Ok(None) => {}
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// The next renewal: every renew interval, and at least three times in what is left of
    /// the lease the scheduler just granted.
    fn renew_interval(&self, expires_unix_ms: i64) -> Duration {
        let left_ms = expires_unix_ms - convert::unix_ms(SystemTime::now());
        if left_ms <= 0 {
            return self.renew_every;
        }
        let third = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0) / 3);
        self.renew_every.min(third.max(RETRY_BASE))
    }
}

/// A call of `scheduler`, boxed so the reporter can hold it across loop turns.
fn boxed<T, Fut>(
    scheduler: Scheduler,
    call: impl FnOnce(Scheduler) -> Fut,
) -> BoxFuture<'static, Result<T, Failure>>
where
    Fut: Future<Output = Result<T, Failure>> + Send + 'static,
{
    Box::pin(call(scheduler))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_indexes_follow_execution_order_including_skipped_steps() {
        let mut steps = Steps::default();
        assert_eq!(steps.current(), -1);
        assert_eq!(steps.started(), 0);
        assert_eq!(steps.current(), 0);
        assert_eq!(steps.finished(), 0);
        assert_eq!(steps.current(), -1);
        // Skipped: finished without a start.
        assert_eq!(steps.finished(), 1);
        assert_eq!(steps.started(), 2);
        assert_eq!(steps.finished(), 2);
    }
}
