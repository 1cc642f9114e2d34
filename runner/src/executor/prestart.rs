//! Job containers started ahead of their jobs.
//!
//! Creating and starting a container costs a few hundred milliseconds, and a job waiting
//! for its `needs` would pay it only once they are done. When the caller knows which job
//! comes next and its container does not depend on anything evaluated later (a literal
//! `runs-on`, no `container:` or `services:`), [`prestart`] picks the job's key and folders
//! and prepares its container in the background; [`super::run_job_prestarted`] then adopts
//! it, so the job starts on a running container. A prestart that no job adopts must be
//! [`Prestarted::discard`]ed, which removes what it created.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::job_keys::{JobKeys, JobScope};
use super::layout::JobLayout;
use super::JobRequest;
use crate::backend::{Backend, BackendError, JobEnv, JobSpec};

/// A job container being prepared (or prepared) for a job that has not started yet.
pub struct Prestarted {
    /// The job's display name; only a job of this name may adopt it.
    name: String,
    pub(crate) layout: JobLayout,
    spec: JobSpec,
    backend: Arc<dyn Backend>,
    task: JoinHandle<Result<JobEnv, BackendError>>,
}

/// Starts preparing the job `req` describes on `backend`. `req` needs only what the job's
/// container depends on to be final: its name, job, `platform_image`, the run's folders and
/// action sources, and the contexts its `container:` and `services:` are evaluated with.
pub fn prestart(req: &JobRequest, backend: Arc<dyn Backend>) -> Result<Prestarted, String> {
    let layout = JobLayout::create(req)?;
    let scope = JobScope::new(req, &layout.paths);
    let keys = JobKeys::evaluate(req, &scope, &layout.paths.workspace)?;
    let spec = layout.job_spec(req, backend.name(), keys.container, keys.services);
    let task = {
        let (backend, spec) = (backend.clone(), spec.clone());
        // Not cancelled with the run: each Docker call ends on its own, and `discard`
        // removes the result.
        tokio::spawn(async move { backend.prepare(&spec, &CancellationToken::new()).await })
    };
    Ok(Prestarted {
        name: req.name.clone(),
        layout,
        spec,
        backend,
        task,
    })
}

impl Prestarted {
    /// The name of the job this container is for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key the job will run under: it labels the container (see `JOB_KEY_LABEL`).
    pub fn job_key(&self) -> &str {
        &self.layout.key
    }

    /// The prepared job when it was prepared from `spec`; `None` (after removing the
    /// container, keeping the folders the job uses) when the job needs something else.
    pub(crate) async fn adopt(self, spec: &JobSpec) -> Option<Result<JobEnv, BackendError>> {
        if *spec != self.spec {
            let _ = self.remove_container().await;
            return None;
        }
        Some(match self.task.await {
            Ok(prepared) => prepared,
            Err(error) => Err(BackendError::InvalidSpec(format!(
                "preparing the job in the background failed: {error}"
            ))),
        })
    }

    /// Removes the container (once its preparation is over) and the job's folder.
    pub async fn discard(self) -> Result<(), String> {
        let dir = self.layout.paths.dir.clone();
        let removed = self.remove_container().await;
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                removed?;
                return Err(format!("cannot remove {}: {e}", dir.display()));
            }
        }
        removed
    }

    async fn remove_container(self) -> Result<(), String> {
        let env = match self.task.await {
            Ok(Ok(env)) => env,
            // A failed prepare removed what it made; the sweep below is for a task that died.
            _ => JobEnv::unprepared(&self.spec),
        };
        self.backend
            .cleanup(&env)
            .await
            .map_err(|e| format!("removing the unused container of job {}: {e}", self.name))
    }
}
