//! The scheduler's messages in the shapes `kiln run` prints and reports, so a submitted run
//! reads and scripts like a local one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indexmap::IndexMap;
use kiln_proto::v1 as pb;
use kiln_workflow::Conclusion;

use crate::run::report::{JobReport, RunReport, StepReport};

/// The conclusion in kiln's type; `None` while unset (not done).
pub fn conclusion(value: i32) -> Option<Conclusion> {
    match pb::Conclusion::try_from(value).ok()? {
        pb::Conclusion::Success => Some(Conclusion::Success),
        pb::Conclusion::Failure => Some(Conclusion::Failure),
        pb::Conclusion::Cancelled => Some(Conclusion::Cancelled),
        pb::Conclusion::Skipped => Some(Conclusion::Skipped),
        pb::Conclusion::Unspecified => None,
    }
}

/// A conclusion the report must carry even if the scheduler left it unset: such a job did
/// not succeed, and the exit status must not say it did.
fn concluded(value: i32) -> Conclusion {
    conclusion(value).unwrap_or(Conclusion::Failure)
}

/// Milliseconds since the epoch; 0 (unset) is `None`.
pub fn time(unix_ms: i64) -> Option<SystemTime> {
    u64::try_from(unix_ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

/// The time between two instants in milliseconds, zero when unknown.
pub fn between(start_ms: i64, end_ms: i64) -> Duration {
    if start_ms <= 0 || end_ms < start_ms {
        return Duration::ZERO;
    }
    Duration::from_millis(u64::try_from(end_ms - start_ms).unwrap_or(0))
}

/// One run in `kiln run --report`'s shape: outputs in their declared order, matrix values,
/// summaries and cache reports as the runner sent them (`null` when one does not parse).
pub fn run_report(run: &pb::RunSummary) -> RunReport {
    RunReport {
        workflow: run.workflow_name.clone(),
        file: run.workflow_path.clone(),
        event: run.event_name.clone(),
        conclusion: concluded(run.conclusion),
        jobs: run.jobs.iter().map(job_report).collect(),
    }
}

fn job_report(job: &pb::JobSummary) -> JobReport {
    let outputs = kiln_proto::outputs_in_order(&job.outputs, &job.output_names);
    JobReport {
        id: job.job_path.clone(),
        name: job.name.clone(),
        matrix: parsed(&job.matrix_json),
        conclusion: concluded(job.conclusion),
        outputs: outputs.into_iter().collect::<IndexMap<_, _>>(),
        started_at: time(job.started_unix_ms),
        finished_at: time(job.finished_unix_ms),
        steps: job
            .steps
            .iter()
            .map(|step| StepReport {
                id: step.step_id.clone(),
                name: step.name.clone(),
                outcome: concluded(step.outcome),
                conclusion: concluded(step.conclusion),
                cache: parsed(&step.cache_json),
            })
            .collect(),
        summary: (!job.summary.is_empty()).then(|| job.summary.clone()),
    }
}

/// A JSON field of the protocol; empty means absent.
fn parsed<T: serde::de::DeserializeOwned>(json: &str) -> Option<T> {
    if json.is_empty() {
        return None;
    }
    serde_json::from_str(json).ok()
}

/// `success`, `failure`... or the state while not done.
pub fn run_status(run: &pb::RunSummary) -> String {
    match conclusion(run.conclusion) {
        Some(conclusion) if run.state == pb::RunState::Done as i32 => conclusion.to_string(),
        _ => "running".to_owned(),
    }
}

pub fn job_status(job: &pb::JobSummary) -> String {
    match pb::JobState::try_from(job.state).unwrap_or(pb::JobState::Unspecified) {
        pb::JobState::Done => conclusion(job.conclusion)
            .map(|c| c.to_string())
            .unwrap_or_else(|| "done".to_owned()),
        pb::JobState::Running => "running".to_owned(),
        pb::JobState::Queued => "queued".to_owned(),
        pb::JobState::Waiting | pb::JobState::Unspecified => "waiting".to_owned(),
    }
}
