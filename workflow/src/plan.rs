//! The static job graph of a workflow, as `kiln plan` shows it: one entry per job leg (matrix
//! legs expanded and named as GitHub names them, called reusable workflows expanded into
//! their jobs), and the stages in which they can run. Values that depend on other jobs'
//! results (a matrix built from `needs` outputs) cannot be known before a run; such a job is
//! one entry marked as deferred.

use crate::eval::{evaluate_strategy, evaluate_template, strategy_texts_reading, template_reads};
use crate::expr::{EvalContext, ExprError, JobStatus, SimpleContext};
use crate::matrix::{self, MatrixError};
use crate::model::{Job, JobKind, RunsOn, Strategy, Template, Workflow};
use crate::value::{Object, Value};
use std::collections::HashMap;

/// One job leg of the plan.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    /// The job id; `caller/job` for a job of a called reusable workflow.
    pub id: String,
    /// The display name, `test (3.12, full)`.
    pub name: String,
    /// Ids of the jobs this one waits for.
    pub needs: Vec<String>,
    /// The leg's matrix context; None for a job without a matrix (or a deferred one).
    pub matrix: Option<Object>,
    /// True when the matrix can only be expanded once the job's needs have run.
    pub matrix_deferred: bool,
    /// The evaluated `runs-on` labels (the expression text when it needs run-time values).
    pub runs_on: Vec<String>,
    /// 0-based stage: every need is in an earlier stage.
    pub stage: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub jobs: Vec<PlannedJob>,
    /// The display names of the legs in each stage, in workflow order.
    pub stages: Vec<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("job '{job}': {source}")]
    Matrix { job: String, source: MatrixError },
    #[error("job '{job}': {what} at {pos}: {source}")]
    Expression {
        job: String,
        what: &'static str,
        pos: crate::yaml::Pos,
        source: ExprError,
    },
    #[error("job '{job}': {message}")]
    Strategy { job: String, message: String },
    #[error(
        "job '{job}' is part of a cycle in `needs`; run `kiln validate` for the full diagnostics"
    )]
    Cycle { job: String },
}

/// The context a plan evaluates with: what is known before anything runs.
#[derive(Debug, Clone, Default)]
pub struct PlanContext {
    pub github: Object,
    pub inputs: Object,
    pub vars: Object,
}

impl PlanContext {
    /// What is known before a run of `workflow` (read from `file`) for `event`: the event
    /// name, the workflow's name, and the defaults of the event's inputs.
    pub fn before_run(workflow: &Workflow, event: &str, file: &str) -> PlanContext {
        let mut github = Object::new();
        github.insert("event_name", Value::string(event));
        github.insert(
            "workflow",
            Value::string(workflow.name.as_ref().map_or(file, |n| n.value.as_str())),
        );
        let mut inputs = Object::new();
        for trigger in workflow.on.iter().filter(|t| t.event.value == event) {
            for input in &trigger.inputs {
                let value = input
                    .default
                    .as_ref()
                    .map_or(Value::Null, |d| d.value.clone());
                inputs.insert(input.name.value.clone(), value);
            }
        }
        PlanContext {
            github,
            inputs,
            vars: Object::new(),
        }
    }
}

/// Builds the plan of a parsed workflow.
pub fn plan(workflow: &Workflow, context: &PlanContext) -> Result<Plan, PlanError> {
    let mut jobs = Vec::new();
    collect_jobs(workflow, context, "", &[], &mut jobs)?;
    assign_stages(&mut jobs)?;
    let stage_count = jobs.iter().map(|j| j.stage + 1).max().unwrap_or(0);
    let mut stages = vec![Vec::new(); stage_count];
    for job in &jobs {
        stages[job.stage].push(job.name.clone());
    }
    Ok(Plan { jobs, stages })
}

/// Adds the legs of every job of `workflow`. `prefix` is `caller/` for a called workflow, whose
/// root jobs inherit the caller's needs.
fn collect_jobs(
    workflow: &Workflow,
    context: &PlanContext,
    prefix: &str,
    caller_needs: &[String],
    out: &mut Vec<PlannedJob>,
) -> Result<(), PlanError> {
    for job in &workflow.jobs {
        let id = format!("{prefix}{}", job.id.value);
        let mut needs: Vec<String> = job
            .needs
            .iter()
            .map(|n| format!("{prefix}{}", n.value))
            .collect();
        if job.needs.is_empty() {
            needs.extend(caller_needs.iter().cloned());
        }
        if let JobKind::Call(call) = &job.kind {
            if let Some(callee) = &call.callee {
                let name_prefix = format!("{id}/");
                collect_jobs(callee, context, &name_prefix, &needs, out)?;
                continue;
            }
        }
        plan_job(job, &id, needs, context, prefix, out)?;
    }
    Ok(())
}

fn plan_job(
    job: &Job,
    id: &str,
    needs: Vec<String>,
    context: &PlanContext,
    prefix: &str,
    out: &mut Vec<PlannedJob>,
) -> Result<(), PlanError> {
    let name_template = job.display_name();
    let strategy = job
        .strategy
        .as_ref()
        .filter(|s| s.matrix.is_some() || !s.dynamic.is_empty());
    let legs = match strategy {
        None => None,
        Some(strategy) => strategy_legs(job, strategy, context)?,
    };
    let deferred = strategy.is_some() && legs.is_none();
    let legs = legs.unwrap_or_else(|| vec![(None, Vec::new())]);
    let display_prefix = prefix.trim_end_matches('/').replace('/', " / ");
    for (matrix, segments) in legs {
        let ctx = leg_context(context, matrix.as_ref());
        let base_name = evaluate_template(&name_template, &ctx)
            .map(|v| v.to_display_string())
            .map_err(|source| PlanError::Expression {
                job: id.to_string(),
                what: "name",
                pos: name_template.pos,
                source,
            })?;
        // GitHub appends the matrix values only when the name does not already use them.
        let leg_name = if name_template.has_expressions() {
            base_name
        } else {
            matrix::display_name(&base_name, &segments)
        };
        let name = if display_prefix.is_empty() {
            leg_name
        } else {
            format!("{display_prefix} / {leg_name}")
        };
        out.push(PlannedJob {
            id: id.to_string(),
            name,
            needs: needs.clone(),
            matrix_deferred: deferred,
            runs_on: runs_on_labels(job, &ctx),
            matrix,
            stage: 0,
        });
    }
    Ok(())
}

type Legs = Vec<(Option<Object>, Vec<String>)>;

/// The legs of a strategy's matrix, or None when it depends on `needs`.
fn strategy_legs(
    job: &Job,
    strategy: &Strategy,
    context: &PlanContext,
) -> Result<Option<Legs>, PlanError> {
    if !strategy_texts_reading(strategy, "needs").is_empty() {
        return Ok(None);
    }
    let ctx = leg_context(context, None);
    let values = evaluate_strategy(strategy, &ctx).map_err(|message| PlanError::Strategy {
        job: job.id.value.clone(),
        message,
    })?;
    let Some(value) = values.matrix else {
        return Ok(Some(vec![(None, Vec::new())]));
    };
    let object = match value {
        Value::Object(object) => object,
        other => {
            return Err(PlanError::Matrix {
                job: job.id.value.clone(),
                source: MatrixError::NotAMapping(other.kind().name()),
            })
        }
    };
    let legs = matrix::expand(&object).map_err(|source| PlanError::Matrix {
        job: job.id.value.clone(),
        source,
    })?;
    Ok(Some(
        legs.into_iter()
            .map(|leg| (Some(leg.context), leg.display_segments))
            .collect(),
    ))
}

fn leg_context(context: &PlanContext, matrix: Option<&Object>) -> SimpleContext {
    let mut contexts = Object::new();
    contexts.insert("github", Value::object(context.github.clone()));
    contexts.insert("inputs", Value::object(context.inputs.clone()));
    contexts.insert("vars", Value::object(context.vars.clone()));
    contexts.insert("needs", Value::object(Object::new()));
    contexts.insert(
        "matrix",
        matrix
            .map(|m| Value::object(m.clone()))
            .unwrap_or(Value::Null),
    );
    SimpleContext::new(contexts, JobStatus::Success)
}

/// `runs-on` as labels. A value that cannot be known yet (it reads `needs`) is shown as its
/// expression text.
fn runs_on_labels(job: &Job, ctx: &dyn EvalContext) -> Vec<String> {
    let label = |t: &Template| -> Vec<String> {
        if template_reads(t, "needs") {
            return vec![t.raw.clone()];
        }
        match evaluate_template(t, ctx) {
            Ok(Value::Array(items)) => items.iter().map(Value::to_display_string).collect(),
            Ok(v) => vec![v.to_display_string()],
            Err(_) => vec![t.raw.clone()],
        }
    };
    match &job.runs_on {
        None => Vec::new(),
        Some(RunsOn::Labels(labels)) => labels.iter().flat_map(label).collect(),
        Some(RunsOn::Expr(t)) => label(t),
        Some(RunsOn::Group { group, labels, .. }) => {
            let mut out: Vec<String> = group
                .iter()
                .flat_map(label)
                .map(|g| format!("group:{g}"))
                .collect();
            out.extend(labels.iter().flat_map(label));
            out
        }
    }
}

/// True when `job_id` is the job `need` names, or one of the jobs of the workflow it calls.
pub fn satisfies_need(job_id: &str, need: &str) -> bool {
    job_id.eq_ignore_ascii_case(need)
        || (job_id.as_bytes().get(need.len()) == Some(&b'/')
            && job_id
                .get(..need.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(need)))
}

/// Longest-path layering: a job's stage is one more than its latest need's. Unknown needs
/// were reported by the parser and are ignored here.
fn assign_stages(jobs: &mut [PlannedJob]) -> Result<(), PlanError> {
    // A need names a job, or a job that calls a reusable workflow: then it waits for every
    // job of the callee (ids `caller/...`).
    let mut by_id: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let id = job.id.to_ascii_lowercase();
        let mut prefix = id.as_str();
        by_id.entry(id.clone()).or_default().push(i);
        while let Some((caller, _)) = prefix.rsplit_once('/') {
            by_id.entry(caller.to_string()).or_default().push(i);
            prefix = caller;
        }
    }
    let mut stage: Vec<Option<usize>> = vec![None; jobs.len()];
    // Each pass settles at least one more job in an acyclic graph, so `len + 1` passes suffice;
    // anything still unsettled is on a cycle.
    for _ in 0..=jobs.len() {
        let mut progressed = false;
        for i in 0..jobs.len() {
            if stage[i].is_some() {
                continue;
            }
            let mut level = 0;
            let mut ready = true;
            for need in &jobs[i].needs {
                for &j in by_id
                    .get(&need.to_ascii_lowercase())
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                {
                    match stage[j] {
                        Some(s) => level = level.max(s + 1),
                        None => ready = false,
                    }
                }
            }
            if ready {
                stage[i] = Some(level);
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    for (i, job) in jobs.iter_mut().enumerate() {
        job.stage = stage[i].ok_or_else(|| PlanError::Cycle {
            job: job.id.clone(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_workflow;

    fn plan_of(yaml: &str) -> Plan {
        let parsed = parse_workflow("w.yml", yaml);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        plan(&parsed.value.expect("workflow"), &PlanContext::default()).expect("plan")
    }

    #[test]
    fn expands_matrix_legs_and_stages() {
        let p = plan_of(
            "on: push\njobs:\n  test:\n    runs-on: ${{ matrix.os }}\n    strategy:\n      matrix:\n        os: [linux, mac]\n        py: ['3.11', '3.12']\n    steps:\n      - run: 'true'\n  deploy:\n    needs: test\n    runs-on: ubuntu-latest\n    steps:\n      - run: 'true'\n",
        );
        let names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "test (linux, 3.11)",
                "test (linux, 3.12)",
                "test (mac, 3.11)",
                "test (mac, 3.12)",
                "deploy"
            ]
        );
        assert_eq!(p.jobs[2].runs_on, ["mac"]);
        assert_eq!(p.stages.len(), 2);
        assert_eq!(p.stages[1], ["deploy"]);
        assert_eq!(p.jobs[4].needs, ["test"]);
    }

    #[test]
    fn matrix_from_needs_is_deferred() {
        let p = plan_of(
            "on: push\njobs:\n  list:\n    runs-on: x\n    outputs:\n      m: ${{ steps.s.outputs.m }}\n    steps:\n      - id: s\n        run: echo\n  use:\n    needs: list\n    runs-on: x\n    strategy:\n      matrix: ${{ fromJSON(needs.list.outputs.m) }}\n    steps:\n      - run: echo\n",
        );
        assert!(p.jobs[1].matrix_deferred);
        assert_eq!(p.jobs[1].name, "use");
        assert_eq!(p.jobs[1].stage, 1);
    }

    #[test]
    fn dependants_of_a_reusable_call_wait_for_all_its_jobs() {
        assert!(satisfies_need("server/build", "server"));
        assert!(satisfies_need("Server", "server"));
        assert!(!satisfies_need("serverx/build", "server"));
        assert!(!satisfies_need("server", "server/build"));
    }

    #[test]
    fn name_with_matrix_expression_gets_no_suffix() {
        let p = plan_of(
            "on: push\njobs:\n  b:\n    name: build on ${{ matrix.os }}\n    runs-on: x\n    strategy:\n      matrix:\n        os: [a, b]\n    steps:\n      - run: echo\n",
        );
        assert_eq!(p.jobs[0].name, "build on a");
        assert_eq!(p.jobs[1].name, "build on b");
    }
}
