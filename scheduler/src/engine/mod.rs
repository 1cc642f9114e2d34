//! The run engine: a pure, synchronous state machine that decides which job legs run, when,
//! and with which evaluated job-level values. The driver (the CLI today, the gRPC scheduler
//! later) executes the legs it hands out and reports back how they ended.
//!
//! Shape of the state: every job of the run is a `Node` (jobs of called workflows too, inside
//! a `Scope` per invocation); a node that runs is split into `Leg`s (one per matrix
//! combination), or, for a reusable-workflow call, into invocations (child scopes).

mod concurrency;
mod context;
mod decide;
mod finish;
mod groups;
mod keys;
mod plan;
mod report;
mod types;

pub use concurrency::{
    Admission, Concurrency, Coordinator, GroupEffect, GroupEntry, GroupHolding, GroupRequest,
    Replayed, SharedConcurrency,
};
pub use types::*;

use groups::Groups;
use indexmap::IndexMap;
use keys::{GroupSpec, LegKeys};
use kiln_workflow::{Conclusion, Object, Value};
use plan::Plan;
use std::collections::VecDeque;
use std::sync::Arc;

pub struct Engine {
    github: Object,
    inputs: Value,
    vars: Value,
    secrets: Value,
    workflow_name: String,
    matrix_filter: Vec<(String, Value)>,
    /// The workflow-level concurrency group of this run, which a job may not share.
    run_group: Option<GroupSpec>,
    scopes: Vec<Scope>,
    nodes: Vec<Node>,
    legs: Vec<Leg>,
    /// Nodes whose needs have all concluded, waiting to be decided.
    ready_nodes: VecDeque<usize>,
    /// Legs created but not yet dispatched, in creation order.
    queued: Vec<usize>,
    /// Where entries ask whether their concurrency group is free.
    groups: Groups,
    /// The answers `groups` gave, in order, until the driver takes them (to record them).
    admissions: Vec<Admission>,
    run_cancelled: bool,
    events: Vec<EngineEvent>,
    /// Running legs the driver must stop, gathered while an operation runs.
    to_cancel: Vec<LegId>,
    open_nodes: usize,
    options: EngineOptions,
}

/// One invocation of a workflow: the run's own, or one call of a reusable workflow.
struct Scope {
    plan: Arc<Plan>,
    inputs: Value,
    secrets: Value,
    name_prefix: String,
    /// Node index per plan job; None for jobs left out by `-j`.
    nodes: Vec<Option<usize>>,
    /// The reusable-workflow job this scope is an invocation of.
    parent: Option<usize>,
    remaining: usize,
    /// Set when fail-fast cancelled this invocation: its jobs not yet decided are cancelled.
    cancelled: Option<String>,
    /// A called workflow's own workflow-level `concurrency` group.
    group: Option<GroupSpec>,
    /// The invocation (the run, for the root scope) holds its group.
    group_held: bool,
    /// Jobs ready to start that wait until the invocation holds its group.
    held: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeState {
    Waiting,
    Started,
    Done,
}

struct Node {
    scope: usize,
    plan_job: usize,
    id: String,
    needs: Vec<usize>,
    dependants: Vec<usize>,
    unmet: usize,
    state: NodeState,
    /// The result dependants see (`needs.<id>.result`): continue-on-error already applied.
    result: Option<Conclusion>,
    /// This job and all its ancestors succeeded.
    lineage_ok: bool,
    /// This job or one of its ancestors failed.
    lineage_failed: bool,
    outputs: IndexMap<String, String>,
    legs: Vec<usize>,
    invocations: Vec<usize>,
    invocation_results: Vec<Conclusion>,
    open_parts: usize,
    fail_fast: bool,
    max_parallel: usize,
    running: usize,
    /// Shown for a node that concluded without legs (skip reason, error).
    name: String,
    message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegState {
    Queued,
    Running,
    Done,
}

struct Leg {
    node: usize,
    name: String,
    matrix: Option<Object>,
    contexts: Object,
    keys: Option<LegKeys>,
    state: LegState,
    continue_on_error: bool,
    conclusion: Option<Conclusion>,
    completion: Option<JobCompletion>,
    message: Option<String>,
    cancel_requested: bool,
    /// The leg holds its job-level concurrency group (or has none to wait for).
    group_held: bool,
}

/// What holds or waits for a concurrency group: the run, a job leg, or one invocation
/// (scope) of a called workflow with a workflow-level `concurrency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Run,
    Leg(usize),
    Call(usize),
}

impl Engine {
    pub fn new(spec: RunSpec) -> Result<Engine, EngineError> {
        Engine::with_options(spec, EngineOptions::default())
    }

    pub fn with_options(spec: RunSpec, options: EngineOptions) -> Result<Engine, EngineError> {
        Engine::build(spec, options, Groups::Private(Coordinator::default()))
    }

    /// An engine whose concurrency groups are shared with other runs through `concurrency`
    /// (see [`Coordinator`]): the driver applies the group effects that concern this run
    /// with [`Engine::apply_group_effect`].
    pub fn with_concurrency(
        spec: RunSpec,
        options: EngineOptions,
        concurrency: Box<dyn Concurrency>,
    ) -> Result<Engine, EngineError> {
        Engine::build(spec, options, Groups::Shared(concurrency))
    }

    fn build(spec: RunSpec, options: EngineOptions, groups: Groups) -> Result<Engine, EngineError> {
        let plan = Plan::build(spec.workflow.clone(), 0)?;
        if plan.jobs.is_empty() {
            return Err(EngineError::NoJobs);
        }
        let only = match &spec.job_filter {
            None => None,
            Some(id) => Some(
                plan.jobs
                    .iter()
                    .position(|j| j.job.id.value.eq_ignore_ascii_case(id))
                    .ok_or_else(|| EngineError::UnknownJob(id.clone()))?,
            ),
        };
        let workflow_name = match &spec.workflow.name {
            Some(name) => name.value.clone(),
            None => spec.workflow_file.clone(),
        };
        let mut engine = Engine {
            github: spec.github,
            inputs: Value::object(spec.inputs),
            vars: Value::object(spec.vars),
            secrets: Value::object(spec.secrets),
            workflow_name,
            matrix_filter: spec
                .matrix_filter
                .into_iter()
                .map(|(k, v)| (k, Value::string(v)))
                .collect(),
            run_group: None,
            scopes: Vec::new(),
            nodes: Vec::new(),
            legs: Vec::new(),
            ready_nodes: VecDeque::new(),
            queued: Vec::new(),
            groups,
            admissions: Vec::new(),
            run_cancelled: false,
            events: Vec::new(),
            to_cancel: Vec::new(),
            open_nodes: 0,
            options,
        };
        engine.run_group = engine.workflow_group(&plan);
        let (inputs, secrets) = (engine.inputs.clone(), engine.secrets.clone());
        let root = decide::NewScope {
            plan,
            inputs,
            secrets,
            parent: None,
            id_prefix: String::new(),
            name_prefix: String::new(),
        };
        engine.add_scope(root, only);
        engine.advance();
        engine.settle_private_groups();
        Ok(engine)
    }

    /// Hands out the legs that may start now (within `max-parallel` and their concurrency
    /// groups). Call after `new()` and after every `complete()` or `cancel_run()`.
    pub fn poll(&mut self) -> Vec<Dispatch> {
        self.advance();
        self.settle_private_groups();
        let mut dispatches = Vec::new();
        let mut kept = Vec::with_capacity(self.queued.len());
        let queued = std::mem::take(&mut self.queued);
        for leg_index in queued {
            let leg = &self.legs[leg_index];
            if leg.state != LegState::Queued {
                continue;
            }
            let node = &self.nodes[leg.node];
            let group_blocks =
                !leg.group_held && leg.keys.as_ref().is_some_and(|k| k.concurrency.is_some());
            if group_blocks || node.running >= node.max_parallel {
                kept.push(leg_index);
                continue;
            }
            if let Some(dispatch) = self.dispatch(leg_index) {
                dispatches.push(dispatch);
            }
        }
        self.queued = kept;
        dispatches
    }

    /// Records how a dispatched leg ended. Returns running legs the driver must now cancel
    /// (fail-fast siblings, a concurrency group's `cancel-in-progress`). Unknown legs and
    /// legs already finished are ignored.
    pub fn complete(&mut self, leg: LegId, done: JobCompletion) -> Vec<LegId> {
        let Some(index) = self.leg_index(leg) else {
            return Vec::new();
        };
        if self.legs[index].state != LegState::Running {
            return Vec::new();
        }
        let failed = done.conclusion == Conclusion::Failure && !self.legs[index].continue_on_error;
        let conclusion = done.conclusion;
        self.finish_leg(index, conclusion, Some(done), None);
        if failed {
            self.fail_fast(index);
            self.fail_fast_calls(index);
        }
        self.advance();
        self.settle_private_groups();
        std::mem::take(&mut self.to_cancel)
    }

    /// Applies a concurrency group's decision about one of this run's entries (from a
    /// [`Coordinator`] shared with other runs). Returns the running legs to stop.
    pub fn apply_group_effect(&mut self, effect: GroupEffect) -> Vec<LegId> {
        self.apply_effect(effect);
        self.advance();
        self.settle_private_groups();
        std::mem::take(&mut self.to_cancel)
    }

    /// The answers the engine's concurrency gave since the last call, in order: what a
    /// driver records to rebuild the engine by replay (with [`Replayed`]).
    pub fn take_admissions(&mut self) -> Vec<Admission> {
        std::mem::take(&mut self.admissions)
    }

    /// Switches where entries ask (after a replay, from the recorded answers to the live
    /// coordinator).
    pub fn set_concurrency(&mut self, concurrency: Box<dyn Concurrency>) {
        self.groups = Groups::Shared(concurrency);
    }

    /// Cancels the run (Ctrl-C). Returns the running legs to stop: a leg whose job condition
    /// still holds when the run is cancelled (`always()`, `cancelled()`) keeps running, and
    /// jobs not yet started run later only if their condition holds.
    pub fn cancel_run(&mut self) -> Vec<LegId> {
        self.cancel_run_because("the run was cancelled");
        self.advance();
        self.settle_private_groups();
        std::mem::take(&mut self.to_cancel)
    }

    /// Cancels the run as a user does (running legs whose condition no longer holds are
    /// stopped; jobs not yet started run only if their condition says so).
    fn cancel_run_because(&mut self, reason: &str) {
        if self.run_cancelled {
            return;
        }
        self.run_cancelled = true;
        self.release_waiting_calls();
        for node_index in 0..self.nodes.len() {
            if self.nodes[node_index].state != NodeState::Started
                || self.nodes[node_index].legs.is_empty()
            {
                continue;
            }
            if self.condition_holds(node_index).unwrap_or(false) {
                continue;
            }
            for leg_index in self.nodes[node_index].legs.clone() {
                self.cancel_leg(leg_index, reason);
            }
        }
    }

    /// True once every job has concluded.
    pub fn is_finished(&self) -> bool {
        self.open_nodes == 0 && self.ready_nodes.is_empty()
    }

    /// Drains what happened since the last call.
    pub fn events(&mut self) -> Vec<EngineEvent> {
        std::mem::take(&mut self.events)
    }

    fn leg_index(&self, leg: LegId) -> Option<usize> {
        let index = usize::try_from(leg.0).ok()?;
        (index < self.legs.len()).then_some(index)
    }

    /// Decides every node whose needs have concluded; deciding one may conclude it and make
    /// its dependants ready in turn.
    fn advance(&mut self) {
        while let Some(node) = self.ready_nodes.pop_front() {
            if self.nodes[node].state == NodeState::Waiting {
                self.decide(node);
            }
        }
    }

    /// Moves the leg's evaluated values into a `Dispatch`: after this the engine only needs
    /// the leg's concurrency group, so nothing is cloned per leg.
    fn dispatch(&mut self, leg_index: usize) -> Option<Dispatch> {
        let node_index = self.legs[leg_index].node;
        let node = &self.nodes[node_index];
        let scope = &self.scopes[node.scope];
        let job = scope.plan.jobs[node.plan_job].job.clone();
        let workflow = scope.plan.workflow.clone();
        let job_id = node.id.clone();
        let leg = &mut self.legs[leg_index];
        let keys = leg.keys.as_mut()?;
        let dispatch = Dispatch {
            leg: LegId(u32::try_from(leg_index).unwrap_or(u32::MAX)),
            job_id,
            name: leg.name.clone(),
            job,
            workflow,
            matrix: leg.matrix.clone(),
            contexts: std::mem::take(&mut leg.contexts),
            runs_on: std::mem::take(&mut keys.runs_on),
            timeout_minutes: keys.timeout_minutes,
            continue_on_error: keys.continue_on_error,
            environment: keys.environment.take(),
        };
        leg.state = LegState::Running;
        self.nodes[node_index].running += 1;
        Some(dispatch)
    }
}
