//! The results GitHub reports for jobs and steps (`needs.<id>.result`,
//! `steps.<id>.outcome` / `.conclusion`), and what a cache step did. Shared by the engine that
//! decides what runs and the runner that executes steps, so both speak the same words.

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

/// What a cache step (`actions/cache`, `actions/cache/restore`, `actions/cache/save`) did, for
/// the run's summary and report (`jobs[].steps[].cache`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCache {
    /// The primary key.
    pub key: String,
    /// The lookup's result; `None` for `actions/cache/save`, which looks nothing up.
    pub lookup: Option<CacheLookup>,
    /// The key of the entry restored: the primary key on an exact hit, else the entry a
    /// restore key (or the primary key as a prefix) found.
    pub matched_key: Option<String>,
    /// Bytes of file content the restore wrote (files already up to date are not counted).
    pub restored_bytes: u64,
    /// The save's result; `None` for `actions/cache/restore`, and until the post step of
    /// `actions/cache` has run.
    pub save: Option<CacheSave>,
    /// Bytes of file content in the saved entry.
    pub saved_bytes: u64,
    /// Bytes sent to the server for it: only the chunks it did not hold, compressed.
    pub uploaded_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheLookup {
    /// The primary key matched exactly (`cache-hit` is `true`).
    Exact,
    /// A restore key, or the primary key as a prefix, matched.
    RestoreKey,
    Miss,
    /// The run has no cache server (`--no-cache`), or the lookup failed: nothing restored.
    Unavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheSave {
    Saved,
    /// The key exists in this scope already (entries are write-once), or another job is
    /// saving it.
    Exists,
    /// Not attempted: the primary key hit exactly.
    NotNeeded,
    /// The paths matched no file.
    NothingToSave,
    /// The save failed (no cache server, a refused token, an I/O error); the step's warning
    /// says why.
    Failed,
}

impl CacheLookup {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheLookup::Exact => "exact hit",
            CacheLookup::RestoreKey => "restore-key hit",
            CacheLookup::Miss => "miss",
            CacheLookup::Unavailable => "unavailable",
        }
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
