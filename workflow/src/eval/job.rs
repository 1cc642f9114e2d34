//! The job-level keys GitHub's runner evaluates on the machine that runs the job, where
//! `github.workspace` and `runner.*` are that machine's: the workflow's and job's `env`, the
//! job `container:` and its `services:`.

use super::{evaluate_env, evaluate_to_string, MapError};
use crate::expr::EvalContext;
use crate::model::{Container, EnvMap, Job, Template, Workflow};

/// A job container or service container, evaluated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerValues {
    /// Empty when the image evaluated empty: no container (no service) at all.
    pub image: String,
    pub env: Vec<(String, String)>,
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub options: String,
    /// Username and password, when either is set.
    pub credentials: Option<(String, String)>,
}

/// The workflow's `env:` then the job's, evaluated: a job key replaces the workflow's value in
/// place. Errors name the key, as `Error evaluating 'env.KEY': ...`.
pub fn evaluate_job_env(
    workflow: &Workflow,
    job: &Job,
    ctx: &dyn EvalContext,
) -> Result<Vec<(String, String)>, String> {
    let mut env = env_pairs(&workflow.env, ctx, "env")?;
    let job_key = format!("jobs.{}.env", job.id.value);
    for (name, value) in env_pairs(&job.env, ctx, &job_key)? {
        match env.iter_mut().find(|(existing, _)| *existing == name) {
            Some(slot) => slot.1 = value,
            None => env.push((name, value)),
        }
    }
    Ok(env)
}

fn env_pairs(
    map: &EnvMap,
    ctx: &dyn EvalContext,
    key: &str,
) -> Result<Vec<(String, String)>, String> {
    evaluate_env(map, ctx).map_err(|MapError { key: name, error }| {
        format!("Error evaluating '{key}.{name}': {}", error.message)
    })
}

/// A `container:` (or a service under `key`), evaluated; `ctx` also holds the job's `env`,
/// which `credentials` may read.
pub fn evaluate_container(
    c: &Container,
    ctx: &dyn EvalContext,
    key: &str,
) -> Result<ContainerValues, String> {
    let string = |t: &Template, what: &str| {
        evaluate_to_string(t, ctx).map_err(|e| format!("Error evaluating '{key}.{what}': {e}"))
    };
    let strings = |templates: &[Template], what: &str| -> Result<Vec<String>, String> {
        templates.iter().map(|t| string(t, what)).collect()
    };
    let credentials = match &c.credentials {
        None => None,
        Some(creds) => {
            let field = |t: &Option<Template>, name: &str| match t {
                Some(t) => string(t, &format!("credentials.{name}")),
                None => Ok(String::new()),
            };
            let username = field(&creds.username, "username")?;
            let password = field(&creds.password, "password")?;
            Some((username, password)).filter(|(u, p)| !u.is_empty() || !p.is_empty())
        }
    };
    Ok(ContainerValues {
        image: string(&c.image, "image")?,
        env: env_pairs(&c.env, ctx, &format!("{key}.env"))?,
        ports: strings(&c.ports, "ports")?,
        volumes: strings(&c.volumes, "volumes")?,
        options: match &c.options {
            Some(t) => string(t, "options")?,
            None => String::new(),
        },
        credentials,
    })
}

/// The job's container (None when it has none, or its image evaluated empty) and its
/// services (one whose image evaluated empty is dropped, as GitHub does: a matrix can turn a
/// service off).
pub fn evaluate_job_containers(
    job: &Job,
    ctx: &dyn EvalContext,
) -> Result<(Option<ContainerValues>, Vec<(String, ContainerValues)>), String> {
    let container = match &job.container {
        Some(c) => Some(evaluate_container(c, ctx, "container")?).filter(|c| !c.image.is_empty()),
        None => None,
    };
    let mut services = Vec::with_capacity(job.services.len());
    for (name, service) in &job.services {
        let evaluated = evaluate_container(service, ctx, &format!("services.{}", name.value))?;
        if !evaluated.image.is_empty() {
            services.push((name.value.clone(), evaluated));
        }
    }
    Ok((container, services))
}
