//! Evaluation of the job-level keys of one leg that GitHub's service evaluates: display name,
//! runs-on, timeout, continue-on-error, environment and concurrency. `env`, `container` and
//! `services` are the runner's to evaluate, where `github.workspace` is the job's.

use super::context::JobContext;
use kiln_workflow::eval::EnvironmentValues;
use kiln_workflow::eval::{
    evaluate_bool, evaluate_concurrency, evaluate_dynamic_keys, evaluate_environment,
    evaluate_number, evaluate_template, evaluate_to_string,
};
use kiln_workflow::model::{Concurrency, Job, RunsOn};
use kiln_workflow::Value;

/// GitHub's default job timeout.
pub(crate) const DEFAULT_TIMEOUT_MINUTES: f64 = 360.0;

/// A concurrency group, already lower-cased for comparison, with its display form.
#[derive(Debug, Clone)]
pub(crate) struct GroupSpec {
    pub key: String,
    pub shown: String,
    pub cancel_in_progress: bool,
}

impl GroupSpec {
    pub fn request(&self) -> super::GroupRequest {
        super::GroupRequest {
            key: self.key.clone(),
            shown: self.shown.clone(),
            cancel_in_progress: self.cancel_in_progress,
        }
    }
}

pub(crate) struct LegKeys {
    pub runs_on: Vec<String>,
    pub timeout_minutes: f64,
    pub continue_on_error: bool,
    pub environment: Option<EnvironmentValues>,
    pub concurrency: Option<GroupSpec>,
}

/// Names the key an error came from, so the user knows where to look.
fn at<T, E: std::fmt::Display>(key: &str, result: Result<T, E>) -> Result<T, String> {
    result.map_err(|e| format!("Error evaluating '{key}': {e}"))
}

/// The leg's display name: `name:` with its expressions evaluated, or, when it has none,
/// GitHub's `name (v1, v2)` built from the matrix values.
pub(crate) fn display_name(
    job: &Job,
    segments: &[String],
    ctx: &JobContext,
) -> Result<String, String> {
    let template = job.display_name();
    if template.has_expressions() {
        return at("name", evaluate_to_string(&template, ctx));
    }
    Ok(kiln_workflow::matrix::display_name(&template.raw, segments))
}

/// Continue-on-error first and on its own: a leg whose other keys fail to evaluate still
/// needs to know whether its failure counts.
pub(crate) fn continue_on_error(job: &Job, ctx: &JobContext) -> bool {
    job.continue_on_error
        .as_ref()
        .is_some_and(|v| evaluate_bool(v, ctx).unwrap_or(false))
}

pub(crate) fn evaluate_leg(job: &Job, ctx: &JobContext) -> Result<LegKeys, String> {
    let runs_on = match &job.runs_on {
        None => Vec::new(),
        Some(runs_on) => at("runs-on", runs_on_labels(runs_on, ctx))?,
    };
    let timeout_minutes = match &job.timeout_minutes {
        None => DEFAULT_TIMEOUT_MINUTES,
        Some(v) => {
            let minutes = at("timeout-minutes", evaluate_number(v, ctx))?;
            if !minutes.is_finite() || minutes <= 0.0 {
                return Err(format!(
                    "Error evaluating 'timeout-minutes': expected a positive number of minutes, got {minutes}"
                ));
            }
            minutes
        }
    };
    let continue_on_error = match &job.continue_on_error {
        None => false,
        Some(v) => at("continue-on-error", evaluate_bool(v, ctx))?,
    };
    let environment = match &job.environment {
        None => None,
        Some(e) => evaluate_environment(e, ctx)?,
    };
    let concurrency = match &job.concurrency {
        None => None,
        Some(c) => group(c, ctx, "concurrency")?,
    };
    Ok(LegKeys {
        runs_on,
        timeout_minutes,
        continue_on_error,
        environment,
        concurrency,
    })
}

/// A `concurrency:` value; None when the group evaluates empty (no group at all).
pub(crate) fn group(
    c: &Concurrency,
    ctx: &JobContext,
    key: &str,
) -> Result<Option<GroupSpec>, String> {
    let (shown, cancel_in_progress) = evaluate_concurrency(c, ctx, key)?;
    if shown.is_empty() {
        return Ok(None);
    }
    Ok(Some(GroupSpec {
        key: shown.to_lowercase(),
        shown,
        cancel_in_progress,
    }))
}

fn runs_on_labels(
    runs_on: &RunsOn,
    ctx: &JobContext,
) -> Result<Vec<String>, kiln_workflow::expr::ExprError> {
    let mut labels = Vec::new();
    match runs_on {
        RunsOn::Labels(templates) => {
            for t in templates {
                push_labels(&evaluate_template(t, ctx)?, &mut labels);
            }
        }
        RunsOn::Group {
            group,
            labels: templates,
            dynamic,
        } => {
            for t in templates {
                push_labels(&evaluate_template(t, ctx)?, &mut labels);
            }
            let written = [
                group.as_ref().map(|_| "group"),
                (!templates.is_empty()).then_some("labels"),
            ];
            let written: Vec<&str> = written.into_iter().flatten().collect();
            let evaluated = evaluate_dynamic_keys(dynamic, &written, ctx)?;
            if let Some(v) = evaluated.get("labels") {
                push_labels(v, &mut labels);
            }
        }
        RunsOn::Expr(t) => match evaluate_template(t, ctx)? {
            // `runs-on: ${{ fromJSON('{"group": "g", "labels": ["x"]}') }}`
            Value::Object(obj) => {
                if let Some(v) = obj.get("labels") {
                    push_labels(v, &mut labels);
                }
            }
            other => push_labels(&other, &mut labels),
        },
    }
    Ok(labels)
}

fn push_labels(value: &Value, labels: &mut Vec<String>) {
    match value {
        Value::Array(items) => labels.extend(
            items
                .iter()
                .filter(|v| v.is_primitive())
                .map(Value::to_display_string),
        ),
        Value::Null => {}
        other => labels.push(other.to_display_string()),
    }
    labels.retain(|l| !l.is_empty());
}
