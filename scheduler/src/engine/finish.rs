//! Concluding legs, jobs and reusable-workflow invocations, and the rules that cancel legs:
//! fail-fast, concurrency groups and run cancellation.

use super::context::JobContext;

use super::plan::MAX_CALL_DEPTH;
use super::{Engine, EngineEvent, Entry, JobCompletion, LegId, LegState, NodeState};
use kiln_workflow::eval::evaluate_to_string;
use kiln_workflow::{Conclusion, Object, Value};

/// A job's result from its legs' results (continue-on-error already applied): any failure
/// fails it, then any cancellation cancels it; skipped only if every leg was skipped.
fn combine(results: &[Conclusion]) -> Conclusion {
    use Conclusion::*;
    if results.contains(&Failure) {
        Failure
    } else if results.contains(&Cancelled) {
        Cancelled
    } else if results.contains(&Success) {
        Success
    } else {
        Skipped
    }
}

fn leg_id(index: usize) -> LegId {
    LegId(u32::try_from(index).unwrap_or(u32::MAX))
}

impl Engine {
    pub(super) fn finish_leg(
        &mut self,
        leg_index: usize,
        conclusion: Conclusion,
        completion: Option<JobCompletion>,
        message: Option<String>,
    ) {
        let leg = &mut self.legs[leg_index];
        if leg.state == LegState::Done {
            return;
        }
        let was_running = leg.state == LegState::Running;
        leg.state = LegState::Done;
        leg.conclusion = Some(conclusion);
        if message.is_some() {
            leg.message = message;
        }
        let effective = if conclusion == Conclusion::Failure && leg.continue_on_error {
            Conclusion::Success
        } else {
            conclusion
        };
        let node_index = leg.node;
        let node = &mut self.nodes[node_index];
        if let Some(done) = &completion {
            // Matrix legs share one outputs map: the last leg to finish wins, but an empty
            // value never clears what another leg set.
            for (name, value) in &done.outputs {
                if !value.is_empty() || !node.outputs.contains_key(name) {
                    node.outputs.insert(name.clone(), value.clone());
                }
            }
        }
        if was_running {
            node.running = node.running.saturating_sub(1);
        }
        self.legs[leg_index].completion = completion;
        self.release_group(leg_index);
        self.finish_part(node_index, effective);
    }

    /// One leg or invocation of a job concluded.
    pub(super) fn finish_part(&mut self, node_index: usize, result: Conclusion) {
        let node = &mut self.nodes[node_index];
        node.invocation_results.push(result);
        node.open_parts = node.open_parts.saturating_sub(1);
        if node.open_parts == 0 && node.state != NodeState::Done {
            let result = combine(&node.invocation_results);
            self.finish_node(node_index, result);
        }
    }

    pub(super) fn finish_node(&mut self, node_index: usize, result: Conclusion) {
        let node = &self.nodes[node_index];
        if node.state == NodeState::Done {
            return;
        }
        let lineage_ok =
            result == Conclusion::Success && node.needs.iter().all(|&n| self.nodes[n].lineage_ok);
        let lineage_failed = result == Conclusion::Failure
            || node.needs.iter().any(|&n| self.nodes[n].lineage_failed);
        let node = &mut self.nodes[node_index];
        node.state = NodeState::Done;
        node.result = Some(result);
        node.lineage_ok = lineage_ok;
        node.lineage_failed = lineage_failed;
        self.open_nodes = self.open_nodes.saturating_sub(1);
        for i in 0..self.nodes[node_index].dependants.len() {
            let dependant = self.nodes[node_index].dependants[i];
            let d = &mut self.nodes[dependant];
            d.unmet = d.unmet.saturating_sub(1);
            if d.unmet == 0 && d.state == NodeState::Waiting {
                self.ready_nodes.push_back(dependant);
            }
        }
        let scope_index = self.nodes[node_index].scope;
        let scope = &mut self.scopes[scope_index];
        scope.remaining = scope.remaining.saturating_sub(1);
        if scope.remaining == 0 {
            self.finish_invocation(scope_index);
        }
    }

    pub(super) fn skip_node(&mut self, node_index: usize, reason: String) {
        let conclusion = if self.run_cancelled {
            Conclusion::Cancelled
        } else {
            Conclusion::Skipped
        };
        self.end_node(node_index, conclusion, reason);
    }

    pub(super) fn cancel_node(&mut self, node_index: usize, reason: String) {
        self.end_node(node_index, Conclusion::Cancelled, reason);
    }

    pub(super) fn defer_node(&mut self, node_index: usize, reason: String) {
        self.end_node(node_index, Conclusion::Success, reason);
    }

    pub(super) fn fail_node(&mut self, node_index: usize, error: String) {
        self.end_node(node_index, Conclusion::Failure, error);
    }

    /// A job that concludes without ever having legs, with the reason reported as an event
    /// and kept for the report.
    fn end_node(&mut self, node_index: usize, conclusion: Conclusion, reason: String) {
        let node = &mut self.nodes[node_index];
        let (job_id, name) = (node.id.clone(), node.name.clone());
        node.message = Some(reason.clone());
        self.events.push(match conclusion {
            Conclusion::Failure => EngineEvent::JobFailedToStart {
                job_id,
                name,
                error: reason,
            },
            Conclusion::Success => EngineEvent::JobDeferred {
                job_id,
                name,
                reason,
            },
            _ => EngineEvent::JobSkipped {
                job_id,
                name,
                reason,
            },
        });
        self.finish_node(node_index, conclusion);
    }

    /// All jobs of one reusable-workflow invocation concluded: evaluate the caller's outputs
    /// from `on.workflow_call.outputs` and count the invocation as one part of the caller.
    pub(super) fn finish_invocation(&mut self, scope_index: usize) {
        let (group, entry) = match scope_index {
            0 => (self.run_group.as_ref(), Entry::Run),
            _ => (
                self.scopes[scope_index].group.as_ref(),
                Entry::Call(scope_index),
            ),
        };
        if let Some(key) = group.map(|g| g.key.clone()) {
            self.release_entry(&key, entry);
        }
        let scope = &self.scopes[scope_index];
        let Some(parent) = scope.parent else { return };
        let mut jobs = Object::new();
        let mut results = Vec::new();
        for (plan_index, plan_job) in scope.plan.jobs.iter().enumerate() {
            let Some(node_index) = scope.nodes[plan_index] else {
                continue;
            };
            let node = &self.nodes[node_index];
            let result = node.result.unwrap_or(Conclusion::Skipped);
            results.push(result);
            let mut outputs = Object::new();
            for (name, value) in &node.outputs {
                outputs.insert(name.clone(), Value::string(value.as_str()));
            }
            let mut entry = Object::new();
            entry.insert("result", Value::string(result.as_str()));
            entry.insert("outputs", Value::object(outputs));
            jobs.insert(plan_job.job.id.value.clone(), Value::object(entry));
        }
        let mut contexts = Object::new();
        contexts.insert("github", Value::object(self.github.clone()));
        contexts.insert("inputs", scope.inputs.clone());
        contexts.insert("vars", self.vars.clone());
        contexts.insert("jobs", Value::object(jobs));
        let ctx = JobContext::new(&contexts);
        let mut outputs = Vec::new();
        let mut error = None;
        if let Some(trigger) = scope.plan.workflow.workflow_call() {
            for output in &trigger.outputs {
                match evaluate_to_string(&output.value, &ctx) {
                    Ok(value) => outputs.push((output.name.value.clone(), value)),
                    Err(e) => {
                        error = Some(format!(
                            "Error evaluating 'on.workflow_call.outputs.{}': {e}",
                            output.name.value
                        ));
                        break;
                    }
                }
            }
        }
        // A called workflow whose jobs were all skipped still counts as a successful call.
        let mut result = match combine(&results) {
            Conclusion::Skipped => Conclusion::Success,
            other => other,
        };
        let node = &mut self.nodes[parent];
        for (name, value) in outputs {
            if !value.is_empty() || !node.outputs.contains_key(&name) {
                node.outputs.insert(name, value);
            }
        }
        if let Some(error) = error {
            self.events.push(EngineEvent::JobFailedToStart {
                job_id: node.id.clone(),
                name: node.name.clone(),
                error: error.clone(),
            });
            node.message = Some(error);
            result = Conclusion::Failure;
        }
        self.finish_part(parent, result);
    }

    /// A failed leg cancels the other legs of its matrix, unless fail-fast is off.
    pub(super) fn fail_fast(&mut self, leg_index: usize) {
        let node_index = self.legs[leg_index].node;
        let node = &self.nodes[node_index];
        if !node.fail_fast || node.legs.len() < 2 {
            return;
        }
        let reason = format!("fail-fast: '{}' failed", self.legs[leg_index].name);
        for other in node.legs.clone() {
            if other != leg_index {
                self.cancel_leg(other, &reason);
            }
        }
    }

    /// A failed leg inside a reusable-workflow invocation fails that invocation: when the
    /// calling job has a matrix with fail-fast, its other invocations are cancelled, at every
    /// level of nesting.
    pub(super) fn fail_fast_calls(&mut self, leg_index: usize) {
        let mut scope = self.nodes[self.legs[leg_index].node].scope;
        let reason = format!("fail-fast: '{}' failed", self.legs[leg_index].name);
        for _ in 0..=MAX_CALL_DEPTH {
            let Some(caller) = self.scopes[scope].parent else {
                return;
            };
            let node = &self.nodes[caller];
            if node.fail_fast && node.invocations.len() > 1 {
                for other in node.invocations.clone() {
                    if other != scope {
                        self.cancel_scope(other, &reason, 0);
                    }
                }
            }
            scope = self.nodes[caller].scope;
        }
    }

    pub(super) fn cancel_scope(&mut self, scope: usize, reason: &str, depth: usize) {
        if depth > MAX_CALL_DEPTH || self.scopes[scope].cancelled.is_some() {
            return;
        }
        self.scopes[scope].cancelled = Some(reason.to_string());
        for node in self.scopes[scope].nodes.clone().into_iter().flatten() {
            for leg in self.nodes[node].legs.clone() {
                self.cancel_leg(leg, reason);
            }
            for inner in self.nodes[node].invocations.clone() {
                self.cancel_scope(inner, reason, depth + 1);
            }
        }
    }

    /// Stops a leg: a running one is handed back to the driver to cancel (its completion
    /// comes later); a queued one concludes as cancelled right away.
    pub(super) fn cancel_leg(&mut self, leg_index: usize, reason: &str) {
        let leg = &mut self.legs[leg_index];
        match leg.state {
            LegState::Done => {}
            LegState::Running => {
                if !leg.cancel_requested {
                    leg.cancel_requested = true;
                    leg.message = Some(reason.to_string());
                    self.to_cancel.push(leg_id(leg_index));
                    self.events.push(EngineEvent::LegCancelled {
                        leg: leg_id(leg_index),
                        name: leg.name.clone(),
                        reason: reason.to_string(),
                    });
                }
            }
            LegState::Queued => {
                self.events.push(EngineEvent::LegCancelled {
                    leg: leg_id(leg_index),
                    name: leg.name.clone(),
                    reason: reason.to_string(),
                });
                self.finish_leg(
                    leg_index,
                    Conclusion::Cancelled,
                    None,
                    Some(reason.to_string()),
                );
            }
        }
    }
}
