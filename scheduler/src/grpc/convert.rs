//! The one place where kiln-proto's messages meet the service's and the store's own types.

use kiln_proto::v1 as pb;
use kiln_workflow::Conclusion;
use tonic::Status;

use crate::engine::StepRecord;
use crate::service::{LeasedJob, SourceOrigin, SourceSpec, SubmitRequest};
use crate::store::{
    JobRecord, JobRef, JobResult, JobState, LogLine, RunRecord, RunState, RunnerInfo, StepPhase,
    StepReport,
};

pub fn job_ref(job: Option<pb::JobRef>) -> Result<JobRef, Status> {
    let job = job.ok_or_else(|| Status::invalid_argument("the call names no job (JobRef)"))?;
    if job.job_id.is_empty() || job.lease_id.is_empty() {
        return Err(Status::invalid_argument(
            "the JobRef lacks its job id or lease id",
        ));
    }
    Ok(JobRef {
        job_id: job.job_id,
        lease_id: job.lease_id,
        attempt: job.attempt,
    })
}

pub fn pb_job_ref(job: &JobRef) -> pb::JobRef {
    pb::JobRef {
        job_id: job.job_id.clone(),
        lease_id: job.lease_id.clone(),
        attempt: job.attempt,
    }
}

pub fn conclusion(value: i32, what: &str) -> Result<Conclusion, Status> {
    match pb::Conclusion::try_from(value) {
        Ok(pb::Conclusion::Success) => Ok(Conclusion::Success),
        Ok(pb::Conclusion::Failure) => Ok(Conclusion::Failure),
        Ok(pb::Conclusion::Cancelled) => Ok(Conclusion::Cancelled),
        Ok(pb::Conclusion::Skipped) => Ok(Conclusion::Skipped),
        _ => Err(Status::invalid_argument(format!(
            "{what}: conclusion {value} is not success, failure, cancelled or skipped"
        ))),
    }
}

fn optional_conclusion(value: i32, what: &str) -> Result<Option<Conclusion>, Status> {
    if value == pb::Conclusion::Unspecified as i32 {
        return Ok(None);
    }
    conclusion(value, what).map(Some)
}

pub fn pb_conclusion(conclusion: Option<Conclusion>) -> i32 {
    (match conclusion {
        None => pb::Conclusion::Unspecified,
        Some(Conclusion::Success) => pb::Conclusion::Success,
        Some(Conclusion::Failure) => pb::Conclusion::Failure,
        Some(Conclusion::Cancelled) => pb::Conclusion::Cancelled,
        Some(Conclusion::Skipped) => pb::Conclusion::Skipped,
    }) as i32
}

pub fn assignment(job: LeasedJob) -> pb::JobAssignment {
    let payload = job.payload;
    let source = payload.source.map(|source| pb::Source {
        sha: source.sha,
        origin: Some(match source.origin {
            SourceOrigin::Snapshot { digest, size } => {
                let (url, token) = job.snapshot.map(|e| (e.url, e.token)).unwrap_or_default();
                pb::source::Origin::Snapshot(pb::Snapshot {
                    digest,
                    size,
                    url,
                    token,
                })
            }
            SourceOrigin::Git { url } => pb::source::Origin::Git(pb::GitRemote { url }),
        }),
    });
    pb::JobAssignment {
        r#ref: Some(pb_job_ref(&job.job_ref)),
        lease_expires_unix_ms: job.expires_ms,
        spec: Some(pb::JobSpec {
            run_id: payload.run_id,
            job_path: payload.job_path,
            name: payload.name,
            workflow_path: payload.workflow_path,
            workflow_yaml: payload.workflow_yaml,
            contexts_json: payload.contexts_json,
            secrets: payload.secrets.into_iter().collect(),
            env: payload
                .env
                .into_iter()
                .map(|(key, value)| pb::KeyValue { key, value })
                .collect(),
            runs_on: payload.runs_on,
            timeout_ms: payload.timeout_ms,
            source,
            cache: Some(pb::Endpoint {
                url: job.cache.url,
                token: job.cache.token,
            }),
            artifacts: Some(pb::Endpoint {
                url: job.artifacts.url,
                token: job.artifacts.token,
            }),
        }),
    }
}

pub fn step_report(request: &pb::ReportStepRequest) -> Result<StepReport, Status> {
    let phase = match pb::StepPhase::try_from(request.phase) {
        Ok(pb::StepPhase::Started) => StepPhase::Started,
        Ok(pb::StepPhase::Finished) => StepPhase::Finished,
        _ => {
            return Err(Status::invalid_argument(format!(
                "step phase {} is not started or finished",
                request.phase
            )))
        }
    };
    Ok(StepReport {
        index: request.index,
        phase,
        step_id: request.step_id.clone(),
        name: request.name.clone(),
        outcome: optional_conclusion(request.outcome, "the step's outcome")?,
        conclusion: optional_conclusion(request.conclusion, "the step's conclusion")?,
        unix_ms: request.unix_ms,
    })
}

pub fn log_lines(lines: Vec<pb::LogLine>) -> Vec<LogLine> {
    lines
        .into_iter()
        .map(|l| LogLine {
            seq: l.seq,
            step_index: l.step_index,
            unix_ms: l.unix_ms,
            text: l.text,
        })
        .collect()
}

pub fn pb_log_lines(lines: Vec<LogLine>) -> Vec<pb::LogLine> {
    lines
        .into_iter()
        .map(|l| pb::LogLine {
            seq: l.seq,
            step_index: l.step_index,
            unix_ms: l.unix_ms,
            text: l.text,
        })
        .collect()
}

/// A step's cache report as the runner sent it (empty: not a cache step).
fn step_cache(json: &str) -> Result<Option<kiln_workflow::StepCache>, Status> {
    if json.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(json).map(Some).map_err(|e| {
        Status::invalid_argument(format!(
            "a step's cache_json is not a cache report this scheduler reads ({e}); the runner \
             and the scheduler should be the same kiln version"
        ))
    })
}

pub fn job_result(request: &pb::CompleteJobRequest) -> Result<JobResult, Status> {
    let steps = request
        .steps
        .iter()
        .map(|s| {
            Ok(StepRecord {
                id: s.step_id.clone(),
                name: s.name.clone(),
                outcome: conclusion(s.outcome, "a step's outcome")?,
                conclusion: conclusion(s.conclusion, "a step's conclusion")?,
                cache: step_cache(&s.cache_json)?,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let outputs = kiln_proto::outputs_in_order(&request.outputs, &request.output_names);
    Ok(JobResult {
        conclusion: conclusion(request.conclusion, "the job's conclusion")?,
        outputs,
        steps,
        error: request.error.clone(),
        summary: request.summary.clone(),
        started_ms: request.started_unix_ms,
        finished_ms: request.finished_unix_ms,
        last_log_seq: request.last_log_seq,
    })
}

fn pairs(values: &[pb::KeyValue]) -> Vec<(String, String)> {
    values
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect()
}

pub fn submit_request(request: pb::RunRequest) -> Result<SubmitRequest, Status> {
    let source = match request.source {
        None => None,
        Some(source) => {
            let origin = match source.origin {
                Some(pb::source::Origin::Snapshot(s)) => SourceOrigin::Snapshot {
                    digest: s.digest,
                    size: s.size,
                },
                Some(pb::source::Origin::Git(g)) => SourceOrigin::Git { url: g.url },
                None => {
                    return Err(Status::invalid_argument(
                        "the source names neither a snapshot nor a git remote",
                    ))
                }
            };
            Some(SourceSpec {
                sha: source.sha,
                origin,
            })
        }
    };
    Ok(SubmitRequest {
        event_name: request.event_name,
        event_json: request.event_json,
        source,
        repository: request.repository,
        git_ref: request.r#ref,
        actor: request.actor,
        workflows_path: request.workflows_path,
        job: request.job,
        matrix: pairs(&request.matrix),
        inputs: pairs(&request.inputs),
        vars: pairs(&request.vars),
        secrets: pairs(&request.secrets),
        env: pairs(&request.env),
    })
}

fn pb_job_state(state: JobState) -> i32 {
    (match state {
        JobState::Waiting => pb::JobState::Waiting,
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Done => pb::JobState::Done,
    }) as i32
}

pub fn job_summary(job: JobRecord) -> pb::JobSummary {
    pb::JobSummary {
        job_id: job.job_id,
        job_path: job.job_path,
        name: job.name,
        state: pb_job_state(job.state),
        conclusion: pb_conclusion(job.conclusion),
        waiting_reason: job.waiting_reason,
        runner_name: job.runner_name,
        attempt: job.attempt,
        started_unix_ms: job.started_ms.unwrap_or(0),
        finished_unix_ms: job.finished_ms.unwrap_or(0),
        steps: job
            .steps
            .into_iter()
            .map(|s| pb::StepResult {
                step_id: s.id,
                name: s.name,
                outcome: pb_conclusion(Some(s.outcome)),
                conclusion: pb_conclusion(Some(s.conclusion)),
                cache_json: s
                    .cache
                    .and_then(|c| serde_json::to_string(&c).ok())
                    .unwrap_or_default(),
            })
            .collect(),
        output_names: job.outputs.iter().map(|(name, _)| name.clone()).collect(),
        outputs: job.outputs.into_iter().collect(),
        message: job.message,
        matrix_json: job.matrix.unwrap_or_default(),
        summary: job.summary,
    }
}

pub fn run_summary(run: RunRecord, jobs: Vec<JobRecord>) -> pb::RunSummary {
    pb::RunSummary {
        run_id: run.id,
        workflow_name: run.workflow_name,
        workflow_path: run.workflow_path,
        event_name: run.event_name,
        attempt: run.attempt,
        state: (match run.state {
            RunState::Running => pb::RunState::Running,
            RunState::Done => pb::RunState::Done,
        }) as i32,
        conclusion: pb_conclusion(run.conclusion),
        created_unix_ms: run.created_ms,
        finished_unix_ms: run.finished_ms.unwrap_or(0),
        jobs: jobs.into_iter().map(job_summary).collect(),
        sha: run.sha,
        r#ref: run.git_ref,
    }
}

pub fn runner_info(info: RunnerInfo, online: bool) -> pb::RunnerInfo {
    pb::RunnerInfo {
        runner_id: info.runner.id,
        name: info.runner.name,
        labels: info.runner.labels,
        online,
        last_seen_unix_ms: info.runner.last_seen_ms,
        running_job_ids: info.running_job_ids,
        version: info.runner.version,
        capacity: info.runner.capacity,
    }
}
