//! A fake executor driving the engine: parse a workflow, loop poll -> decide each dispatched
//! leg's outcome from a rule -> complete, and record what happened for assertions.
#![allow(dead_code)]

use indexmap::IndexMap;
use kiln_scheduler::{
    Dispatch, Engine, EngineEvent, JobCompletion, JobReport, LegId, RunReport, RunSpec,
};
use kiln_workflow::{parse_workflow_with, Conclusion, Object, ParseOptions, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// Parses a workflow (callees served by path) and builds a run spec with a small github context.
pub fn spec_with(yaml: &str, callees: &[(&str, &str)]) -> RunSpec {
    let callees: Vec<(String, String)> = callees
        .iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect();
    let resolver = move |uses: &str| {
        callees
            .iter()
            .find(|(p, _)| p == uses)
            .map(|(p, c)| (p.clone(), c.clone()))
    };
    let options = ParseOptions {
        resolver: Some(&resolver),
        ..ParseOptions::default()
    };
    spec_from(yaml, &options)
}

/// Parses without a resolver: reusable-workflow jobs keep no callee.
pub fn spec_unresolved(yaml: &str) -> RunSpec {
    spec_from(yaml, &ParseOptions::default())
}

fn spec_from(yaml: &str, options: &ParseOptions) -> RunSpec {
    let parsed = parse_workflow_with("ci.yml", yaml, options);
    let errors: Vec<String> = parsed.errors().map(|d| d.message.clone()).collect();
    assert!(errors.is_empty(), "workflow does not parse: {errors:?}");
    let workflow = parsed.value.expect("a workflow");
    RunSpec {
        workflow: Arc::new(workflow),
        workflow_file: ".github/workflows/ci.yml".to_string(),
        github: object(
            serde_json::json!({"event_name": "push", "ref": "refs/heads/main", "sha": "abc123", "repository": "o/r"}),
        ),
        inputs: Object::new(),
        vars: Object::new(),
        secrets: object(serde_json::json!({"TOKEN": "s3cret", "OTHER": "x"})),
        job_filter: None,
        matrix_filter: Vec::new(),
    }
}

pub fn spec(yaml: &str) -> RunSpec {
    spec_with(yaml, &[])
}

pub fn object(json: serde_json::Value) -> Object {
    match Value::from_json(&json) {
        Value::Object(o) => Object::clone(&o),
        _ => Object::new(),
    }
}

/// How the fake executor ends one leg.
#[derive(Clone)]
pub struct Outcome {
    pub conclusion: Conclusion,
    pub outputs: Vec<(String, String)>,
}

pub fn ok() -> Outcome {
    Outcome {
        conclusion: Conclusion::Success,
        outputs: Vec::new(),
    }
}

pub fn fail() -> Outcome {
    Outcome {
        conclusion: Conclusion::Failure,
        outputs: Vec::new(),
    }
}

impl Outcome {
    pub fn out(mut self, name: &str, value: &str) -> Outcome {
        self.outputs.push((name.to_string(), value.to_string()));
        self
    }
}

/// Which running leg finishes next.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The oldest running leg.
    Fifo,
    /// The newest running leg.
    Lifo,
}

pub struct Run {
    pub report: RunReport,
    pub dispatched: Vec<Dispatch>,
    pub events: Vec<EngineEvent>,
    /// Names running after each poll.
    pub snapshots: Vec<Vec<String>>,
    pub max_running: usize,
    /// Names the engine asked to cancel while they ran.
    pub cancel_requests: Vec<String>,
    pub completion_order: Vec<String>,
}

impl Run {
    pub fn names(&self) -> Vec<&str> {
        self.dispatched.iter().map(|d| d.name.as_str()).collect()
    }

    pub fn dispatch(&self, name: &str) -> &Dispatch {
        self.dispatched
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "'{name}' was not dispatched; dispatched: {:?}",
                    self.names()
                )
            })
    }

    pub fn job(&self, name: &str) -> &JobReport {
        self.report
            .jobs
            .iter()
            .find(|j| j.name == name)
            .unwrap_or_else(|| panic!("no '{name}' in the report: {:?}", self.report_lines()))
    }

    pub fn conclusion(&self, name: &str) -> &'static str {
        self.job(name).conclusion.as_str()
    }

    /// `name=conclusion` per report entry, in report order.
    pub fn report_lines(&self) -> Vec<String> {
        self.report
            .jobs
            .iter()
            .map(|j| format!("{}={}", j.name, j.conclusion))
            .collect()
    }

    pub fn ran(&self, name: &str) -> bool {
        self.dispatched.iter().any(|d| d.name == name)
    }

    pub fn ran_together(&self, a: &str, b: &str) -> bool {
        self.snapshots
            .iter()
            .any(|s| s.iter().any(|n| n == a) && s.iter().any(|n| n == b))
    }
}

pub struct Driver<'a> {
    rule: Box<dyn FnMut(&Dispatch) -> Outcome + 'a>,
    order: Order,
    cancel_after: Option<usize>,
    /// Run this many legs at once at most, as the CLI's --parallel would.
    parallel: usize,
}

impl<'a> Driver<'a> {
    pub fn new(rule: impl FnMut(&Dispatch) -> Outcome + 'a) -> Self {
        Driver {
            rule: Box::new(rule),
            order: Order::Fifo,
            cancel_after: None,
            parallel: usize::MAX,
        }
    }

    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }

    /// Calls `cancel_run()` once this many legs have completed (0: as soon as legs run).
    pub fn cancel_after(mut self, completions: usize) -> Self {
        self.cancel_after = Some(completions);
        self
    }

    pub fn run(self, spec: RunSpec) -> Run {
        let engine = Engine::new(spec).expect("engine starts");
        self.drive(engine)
    }

    pub fn drive(mut self, mut engine: Engine) -> Run {
        let mut running: Vec<Dispatch> = Vec::new();
        let mut backlog: Vec<Dispatch> = Vec::new();
        let mut to_cancel: BTreeSet<LegId> = BTreeSet::new();
        let mut run = Run {
            report: engine.report(),
            dispatched: Vec::new(),
            events: Vec::new(),
            snapshots: Vec::new(),
            max_running: 0,
            cancel_requests: Vec::new(),
            completion_order: Vec::new(),
        };
        let mut cancelled = false;
        let mut clock = 0u64;
        // One completion per iteration, so the iteration number counts completions.
        for completions in 0usize..100_000 {
            backlog.extend(engine.poll());
            while running.len() < self.parallel && !backlog.is_empty() {
                let d = backlog.remove(0);
                run.dispatched.push(d.clone());
                running.push(d);
            }
            if self.cancel_after == Some(completions) && !cancelled {
                cancelled = true;
                request_cancels(engine.cancel_run(), &running, &mut run, &mut to_cancel);
            }
            run.events.extend(engine.events());
            let names: Vec<String> = running.iter().map(|d| d.name.clone()).collect();
            run.max_running = run.max_running.max(names.len());
            run.snapshots.push(names);
            if running.is_empty() {
                assert!(
                    engine.is_finished(),
                    "nothing runs but the engine is not finished: {:?}",
                    run.report_lines_of(&engine)
                );
                break;
            }
            let position = running
                .iter()
                .position(|d| to_cancel.contains(&d.leg))
                .unwrap_or(if self.order == Order::Fifo {
                    0
                } else {
                    running.len() - 1
                });
            let leg = running.remove(position);
            let outcome = if to_cancel.remove(&leg.leg) {
                Outcome {
                    conclusion: Conclusion::Cancelled,
                    outputs: Vec::new(),
                }
            } else {
                (self.rule)(&leg)
            };
            clock += 1;
            let done = JobCompletion {
                conclusion: outcome.conclusion,
                outputs: outcome.outputs.into_iter().collect::<IndexMap<_, _>>(),
                started_at: UNIX_EPOCH + Duration::from_secs(clock),
                finished_at: UNIX_EPOCH + Duration::from_secs(clock + 1),
                steps: Vec::new(),
                summary: String::new(),
            };
            run.completion_order.push(leg.name.clone());
            let cancels = engine.complete(leg.leg, done);
            request_cancels(cancels, &running, &mut run, &mut to_cancel);
        }
        run.events.extend(engine.events());
        assert!(engine.is_finished(), "the run did not finish");
        run.report = engine.report();
        run
    }
}

/// Remembers the legs the engine wants stopped; the fake executor ends them as cancelled next.
fn request_cancels(
    cancels: Vec<LegId>,
    running: &[Dispatch],
    run: &mut Run,
    to_cancel: &mut BTreeSet<LegId>,
) {
    for id in cancels {
        if let Some(d) = running.iter().find(|d| d.leg == id) {
            run.cancel_requests.push(d.name.clone());
        }
        to_cancel.insert(id);
    }
}

impl Run {
    fn report_lines_of(&self, engine: &Engine) -> Vec<String> {
        engine
            .report()
            .jobs
            .iter()
            .map(|j| format!("{}={}", j.name, j.conclusion))
            .collect()
    }
}

/// Runs with every leg succeeding.
pub fn run_ok(yaml: &str) -> Run {
    Driver::new(|_| ok()).run(spec(yaml))
}

/// Runs with the named legs failing, the rest succeeding.
pub fn run_failing(yaml: &str, failing: &[&str]) -> Run {
    let failing: Vec<String> = failing.iter().map(|s| s.to_string()).collect();
    Driver::new(move |d| {
        if failing.contains(&d.name) {
            fail()
        } else {
            ok()
        }
    })
    .run(spec(yaml))
}

/// A rule: the leg named `name` ends with `outcome`, every other leg succeeds.
pub fn only(name: &'static str, outcome: Outcome) -> impl FnMut(&Dispatch) -> Outcome {
    move |d| {
        if d.name == name {
            outcome.clone()
        } else {
            ok()
        }
    }
}

/// `jobs` jobs j0..j(n-1), each needing the one before.
pub fn chain_yaml(jobs: usize) -> String {
    let mut yaml = String::from("on: push\njobs:\n  j0: {runs-on: x, steps: [run: echo]}\n");
    for i in 1..jobs {
        yaml.push_str(&format!(
            "  j{i}: {{needs: j{}, runs-on: x, steps: [run: echo]}}\n",
            i - 1
        ));
    }
    yaml
}

/// Four 250-leg matrix jobs in a chain: 1,000 legs.
pub fn thousand_legs_yaml() -> String {
    let values: Vec<String> = (0..25).map(|i| i.to_string()).collect();
    let mut yaml = String::from("on: push\njobs:\n");
    for job in 0..4 {
        let needs = if job == 0 {
            String::new()
        } else {
            format!("needs: m{}, ", job - 1)
        };
        yaml.push_str(&format!(
            "  m{job}: {{{needs}runs-on: x, strategy: {{matrix: {{a: [{}], b: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}}}}, steps: [run: echo]}}\n",
            values.join(", ")
        ));
    }
    yaml
}
