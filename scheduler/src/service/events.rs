//! The WatchRun stream's rows as the service writes them (the store keeps them opaque). A row
//! names what changed; the stream reads the current run or job when it sends it, so a watcher
//! that resumes late sees the latest state, never a stale copy.

use kiln_workflow::Conclusion;
use serde::{Deserialize, Serialize};

use super::ServiceError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventPayload {
    /// The run's state or conclusion changed.
    Run,
    /// A job changed (queued, leased, cancel requested, concluded), by job id.
    Job(String),
    /// A step started or finished.
    Step {
        job_id: String,
        index: u32,
        started: bool,
        step_id: String,
        name: String,
        conclusion: Option<Conclusion>,
        unix_ms: i64,
    },
    /// A message about the run (a job skipped, waiting for a group, lost and re-queued).
    Notice(String),
}

impl EventPayload {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(seq: u64, bytes: &[u8]) -> Result<EventPayload, ServiceError> {
        serde_json::from_slice(bytes)
            .map_err(|e| ServiceError::Corrupt(format!("event {seq}: {e}")))
    }
}
