//! Job-level keys. Those GitHub's runner evaluates on the machine that runs the job, where
//! `github.workspace` and `runner.*` are that machine's: the workflow's and job's `env`, the
//! job `container:`, its `services:` and `defaults.run`. And those the service evaluates, whose
//! mappings may also be given by expressions: `strategy`, `environment`, `concurrency`.
//!
//! Each mapping may have keys only known once evaluated (written as expressions,
//! `${{ insert }}`, or the whole mapping as one expression); they are read as the mapping's
//! properties, as GitHub reads the evaluated template.

use super::{
    evaluate_bool, evaluate_dynamic_keys, evaluate_env, evaluate_key, evaluate_number,
    evaluate_template, evaluate_to_string, evaluate_tree, MapError,
};
use crate::expr::EvalContext;
use crate::model::{
    Concurrency, Container, Credentials, DynamicKeys, EnvMap, Environment, Job, MapEntry, Matrix,
    RunDefaults, Strategy, Template, Workflow,
};
use crate::value::{Object, Value};

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

/// An evaluated `environment:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentValues {
    pub name: String,
    pub url: Option<String>,
    /// `deployment:` (default true): whether GitHub would record a deployment.
    pub deployment: bool,
}

/// An evaluated `strategy:` (the matrix still to expand).
#[derive(Debug, Clone)]
pub struct StrategyValues {
    pub fail_fast: bool,
    pub max_parallel: Option<f64>,
    pub matrix: Option<Value>,
}

fn error(key: &str, what: impl std::fmt::Display) -> String {
    format!("Error evaluating '{key}': {what}")
}

/// The keys of `dynamic` evaluated as one mapping, which may not repeat one of `written`.
fn dynamic_object(
    dynamic: &DynamicKeys,
    written: &[(&str, bool)],
    ctx: &dyn EvalContext,
    key: &str,
) -> Result<Object, String> {
    let written: Vec<&str> = written
        .iter()
        .filter(|(_, present)| *present)
        .map(|(name, _)| *name)
        .collect();
    evaluate_dynamic_keys(dynamic, &written, ctx).map_err(|e| error(key, e))
}

/// A scalar as the string a `string` property takes (null is empty).
fn scalar(value: &Value, key: &str) -> Result<String, String> {
    match value {
        Value::Null => Ok(String::new()),
        v if v.is_primitive() => Ok(v.to_display_string()),
        other => Err(error(
            key,
            format!("expected a string, got {}", other.kind().name()),
        )),
    }
}

fn strings(value: &Value, key: &str) -> Result<Vec<String>, String> {
    match value {
        Value::Array(items) => items.iter().map(|item| scalar(item, key)).collect(),
        other => Err(error(
            key,
            format!("expected a sequence, got {}", other.kind().name()),
        )),
    }
}

fn pairs(value: &Value, key: &str) -> Result<Vec<(String, String)>, String> {
    match value {
        Value::Object(object) => object
            .iter()
            .map(|(name, v)| Ok((name.clone(), scalar(v, &format!("{key}.{name}"))?)))
            .collect(),
        Value::Null => Ok(Vec::new()),
        other => Err(error(
            key,
            format!("expected a mapping, got {}", other.kind().name()),
        )),
    }
}

fn boolean(value: &Value, key: &str) -> Result<bool, String> {
    match value {
        Value::Bool(b) => Ok(*b),
        other => Err(error(
            key,
            format!("expected a boolean, got {}", other.kind().name()),
        )),
    }
}

fn unexpected(key: &str, name: &str) -> String {
    error(key, format!("Unexpected value '{name}'"))
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
/// which `credentials` may read. A container written as one expression may evaluate to its
/// image or to a mapping of its keys.
pub fn evaluate_container(
    c: &Container,
    ctx: &dyn EvalContext,
    key: &str,
) -> Result<ContainerValues, String> {
    let string = |t: &Template, what: &str| {
        evaluate_to_string(t, ctx).map_err(|e| error(&format!("{key}.{what}"), e))
    };
    let mut values = ContainerValues::default();
    match evaluate_template(&c.image, ctx).map_err(|e| error(&format!("{key}.image"), e))? {
        Value::Object(object) => apply_container_keys(&mut values, &object, key)?,
        image => values.image = scalar(&image, &format!("{key}.image"))?,
    }
    if !c.env.is_empty() {
        values.env = env_pairs(&c.env, ctx, &format!("{key}.env"))?;
    }
    for port in &c.ports {
        values.ports.push(string(port, "ports")?);
    }
    for volume in &c.volumes {
        values.volumes.push(string(volume, "volumes")?);
    }
    if let Some(options) = &c.options {
        values.options = string(options, "options")?;
    }
    if let Some(creds) = &c.credentials {
        values.credentials = evaluate_credentials(creds, ctx, key)?;
    }
    let written = [
        ("image", !c.image.raw.is_empty()),
        ("env", !c.env.is_empty()),
        ("ports", !c.ports.is_empty()),
        ("volumes", !c.volumes.is_empty()),
        ("options", c.options.is_some()),
        ("credentials", c.credentials.is_some()),
    ];
    let dynamic = dynamic_object(&c.dynamic, &written, ctx, key)?;
    apply_container_keys(&mut values, &dynamic, key)?;
    Ok(values)
}

fn apply_container_keys(
    values: &mut ContainerValues,
    object: &Object,
    key: &str,
) -> Result<(), String> {
    for (name, value) in object.iter() {
        let at = format!("{key}.{name}");
        match name.to_ascii_lowercase().as_str() {
            "image" => values.image = scalar(value, &at)?,
            "options" => values.options = scalar(value, &at)?,
            "env" => values.env = pairs(value, &at)?,
            "ports" => values.ports = strings(value, &at)?,
            "volumes" => values.volumes = strings(value, &at)?,
            "credentials" => {
                let creds = pairs(value, &at)?;
                values.credentials = credentials_from(&creds, &at)?;
            }
            _ => return Err(unexpected(key, name)),
        }
    }
    Ok(())
}

fn credentials_from(
    pairs: &[(String, String)],
    key: &str,
) -> Result<Option<(String, String)>, String> {
    let (mut username, mut password) = (String::new(), String::new());
    for (name, value) in pairs {
        match name.to_ascii_lowercase().as_str() {
            "username" => username = value.clone(),
            "password" => password = value.clone(),
            _ => return Err(unexpected(key, name)),
        }
    }
    Ok(Some((username, password)).filter(|(u, p)| !u.is_empty() || !p.is_empty()))
}

fn evaluate_credentials(
    creds: &Credentials,
    ctx: &dyn EvalContext,
    key: &str,
) -> Result<Option<(String, String)>, String> {
    let key = format!("{key}.credentials");
    let mut written = Vec::new();
    for (name, template) in [("username", &creds.username), ("password", &creds.password)] {
        if let Some(t) = template {
            let value =
                evaluate_to_string(t, ctx).map_err(|e| error(&format!("{key}.{name}"), e))?;
            written.push((name.to_string(), value));
        }
    }
    let present = [
        ("username", creds.username.is_some()),
        ("password", creds.password.is_some()),
    ];
    let dynamic = dynamic_object(&creds.dynamic, &present, ctx, &key)?;
    written.extend(pairs(&Value::object(dynamic), &key)?);
    credentials_from(&written, &key)
}

/// The job's container (None when it has none, or its image evaluated empty) and its
/// services (one whose image evaluated empty is dropped, as GitHub does: a matrix can turn a
/// service off). Service names may be computed, and services inserted as a mapping of
/// name to image or to the service's keys.
pub fn evaluate_job_containers(
    job: &Job,
    ctx: &dyn EvalContext,
) -> Result<(Option<ContainerValues>, Vec<(String, ContainerValues)>), String> {
    let container = match &job.container {
        Some(c) => Some(evaluate_container(c, ctx, "container")?).filter(|c| !c.image.is_empty()),
        None => None,
    };
    let mut services: Vec<(String, ContainerValues)> = Vec::new();
    let mut add = |name: String, service: ContainerValues| {
        if services.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            return Err(error("services", format!("'{name}' is already defined")));
        }
        if !service.image.is_empty() {
            services.push((name, service));
        }
        Ok(())
    };
    for entry in &job.services.entries {
        match entry {
            MapEntry::Pair(name, service) => {
                let key = format!("services.{}", name.value);
                add(name.value.clone(), evaluate_container(service, ctx, &key)?)?;
            }
            MapEntry::ComputedKey(name, service) => {
                let name = evaluate_key(name, ctx).map_err(|e| error("services", e))?;
                let key = format!("services.{name}");
                add(name, evaluate_container(service, ctx, &key)?)?;
            }
            MapEntry::Insert(tree) => {
                let inserted = evaluate_tree(tree, ctx).map_err(|e| error("services", e))?;
                let Value::Object(inserted) = inserted else {
                    return Err(error(
                        "services",
                        format!("expected a mapping, got {}", inserted.kind().name()),
                    ));
                };
                for (name, value) in inserted.iter() {
                    let key = format!("services.{name}");
                    let mut service = ContainerValues::default();
                    match value {
                        Value::Object(keys) => apply_container_keys(&mut service, keys, &key)?,
                        image => service.image = scalar(image, &format!("{key}.image"))?,
                    }
                    add(name.clone(), service)?;
                }
            }
        }
    }
    Ok((container, services))
}

/// A job's `defaults.run` keys, evaluated: shell and working directory.
pub fn evaluate_run_defaults(
    defaults: &RunDefaults,
    ctx: &dyn EvalContext,
) -> Result<(Option<String>, Option<String>), String> {
    let key = "defaults.run";
    let string = |t: &Option<Template>, what: &str| -> Result<Option<String>, String> {
        t.as_ref()
            .map(|t| evaluate_to_string(t, ctx).map_err(|e| error(&format!("{key}.{what}"), e)))
            .transpose()
    };
    let mut shell = string(&defaults.shell, "shell")?;
    let mut working_directory = string(&defaults.working_directory, "working-directory")?;
    let written = [
        ("shell", shell.is_some()),
        ("working-directory", working_directory.is_some()),
    ];
    for (name, value) in dynamic_object(&defaults.dynamic, &written, ctx, key)?.iter() {
        let at = format!("{key}.{name}");
        match name.to_ascii_lowercase().as_str() {
            "shell" => shell = Some(scalar(value, &at)?),
            "working-directory" => working_directory = Some(scalar(value, &at)?),
            _ => return Err(unexpected(key, name)),
        }
    }
    Ok((shell, working_directory))
}

/// `strategy:`: `fail-fast` (default true), `max-parallel` and the matrix (not expanded).
pub fn evaluate_strategy(
    strategy: &Strategy,
    ctx: &dyn EvalContext,
) -> Result<StrategyValues, String> {
    let mut values = StrategyValues {
        fail_fast: match &strategy.fail_fast {
            Some(v) => evaluate_bool(v, ctx).map_err(|e| error("strategy.fail-fast", e))?,
            None => true,
        },
        max_parallel: match &strategy.max_parallel {
            Some(v) => {
                Some(evaluate_number(v, ctx).map_err(|e| error("strategy.max-parallel", e))?)
            }
            None => None,
        },
        matrix: match &strategy.matrix {
            Some(Matrix::Expr(t)) => {
                Some(evaluate_template(t, ctx).map_err(|e| error("strategy.matrix", e))?)
            }
            Some(Matrix::Mapping(tree)) => {
                Some(evaluate_tree(tree, ctx).map_err(|e| error("strategy.matrix", e))?)
            }
            None => None,
        },
    };
    let written = [
        ("fail-fast", strategy.fail_fast.is_some()),
        ("max-parallel", strategy.max_parallel.is_some()),
        ("matrix", strategy.matrix.is_some()),
    ];
    for (name, value) in dynamic_object(&strategy.dynamic, &written, ctx, "strategy")?.iter() {
        let at = format!("strategy.{name}");
        match name.to_ascii_lowercase().as_str() {
            "fail-fast" => values.fail_fast = boolean(value, &at)?,
            "max-parallel" => match value {
                Value::Number(n) => values.max_parallel = Some(*n),
                other => {
                    return Err(error(
                        &at,
                        format!("expected a number, got {}", other.kind().name()),
                    ))
                }
            },
            "matrix" => values.matrix = Some(value.clone()),
            _ => return Err(unexpected("strategy", name)),
        }
    }
    Ok(values)
}

/// `environment:`; None when its name evaluated empty. An environment written as one
/// expression may evaluate to its name or to a mapping of its keys.
pub fn evaluate_environment(
    e: &Environment,
    ctx: &dyn EvalContext,
) -> Result<Option<EnvironmentValues>, String> {
    let mut values = EnvironmentValues {
        name: String::new(),
        url: None,
        deployment: true,
    };
    match evaluate_template(&e.name, ctx).map_err(|err| error("environment", err))? {
        Value::Object(object) => apply_environment_keys(&mut values, &object)?,
        name => values.name = scalar(&name, "environment")?,
    }
    if let Some(url) = &e.url {
        values.url =
            Some(evaluate_to_string(url, ctx).map_err(|err| error("environment.url", err))?);
    }
    if let Some(deployment) = &e.deployment {
        values.deployment =
            evaluate_bool(deployment, ctx).map_err(|err| error("environment.deployment", err))?;
    }
    let written = [
        ("name", !e.name.raw.is_empty()),
        ("url", e.url.is_some()),
        ("deployment", e.deployment.is_some()),
    ];
    let dynamic = dynamic_object(&e.dynamic, &written, ctx, "environment")?;
    apply_environment_keys(&mut values, &dynamic)?;
    Ok(Some(values).filter(|v| !v.name.is_empty()))
}

fn apply_environment_keys(values: &mut EnvironmentValues, object: &Object) -> Result<(), String> {
    for (name, value) in object.iter() {
        let at = format!("environment.{name}");
        match name.to_ascii_lowercase().as_str() {
            "name" => values.name = scalar(value, &at)?,
            "url" => values.url = Some(scalar(value, &at)?),
            "deployment" => values.deployment = boolean(value, &at)?,
            _ => return Err(unexpected("environment", name)),
        }
    }
    Ok(())
}

/// `concurrency:` (at `key`): the group and `cancel-in-progress`. A concurrency written as one
/// expression may evaluate to the group or to a mapping of its keys.
pub fn evaluate_concurrency(
    c: &Concurrency,
    ctx: &dyn EvalContext,
    key: &str,
) -> Result<(String, bool), String> {
    let (template, cancel, dynamic) = match c {
        Concurrency::Group(t) => (t, None, None),
        Concurrency::Mapping {
            group,
            cancel_in_progress,
            dynamic,
        } => (group, cancel_in_progress.as_ref(), Some(dynamic)),
    };
    let mut group = String::new();
    let mut cancel_in_progress = false;
    let apply = |object: &Object, group: &mut String, cancel: &mut bool| -> Result<(), String> {
        for (name, value) in object.iter() {
            let at = format!("{key}.{name}");
            match name.to_ascii_lowercase().as_str() {
                "group" => *group = scalar(value, &at)?,
                "cancel-in-progress" => *cancel = boolean(value, &at)?,
                "queue" => {}
                _ => return Err(unexpected(key, name)),
            }
        }
        Ok(())
    };
    match evaluate_template(template, ctx).map_err(|e| error(key, e))? {
        Value::Object(object) => apply(&object, &mut group, &mut cancel_in_progress)?,
        value => group = scalar(&value, key)?,
    }
    if let Some(dynamic) = dynamic {
        let written = [
            ("group", !template.raw.is_empty()),
            ("cancel-in-progress", cancel.is_some()),
        ];
        let object = dynamic_object(dynamic, &written, ctx, key)?;
        apply(&object, &mut group, &mut cancel_in_progress)?;
    }
    if let Some(v) = cancel {
        cancel_in_progress = evaluate_bool(v, ctx).map_err(|e| error("cancel-in-progress", e))?;
    }
    Ok((group, cancel_in_progress))
}
