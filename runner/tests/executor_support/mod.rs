//! Runs a job from a workflow YAML string through the executor and collects its events.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kiln_runner::actions::ArtifactServer;
use kiln_runner::backend::{Backend, HostBackend};
use kiln_runner::executor::{run_job, CacheEndpoint, JobEvent, JobRequest, JobResult, RunDirs};
use kiln_workflow::value::{Object, Value};
use tokio_util::sync::CancellationToken;

pub struct Ran {
    pub result: JobResult,
    pub events: Vec<JobEvent>,
}

impl Ran {
    pub fn logs(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                JobEvent::Log { line, .. } => Some(line.clone()),
                JobEvent::Annotation(a) => Some(format!("ANNOTATION {}", a.annotation.message)),
                _ => None,
            })
            .collect()
    }

    pub fn log_text(&self) -> String {
        self.logs().join("\n")
    }

    pub fn step(&self, id: &str) -> (String, String) {
        let step = self
            .result
            .steps
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("no step {id} in {:?}", self.result.steps));
        (step.outcome.to_string(), step.conclusion.to_string())
    }
}

pub struct Setup {
    pub root: tempfile::TempDir,
    pub repo: PathBuf,
    pub secrets: Vec<(String, String)>,
    pub action_cache: Option<PathBuf>,
    pub offline: bool,
    pub timeout: Duration,
    /// The cache server jobs use; `None` (the default) runs them without one.
    pub cache: Option<CacheEndpoint>,
    /// The artifact store jobs use; `None` (the default) keeps artifacts in the run directory.
    pub artifacts: Option<ArtifactServer>,
    /// `github.event_name` and `github.event` (default: a push with an empty payload).
    pub event: (String, Value),
}

impl Setup {
    pub fn new() -> Setup {
        let root = tempfile::tempdir().expect("temp dir");
        let repo = root.path().join("repo");
        std::fs::create_dir_all(&repo).expect("repo dir");
        Setup {
            root,
            repo,
            secrets: Vec::new(),
            action_cache: None,
            offline: true,
            timeout: Duration::from_secs(120),
            cache: None,
            artifacts: None,
            event: ("push".to_owned(), Value::object(Object::new())),
        }
    }

    pub fn write(&self, relative: &str, content: &str) {
        let path = self.repo.join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    pub fn run_dir(&self) -> &Path {
        self.root.path()
    }

    pub fn request(&self, yaml: &str, job_id: &str) -> JobRequest {
        let parsed = kiln_workflow::parse_workflow(".github/workflows/test.yml", yaml);
        let errors: Vec<String> = parsed.errors().map(|d| d.to_string()).collect();
        assert!(errors.is_empty(), "workflow errors: {errors:?}");
        let workflow = Arc::new(parsed.value.expect("workflow"));
        let job = Arc::new(workflow.job(job_id).expect("job").clone());
        let mut github = Object::new();
        github.insert("repository", Value::string("octo/repo"));
        github.insert("event_name", Value::string(self.event.0.as_str()));
        github.insert("event", self.event.1.clone());
        github.insert("sha", Value::string(""));
        github.insert("ref", Value::string("refs/heads/main"));
        let mut secrets = Object::new();
        for (name, value) in &self.secrets {
            secrets.insert(name.clone(), Value::string(value.as_str()));
        }
        let mut contexts = Object::new();
        contexts.insert("github", Value::object(github));
        contexts.insert("secrets", Value::object(secrets));
        contexts.insert("matrix", Value::Null);
        JobRequest {
            name: job_id.to_owned(),
            job_id: job_id.to_owned(),
            job,
            workflow,
            contexts,
            env: Vec::new(),
            platform_image: None,
            timeout: self.timeout,
            secrets: self.secrets.iter().map(|(_, v)| v.clone()).collect(),
            source_repo: self.repo.clone(),
            dirs: RunDirs::new(self.root.path().join("run")),
            action_cache: self.action_cache.clone(),
            action_base_url: None,
            offline: self.offline,
            local_repositories: Vec::new(),
            cache: self.cache.clone(),
            artifacts: self.artifacts.clone(),
        }
    }

    pub async fn run(&self, yaml: &str, job_id: &str) -> Ran {
        self.run_on(
            Arc::new(HostBackend::new()),
            yaml,
            job_id,
            CancellationToken::new(),
        )
        .await
    }

    pub async fn run_on(
        &self,
        backend: Arc<dyn Backend>,
        yaml: &str,
        job_id: &str,
        cancel: CancellationToken,
    ) -> Ran {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let result = run_job(self.request(yaml, job_id), backend, tx, cancel).await;
        let mut events = Vec::new();
        while let Ok(event) = rx.try_recv() {
            events.push(event);
        }
        Ran { result, events }
    }
}
