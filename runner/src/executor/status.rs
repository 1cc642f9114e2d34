//! The runner's step bookkeeping, free of I/O so the conformance suite can drive it: what the
//! status functions answer, whether a step runs, how `continue-on-error` turns a result into
//! an outcome and a conclusion, and how step conclusions fold into the job result.

use kiln_workflow::eval::ALL_CONTEXTS;
use kiln_workflow::expr::{self, template, Allowed, ExprError, JobStatus};
use kiln_workflow::value::{Object, Value};
use kiln_workflow::Conclusion;
use std::sync::OnceLock;

/// What the status functions look at. Inside a composite action `success()` and `failure()`
/// answer for the action's own steps (`action_status`), not the job; `cancelled()` always
/// answers for the job, because cancellation is a property of the whole job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusView {
    pub job: JobStatus,
    /// `Some` inside a composite action: the status of its steps so far.
    pub action: Option<JobStatus>,
}

impl StatusView {
    pub fn job(job: JobStatus) -> Self {
        StatusView { job, action: None }
    }

    /// Answers a status function by lower-cased name; `None` for other functions.
    pub fn call(&self, name: &str) -> Option<bool> {
        let scoped = self.action.unwrap_or(self.job);
        match name {
            "always" => Some(true),
            "cancelled" => Some(self.job == JobStatus::Cancelled),
            "success" => Some(scoped == JobStatus::Success && self.job != JobStatus::Cancelled),
            "failure" => Some(scoped == JobStatus::Failure),
            _ => None,
        }
    }
}

/// Every context name, for parsing step-level expressions (the parser already rejected
/// contexts a key may not use).
pub fn allowed_everything() -> &'static Allowed {
    static ALLOWED: OnceLock<Allowed> = OnceLock::new();
    ALLOWED.get_or_init(|| Allowed::everything(ALL_CONTEXTS))
}

/// GitHub's `if:` rewrite for a condition given as raw text (conformance data, action
/// `pre-if`/`post-if`): `success() && (...)` unless a status function is called.
pub fn condition_expression(raw: &str) -> Result<String, ExprError> {
    let source = template::condition_source(raw).map_err(|e| ExprError {
        kind: expr::ErrorKind::Parsing,
        message: e.to_string(),
        position: Some(e.offset()),
    })?;
    template::rewrite_condition(&source, allowed_everything())
}

/// What happens to a step after its `if:` is evaluated.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    Run,
    Skip,
    /// The condition could not be evaluated: the step fails without running.
    Fail(String),
}

impl Gate {
    pub fn from_evaluation(result: Result<bool, ExprError>) -> Gate {
        match result {
            Ok(true) => Gate::Run,
            Ok(false) => Gate::Skip,
            Err(error) => Gate::Fail(format!(
                "The step's condition could not be evaluated: {}",
                error.message
            )),
        }
    }
}

/// A step's result before and after `continue-on-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepOutcome {
    pub outcome: Conclusion,
    pub conclusion: Conclusion,
}

impl StepOutcome {
    /// `continue-on-error` converts only a failure: outcome stays `failure`, conclusion
    /// becomes `success`. Cancelled and skipped results are never converted.
    pub fn new(result: Conclusion, continue_on_error: bool) -> Self {
        let conclusion = if result == Conclusion::Failure && continue_on_error {
            Conclusion::Success
        } else {
            result
        };
        StepOutcome {
            outcome: result,
            conclusion,
        }
    }

    pub fn skipped() -> Self {
        StepOutcome::new(Conclusion::Skipped, false)
    }
}

/// The status of a scope (the job, or one composite action) as its steps finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScopeStatus {
    status: JobStatus,
}

impl ScopeStatus {
    pub fn status(&self) -> JobStatus {
        self.status
    }

    /// Folds a step conclusion in: the first failure or cancellation sticks, because
    /// later steps (`if: always()`) must not turn a failed job green again.
    pub fn record(&mut self, conclusion: Conclusion) {
        if self.status != JobStatus::Success {
            return;
        }
        self.status = match conclusion {
            Conclusion::Failure => JobStatus::Failure,
            Conclusion::Cancelled => JobStatus::Cancelled,
            Conclusion::Success | Conclusion::Skipped => JobStatus::Success,
        };
    }

    /// The job was cancelled (Ctrl-C, fail-fast, timeout): from now on `cancelled()` is true.
    pub fn cancel(&mut self) {
        self.status = JobStatus::Cancelled;
    }

    pub fn conclusion(&self) -> Conclusion {
        match self.status {
            JobStatus::Success => Conclusion::Success,
            JobStatus::Failure => Conclusion::Failure,
            JobStatus::Cancelled => Conclusion::Cancelled,
        }
    }
}

/// `steps.<id>` for a finished (or skipped) step.
pub fn step_context_entry(outcome: StepOutcome, outputs: &[(String, String)]) -> Value {
    let mut out = Object::new();
    for (name, value) in outputs {
        out.insert(name.clone(), Value::string(value.as_str()));
    }
    let mut entry = Object::new();
    entry.insert("outputs", Value::object(out));
    entry.insert("outcome", Value::string(outcome.outcome.as_str()));
    entry.insert("conclusion", Value::string(outcome.conclusion.as_str()));
    Value::object(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_on_error_converts_only_failures() {
        let converted = StepOutcome::new(Conclusion::Failure, true);
        assert_eq!(converted.outcome, Conclusion::Failure);
        assert_eq!(converted.conclusion, Conclusion::Success);
        let cancelled = StepOutcome::new(Conclusion::Cancelled, true);
        assert_eq!(cancelled.conclusion, Conclusion::Cancelled);
    }

    #[test]
    fn first_bad_result_sticks() {
        let mut status = ScopeStatus::default();
        status.record(Conclusion::Failure);
        status.record(Conclusion::Success);
        assert_eq!(status.conclusion(), Conclusion::Failure);
    }

    #[test]
    fn implicit_success_is_added_only_without_status_functions() {
        assert_eq!(condition_expression("").unwrap(), "success()");
        assert_eq!(
            condition_expression("github.event_name == 'push'").unwrap(),
            "success() && (github.event_name == 'push')"
        );
        assert_eq!(condition_expression("always()").unwrap(), "always()");
    }
}
