//! One leased job on the runner, from assignment to completion: the job's folder, its
//! workspace source, the executor (the same `run_job` as `kiln run`, on the same backends, with
//! the same platform mapping and image checks) and the reporter that tells the scheduler.
//!
//! A fired stop token (the lease is lost, the runner is shutting down, the token was refused)
//! ends the job at once: the executor's future is dropped, what it had prepared is removed,
//! and nothing more is sent. A fired cancel token is a user's cancellation: the executor stops
//! the running step, concludes the job as cancelled, and the completion is reported.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use kiln_proto::v1 as pb;
use kiln_workflow::Conclusion;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::convert::{self, JobPlace};
use super::reporter::{ReportEnd, Reporter};
use super::tracked::Tracked;
use super::{AgentEvent, Executor, JobControl, Shared};
use crate::actions::remove_action_images;
use crate::backend::HostBackend;
use crate::executor::{run_job, JobEvent, JobRequest, JobResult, RunDirs};
use crate::image::ImageChecks;
use crate::mask::Masker;
use crate::platform::Platform;

/// The step label of the runner's own lines about the job.
const SETUP: &str = "Set up job";

/// How a job ended on this runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The job ran (or failed to start) and its completion was accepted.
    Reported(Conclusion),
    /// The job was stopped and nothing more was sent for it.
    Stopped(String),
}

/// What [`run`] hands back to the agent loop.
pub(crate) enum JobEnd {
    Outcome(JobOutcome),
    /// The scheduler refused the runner's token while the job reported.
    Unauthenticated(String),
}

/// Runs one assignment to its end.
pub(crate) async fn run(
    shared: Arc<Shared>,
    assignment: pb::JobAssignment,
    control: JobControl,
) -> JobEnd {
    let job = assignment.r#ref.unwrap_or_default();
    let spec = assignment.spec.unwrap_or_default();
    let root = shared.work.job_root(&job);
    let (events, executor_events) = unbounded_channel();
    let (result_tx, result_rx) = oneshot::channel();
    let reporter = Reporter::new(
        shared.scheduler.clone(),
        job.clone(),
        spec.name.clone(),
        control.clone(),
        shared.notify.clone(),
        shared.reachability.clone(),
        shared.timings.renew(),
        shared.retry_cap,
    );
    let mut reporting = tokio::spawn(reporter.run(executor_events, result_rx));
    let platform = match &shared.executor {
        // A host runner runs every job it was given here: the scheduler matched its labels.
        Executor::Host => Ok(Platform::Host),
        Executor::Docker(_) => match shared.platforms.resolve_or_explain(&spec.runs_on) {
            // The scheduler matched the labels already; a job with its own container needs
            // no platform image to run in Docker (the executor runs it in that container's).
            Err(_) if convert::declares_container(&spec) => {
                Ok(Platform::Image(crate::platform::DEFAULT_IMAGE.to_owned()))
            }
            platform => platform,
        },
    };
    let docker = match (&platform, shared.executor.docker()) {
        (Ok(Platform::Image(_)), Some(docker)) => Some(docker.clone()),
        _ => None,
    };
    let backend = Arc::new(Tracked::new(
        match &docker {
            Some(docker) => Arc::new(docker.clone()),
            None => Arc::new(HostBackend::new()),
        },
        docker.clone(),
        shared.job_labels.clone(),
    ));
    let work = execute(
        &shared,
        &spec,
        platform,
        &root,
        events,
        control.cancel.clone(),
        &backend,
    );
    let finished = tokio::select! {
        biased;
        _ = control.stop.cancelled() => None,
        result = work => Some(result),
    };
    let conclusion = finished.as_ref().map(|result| result.conclusion);
    match finished {
        // The reporter may be gone already (it stopped the job): then no one is to be told.
        Some(result) => {
            let _ = result_tx.send(result);
        }
        None => {
            drop(result_tx);
            for error in backend.sweep().await {
                let _ = shared.notify.send(AgentEvent::Warning(error));
            }
        }
    }
    remove_job_folder(&root, docker.is_some(), &shared.notify).await;
    let end = match (&mut reporting).await {
        Ok(end) => end,
        Err(error) => ReportEnd::Stopped(format!("the job's reporting task failed: {error}")),
    };
    match end {
        ReportEnd::Completed => JobEnd::Outcome(JobOutcome::Reported(
            conclusion.unwrap_or(Conclusion::Cancelled),
        )),
        ReportEnd::Stopped(reason) => JobEnd::Outcome(JobOutcome::Stopped(reason)),
        ReportEnd::Unauthenticated(detail) => JobEnd::Unauthenticated(detail),
    }
}

/// Removes the job's folder (its source clone, workspace and cloned actions) and, in Docker
/// mode, the images its Dockerfile actions were built into.
async fn remove_job_folder(root: &Path, docker: bool, notify: &UnboundedSender<AgentEvent>) {
    if docker {
        for error in remove_action_images(&RunDirs::new(root.join("run"))).await {
            let _ = notify.send(AgentEvent::Warning(error));
        }
    }
    let folder = root.to_path_buf();
    let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&folder)).await;
    if let Ok(Err(error)) = removed {
        if error.kind() != std::io::ErrorKind::NotFound {
            let _ = notify.send(AgentEvent::Warning(format!(
                "cannot remove the job folder {}: {error}",
                root.display()
            )));
        }
    }
}

/// Prepares and runs the job; a job that cannot start ends as a failure with the reason in
/// its log and in the completion's `error`.
async fn execute(
    shared: &Shared,
    spec: &pb::JobSpec,
    platform: Result<Platform, String>,
    root: &Path,
    events: UnboundedSender<JobEvent>,
    cancel: CancellationToken,
    backend: &Arc<Tracked>,
) -> JobResult {
    let started_at = SystemTime::now();
    let note = {
        let events = events.clone();
        let mut masker = Masker::new();
        for value in convert::masked_values(spec) {
            masker.add(&value);
        }
        move |line: String| {
            let _ = events.send(JobEvent::Log {
                step: SETUP.to_owned(),
                line: masker.mask(&line).into_owned(),
            });
        }
    };
    let prepared = tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(None),
        prepared = prepare(shared, spec, platform, root, &note) => prepared.map_err(Some),
    };
    match prepared {
        Ok(request) => {
            let result = run_job(request, backend.clone(), events, cancel).await;
            drop(note);
            result
        }
        Err(None) => {
            note("##[error]The operation was canceled.".to_owned());
            let mut result = convert::failed_before_start(started_at, String::new());
            result.conclusion = Conclusion::Cancelled;
            result.error = None;
            result
        }
        Err(Some(error)) => {
            note(format!("##[error]{error}"));
            convert::failed_before_start(started_at, error)
        }
    }
}

/// The job's request, with its source checked out and its images present.
async fn prepare(
    shared: &Shared,
    spec: &pb::JobSpec,
    platform: Result<Platform, String>,
    root: &Path,
    note: &(dyn Fn(String) + Send + Sync),
) -> Result<JobRequest, String> {
    let platform_image = match platform? {
        Platform::Image(image) => Some(image),
        Platform::Host => None,
    };
    let place = JobPlace {
        source_repo: root.join("source"),
        dirs: RunDirs::new(root.join("run")),
        platform_image: platform_image.clone(),
    };
    let request = convert::job_request(spec, place, &shared.options)?;
    if let (Some(docker), Some(image)) = (shared.executor.docker(), &platform_image) {
        // A job with `container:` runs in that image, known only once the executor evaluated
        // it; the backend reports a missing one, as it does a missing service image.
        let images = if request.job.container.is_none() {
            vec![image.clone()]
        } else {
            Vec::new()
        };
        ImageChecks::default()
            .require(docker.client(), &images)
            .await?;
    }
    shared
        .sources
        .checkout(&convert::source(spec), &request.source_repo, note)
        .await?;
    Ok(request)
}
