//! WatchRun: the store's event rows after the client's sequence number, each sent with the
//! run's or job's state as it is when sent, and (when asked) the log lines of the watched
//! runs' jobs after the client's per-job cursors (with no ids: of every unfinished run and of
//! every run an event was just sent for). The stream ends once every watched run is done and
//! everything up to that point was sent, or after one pass when only what is stored was
//! asked for; watching all runs (no ids) otherwise never ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kiln_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert;
use crate::service::events::EventPayload;
use crate::service::Scheduler;
use crate::store::prelude::*;
use crate::store::{JobState, RunState, StoreError};

/// Events read per store query.
const BATCH: usize = 256;
/// Log lines read per job per pass.
const LOG_BATCH: usize = 1000;

pub fn watch(
    scheduler: Arc<Scheduler>,
    request: pb::WatchRunRequest,
) -> ReceiverStream<Result<pb::RunEvent, Status>> {
    let (tx, rx) = mpsc::channel(64);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let attempts = request.log_cursor_attempts;
        let mut watcher = Watcher {
            scheduler,
            run_ids: request.run_ids,
            after: request.after_event_seq,
            logs: request.logs,
            stored_only: request.stored_only,
            cursors: request
                .log_cursors
                .into_iter()
                .map(|(job, seq)| {
                    let attempt = attempts.get(&job).copied().unwrap_or(0);
                    (job, (attempt, seq))
                })
                .collect(),
            evented_runs: Vec::new(),
            tx,
        };
        if let Err(error) = watcher.run(&handle) {
            let _ = watcher.tx.blocking_send(Err(error));
        }
    });
    ReceiverStream::new(rx)
}

struct Watcher {
    scheduler: Arc<Scheduler>,
    run_ids: Vec<String>,
    after: u64,
    logs: bool,
    stored_only: bool,
    /// Per job: the attempt the cursor is for (0: whichever is current) and the last line
    /// sent.
    cursors: HashMap<String, (u32, u64)>,
    /// Watching every run: the runs the last pass sent events of (a run that just finished
    /// gets its last lines sent too).
    evented_runs: Vec<String>,
    tx: mpsc::Sender<Result<pb::RunEvent, Status>>,
}

/// The client went away.
struct Gone;

fn internal(error: StoreError) -> Status {
    Status::internal(error.to_string())
}

impl Watcher {
    fn run(&mut self, handle: &tokio::runtime::Handle) -> Result<(), Status> {
        let store = self.scheduler.store().clone();
        for run_id in &self.run_ids {
            if store.get_run(run_id).map_err(internal)?.is_none() {
                return Err(Status::not_found(format!("run '{run_id}' does not exist")));
            }
        }
        let mut changes = store.subscribe_changes();
        loop {
            changes.borrow_and_update();
            let finished = !self.run_ids.is_empty() && self.all_done()?;
            if self.pass().is_err() {
                return Ok(());
            }
            if finished || self.stored_only {
                return Ok(());
            }
            let waited = handle.block_on(async {
                tokio::select! {
                    changed = changes.changed() => changed.is_ok(),
                    () = tokio::time::sleep(Duration::from_secs(1)) => true,
                    () = self.tx.closed() => false,
                }
            });
            if !waited {
                return Ok(());
            }
        }
    }

    fn all_done(&self) -> Result<bool, Status> {
        let store = self.scheduler.store();
        for run_id in &self.run_ids {
            let done = store
                .get_run(run_id)
                .map_err(internal)?
                .is_some_and(|r| r.state == RunState::Done);
            if !done {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn send(&self, event: pb::RunEvent) -> Result<(), Gone> {
        self.tx.blocking_send(Ok(event)).map_err(|_| Gone)
    }

    /// Sends every event and log line stored so far.
    fn pass(&mut self) -> Result<(), Gone> {
        let store = self.scheduler.store().clone();
        loop {
            let events = match store.read_events(self.after, &self.run_ids, BATCH) {
                Ok(events) => events,
                Err(e) => {
                    let _ = self.tx.blocking_send(Err(internal(e)));
                    return Err(Gone);
                }
            };
            if events.is_empty() {
                break;
            }
            for event in events {
                self.after = event.seq;
                if self.run_ids.is_empty() && !self.evented_runs.contains(&event.run_id) {
                    self.evented_runs.push(event.run_id.clone());
                }
                let Ok(payload) = EventPayload::decode(event.seq, &event.payload) else {
                    continue;
                };
                let kind = match payload {
                    EventPayload::Run => {
                        let Ok(Some(run)) = store.get_run(&event.run_id) else {
                            continue;
                        };
                        let jobs = store.jobs_of_run(&event.run_id).unwrap_or_default();
                        pb::run_event::Kind::Run(convert::run_summary(run, jobs))
                    }
                    EventPayload::Job(job_id) => {
                        let Ok(Some(job)) = store.get_job(&job_id) else {
                            continue;
                        };
                        pb::run_event::Kind::Job(convert::job_summary(job))
                    }
                    EventPayload::Step {
                        job_id,
                        index,
                        started,
                        step_id,
                        name,
                        conclusion,
                        unix_ms,
                    } => pb::run_event::Kind::Step(pb::StepEvent {
                        job_id,
                        index,
                        phase: if started {
                            pb::StepPhase::Started
                        } else {
                            pb::StepPhase::Finished
                        } as i32,
                        step_id,
                        name,
                        conclusion: convert::pb_conclusion(conclusion),
                        unix_ms,
                    }),
                    EventPayload::Notice(text) => pb::run_event::Kind::Notice(text),
                };
                self.send(pb::RunEvent {
                    event_seq: event.seq,
                    run_id: event.run_id,
                    kind: Some(kind),
                })?;
            }
        }
        if self.logs {
            self.send_logs()?;
        }
        Ok(())
    }

    /// The runs whose lines a pass sends.
    fn log_runs(&mut self) -> Vec<String> {
        if !self.run_ids.is_empty() {
            return self.run_ids.clone();
        }
        let mut runs = std::mem::take(&mut self.evented_runs);
        let unfinished = self.scheduler.store().unfinished_runs().unwrap_or_default();
        for run in unfinished {
            if !runs.contains(&run.id) {
                runs.push(run.id);
            }
        }
        runs
    }

    fn send_logs(&mut self) -> Result<(), Gone> {
        let store = self.scheduler.store().clone();
        for run_id in self.log_runs() {
            let jobs = store.jobs_of_run(&run_id).unwrap_or_default();
            for job in jobs {
                if job.state < JobState::Running && job.attempt <= 1 {
                    continue;
                }
                // The rest of the attempt the cursor counts in, then each later one whole.
                let first = match self.cursors.get(&job.job_id) {
                    Some(&(attempt, _)) if attempt > 0 && attempt < job.attempt => attempt,
                    _ => job.attempt,
                };
                for attempt in first..=job.attempt {
                    self.send_attempt_logs(&run_id, &job.job_id, attempt)?;
                }
            }
        }
        Ok(())
    }

    fn send_attempt_logs(&mut self, run_id: &str, job_id: &str, attempt: u32) -> Result<(), Gone> {
        let store = self.scheduler.store().clone();
        let mut after = match self.cursors.get(job_id) {
            Some(&(0, seq)) => seq,
            Some(&(at, seq)) if at == attempt => seq,
            _ => 0,
        };
        loop {
            let lines = store
                .read_logs(job_id, attempt, after, LOG_BATCH)
                .unwrap_or_default();
            let Some(last) = lines.last() else { break };
            after = last.seq;
            let full = lines.len() == LOG_BATCH;
            self.send(pb::RunEvent {
                event_seq: 0,
                run_id: run_id.to_owned(),
                kind: Some(pb::run_event::Kind::Logs(pb::JobLogLines {
                    job_id: job_id.to_owned(),
                    attempt,
                    lines: convert::pb_log_lines(lines),
                })),
            })?;
            if !full {
                break;
            }
        }
        // Later passes count in this attempt, even before it has a line.
        self.cursors.insert(job_id.to_owned(), (attempt, after));
        Ok(())
    }
}
