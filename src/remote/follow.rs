//! Following runs on a scheduler (WatchRun) with `kiln run`'s display. The stream is resumed
//! after any break (a scheduler restart, a dropped connection) from the last event and log
//! line shown, so no line is lost or shown twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use indexmap::IndexMap;
use kiln_proto::v1 as pb;
use kiln_workflow::Conclusion;
use pb::run_event::Kind;

use super::convert::{between, conclusion};
use super::{call, is_transient, request, Backoff, Control};
use crate::run::render::Renderer;

/// How long the scheduler may stay unreachable before following gives up.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
struct JobView {
    name: String,
    attempt: u32,
    started: bool,
    done: bool,
    waiting_reason: String,
    started_ms: i64,
}

struct RunView {
    prefix: String,
    done: bool,
}

/// What is being followed and what has been shown of it.
pub struct Follow {
    runs: IndexMap<String, RunView>,
    jobs: HashMap<String, JobView>,
    /// Only this job's events are shown (`kiln logs RUN JOB`).
    only_job: Option<String>,
    after_event_seq: u64,
    /// Per job: the attempt and the last log line shown of it.
    log_cursors: HashMap<String, (u32, u64)>,
    step_starts: HashMap<(String, u32), i64>,
    /// Events and lines shown so far: a stream that ends having shown nothing new is a
    /// break, retried after a wait.
    progress: u64,
    /// How long the scheduler may stay unreachable.
    pub patience: Duration,
    /// Show what is stored now and stop, instead of following the runs to their end.
    pub stored_only: bool,
}

/// How following ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// Every run is done.
    Done,
    /// The user interrupted following; the runs go on.
    Interrupted,
    /// Everything stored was shown (`stored_only`); the runs may go on.
    Shown,
}

impl Follow {
    /// Runs as SubmitRun or GetRun described them; their jobs name the log lines.
    pub fn new(runs: &[pb::RunSummary], only_job: Option<String>) -> Follow {
        let prefixes = crate::run::workflow_prefixes(
            &runs
                .iter()
                .map(|r| (r.workflow_name.clone(), r.workflow_path.clone()))
                .collect::<Vec<_>>(),
        );
        let mut follow = Follow {
            runs: IndexMap::new(),
            jobs: HashMap::new(),
            only_job,
            after_event_seq: 0,
            log_cursors: HashMap::new(),
            step_starts: HashMap::new(),
            progress: 0,
            patience: DEFAULT_PATIENCE,
            stored_only: false,
        };
        for (run, prefix) in runs.iter().zip(prefixes) {
            follow.runs.insert(
                run.run_id.clone(),
                RunView {
                    prefix,
                    done: false,
                },
            );
            for job in &run.jobs {
                follow.jobs.entry(job.job_id.clone()).or_default().name = job.name.clone();
            }
        }
        follow
    }

    fn all_done(&self) -> bool {
        self.runs.values().all(|r| r.done)
    }

    fn request(&self) -> pb::WatchRunRequest {
        pb::WatchRunRequest {
            run_ids: self.runs.keys().cloned().collect(),
            after_event_seq: self.after_event_seq,
            logs: true,
            log_cursors: self
                .log_cursors
                .iter()
                .map(|(job, (_, seq))| (job.clone(), *seq))
                .collect(),
            log_cursor_attempts: self
                .log_cursors
                .iter()
                .map(|(job, (attempt, _))| (job.clone(), *attempt))
                .collect(),
            stored_only: self.stored_only,
        }
    }

    /// Follows until every run is done, reconnecting across breaks, rendering as it goes.
    pub async fn run(
        &mut self,
        control: &Control,
        renderer: &mut Renderer,
    ) -> anyhow::Result<Ending> {
        let mut backoff = Backoff::new();
        let mut lost_since: Option<Instant> = None;
        let mut ticks = tokio::time::interval(Duration::from_millis(120));
        let interrupt = tokio::signal::ctrl_c();
        tokio::pin!(interrupt);
        while !self.all_done() {
            let broke = tokio::select! {
                broke = self.watch_once(control, renderer, &mut ticks) => broke?,
                _ = &mut interrupt => {
                    renderer.flush();
                    return Ok(Ending::Interrupted);
                }
            };
            match broke {
                None if self.stored_only => {
                    renderer.flush();
                    return Ok(Ending::Shown);
                }
                None => {
                    backoff.reset();
                    lost_since = None;
                }
                Some(status) => {
                    let since = *lost_since.get_or_insert_with(|| {
                        renderer.notice(&format!(
                            "lost the scheduler at {} ({}); reconnecting",
                            control.url,
                            status.message()
                        ));
                        renderer.flush();
                        Instant::now()
                    });
                    if since.elapsed() > self.patience {
                        return Err(control.explain(&status).context(format!(
                            "gave up following after {}s",
                            self.patience.as_secs()
                        )));
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = &mut interrupt => {
                            renderer.flush();
                            return Ok(Ending::Interrupted);
                        }
                    }
                }
            }
        }
        renderer.flush();
        Ok(Ending::Done)
    }

    /// One WatchRun call, to its end. `Some(status)`: it broke in a way worth retrying.
    async fn watch_once(
        &mut self,
        control: &Control,
        renderer: &mut Renderer,
        ticks: &mut tokio::time::Interval,
    ) -> anyhow::Result<Option<tonic::Status>> {
        let mut stream = match control.rpc.clone().watch_run(self.request()).await {
            Ok(response) => response.into_inner(),
            Err(status) if is_transient(status.code()) => return Ok(Some(status)),
            Err(status) => return Err(control.explain(&status)),
        };
        let progress = self.progress;
        loop {
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(event)) => self.handle(event, renderer),
                    Ok(None) => break,
                    Err(status) if is_transient(status.code()) => return Ok(Some(status)),
                    Err(status) => return Err(control.explain(&status)),
                },
                _ = ticks.tick() => renderer.tick(),
            }
        }
        renderer.flush();
        if self.all_done() || self.stored_only {
            return Ok(None);
        }
        // The stream ended before the runs did: ask whether they are done (a run concluded
        // while the stream was down may only show in GetRun).
        for run_id in self.runs.keys().cloned().collect::<Vec<_>>() {
            match control
                .rpc
                .clone()
                .get_run(request(pb::GetRunRequest {
                    run_id: run_id.clone(),
                }))
                .await
            {
                Ok(run) if run.get_ref().state == pb::RunState::Done as i32 => {
                    if let Some(view) = self.runs.get_mut(&run_id) {
                        view.done = true;
                    }
                }
                Ok(_) => {}
                Err(status) if is_transient(status.code()) => return Ok(Some(status)),
                Err(status) => return Err(control.explain(&status)),
            }
        }
        Ok(if self.progress > progress || self.all_done() {
            None
        } else {
            Some(tonic::Status::unavailable("the event stream ended early"))
        })
    }

    fn prefix(&self, run_id: &str, job_id: &str) -> String {
        let run = self
            .runs
            .get(run_id)
            .map(|r| r.prefix.as_str())
            .unwrap_or(run_id);
        match self.jobs.get(job_id).filter(|j| !j.name.is_empty()) {
            Some(job) => format!("{run}/{}", job.name),
            None => format!("{run}/{job_id}"),
        }
    }

    fn shown(&self, job_id: &str) -> bool {
        self.only_job.as_deref().is_none_or(|only| only == job_id)
    }

    /// Renders one event unless it was shown before (a resumed stream repeats nothing, but a
    /// scheduler that does is not trusted to).
    pub fn handle(&mut self, event: pb::RunEvent, renderer: &mut Renderer) {
        if event.event_seq != 0 {
            if event.event_seq <= self.after_event_seq {
                return;
            }
            self.after_event_seq = event.event_seq;
            self.progress += 1;
        }
        let Some(kind) = event.kind else { return };
        let run_id = event.run_id;
        match kind {
            Kind::Run(run) => {
                if run.state == pb::RunState::Done as i32 {
                    if let Some(view) = self.runs.get_mut(&run_id) {
                        view.done = true;
                    }
                }
            }
            Kind::Job(job) => self.job_changed(&run_id, job, renderer),
            Kind::Step(step) => {
                if !self.shown(&step.job_id) {
                    return;
                }
                let prefix = self.prefix(&run_id, &step.job_id);
                let key = (step.job_id.clone(), step.index);
                if step.phase == pb::StepPhase::Started as i32 {
                    self.step_starts.insert(key, step.unix_ms);
                    renderer.step_started(&prefix, &step.name);
                } else if step.phase == pb::StepPhase::Finished as i32 {
                    let started = self.step_starts.remove(&key).unwrap_or(step.unix_ms);
                    let outcome = conclusion(step.conclusion).unwrap_or(Conclusion::Failure);
                    renderer.step_finished(
                        &prefix,
                        &step.name,
                        outcome,
                        between(started, step.unix_ms),
                    );
                }
            }
            Kind::Logs(logs) => {
                if !self.shown(&logs.job_id) {
                    return;
                }
                let prefix = self.prefix(&run_id, &logs.job_id);
                let cursor = self
                    .log_cursors
                    .entry(logs.job_id.clone())
                    .or_insert((logs.attempt, 0));
                // Sequence numbers start again with each attempt.
                if logs.attempt > cursor.0 {
                    *cursor = (logs.attempt, 0);
                } else if logs.attempt < cursor.0 {
                    return;
                }
                for line in logs.lines {
                    if line.seq <= cursor.1 {
                        continue;
                    }
                    cursor.1 = line.seq;
                    self.progress += 1;
                    renderer.log(&prefix, &line.text);
                }
            }
            Kind::Notice(text) => {
                if self.only_job.is_none() {
                    renderer.notice(&text);
                }
            }
        }
    }

    fn job_changed(&mut self, run_id: &str, job: pb::JobSummary, renderer: &mut Renderer) {
        let view = self.jobs.entry(job.job_id.clone()).or_default();
        if !job.name.is_empty() {
            view.name = job.name.clone();
        }
        if !self.shown(&job.job_id) {
            return;
        }
        let prefix = self.prefix(run_id, &job.job_id);
        let view = self.jobs.entry(job.job_id.clone()).or_default();
        let state = pb::JobState::try_from(job.state).unwrap_or(pb::JobState::Unspecified);
        if view.done {
            return;
        }
        if job.attempt > view.attempt && view.attempt > 0 {
            renderer.job_message(
                &prefix,
                &format!(
                    "↻ attempt {} (the runner of the last one was lost)",
                    job.attempt
                ),
            );
            view.started = false;
        }
        view.attempt = view.attempt.max(job.attempt);
        match state {
            pb::JobState::Queued | pb::JobState::Waiting => {
                if !job.waiting_reason.is_empty() && job.waiting_reason != view.waiting_reason {
                    renderer.job_message(&prefix, &format!("waiting: {}", job.waiting_reason));
                }
                view.waiting_reason = job.waiting_reason;
            }
            pb::JobState::Running => {
                if !view.started {
                    view.started = true;
                    view.started_ms = job.started_unix_ms;
                    renderer.job_started(&prefix);
                }
            }
            pb::JobState::Done => {
                view.done = true;
                let outcome = conclusion(job.conclusion).unwrap_or(Conclusion::Failure);
                if view.started {
                    let started = if job.started_unix_ms > 0 {
                        job.started_unix_ms
                    } else {
                        view.started_ms
                    };
                    renderer.job_finished(&prefix, outcome, between(started, job.finished_unix_ms));
                } else {
                    let what = match outcome {
                        Conclusion::Skipped => "⊘ skipped",
                        Conclusion::Cancelled => "⊗ cancelled",
                        Conclusion::Failure => "✘ failed to start",
                        Conclusion::Success => "✔ succeeded",
                    };
                    let line = if job.message.is_empty() {
                        what.to_owned()
                    } else {
                        format!("{what}: {}", job.message)
                    };
                    renderer.job_message(&prefix, &line);
                }
            }
            pb::JobState::Unspecified => {}
        }
    }
}

/// The runs as GetRun describes them now (with their jobs), for the summary and report.
pub async fn final_summaries(
    control: &Control,
    run_ids: &[String],
) -> anyhow::Result<Vec<pb::RunSummary>> {
    let mut runs = Vec::new();
    for run_id in run_ids {
        let run = call!(
            control,
            get_run,
            pb::GetRunRequest {
                run_id: run_id.clone()
            }
        )
        .map_err(|status| control.explain(&status))?;
        runs.push(run);
    }
    if runs.is_empty() {
        return Err(anyhow!("no run to report"));
    }
    Ok(runs)
}
