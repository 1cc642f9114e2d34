//! One step as a `docker exec` in the job container.

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::StartExecResults;
use bollard::models::ExecConfig;
use futures_util::StreamExt;
use nix::sys::signal::Signal;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::{DockerBackend, DockerHandle};
use crate::backend::proctree::{living, process_tree, signal_all};
use crate::backend::{BackendError, ExecOutcome, ExecSpec, LineSplitter, LogSink, OutputStream};

/// Output a killed process still flushes is read for at most this long.
const DRAIN_AFTER_KILL: Duration = Duration::from_millis(500);
/// The exec's output can end a moment before the daemon records its exit code.
const EXIT_CODE_WAIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);
/// How often a terminating process tree is checked.
const KILL_POLL: Duration = Duration::from_millis(20);

/// Docker's multiplexed output (an exec's, or a container's attach stream) split into lines
/// per stream.
pub(crate) struct DockerOutputLines {
    stdout: LineSplitter,
    stderr: LineSplitter,
}

impl DockerOutputLines {
    pub(crate) fn new() -> Self {
        DockerOutputLines {
            stdout: LineSplitter::new(OutputStream::Stdout),
            stderr: LineSplitter::new(OutputStream::Stderr),
        }
    }

    pub(crate) fn deliver(&mut self, chunk: LogOutput, logs: &mut dyn LogSink) {
        match chunk {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                self.stdout.push(&message, logs)
            }
            LogOutput::StdErr { message } => self.stderr.push(&message, logs),
            LogOutput::StdIn { .. } => {}
        }
    }

    pub(crate) fn finish(&mut self, logs: &mut dyn LogSink) {
        self.stdout.finish(logs);
        self.stderr.finish(logs);
    }

    /// After the process was stopped: what it still wrote, read until the stream ends or
    /// `deadline` (a stream kept open by a stray child must not hold the step), then the
    /// last partial lines.
    pub(crate) async fn drain<S>(
        &mut self,
        output: &mut S,
        logs: &mut dyn LogSink,
        deadline: Instant,
    ) where
        S: futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
    {
        loop {
            tokio::select! {
                chunk = output.next() => match chunk {
                    Some(Ok(chunk)) => self.deliver(chunk, logs),
                    _ => break,
                },
                () = sleep_until(deadline) => break,
            }
        }
        self.finish(logs);
    }
}

fn resolve_workdir(workspace: &str, workdir: &str) -> String {
    if workdir.is_empty() {
        workspace.to_owned()
    } else if workdir.starts_with('/') {
        workdir.to_owned()
    } else {
        format!("{}/{workdir}", workspace.trim_end_matches('/'))
    }
}

pub(super) async fn run(
    backend: &DockerBackend,
    handle: &DockerHandle,
    workspace: &str,
    spec: &ExecSpec,
    logs: &mut dyn LogSink,
    cancel: &CancellationToken,
) -> Result<ExecOutcome, BackendError> {
    if spec.argv.is_empty() {
        return Err(BackendError::InvalidSpec("empty command line".into()));
    }
    let docker = &backend.docker;
    let config = ExecConfig {
        cmd: Some(spec.argv.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: Some(resolve_workdir(workspace, &spec.workdir)),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let exec_id = docker
        .create_exec(&handle.container_id, config)
        .await
        .map_err(|e| BackendError::docker("creating an exec in the job container", e))?
        .id;
    let started = docker
        .start_exec(&exec_id, None)
        .await
        .map_err(|e| BackendError::docker("starting an exec in the job container", e))?;
    let StartExecResults::Attached { mut output, .. } = started else {
        return Err(BackendError::InvalidSpec(
            "the Docker daemon started the exec detached, so its output cannot be read".into(),
        ));
    };
    let mut lines = DockerOutputLines::new();
    let deadline = spec.timeout.map(|t| Instant::now() + t);
    // The runtime's own "could not start" message arrives as the first output; it is held
    // back until the exit code says whether it was that (then it becomes an error) or output.
    let mut first_chunk = true;
    let mut held: Option<LogOutput> = None;
    let outcome = loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break ExecOutcome::Cancelled,
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                break ExecOutcome::TimedOut
            }
            chunk = output.next() => match chunk {
                Some(Ok(chunk)) if first_chunk && is_runtime_error(&chunk) => held = Some(chunk),
                Some(Ok(chunk)) => {
                    if let Some(held) = held.take() {
                        lines.deliver(held, logs);
                    }
                    lines.deliver(chunk, logs);
                }
                Some(Err(e)) => {
                    lines.finish(logs);
                    return Err(BackendError::docker("reading exec output", e));
                }
                None => {
                    let code = exit_code(backend, &exec_id).await?;
                    if let Some(held) = held.take() {
                        if code == RUNTIME_FAILURE_CODE {
                            return Err(start_failure(spec, &held.into_bytes()));
                        }
                        lines.deliver(held, logs);
                    }
                    lines.finish(logs);
                    return Ok(ExecOutcome::Exited(code));
                }
            }
        }
        first_chunk = false;
    };
    if let Some(held) = held.take() {
        lines.deliver(held, logs);
    }
    kill_exec(backend, handle, &exec_id).await?;
    lines
        .drain(&mut output, logs, Instant::now() + DRAIN_AFTER_KILL)
        .await;
    Ok(outcome)
}

/// Docker's exit code when the runtime could not start the process at all.
const RUNTIME_FAILURE_CODE: i32 = 126;
const RUNTIME_FAILURE_PREFIX: &[u8] = b"OCI runtime exec failed: exec failed:";

fn is_runtime_error(chunk: &LogOutput) -> bool {
    match chunk {
        LogOutput::StdOut { message }
        | LogOutput::StdErr { message }
        | LogOutput::Console { message } => message.starts_with(RUNTIME_FAILURE_PREFIX),
        LogOutput::StdIn { .. } => false,
    }
}

/// Turns the runtime's message into the same errors the host backend gives.
fn start_failure(spec: &ExecSpec, message: &[u8]) -> BackendError {
    let message = String::from_utf8_lossy(message).trim().to_owned();
    if let Some(dir) = message
        .split_once("chdir to cwd (\"")
        .and_then(|(_, rest)| rest.split_once("\")"))
        .map(|(dir, _)| dir)
    {
        return BackendError::WorkdirMissing { path: dir.into() };
    }
    BackendError::Spawn {
        program: spec.argv.first().cloned().unwrap_or_default(),
        source: std::io::Error::other(message),
    }
}

async fn exit_code(backend: &DockerBackend, exec_id: &str) -> Result<i32, BackendError> {
    let give_up = Instant::now() + EXIT_CODE_WAIT;
    loop {
        let info = backend
            .docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| BackendError::docker("reading the exit code of an exec", e))?;
        match (info.running, info.exit_code) {
            (Some(false), Some(code)) => return Ok(i32::try_from(code).unwrap_or(-1)),
            _ if Instant::now() >= give_up => {
                return Err(BackendError::InvalidSpec(format!(
                "the exec's output ended but Docker reports no exit code after {EXIT_CODE_WAIT:?}"
            )))
            }
            _ => sleep(POLL).await,
        }
    }
}

/// Ends an exec'd process and everything it started: SIGTERM to the tree (found through the
/// host's /proc), SIGKILL to survivors after the grace period. When the process is not visible
/// from here (a remote daemon), kills every process in the container except its keep-alive.
async fn kill_exec(
    backend: &DockerBackend,
    handle: &DockerHandle,
    exec_id: &str,
) -> Result<(), BackendError> {
    let info = backend
        .docker
        .inspect_exec(exec_id)
        .await
        .map_err(|e| BackendError::docker("inspecting an exec to stop it", e))?;
    if info.running != Some(true) {
        return Ok(());
    }
    let root = info
        .pid
        .and_then(|pid| i32::try_from(pid).ok())
        .unwrap_or(0);
    let tree = if root > 0 {
        process_tree(root)
    } else {
        Vec::new()
    };
    if tree.is_empty() {
        return kill_everything_in_container(backend, handle).await;
    }
    signal_all(&tree, Signal::SIGTERM);
    let grace_end = Instant::now() + backend.config.kill_grace;
    while Instant::now() < grace_end {
        sleep(KILL_POLL).await;
        if living(&tree).is_empty() {
            return Ok(());
        }
    }
    let mut survivors = living(&tree);
    survivors.extend(process_tree(root));
    signal_all(&survivors, Signal::SIGKILL);
    Ok(())
}

async fn kill_everything_in_container(
    backend: &DockerBackend,
    handle: &DockerHandle,
) -> Result<(), BackendError> {
    // `kill -9 -1` from inside the container's PID namespace reaches every process but PID 1
    // (the keep-alive) and the shell running it.
    let config = ExecConfig {
        cmd: Some(vec!["sh".into(), "-c".into(), "kill -9 -1".into()]),
        ..Default::default()
    };
    let exec = backend
        .docker
        .create_exec(&handle.container_id, config)
        .await
        .map_err(|e| BackendError::docker("creating an exec to stop a step", e))?;
    backend
        .docker
        .start_exec(&exec.id, None)
        .await
        .map_err(|e| BackendError::docker("stopping a step", e))?;
    Ok(())
}
