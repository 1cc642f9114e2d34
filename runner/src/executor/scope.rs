//! The expression context a step is evaluated in: the run-level contexts from the engine plus
//! what only the runner knows (`env`, `steps`, `job`, `runner`, the job-specific `github`
//! keys, a composite action's `inputs`), the status functions and `hashFiles`.

use std::path::Path;

use indexmap::IndexMap;
use kiln_workflow::eval::{
    evaluate_condition, evaluate_env, evaluate_template, evaluate_to_string, evaluate_with,
};
use kiln_workflow::expr::{EvalContext, ExprError};
use kiln_workflow::model::{Condition, EnvMap, Template, WithMap};
use kiln_workflow::value::{Object, Value};

use super::status::{Gate, StatusView};

/// Borrowed views of everything a step expression may name.
pub struct Scope<'a> {
    /// github (with job keys), inputs, vars, secrets, needs, strategy, matrix, job, runner.
    pub contexts: &'a Object,
    /// The `env` context: a case-sensitive object.
    pub env: &'a Value,
    /// The `steps` context of the current scope (the job, or one composite action).
    pub steps: &'a Value,
    /// The `github` context with this step's keys (`action`, `action_path`, file paths).
    pub github: &'a Value,
    /// The `job` context (its `status` changes as steps finish).
    pub job: &'a Value,
    /// Inside a composite action: its inputs.
    pub action_inputs: Option<&'a Value>,
    pub status: StatusView,
    /// The workspace `hashFiles` searches.
    pub workspace: &'a Path,
}

impl EvalContext for Scope<'_> {
    fn named_value(&self, name: &str) -> Value {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "env" => self.env.clone(),
            "steps" => self.steps.clone(),
            "inputs" if self.action_inputs.is_some() => {
                self.action_inputs.cloned().unwrap_or(Value::Null)
            }
            "github" => self.github.clone(),
            "job" => self.job.clone(),
            _ => self.contexts.get(&lower).cloned().unwrap_or(Value::Null),
        }
    }

    fn call(&self, name: &str, args: &[Value]) -> Result<Value, String> {
        if let Some(answer) = self.status.call(name) {
            return Ok(Value::Bool(answer));
        }
        match name {
            "hashfiles" => {
                let patterns: Vec<String> = args.iter().map(Value::to_display_string).collect();
                super::hashing::hash_files(self.workspace, &patterns).map(Value::string)
            }
            other => Err(format!(
                "The function '{other}' is not available in this context"
            )),
        }
    }
}

impl Scope<'_> {
    pub fn gate(&self, condition: &Condition) -> Gate {
        Gate::from_evaluation(evaluate_condition(condition, self))
    }

    pub fn string(&self, template: &Template) -> Result<String, String> {
        evaluate_to_string(template, self).map_err(|e| describe(&template.raw, &e))
    }

    pub fn value(&self, template: &Template) -> Result<Value, String> {
        evaluate_template(template, self).map_err(|e| describe(&template.raw, &e))
    }

    /// An `env:` map (keys written as expressions and `${{ insert }}` included).
    pub fn env(&self, map: &EnvMap) -> Result<Vec<(String, String)>, String> {
        evaluate_env(map, self).map_err(|e| format!("env `{}`: {}", e.key, e.error.message))
    }

    /// A `with:` map, as the action receives its inputs.
    pub fn with(&self, map: &WithMap) -> Result<IndexMap<String, String>, String> {
        evaluate_with(map, self)
            .map(|pairs| pairs.into_iter().collect())
            .map_err(|e| format!("input `{}`: {}", e.key, e.error.message))
    }
}

/// An expression error as the step log shows it.
pub fn describe(raw: &str, error: &ExprError) -> String {
    format!("error evaluating `{raw}`: {}", error.message)
}
