//! Runs steps as child processes of kiln, directly in the job's workspace.
//!
//! Processes a step detaches from its session (`setsid`, daemons) are still the job's: each
//! job's processes are tracked (a cgroup per job, or the `RUNNER_TRACKING_ID` environment
//! marker, see [`super::tracking`]) and ended at the job's end.
//!
//! Each exec is one posix_spawn (see [`super::spawn`]): no shell of ours, no helper process,
//! no copy of kiln's memory. The child leads its own
//! session (setsid), hence its own process group, so a timeout or cancellation reaches
//! everything it started (SIGTERM, then SIGKILL after a grace period), cleanup can find
//! processes a step left running in the background, and a step that opens the terminal gets
//! an error instead of being stopped by SIGTTIN.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::proctree::start_time;
use super::spawn::{spawn_session, SessionChild};
use super::tracking::{JobTracking, Tracking};
use super::{
    Backend, BackendError, ExecOutcome, ExecSpec, Handle, JobEnv, JobSpec, LineSplitter, LogSink,
    Mount, OutputStream,
};

/// After the main process exits, output still arriving from processes it left in the
/// background is read until the pipes are quiet this long...
const DRAIN_IDLE: Duration = Duration::from_millis(100);
/// ...but never longer than this, so a chatty background server cannot hold the step open.
const DRAIN_MAX: Duration = Duration::from_secs(1);
/// How often a terminating process group is checked for survivors.
const GROUP_POLL: Duration = Duration::from_millis(20);

/// Variables copied by [`host_base_env`]; `LC_*` variables are copied too.
const BASE_ENV_NAMES: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR",
];

/// The host's basic environment (PATH, HOME, USER, locale, ...), for callers that want host
/// jobs to see a usable environment. The host backend itself inherits nothing.
pub fn host_base_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(name, _)| BASE_ENV_NAMES.contains(&name.as_str()) || name.starts_with("LC_"))
        .collect()
}

/// The host backend. Cheap to clone and share between jobs.
#[derive(Debug, Clone)]
pub struct HostBackend {
    kill_grace: Duration,
    tracking: Tracking,
}

impl Default for HostBackend {
    fn default() -> Self {
        HostBackend {
            kill_grace: Duration::from_secs(2),
            tracking: Tracking::Auto,
        }
    }
}

impl HostBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a process group gets between SIGTERM and SIGKILL on timeout or cancellation.
    pub fn with_kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// How the processes a job leaves behind are found at its end (default
    /// [`Tracking::Auto`]: a cgroup per job where the machine allows it).
    pub fn with_tracking(mut self, tracking: Tracking) -> Self {
        self.tracking = tracking;
        self
    }
}

/// Process groups started for one job, so cleanup can end what steps left behind, and the
/// tracking of the processes that left those groups.
#[derive(Debug)]
pub(crate) struct HostProcesses {
    /// Group id (the leader's pid) and the leader's start time.
    groups: Mutex<Vec<(i32, Option<u64>)>>,
    tracking: JobTracking,
}

impl HostProcesses {
    fn new(tracking: Tracking) -> HostProcesses {
        HostProcesses {
            groups: Mutex::default(),
            tracking: JobTracking::start(tracking),
        }
    }

    fn remember(&self, pgid: i32) {
        if let Ok(mut groups) = self.groups.lock() {
            groups.push((pgid, start_time(pgid)));
        }
    }

    fn kill_all(&self) {
        let groups = match self.groups.lock() {
            Ok(mut groups) => std::mem::take(&mut *groups),
            Err(_) => return,
        };
        for (pgid, leader_started) in groups {
            // The kernel keeps a pid number reserved while a group uses it as its id, so a
            // group with members is still ours, unless its leader's pid now belongs to a new
            // process (pid_max can be as low as 32768 and wraps): then our group died and the
            // number names someone else's.
            let reused = start_time(pgid).is_some_and(|now| Some(now) != leader_started);
            if !reused {
                // ESRCH (group already gone) is the common, expected case.
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
        }
    }
}

#[async_trait]
impl Backend for HostBackend {
    fn name(&self) -> &'static str {
        "host"
    }

    async fn prepare(
        &self,
        job: &JobSpec,
        _cancel: &CancellationToken,
    ) -> Result<JobEnv, BackendError> {
        if job.container.is_some() {
            return Err(BackendError::NeedsDocker {
                feature: "`container:`",
            });
        }
        if !job.services.is_empty() {
            return Err(BackendError::NeedsDocker {
                feature: "`services:`",
            });
        }
        if !job.workspace.is_dir() {
            return Err(BackendError::WorkdirMissing {
                path: job.workspace.clone(),
            });
        }
        let mounts = job
            .extra_mounts
            .iter()
            .map(|mount| Mount {
                job_path: mount.host_path.to_string_lossy().into_owned(),
                ..mount.clone()
            })
            .collect();
        Ok(JobEnv {
            job_key: job.job_key.clone(),
            workspace_path: job.workspace.to_string_lossy().into_owned(),
            mounts,
            services: Vec::new(),
            network: None,
            container_id: None,
            docker_proxy: super::docker::start_job_proxy(job),
            labels: job.object_labels(),
            handle: Handle::Host {
                workspace: job.workspace.clone(),
                processes: Arc::new(HostProcesses::new(self.tracking)),
            },
        })
    }

    async fn exec(
        &self,
        env: &JobEnv,
        spec: &ExecSpec,
        logs: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<ExecOutcome, BackendError> {
        let Handle::Host {
            workspace,
            processes,
        } = &env.handle
        else {
            return Err(BackendError::InvalidSpec(
                "the host backend was given a job it did not prepare".into(),
            ));
        };
        let Some(program) = spec.argv.first() else {
            return Err(BackendError::InvalidSpec("empty command line".into()));
        };
        let workdir = resolve_workdir(workspace, &spec.workdir);
        // The marker comes last, so the step's own env cannot take its processes out of the job.
        let mut variables = spec.env.clone();
        variables.push(processes.tracking.variable());
        // The step's Docker commands go through the job's socket, unless it chose a daemon.
        if let Some(socket) = env.docker_socket() {
            if !variables.iter().any(|(name, _)| name == "DOCKER_HOST") {
                variables.push((
                    "DOCKER_HOST".to_owned(),
                    format!("unix://{}", socket.display()),
                ));
            }
        }
        let adopt = |pid| processes.tracking.adopt(pid);
        let mut child =
            spawn_session(&spec.argv, &variables, &workdir, adopt).map_err(|source| {
                if workdir.is_dir() {
                    BackendError::Spawn {
                        program: program.clone(),
                        source,
                    }
                } else {
                    BackendError::WorkdirMissing { path: workdir }
                }
            })?;
        let pgid = child.pid();
        processes.remember(pgid);
        let mut guard = GroupGuard { pgid, armed: true };
        let pump = OutputPump::new(child.stdout.take(), child.stderr.take());
        let outcome = supervise(
            child,
            pump,
            pgid,
            spec.timeout,
            self.kill_grace,
            logs,
            cancel,
        )
        .await
        .map_err(|source| BackendError::Io {
            action: format!("waiting for `{program}`"),
            source,
        });
        guard.armed = false;
        outcome
    }

    async fn cleanup(&self, env: &JobEnv) -> Result<(), BackendError> {
        let Handle::Host { processes, .. } = &env.handle else {
            return Ok(());
        };
        processes.kill_all();
        // Reading /proc and waiting for a cgroup to empty block: off the async threads.
        let tracked = processes.clone();
        let left = tokio::task::spawn_blocking(move || tracked.tracking.end())
            .await
            .unwrap_or_default();
        // Containers and networks a step created through the job's socket carry its label.
        if env.docker_proxy.as_ref().is_some_and(|p| p.created() > 0) {
            super::DockerBackend::connect(super::DockerConfig::default())
                .await?
                .remove_job_objects(&env.job_key)
                .await?;
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(BackendError::Io {
                action: format!("ending the processes the job left running ({left:?})"),
                source: std::io::Error::other("they survived SIGKILL"),
            })
        }
    }
}

fn resolve_workdir(workspace: &Path, workdir: &str) -> PathBuf {
    if workdir.is_empty() {
        workspace.to_path_buf()
    } else {
        // `join` keeps an absolute `workdir` as it is.
        workspace.join(workdir)
    }
}

/// Kills the process group if the exec future is dropped before the process ended (the
/// caller gave up on the step), so nothing outlives an abandoned exec.
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        }
    }
}

/// Reads both output pipes and turns them into lines.
struct OutputPump {
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    stdout_lines: LineSplitter,
    stderr_lines: LineSplitter,
    stdout_buf: Vec<u8>,
    stderr_buf: Vec<u8>,
}

impl OutputPump {
    fn new(stdout: Option<pipe::Receiver>, stderr: Option<pipe::Receiver>) -> Self {
        OutputPump {
            stdout,
            stderr,
            stdout_lines: LineSplitter::new(OutputStream::Stdout),
            stderr_lines: LineSplitter::new(OutputStream::Stderr),
            stdout_buf: vec![0; 16 * 1024],
            stderr_buf: vec![0; 16 * 1024],
        }
    }

    fn is_open(&self) -> bool {
        self.stdout.is_some() || self.stderr.is_some()
    }

    /// Waits for the next chunk on either pipe and delivers its complete lines. Never
    /// resolves once both pipes are closed. Cancel-safe: no data is lost if dropped.
    async fn pump(&mut self, logs: &mut dyn LogSink) {
        let OutputPump {
            stdout,
            stderr,
            stdout_lines,
            stderr_lines,
            stdout_buf,
            stderr_buf,
        } = self;
        tokio::select! {
            read = async { stdout.as_mut()?.read(stdout_buf).await.ok() }, if stdout.is_some() => {
                match read {
                    Some(n) if n > 0 => stdout_lines.push(&stdout_buf[..n], logs),
                    _ => *stdout = None,
                }
            }
            read = async { stderr.as_mut()?.read(stderr_buf).await.ok() }, if stderr.is_some() => {
                match read {
                    Some(n) if n > 0 => stderr_lines.push(&stderr_buf[..n], logs),
                    _ => *stderr = None,
                }
            }
            () = std::future::pending::<()>(), if stdout.is_none() && stderr.is_none() => {}
        }
    }

    fn finish(&mut self, logs: &mut dyn LogSink) {
        self.stdout_lines.finish(logs);
        self.stderr_lines.finish(logs);
    }
}

enum Stop {
    TimedOut,
    Cancelled,
}

/// Streams output until the child exits (then drains briefly) or until the timeout or
/// cancellation, in which case the whole process group is terminated.
async fn supervise(
    mut child: SessionChild,
    mut pump: OutputPump,
    pgid: i32,
    timeout: Option<Duration>,
    kill_grace: Duration,
    logs: &mut dyn LogSink,
    cancel: &CancellationToken,
) -> std::io::Result<ExecOutcome> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let stop = loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break Stop::Cancelled,
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                break Stop::TimedOut
            }
            code = child.wait() => {
                let code = code?;
                drain_after_exit(&mut pump, logs).await;
                return Ok(ExecOutcome::Exited(code));
            }
            () = pump.pump(logs) => {}
        }
    };
    terminate_group(&mut child, &mut pump, pgid, kill_grace, logs).await?;
    pump.finish(logs);
    Ok(match stop {
        Stop::TimedOut => ExecOutcome::TimedOut,
        Stop::Cancelled => ExecOutcome::Cancelled,
    })
}

async fn drain_after_exit(pump: &mut OutputPump, logs: &mut dyn LogSink) {
    let hard_stop = Instant::now() + DRAIN_MAX;
    while pump.is_open() {
        tokio::select! {
            () = pump.pump(logs) => {}
            () = sleep(DRAIN_IDLE) => break,
            () = sleep_until(hard_stop) => break,
        }
    }
    pump.finish(logs);
}

/// SIGTERM to the group; SIGKILL to whatever is still in it after the grace period.
async fn terminate_group(
    child: &mut SessionChild,
    pump: &mut OutputPump,
    pgid: i32,
    kill_grace: Duration,
    logs: &mut dyn LogSink,
) -> std::io::Result<()> {
    let group = Pid::from_raw(pgid);
    let _ = killpg(group, Signal::SIGTERM);
    let grace_end = Instant::now() + kill_grace;
    let mut reaped = false;
    loop {
        tokio::select! {
            status = child.wait(), if !reaped => { status?; reaped = true; }
            () = sleep(GROUP_POLL) => {}
            () = pump.pump(logs) => {}
        }
        // A zombie still counts as a group member, so only a reaped leader lets us see an empty group.
        if reaped && killpg(group, None).is_err() {
            return Ok(());
        }
        if Instant::now() >= grace_end {
            break;
        }
    }
    let _ = killpg(group, Signal::SIGKILL);
    if !reaped {
        child.wait().await?;
    }
    Ok(())
}
