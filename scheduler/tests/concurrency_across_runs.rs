//! Concurrency groups shared by several runs (one `Coordinator`), as the scheduler and a
//! `kiln run` of several workflows drive them, and rebuilding one run's engine from its own
//! recorded operations.

mod support;
use std::sync::{Arc, Mutex};

use kiln_scheduler::engine::{
    Admission, Coordinator, EngineOptions, GroupEffect, Replayed, SharedConcurrency,
};
use kiln_scheduler::{Dispatch, Engine, JobCompletion, LegId};
use kiln_workflow::Conclusion;
use support::*;

/// What one run's engine was told, in order: enough to rebuild it alone.
#[derive(Debug, Clone)]
enum Op {
    Complete(LegId, Conclusion),
    Effect(GroupEffect),
    CancelRun,
}

/// A tiny multi-run driver: engines share one coordinator; effects go to the engine they
/// name; every operation and admission is recorded per run.
struct Runs {
    coordinator: Arc<Mutex<Coordinator<usize>>>,
    engines: Vec<Engine>,
    /// Dispatched and not yet completed: (run, leg name, dispatch).
    running: Vec<(usize, Dispatch)>,
    /// Legs the engines asked to stop: (run, leg).
    stopped: Vec<(usize, LegId)>,
    ops: Vec<Vec<Op>>,
    admissions: Vec<Vec<Admission>>,
    /// Every leg that was dispatched, as "run:name".
    started: Vec<String>,
}

impl Runs {
    fn new() -> Runs {
        Runs {
            coordinator: Arc::new(Mutex::new(Coordinator::default())),
            engines: Vec::new(),
            running: Vec::new(),
            stopped: Vec::new(),
            ops: Vec::new(),
            admissions: Vec::new(),
            started: Vec::new(),
        }
    }

    fn submit(&mut self, yaml: &str) -> usize {
        let run = self.engines.len();
        let concurrency = SharedConcurrency::new(run, self.coordinator.clone());
        let engine =
            Engine::with_concurrency(spec(yaml), EngineOptions::default(), Box::new(concurrency))
                .expect("engine");
        self.engines.push(engine);
        self.ops.push(Vec::new());
        self.admissions.push(Vec::new());
        self.settle();
        run
    }

    /// Applies the coordinator's effects until none is left, then dispatches what is ready.
    fn settle(&mut self) {
        loop {
            let effects = self.coordinator.lock().unwrap().take_effects();
            if effects.is_empty() {
                break;
            }
            for (run, effect) in effects {
                self.ops[run].push(Op::Effect(effect.clone()));
                let stop = self.engines[run].apply_group_effect(effect);
                self.stopped.extend(stop.into_iter().map(|leg| (run, leg)));
            }
        }
        for run in 0..self.engines.len() {
            let admissions = self.engines[run].take_admissions();
            self.admissions[run].extend(admissions);
            for dispatch in self.engines[run].poll() {
                self.started.push(format!("{run}:{}", dispatch.name));
                self.running.push((run, dispatch));
            }
            let admissions = self.engines[run].take_admissions();
            self.admissions[run].extend(admissions);
        }
    }

    fn complete(&mut self, run: usize, name: &str, conclusion: Conclusion) {
        let at = self
            .running
            .iter()
            .position(|(r, d)| *r == run && d.name == name)
            .unwrap_or_else(|| panic!("{run}:{name} is not running; running: {:?}", self.names()));
        let (_, dispatch) = self.running.remove(at);
        self.ops[run].push(Op::Complete(dispatch.leg, conclusion));
        let stop = self.engines[run].complete(dispatch.leg, JobCompletion::new(conclusion));
        self.stopped.extend(stop.into_iter().map(|leg| (run, leg)));
        self.settle();
    }

    fn cancel(&mut self, run: usize) {
        self.ops[run].push(Op::CancelRun);
        let stop = self.engines[run].cancel_run();
        self.stopped.extend(stop.into_iter().map(|leg| (run, leg)));
        self.settle();
    }

    fn names(&self) -> Vec<String> {
        self.running
            .iter()
            .map(|(r, d)| format!("{r}:{}", d.name))
            .collect()
    }

    fn conclusion(&self, run: usize) -> &'static str {
        self.engines[run].report().conclusion.as_str()
    }

    /// Rebuilds run `run` alone from its recorded operations and answers, the way a
    /// scheduler does after a restart; returns its report lines.
    fn replay(&self, run: usize, yaml: &str) -> Vec<String> {
        let answers = Replayed::new(self.admissions[run].clone());
        let mut engine =
            Engine::with_concurrency(spec(yaml), EngineOptions::default(), Box::new(answers))
                .expect("engine");
        engine.poll();
        for op in &self.ops[run] {
            match op {
                Op::Complete(leg, conclusion) => {
                    engine.complete(*leg, JobCompletion::new(*conclusion));
                }
                Op::Effect(effect) => {
                    engine.apply_group_effect(effect.clone());
                }
                Op::CancelRun => {
                    engine.cancel_run();
                }
            }
            engine.poll();
        }
        assert_eq!(
            engine.take_admissions(),
            self.admissions[run],
            "the replay asked the same questions in the same order"
        );
        report_lines_of(&engine)
    }
}

fn report_lines_of(engine: &Engine) -> Vec<String> {
    let report = engine.report();
    let mut lines: Vec<String> = report
        .jobs
        .iter()
        .map(|j| format!("{}={}", j.name, j.conclusion.as_str()))
        .collect();
    lines.push(format!("run={}", report.conclusion.as_str()));
    lines
}

const DEPLOY: &str = "on: push
concurrency: deploy
jobs:
  build: {runs-on: x, steps: [run: echo]}
  ship: {needs: build, runs-on: x, steps: [run: echo]}
";

const DEPLOY_CANCELLING: &str = "on: push
concurrency: {group: Deploy, cancel-in-progress: true}
jobs:
  build: {runs-on: x, steps: [run: echo]}
";

#[test]
fn a_second_run_in_the_group_waits_until_the_first_is_done() {
    let mut runs = Runs::new();
    let first = runs.submit(DEPLOY);
    let second = runs.submit(DEPLOY);
    assert_eq!(
        runs.names(),
        ["0:build"],
        "the second run waits for the group"
    );
    runs.complete(first, "build", Conclusion::Success);
    assert_eq!(
        runs.names(),
        ["0:ship"],
        "still waiting while the first runs"
    );
    runs.complete(first, "ship", Conclusion::Success);
    assert_eq!(
        runs.names(),
        ["1:build"],
        "granted once the first run is done"
    );
    runs.complete(second, "build", Conclusion::Success);
    runs.complete(second, "ship", Conclusion::Success);
    assert_eq!(runs.conclusion(first), "success");
    assert_eq!(runs.conclusion(second), "success");
    assert!(runs.stopped.is_empty());
}

#[test]
fn a_newer_pending_run_cancels_the_older_pending_one() {
    let mut runs = Runs::new();
    let first = runs.submit(DEPLOY);
    let older = runs.submit(DEPLOY);
    let newer = runs.submit(DEPLOY);
    assert_eq!(
        runs.conclusion(older),
        "cancelled",
        "replaced as the pending run"
    );
    runs.complete(first, "build", Conclusion::Success);
    runs.complete(first, "ship", Conclusion::Success);
    assert_eq!(runs.names(), ["2:build"]);
    runs.complete(newer, "build", Conclusion::Success);
    runs.complete(newer, "ship", Conclusion::Success);
    assert!(
        !runs.started.iter().any(|s| s.starts_with("1:")),
        "the older pending run never started a job: {:?}",
        runs.started
    );
    assert_eq!(runs.conclusion(newer), "success");
}

#[test]
fn cancel_in_progress_stops_the_running_run_and_the_new_one_starts_after_it() {
    let mut runs = Runs::new();
    let first = runs.submit(DEPLOY_CANCELLING);
    let second = runs.submit(DEPLOY_CANCELLING.replace("Deploy", "deploy").as_str());
    assert_eq!(
        runs.stopped,
        [(first, LegId(0))],
        "the running leg is stopped"
    );
    assert_eq!(
        runs.names(),
        ["0:build"],
        "the new run waits until it has stopped"
    );
    runs.complete(first, "build", Conclusion::Cancelled);
    assert_eq!(runs.conclusion(first), "cancelled");
    assert_eq!(runs.names(), ["1:build"]);
    runs.complete(second, "build", Conclusion::Success);
    assert_eq!(runs.conclusion(second), "success");
}

#[test]
fn job_level_groups_are_shared_between_runs() {
    let yaml = "on: push
jobs:
  deploy: {runs-on: x, concurrency: prod, steps: [run: echo]}
  test: {runs-on: x, steps: [run: echo]}
";
    let mut runs = Runs::new();
    let first = runs.submit(yaml);
    let second = runs.submit(yaml);
    assert_eq!(runs.names(), ["0:deploy", "0:test", "1:test"]);
    runs.complete(first, "deploy", Conclusion::Success);
    assert_eq!(runs.names(), ["0:test", "1:test", "1:deploy"]);
    runs.complete(second, "deploy", Conclusion::Success);
    runs.complete(first, "test", Conclusion::Success);
    runs.complete(second, "test", Conclusion::Success);
    assert_eq!(runs.conclusion(first), "success");
    assert_eq!(runs.conclusion(second), "success");
}

#[test]
fn cancelling_a_waiting_run_frees_its_place() {
    let mut runs = Runs::new();
    let first = runs.submit(DEPLOY);
    let waiting = runs.submit(DEPLOY);
    runs.cancel(waiting);
    assert_eq!(runs.conclusion(waiting), "cancelled");
    let third = runs.submit(DEPLOY);
    runs.complete(first, "build", Conclusion::Success);
    runs.complete(first, "ship", Conclusion::Success);
    assert_eq!(
        runs.names(),
        ["2:build"],
        "the third run is granted the group"
    );
    runs.complete(third, "build", Conclusion::Success);
    runs.complete(third, "ship", Conclusion::Success);
    assert!(!runs.started.iter().any(|s| s.starts_with("1:")));
}

#[test]
fn each_run_is_rebuilt_alone_from_its_own_record() {
    let mut runs = Runs::new();
    let first = runs.submit(DEPLOY);
    let older = runs.submit(DEPLOY);
    let newer = runs.submit(DEPLOY);
    let job_level = "on: push
jobs:
  deploy: {runs-on: x, concurrency: prod, steps: [run: echo]}
";
    let fourth = runs.submit(job_level);
    let fifth = runs.submit(job_level);
    runs.complete(first, "build", Conclusion::Success);
    runs.complete(fourth, "deploy", Conclusion::Failure);
    runs.complete(first, "ship", Conclusion::Success);
    runs.complete(newer, "build", Conclusion::Success);
    // The replay of a run still in progress gives the same state as the live engine.
    assert_eq!(
        runs.replay(newer, DEPLOY),
        report_lines_of(&runs.engines[newer])
    );
    runs.complete(newer, "ship", Conclusion::Success);
    runs.complete(fifth, "deploy", Conclusion::Success);
    for (run, yaml) in [
        (first, DEPLOY),
        (older, DEPLOY),
        (newer, DEPLOY),
        (fourth, job_level),
        (fifth, job_level),
    ] {
        assert_eq!(
            runs.replay(run, yaml),
            report_lines_of(&runs.engines[run]),
            "run {run} rebuilt alone"
        );
    }
    assert_eq!(runs.conclusion(older), "cancelled");
    assert_eq!(runs.conclusion(fourth), "failure");
}

#[test]
fn a_rebuilt_coordinator_knows_who_holds_and_who_waits() {
    let mut runs = Runs::new();
    runs.submit(DEPLOY);
    runs.submit(DEPLOY);
    let mut rebuilt: Coordinator<usize> = Coordinator::default();
    for (run, engine) in runs.engines.iter().enumerate() {
        rebuilt.restore(run, &engine.group_holdings());
    }
    assert_eq!(rebuilt.occupancy(), [("deploy".to_owned(), 2)]);
    // The rebuilt coordinator then decides as the live one would: a third run replaces the
    // pending second.
    let request = kiln_scheduler::engine::GroupRequest {
        key: "deploy".into(),
        shown: "deploy".into(),
        cancel_in_progress: false,
    };
    let answer = rebuilt.enter(2, kiln_scheduler::engine::GroupEntry::Run, &request);
    assert_eq!(answer, Admission::Pend);
    let effects = rebuilt.take_effects();
    assert!(
        matches!(&effects[..], [(1, GroupEffect::Cancel { .. })]),
        "{effects:?}"
    );
}
