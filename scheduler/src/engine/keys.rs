//! Evaluation of the job-level keys of one leg: display name, runs-on, env, container,
//! services, timeout, continue-on-error, environment and concurrency.

use super::context::JobContext;
use super::ContainerEval;
use kiln_workflow::eval::{evaluate_bool, evaluate_number, evaluate_template, evaluate_to_string};
use kiln_workflow::model::{Concurrency, Container, Job, Pairs, RunsOn, Template, Workflow};
use kiln_workflow::{Object, Value};

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
    pub env: Vec<(String, String)>,
    pub container: Option<ContainerEval>,
    pub services: Vec<(String, ContainerEval)>,
    pub timeout_minutes: f64,
    pub continue_on_error: bool,
    pub environment: Option<(String, Option<String>)>,
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

pub(crate) fn evaluate_leg(
    workflow: &Workflow,
    job: &Job,
    ctx: &JobContext,
) -> Result<LegKeys, String> {
    let runs_on = match &job.runs_on {
        None => Vec::new(),
        Some(runs_on) => at("runs-on", runs_on_labels(runs_on, ctx))?,
    };
    let mut env = pairs(&workflow.env, ctx, "env")?;
    for (name, value) in pairs(&job.env, ctx, "jobs.<id>.env")? {
        match env.iter_mut().find(|(existing, _)| *existing == name) {
            Some(slot) => slot.1 = value,
            None => env.push((name, value)),
        }
    }
    let container = match &job.container {
        Some(c) => {
            Some(evaluate_container(c, ctx, &env, "container")?).filter(|c| !c.image.is_empty())
        }
        None => None,
    };
    let mut services = Vec::with_capacity(job.services.len());
    for (name, service) in &job.services {
        let evaluated =
            evaluate_container(service, ctx, &env, &format!("services.{}", name.value))?;
        // GitHub skips a service whose image evaluates empty (a matrix can turn one off).
        if !evaluated.image.is_empty() {
            services.push((name.value.clone(), evaluated));
        }
    }
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
        Some(e) => {
            let name = at("environment", evaluate_to_string(&e.name, ctx))?;
            let url = match &e.url {
                Some(url) => Some(at("environment.url", evaluate_to_string(url, ctx))?),
                None => None,
            };
            Some((name, url)).filter(|(name, _)| !name.is_empty())
        }
    };
    let concurrency = match &job.concurrency {
        None => None,
        Some(c) => group(c, ctx, "concurrency")?,
    };
    Ok(LegKeys {
        runs_on,
        env,
        container,
        services,
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
    let (group, cancel) = match c {
        Concurrency::Group(t) => (t, None),
        Concurrency::Mapping {
            group,
            cancel_in_progress,
        } => (group, cancel_in_progress.as_ref()),
    };
    let shown = at(key, evaluate_to_string(group, ctx))?;
    let cancel_in_progress = match cancel {
        Some(v) => at("cancel-in-progress", evaluate_bool(v, ctx))?,
        None => false,
    };
    if shown.is_empty() {
        return Ok(None);
    }
    Ok(Some(GroupSpec {
        key: shown.to_lowercase(),
        shown,
        cancel_in_progress,
    }))
}

fn pairs(
    pairs: &Pairs<Template>,
    ctx: &JobContext,
    key: &str,
) -> Result<Vec<(String, String)>, String> {
    pairs
        .iter()
        .map(|(name, value)| {
            Ok((
                name.value.clone(),
                at(
                    &format!("{key}.{}", name.value),
                    evaluate_to_string(value, ctx),
                )?,
            ))
        })
        .collect()
}

fn strings(templates: &[Template], ctx: &JobContext, key: &str) -> Result<Vec<String>, String> {
    templates
        .iter()
        .map(|t| at(key, evaluate_to_string(t, ctx)))
        .collect()
}

fn evaluate_container(
    c: &Container,
    ctx: &JobContext,
    job_env: &[(String, String)],
    key: &str,
) -> Result<ContainerEval, String> {
    let image = at(&format!("{key}.image"), evaluate_to_string(&c.image, ctx))?;
    let credentials = match &c.credentials {
        None => None,
        Some(creds) => {
            // Credentials may also read the job's env.
            let mut env = Object::case_sensitive();
            for (name, value) in job_env {
                env.insert(name.clone(), Value::string(value.as_str()));
            }
            let mut contexts = ctx.contexts.clone();
            contexts.insert("env", Value::object(env));
            let with_env = JobContext::new(&contexts);
            let field = |t: &Option<Template>, name: &str| match t {
                Some(t) => at(
                    &format!("{key}.credentials.{name}"),
                    evaluate_to_string(t, &with_env),
                ),
                None => Ok(String::new()),
            };
            let username = field(&creds.username, "username")?;
            let password = field(&creds.password, "password")?;
            Some((username, password)).filter(|(u, p)| !u.is_empty() || !p.is_empty())
        }
    };
    Ok(ContainerEval {
        image,
        env: pairs(&c.env, ctx, &format!("{key}.env"))?,
        ports: strings(&c.ports, ctx, &format!("{key}.ports"))?,
        volumes: strings(&c.volumes, ctx, &format!("{key}.volumes"))?,
        options: match &c.options {
            Some(t) => at(&format!("{key}.options"), evaluate_to_string(t, ctx))?,
            None => String::new(),
        },
        credentials,
    })
}

fn runs_on_labels(
    runs_on: &RunsOn,
    ctx: &JobContext,
) -> Result<Vec<String>, kiln_workflow::expr::ExprError> {
    let mut labels = Vec::new();
    match runs_on {
        RunsOn::Labels(templates)
        | RunsOn::Group {
            labels: templates, ..
        } => {
            for t in templates {
                push_labels(&evaluate_template(t, ctx)?, &mut labels);
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
