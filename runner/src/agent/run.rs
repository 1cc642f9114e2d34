//! The runner's loop: Heartbeat every heartbeat interval, PollJob (a long poll) while a slot is
//! free, one task per job, and the scheduler's cancel and stale lists passed on to the jobs
//! they name. A poll that failed is sent again with the same `poll_id`, so a lost reply never
//! leases a second job; the scheduler being unreachable only delays the next call, and the
//! running jobs go on meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_proto::v1 as pb;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::client::{answer, random_id, Backoff, Call, Failure, Scheduler};
use super::instance;
use super::job::{self, JobEnd, JobOutcome};
use super::source::Sources;
use super::workdir::WorkDir;
use super::{AgentConfig, AgentError, AgentEvent, AgentExit, JobControl, Shared, Stop};

/// The first retry of a failed poll comes this soon.
const RETRY_BASE: Duration = Duration::from_millis(200);

/// A job this runner holds.
struct Running {
    job: pb::JobRef,
    name: String,
    control: JobControl,
}

/// Turns runs of failed calls (the loop's and the jobs') into one "unreachable" event and one
/// "reachable" event.
pub(crate) struct Reachability {
    failing: AtomicBool,
    notify: UnboundedSender<AgentEvent>,
}

impl Reachability {
    pub(crate) fn failed(&self, call: &str, detail: &str) {
        if !self.failing.swap(true, Ordering::SeqCst) {
            let _ = self.notify.send(AgentEvent::Unreachable {
                detail: format!("{call}: {detail}"),
            });
        }
    }

    pub(crate) fn succeeded(&self) {
        if self.failing.swap(false, Ordering::SeqCst) {
            let _ = self.notify.send(AgentEvent::Reachable);
        }
    }
}

/// Runs the runner until it is stopped, `--once` is done, or the scheduler refuses it.
pub async fn run(
    config: AgentConfig,
    notify: UnboundedSender<AgentEvent>,
    stop: Stop,
) -> Result<AgentExit, AgentError> {
    let work = WorkDir::open(&config.work_dir)?;
    let credentials = &config.credentials;
    let mut leftovers = work.sweep(config.executor.docker()).await;
    leftovers.extend(
        instance::remove_objects_of_earlier_instances(
            &config.executor,
            &credentials.runner_id,
            &config.instance,
        )
        .await,
    );
    for note in leftovers {
        let _ = notify.send(AgentEvent::Leftover(note));
    }
    let scheduler = Scheduler::new(credentials)?;
    let capacity = config.capacity.max(1);
    let shared = Arc::new(Shared {
        scheduler: scheduler.clone(),
        timings: credentials.timings,
        sources: Sources::new(
            work.root(),
            config.max_snapshot_bytes,
            config.snapshot_cache_bytes,
        ),
        work,
        executor: config.executor.clone(),
        platforms: config.platforms.clone(),
        options: config.options.clone(),
        notify: notify.clone(),
        retry_cap: config.retry_cap,
        reachability: Arc::new(Reachability {
            failing: AtomicBool::new(false),
            notify: notify.clone(),
        }),
        job_labels: instance::job_labels(&credentials.runner_id, &config.instance),
    });
    let _ = notify.send(AgentEvent::Started {
        name: credentials.name.clone(),
        url: credentials.url.clone(),
        capacity,
    });
    Loop {
        shared,
        scheduler,
        capacity,
        once: config.once,
        url: credentials.url.clone(),
        jobs: HashMap::new(),
        tasks: JoinSet::new(),
        notify,
        retry_cap: config.retry_cap,
    }
    .run(stop)
    .await
}

struct Loop {
    shared: Arc<Shared>,
    scheduler: Scheduler,
    capacity: usize,
    once: bool,
    url: String,
    /// By job id.
    jobs: HashMap<String, Running>,
    tasks: JoinSet<(String, JobEnd)>,
    notify: UnboundedSender<AgentEvent>,
    retry_cap: Duration,
}

impl Loop {
    fn free_slots(&self) -> u32 {
        u32::try_from(self.capacity.saturating_sub(self.jobs.len())).unwrap_or(u32::MAX)
    }

    fn heartbeat_request(&self) -> pb::HeartbeatRequest {
        pb::HeartbeatRequest {
            running: self.jobs.values().map(|j| j.job.clone()).collect(),
            free_slots: self.free_slots(),
        }
    }

    /// The job `job` names, if this runner holds that lease.
    fn held(&self, job: &pb::JobRef) -> Option<&Running> {
        self.jobs
            .get(&job.job_id)
            .filter(|running| running.job.lease_id == job.lease_id)
    }

    fn start(&mut self, assignment: pb::JobAssignment) {
        let job = assignment.r#ref.clone().unwrap_or_default();
        let spec = assignment.spec.as_ref();
        let name = spec.map(|s| s.name.clone()).unwrap_or_default();
        let _ = self.notify.send(AgentEvent::JobStarted {
            job_id: job.job_id.clone(),
            name: name.clone(),
            run_id: spec.map(|s| s.run_id.clone()).unwrap_or_default(),
            attempt: job.attempt,
        });
        let control = JobControl::default();
        let id = job.job_id.clone();
        self.jobs.insert(
            id.clone(),
            Running {
                job,
                name,
                control: control.clone(),
            },
        );
        let shared = self.shared.clone();
        self.tasks
            .spawn(async move { (id, job::run(shared, assignment, control).await) });
    }

    /// Stops every job at once and waits for their tasks (which clean up after them).
    async fn stop_all(&mut self) {
        for running in self.jobs.values() {
            running.control.stop.cancel();
        }
        while let Some(joined) = self.tasks.join_next().await {
            if let Ok((id, end)) = joined {
                self.finished(id, end);
            }
        }
    }

    /// Records a job's end; `Some(detail)` when the scheduler refused the runner's token.
    fn finished(&mut self, id: String, end: JobEnd) -> Option<(JobOutcome, Option<String>)> {
        let running = self.jobs.remove(&id)?;
        let (outcome, refused) = match end {
            JobEnd::Outcome(outcome) => (outcome, None),
            JobEnd::Unauthenticated(detail) => (
                JobOutcome::Stopped("the scheduler refused the runner's token".to_owned()),
                Some(detail),
            ),
        };
        let _ = self.notify.send(AgentEvent::JobFinished {
            job_id: id,
            name: running.name,
            outcome: outcome.clone(),
        });
        Some((outcome, refused))
    }

    async fn refused(&mut self, detail: String) -> AgentError {
        self.stop_all().await;
        AgentError::Unauthenticated {
            url: self.url.clone(),
            detail,
        }
    }

    async fn rejected(&mut self, call: &'static str, detail: String) -> AgentError {
        self.stop_all().await;
        AgentError::Rejected {
            url: self.url.clone(),
            call,
            detail,
        }
    }

    async fn run(mut self, stop: Stop) -> Result<AgentExit, AgentError> {
        let timings = self.shared.timings;
        let mut heartbeat_tick = tokio::time::interval(timings.heartbeat());
        heartbeat_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut heartbeat: Call<pb::HeartbeatResponse> = None;
        let mut poll: Call<pb::PollJobResponse> = None;
        // Kept until a poll is answered, so a retry asks for the same assignment.
        let mut poll_id: Option<String> = None;
        let mut poll_backoff = Backoff::new(RETRY_BASE, self.retry_cap);
        let mut poll_at = Instant::now();
        let mut taken = 0usize;
        let mut draining = false;
        let mut aborting = false;
        let mut once_outcome: Option<JobOutcome> = None;
        loop {
            let accepting = !draining && !(self.once && taken > 0);
            if !accepting {
                // A poll dropped now may still lease a job; that lease is never renewed, so
                // the scheduler gives the job to another runner once it expires.
                poll = None;
                if self.jobs.is_empty() {
                    return Ok(match (aborting, once_outcome.take()) {
                        (true, _) => AgentExit::Aborted,
                        (false, Some(outcome)) => AgentExit::Once(outcome),
                        (false, None) => AgentExit::Drained,
                    });
                }
            }
            if accepting
                && poll.is_none()
                && self.jobs.len() < self.capacity
                && Instant::now() >= poll_at
            {
                let request = pb::PollJobRequest {
                    poll_id: poll_id.get_or_insert_with(random_id).clone(),
                    free_slots: self.free_slots(),
                };
                let scheduler = self.scheduler.clone();
                poll = Some(Box::pin(async move { scheduler.poll(request).await }));
            }
            let poll_waits = accepting && poll.is_none() && self.jobs.len() < self.capacity;
            tokio::select! {
                biased;
                _ = stop.abort.cancelled(), if !aborting => {
                    aborting = true;
                    draining = true;
                    for running in self.jobs.values() {
                        running.control.stop.cancel();
                    }
                }
                _ = stop.drain.cancelled(), if !draining => {
                    draining = true;
                    let _ = self.notify.send(AgentEvent::Draining { running: self.jobs.len() });
                }
                joined = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    let Some(Ok((id, end))) = joined else { continue };
                    if let Some((outcome, refused)) = self.finished(id, end) {
                        if let Some(detail) = refused {
                            return Err(self.refused(detail).await);
                        }
                        if self.once {
                            once_outcome = Some(outcome);
                        }
                    }
                }
                _ = heartbeat_tick.tick() => {
                    if heartbeat.is_none() {
                        let request = self.heartbeat_request();
                        let scheduler = self.scheduler.clone();
                        heartbeat = Some(Box::pin(async move { scheduler.heartbeat(request).await }));
                    }
                }
                reply = answer(&mut heartbeat) => match reply {
                    Ok(reply) => {
                        self.shared.reachability.succeeded();
                        for job in &reply.cancel {
                            if let Some(running) = self.held(job) {
                                let _ = self.notify.send(AgentEvent::CancelRequested {
                                    job_id: job.job_id.clone(),
                                    name: running.name.clone(),
                                });
                                running.control.cancel.cancel();
                            }
                        }
                        for job in &reply.stale {
                            if let Some(running) = self.held(job) {
                                running.control.stop.cancel();
                            }
                        }
                    }
                    Err(Failure::Transient(detail)) => self.shared.reachability.failed("Heartbeat", &detail),
                    Err(Failure::Unauthenticated(detail)) => return Err(self.refused(detail).await),
                    Err(Failure::Stale(detail) | Failure::Invalid(detail)) => {
                        return Err(self.rejected("Heartbeat", detail).await)
                    }
                },
                reply = answer(&mut poll) => match reply {
                    Ok(reply) => {
                        self.shared.reachability.succeeded();
                        poll_id = None;
                        poll_backoff.reset();
                        if let Some(assignment) = reply.job {
                            taken += 1;
                            self.start(assignment);
                        }
                    }
                    Err(Failure::Transient(detail)) => {
                        self.shared.reachability.failed("PollJob", &detail);
                        poll_at = Instant::now() + poll_backoff.next_delay();
                    }
                    Err(Failure::Unauthenticated(detail)) => return Err(self.refused(detail).await),
                    Err(Failure::Stale(detail) | Failure::Invalid(detail)) => {
                        return Err(self.rejected("PollJob", detail).await)
                    }
                },
                _ = tokio::time::sleep_until(poll_at.into()), if poll_waits => {}
            }
        }
    }
}
