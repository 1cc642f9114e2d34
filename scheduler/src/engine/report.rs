//! The run report: every job and leg in workflow order, then matrix order, with the jobs of
//! called workflows in place of their caller.

use super::{Engine, JobReport, LegState, RunReport};
use kiln_workflow::Conclusion;

impl Engine {
    pub fn report(&self) -> RunReport {
        let mut jobs = Vec::with_capacity(self.legs.len());
        if !self.scopes.is_empty() {
            self.report_scope(0, &mut jobs);
        }
        RunReport {
            workflow: self.workflow_name.clone(),
            conclusion: self.conclusion(),
            jobs,
        }
    }

    /// What a job that never got a conclusion shows (the report was asked for mid-run).
    fn unfinished(&self) -> Conclusion {
        if self.run_cancelled {
            Conclusion::Cancelled
        } else {
            Conclusion::Skipped
        }
    }

    /// Failure if a job failed (continue-on-error exempts it), cancelled if the run or a job
    /// was cancelled, else success.
    fn conclusion(&self) -> Conclusion {
        let Some(scope) = self.scopes.first() else {
            return Conclusion::Success;
        };
        let results: Vec<Conclusion> = scope
            .nodes
            .iter()
            .flatten()
            .map(|&n| self.nodes[n].result.unwrap_or_else(|| self.unfinished()))
            .collect();
        if results.contains(&Conclusion::Failure) {
            Conclusion::Failure
        } else if self.run_cancelled || results.contains(&Conclusion::Cancelled) {
            Conclusion::Cancelled
        } else {
            Conclusion::Success
        }
    }

    fn report_scope(&self, scope_index: usize, jobs: &mut Vec<JobReport>) {
        for node_index in self.scopes[scope_index].nodes.iter().flatten() {
            let node = &self.nodes[*node_index];
            let entries_before = jobs.len();
            for &leg_index in &node.legs {
                let leg = &self.legs[leg_index];
                let done = leg.completion.as_ref();
                jobs.push(JobReport {
                    leg: Some(super::LegId(leg_index as u32)),
                    id: node.id.clone(),
                    name: leg.name.clone(),
                    matrix: leg.matrix.clone(),
                    conclusion: match leg.state {
                        LegState::Done => leg.conclusion.unwrap_or_else(|| self.unfinished()),
                        _ => self.unfinished(),
                    },
                    outputs: done.map(|d| d.outputs.clone()).unwrap_or_default(),
                    started_at: done.map(|d| d.started_at),
                    finished_at: done.map(|d| d.finished_at),
                    steps: done.map(|d| d.steps.clone()).unwrap_or_default(),
                    summary: done.map(|d| d.summary.clone()).unwrap_or_default(),
                    message: leg.message.clone(),
                });
            }
            for &scope in &node.invocations {
                self.report_scope(scope, jobs);
            }
            // A job that ended before it had legs (skipped, failed to start), or a call whose
            // invocations could not start, still gets a line.
            if jobs.len() == entries_before {
                jobs.push(JobReport {
                    leg: None,
                    id: node.id.clone(),
                    name: node.name.clone(),
                    matrix: None,
                    conclusion: node.result.unwrap_or_else(|| self.unfinished()),
                    outputs: node.outputs.clone(),
                    started_at: None,
                    finished_at: None,
                    steps: Vec::new(),
                    summary: String::new(),
                    message: node.message.clone(),
                });
            }
        }
    }
}
