//! The contexts and default variables only the runner knows: the job-specific `github` keys,
//! `runner`, `job`, and the `GITHUB_*` / `RUNNER_*` environment of every step.

use kiln_workflow::value::{Object, Value};

use crate::backend::JobEnv;

/// github-context keys exported as `GITHUB_<KEY>` (the runner's allowlist).
const GITHUB_ENV_KEYS: &[&str] = &[
    "action",
    "action_path",
    "action_ref",
    "action_repository",
    "actor",
    "actor_id",
    "api_url",
    "base_ref",
    "env",
    "event_name",
    "event_path",
    "graphql_url",
    "head_ref",
    "job",
    "output",
    "path",
    "ref",
    "ref_name",
    "ref_protected",
    "ref_type",
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "retention_days",
    "run_attempt",
    "run_id",
    "run_number",
    "server_url",
    "sha",
    "state",
    "step_summary",
    "triggering_actor",
    "workflow",
    "workflow_ref",
    "workflow_sha",
    "workspace",
];

/// The `runner` context, also exported as `RUNNER_*`.
#[derive(Debug, Clone)]
pub struct RunnerInfo {
    pub name: String,
    pub temp: String,
    pub tool_cache: String,
    pub workspace: String,
    pub debug: bool,
}

impl RunnerInfo {
    pub fn os() -> &'static str {
        match std::env::consts::OS {
            "macos" => "macOS",
            "windows" => "Windows",
            _ => "Linux",
        }
    }

    pub fn arch() -> &'static str {
        match std::env::consts::ARCH {
            "x86" => "X86",
            "arm" => "ARM",
            "aarch64" => "ARM64",
            _ => "X64",
        }
    }

    pub fn context(&self) -> Value {
        let mut runner = Object::new();
        runner.insert("name", Value::string(self.name.as_str()));
        runner.insert("os", Value::string(Self::os()));
        runner.insert("arch", Value::string(Self::arch()));
        runner.insert("temp", Value::string(self.temp.as_str()));
        runner.insert("tool_cache", Value::string(self.tool_cache.as_str()));
        runner.insert("environment", Value::string("self-hosted"));
        runner.insert("debug", Value::string(if self.debug { "1" } else { "" }));
        Value::object(runner)
    }

    pub fn variables(&self) -> Vec<(String, String)> {
        let mut vars = vec![
            ("RUNNER_OS".to_owned(), Self::os().to_owned()),
            ("RUNNER_ARCH".to_owned(), Self::arch().to_owned()),
            ("RUNNER_NAME".to_owned(), self.name.clone()),
            ("RUNNER_TEMP".to_owned(), self.temp.clone()),
            ("RUNNER_TOOL_CACHE".to_owned(), self.tool_cache.clone()),
            ("RUNNER_ENVIRONMENT".to_owned(), "self-hosted".to_owned()),
            ("RUNNER_WORKSPACE".to_owned(), self.workspace.clone()),
        ];
        if self.debug {
            vars.push(("RUNNER_DEBUG".to_owned(), "1".to_owned()));
        }
        vars
    }
}

/// `GITHUB_*` for every allowlisted key the github context holds (booleans as true/false).
pub fn github_variables(github: &Value, out: &mut Vec<(String, String)>) {
    let Value::Object(github) = github else {
        return;
    };
    for key in GITHUB_ENV_KEYS {
        if let Some(value) = github.get(key) {
            if value.is_primitive() && !matches!(value, Value::Null) {
                out.push((
                    format!("GITHUB_{}", key.to_ascii_uppercase()),
                    value.to_display_string(),
                ));
            }
        }
    }
}

/// The `job` context: status, and the container and services in Docker mode.
pub fn job_context(status: &str, env: Option<&JobEnv>) -> Value {
    let mut job = Object::new();
    job.insert("status", Value::string(status));
    if let Some(env) = env {
        if env.container_id.is_some() || env.network.is_some() {
            let mut container = Object::new();
            let text = |v: &Option<String>| Value::string(v.clone().unwrap_or_default());
            container.insert("id", text(&env.container_id));
            container.insert("network", text(&env.network));
            job.insert("container", Value::object(container));
        }
        let mut services = Object::new();
        for service in &env.services {
            let mut entry = Object::new();
            entry.insert("id", Value::string(service.container_id.as_str()));
            entry.insert(
                "network",
                Value::string(env.network.clone().unwrap_or_default()),
            );
            let mut ports = Object::new();
            for (container_port, host_port) in &service.ports {
                let port = container_port.split('/').next().unwrap_or(container_port);
                ports.insert(port, Value::string(host_port.as_str()));
            }
            entry.insert("ports", Value::object(ports));
            services.insert(service.name.clone(), Value::object(entry));
        }
        job.insert("services", Value::object(services));
    }
    Value::object(job)
}

/// A copy of `github` with more keys set.
pub fn github_with(github: &Value, keys: &[(&str, String)]) -> Value {
    let mut object = match github {
        Value::Object(object) => Object::clone(object),
        _ => Object::new(),
    };
    for (key, value) in keys {
        object.insert(*key, Value::string(value.as_str()));
    }
    Value::object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowlisted_primitive_keys_are_exported() {
        let github = Value::from_json(&serde_json::json!({
            "sha": "abc", "ref_protected": false, "event": {"x": 1}, "token": "t", "base_ref": ""
        }));
        let mut vars = Vec::new();
        github_variables(&github, &mut vars);
        assert_eq!(
            vars,
            [
                ("GITHUB_BASE_REF".to_owned(), String::new()),
                ("GITHUB_REF_PROTECTED".to_owned(), "false".to_owned()),
                ("GITHUB_SHA".to_owned(), "abc".to_owned()),
            ]
        );
    }
}
