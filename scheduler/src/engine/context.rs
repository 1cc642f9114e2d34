//! The expression context for job-level keys. Status functions here follow the job-level
//! rules (they look at ancestor jobs and the run), not the step-level ones the runner uses.

use kiln_workflow::expr::EvalContext;
use kiln_workflow::{Conclusion, Object, Value};

/// What the status functions in a job `if:` see.
pub(crate) struct JobStatus<'a> {
    pub run_cancelled: bool,
    /// Every ancestor (through all levels of `needs`) succeeded.
    pub ancestors_succeeded: bool,
    /// Some ancestor failed.
    pub ancestor_failed: bool,
    /// The result of a job of the same workflow, by id, for `success('a')`; None if unknown.
    pub result_of: &'a dyn Fn(&str) -> Option<Option<Conclusion>>,
}

pub(crate) struct JobContext<'a> {
    pub contexts: &'a Object,
    pub status: Option<JobStatus<'a>>,
}

impl<'a> JobContext<'a> {
    pub fn new(contexts: &'a Object) -> Self {
        JobContext {
            contexts,
            status: None,
        }
    }

    fn named_results(
        &self,
        function: &str,
        args: &[Value],
        status: &JobStatus,
    ) -> Result<Vec<Option<Conclusion>>, String> {
        args.iter()
            .map(|arg| {
                let id = arg.to_display_string();
                (status.result_of)(&id).ok_or_else(|| {
                    format!("{function}('{id}'): there is no job '{id}' in this workflow")
                })
            })
            .collect()
    }
}

impl EvalContext for JobContext<'_> {
    fn named_value(&self, name: &str) -> Value {
        self.contexts.get(name).cloned().unwrap_or(Value::Null)
    }

    fn call(&self, name: &str, args: &[Value]) -> Result<Value, String> {
        if name == "always" {
            return Ok(Value::Bool(true));
        }
        if name == "hashfiles" {
            return Err("hashFiles() is only available in steps".to_string());
        }
        let Some(status) = &self.status else {
            return Err(format!(
                "The function '{name}' is not available in this context"
            ));
        };
        let answer = match name {
            "cancelled" => status.run_cancelled,
            "success" if args.is_empty() => !status.run_cancelled && status.ancestors_succeeded,
            "failure" if args.is_empty() => status.ancestor_failed,
            "success" => {
                !status.run_cancelled
                    && self
                        .named_results("success", args, status)?
                        .iter()
                        .all(|r| *r == Some(Conclusion::Success))
            }
            "failure" => self
                .named_results("failure", args, status)?
                .contains(&Some(Conclusion::Failure)),
            other => {
                return Err(format!(
                    "The function '{other}' is not available in this context"
                ))
            }
        };
        Ok(Value::Bool(answer))
    }
}
