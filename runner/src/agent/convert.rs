//! The one place where the scheduler's messages meet the runner's own types: a `JobSpec`
//! becomes the executor's `JobRequest`, and the executor's events and result become
//! ReportStep, AppendLogs and CompleteJob messages.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indexmap::IndexMap;
use kiln_proto::v1 as pb;
use kiln_workflow::commands::AnnotationLevel;
use kiln_workflow::value::{Object, Value};
use kiln_workflow::Conclusion;

use super::source::Source;
use super::ExecOptions;
use crate::actions::ArtifactServer;
use crate::executor::{AnnotationEvent, CacheEndpoint, JobRequest, JobResult, RunDirs, StepRecord};

/// GitHub's default `timeout-minutes`, for a spec that leaves it at 0.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(360 * 60);

pub(crate) fn unix_ms(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// Where the job's files go, decided by the runner before the request is made.
pub(crate) struct JobPlace {
    pub source_repo: PathBuf,
    pub dirs: RunDirs,
    /// Docker: the image of a job without `container:`.
    pub platform_image: Option<String>,
}

/// Whether the job of `spec` declares a `container:` (the workflow parsed as `job_request`
/// parses it; one that does not parse says no, and fails later with the reason).
pub(crate) fn declares_container(spec: &pb::JobSpec) -> bool {
    let parsed = kiln_workflow::parse_workflow(&spec.workflow_path, &spec.workflow_yaml);
    let job_id = spec.job_path.rsplit('/').next().unwrap_or(&spec.job_path);
    parsed
        .value
        .as_ref()
        .and_then(|workflow| workflow.job(job_id))
        .is_some_and(|job| job.container.is_some())
}

/// The executor's request for `spec`. The workflow is parsed again here; a workflow that does
/// not parse or lacks the job fails the job with the reason.
pub(crate) fn job_request(
    spec: &pb::JobSpec,
    place: JobPlace,
    options: &ExecOptions,
) -> Result<JobRequest, String> {
    let parsed = kiln_workflow::parse_workflow(&spec.workflow_path, &spec.workflow_yaml);
    let errors: Vec<String> = parsed.errors().map(|d| d.to_string()).collect();
    let workflow = match parsed.value {
        Some(workflow) if errors.is_empty() => workflow,
        _ => {
            return Err(format!(
                "the workflow {} the scheduler sent does not parse on this runner: {}",
                spec.workflow_path,
                if errors.is_empty() {
                    "it holds no workflow".to_owned()
                } else {
                    errors.join("; ")
                }
            ))
        }
    };
    let job_id = spec.job_path.rsplit('/').next().unwrap_or(&spec.job_path);
    let job = workflow.job(job_id).cloned().ok_or_else(|| {
        format!(
            "the workflow {} has no job `{job_id}` (job path `{}`)",
            spec.workflow_path, spec.job_path
        )
    })?;
    let mut contexts = contexts(&spec.contexts_json)?;
    // Sorted, so `toJSON(secrets)` prints the same on every runner.
    let secrets: BTreeMap<&String, &String> = spec.secrets.iter().collect();
    let mut secrets_context = Object::new();
    for (name, value) in &secrets {
        secrets_context.insert((*name).clone(), Value::string(value.as_str()));
    }
    contexts.insert("secrets", Value::object(secrets_context));
    let artifacts = endpoint(&spec.artifacts).map(|(url, token)| ArtifactServer { url, token });
    Ok(JobRequest {
        name: spec.name.clone(),
        job_id: spec.job_path.clone(),
        job: Arc::new(job),
        workflow: Arc::new(workflow),
        contexts,
        env: pairs(&spec.env),
        platform_image: place.platform_image,
        timeout: match spec.timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(ms),
        },
        secrets: masked_values(spec),
        source_repo: place.source_repo,
        dirs: place.dirs,
        action_cache: options.action_cache.clone(),
        action_base_url: options.action_base_url.clone(),
        offline: options.offline,
        local_repositories: options.local_repositories.clone(),
        cache: endpoint(&spec.cache).map(|(url, token)| CacheEndpoint { url, token }),
        artifacts,
    })
}

/// Every value the job's log must never show: its secrets, and the runner's own tokens for the
/// artifact store, the snapshot and the cache (no step sees those, but a message might quote
/// one).
pub(crate) fn masked_values(spec: &pb::JobSpec) -> Vec<String> {
    let mut values: Vec<String> = spec.secrets.values().cloned().collect();
    values.sort();
    for endpoint in [&spec.artifacts, &spec.cache].into_iter().flatten() {
        values.push(endpoint.token.clone());
    }
    if let Some(pb::source::Origin::Snapshot(snapshot)) =
        spec.source.as_ref().and_then(|s| s.origin.as_ref())
    {
        values.push(snapshot.token.clone());
    }
    values.retain(|v| !v.is_empty());
    values
}

fn contexts(json: &str) -> Result<Object, String> {
    if json.trim().is_empty() {
        return Ok(Object::new());
    }
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| format!("the job's contexts are not valid JSON: {e}"))?;
    match Value::from_json(&value) {
        Value::Object(object) => Ok(Arc::unwrap_or_clone(object)),
        _ => Err("the job's contexts are not a JSON object".to_owned()),
    }
}

fn pairs(values: &[pb::KeyValue]) -> Vec<(String, String)> {
    values
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect()
}

fn endpoint(endpoint: &Option<pb::Endpoint>) -> Option<(String, String)> {
    endpoint
        .as_ref()
        .filter(|e| !e.url.is_empty())
        .map(|e| (e.url.clone(), e.token.clone()))
}

/// The run's source, in the runner's terms.
pub(crate) fn source(spec: &pb::JobSpec) -> Source {
    let Some(source) = &spec.source else {
        return Source::None;
    };
    match &source.origin {
        None => Source::None,
        Some(pb::source::Origin::Snapshot(snapshot)) => Source::Snapshot {
            sha: source.sha.clone(),
            digest: snapshot.digest.clone(),
            size: snapshot.size,
            url: snapshot.url.clone(),
            token: snapshot.token.clone(),
        },
        Some(pb::source::Origin::Git(remote)) => Source::Git {
            sha: source.sha.clone(),
            url: remote.url.clone(),
        },
    }
}

pub(crate) fn conclusion(conclusion: Conclusion) -> pb::Conclusion {
    match conclusion {
        Conclusion::Success => pb::Conclusion::Success,
        Conclusion::Failure => pb::Conclusion::Failure,
        Conclusion::Cancelled => pb::Conclusion::Cancelled,
        Conclusion::Skipped => pb::Conclusion::Skipped,
    }
}

/// A job that ended before the executor could run it (its workflow, source or image).
pub(crate) fn failed_before_start(started_at: SystemTime, error: String) -> JobResult {
    JobResult {
        conclusion: Conclusion::Failure,
        outputs: IndexMap::new(),
        steps: Vec::new(),
        started_at,
        finished_at: SystemTime::now(),
        error: Some(error),
        summaries: Vec::new(),
        caches: Default::default(),
    }
}

pub(crate) fn completion(
    job: &pb::JobRef,
    result: &JobResult,
    last_log_seq: u64,
) -> pb::CompleteJobRequest {
    pb::CompleteJobRequest {
        job: Some(job.clone()),
        conclusion: conclusion(result.conclusion).into(),
        outputs: result
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        output_names: result.outputs.keys().cloned().collect(),
        steps: result
            .steps
            .iter()
            .enumerate()
            .map(|(index, step)| step_result(step, result.caches.get(&index)))
            .collect(),
        error: result.error.clone().unwrap_or_default(),
        summary: crate::summary::job_summary(&result.summaries),
        started_unix_ms: unix_ms(result.started_at),
        finished_unix_ms: unix_ms(result.finished_at),
        last_log_seq,
    }
}

fn step_result(step: &StepRecord, cache: Option<&kiln_workflow::StepCache>) -> pb::StepResult {
    pb::StepResult {
        step_id: step.id.clone(),
        name: step.name.clone(),
        outcome: conclusion(step.outcome).into(),
        conclusion: conclusion(step.conclusion).into(),
        // StepCache is plain data; serializing it cannot fail.
        cache_json: cache
            .and_then(|c| serde_json::to_string(c).ok())
            .unwrap_or_default(),
    }
}

/// A step's start (no conclusions) or end.
pub(crate) fn step_report(
    job: &pb::JobRef,
    index: u32,
    id: &str,
    name: &str,
    finished: Option<(Conclusion, Conclusion)>,
) -> pb::ReportStepRequest {
    let (phase, outcome, step_conclusion) = match finished {
        None => (
            pb::StepPhase::Started,
            pb::Conclusion::Unspecified,
            pb::Conclusion::Unspecified,
        ),
        Some((outcome, step_conclusion)) => (
            pb::StepPhase::Finished,
            conclusion(outcome),
            conclusion(step_conclusion),
        ),
    };
    pb::ReportStepRequest {
        job: Some(job.clone()),
        index,
        phase: phase.into(),
        step_id: id.to_owned(),
        name: name.to_owned(),
        outcome: outcome.into(),
        conclusion: step_conclusion.into(),
        unix_ms: unix_ms(SystemTime::now()),
    }
}

/// An annotation as a log line, in the form GitHub's raw logs give it.
pub(crate) fn annotation_line(event: &AnnotationEvent) -> String {
    let annotation = &event.annotation;
    let level = match annotation.level {
        AnnotationLevel::Error => "error",
        AnnotationLevel::Warning => "warning",
        AnnotationLevel::Notice => "notice",
    };
    let mut place = Vec::new();
    if let Some(title) = &annotation.title {
        place.push(format!("title={title}"));
    }
    if let Some(file) = &annotation.file {
        place.push(format!("file={file}"));
    }
    if let Some(line) = annotation.line {
        place.push(format!("line={line}"));
    }
    if place.is_empty() {
        format!("##[{level}]{}", annotation.message)
    } else {
        format!("##[{level} {}]{}", place.join(","), annotation.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKFLOW: &str = r#"
on: push
jobs:
  build:
    runs-on: linux
    outputs:
      v: ${{ steps.s.outputs.v }}
    steps:
      - id: s
        run: echo "v=1" >> "$GITHUB_OUTPUT"
"#;

    fn spec() -> pb::JobSpec {
        pb::JobSpec {
            run_id: "run-1".to_owned(),
            job_path: "caller/build".to_owned(),
            name: "caller / build".to_owned(),
            workflow_path: ".github/workflows/ci.yml".to_owned(),
            workflow_yaml: WORKFLOW.to_owned(),
            contexts_json: r#"{"github":{"sha":"abc","repository":"o/r"},"matrix":null}"#
                .to_owned(),
            secrets: [("TOKEN".to_owned(), "s3cret".to_owned())].into(),
            env: vec![
                pb::KeyValue {
                    key: "A".to_owned(),
                    value: "1".to_owned(),
                },
                pb::KeyValue {
                    key: "A".to_owned(),
                    value: "2".to_owned(),
                },
            ],
            runs_on: vec!["linux".to_owned()],
            timeout_ms: 0,
            source: None,
            cache: Some(pb::Endpoint {
                url: "http://sched:1/".to_owned(),
                token: "cache-token".to_owned(),
            }),
            artifacts: Some(pb::Endpoint {
                url: "http://sched:1/runs/1".to_owned(),
                token: "artifact-token".to_owned(),
            }),
        }
    }

    fn place() -> JobPlace {
        JobPlace {
            source_repo: PathBuf::from("/w/src"),
            dirs: RunDirs::new("/w/job"),
            platform_image: None,
        }
    }

    #[test]
    fn a_spec_becomes_the_request_kiln_run_would_make() {
        let request = job_request(&spec(), place(), &ExecOptions::default()).unwrap();
        assert_eq!(request.job_id, "caller/build");
        assert_eq!(request.job.id.value, "build");
        assert_eq!(request.name, "caller / build");
        assert_eq!(
            request.env,
            [("A".into(), "1".into()), ("A".into(), "2".into())]
        );
        let github = request.contexts.get("github").unwrap().to_json();
        assert_eq!(github["sha"], "abc");
        let secrets = request.contexts.get("secrets").unwrap().to_json();
        assert_eq!(secrets["TOKEN"], "s3cret");
        assert!(request.secrets.contains(&"s3cret".to_owned()));
        assert!(request.secrets.contains(&"artifact-token".to_owned()));
        assert!(!declares_container(&spec()));
        assert_eq!(request.timeout, DEFAULT_TIMEOUT);
        assert_eq!(request.cache.unwrap().token, "cache-token");
        assert_eq!(request.artifacts.unwrap().url, "http://sched:1/runs/1");
    }

    #[test]
    fn bad_workflows_and_contexts_fail_the_job_with_the_reason() {
        let mut broken = spec();
        broken.workflow_yaml = "on: push\njobs:\n  build:\n    steps: 3\n".to_owned();
        let error = job_request(&broken, place(), &ExecOptions::default())
            .err()
            .unwrap();
        assert!(error.contains("does not parse on this runner"), "{error}");
        let mut absent = spec();
        absent.job_path = "other".to_owned();
        let error = job_request(&absent, place(), &ExecOptions::default())
            .err()
            .unwrap();
        assert!(error.contains("has no job `other`"), "{error}");
        let mut contexts = spec();
        contexts.contexts_json = "[1]".to_owned();
        let error = job_request(&contexts, place(), &ExecOptions::default())
            .err()
            .unwrap();
        assert!(error.contains("not a JSON object"), "{error}");
    }

    #[test]
    fn a_result_becomes_a_completion() {
        let job = pb::JobRef {
            job_id: "j".into(),
            lease_id: "l".into(),
            attempt: 2,
        };
        let mut result =
            failed_before_start(UNIX_EPOCH + Duration::from_secs(5), "no image".into());
        result.outputs.insert("v".into(), "1".into());
        result.summaries = vec!["# a".into(), "b".into()];
        result.steps.push(StepRecord {
            id: "s".into(),
            name: "Run s".into(),
            outcome: Conclusion::Failure,
            conclusion: Conclusion::Success,
        });
        let done = completion(&job, &result, 17);
        assert_eq!(done.conclusion, pb::Conclusion::Failure as i32);
        assert_eq!(done.error, "no image");
        assert_eq!(done.summary, "# a\nb\n");
        assert_eq!(done.started_unix_ms, 5000);
        assert_eq!(done.last_log_seq, 17);
        assert_eq!(done.outputs["v"], "1");
        assert_eq!(done.steps[0].outcome, pb::Conclusion::Failure as i32);
        assert_eq!(done.steps[0].conclusion, pb::Conclusion::Success as i32);
    }
}
