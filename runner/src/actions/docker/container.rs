//! One Docker action run as GitHub's runner does it (`docker run --rm ... IMAGE ARGS`): the
//! action's own entrypoint is the container's main process, so images without a shell or
//! `tail` (distroless, `FROM scratch`) work. The container is created, attached to (before it
//! starts, so no line is lost), started, waited for, and always removed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::errors::Error as ApiError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount as ApiMount, MountType};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::backend::{BackendError, DockerOutputLines, ExecOutcome, ExecSpec, LogSink, Mount};
use crate::executor::step::ProcessLauncher;

/// Where GitHub's runner mounts the job's folders for a Docker action; actions written for
/// GitHub use these paths directly, and the `GITHUB_*` variables point there.
pub(super) const GITHUB_WORKSPACE: &str = "/github/workspace";
const GITHUB_FILE_COMMANDS: &str = "/github/file_commands";
const GITHUB_HOME: &str = "/github/home";
const GITHUB_WORKFLOW: &str = "/github/workflow";

/// A stopped container's process gets this long between SIGTERM and SIGKILL.
const STOP_GRACE_SECS: i32 = 1;
/// Output a stopped container still flushes is read for at most this long.
const DRAIN_AFTER_STOP: Duration = Duration::from_secs(3);

/// The job's folders on the host that the action sees under `/github/*`.
pub(super) struct GithubDirs {
    pub workspace: PathBuf,
    pub file_commands: PathBuf,
    pub home: PathBuf,
    pub workflow: PathBuf,
}

impl GithubDirs {
    /// Host folder -> container path; environment values under a host folder are rewritten
    /// to the container path, as GitHub's runner translates them.
    fn translations(&self) -> [(&Path, &'static str); 4] {
        [
            (&self.workspace, GITHUB_WORKSPACE),
            (&self.file_commands, GITHUB_FILE_COMMANDS),
            (&self.home, GITHUB_HOME),
            (&self.workflow, GITHUB_WORKFLOW),
        ]
    }
}

/// Everything about the action's container except the process environment, which the
/// executor computes per step and hands to [`ProcessLauncher::launch`].
pub(super) struct ActionContainer {
    pub docker: Docker,
    pub name: String,
    pub image: String,
    /// Entrypoint and arguments, resolved against the image's defaults.
    pub argv: Vec<String>,
    /// The job's own mounts (at the job's paths), to which the `/github/*` ones are added.
    pub job_mounts: Vec<Mount>,
    pub github: GithubDirs,
    /// The job's network: services are reachable by name.
    pub network: Option<String>,
    pub labels: HashMap<String, String>,
    /// The job's own Docker socket, when it has one.
    pub docker_socket: Option<PathBuf>,
}

impl ActionContainer {
    fn mounts(&self) -> Vec<ApiMount> {
        let bind = |source: &Path, target: &str, read_only: bool| ApiMount {
            typ: Some(MountType::BIND),
            source: Some(source.to_string_lossy().into_owned()),
            target: Some(target.to_owned()),
            read_only: Some(read_only),
            ..Default::default()
        };
        let mut mounts: Vec<ApiMount> = self
            .job_mounts
            .iter()
            .map(|m| bind(&m.host_path, &m.job_path, m.read_only))
            .collect();
        for (host, target) in self.github.translations() {
            mounts.push(bind(host, target, false));
        }
        // Actions that run Docker themselves expect the daemon's socket, as on GitHub: the
        // job's own, through which what they create carries the job's label.
        if let Some(socket) = self.docker_socket.clone().or_else(local_docker_socket) {
            mounts.push(bind(&socket, "/var/run/docker.sock", false));
        }
        mounts
    }

    /// The step's environment as the container sees it: paths under the job's folders point
    /// at their `/github/*` mounts, and `HOME` is `/github/home`.
    fn environment(&self, env: &[(String, String)]) -> Vec<String> {
        let translations = self.github.translations();
        let mut out: Vec<String> = env
            .iter()
            .filter(|(name, _)| name != "HOME")
            .map(|(name, value)| format!("{name}={}", translate(&translations, value)))
            .collect();
        out.push(format!("HOME={GITHUB_HOME}"));
        out
    }

    fn body(&self, spec: &ExecSpec) -> ContainerCreateBody {
        let workdir = if spec.workdir.is_empty() {
            GITHUB_WORKSPACE.to_owned()
        } else {
            spec.workdir.clone()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            entrypoint: Some(self.argv[..1].to_vec()),
            cmd: Some(self.argv[1..].to_vec()),
            env: Some(self.environment(&spec.env)),
            working_dir: Some(workdir),
            labels: Some(self.labels.clone()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(HostConfig {
                mounts: Some(self.mounts()),
                network_mode: self.network.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn create(&self, spec: &ExecSpec) -> Result<String, BackendError> {
        let options = CreateContainerOptionsBuilder::new()
            .name(&self.name)
            .build();
        self.docker
            .create_container(Some(options), self.body(spec))
            .await
            .map(|created| created.id)
            .map_err(|e| {
                BackendError::docker(format!("creating the action container {}", self.name), e)
            })
    }

    /// Attaches, starts and follows the container until its process ends, is cancelled or
    /// times out (then the container is stopped).
    async fn follow(
        &self,
        id: &str,
        spec: &ExecSpec,
        logs: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<ExecOutcome, BackendError> {
        let attach = AttachContainerOptionsBuilder::new()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut output = self
            .docker
            .attach_container(id, Some(attach))
            .await
            .map_err(|e| BackendError::docker("attaching to the action container", e))?
            .output;
        let deadline = spec.timeout.map(|t| Instant::now() + t);
        if cancel.is_cancelled() {
            return Ok(ExecOutcome::Cancelled);
        }
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| BackendError::Spawn {
                program: self.argv[0].clone(),
                source: std::io::Error::other(daemon_message(e)),
            })?;
        let mut lines = DockerOutputLines::new();
        let outcome = loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break ExecOutcome::Cancelled,
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    break ExecOutcome::TimedOut
                }
                chunk = output.next() => match chunk {
                    Some(Ok(chunk)) => lines.deliver(chunk, logs),
                    Some(Err(e)) => {
                        lines.finish(logs);
                        return Err(BackendError::docker("reading the action container's output", e));
                    }
                    None => {
                        lines.finish(logs);
                        return self.exit_code(id).await.map(ExecOutcome::Exited);
                    }
                }
            }
        };
        let stop = StopContainerOptionsBuilder::new()
            .t(STOP_GRACE_SECS)
            .build();
        // The container is removed by force afterwards, so a failed stop changes nothing.
        let _ = self.docker.stop_container(id, Some(stop)).await;
        lines
            .drain(&mut output, logs, Instant::now() + DRAIN_AFTER_STOP)
            .await;
        Ok(outcome)
    }

    async fn exit_code(&self, id: &str) -> Result<i32, BackendError> {
        let options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let mut wait = self.docker.wait_container(id, Some(options));
        let code = match wait.next().await {
            Some(Ok(response)) => response.status_code,
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(ApiError::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => {
                return Err(BackendError::docker(
                    "reading the action container's exit code",
                    e,
                ))
            }
            None => {
                return Err(BackendError::InvalidSpec(
                    "the Docker daemon gave no exit code for the action container".into(),
                ))
            }
        };
        Ok(i32::try_from(code).unwrap_or(-1))
    }

    async fn remove(&self, id: &str) -> Result<(), BackendError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(ApiError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(BackendError::docker(
                format!("removing the action container {}", self.name),
                e,
            )),
        }
    }
}

#[async_trait::async_trait]
impl ProcessLauncher for ActionContainer {
    async fn launch(
        &self,
        spec: &ExecSpec,
        logs: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<ExecOutcome, BackendError> {
        if self.argv.is_empty() {
            return Err(BackendError::InvalidSpec("empty command line".into()));
        }
        if cancel.is_cancelled() {
            return Ok(ExecOutcome::Cancelled);
        }
        let id = self.create(spec).await?;
        // Removal must happen whatever `follow` returned; its error wins over a removal error.
        let outcome = self.follow(&id, spec, logs, cancel).await;
        let removed = self.remove(&id).await;
        let outcome = outcome?;
        removed.map(|()| outcome)
    }
}

/// `value` with a leading host folder replaced by its container path.
fn translate(translations: &[(&Path, &'static str)], value: &str) -> String {
    for (host, target) in translations {
        let host = host.to_string_lossy();
        if let Some(rest) = value.strip_prefix(host.as_ref()) {
            if rest.is_empty() || rest.starts_with('/') {
                return format!("{target}{rest}");
            }
        }
    }
    value.to_owned()
}

/// The daemon's socket when it is a local Unix socket that exists.
fn local_docker_socket() -> Option<PathBuf> {
    let socket = match std::env::var("DOCKER_HOST") {
        Ok(host) => PathBuf::from(host.strip_prefix("unix://")?),
        Err(_) => PathBuf::from("/var/run/docker.sock"),
    };
    socket.exists().then_some(socket)
}

/// The daemon's own words for a failed start (for example a missing entrypoint binary).
fn daemon_message(error: ApiError) -> String {
    match error {
        ApiError::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_under_the_job_folders_point_at_the_github_mounts() {
        let dirs = GithubDirs {
            workspace: PathBuf::from("/run/job/work/repo"),
            file_commands: PathBuf::from("/run/job/temp/_runner_file_commands"),
            home: PathBuf::from("/run/job/temp/_github_home"),
            workflow: PathBuf::from("/run/job/temp/_github_workflow"),
        };
        let translations = dirs.translations();
        let cases = [
            ("/run/job/work/repo", "/github/workspace"),
            ("/run/job/work/repo/sub/dir", "/github/workspace/sub/dir"),
            ("/run/job/work/repository", "/run/job/work/repository"),
            (
                "/run/job/temp/_runner_file_commands/set_output_3",
                "/github/file_commands/set_output_3",
            ),
            ("/run/job/temp", "/run/job/temp"),
            ("plain value", "plain value"),
        ];
        for (value, expected) in cases {
            assert_eq!(translate(&translations, value), expected, "{value}");
        }
    }
}
