//! What a submission asks for, and the planner that turns it into runs. The planner lives in
//! the binary (it is `kiln run`'s own discovery and `github` context code); the service only
//! sees its result, stores it, and rebuilds engines from what it stored.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Where a run's workspace comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSpec {
    /// The commit the run is for (`github.sha`).
    pub sha: String,
    pub origin: SourceOrigin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceOrigin {
    /// A git bundle uploaded with UploadSnapshot, by its blake3 digest.
    Snapshot { digest: String, size: u64 },
    /// A repository runners clone themselves.
    Git { url: String },
}

/// A submission (`kiln submit`'s flags), as the control service received it.
#[derive(Debug, Clone, Default)]
pub struct SubmitRequest {
    pub event_name: String,
    /// The event payload (`github.event`), JSON; empty for the default payload.
    pub event_json: String,
    pub source: Option<SourceSpec>,
    /// `owner/repo`.
    pub repository: String,
    pub git_ref: String,
    pub actor: String,
    /// `-W`: a file or directory relative to the repository; empty for `.github/workflows`.
    pub workflows_path: String,
    /// `-j`.
    pub job: String,
    pub matrix: Vec<(String, String)>,
    pub inputs: Vec<(String, String)>,
    pub vars: Vec<(String, String)>,
    pub secrets: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
}

/// One run to start: one workflow the event triggers, with everything its engine is built
/// from. Texts, not parsed values, so the service stores them and a restart rebuilds the very
/// same engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRun {
    /// `.github/workflows/ci.yml`.
    pub workflow_path: String,
    pub workflow_text: String,
    /// The text of every reusable workflow a job of this run may call, by the `uses:` value
    /// the parser asks for (nested callees too).
    pub callees: BTreeMap<String, String>,
    /// The `github` context without job keys, a JSON object.
    pub github: serde_json::Value,
    pub inputs: serde_json::Map<String, serde_json::Value>,
    pub vars: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
    /// `--env-file` values, later entries win.
    pub env: Vec<(String, String)>,
    pub job_filter: Option<String>,
    pub matrix_filter: Vec<(String, String)>,
}

/// What planning a submission produced.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// One per triggered workflow, in discovery order; none when no workflow runs on the
    /// event (the notices say so).
    pub runs: Vec<PlannedRun>,
    /// Messages for the submitter (warnings, "no workflow runs on push").
    pub notices: Vec<String>,
}

/// Turns a submission and its checked-out source into runs.
pub trait RunPlanner: Send + Sync {
    /// `checkout` is the submission's source at `source.sha` (an empty directory when the
    /// submission has no source). `Err` is shown to the submitter as is: say what to fix.
    fn plan(&self, request: &SubmitRequest, checkout: &Path) -> Result<Plan, String>;
}
