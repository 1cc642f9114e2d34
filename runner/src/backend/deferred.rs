//! A backend wrapper that takes container and process cleanup off a run's critical path.
//!
//! The executor cleans a job up before it returns the job's result, and the engine can start
//! the job's dependants only once it has that result. Removing a job container costs a few
//! hundred milliseconds (kill, disconnect, destroy), paid again at every stage of a `needs`
//! chain. Here `cleanup` starts the real cleanup in the background and returns at once; the
//! run waits for every pending cleanup before it exits (also after failures and Ctrl-C), so
//! nothing is left behind, only removed later.

use std::sync::{Arc, Mutex};

use super::{Backend, BackendError, ExecOutcome, ExecSpec, JobEnv, JobSpec, LogSink};
use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct DeferredCleanup {
    inner: Arc<dyn Backend>,
    pending: Mutex<Vec<JoinHandle<Result<(), BackendError>>>>,
}

impl DeferredCleanup {
    pub fn new(inner: Arc<dyn Backend>) -> DeferredCleanup {
        DeferredCleanup {
            inner,
            pending: Mutex::new(Vec::new()),
        }
    }

    /// Waits for every cleanup started so far; returns the errors, worded for the user.
    pub async fn finish(&self) -> Vec<String> {
        let handles = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        let mut errors = Vec::new();
        for handle in handles {
            match handle.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    errors.push(format!("{} cleanup failed: {error}", self.inner.name()))
                }
                Err(error) => errors.push(format!(
                    "{} cleanup task failed: {error}",
                    self.inner.name()
                )),
            }
        }
        errors
    }
}

#[async_trait]
impl Backend for DeferredCleanup {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn prepare(
        &self,
        job: &JobSpec,
        cancel: &CancellationToken,
    ) -> Result<JobEnv, BackendError> {
        self.inner.prepare(job, cancel).await
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
        let inner = self.inner.clone();
        let env = env.clone();
        let handle = tokio::spawn(async move { inner.cleanup(&env).await });
        match self.pending.lock() {
            Ok(mut pending) => pending.push(handle),
            Err(poisoned) => poisoned.into_inner().push(handle),
        }
        Ok(())
    }
}
