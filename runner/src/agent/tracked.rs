//! The backend of one job on a runner, which remembers what the job prepared. A job whose
//! lease is lost must stop at once, without its `always()` steps or its post steps: the
//! runner drops the executor's future, and this wrapper then removes what the executor would
//! have removed at its end (the job's containers, network and processes).
//!
//! It is also where the runner's identity joins every job's labels (see `instance`).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::backend::{
    Backend, BackendError, DockerBackend, ExecOutcome, ExecSpec, JobEnv, JobSpec, LogSink,
};

/// A prepared (or half-prepared) job not yet cleaned up.
struct Open {
    spec: JobSpec,
    env: Option<JobEnv>,
}

pub(crate) struct Tracked {
    inner: Arc<dyn Backend>,
    /// Docker mode: containers started by the job's Docker actions carry its key but are not
    /// in its handle; a sweep by key removes them too.
    docker: Option<DockerBackend>,
    /// Added to every job's [`JobSpec::labels`].
    labels: Vec<(String, String)>,
    open: Mutex<Vec<Open>>,
}

impl Tracked {
    pub(crate) fn new(
        inner: Arc<dyn Backend>,
        docker: Option<DockerBackend>,
        labels: Vec<(String, String)>,
    ) -> Tracked {
        Tracked {
            inner,
            docker,
            labels,
            open: Mutex::default(),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Vec<Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes everything the job prepared and did not clean up; returns the errors.
    pub(crate) async fn sweep(&self) -> Vec<String> {
        let open = std::mem::take(&mut *self.open());
        let mut errors = Vec::new();
        for job in open {
            let env = job.env.unwrap_or_else(|| JobEnv::unprepared(&job.spec));
            if let Err(error) = self.inner.cleanup(&env).await {
                errors.push(format!(
                    "cleaning up job {} failed: {error}",
                    job.spec.job_key
                ));
            }
            if let Some(docker) = &self.docker {
                if let Err(error) = docker.remove_job_objects(&job.spec.job_key).await {
                    errors.push(format!(
                        "removing the containers of job {} failed: {error}",
                        job.spec.job_key
                    ));
                }
            }
        }
        errors
    }
}

#[async_trait]
impl Backend for Tracked {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn prepare(
        &self,
        job: &JobSpec,
        cancel: &CancellationToken,
    ) -> Result<JobEnv, BackendError> {
        let mut job = job.clone();
        job.labels.extend(self.labels.iter().cloned());
        // Recorded before the first Docker call: a prepare dropped half-way is swept by key.
        self.open().push(Open {
            spec: job.clone(),
            env: None,
        });
        let prepared = self.inner.prepare(&job, cancel).await;
        let mut open = self.open();
        match &prepared {
            Ok(env) => {
                if let Some(entry) = open.iter_mut().find(|o| o.spec.job_key == job.job_key) {
                    entry.env = Some(env.clone());
                }
            }
            // A failed prepare removed what it had created.
            Err(_) => open.retain(|o| o.spec.job_key != job.job_key),
        }
        prepared
    }

    async fn exec(
        &self,
        env: &JobEnv,
        spec: &ExecSpec,
        logs: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<ExecOutcome, BackendError> {
        self.inner.exec(env, spec, logs, cancel).await
    }

    async fn cleanup(&self, env: &JobEnv) -> Result<(), BackendError> {
        let result = self.inner.cleanup(env).await;
        self.open().retain(|o| o.spec.job_key != env.job_key);
        result
    }
}
