//! `kiln runner register` and `kiln runner start`: this machine as a registered runner of a
//! kiln scheduler. The agent (kiln-runner's `agent`) does the work; this file reads flags,
//! picks the executor as `kiln run` does, and prints what the agent reports.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use kiln_runner::agent::{
    default_config_dir, remove_objects_of_instance, AgentConfig, AgentEvent, AgentExit,
    Credentials, ExecOptions, Executor, Instance, JobOutcome, Registration, Stop,
    RUNNER_PROCESS_LABEL,
};
use kiln_runner::platform::{ExecutorKind, PlatformMap};
use kiln_workflow::Conclusion;
use tokio::signal::unix::{signal, SignalKind};

use crate::cmd::run::ExecutorFlag;
use crate::run::report::rfc3339;
use crate::run::setup::choose_executor;
use kiln_cache::units::parse_size;
use kiln_scheduler::request::values::parse_local_repositories;

/// Where `--token` may come from instead, keeping it out of the process list.
const TOKEN_VARIABLE: &str = "KILN_REGISTRATION_TOKEN";
/// Exit status after an interrupt that stopped running jobs, as shells report SIGINT.
const INTERRUPTED: u8 = 130;
/// The longest the guard spends removing a dead runner's containers (Docker may be absent,
/// or too slow to wait for).
const GUARD_DOCKER_LIMIT: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct RunnerArgs {
    #[command(subcommand)]
    pub command: RunnerCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum RunnerCommand {
    /// Register this machine with a kiln scheduler and keep its credentials.
    Register(RegisterArgs),
    /// Take jobs from the scheduler this runner is registered with, and run them.
    Start(StartArgs),
    /// Started by `start` beside itself: waits for that runner to end, however it ends
    /// (SIGKILL included), then ends every process its host jobs left running and removes
    /// the containers and networks its jobs left.
    #[command(hide = true)]
    Guard(GuardArgs),
}

#[derive(clap::Args, Debug)]
pub struct GuardArgs {
    /// The runner's process id.
    #[arg(long)]
    pub runner_pid: u32,
    /// The runner's start (PID-NONCE), the `dev.kiln.runner-process` label of its jobs'
    /// containers and networks.
    #[arg(long)]
    pub instance: Instance,
}

#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    /// The scheduler: http://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// The scheduler's registration token (default: $KILN_REGISTRATION_TOKEN).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// The labels jobs are matched on (`runs-on`), comma-separated.
    #[arg(long, value_name = "a,b", value_delimiter = ',', required = true)]
    pub labels: Vec<String>,
    /// The runner's name, unique per scheduler (default: this machine's host name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Where the credentials are kept (default: $XDG_CONFIG_HOME/kiln/runner or
    /// ~/.config/kiln/runner).
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// How many jobs this runner will run at once, shown by the scheduler.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub capacity: u32,
}

#[derive(clap::Args, Debug)]
pub struct StartArgs {
    /// The directory `kiln runner register` wrote the credentials to.
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// Where jobs, snapshots and git caches live (default: DIR/work of --config).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Most jobs running at once.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub capacity: u32,
    /// Where jobs run (default: docker when a daemon answers, else host).
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorFlag>,
    /// Map a runs-on label to an image, or to the host with `LABEL=-self-hosted` (repeatable).
    #[arg(short = 'P', long = "platform", value_name = "LABEL=IMAGE")]
    pub platforms: Vec<String>,
    /// Take one job, run it, report it and exit.
    #[arg(long)]
    pub once: bool,
    /// Directory of remote actions laid out as `owner/repo@ref/`.
    #[arg(long, value_name = "DIR")]
    pub action_cache: Option<PathBuf>,
    /// Never fetch remote actions; use only the action cache and local repositories.
    #[arg(long)]
    pub action_offline_mode: bool,
    /// Base URL remote actions are cloned from (`{base}/owner/repo`).
    #[arg(long, value_name = "URL", default_value = "https://github.com")]
    pub action_base_url: String,
    /// Use a local directory for a remote action (repeatable).
    #[arg(long = "local-repository", value_name = "OWNER/REPO@REF=PATH")]
    pub local_repositories: Vec<String>,
    /// Largest workspace snapshot this runner downloads (e.g. 2GiB).
    #[arg(long, value_name = "SIZE", default_value = "2GiB", value_parser = parse_size)]
    pub max_snapshot_size: u64,
    /// Downloaded snapshots kept for later jobs (least recently used go first).
    #[arg(long, value_name = "SIZE", default_value = "8GiB", value_parser = parse_size)]
    pub snapshot_cache_size: u64,
}

pub fn run(args: RunnerArgs) -> anyhow::Result<ExitCode> {
    if let RunnerCommand::Guard(args) = &args.command {
        return guard(args.runner_pid, &args.instance);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match args.command {
        RunnerCommand::Register(args) => runtime.block_on(register(args)),
        RunnerCommand::Start(args) => runtime.block_on(start(args)),
        RunnerCommand::Guard(_) => unreachable!("handled before the runtime starts"),
    }
}

/// Starts the guard of this runner: a process of its own (own process group, so a
/// terminal's Ctrl-C reaches only the runner) that holds the read end of a pipe whose write
/// end only this runner has. The pipe closes when the runner ends, even by SIGKILL, which no
/// signal handler sees; the guard then ends what the runner's jobs left behind (host
/// processes, and the containers and networks labelled with `instance`), as the runner does
/// itself when a job ends normally. Steps never inherit the write end (it is close-on-exec).
fn start_guard(
    instance: &Instance,
) -> anyhow::Result<(std::process::Child, std::process::ChildStdin)> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe()
        .context("cannot find the kiln executable for the runner's guard")?;
    let mut child = std::process::Command::new(exe)
        .args([
            "runner",
            "guard",
            "--runner-pid",
            &std::process::id().to_string(),
            "--instance",
            instance.as_str(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start the runner's guard process")?;
    let pipe = child
        .stdin
        .take()
        .context("the runner's guard has no pipe")?;
    Ok((child, pipe))
}

/// `kiln runner guard`: see [`start_guard`].
fn guard(runner_pid: u32, instance: &Instance) -> anyhow::Result<ExitCode> {
    use std::io::Read as _;
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        // SAFETY: ignoring a signal installs no handler code.
        unsafe {
            let _ = nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigIgn);
        }
    }
    // Nothing is ever written: the read returns when the runner's end of the pipe closes.
    let mut sink = [0u8; 64];
    while std::io::stdin().read(&mut sink).is_ok_and(|n| n > 0) {}
    let left = kiln_runner::backend::end_jobs_of_process(runner_pid);
    let mut ended = true;
    if !left.is_empty() {
        eprintln!("kiln runner guard: processes of the runner's jobs could not be ended: {left:?}");
        ended = false;
    }
    // Containers go after the host processes: a host step could otherwise start another.
    let removed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the guard's async runtime")?
        .block_on(remove_objects_of_instance(instance, GUARD_DOCKER_LIMIT));
    match removed {
        // No daemon is named on this machine, or the runner left nothing: nothing to say.
        Ok(None) => {}
        Ok(Some(removed)) if removed.is_empty() => {}
        Ok(Some(removed)) => eprintln!(
            "kiln runner guard: the runner (pid {runner_pid}) ended; removed the containers and networks its jobs left: {}",
            removed
                .containers
                .iter()
                .chain(&removed.networks)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(error) => {
            eprintln!(
                "kiln runner guard: the runner (pid {runner_pid}) ended; its jobs' containers (label {RUNNER_PROCESS_LABEL}={instance}) could not be removed: {error}; the runner's next start removes them"
            );
            ended = false;
        }
    }
    Ok(match ended {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(1),
    })
}

fn config_dir(flag: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    match flag {
        Some(dir) => Ok(dir.clone()),
        None => Ok(default_config_dir()?),
    }
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

async fn register(args: RegisterArgs) -> anyhow::Result<ExitCode> {
    let token = match args.token {
        Some(token) => token,
        None => std::env::var(TOKEN_VARIABLE).map_err(|_| {
            anyhow::anyhow!(
                "give the scheduler's registration token with --token or ${TOKEN_VARIABLE}"
            )
        })?,
    };
    let mut labels: Vec<String> = Vec::new();
    for label in args
        .labels
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
    {
        if !labels.iter().any(|l| l.eq_ignore_ascii_case(label)) {
            labels.push(label.to_owned());
        }
    }
    anyhow::ensure!(!labels.is_empty(), "--labels names no label");
    let name = match args.name.or_else(host_name) {
        Some(name) if !name.trim().is_empty() => name.trim().to_owned(),
        _ => anyhow::bail!("this machine has no host name: give the runner one with --name"),
    };
    let dir = config_dir(args.config.as_ref())?;
    let replaced = Credentials::load(&dir).ok();
    let credentials = kiln_runner::agent::register(&Registration {
        url: args.url,
        registration_token: token,
        name,
        labels,
        capacity: args.capacity,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
    .await?;
    let path = credentials.save(&dir)?;
    println!(
        "registered runner {} (id {}) with the scheduler at {}, labels {}",
        credentials.name,
        credentials.runner_id,
        credentials.url,
        credentials.labels.join(",")
    );
    if let Some(old) = replaced {
        println!(
            "replaced the credentials of runner {} (id {}) that were in {}",
            old.name,
            old.runner_id,
            dir.display()
        );
    }
    println!(
        "credentials written to {} (mode 0600); start it with `kiln runner start{}`",
        path.display(),
        match args.config {
            Some(dir) => format!(" --config {}", dir.display()),
            None => String::new(),
        }
    );
    Ok(ExitCode::SUCCESS)
}

async fn start(args: StartArgs) -> anyhow::Result<ExitCode> {
    let instance = Instance::of_this_process();
    let (mut guard, guard_pipe) = start_guard(&instance)?;
    let exit = run_agent(args, instance).await;
    // A runner that ends by itself has ended its jobs: the guard finds nothing and exits.
    drop(guard_pipe);
    let _ = tokio::task::spawn_blocking(move || guard.wait()).await;
    exit
}

async fn run_agent(args: StartArgs, instance: Instance) -> anyhow::Result<ExitCode> {
    let dir = config_dir(args.config.as_ref())?;
    let credentials = Credentials::load(&dir)?;
    let executor = choose_executor(args.executor).await?;
    say(&executor.describe());
    let (kind, executor) = match executor.docker {
        Some(docker) => (ExecutorKind::Docker, Executor::Docker(docker)),
        None => (ExecutorKind::Host, Executor::Host),
    };
    let platforms = PlatformMap::new(&args.platforms, kind)?;
    let cwd = std::env::current_dir().context("cannot determine the current directory")?;
    let local_repositories = parse_local_repositories(&cwd, &args.local_repositories)?;
    let absolute = |path: &Path| cwd.join(path);
    let work_dir = args
        .work_dir
        .as_deref()
        .map_or_else(|| dir.join("work"), absolute);
    let mut config = AgentConfig::new(credentials, work_dir, executor, platforms);
    config.capacity = args.capacity as usize;
    config.instance = instance;
    config.once = args.once;
    config.max_snapshot_bytes = args.max_snapshot_size;
    config.snapshot_cache_bytes = args.snapshot_cache_size;
    config.options = ExecOptions {
        action_cache: args.action_cache.as_deref().map(absolute),
        action_base_url: Some(args.action_base_url),
        offline: args.action_offline_mode,
        local_repositories,
    };
    let stop = Stop::default();
    let interrupts = tokio::spawn(watch_signals(stop.clone()));
    let (notify, mut events) = tokio::sync::mpsc::unbounded_channel();
    let agent = tokio::spawn(kiln_runner::agent::run(config, notify, stop));
    let render = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            say(&describe(&event));
        }
    });
    let exit = agent.await.context("the runner stopped unexpectedly")?;
    interrupts.abort();
    // Every sender is gone once the agent returned: the last events are printed first.
    let _ = render.await;
    match exit? {
        AgentExit::Once(JobOutcome::Reported(_)) | AgentExit::Drained => Ok(ExitCode::SUCCESS),
        AgentExit::Once(JobOutcome::Stopped(_)) => Ok(ExitCode::from(1)),
        AgentExit::Aborted => Ok(ExitCode::from(INTERRUPTED)),
    }
}

/// The first SIGINT or SIGTERM drains (no new jobs; the running ones finish and report); the
/// second stops the running jobs at once, and the scheduler gives them to another runner when
/// their leases expire.
async fn watch_signals(stop: Stop) {
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    for stage in 0..2 {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        if stage == 0 {
            say("stopping: no new jobs; running jobs finish and report (interrupt again to stop them now)");
            stop.drain.cancel();
        }
    }
    say("stopping the running jobs now; the scheduler gives them to another runner");
    stop.abort.cancel();
}

fn say(text: &str) {
    println!("{} {text}", rfc3339(SystemTime::now()));
}

fn describe(event: &AgentEvent) -> String {
    match event {
        AgentEvent::Started {
            name,
            url,
            capacity,
        } => format!("runner {name} takes jobs from {url}, {capacity} at a time"),
        AgentEvent::Leftover(text) => text.clone(),
        AgentEvent::Unreachable { detail } => {
            format!("the scheduler cannot be reached ({detail}); retrying, running jobs go on")
        }
        AgentEvent::Reachable => "the scheduler answers again".to_owned(),
        AgentEvent::JobStarted {
            job_id,
            name,
            run_id,
            attempt,
        } => format!("job {name} started (job {job_id}, run {run_id}, attempt {attempt})"),
        AgentEvent::CancelRequested { name, .. } => format!("job {name}: cancellation requested"),
        AgentEvent::JobFinished { name, outcome, .. } => match outcome {
            JobOutcome::Reported(conclusion) => {
                format!("job {name} {}", conclusion_word(*conclusion))
            }
            JobOutcome::Stopped(reason) => format!("job {name} stopped: {reason}"),
        },
        AgentEvent::Draining { running } => {
            format!("taking no more jobs; waiting for {running} running job(s)")
        }
        AgentEvent::Warning(text) => format!("warning: {text}"),
    }
}

fn conclusion_word(conclusion: Conclusion) -> &'static str {
    match conclusion {
        Conclusion::Success => "succeeded",
        Conclusion::Failure => "failed",
        Conclusion::Cancelled => "was cancelled",
        Conclusion::Skipped => "was skipped",
    }
}
