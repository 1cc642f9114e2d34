//! A ready-made [`EvalContext`]: contexts from a JSON object and step-level status functions
//! answering for a job status. Tests, `kiln expr` and the runner's simple paths use it.

use super::EvalContext;
use crate::value::{Object, Value};

/// The job status the step-level status functions look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobStatus {
    #[default]
    Success,
    Failure,
    Cancelled,
}

/// Computes `hashFiles(patterns...)`; `Err` becomes an evaluation error.
pub type HashFilesFn = dyn Fn(&[String]) -> Result<String, String> + Send + Sync;

/// Contexts from an object (keys are context names, looked up case-insensitively), status
/// functions answering for `job_status`, and `hashFiles` delegated to an optional callback.
pub struct SimpleContext {
    contexts: Object,
    job_status: JobStatus,
    hash_files: Option<Box<HashFilesFn>>,
}

impl SimpleContext {
    pub fn new(contexts: Object, job_status: JobStatus) -> Self {
        SimpleContext {
            contexts,
            job_status,
            hash_files: None,
        }
    }

    /// Contexts from a JSON object; anything else gives no contexts at all.
    pub fn from_json(contexts: &serde_json::Value, job_status: JobStatus) -> Self {
        let contexts = match Value::from_json(contexts) {
            Value::Object(obj) => Object::clone(&obj),
            _ => Object::new(),
        };
        SimpleContext::new(contexts, job_status)
    }

    pub fn with_hash_files(mut self, hash_files: Box<HashFilesFn>) -> Self {
        self.hash_files = Some(hash_files);
        self
    }

    /// The context names, for building an [`super::Allowed`] that matches this context.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.contexts.iter().map(|(k, _)| k.as_str())
    }
}

impl EvalContext for SimpleContext {
    fn named_value(&self, name: &str) -> Value {
        self.contexts.get(name).cloned().unwrap_or(Value::Null)
    }

    fn call(&self, name: &str, args: &[Value]) -> Result<Value, String> {
        match name {
            "success" => Ok(Value::Bool(self.job_status == JobStatus::Success)),
            "failure" => Ok(Value::Bool(self.job_status == JobStatus::Failure)),
            "cancelled" => Ok(Value::Bool(self.job_status == JobStatus::Cancelled)),
            "always" => Ok(Value::Bool(true)),
            "hashfiles" => {
                let hash = self.hash_files.as_ref().ok_or(
                    "hashFiles is not available here: no workspace was given to hash files in",
                )?;
                let patterns: Vec<String> = args.iter().map(Value::to_display_string).collect();
                hash(&patterns).map(Value::string)
            }
            other => Err(format!(
                "The function '{other}' is not available in this context"
            )),
        }
    }
}
