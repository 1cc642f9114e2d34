//! What a queued job carries (the payload the store keeps opaque) and what a runner gets when
//! it leases one: the payload plus fresh endpoints and tokens, minted at lease time so a job
//! that waited in the queue never gets an expired cache token.

use std::collections::BTreeMap;

use kiln_workflow::{Object, Value};
use serde::{Deserialize, Serialize};

use super::planner::SourceSpec;
use super::stored::{RunTexts, StoredRun, TextRef};
use super::ServiceError;
use crate::engine::Dispatch;
use crate::store::JobRef;

/// A job leg in the queue: everything but the tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPayload {
    pub run_id: String,
    pub job_path: String,
    pub name: String,
    pub workflow_path: String,
    /// The workflow file's text. Empty in the queue, where `workflow_text` names the run's
    /// text instead; filled in when the job is leased (see [`JobPayload::join_text`]).
    /// Payloads queued by an earlier kiln carry the text here and no `workflow_text`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workflow_yaml: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_text: Option<TextRef>,
    /// The engine's contexts without `secrets`, a JSON object.
    pub contexts_json: String,
    /// The secrets the job sees (a called workflow's are the ones its caller passed).
    pub secrets: BTreeMap<String, String>,
    pub env: Vec<(String, String)>,
    pub runs_on: Vec<String>,
    /// 0: the runner's default.
    pub timeout_ms: u64,
    pub source: Option<SourceSpec>,
    pub repository: String,
    pub git_ref: String,
}

impl JobPayload {
    pub fn new(
        run_id: &str,
        stored: &StoredRun,
        root: &kiln_workflow::model::Workflow,
        dispatch: &Dispatch,
    ) -> Result<JobPayload, ServiceError> {
        let (workflow_path, workflow_text) =
            stored.job_source(root, &dispatch.job_id).ok_or_else(|| {
                ServiceError::Invalid(format!(
                    "run {run_id}: the workflow text of job `{}` was not stored",
                    dispatch.job_id
                ))
            })?;
        let mut contexts: Object = dispatch.contexts.clone();
        let mut secrets = BTreeMap::new();
        if let Some(Value::Object(object)) = contexts.get("secrets") {
            for (name, value) in object.iter() {
                if let Value::String(text) = value {
                    secrets.insert(name.clone(), text.to_string());
                }
            }
        }
        contexts.entries.shift_remove("secrets");
        let timeout_ms = if dispatch.timeout_minutes.is_finite() && dispatch.timeout_minutes > 0.0 {
            (dispatch.timeout_minutes * 60_000.0) as u64
        } else {
            0
        };
        Ok(JobPayload {
            run_id: run_id.to_owned(),
            job_path: dispatch.job_id.clone(),
            name: dispatch.name.clone(),
            workflow_path,
            workflow_yaml: String::new(),
            workflow_text: Some(workflow_text),
            contexts_json: Value::object(contexts).to_json().to_string(),
            secrets,
            env: stored.planned.env.clone(),
            runs_on: dispatch.runs_on.clone(),
            timeout_ms,
            source: stored.source.clone(),
            repository: stored.repository.clone(),
            git_ref: stored.git_ref.clone(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(job_id: &str, bytes: &[u8]) -> Result<JobPayload, ServiceError> {
        serde_json::from_slice(bytes)
            .map_err(|e| ServiceError::Corrupt(format!("job {job_id}'s queued payload: {e}")))
    }

    /// Whether the payload names one of its run's texts instead of carrying it.
    pub fn needs_text(&self) -> bool {
        self.workflow_text.is_some()
    }

    /// Puts the text the payload names into `workflow_yaml`, as the runner gets it.
    pub fn join_text(&mut self, job_id: &str, texts: &RunTexts) -> Result<(), ServiceError> {
        let Some(text) = self.workflow_text.take() else {
            return Ok(());
        };
        let found = texts.get(&text).ok_or_else(|| {
            ServiceError::Corrupt(format!(
                "job {job_id}'s payload names the workflow text {text:?}, which its run {} \
                 does not hold",
                self.run_id
            ))
        })?;
        self.workflow_yaml = found.to_string();
        Ok(())
    }
}

/// An HTTP service of the scheduler and the token that opens it for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub token: String,
}

/// A job leased to a runner, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedJob {
    pub job_ref: JobRef,
    pub expires_ms: i64,
    pub payload: JobPayload,
    /// `GET` URL and token of the run's snapshot, when its source is one.
    pub snapshot: Option<Endpoint>,
    pub cache: Endpoint,
    pub artifacts: Endpoint,
}
