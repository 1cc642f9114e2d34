//! What `kiln runner start` decides before the runner's loop starts.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Credentials, Instance};
use crate::backend::DockerBackend;
use crate::platform::PlatformMap;

/// Where jobs run.
#[derive(Clone)]
pub enum Executor {
    Host,
    /// Jobs in containers; a `runs-on` label mapped to `-self-hosted` still runs on the host.
    Docker(DockerBackend),
}

impl Executor {
    pub fn docker(&self) -> Option<&DockerBackend> {
        match self {
            Executor::Docker(docker) => Some(docker),
            Executor::Host => None,
        }
    }
}

/// The executor flags a runner shares with `kiln run`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// `--action-cache DIR`: remote actions at `DIR/owner/repo@ref/`.
    pub action_cache: Option<PathBuf>,
    /// Where remote actions are cloned from (`https://github.com` when unset).
    pub action_base_url: Option<String>,
    /// Never fetch remote actions.
    pub offline: bool,
    /// `--local-repository owner/repo@ref=PATH`.
    pub local_repositories: Vec<(String, PathBuf)>,
}

/// Everything `kiln runner start` decides before the loop starts.
pub struct AgentConfig {
    pub credentials: Credentials,
    /// The runner's own folder (job folders, snapshot and git caches); locked while it runs.
    pub work_dir: PathBuf,
    /// Most jobs running at once.
    pub capacity: usize,
    /// Take one job, run it, report it and return (an ephemeral runner).
    pub once: bool,
    pub executor: Executor,
    pub platforms: PlatformMap,
    pub options: ExecOptions,
    /// Largest snapshot (git bundle) the runner downloads.
    pub max_snapshot_bytes: u64,
    /// Downloaded snapshots kept for later jobs, in bytes; least recently used go first.
    pub snapshot_cache_bytes: u64,
    /// The longest wait between two attempts of a failed call (exponential backoff with
    /// jitter up to this).
    pub retry_cap: Duration,
    /// This start of the runner, on its jobs' containers and networks; the binary gives its
    /// guard the same one.
    pub instance: Instance,
}

impl AgentConfig {
    /// The defaults of `kiln runner start`, for these credentials.
    pub fn new(
        credentials: Credentials,
        work_dir: PathBuf,
        executor: Executor,
        platforms: PlatformMap,
    ) -> AgentConfig {
        AgentConfig {
            credentials,
            work_dir,
            capacity: 1,
            once: false,
            executor,
            platforms,
            options: ExecOptions::default(),
            max_snapshot_bytes: 2 << 30,
            snapshot_cache_bytes: 8 << 30,
            retry_cap: Duration::from_secs(30),
            instance: Instance::of_this_process(),
        }
    }
}

/// How the binary asks the runner to stop: `drain` stops taking jobs and lets the running ones
/// finish and report; `abort` stops the running jobs at once (their leases expire and the
/// scheduler gives them to another runner).
#[derive(Clone, Default)]
pub struct Stop {
    pub drain: CancellationToken,
    pub abort: CancellationToken,
}
