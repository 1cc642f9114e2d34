//! Jobs in containers, through the Docker Engine API (bollard).
//!
//! A job with services gets its own bridge network (every job, with
//! [`DockerConfig::always_create_network`]). Services start first, reachable by their name as a
//! network alias, and are waited for until healthy when they have a health check. The job
//! container is kept alive with `tail -f /dev/null`; every step is a `docker exec` in it.
//! Everything is labelled with [`JOB_KEY_LABEL`] = the job key, which is how cleanup finds
//! what to remove, including after a failed or abandoned `prepare`, and with the job spec's
//! own labels (a registered runner's identity: see `agent::instance`).
//!
//! Images are never pulled unless [`DockerConfig::allow_pull`] is set: a missing image is an
//! error that says how to provide it.
//!
//! `options:` strings accept: `--health-cmd`, `--health-interval`, `--health-timeout`,
//! `--health-retries`, `--health-start-period`, `--env`/`-e`, `--network-alias`,
//! `--entrypoint` (services only), `--user`/`-u`, `--cpus`, `--memory`/`-m`, `--privileged`,
//! `--tmpfs`, `--mount`, `--volume`/`-v`. Any other flag is an error naming it.

mod exec;
pub(crate) use exec::DockerOutputLines;
mod options;
mod proxy;
mod setup;
pub(crate) use proxy::{local_daemon_socket, SocketProxy};

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bollard::errors::Error as ApiError;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::{Backend, BackendError, ExecOutcome, ExecSpec, Handle, JobEnv, JobSpec, LogSink};

/// Label put on every container and network of a job; its value is the job key.
pub const JOB_KEY_LABEL: &str = "dev.kiln.job-key";

/// Connecting to a daemon that does not answer must not hang the CLI.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Tunables of the Docker backend.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Pull images missing locally. Off by default: kiln runs where no registry is reachable.
    pub allow_pull: bool,
    /// Longest wait for a service's health check to report healthy.
    pub service_health_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when an exec times out or is cancelled.
    pub kill_grace: Duration,
    /// Give every job its own bridge network. Off by default: a network is created only for
    /// jobs with services (which need the aliases); creating and removing one costs about
    /// 300 ms per job, and a job alone gains nothing from it (it uses Docker's default bridge).
    pub always_create_network: bool,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            allow_pull: false,
            service_health_timeout: Duration::from_secs(300),
            kill_grace: Duration::from_secs(1),
            always_create_network: false,
        }
    }
}

/// The Docker backend. Cheap to clone; clones share one connection pool.
#[derive(Debug, Clone)]
pub struct DockerBackend {
    docker: Docker,
    config: DockerConfig,
}

/// What [`DockerBackend::remove_labelled`] removed, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    /// Containers and networks that matched but were left alone.
    pub spared: Vec<String>,
}

impl Removed {
    /// Nothing was removed.
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.networks.is_empty()
    }

    /// The objects to remove; those `spare` accepts are noted as spared instead.
    fn spare(
        &mut self,
        objects: Vec<Labelled>,
        spare: &impl Fn(&HashMap<String, String>) -> bool,
    ) -> Vec<Labelled> {
        let (spared, doomed): (Vec<_>, Vec<_>) =
            objects.into_iter().partition(|o| spare(&o.labels));
        self.spared.extend(spared.into_iter().map(|o| o.name));
        doomed
    }
}

fn ids(objects: &[Labelled]) -> Vec<String> {
    objects.iter().map(|o| o.id.clone()).collect()
}

/// A container or network found by its labels.
struct Labelled {
    id: String,
    /// Without Docker's leading `/`; the id when it has none.
    name: String,
    labels: HashMap<String, String>,
}

impl Labelled {
    fn new(id: String, name: Option<String>, labels: Option<HashMap<String, String>>) -> Labelled {
        let name = name.map_or_else(|| id.clone(), |n| n.trim_start_matches('/').to_owned());
        Labelled {
            id,
            name,
            labels: labels.unwrap_or_default(),
        }
    }
}

/// What cleanup needs to know about a prepared Docker job.
#[derive(Debug, Clone)]
pub(crate) struct DockerHandle {
    pub container_id: String,
    pub service_ids: Vec<String>,
    pub network_id: Option<String>,
}

/// The daemon address we connect to, as `DOCKER_HOST` or Docker's default says.
pub(crate) fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned())
}

impl DockerBackend {
    /// Connects to the daemon (honouring `DOCKER_HOST`) and negotiates the API version down
    /// to what the daemon speaks. Fails with a clear message when no daemon answers.
    pub async fn connect(config: DockerConfig) -> Result<Self, BackendError> {
        let host = docker_host();
        let unavailable = |detail: String| BackendError::DockerUnavailable {
            host: host.clone(),
            detail,
        };
        let docker = Docker::connect_with_defaults().map_err(|e| unavailable(e.to_string()))?;
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| unavailable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(DockerBackend { docker, config })
    }

    /// The connected client, for image management and tests.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The same connection with other settings.
    pub fn with_config(mut self, config: DockerConfig) -> Self {
        self.config = config;
        self
    }

    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// Removes every container and network labelled with `job_key`. Used by cleanup and to
    /// undo a half-finished `prepare`.
    pub async fn remove_job_objects(&self, job_key: &str) -> Result<(), BackendError> {
        self.remove_labelled(&[(JOB_KEY_LABEL, job_key)])
            .await
            .map(drop)
    }

    /// Force-removes every container (running or not, with its anonymous volumes) that
    /// carries all of `labels`, then every network that does; returns their names. At least
    /// one label is required: an empty filter would match every object of the daemon.
    pub async fn remove_labelled(&self, labels: &[(&str, &str)]) -> Result<Removed, BackendError> {
        self.remove_labelled_but(labels, |_| false).await
    }

    /// [`DockerBackend::remove_labelled`], sparing the objects whose labels `spare` accepts
    /// (their names are in [`Removed::spared`]).
    pub async fn remove_labelled_but(
        &self,
        labels: &[(&str, &str)],
        spare: impl Fn(&HashMap<String, String>) -> bool,
    ) -> Result<Removed, BackendError> {
        if labels.is_empty() {
            return Err(BackendError::InvalidSpec(
                "removing Docker objects by label needs at least one label".into(),
            ));
        }
        let mut removed = Removed::default();
        let containers = removed.spare(self.containers_labelled(labels).await?, &spare);
        self.remove_containers(&ids(&containers)).await?;
        removed.containers = containers.into_iter().map(|o| o.name).collect();
        // Only now: a network goes once the containers on it are gone.
        let networks = removed.spare(self.networks_labelled(labels).await?, &spare);
        self.remove_networks(&ids(&networks)).await?;
        removed.networks = networks.into_iter().map(|o| o.name).collect();
        Ok(removed)
    }

    /// Ids of the containers labelled with `job_key`, running or not.
    pub(crate) async fn labelled_containers(
        &self,
        job_key: &str,
    ) -> Result<Vec<String>, BackendError> {
        let containers = self
            .containers_labelled(&[(JOB_KEY_LABEL, job_key)])
            .await?;
        Ok(containers.into_iter().map(|o| o.id).collect())
    }

    /// Ids of the networks labelled with `job_key`.
    pub(crate) async fn labelled_networks(
        &self,
        job_key: &str,
    ) -> Result<Vec<String>, BackendError> {
        let networks = self.networks_labelled(&[(JOB_KEY_LABEL, job_key)]).await?;
        Ok(networks.into_iter().map(|o| o.id).collect())
    }

    /// The containers carrying all of `labels`, running or not.
    async fn containers_labelled(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<Labelled>, BackendError> {
        let containers = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&label_filter(labels))
                    .build(),
            ))
            .await
            .map_err(|e| BackendError::docker("listing labelled containers", e))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let name = c.names.and_then(|names| names.into_iter().next());
                Some(Labelled::new(c.id?, name, c.labels))
            })
            .collect())
    }

    /// The networks carrying all of `labels`.
    async fn networks_labelled(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<Labelled>, BackendError> {
        let networks = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::new()
                    .filters(&label_filter(labels))
                    .build(),
            ))
            .await
            .map_err(|e| BackendError::docker("listing labelled networks", e))?;
        Ok(networks
            .into_iter()
            .filter_map(|n| Some(Labelled::new(n.id?, n.name, n.labels)))
            .collect())
    }

    async fn remove_containers(&self, ids: &[String]) -> Result<(), BackendError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        let results = join_all(ids.iter().map(|id| {
            let options = options.clone();
            async move {
                let result = self.docker.remove_container(id, Some(options)).await;
                ignore_gone(result)
                    .map_err(|e| BackendError::docker(format!("removing container {id}"), e))
            }
        }))
        .await;
        results.into_iter().collect()
    }

    async fn remove_networks(&self, ids: &[String]) -> Result<(), BackendError> {
        for id in ids {
            ignore_gone(self.docker.remove_network(id).await)
                .map_err(|e| BackendError::docker(format!("removing network {id}"), e))?;
        }
        Ok(())
    }
}

/// A Docker socket of the job's own (see [`proxy`]), labelling what is created through it
/// with the job's labels ([`JobSpec::object_labels`]); `None` without a local daemon socket
/// or where one cannot be served.
pub(crate) fn start_job_proxy(job: &JobSpec) -> Option<std::sync::Arc<SocketProxy>> {
    let daemon = local_daemon_socket()?;
    // Short, as socket paths are limited to 108 bytes; readable by kiln's user only.
    let path = std::env::temp_dir().join(format!(
        "kiln-docker-{}-{}.sock",
        std::process::id(),
        &super::tracking::random_hex()[..16]
    ));
    SocketProxy::start(path, daemon, job.object_labels())
        .ok()
        .map(std::sync::Arc::new)
}

/// A filter matching objects that carry every one of `labels` (Docker ANDs label filters).
fn label_filter(labels: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    )])
}

/// A 404 means the object is already gone, which is what removal wants; a 409 "removal
/// already in progress" will end the same way.
fn ignore_gone(result: Result<(), ApiError>) -> Result<(), ApiError> {
    match result {
        Err(ApiError::DockerResponseServerError {
            status_code,
            message,
        }) if status_code == 404 || (status_code == 409 && message.contains("in progress")) => {
            Ok(())
        }
        other => other,
    }
}

#[async_trait]
impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn prepare(
        &self,
        job: &JobSpec,
        cancel: &CancellationToken,
    ) -> Result<JobEnv, BackendError> {
        // Cancellation is checked between Docker calls, never by dropping one in flight: a
        // dropped create still completes in the daemon, after the sweep below has run.
        let result = setup::prepare_job(self, job, cancel).await;
        if result.is_err() {
            // Best effort: the setup error is what the user needs to see, and anything this
            // misses is still labelled for a later cleanup.
            let _ = self.remove_job_objects(&job.job_key).await;
        }
        result
    }

    async fn exec(
        &self,
        env: &JobEnv,
        spec: &ExecSpec,
        logs: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<ExecOutcome, BackendError> {
        let Handle::Docker(handle) = &env.handle else {
            return Err(BackendError::InvalidSpec(
                "the Docker backend was given a job it did not prepare".into(),
            ));
        };
        exec::run(self, handle, &env.workspace_path, spec, logs, cancel).await
    }

    async fn cleanup(&self, env: &JobEnv) -> Result<(), BackendError> {
        let known = match &env.handle {
            Handle::Docker(handle) => {
                let mut ids = handle.service_ids.clone();
                ids.push(handle.container_id.clone());
                Some((ids, handle.network_id.iter().cloned().collect::<Vec<_>>()))
            }
            _ => None,
        };
        // A prepared job's handle knows the objects kiln created under its key (prepare sweeps
        // up itself when it fails); other containers may carry the key too (one a step
        // started through the socket with the job's label), so the label is looked up while
        // the known ones are removed. A job without a handle is swept by its label alone.
        match known {
            Some((containers, network)) => {
                let (removed, labelled) = tokio::join!(
                    self.remove_containers(&containers),
                    self.labelled_containers(&env.job_key)
                );
                let others: Vec<String> = labelled
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|id| !containers.contains(id))
                    .collect();
                let others_removed = self.remove_containers(&others).await;
                let network_removed = self.remove_networks(&network).await;
                // Networks a step created through the job's socket carry its label too.
                let created = env.docker_proxy.as_ref().is_some_and(|p| p.created() > 0);
                let swept = match created {
                    true => self.remove_job_objects(&env.job_key).await,
                    false => Ok(()),
                };
                match removed.and(others_removed).and(network_removed).and(swept) {
                    Ok(()) => Ok(()),
                    // Something was in the way: the sweep gets a second chance at it.
                    Err(error) => self
                        .remove_job_objects(&env.job_key)
                        .await
                        .map_err(|_| error),
                }
            }
            None => self.remove_job_objects(&env.job_key).await,
        }
    }
}
