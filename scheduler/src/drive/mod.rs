//! The driver of a local run (`kiln run`): the engines of the workflows an event triggers, run
//! together as on GitHub, in one async loop. It asks each engine what is ready, starts each
//! leg on an [`Executor`] (up to a limit across all of them), feeds completions back, cancels
//! the legs the engines name (fail-fast), and turns interruptions into a graceful
//! cancellation: legs still running [`STOP_GRACE`] after the first one are stopped, as are all
//! of them at a second; a third ends the loop at once ([`Ending::Abandoned`]).
//!
//! The executor is a trait so that this crate never depends on kiln-runner: the binary
//! implements it with kiln-runner (and with the dry run). What happens is told to an
//! [`Observer`] as values; the binary renders them.
//!
//! Concurrency groups are repository-wide on GitHub: the workflows of one run share one
//! [`SharedGroups`], and the group decisions one engine's entries cause for another's (a
//! pending run granted, an older one cancelled) are applied by the loop.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_workflow::model::Workflow;
use kiln_workflow::Conclusion;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::discover::WorkflowFile;
use crate::engine::{
    Coordinator, Dispatch, Engine, EngineError, EngineEvent, EngineOptions, JobCompletion, LegId,
    SharedConcurrency,
};
use crate::github::RepoState;
use crate::request::{RequestError, RunRequest};

#[cfg(test)]
mod tests;

/// How long a cancelled run may go on (steps stopping, `always()` jobs and post steps running)
/// before every leg still running is stopped without waiting.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// What a running leg reports while it runs.
#[derive(Debug, Clone)]
pub enum LegEvent {
    StepStarted {
        name: String,
    },
    /// One output line, already masked.
    Log {
        line: String,
    },
    StepFinished {
        name: String,
        conclusion: Conclusion,
        duration: Duration,
    },
    /// A message about the job itself (a warning, an annotation, why it failed to start).
    Message {
        text: String,
    },
}

pub type LegFuture = Pin<Box<dyn Future<Output = JobCompletion> + Send>>;

/// Executes legs: the binary's kiln-runner executor, or its dry run.
pub trait Executor: Send + Sync {
    /// `Err(reason)`: the leg is skipped without running (its `runs-on` maps to no platform).
    fn admit(&self, dispatch: &Dispatch) -> Result<(), String>;
    /// Runs the leg to its end, reporting progress on `events`. `cancel` cancels it as GitHub
    /// does (steps that run on cancellation, `always()`, still run); `kill` stops everything it
    /// still runs. It must return (cleaned up) soon after `kill` fires.
    fn run(
        &self,
        dispatch: Dispatch,
        events: EventSender,
        cancel: CancellationToken,
        kill: CancellationToken,
    ) -> LegFuture;
    /// Before the first leg of a workflow starts: the ids of the jobs the engine may run in
    /// it (all of them, or the one `-j` chose), so an executor can get later jobs ready while
    /// earlier ones run. Workflows of one run are told apart by their `Arc`, which the
    /// engine hands to every dispatch.
    fn plan(&self, _workflow: &Arc<Workflow>, _job_ids: Vec<String>) {}
}

/// A workflow that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("cannot run {file}")]
    Engine {
        file: String,
        #[source]
        source: EngineError,
    },
}

/// The concurrency groups of one local run, shared by its workflows' engines (each engine is
/// known by its index among the runs given to [`drive`]).
#[derive(Clone, Default)]
pub struct SharedGroups(Arc<Mutex<Coordinator<usize>>>);

impl SharedGroups {
    /// The effects group decisions had on entries of the engines, since the last call.
    fn take_effects(&self) -> Vec<(usize, crate::engine::GroupEffect)> {
        self.0
            .lock()
            .map(|mut c| c.take_effects())
            .unwrap_or_default()
    }
}

/// One workflow of the run: its engine and its name for `[workflow/job]` prefixes.
pub struct WorkflowRun {
    pub engine: Engine,
    pub prefix: String,
    /// The workflow the engine runs (the same `Arc` as its dispatches carry).
    pub workflow: Arc<Workflow>,
    /// Where the engine's concurrency groups live; `None`: in the engine alone.
    pub groups: Option<SharedGroups>,
}

impl WorkflowRun {
    /// The engine of `file`, with the contexts `request` gives it in `repo`. It is the
    /// `index`th of the runs driven together, and its concurrency groups are `groups`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        request: &RunRequest,
        file: &WorkflowFile,
        repo: &RepoState,
        run_id: u64,
        prefix: String,
        options: EngineOptions,
        groups: &SharedGroups,
        index: usize,
    ) -> Result<WorkflowRun, StartError> {
        let spec = request.workflow_spec(file, repo, run_id)?;
        let concurrency = SharedConcurrency::new(index, groups.0.clone());
        let engine =
            Engine::with_concurrency(spec, options, Box::new(concurrency)).map_err(|source| {
                StartError::Engine {
                    file: file.display_path.clone(),
                    source,
                }
            })?;
        Ok(WorkflowRun {
            engine,
            prefix,
            workflow: file.workflow.clone(),
            groups: Some(groups.clone()),
        })
    }
}

/// A leg of one of the run's workflows: the workflow's index and the leg in its engine.
type LegKey = (usize, LegId);

/// A leg's side of the event channel.
#[derive(Clone)]
pub struct EventSender {
    leg: LegKey,
    tx: UnboundedSender<(LegKey, LegEvent)>,
}

impl EventSender {
    pub fn send(&self, event: LegEvent) {
        // The driver outlives every leg; a closed channel only means the run is shutting down.
        let _ = self.tx.send((self.leg, event));
    }
}

/// A request to stop the run (a signal, in `kiln run`): which one, and how many arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupt {
    /// The signal's number, for the observer to name it.
    pub signal: i32,
    /// 1: cancel gracefully; 2: stop every leg now; 3 and more: give up at once.
    pub count: u32,
}

/// Where interruptions come from.
pub trait Interrupts {
    /// Resolves at the next interruption; pending forever when none can come.
    fn next(&mut self) -> impl Future<Output = Interrupt>;
}

/// What the driver tells its observer, in order.
#[derive(Debug)]
pub enum DriveEvent<'a> {
    /// An engine decided something about a job (`[prefix/name]`) without running it.
    Engine {
        prefix: &'a str,
        event: EngineEvent,
    },
    /// `job` (`prefix/leg name`) is not run: the executor refused it.
    LegSkipped {
        job: &'a str,
        reason: &'a str,
    },
    LegStarted {
        job: &'a str,
    },
    Leg {
        job: &'a str,
        event: LegEvent,
    },
    /// The leg's task panicked; it concludes as a failure and the run goes on.
    LegPanicked {
        job: &'a str,
        error: String,
    },
    LegFinished {
        job: &'a str,
        conclusion: Conclusion,
        duration: Duration,
    },
    /// An interruption arrived (see [`Interrupt::count`]).
    Interrupted(Interrupt),
    /// [`STOP_GRACE`] passed after the first interruption: every leg is stopped now.
    GraceOver,
}

/// Told what happens (the binary renders it).
pub trait Observer {
    fn observe(&mut self, event: DriveEvent<'_>);
    /// Nothing more arrives for a while: a good moment to write out what was buffered.
    fn flush(&mut self) {}
    /// Called every [`DriveOptions::tick`] while legs run.
    fn tick(&mut self) {}
}

#[derive(Debug, Clone, Copy)]
pub struct DriveOptions {
    /// The most legs running at once, across every workflow of the run.
    pub limit: usize,
    /// How often the observer's `tick` is called; `None`: never.
    pub tick: Option<Duration>,
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Finished,
    /// Interrupted: the run was cancelled (and, when forced, legs were stopped without
    /// grace); every leg ended.
    Interrupted,
    /// A third interruption: the loop gave up at once, legs may still be running.
    Abandoned,
}

struct Running {
    prefix: String,
    token: CancellationToken,
    kill: CancellationToken,
    started: Instant,
}

/// The run's state between iterations of the loop.
struct Driver<'a> {
    runs: &'a mut [WorkflowRun],
    /// The distinct concurrency groups the runs share (usually one).
    groups: Vec<SharedGroups>,
    running: HashMap<LegKey, Running>,
    waiting: VecDeque<(usize, Dispatch)>,
}

/// Drives every workflow's engine to the end, together.
pub async fn drive(
    runs: &mut [WorkflowRun],
    executor: Arc<dyn Executor>,
    observer: &mut dyn Observer,
    interrupts: &mut impl Interrupts,
    options: DriveOptions,
) -> Ending {
    let (tx, mut rx) = unbounded_channel::<(LegKey, LegEvent)>();
    let mut tasks: JoinSet<(LegKey, JobCompletion)> = JoinSet::new();
    let mut task_legs: HashMap<tokio::task::Id, LegKey> = HashMap::new();
    let mut interrupted = 0u32;
    // Set by the first interruption: when the graceful stop must turn into a forced one.
    let mut force_at: Option<tokio::time::Instant> = None;
    let ticking = options.tick.is_some();
    let mut ticker = tokio::time::interval(options.tick.unwrap_or(Duration::from_secs(3600)));
    for run in runs.iter() {
        let job_ids = run.engine.report().jobs.into_iter().map(|job| job.id);
        executor.plan(&run.workflow, job_ids.collect());
    }
    let mut groups: Vec<SharedGroups> = Vec::new();
    for shared in runs.iter().filter_map(|run| run.groups.as_ref()) {
        if !groups.iter().any(|g| Arc::ptr_eq(&g.0, &shared.0)) {
            groups.push(shared.clone());
        }
    }
    let mut driver = Driver {
        runs,
        groups,
        running: HashMap::new(),
        waiting: VecDeque::new(),
    };

    loop {
        driver.poll_all(observer);
        while driver.running.len() < options.limit.max(1) {
            let Some((workflow, dispatch)) = driver.waiting.pop_front() else {
                break;
            };
            let leg = (workflow, dispatch.leg);
            let name = format!("{}/{}", driver.runs[workflow].prefix, dispatch.name);
            if interrupted >= 2 {
                // Forced stop: nothing new starts, not even always() jobs.
                driver.finish_without_running(leg, Conclusion::Cancelled);
                continue;
            }
            if let Err(reason) = executor.admit(&dispatch) {
                observer.observe(DriveEvent::LegSkipped {
                    job: &name,
                    reason: &reason,
                });
                driver.finish_without_running(leg, Conclusion::Skipped);
                continue;
            }
            observer.observe(DriveEvent::LegStarted { job: &name });
            let token = CancellationToken::new();
            let kill = CancellationToken::new();
            let events = EventSender {
                leg,
                tx: tx.clone(),
            };
            let future = executor.run(dispatch, events, token.clone(), kill.clone());
            let handle = tasks.spawn(async move { (leg, future.await) });
            task_legs.insert(handle.id(), leg);
            driver.running.insert(
                leg,
                Running {
                    prefix: name,
                    token,
                    kill,
                    started: Instant::now(),
                },
            );
        }
        if driver.running.is_empty() && driver.waiting.is_empty() {
            // Completing legs may have readied more; poll once more before deciding we are done.
            driver.poll_all(observer);
            if driver.waiting.is_empty() {
                break;
            }
            continue;
        }
        observer.flush();

        tokio::select! {
            Some((leg, event)) = rx.recv() => {
                driver.leg_event(observer, leg, event);
                // A burst of lines without going back through select!.
                while let Ok((leg, event)) = rx.try_recv() {
                    driver.leg_event(observer, leg, event);
                }
            }
            Some(joined) = tasks.join_next_with_id() => {
                while let Ok((leg, event)) = rx.try_recv() {
                    driver.leg_event(observer, leg, event);
                }
                let (leg, completion) = match joined {
                    Ok((_, done)) => done,
                    Err(error) => {
                        // A panicking leg fails alone; the rest of the run goes on.
                        let Some(leg) = task_legs.remove(&error.id()) else { continue };
                        if let Some(r) = driver.running.get(&leg) {
                            observer.observe(DriveEvent::LegPanicked { job: &r.prefix, error: error.to_string() });
                        }
                        (leg, JobCompletion::new(Conclusion::Failure))
                    }
                };
                task_legs.retain(|_, l| *l != leg);
                driver.complete(observer, leg, completion);
            }
            interrupt = interrupts.next() => {
                interrupted = interrupt.count;
                observer.observe(DriveEvent::Interrupted(interrupt));
                match interrupt.count {
                    1 => {
                        force_at = Some(tokio::time::Instant::now() + STOP_GRACE);
                        driver.cancel_all();
                    }
                    2 => driver.force_stop(),
                    _ => return Ending::Abandoned,
                }
            }
            () = tokio::time::sleep_until(force_at.unwrap_or_else(tokio::time::Instant::now)), if force_at.is_some() && interrupted < 2 => {
                interrupted = 2;
                observer.observe(DriveEvent::GraceOver);
                driver.force_stop();
            }
            _ = ticker.tick(), if ticking => observer.tick(),
        }
    }
    observer.flush();
    if interrupted > 0 {
        Ending::Interrupted
    } else {
        Ending::Finished
    }
}

impl Driver<'_> {
    /// Takes what every engine has made ready, and tells what the engines decided.
    fn poll_all(&mut self, observer: &mut dyn Observer) {
        self.settle_groups();
        for (index, run) in self.runs.iter_mut().enumerate() {
            self.waiting
                .extend(run.engine.poll().into_iter().map(|d| (index, d)));
            for event in run.engine.events() {
                observer.observe(DriveEvent::Engine {
                    prefix: &run.prefix,
                    event,
                });
            }
        }
    }

    fn leg_event(&self, observer: &mut dyn Observer, leg: LegKey, event: LegEvent) {
        if let Some(r) = self.running.get(&leg) {
            observer.observe(DriveEvent::Leg {
                job: &r.prefix,
                event,
            });
        }
    }

    /// A leg that ran ended: its engine learns how, and stops the legs it names.
    fn complete(&mut self, observer: &mut dyn Observer, leg: LegKey, completion: JobCompletion) {
        if let Some(r) = self.running.remove(&leg) {
            observer.observe(DriveEvent::LegFinished {
                job: &r.prefix,
                conclusion: completion.conclusion,
                duration: r.started.elapsed(),
            });
        }
        for cancel in self.runs[leg.0].engine.complete(leg.1, completion) {
            self.cancel_leg((leg.0, cancel));
        }
        self.settle_groups();
    }

    /// Applies what one engine's group decisions did to the others (and to itself), until
    /// no decision is left: a grant lets a pending entry start at the next poll, a
    /// cancellation stops a running leg or concludes a waiting one.
    fn settle_groups(&mut self) {
        for groups in self.groups.clone() {
            loop {
                let effects = groups.take_effects();
                if effects.is_empty() {
                    break;
                }
                for (index, effect) in effects {
                    let Some(run) = self.runs.get_mut(index) else {
                        continue;
                    };
                    for leg in run.engine.apply_group_effect(effect) {
                        self.cancel_leg((index, leg));
                    }
                }
            }
        }
    }

    /// Stops every running leg without grace and concludes the ones not started.
    fn force_stop(&mut self) {
        for r in self.running.values() {
            r.token.cancel();
            r.kill.cancel();
        }
        self.cancel_all();
    }

    fn cancel_all(&mut self) {
        for index in 0..self.runs.len() {
            for leg in self.runs[index].engine.cancel_run() {
                self.cancel_leg((index, leg));
            }
        }
        self.settle_groups();
    }

    fn is_waiting(&self, leg: LegKey) -> bool {
        self.waiting.iter().any(|(w, d)| (*w, d.leg) == leg)
    }

    /// Stops a running leg through its token, or concludes a leg that never started.
    fn cancel_leg(&mut self, leg: LegKey) {
        if let Some(r) = self.running.get(&leg) {
            r.token.cancel();
        } else if self.is_waiting(leg) {
            self.finish_without_running(leg, Conclusion::Cancelled);
        }
    }

    fn finish_without_running(&mut self, leg: LegKey, conclusion: Conclusion) {
        self.waiting.retain(|(w, d)| (*w, d.leg) != leg);
        let (workflow, id) = leg;
        for cancel in self.runs[workflow]
            .engine
            .complete(id, JobCompletion::new(conclusion))
        {
            if self.is_waiting((workflow, cancel)) {
                self.finish_without_running((workflow, cancel), Conclusion::Cancelled);
            }
        }
    }
}
