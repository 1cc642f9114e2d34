//! The engines of the unfinished runs and the concurrency coordinator they share, and the one
//! way they change: an [`Op`] applied to a run's engine inside a store transaction, logged in
//! the same transaction, followed by `poll()`; what the op produced (dispatches, admissions,
//! legs to stop, group effects on other runs) is handled before the transaction commits, so
//! the store and the op logs always agree. Rebuilding replays each run's log the same way.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use kiln_workflow::model::Workflow;
use kiln_workflow::Conclusion;

use super::events::EventPayload;
use super::job::JobPayload;
use super::stored::{Op, StoredCompletion, StoredEffect, StoredRun};
use super::ServiceError;
use crate::engine::{
    Coordinator, Dispatch, Engine, EngineEvent, EngineOptions, GroupEffect, LegId, Replayed,
    SharedConcurrency,
};
use crate::store::{job_id, JobState, NewJob, Store, StoreError, StoreTx, UnixMs};

/// One unfinished run: its engine and what its jobs' payloads are made from.
pub(crate) struct LiveRun {
    pub engine: Engine,
    pub stored: StoredRun,
    pub root: Arc<Workflow>,
}

#[derive(Default)]
pub(crate) struct Core {
    pub runs: HashMap<String, LiveRun>,
    pub coordinator: Arc<Mutex<Coordinator<String>>>,
    /// Legs the engines asked to stop, not yet handled.
    stops: VecDeque<(String, LegId)>,
    /// Legs of a rerun that succeeded in the earlier attempt: completed with that attempt's
    /// result instead of running again.
    carries: VecDeque<(String, LegId, StoredCompletion)>,
}

type TxResult<T> = Result<T, StoreError>;

/// The first leg number of the rows of jobs that never ran (see `finish_if_done`).
pub(crate) const UNRUN_LEGS: u32 = 1 << 30;

/// A failure while applying an op that is not the store's: kept apart so the transaction
/// rolls back and the caller sees it.
fn invalid(error: ServiceError) -> StoreError {
    StoreError::Invalid(error.to_string())
}

impl Core {
    /// Rebuilds the engines of every unfinished run by replaying its op log, then puts the
    /// coordinator back together from what the engines hold. Dispatches the replay produces
    /// are queued again idempotently (a job queued before stays as it is).
    pub fn load(store: &dyn Store, now: UnixMs) -> Result<Core, ServiceError> {
        let mut core = Core::default();
        let mut rebuilt = Vec::new();
        let mut broken = Vec::new();
        for record in store.unfinished_runs()? {
            match rebuild(store, &record.id) {
                Ok((run, dispatches)) => {
                    let mut run = run;
                    run.engine.set_concurrency(Box::new(SharedConcurrency::new(
                        record.id.clone(),
                        core.coordinator.clone(),
                    )));
                    if let Ok(mut coordinator) = core.coordinator.lock() {
                        coordinator.restore(record.id.clone(), &run.engine.group_holdings());
                    }
                    rebuilt.push((record.id.clone(), dispatches));
                    core.runs.insert(record.id.clone(), run);
                }
                // One run that cannot be rebuilt (stored by another kiln, damaged) fails
                // alone, with the reason; the others go on.
                Err(error) => broken.push((record.id.clone(), error.to_string())),
            }
        }
        store.write_tx(&mut |tx| {
            for (run_id, dispatches) in &rebuilt {
                for dispatch in dispatches {
                    core.enqueue(tx, run_id, dispatch, now, false)?;
                }
            }
            for (run_id, error) in &broken {
                let text =
                    format!("the scheduler could not rebuild this run after a restart: {error}");
                tx.append_event(run_id, &EventPayload::Notice(text).encode(), now)?;
                tx.finish_run(run_id, Conclusion::Failure, now)?;
                tx.append_event(run_id, &EventPayload::Run.encode(), now)?;
            }
            Ok(())
        })?;
        Ok(core)
    }

    /// Adds a run just created in the store: builds its engine on the live coordinator and
    /// handles what its first poll produced.
    pub fn start_run(
        &mut self,
        tx: &mut dyn StoreTx,
        run_id: &str,
        stored: StoredRun,
        now: UnixMs,
    ) -> TxResult<()> {
        let spec = stored.run_spec().map_err(invalid)?;
        let root = spec.workflow.clone();
        let concurrency = SharedConcurrency::new(run_id.to_owned(), self.coordinator.clone());
        let engine =
            Engine::with_concurrency(spec, EngineOptions::default(), Box::new(concurrency))
                .map_err(|e| {
                    StoreError::Invalid(format!("{}: {e}", stored.planned.workflow_path))
                })?;
        self.runs.insert(
            run_id.to_owned(),
            LiveRun {
                engine,
                stored,
                root,
            },
        );
        self.after_op(tx, run_id, now)?;
        self.settle(tx, now)
    }

    /// Applies `op` to run `run_id`'s engine and logs it, then everything that follows from
    /// it across runs. An op for a run that is no longer live changes nothing.
    pub fn apply(
        &mut self,
        tx: &mut dyn StoreTx,
        run_id: &str,
        op: Op,
        now: UnixMs,
    ) -> TxResult<()> {
        self.apply_one(tx, run_id, op, now)?;
        self.settle(tx, now)
    }

    fn apply_one(
        &mut self,
        tx: &mut dyn StoreTx,
        run_id: &str,
        op: Op,
        now: UnixMs,
    ) -> TxResult<()> {
        let Some(run) = self.runs.get_mut(run_id) else {
            return Ok(());
        };
        tx.append_op(run_id, &op.encode())?;
        let stops = match &op {
            Op::Complete { leg, completion } => {
                run.engine.complete(LegId(*leg), completion.completion())
            }
            Op::CancelRun => run.engine.cancel_run(),
            Op::Group(effect) => run.engine.apply_group_effect(GroupEffect::from(effect)),
            Op::Admissions(_) => Vec::new(),
        };
        self.stops
            .extend(stops.into_iter().map(|leg| (run_id.to_owned(), leg)));
        self.after_op(tx, run_id, now)
    }

    /// What every op is followed by, live and in replay: `poll()`, then recording the
    /// admissions it took, queueing its dispatches, telling watchers what the engine decided,
    /// and finishing the run when nothing is left.
    fn after_op(&mut self, tx: &mut dyn StoreTx, run_id: &str, now: UnixMs) -> TxResult<()> {
        let Some(run) = self.runs.get_mut(run_id) else {
            return Ok(());
        };
        let dispatches = run.engine.poll();
        let admissions = run.engine.take_admissions();
        if !admissions.is_empty() {
            let op = Op::Admissions(admissions.into_iter().map(Into::into).collect());
            tx.append_op(run_id, &op.encode())?;
        }
        for event in run.engine.events() {
            let text = match event {
                EngineEvent::JobSkipped { name, reason, .. } => {
                    format!("{name}: skipped: {reason}")
                }
                EngineEvent::JobFailedToStart { name, error, .. } => {
                    format!("{name}: failed to start: {error}")
                }
                EngineEvent::JobDeferred { name, reason, .. } => {
                    format!("{name}: deferred: {reason}")
                }
                EngineEvent::LegCancelled { name, reason, .. } => {
                    format!("{name}: cancelled: {reason}")
                }
                EngineEvent::LegPending { name, group, .. } => {
                    format!("{name}: waiting for concurrency group `{group}`")
                }
            };
            tx.append_event(run_id, &EventPayload::Notice(text).encode(), now)?;
        }
        for dispatch in &dispatches {
            self.enqueue(tx, run_id, dispatch, now, true)?;
        }
        self.finish_if_done(tx, run_id, now)
    }

    /// Records a dispatched leg as a job and puts it in the queue (once: a replay finds it
    /// there). With `carry`, a leg of a rerun that succeeded in the earlier attempt is
    /// concluded with that result instead (a replay has it in the op log already).
    fn enqueue(
        &mut self,
        tx: &mut dyn StoreTx,
        run_id: &str,
        dispatch: &Dispatch,
        now: UnixMs,
        carry: bool,
    ) -> TxResult<()> {
        let Some(run) = self.runs.get(run_id) else {
            return Ok(());
        };
        let id = tx.add_job(&NewJob {
            run_id: run_id.to_owned(),
            leg: dispatch.leg.0,
            job_path: dispatch.job_id.clone(),
            name: dispatch.name.clone(),
            matrix: matrix_json(dispatch.matrix.as_ref()),
        })?;
        let carried = run
            .stored
            .carried
            .iter()
            .find(|c| c.job_path == dispatch.job_id && c.name == dispatch.name);
        if let (true, Some(carried)) = (carry, carried) {
            let message = format!(
                "not run again: it succeeded in attempt {}",
                carried.from_attempt
            );
            tx.conclude_job(&id, carried.completion.conclusion, &message, now)?;
            tx.append_event(run_id, &EventPayload::Job(id).encode(), now)?;
            self.carries
                .push_back((run_id.to_owned(), dispatch.leg, carried.completion.clone()));
            return Ok(());
        }
        let payload = JobPayload::new(run_id, &run.stored, &run.root, dispatch).map_err(invalid)?;
        if tx.enqueue(&id, &dispatch.runs_on, &payload.encode(), now)? {
            tx.append_event(run_id, &EventPayload::Job(id).encode(), now)?;
        }
        Ok(())
    }

    fn finish_if_done(&mut self, tx: &mut dyn StoreTx, run_id: &str, now: UnixMs) -> TxResult<()> {
        let Some(run) = self.runs.get(run_id) else {
            return Ok(());
        };
        if !run.engine.is_finished() {
            return Ok(());
        }
        let report = run.engine.report();
        // Jobs the engine concluded without running them (skipped, failed to start) get a
        // row too, so the finished run lists every job as `kiln run`'s report does. Their leg
        // numbers lie above any real leg's, and are given once, when the run finishes.
        let unrun = report.jobs.iter().filter(|job| job.leg.is_none());
        for (index, job) in unrun.enumerate() {
            let id = tx.add_job(&NewJob {
                run_id: run_id.to_owned(),
                leg: UNRUN_LEGS + u32::try_from(index).unwrap_or(0),
                job_path: job.id.clone(),
                name: job.name.clone(),
                matrix: matrix_json(job.matrix.as_ref()),
            })?;
            let message = job.message.clone().unwrap_or_default();
            tx.conclude_job(&id, job.conclusion, &message, now)?;
        }
        tx.finish_run(run_id, report.conclusion, now)?;
        tx.append_event(run_id, &EventPayload::Run.encode(), now)?;
        self.runs.remove(run_id);
        Ok(())
    }

    /// Handles the legs to stop and the coordinator's effects until none is left.
    fn settle(&mut self, tx: &mut dyn StoreTx, now: UnixMs) -> TxResult<()> {
        loop {
            if let Some((run_id, leg)) = self.stops.pop_front() {
                self.stop_leg(tx, &run_id, leg, now)?;
                continue;
            }
            if let Some((run_id, leg, completion)) = self.carries.pop_front() {
                let op = Op::Complete {
                    leg: leg.0,
                    completion,
                };
                self.apply_one(tx, &run_id, op, now)?;
                continue;
            }
            let effects = match self.coordinator.lock() {
                Ok(mut coordinator) => coordinator.take_effects(),
                Err(_) => Vec::new(),
            };
            if effects.is_empty() {
                return Ok(());
            }
            for (run_id, effect) in effects {
                self.apply_one(tx, &run_id, Op::Group(StoredEffect::from(&effect)), now)?;
            }
        }
    }

    /// A leg the engine wants stopped: a job still in the queue concludes cancelled at once;
    /// a running one gets the cancel flag its runner sees in its next reply.
    fn stop_leg(
        &mut self,
        tx: &mut dyn StoreTx,
        run_id: &str,
        leg: LegId,
        now: UnixMs,
    ) -> TxResult<()> {
        let id = job_id(run_id, leg.0);
        let state = match tx.request_cancel(&id) {
            Ok(state) => state,
            // The engine stops legs it never dispatched itself; they have no job row.
            Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        match state {
            JobState::Waiting | JobState::Queued => {
                tx.conclude_job(
                    &id,
                    Conclusion::Cancelled,
                    "cancelled before a runner took it",
                    now,
                )?;
                tx.append_event(run_id, &EventPayload::Job(id).encode(), now)?;
                let completion = StoredCompletion::verdict(Conclusion::Cancelled, now);
                self.apply_one(
                    tx,
                    run_id,
                    Op::Complete {
                        leg: leg.0,
                        completion,
                    },
                    now,
                )
            }
            JobState::Running => {
                tx.append_event(run_id, &EventPayload::Job(id).encode(), now)?;
                Ok(())
            }
            JobState::Done => Ok(()),
        }
    }
}

/// One run's engine rebuilt by replaying its op log (the recorded admissions answer its
/// concurrency questions), with every leg the replay dispatched.
fn rebuild(store: &dyn Store, run_id: &str) -> Result<(LiveRun, Vec<Dispatch>), ServiceError> {
    let stored = StoredRun::from_spec(run_id, &store.run_spec(run_id)?)?;
    let ops = store
        .run_ops(run_id)?
        .into_iter()
        .map(|op| Op::decode(run_id, op.seq, &op.op))
        .collect::<Result<Vec<Op>, ServiceError>>()?;
    let answers: Vec<_> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Admissions(a) => Some(a.iter().map(|a| (*a).into())),
            _ => None,
        })
        .flatten()
        .collect();
    let spec = stored.run_spec()?;
    let root = spec.workflow.clone();
    let mut engine = Engine::with_concurrency(
        spec,
        EngineOptions::default(),
        Box::new(Replayed::new(answers)),
    )
    .map_err(|e| ServiceError::Invalid(format!("run {run_id}: {e}")))?;
    let mut dispatches = engine.poll();
    for op in ops {
        match op {
            Op::Complete { leg, completion } => {
                engine.complete(LegId(leg), completion.completion());
            }
            Op::CancelRun => {
                engine.cancel_run();
            }
            Op::Group(effect) => {
                engine.apply_group_effect(GroupEffect::from(&effect));
            }
            Op::Admissions(_) => continue,
        }
        dispatches.extend(engine.poll());
    }
    engine.take_admissions();
    engine.events();
    Ok((
        LiveRun {
            engine,
            stored,
            root,
        },
        dispatches,
    ))
}

/// A leg's matrix values as the jobs table keeps them (the JSON `kiln run --report` shows).
fn matrix_json(matrix: Option<&kiln_workflow::value::Object>) -> Option<String> {
    matrix.map(|m| {
        kiln_workflow::value::Value::object(m.clone())
            .to_json()
            .to_string()
    })
}
