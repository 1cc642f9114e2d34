//! Deciding a job once its needs have concluded: its `if:`, its strategy and matrix, and the
//! legs (or reusable-workflow invocations) it becomes.

use super::context::{JobContext, JobStatus};
use super::keys::{self, GroupSpec};
use super::plan::Plan;
use super::{Engine, EngineEvent, Entry, Leg, LegState, Node, NodeState, Scope};
use indexmap::IndexMap;
use kiln_workflow::eval::{
    evaluate_condition, evaluate_param, evaluate_strategy, strategy_texts_reading,
};
use kiln_workflow::matrix::{self, MatrixLeg};
use kiln_workflow::model::{CallSecrets, InputType, JobKind, ReusableCall};
use kiln_workflow::{Conclusion, Object, Value};
use std::sync::Arc;

/// What a node's strategy turned into.
struct Strategy {
    fail_fast: bool,
    max_parallel: Option<usize>,
    legs: Vec<Option<MatrixLeg>>,
}

/// One invocation of a workflow about to be added: the run's own, or a reusable call.
pub(super) struct NewScope {
    pub plan: Arc<Plan>,
    pub inputs: Value,
    pub secrets: Value,
    /// The reusable-workflow job this is an invocation of.
    pub parent: Option<usize>,
    /// Prepended to job ids (`caller/`) and display names (`caller (x) / `).
    pub id_prefix: String,
    pub name_prefix: String,
}

impl Engine {
    /// Adds one workflow invocation with a node per job. `only` keeps just that job, with its
    /// needs ignored (`-j`).
    pub(super) fn add_scope(&mut self, new: NewScope, only: Option<usize>) -> usize {
        let NewScope {
            plan,
            inputs,
            secrets,
            parent,
            id_prefix,
            name_prefix,
        } = new;
        let scope_index = self.scopes.len();
        let first_node = self.nodes.len();
        let mut nodes = vec![None; plan.jobs.len()];
        for (plan_index, plan_job) in plan.jobs.iter().enumerate() {
            if only.is_some_and(|o| o != plan_index) {
                continue;
            }
            nodes[plan_index] = Some(self.nodes.len());
            let job = &plan_job.job;
            let name = match &job.name {
                Some(t) if !t.has_expressions() => t.raw.clone(),
                _ => job.id.value.clone(),
            };
            self.nodes.push(Node {
                scope: scope_index,
                plan_job: plan_index,
                id: format!("{id_prefix}{}", job.id.value),
                needs: Vec::new(),
                dependants: Vec::new(),
                unmet: 0,
                state: NodeState::Waiting,
                result: None,
                lineage_ok: false,
                lineage_failed: false,
                outputs: IndexMap::new(),
                legs: Vec::new(),
                invocations: Vec::new(),
                invocation_results: Vec::new(),
                open_parts: 0,
                fail_fast: true,
                max_parallel: usize::MAX,
                running: 0,
                name: format!("{name_prefix}{name}"),
                message: None,
            });
        }
        if only.is_none() {
            for (plan_index, plan_job) in plan.jobs.iter().enumerate() {
                let Some(node) = nodes[plan_index] else {
                    continue;
                };
                for &need in &plan_job.needs {
                    let Some(need_node) = nodes[need] else {
                        continue;
                    };
                    self.nodes[node].needs.push(need_node);
                    self.nodes[need_node].dependants.push(node);
                }
                self.nodes[node].unmet = self.nodes[node].needs.len();
            }
        }
        let created = self.nodes.len() - first_node;
        self.open_nodes += created;
        // A called workflow's own `concurrency`, evaluated with its inputs; the run's own
        // was evaluated when the engine was made.
        let group = match parent {
            Some(_) => self.workflow_group_with(&plan, &inputs),
            None => self.run_group.clone(),
        };
        self.scopes.push(Scope {
            plan,
            inputs,
            secrets,
            name_prefix,
            nodes,
            parent,
            remaining: created,
            cancelled: None,
            group: None,
            group_held: false,
            held: Vec::new(),
        });
        let holds = match group {
            Some(group) if created > 0 && parent.is_none() => !self.enter_group(Entry::Run, &group),
            Some(group) if created > 0 => !self.enter_call_group(scope_index, group),
            _ => false,
        };
        for node in first_node..self.nodes.len() {
            if self.nodes[node].unmet == 0 {
                if holds {
                    self.scopes[scope_index].held.push(node);
                } else {
                    self.ready_nodes.push_back(node);
                }
            }
        }
        if created == 0 {
            self.finish_invocation(scope_index);
        }
        scope_index
    }

    /// The run's workflow-level `concurrency`, evaluated with github, inputs and vars.
    pub(super) fn workflow_group(&mut self, plan: &Plan) -> Option<GroupSpec> {
        self.workflow_group_with(plan, &self.inputs.clone())
    }

    /// A workflow-level `concurrency` evaluated with github, `inputs` and vars.
    fn workflow_group_with(&mut self, plan: &Plan, inputs: &Value) -> Option<GroupSpec> {
        let concurrency = plan.workflow.concurrency.as_ref()?;
        let contexts = self.common_contexts(inputs, None);
        match keys::group(concurrency, &JobContext::new(&contexts), "concurrency") {
            Ok(group) => group,
            Err(error) => {
                self.events.push(EngineEvent::JobFailedToStart {
                    job_id: String::new(),
                    name: self.workflow_name.clone(),
                    error: format!("{error}; the workflow runs without a concurrency group"),
                });
                None
            }
        }
    }

    /// github (with `job` when given), inputs and vars.
    fn common_contexts(&self, inputs: &Value, job_id: Option<&str>) -> Object {
        let mut github = self.github.clone();
        if let Some(id) = job_id {
            github.insert("job", Value::string(id));
        }
        let mut contexts = Object::new();
        contexts.insert("github", Value::object(github));
        contexts.insert("inputs", inputs.clone());
        contexts.insert("vars", self.vars.clone());
        contexts
    }

    /// github, inputs, vars and needs: what a job's `if:` and `strategy` may read.
    fn node_contexts(&self, node_index: usize) -> Object {
        let node = &self.nodes[node_index];
        let scope = &self.scopes[node.scope];
        let plan_job = &scope.plan.jobs[node.plan_job];
        let mut contexts = self.common_contexts(&scope.inputs, Some(&plan_job.job.id.value));
        let mut needs = Object::new();
        for &need in &node.needs {
            let need_node = &self.nodes[need];
            let need_id = &scope.plan.jobs[need_node.plan_job].job.id.value;
            let mut outputs = Object::new();
            for (name, value) in &need_node.outputs {
                outputs.insert(name.clone(), Value::string(value.as_str()));
            }
            let mut entry = Object::new();
            let result = need_node.result.unwrap_or(Conclusion::Skipped);
            entry.insert("result", Value::string(result.as_str()));
            entry.insert("outputs", Value::object(outputs));
            needs.insert(need_id.clone(), Value::object(entry));
        }
        contexts.insert("needs", Value::object(needs));
        contexts
    }

    /// The jobs whose lineage a job's status functions (`success()`, `failure()`) look at:
    /// its needs and, for a job of a called workflow, the needs of the job calling it (and of
    /// its callers in turn). GitHub treats the caller's ancestors as the callee jobs'
    /// ancestors, so a callee job without `if:` is skipped when a job its caller needed
    /// failed, even if the caller itself runs with `if: always()`.
    fn status_ancestors(&self, node_index: usize) -> Vec<usize> {
        let mut ancestors = self.nodes[node_index].needs.clone();
        let mut scope = self.nodes[node_index].scope;
        while let Some(caller) = self.scopes[scope].parent {
            ancestors.extend(&self.nodes[caller].needs);
            scope = self.nodes[caller].scope;
        }
        ancestors
    }

    /// Evaluates the node's `if:` with job-level status functions.
    pub(super) fn condition_holds(&self, node_index: usize) -> Result<bool, String> {
        let contexts = self.node_contexts(node_index);
        self.condition_with(node_index, &contexts)
    }

    fn condition_with(&self, node_index: usize, contexts: &Object) -> Result<bool, String> {
        let node = &self.nodes[node_index];
        let scope = &self.scopes[node.scope];
        let result_of = |id: &str| {
            let plan_index = scope
                .plan
                .jobs
                .iter()
                .position(|j| j.job.id.value.eq_ignore_ascii_case(id))?;
            Some(scope.nodes[plan_index].and_then(|n| self.nodes[n].result))
        };
        let ancestors = self.status_ancestors(node_index);
        let ctx = JobContext {
            contexts,
            status: Some(JobStatus {
                run_cancelled: self.run_cancelled,
                ancestors_succeeded: ancestors.iter().all(|&n| self.nodes[n].lineage_ok),
                ancestor_failed: ancestors.iter().any(|&n| self.nodes[n].lineage_failed),
                result_of: &result_of,
            }),
        };
        let condition = &scope.plan.jobs[node.plan_job].job.condition;
        evaluate_condition(condition, &ctx).map_err(|e| format!("Error evaluating 'if': {e}"))
    }

    /// Runs when every need has concluded: the job is skipped, fails to start, or becomes legs.
    pub(super) fn decide(&mut self, node_index: usize) {
        self.nodes[node_index].state = NodeState::Started;
        if let Some(reason) = self.scopes[self.nodes[node_index].scope].cancelled.clone() {
            return self.cancel_node(node_index, reason);
        }
        let contexts = self.node_contexts(node_index);
        match self.condition_with(node_index, &contexts) {
            Err(error) => return self.fail_node(node_index, error),
            Ok(false) => {
                let reason = self.skip_reason(node_index);
                return self.skip_node(node_index, reason);
            }
            Ok(true) => {}
        }
        if let Some(reason) = self.deferred_matrix(node_index) {
            return self.defer_node(node_index, reason);
        }
        let strategy = match self.strategy(node_index, &contexts) {
            Ok(strategy) => strategy,
            Err(error) => return self.fail_node(node_index, error),
        };
        let total = strategy.legs.len();
        let legs: Vec<(usize, Option<MatrixLeg>)> = strategy
            .legs
            .into_iter()
            .enumerate()
            .filter(|(_, leg)| self.matches_filter(leg.as_ref()))
            .collect();
        if legs.is_empty() {
            let filter: Vec<String> = self
                .matrix_filter
                .iter()
                .map(|(k, v)| format!("{k}:{}", v.to_display_string()))
                .collect();
            return self.skip_node(
                node_index,
                format!(
                    "no matrix leg matches --matrix {}",
                    filter.join(" --matrix ")
                ),
            );
        }
        let node = &mut self.nodes[node_index];
        node.fail_fast = strategy.fail_fast;
        node.max_parallel = strategy.max_parallel.unwrap_or(usize::MAX);
        node.open_parts = legs.len();
        let max_parallel_shown = strategy.max_parallel.unwrap_or(total);
        for (index, matrix_leg) in legs {
            let mut leg_contexts = contexts.clone();
            let mut strategy_context = Object::new();
            strategy_context.insert("fail-fast", Value::Bool(strategy.fail_fast));
            strategy_context.insert("job-index", Value::Number(index as f64));
            strategy_context.insert("job-total", Value::Number(total as f64));
            strategy_context.insert("max-parallel", Value::Number(max_parallel_shown as f64));
            leg_contexts.insert("strategy", Value::object(strategy_context));
            let (matrix, segments) = match matrix_leg {
                Some(leg) => (Some(leg.context), leg.display_segments),
                None => (None, Vec::new()),
            };
            leg_contexts.insert("matrix", matrix.clone().map_or(Value::Null, Value::object));
            let scope = &self.scopes[self.nodes[node_index].scope];
            leg_contexts.insert("secrets", scope.secrets.clone());
            self.add_leg(node_index, leg_contexts, matrix, &segments);
        }
    }

    fn matches_filter(&self, leg: Option<&MatrixLeg>) -> bool {
        let Some(leg) = leg else { return true };
        self.matrix_filter.iter().all(|(key, wanted)| {
            leg.context
                .get(key)
                .is_none_or(|value| value.loose_eq(wanted))
        })
    }

    fn skip_reason(&self, node_index: usize) -> String {
        let node = &self.nodes[node_index];
        let scope = &self.scopes[node.scope];
        let condition = &scope.plan.jobs[node.plan_job].job.condition;
        let unsuccessful: Vec<String> = node
            .needs
            .iter()
            .map(|&n| &self.nodes[n])
            .filter(|n| n.result != Some(Conclusion::Success))
            .map(|n| format!("{} ({})", n.id, n.result.unwrap_or(Conclusion::Skipped)))
            .collect();
        if self.run_cancelled {
            return "the run was cancelled".to_string();
        }
        if condition.raw.trim().is_empty() && !unsuccessful.is_empty() {
            return format!("a needed job did not succeed: {}", unsuccessful.join(", "));
        }
        format!("the condition `{}` is false", condition.raw.trim())
    }

    /// Why the job's matrix is left for the real run, when the engine defers matrices built
    /// from `needs` and this one is.
    fn deferred_matrix(&self, node_index: usize) -> Option<String> {
        if !self.options.defer_matrices_from_needs {
            return None;
        }
        let node = &self.nodes[node_index];
        let job = &self.scopes[node.scope].plan.jobs[node.plan_job].job;
        let reading = strategy_texts_reading(job.strategy.as_ref()?, "needs");
        if reading.is_empty() {
            return None;
        }
        Some(format!(
            "the matrix is computed from the outputs of needed jobs (`{}`), known only when they really run",
            reading.join("`, `")
        ))
    }

    fn strategy(&self, node_index: usize, contexts: &Object) -> Result<Strategy, String> {
        let node = &self.nodes[node_index];
        let job = &self.scopes[node.scope].plan.jobs[node.plan_job].job;
        let Some(strategy) = &job.strategy else {
            return Ok(Strategy {
                fail_fast: true,
                max_parallel: None,
                legs: vec![None],
            });
        };
        let ctx = JobContext::new(contexts);
        let values = evaluate_strategy(strategy, &ctx)?;
        let fail_fast = values.fail_fast;
        let max_parallel = match values.max_parallel {
            None => None,
            Some(n) if !n.is_finite() || n < 1.0 => {
                return Err(format!(
                    "'strategy.max-parallel' must be a number of at least 1, got {n}"
                ));
            }
            Some(n) => Some(n as usize),
        };
        let legs = match values.matrix {
            None => vec![None],
            Some(value) => {
                let Value::Object(object) = value else {
                    return Err(format!(
                        "Error evaluating 'strategy.matrix': expected a mapping, got {}",
                        value.kind().name()
                    ));
                };
                matrix::expand(&object)
                    .map_err(|e| format!("Error in 'strategy.matrix': {e}"))?
                    .into_iter()
                    .map(Some)
                    .collect()
            }
        };
        Ok(Strategy {
            fail_fast,
            max_parallel,
            legs,
        })
    }

    /// Creates one leg (or, for a reusable-workflow job, one invocation) with its keys evaluated.
    fn add_leg(
        &mut self,
        node_index: usize,
        contexts: Object,
        matrix: Option<Object>,
        segments: &[String],
    ) {
        let node = &self.nodes[node_index];
        let scope = &self.scopes[node.scope];
        let plan = scope.plan.clone();
        let plan_job = &plan.jobs[node.plan_job];
        let job = plan_job.job.clone();
        let ctx = JobContext::new(&contexts);
        let name = keys::display_name(&job, segments, &ctx);
        let shown = format!(
            "{}{}",
            scope.name_prefix,
            name.as_deref().unwrap_or(&job.id.value)
        );
        if let JobKind::Call(call) = &job.kind {
            let invocation = match (name, &plan_job.callee) {
                (Err(error), _) => Err(error),
                (Ok(_), None) => Err(format!(
                    "the reusable workflow '{}' was not loaded: parse the workflow with a resolver that finds it",
                    call.uses.value
                )),
                (Ok(_), Some(callee)) => self.call_arguments(call, callee, &contexts).map(|a| (a, callee.clone())),
            };
            match invocation {
                Ok(((inputs, secrets), callee)) => {
                    let id_prefix = format!("{}/", self.nodes[node_index].id);
                    let new = NewScope {
                        plan: callee,
                        inputs,
                        secrets,
                        parent: Some(node_index),
                        id_prefix,
                        name_prefix: format!("{shown} / "),
                    };
                    let scope = self.add_scope(new, None);
                    self.nodes[node_index].invocations.push(scope);
                }
                Err(error) => {
                    self.events.push(EngineEvent::JobFailedToStart {
                        job_id: self.nodes[node_index].id.clone(),
                        name: shown,
                        error: error.clone(),
                    });
                    self.nodes[node_index].message = Some(error);
                    self.finish_part(node_index, Conclusion::Failure);
                }
            }
            return;
        }
        let continue_on_error = keys::continue_on_error(&job, &ctx);
        let evaluated = name.and_then(|_| keys::evaluate_leg(&job, &ctx));
        let leg_index = self.legs.len();
        let (keys, error) = match evaluated {
            Ok(keys) => (Some(keys), None),
            Err(error) => (None, Some(error)),
        };
        self.legs.push(Leg {
            node: node_index,
            name: shown.clone(),
            matrix,
            contexts,
            keys,
            state: LegState::Queued,
            continue_on_error,
            conclusion: None,
            completion: None,
            message: None,
            cancel_requested: false,
            group_held: false,
        });
        self.nodes[node_index].legs.push(leg_index);
        if let Some(error) = error {
            self.events.push(EngineEvent::JobFailedToStart {
                job_id: self.nodes[node_index].id.clone(),
                name: shown,
                error: error.clone(),
            });
            self.finish_leg(leg_index, Conclusion::Failure, None, Some(error));
            return;
        }
        let group = self.legs[leg_index]
            .keys
            .as_ref()
            .and_then(|k| k.concurrency.clone());
        let scope = self.nodes[node_index].scope;
        match group {
            Some(group) if self.enclosing_group_is(scope, &group) => {
                let reason = format!(
                    "Canceling since a deadlock for concurrency group '{}' was detected between the workflow and this job",
                    group.shown
                );
                self.legs[leg_index].message = Some(reason.clone());
                self.events.push(EngineEvent::LegCancelled {
                    leg: super::LegId(leg_index as u32),
                    name: shown,
                    reason: reason.clone(),
                });
                self.finish_leg(leg_index, Conclusion::Cancelled, None, Some(reason));
            }
            Some(group) => {
                self.queued.push(leg_index);
                self.enter_group(Entry::Leg(leg_index), &group);
            }
            None => self.queued.push(leg_index),
        }
    }

    /// The callee's `inputs` (from `with:`, else declared defaults, coerced to the declared
    /// type) and `secrets` (mapped, or inherited).
    fn call_arguments(
        &self,
        call: &ReusableCall,
        callee: &Plan,
        contexts: &Object,
    ) -> Result<(Value, Value), String> {
        let ctx = JobContext::new(contexts);
        let mut inputs = Object::new();
        if let Some(trigger) = callee.workflow.workflow_call() {
            for input in &trigger.inputs {
                let name = &input.name.value;
                let given = call
                    .with
                    .iter()
                    .find(|(n, _)| n.value.eq_ignore_ascii_case(name));
                let value = match (given, &input.default) {
                    (Some((_, param)), _) => evaluate_param(param, &ctx)
                        .map_err(|e| format!("Error evaluating 'with.{name}': {e}"))?,
                    (None, Some(default)) => evaluate_param(default, &ctx).map_err(|e| {
                        format!("Error evaluating the default of input '{name}': {e}")
                    })?,
                    (None, None) if input.required => {
                        return Err(format!(
                            "Input {name} is required, but not provided while calling."
                        ))
                    }
                    (None, None) => Value::Null,
                };
                inputs.insert(name.clone(), coerce_input(name, input.input_type, value)?);
            }
        }
        let secrets = match &call.secrets {
            // The caller's own secrets are in its contexts.
            CallSecrets::Inherit(_) => contexts.get("secrets").cloned().unwrap_or(Value::Null),
            CallSecrets::None => Value::object(Object::new()),
            CallSecrets::Map(pairs) => {
                let mut secrets = Object::new();
                for (name, template) in pairs {
                    let value = kiln_workflow::eval::evaluate_to_string(template, &ctx)
                        .map_err(|e| format!("Error evaluating 'secrets.{}': {e}", name.value))?;
                    secrets.insert(name.value.clone(), Value::string(value));
                }
                Value::object(secrets)
            }
        };
        Ok((Value::object(inputs), secrets))
    }
}

/// Converts a value passed to a reusable workflow to the input's declared type, as GitHub
/// does when it builds the callee's `inputs` context.
fn coerce_input(name: &str, input_type: InputType, value: Value) -> Result<Value, String> {
    let mismatch = |value: &Value| {
        Err(format!(
            "Input {name} expects a {}, got '{}'",
            input_type.name(),
            value.to_display_string()
        ))
    };
    match input_type {
        InputType::Boolean => match &value {
            Value::Null => Ok(Value::Bool(false)),
            Value::Bool(_) => Ok(value),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            other => mismatch(other),
        },
        InputType::Number => match &value {
            Value::Null => Ok(Value::Number(0.0)),
            Value::Number(_) => Ok(value),
            Value::String(_) if !value.to_number().is_nan() => Ok(Value::Number(value.to_number())),
            other => mismatch(other),
        },
        _ => match &value {
            Value::Null => Ok(Value::string("")),
            v if v.is_primitive() => Ok(Value::string(v.to_display_string())),
            other => mismatch(other),
        },
    }
}
