//! The real executor of `kiln run` (kiln-scheduler's `drive::Executor`): converts the
//! engine's `Dispatch` into kiln-runner's `JobRequest`, picks the backend from the job's
//! platform, checks that the images exist (kiln never pulls), forwards the executor's events
//! to the driver, and converts the result back into the engine's `JobCompletion`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_runner::backend::{Backend, DeferredCleanup, DockerBackend, HostBackend};
use kiln_runner::executor::{
    prestart, run_job_with, AnnotationEvent, CacheEndpoint, JobEvent, JobRequest, JobResult,
    JobStop, Prestarted, RunDirs,
};
use kiln_runner::image::ImageChecks;
use kiln_scheduler::engine::{Dispatch, JobCompletion, StepRecord};
use kiln_workflow::model::{Job, JobKind, RunsOn};
use kiln_workflow::Conclusion;
use tokio::sync::mpsc::unbounded_channel;
use tokio_util::sync::CancellationToken;

use super::dry::platform_for;
use super::platform::{Platform, PlatformMap};
use kiln_scheduler::drive::{EventSender, Executor, LegEvent, LegFuture};

/// What every job of the run shares.
pub struct RunShared {
    pub env_file: Vec<(String, String)>,
    /// Every secret value, to mask.
    pub secrets: Vec<String>,
    pub source_repo: PathBuf,
    pub dirs: RunDirs,
    pub action_cache: Option<PathBuf>,
    pub action_base_url: Option<String>,
    pub offline: bool,
    pub local_repositories: Vec<(String, PathBuf)>,
    /// The cache server jobs use, when there is one.
    pub cache: Option<CacheEndpoint>,
}

pub struct LocalRunner {
    pub platforms: PlatformMap,
    /// The daemon, for image lookups, and the backend jobs run on.
    docker: Option<(DockerBackend, Arc<DeferredCleanup>)>,
    host: Arc<DeferredCleanup>,
    pub shared: Arc<RunShared>,
    /// Images looked up in the daemon's store: each once per run.
    known_images: Arc<ImageChecks>,
    prestarts: Arc<Prestarts>,
}

/// Job containers started while the jobs they are for wait for their `needs`.
#[derive(Default)]
struct Prestarts {
    /// The jobs the engines may run, of every workflow of the run.
    planned: Mutex<HashSet<PrestartKey>>,
    /// Jobs already prestarted, so none is started twice.
    started: Mutex<HashSet<PrestartKey>>,
    /// Ready for their job, by workflow and job id.
    waiting: Mutex<HashMap<PrestartKey, Prestarted>>,
}

/// A job of one workflow: the workflow's address (the engine shares one `Arc` between all
/// of its dispatches), so two workflows of a run with the same job id never mix.
type PrestartKey = (usize, String);

fn prestart_key(workflow: &Arc<kiln_workflow::model::Workflow>, job_id: &str) -> PrestartKey {
    (Arc::as_ptr(workflow) as usize, job_id.to_owned())
}

impl Prestarts {
    fn take(&self, key: &PrestartKey) -> Option<Prestarted> {
        self.waiting.lock().ok()?.remove(key)
    }

    fn keep(&self, key: PrestartKey, prestarted: Prestarted) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(key, prestarted);
        }
    }

    fn take_all(&self) -> Vec<Prestarted> {
        match self.waiting.lock() {
            Ok(mut waiting) => waiting.drain().map(|(_, p)| p).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// The labels of a `runs-on` that holds no expression.
fn literal_labels(runs_on: &RunsOn) -> Option<Vec<String>> {
    match runs_on {
        RunsOn::Labels(labels) if !labels.iter().any(|l| l.has_expressions()) => {
            Some(labels.iter().map(|l| l.raw.clone()).collect())
        }
        _ => None,
    }
}

/// The leg name and image of a job whose container is known before it runs: one leg (no
/// matrix), no `if:` (that could skip it), no `container:` or `services:`, and a name and
/// `runs-on` without expressions.
fn predictable_container(job: &Job, platforms: &PlatformMap) -> Option<(String, String)> {
    let simple = job.strategy.is_none()
        && job.condition.raw.trim().is_empty()
        && job.container.is_none()
        && job.services.is_empty()
        && matches!(job.kind, JobKind::Steps(_));
    if !simple {
        return None;
    }
    let name = match &job.name {
        Some(name) if name.has_expressions() => return None,
        Some(name) => name.raw.clone(),
        None => job.id.value.clone(),
    };
    match platforms.resolve(&literal_labels(job.runs_on.as_ref()?)?)? {
        Platform::Image(image) => Some((name, image)),
        Platform::Host => None,
    }
}

impl LocalRunner {
    /// Removes the containers started for jobs that never ran, then waits for the cleanups
    /// still running in the background; returns their errors.
    pub async fn finish(&self) -> Vec<String> {
        let mut errors = Vec::new();
        // Their removal goes through the deferred backends, awaited below.
        for unused in self.prestarts.take_all() {
            if let Err(error) = unused.discard().await {
                errors.push(error);
            }
        }
        errors.extend(self.host.finish().await);
        if let Some((_, backend)) = &self.docker {
            errors.extend(backend.finish().await);
        }
        errors
    }

    pub fn new(
        platforms: PlatformMap,
        docker: Option<DockerBackend>,
        shared: RunShared,
    ) -> LocalRunner {
        LocalRunner {
            platforms,
            docker: docker.map(|d| {
                let backend = Arc::new(DeferredCleanup::new(Arc::new(d.clone())));
                (d, backend)
            }),
            host: Arc::new(DeferredCleanup::new(Arc::new(HostBackend::new()))),
            shared: Arc::new(shared),
            known_images: Arc::default(),
            prestarts: Arc::default(),
        }
    }

    /// The jobs that need `dispatch`'s job and whose container can be started now, in
    /// Docker mode: (job id, leg name, image). Each is returned once per workflow.
    fn dependants_to_prestart(&self, dispatch: &Dispatch) -> Vec<(String, String, String)> {
        // Jobs of called workflows have ids the plan does not list at the start.
        if self.docker.is_none() || dispatch.job_id.contains('/') {
            return Vec::new();
        }
        let (Ok(planned), Ok(mut started)) =
            (self.prestarts.planned.lock(), self.prestarts.started.lock())
        else {
            return Vec::new();
        };
        let mut chosen = Vec::new();
        for job in &dispatch.workflow.jobs {
            let id = &job.id.value;
            let key = prestart_key(&dispatch.workflow, id);
            if !job.needs.iter().any(|need| need.value == dispatch.job_id)
                || !planned.contains(&key)
                || started.contains(&key)
            {
                continue;
            }
            if let Some((name, image)) = predictable_container(job, &self.platforms) {
                started.insert(key);
                chosen.push((id.clone(), name, image));
            }
        }
        chosen
    }
}

fn completion(mut result: JobResult) -> JobCompletion {
    JobCompletion {
        conclusion: result.conclusion,
        outputs: result.outputs,
        started_at: result.started_at,
        finished_at: result.finished_at,
        summary: super::summary::job_summary(&result.summaries),
        steps: result
            .steps
            .into_iter()
            .enumerate()
            .map(|(i, s)| StepRecord {
                id: s.id,
                name: s.name,
                outcome: s.outcome,
                conclusion: s.conclusion,
                cache: result.caches.remove(&i),
            })
            .collect(),
    }
}

fn annotation_text(event: &AnnotationEvent) -> String {
    let a = &event.annotation;
    let mut text = format!("{:?}", a.level).to_lowercase();
    if let Some(title) = &a.title {
        text.push_str(&format!(" {title}"));
    }
    text.push_str(": ");
    text.push_str(&a.message);
    if let Some(file) = &a.file {
        match a.line {
            Some(line) => text.push_str(&format!(" ({file}:{line})")),
            None => text.push_str(&format!(" ({file})")),
        }
    }
    text
}

fn forward(event: JobEvent, events: &EventSender) {
    match event {
        JobEvent::StepStarted { name, .. } => events.send(LegEvent::StepStarted { name }),
        JobEvent::Log { line, .. } => events.send(LegEvent::Log { line }),
        JobEvent::StepFinished {
            name,
            conclusion,
            duration,
            ..
        } => events.send(LegEvent::StepFinished {
            name,
            conclusion,
            duration,
        }),
        JobEvent::Annotation(annotation) => events.send(LegEvent::Message {
            text: annotation_text(&annotation),
        }),
        // Step summaries are Markdown for a web page; the terminal shows the logs instead.
        JobEvent::Summary { .. } => {}
    }
}

impl Executor for LocalRunner {
    fn admit(&self, dispatch: &Dispatch) -> Result<(), String> {
        platform_for(&self.platforms, dispatch).map(|_| ())
    }

    fn plan(&self, workflow: &Arc<kiln_workflow::model::Workflow>, job_ids: Vec<String>) {
        if let Ok(mut planned) = self.prestarts.planned.lock() {
            planned.extend(job_ids.iter().map(|id| prestart_key(workflow, id)));
        }
    }

    fn run(
        &self,
        dispatch: Dispatch,
        events: EventSender,
        cancel: CancellationToken,
        kill: CancellationToken,
    ) -> LegFuture {
        let platform = platform_for(&self.platforms, &dispatch);
        let key = prestart_key(&dispatch.workflow, &dispatch.job_id);
        let prestarted = self.prestarts.take(&key);
        let dependants = self.dependants_to_prestart(&dispatch);
        let prestarts = self.prestarts.clone();
        let docker = self.docker.clone();
        let host = self.host.clone();
        let shared = self.shared.clone();
        let known_images = self.known_images.clone();
        Box::pin(async move {
            let fail = |message: String| {
                events.send(LegEvent::Message {
                    text: format!("✘ {message}"),
                });
                JobCompletion::new(Conclusion::Failure)
            };
            // A prestart this leg cannot use (it failed before running) goes back, for the
            // run's end to remove.
            let keep_for_finish = |prestarted: Option<Prestarted>| {
                if let Some(prestarted) = prestarted {
                    prestarts.keep(key.clone(), prestarted);
                }
            };
            let platform = match platform {
                Ok(platform) => platform,
                Err(reason) => {
                    keep_for_finish(prestarted);
                    return fail(reason);
                }
            };
            let (backend, platform_image): (Arc<dyn Backend>, Option<String>) =
                match (&platform, docker) {
                    (Platform::Image(image), Some((docker, backend))) => {
                        // A job with `container:` runs in that image, known only once the
                        // executor evaluated it (it may read `github.workspace`); the backend
                        // reports a missing one, as it does a missing service image.
                        let images = if dispatch.job.container.is_none() {
                            vec![image.clone()]
                        } else {
                            Vec::new()
                        };
                        if let Err(message) = known_images.require(docker.client(), &images).await {
                            keep_for_finish(prestarted);
                            return fail(message);
                        }
                        (backend, Some(image.clone()))
                    }
                    _ => (host, None),
                };
            let timeout = Duration::try_from_secs_f64(dispatch.timeout_minutes * 60.0)
                .unwrap_or(Duration::MAX);
            let request = JobRequest {
                name: dispatch.name.clone(),
                job_id: dispatch.job_id.clone(),
                job: dispatch.job.clone(),
                workflow: dispatch.workflow.clone(),
                contexts: dispatch.contexts.clone(),
                env: shared.env_file.clone(),
                platform_image,
                timeout,
                secrets: shared.secrets.clone(),
                source_repo: shared.source_repo.clone(),
                dirs: shared.dirs.clone(),
                action_cache: shared.action_cache.clone(),
                action_base_url: shared.action_base_url.clone(),
                offline: shared.offline,
                local_repositories: shared.local_repositories.clone(),
                cache: shared.cache.clone(),
                artifacts: None,
            };
            if !dependants.is_empty() {
                start_dependants(&request, &backend, dependants, &prestarts);
            }
            let (tx, mut rx) = unbounded_channel();
            let stop = JobStop { cancel, kill };
            let job = run_job_with(request, backend, tx, stop, prestarted);
            let relay = async {
                // Ends when the executor drops its sender, i.e. when the job is over.
                while let Some(event) = rx.recv().await {
                    forward(event, &events);
                }
            };
            let (result, ()) = tokio::join!(job, relay);
            if let Some(error) = &result.error {
                events.send(LegEvent::Message {
                    text: format!("✘ {error}"),
                });
            }
            completion(result)
        })
    }
}

/// Starts the containers of `dependants` (job id, leg name, image). Their requests are
/// `request` (the job they need) with their own name, job and image: only those, the run's
/// folders and the `github` context decide a job's container.
fn start_dependants(
    request: &JobRequest,
    backend: &Arc<dyn Backend>,
    dependants: Vec<(String, String, String)>,
    prestarts: &Prestarts,
) {
    for (job_id, name, image) in dependants {
        let Some(job) = request.workflow.jobs.iter().find(|j| j.id.value == job_id) else {
            continue;
        };
        let dependant = JobRequest {
            name,
            job_id: job_id.clone(),
            job: Arc::new(job.clone()),
            platform_image: Some(image),
            ..request.clone()
        };
        // A prestart that cannot even create its folders is skipped: the job will report
        // the same problem when it prepares itself.
        if let Ok(prestarted) = prestart(&dependant, backend.clone()) {
            prestarts.keep(prestart_key(&request.workflow, &job_id), prestarted);
        }
    }
}
