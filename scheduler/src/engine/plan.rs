//! The static shape of a run: each workflow's jobs with their `needs` resolved to indexes, and
//! called workflows prepared the same way. Built once, shared by every invocation.

use super::EngineError;
use kiln_workflow::model::{Job, JobKind, Workflow};
use std::sync::Arc;

/// Reusable workflows nest at most 4 levels on GitHub; the parser enforces that, this bound
/// only keeps a hand-built model from recursing without end.
pub(crate) const MAX_CALL_DEPTH: usize = 16;

pub(crate) struct Plan {
    pub workflow: Arc<Workflow>,
    pub jobs: Vec<PlanJob>,
}

pub(crate) struct PlanJob {
    pub job: Arc<Job>,
    /// Indexes into `Plan::jobs`.
    pub needs: Vec<usize>,
    /// The prepared callee of a reusable-workflow job, when the parser loaded it.
    pub callee: Option<Arc<Plan>>,
}

impl Plan {
    pub fn build(workflow: Arc<Workflow>, depth: usize) -> Result<Arc<Plan>, EngineError> {
        if depth > MAX_CALL_DEPTH {
            return Err(EngineError::TooDeep(MAX_CALL_DEPTH));
        }
        let mut jobs = Vec::with_capacity(workflow.jobs.len());
        for job in &workflow.jobs {
            let mut needs = Vec::with_capacity(job.needs.len());
            for need in &job.needs {
                let index = workflow
                    .jobs
                    .iter()
                    .position(|j| j.id.value.eq_ignore_ascii_case(&need.value))
                    .ok_or_else(|| EngineError::UnknownNeed {
                        job: job.id.value.clone(),
                        need: need.value.clone(),
                    })?;
                if !needs.contains(&index) {
                    needs.push(index);
                }
            }
            let callee = match &job.kind {
                JobKind::Call(call) => match &call.callee {
                    Some(callee) => {
                        Some(Plan::build(Arc::new(Workflow::clone(callee)), depth + 1)?)
                    }
                    None => None,
                },
                JobKind::Steps(_) => None,
            };
            jobs.push(PlanJob {
                job: Arc::new(job.clone()),
                needs,
                callee,
            });
        }
        check_acyclic(&jobs)?;
        Ok(Arc::new(Plan { workflow, jobs }))
    }
}

/// Kahn's algorithm: whatever cannot be ordered is on (or behind) a cycle.
fn check_acyclic(jobs: &[PlanJob]) -> Result<(), EngineError> {
    let mut unmet: Vec<usize> = jobs.iter().map(|j| j.needs.len()).collect();
    let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); jobs.len()];
    for (index, job) in jobs.iter().enumerate() {
        for &need in &job.needs {
            dependants[need].push(index);
        }
    }
    let mut ready: Vec<usize> = (0..jobs.len()).filter(|&i| unmet[i] == 0).collect();
    let mut ordered = 0;
    while let Some(index) = ready.pop() {
        ordered += 1;
        for &dependant in &dependants[index] {
            unmet[dependant] -= 1;
            if unmet[dependant] == 0 {
                ready.push(dependant);
            }
        }
    }
    if ordered == jobs.len() {
        return Ok(());
    }
    let stuck = (0..jobs.len()).find(|&i| unmet[i] > 0).unwrap_or(0);
    Err(EngineError::Cycle(jobs[stuck].job.id.value.clone()))
}
