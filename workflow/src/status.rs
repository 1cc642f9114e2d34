//! The results GitHub reports for jobs and steps (`needs.<id>.result`,
//! `steps.<id>.outcome` / `.conclusion`). Shared by the engine that decides what runs and the
//! runner that executes steps, so both speak the same four words.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Conclusion {
    Success,
    Failure,
    Cancelled,
    Skipped,
}

impl Conclusion {
    pub fn as_str(self) -> &'static str {
        match self {
            Conclusion::Success => "success",
            Conclusion::Failure => "failure",
            Conclusion::Cancelled => "cancelled",
            Conclusion::Skipped => "skipped",
        }
    }

    /// Merges step conclusions into a job result: any failure fails the job, otherwise a
    /// cancellation cancels it; skipped steps do not affect it.
    pub fn merge(self, other: Conclusion) -> Conclusion {
        use Conclusion::*;
        match (self, other) {
            (Failure, _) | (_, Failure) => Failure,
            (Cancelled, _) | (_, Cancelled) => Cancelled,
            (Success, _) | (_, Success) => Success,
            (Skipped, Skipped) => Skipped,
        }
    }
}

impl fmt::Display for Conclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Conclusion::*;

    #[test]
    fn merging_prefers_failure_then_cancellation() {
        assert_eq!(Success.merge(Skipped), Success);
        assert_eq!(Success.merge(Failure), Failure);
        assert_eq!(Cancelled.merge(Success), Cancelled);
        assert_eq!(Cancelled.merge(Failure), Failure);
        assert_eq!(Skipped.merge(Skipped), Skipped);
    }
}
