//! What the service stores per run and per engine operation, and how an engine is rebuilt
//! from it. Everything here is serialized with serde_json into the store's opaque columns; the
//! `format` number lets a later kiln refuse an older layout clearly instead of misreading it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indexmap::IndexMap;
use kiln_workflow::model::{JobKind, Workflow};
use kiln_workflow::{parse_workflow_with, Conclusion, Object, ParseOptions, Value};
use serde::{Deserialize, Serialize};

use super::planner::{PlannedRun, SourceSpec};
use super::ServiceError;
use crate::engine::{
    Admission, GroupEffect, GroupEntry, JobCompletion, LegId, RunSpec, StepRecord,
};
use crate::store::StoredSpec;

/// The layout of [`StoredRun`] in `StoredSpec::bytes`.
pub const SPEC_FORMAT: u32 = 1;

/// A run's inputs as stored: the planned texts and values, and where its source is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRun {
    pub planned: PlannedRun,
    pub source: Option<SourceSpec>,
    pub repository: String,
    pub git_ref: String,
    /// For a rerun of the failed jobs: the legs that succeeded in the earlier attempt.
    #[serde(default)]
    pub carried: Vec<CarriedJob>,
}

/// A leg a rerun does not run again: its earlier attempt's result stands (dependants see its
/// outputs), as GitHub's "re-run failed jobs" keeps successful jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarriedJob {
    pub job_path: String,
    /// The leg's display name (the matrix values tell legs of one job apart).
    pub name: String,
    pub from_attempt: u32,
    pub completion: StoredCompletion,
}

impl StoredRun {
    pub fn to_spec(&self) -> StoredSpec {
        StoredSpec {
            format: SPEC_FORMAT,
            bytes: serde_json::to_vec(self).unwrap_or_default(),
        }
    }

    pub fn from_spec(run_id: &str, spec: &StoredSpec) -> Result<StoredRun, ServiceError> {
        if spec.format != SPEC_FORMAT {
            return Err(ServiceError::Corrupt(format!(
                "run {run_id} was stored in format {} but this kiln reads format {SPEC_FORMAT}; \
                 run the kiln that created it to let it finish",
                spec.format
            )));
        }
        serde_json::from_slice(&spec.bytes)
            .map_err(|e| ServiceError::Corrupt(format!("run {run_id}'s stored inputs: {e}")))
    }

    /// Parses the stored texts (callees from the stored map only) into the engine's spec.
    pub fn run_spec(&self) -> Result<RunSpec, ServiceError> {
        let planned = &self.planned;
        let resolver = |uses: &str| {
            planned
                .callees
                .get(uses)
                .map(|text| (uses.to_owned(), text.clone()))
        };
        let options = ParseOptions {
            resolver: Some(&resolver),
            ..ParseOptions::default()
        };
        let parsed = parse_workflow_with(&planned.workflow_path, &planned.workflow_text, &options);
        let errors: Vec<String> = parsed.errors().map(|d| d.to_string()).collect();
        let workflow = match parsed.value {
            Some(workflow) if errors.is_empty() => workflow,
            _ => {
                return Err(ServiceError::Invalid(format!(
                    "{} does not parse: {}",
                    planned.workflow_path,
                    if errors.is_empty() {
                        "it holds no workflow".to_owned()
                    } else {
                        errors.join("; ")
                    }
                )))
            }
        };
        let object = |map: serde_json::Map<String, serde_json::Value>| match Value::from_json(
            &serde_json::Value::Object(map),
        ) {
            Value::Object(object) => Arc::unwrap_or_clone(object),
            _ => Object::new(),
        };
        let strings = |map: &BTreeMap<String, String>| {
            let mut object = Object::new();
            for (k, v) in map {
                object.insert(k.clone(), Value::string(v.as_str()));
            }
            object
        };
        let github = match &planned.github {
            serde_json::Value::Object(map) => object(map.clone()),
            _ => Object::new(),
        };
        Ok(RunSpec {
            workflow: Arc::new(workflow),
            workflow_file: planned.workflow_path.clone(),
            github,
            inputs: object(planned.inputs.clone()),
            vars: strings(&planned.vars),
            secrets: strings(&planned.secrets),
            job_filter: planned.job_filter.clone(),
            matrix_filter: planned.matrix_filter.clone(),
        })
    }

    /// The file a job of this run is defined in, and which of the run's texts it is: the
    /// run's own workflow, or, for `caller/build`, the workflow `caller` calls (followed
    /// through nested calls).
    pub fn job_source(&self, root: &Workflow, job_path: &str) -> Option<(String, TextRef)> {
        let mut segments: Vec<&str> = job_path.split('/').collect();
        segments.pop()?;
        let mut path = self.planned.workflow_path.clone();
        let mut text = TextRef::Root;
        let mut workflow = root;
        for caller in segments {
            let JobKind::Call(call) = &workflow.job(caller)?.kind else {
                return None;
            };
            let uses = call.uses.value.as_str();
            self.planned.callees.get(uses)?;
            text = TextRef::Callee(uses.to_owned());
            path = uses.strip_prefix("./").unwrap_or(uses).to_owned();
            workflow = call.callee.as_deref()?;
        }
        Some((path, text))
    }

    /// The run's workflow texts, shared.
    pub fn texts(&self) -> RunTexts {
        RunTexts {
            root: self.planned.workflow_text.as_str().into(),
            callees: self
                .planned
                .callees
                .iter()
                .map(|(uses, text)| (uses.clone(), text.as_str().into()))
                .collect(),
        }
    }
}

/// Which of its run's workflow texts a job is defined in. Queued payloads name it instead of
/// carrying the text (a run's jobs would otherwise each hold a copy of the same file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TextRef {
    /// The run's own workflow file.
    Root,
    /// A reusable workflow the run calls, by its `uses:` value.
    Callee(String),
}

/// A run's workflow texts, kept in memory for the jobs leased from it.
#[derive(Debug, Clone, Default)]
pub struct RunTexts {
    pub root: Arc<str>,
    pub callees: BTreeMap<String, Arc<str>>,
}

impl RunTexts {
    pub fn get(&self, text: &TextRef) -> Option<&Arc<str>> {
        match text {
            TextRef::Root => Some(&self.root),
            TextRef::Callee(uses) => self.callees.get(uses),
        }
    }
}

/// One operation applied to a run's engine, in the run's op log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// A leg ended (a runner's completion, or the scheduler's own verdict).
    Complete {
        leg: u32,
        completion: StoredCompletion,
    },
    /// The user cancelled the run.
    CancelRun,
    /// The shared concurrency coordinator granted or cancelled one of this run's entries.
    Group(StoredEffect),
    /// The coordinator's answers to this run's entries, in the order they were asked.
    Admissions(Vec<StoredAdmission>),
}

impl Op {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(run_id: &str, seq: u64, bytes: &[u8]) -> Result<Op, ServiceError> {
        serde_json::from_slice(bytes)
            .map_err(|e| ServiceError::Corrupt(format!("run {run_id} op {seq}: {e}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredAdmission {
    Run,
    Pend,
}

impl From<Admission> for StoredAdmission {
    fn from(a: Admission) -> Self {
        match a {
            Admission::Run => StoredAdmission::Run,
            Admission::Pend => StoredAdmission::Pend,
        }
    }
}

impl From<StoredAdmission> for Admission {
    fn from(a: StoredAdmission) -> Self {
        match a {
            StoredAdmission::Run => Admission::Run,
            StoredAdmission::Pend => Admission::Pend,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredEntry {
    Run,
    Call(u32),
    Leg(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredEffect {
    Grant(StoredEntry),
    Cancel { entry: StoredEntry, reason: String },
}

fn stored_entry(entry: GroupEntry) -> StoredEntry {
    match entry {
        GroupEntry::Run => StoredEntry::Run,
        GroupEntry::Call(n) => StoredEntry::Call(n),
        GroupEntry::Leg(leg) => StoredEntry::Leg(leg.0),
    }
}

fn group_entry(entry: StoredEntry) -> GroupEntry {
    match entry {
        StoredEntry::Run => GroupEntry::Run,
        StoredEntry::Call(n) => GroupEntry::Call(n),
        StoredEntry::Leg(n) => GroupEntry::Leg(LegId(n)),
    }
}

impl From<&GroupEffect> for StoredEffect {
    fn from(effect: &GroupEffect) -> Self {
        match effect {
            GroupEffect::Grant(entry) => StoredEffect::Grant(stored_entry(*entry)),
            GroupEffect::Cancel { entry, reason } => StoredEffect::Cancel {
                entry: stored_entry(*entry),
                reason: reason.clone(),
            },
        }
    }
}

impl From<&StoredEffect> for GroupEffect {
    fn from(effect: &StoredEffect) -> Self {
        match effect {
            StoredEffect::Grant(entry) => GroupEffect::Grant(group_entry(*entry)),
            StoredEffect::Cancel { entry, reason } => GroupEffect::Cancel {
                entry: group_entry(*entry),
                reason: reason.clone(),
            },
        }
    }
}

/// A leg's completion as the engine needs it again on replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCompletion {
    pub conclusion: Conclusion,
    pub outputs: Vec<(String, String)>,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub steps: Vec<StoredStep>,
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredStep {
    pub id: String,
    pub name: String,
    pub outcome: Conclusion,
    pub conclusion: Conclusion,
    /// Absent in op logs written before cache steps were reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<kiln_workflow::StepCache>,
}

impl From<&StepRecord> for StoredStep {
    fn from(step: &StepRecord) -> StoredStep {
        StoredStep {
            id: step.id.clone(),
            name: step.name.clone(),
            outcome: step.outcome,
            conclusion: step.conclusion,
            cache: step.cache.clone(),
        }
    }
}

fn time_of(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl StoredCompletion {
    /// A verdict of the scheduler's own (cancelled while queued, lost too often, timed out).
    pub fn verdict(conclusion: Conclusion, now: i64) -> StoredCompletion {
        StoredCompletion {
            conclusion,
            outputs: Vec::new(),
            started_ms: now,
            finished_ms: now,
            steps: Vec::new(),
            summary: String::new(),
        }
    }

    pub fn completion(&self) -> JobCompletion {
        JobCompletion {
            conclusion: self.conclusion,
            outputs: self.outputs.iter().cloned().collect::<IndexMap<_, _>>(),
            started_at: time_of(self.started_ms),
            finished_at: time_of(self.finished_ms),
            steps: self
                .steps
                .iter()
                .map(|s| StepRecord {
                    id: s.id.clone(),
                    name: s.name.clone(),
                    outcome: s.outcome,
                    conclusion: s.conclusion,
                    cache: s.cache.clone(),
                })
                .collect(),
            summary: self.summary.clone(),
        }
    }
}
