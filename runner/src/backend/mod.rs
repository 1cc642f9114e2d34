//! The layer every job runs on: one [`Backend`] trait, implemented by [`DockerBackend`]
//! (containers through the Docker Engine API) and [`HostBackend`] (child processes).
//!
//! Lifecycle of one job: [`Backend::prepare`] once, [`Backend::exec`] once per step (or per
//! hook), [`Backend::cleanup`] once at the end. `cleanup` is idempotent and is also correct on
//! [`JobEnv::unprepared`], so a caller whose `prepare` failed or was abandoned can still sweep up.
//!
//! Output is delivered line by line to a [`LogSink`] while the process runs; nothing is
//! buffered until the end.

mod deferred;
mod docker;
mod error;
mod host;
pub mod host_address;
mod lines;
mod names;
pub(crate) mod proctree;
mod spawn;
mod tracking;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub use deferred::DeferredCleanup;
pub(crate) use docker::{local_daemon_socket, DockerOutputLines};
pub use docker::{DockerBackend, DockerConfig, Removed, JOB_KEY_LABEL};
pub use error::BackendError;
pub use host::{host_base_env, HostBackend};
pub use lines::LineSplitter;
pub use names::sanitize_name;
pub use tracking::{cgroup_tracking_available, end_jobs_of_process, Tracking, TRACKING_VARIABLE};

/// Everything a backend needs to set up one job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobSpec {
    /// Unique per run + job + matrix leg. Container and network names are derived from it
    /// (sanitised, with a hash suffix when sanitising changed it), and it labels every
    /// container and network so leftovers can be found.
    pub job_key: String,
    /// The job container. `None` in host mode. In Docker mode the caller always passes one:
    /// the job's `container:` or, for a job without it, the platform image that `runs-on`
    /// maps to (for example `ubuntu-latest` -> `kiln-base:bookworm`).
    pub container: Option<ContainerSpec>,
    /// Service containers, started before the job container on the job's network.
    pub services: Vec<ServiceSpec>,
    /// Host directory holding the job's workspace, already prepared by the caller.
    pub workspace: PathBuf,
    /// Where the job sees the workspace inside its container. `None`: at the same absolute
    /// path as on the host, so paths the step executor writes mean the same on both sides.
    /// The host backend always uses the host path.
    pub workspace_job_path: Option<String>,
    /// Host directories the job also needs (runner temp, file-command dir, tool cache, actions).
    pub extra_mounts: Vec<Mount>,
    /// Put on every container and network of the job: those the backend creates, its Docker
    /// actions' containers, and what its steps create through the job's Docker socket (see
    /// [`JobEnv::labels`]). A registered runner adds its identity here, which is how it and
    /// its guard find what one of its instances left behind.
    pub labels: Vec<(String, String)>,
}

impl JobSpec {
    /// The labels of every object of the job: [`JobSpec::labels`] and [`JOB_KEY_LABEL`] =
    /// the job key (which no other label may replace: cleanup finds objects by it).
    pub(crate) fn object_labels(&self) -> Vec<(String, String)> {
        let mut labels: Vec<(String, String)> = self
            .labels
            .iter()
            .filter(|(name, _)| name != JOB_KEY_LABEL)
            .cloned()
            .collect();
        labels.push((JOB_KEY_LABEL.to_owned(), self.job_key.clone()));
        labels
    }
}

/// The job container (`jobs.<id>.container`), or the platform image standing in for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    pub image: String,
    pub env: Vec<(String, String)>,
    /// `docker run -p` syntax: `8080:80`, `80`, `127.0.0.1:8080:80/tcp`.
    pub ports: Vec<String>,
    /// `docker run -v` syntax: `/host:/path[:ro]`, `volume-name:/path`, or `/path` (anonymous).
    pub volumes: Vec<String>,
    /// A subset of `docker create` flags; see [`DockerBackend`] for the list.
    pub options: String,
    /// Registry credentials, used only when the backend is allowed to pull.
    pub credentials: Option<(String, String)>,
}

/// A service container (`jobs.<id>.services.<name>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The service's key in the workflow; also its network alias, so the job reaches it by name.
    pub name: String,
    pub container: ContainerSpec,
}

/// A host directory made visible to the job at `job_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    /// Where the job sees it. The host backend cannot remap paths, so there it equals the host path.
    pub job_path: String,
    pub read_only: bool,
}

/// What a prepared job looks like from the inside.
#[derive(Debug, Clone)]
pub struct JobEnv {
    pub job_key: String,
    /// The workspace as the job sees it: use it for `GITHUB_WORKSPACE` and default workdirs.
    pub workspace_path: String,
    /// The mounts as the job sees them.
    pub mounts: Vec<Mount>,
    /// Started services, in the order given.
    pub services: Vec<ServiceInfo>,
    /// The job's network (Docker): `job.container.network` in GitHub's `job` context.
    pub network: Option<String>,
    /// The job container's id (Docker): `job.container.id`.
    pub container_id: Option<String>,
    /// What every container and network of the job carries ([`JobSpec::object_labels`]).
    pub(crate) labels: Vec<(String, String)>,
    /// The job's own Docker socket (see `docker::proxy`), while the job is prepared.
    pub(crate) docker_proxy: Option<std::sync::Arc<docker::SocketProxy>>,
    pub(crate) handle: Handle,
}

/// A running service, for the `job.services` context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub name: String,
    pub container_id: String,
    /// Container port (`"5432"` or `"53/udp"`) -> host port it was published on.
    pub ports: BTreeMap<String, String>,
}

/// Backend-private state of a prepared job.
#[derive(Debug, Clone)]
pub(crate) enum Handle {
    /// `prepare` failed or never ran: cleanup sweeps by job key only.
    Unprepared,
    Host {
        workspace: PathBuf,
        processes: std::sync::Arc<host::HostProcesses>,
    },
    Docker(docker::DockerHandle),
}

impl JobEnv {
    /// An environment for a job whose `prepare` failed or was abandoned. Passing it to
    /// [`Backend::cleanup`] removes anything left under the job's key.
    pub fn unprepared(job: &JobSpec) -> JobEnv {
        JobEnv {
            job_key: job.job_key.clone(),
            workspace_path: String::new(),
            mounts: Vec::new(),
            services: Vec::new(),
            network: None,
            container_id: None,
            labels: job.object_labels(),
            docker_proxy: None,
            handle: Handle::Unprepared,
        }
    }

    /// The job's own Docker socket, through which everything a step creates carries the
    /// job's label: what its steps and actions should use as the daemon's socket.
    pub fn docker_socket(&self) -> Option<&std::path::Path> {
        self.docker_proxy.as_deref().map(docker::SocketProxy::path)
    }

    /// The labels every container and network of the job carries, for those created beside
    /// the backend (Docker actions' containers).
    pub fn labels(&self) -> std::collections::HashMap<String, String> {
        self.labels.iter().cloned().collect()
    }
}

/// One process to run inside a prepared job.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    /// Program and arguments, run directly: no shell is added.
    pub argv: Vec<String>,
    /// The environment of the process. On the host it is complete: nothing is inherited (see
    /// [`host_base_env`]). In a container these variables are laid over the container's own
    /// (image `ENV` and `container.env`), as `docker exec -e` does.
    pub env: Vec<(String, String)>,
    /// Working directory as the job sees it; relative paths and `""` resolve against the workspace.
    pub workdir: String,
    /// Kill the process (and, on the host, its whole process group) after this long.
    pub timeout: Option<Duration>,
}

/// How an exec ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecOutcome {
    /// The process exited with this code; a process killed by signal N reports 128 + N, as shells do.
    Exited(i32),
    /// [`ExecSpec::timeout`] elapsed and the process was killed.
    TimedOut,
    /// The cancellation token fired and the process was killed.
    Cancelled,
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Receives output lines as they are produced, without the line terminator.
pub trait LogSink: Send {
    /// A whole line, or the last piece of a line delivered in pieces.
    fn line(&mut self, stream: OutputStream, line: &str);

    /// A piece of a line longer than [`lines::MAX_LINE_BYTES`]; the line goes on in the next
    /// call for the same stream. By default each piece is a line of its own.
    fn piece(&mut self, stream: OutputStream, piece: &str) {
        self.line(stream, piece);
    }
}

impl LogSink for Vec<(OutputStream, String)> {
    fn line(&mut self, stream: OutputStream, line: &str) {
        self.push((stream, line.to_owned()));
    }
}

/// Forwards lines to another task; lines are dropped once the receiver is gone.
impl LogSink for tokio::sync::mpsc::UnboundedSender<(OutputStream, String)> {
    fn line(&mut self, stream: OutputStream, line: &str) {
        // A closed receiver means nobody wants the output any more; the process still runs to its end.
        let _ = self.send((stream, line.to_owned()));
    }
}

/// Where jobs run. Implementations must be usable from many jobs at once.
#[async_trait]
pub trait Backend: Send + Sync {
    /// `"docker"` or `"host"`, for messages.
    fn name(&self) -> &'static str;

    /// Sets the job up. On failure or cancellation everything created so far is removed
    /// before returning.
    async fn prepare(
        &self,
        job: &JobSpec,
        cancel: &CancellationToken,
    ) -> Result<JobEnv, BackendError>;

    /// Runs one process to its end, streaming its output to `logs`. A non-zero exit is
    /// `Ok(Exited(code))`; `Err` means the process could not be started
    /// ([`BackendError::Spawn`], [`BackendError::WorkdirMissing`]) or the backend failed.
    /// Dropping the future kills the process on the host; in a container the process runs on
    /// until `cleanup` removes the container, so prefer the cancellation token.
    async fn exec(
        &self,
        env: &JobEnv,
        spec: &ExecSpec,
        logs: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<ExecOutcome, BackendError>;

    /// Removes everything the job created. Idempotent; correct on [`JobEnv::unprepared`].
    async fn cleanup(&self, env: &JobEnv) -> Result<(), BackendError>;
}
