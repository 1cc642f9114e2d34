//! The async loop of a run: asks each workflow's engine what is ready (the workflows an event
//! triggers run at the same time, as on GitHub), starts each leg on a [`LegRunner`] (up to
//! `--parallel` across all of them), renders what the legs report, feeds completions back,
//! cancels the legs the engine names (fail-fast), and turns Ctrl-C (or any other terminating
//! signal, see [`super::signals`]) into a graceful cancellation: jobs still running after
//! [`STOP_GRACE`] are stopped, as are all of them at a second signal; a third exits at once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_scheduler::engine::{Dispatch, Engine, EngineEvent, JobCompletion, LegId};
use kiln_workflow::model::Workflow;
use kiln_workflow::Conclusion;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::render::Renderer;
use super::signals::{describe, is_interrupt, Signals};

/// How long a cancelled run may go on (steps stopping, `always()` jobs and post steps running)
/// before every job still running is stopped without waiting.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// What a running leg tells the terminal.
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

/// Executes legs: the real executor, or the dry run.
pub trait LegRunner: Send + Sync {
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
    /// it (all of them, or the one `-j` chose), so a runner can get later jobs ready while
    /// earlier ones run. Workflows of one run are told apart by their `Arc`, which the
    /// engine hands to every dispatch.
    fn plan(&self, _workflow: &Arc<Workflow>, _job_ids: Vec<String>) {}
}

/// A leg of one of the run's workflows: the workflow's index and the leg in its engine.
type LegKey = (usize, LegId);

/// One workflow of the run: its engine and its name for `[workflow/job]` prefixes.
pub struct WorkflowRun {
    pub engine: Engine,
    pub prefix: String,
    /// The workflow the engine runs (the same `Arc` as its dispatches carry).
    pub workflow: Arc<Workflow>,
}

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

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Finished,
    /// A signal (Ctrl-C, SIGTERM...): the run was cancelled (and, when forced, legs were
    /// stopped without grace).
    Interrupted,
}

struct Running {
    prefix: String,
    token: CancellationToken,
    kill: CancellationToken,
    started: Instant,
}

/// Drives every workflow's engine to the end, together; `limit` is the most legs running at
/// once across all of them.
pub async fn drive(
    runs: &mut [WorkflowRun],
    runner: Arc<dyn LegRunner>,
    renderer: &mut Renderer,
    limit: usize,
    live: bool,
    signals: &mut Signals,
) -> Ending {
    let (tx, mut rx) = unbounded_channel::<(LegKey, LegEvent)>();
    let mut tasks: JoinSet<(LegKey, JobCompletion)> = JoinSet::new();
    let mut running: HashMap<LegKey, Running> = HashMap::new();
    let mut waiting: VecDeque<(usize, Dispatch)> = VecDeque::new();
    let mut interrupts = 0u32;
    // Set by the first signal: when the graceful stop must turn into a forced one.
    let mut force_at: Option<tokio::time::Instant> = None;
    let mut task_legs: HashMap<tokio::task::Id, LegKey> = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(120));
    for run in runs.iter() {
        let job_ids = run.engine.report().jobs.into_iter().map(|job| job.id);
        runner.plan(&run.workflow, job_ids.collect());
    }

    loop {
        poll_all(runs, &mut waiting, renderer);
        while running.len() < limit.max(1) {
            let Some((workflow, dispatch)) = waiting.pop_front() else {
                break;
            };
            let leg = (workflow, dispatch.leg);
            let name = format!("{}/{}", runs[workflow].prefix, dispatch.name);
            if interrupts >= 2 {
                // Forced stop: nothing new starts, not even always() jobs.
                finish_without_running(runs, &mut waiting, leg, Conclusion::Cancelled);
                continue;
            }
            if let Err(reason) = runner.admit(&dispatch) {
                renderer.job_message(&name, &format!("⊘ skipped: {reason}"));
                finish_without_running(runs, &mut waiting, leg, Conclusion::Skipped);
                continue;
            }
            renderer.job_started(&name);
            let token = CancellationToken::new();
            let kill = CancellationToken::new();
            let events = EventSender {
                leg,
                tx: tx.clone(),
            };
            let future = runner.run(dispatch, events, token.clone(), kill.clone());
            let handle = tasks.spawn(async move { (leg, future.await) });
            task_legs.insert(handle.id(), leg);
            running.insert(
                leg,
                Running {
                    prefix: name,
                    token,
                    kill,
                    started: Instant::now(),
                },
            );
        }
        if running.is_empty() && waiting.is_empty() {
            // Completing legs may have readied more; poll once more before deciding we are done.
            poll_all(runs, &mut waiting, renderer);
            if waiting.is_empty() {
                break;
            }
            continue;
        }
        renderer.flush();

        tokio::select! {
            Some((leg, event)) = rx.recv() => {
                render_leg_event(renderer, &running, leg, event);
                // Render a burst of lines without going back through select!.
                while let Ok((leg, event)) = rx.try_recv() {
                    render_leg_event(renderer, &running, leg, event);
                }
            }
            Some(joined) = tasks.join_next_with_id() => {
                while let Ok((leg, event)) = rx.try_recv() {
                    render_leg_event(renderer, &running, leg, event);
                }
                let (leg, completion) = match joined {
                    Ok((_, done)) => done,
                    Err(error) => {
                        // A panicking leg fails alone; the rest of the run goes on.
                        let Some(leg) = task_legs.remove(&error.id()) else { continue };
                        if let Some(r) = running.get(&leg) {
                            renderer.job_message(&r.prefix, &format!("✘ internal error in kiln: {error}"));
                        }
                        (leg, JobCompletion::new(Conclusion::Failure))
                    }
                };
                task_legs.retain(|_, l| *l != leg);
                if let Some(r) = running.remove(&leg) {
                    renderer.job_finished(&r.prefix, completion.conclusion, r.started.elapsed());
                }
                for cancel in runs[leg.0].engine.complete(leg.1, completion) {
                    cancel_leg(runs, &mut waiting, &running, (leg.0, cancel));
                }
            }
            (signal, count) = signals.recv() => {
                interrupts = count;
                let name = describe(signal);
                match count {
                    1 => {
                        let again = if is_interrupt(signal) { "Ctrl-C" } else { "send it" };
                        renderer.notice(&format!(
                            "interrupted ({name}): cancelling the run; jobs still running in {}s are stopped ({again} again to stop them now)",
                            STOP_GRACE.as_secs()
                        ));
                        force_at = Some(tokio::time::Instant::now() + STOP_GRACE);
                        cancel_all(runs, &mut waiting, &running);
                    }
                    2 => {
                        renderer.notice(&format!("{name} again: stopping every job now; cleaning up (once more to exit without cleanup)"));
                        force_stop(runs, &mut waiting, &running);
                    }
                    _ => {
                        renderer.notice("exiting without cleanup");
                        renderer.flush();
                        std::process::exit(i32::from(signals.exit_status().unwrap_or(130)));
                    }
                }
            }
            () = tokio::time::sleep_until(force_at.unwrap_or_else(tokio::time::Instant::now)), if force_at.is_some() && interrupts < 2 => {
                interrupts = 2;
                renderer.notice(&format!(
                    "jobs still running {}s after the interruption: stopping them now; cleaning up",
                    STOP_GRACE.as_secs()
                ));
                force_stop(runs, &mut waiting, &running);
            }
            _ = ticker.tick(), if live => renderer.tick(),
        }
    }
    renderer.flush();
    if interrupts > 0 {
        Ending::Interrupted
    } else {
        Ending::Finished
    }
}

/// Takes what every engine has made ready, and renders what the engines decided.
fn poll_all(
    runs: &mut [WorkflowRun],
    waiting: &mut VecDeque<(usize, Dispatch)>,
    renderer: &mut Renderer,
) {
    for (index, run) in runs.iter_mut().enumerate() {
        waiting.extend(run.engine.poll().into_iter().map(|d| (index, d)));
        render_engine_events(&mut run.engine, renderer, &run.prefix);
    }
}

/// Stops every running leg without grace and concludes the ones not started.
fn force_stop(
    runs: &mut [WorkflowRun],
    waiting: &mut VecDeque<(usize, Dispatch)>,
    running: &HashMap<LegKey, Running>,
) {
    for r in running.values() {
        r.token.cancel();
        r.kill.cancel();
    }
    cancel_all(runs, waiting, running);
}

fn cancel_all(
    runs: &mut [WorkflowRun],
    waiting: &mut VecDeque<(usize, Dispatch)>,
    running: &HashMap<LegKey, Running>,
) {
    for index in 0..runs.len() {
        for leg in runs[index].engine.cancel_run() {
            cancel_leg(runs, waiting, running, (index, leg));
        }
    }
}

fn is_waiting(waiting: &VecDeque<(usize, Dispatch)>, leg: LegKey) -> bool {
    waiting.iter().any(|(w, d)| (*w, d.leg) == leg)
}

/// Stops a running leg through its token, or concludes a leg that never started.
fn cancel_leg(
    runs: &mut [WorkflowRun],
    waiting: &mut VecDeque<(usize, Dispatch)>,
    running: &HashMap<LegKey, Running>,
    leg: LegKey,
) {
    if let Some(r) = running.get(&leg) {
        r.token.cancel();
    } else if is_waiting(waiting, leg) {
        finish_without_running(runs, waiting, leg, Conclusion::Cancelled);
    }
}

fn finish_without_running(
    runs: &mut [WorkflowRun],
    waiting: &mut VecDeque<(usize, Dispatch)>,
    leg: LegKey,
    conclusion: Conclusion,
) {
    waiting.retain(|(w, d)| (*w, d.leg) != leg);
    let (workflow, id) = leg;
    for cancel in runs[workflow]
        .engine
        .complete(id, JobCompletion::new(conclusion))
    {
        if is_waiting(waiting, (workflow, cancel)) {
            finish_without_running(runs, waiting, (workflow, cancel), Conclusion::Cancelled);
        }
    }
}

fn render_leg_event(
    renderer: &mut Renderer,
    running: &HashMap<LegKey, Running>,
    leg: LegKey,
    event: LegEvent,
) {
    let Some(r) = running.get(&leg) else { return };
    match event {
        LegEvent::StepStarted { name } => renderer.step_started(&r.prefix, &name),
        LegEvent::Log { line } => renderer.log(&r.prefix, &line),
        LegEvent::StepFinished {
            name,
            conclusion,
            duration,
        } => renderer.step_finished(&r.prefix, &name, conclusion, duration),
        LegEvent::Message { text } => renderer.job_message(&r.prefix, &text),
    }
}

fn render_engine_events(engine: &mut Engine, renderer: &mut Renderer, prefix: &str) {
    for event in engine.events() {
        match event {
            EngineEvent::JobSkipped { name, reason, .. } => {
                renderer.job_message(&format!("{prefix}/{name}"), &format!("⊘ skipped: {reason}"))
            }
            EngineEvent::JobFailedToStart { name, error, .. } => renderer.job_message(
                &format!("{prefix}/{name}"),
                &format!("✘ failed to start: {error}"),
            ),
            EngineEvent::JobDeferred { name, reason, .. } => renderer.job_message(
                &format!("{prefix}/{name}"),
                &format!("⏸ deferred: {reason}"),
            ),
            EngineEvent::LegCancelled { name, reason, .. } => renderer.job_message(
                &format!("{prefix}/{name}"),
                &format!("⊗ cancelled: {reason}"),
            ),
            EngineEvent::LegPending { name, group, .. } => renderer.job_message(
                &format!("{prefix}/{name}"),
                &format!("waiting for concurrency group `{group}`"),
            ),
        }
    }
}
