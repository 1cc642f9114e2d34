//! What a run needs before the first job starts: the executor (and why it was chosen), the
//! jobs' environment and secrets to mask, the platform table and the run directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use kiln_runner::actions::remove_action_images;
use kiln_runner::backend::{DockerBackend, DockerConfig};
use kiln_runner::executor::RunDirs;

use super::dry::DryRun;
use super::local::{LocalRunner, RunShared};
use super::platform::{ExecutorKind, PlatformMap};
use super::render::Renderer;
use crate::cmd::run::{Args, ExecutorFlag};
use kiln_runner::executor::CacheEndpoint;
use kiln_scheduler::drive::Executor;
use kiln_scheduler::github::RepoState;
use kiln_scheduler::request::RunValues;

/// Where the run's jobs go, and the sentence explaining the choice.
pub struct ExecutorChoice {
    pub kind: ExecutorKind,
    pub docker: Option<DockerBackend>,
    reason: String,
}

impl ExecutorChoice {
    pub fn describe(&self) -> String {
        format!("executor: {} ({})", self.kind.name(), self.reason)
    }
}

/// `--executor` when given; otherwise Docker when a daemon answers, else the host.
pub async fn choose_executor(flag: Option<ExecutorFlag>) -> anyhow::Result<ExecutorChoice> {
    let host = |reason: String| ExecutorChoice {
        kind: ExecutorKind::Host,
        docker: None,
        reason,
    };
    match flag {
        Some(ExecutorFlag::Host) => Ok(host("--executor host".to_owned())),
        Some(ExecutorFlag::Docker) => {
            let docker = DockerBackend::connect(DockerConfig::default())
                .await
                .map_err(|e| {
                    anyhow::anyhow!("--executor docker: {e}; start Docker or use --executor host")
                })?;
            Ok(ExecutorChoice {
                kind: ExecutorKind::Docker,
                docker: Some(docker),
                reason: "--executor docker".to_owned(),
            })
        }
        None => match DockerBackend::connect(DockerConfig::default()).await {
            Ok(docker) => Ok(ExecutorChoice {
                kind: ExecutorKind::Docker,
                docker: Some(docker),
                reason: "a Docker daemon answered; --executor host runs jobs on this machine"
                    .to_owned(),
            }),
            Err(error) => Ok(host(format!("no Docker daemon answered: {error}"))),
        },
    }
}

/// What every job's environment starts from in `kiln run`: `ACT=true`, as act sets it, so
/// workflows written for act keep skipping what only makes sense on GitHub
/// (`if: ${{ !env.ACT }}`), then the `--env-file` values; those and the workflow's own `env:`
/// may set `ACT` otherwise. Jobs the scheduler dispatches are not local runs: it is not set
/// there.
fn local_run_env(env_file: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = vec![("ACT".to_owned(), "true".to_owned())];
    env.extend(env_file.iter().cloned());
    env
}

/// Everything the driver loop needs, and what must be undone when the run ends.
pub struct Prepared {
    pub runner: Arc<dyn Executor>,
    /// Most legs running at once.
    pub parallel: usize,
    /// The run's own directory (workspaces, temp, artifacts unless `--artifact-dir`).
    run_dir: Option<PathBuf>,
    /// The real runner, whose background cleanups must end before the run does.
    local: Option<Arc<LocalRunner>>,
    /// Docker mode: images built from action Dockerfiles are removed at the end of the run.
    docker: bool,
}

impl Prepared {
    /// Removes whatever the run left behind. Called on every path out of a run; containers
    /// and networks are removed by the executor as each job ends.
    pub async fn finish(&self, renderer: &mut Renderer) {
        if let Some(local) = &self.local {
            for error in local.finish().await {
                renderer.notice(&error);
            }
        }
        if let (true, Some(dir)) = (self.docker, &self.run_dir) {
            for error in remove_action_images(&RunDirs::new(dir)).await {
                renderer.notice(&error);
            }
        }
        if let Some(dir) = &self.run_dir {
            // `--artifact-dir` is a symbolic link inside the run directory: removing the
            // directory removes the link, never the artifacts behind it.
            if let Err(error) = std::fs::remove_dir_all(dir) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    renderer.notice(&format!(
                        "could not remove the run directory {}: {error}",
                        dir.display()
                    ));
                }
            }
        }
        renderer.flush();
    }
}

/// A fresh directory for the run under the system's temp directory, which only kiln's user
/// can enter: the jobs' scripts hold secrets. It must not exist yet: in a shared `/tmp`,
/// another user could have created it to swap its contents while the run writes there.
fn create_run_dir(run_id: u64, artifact_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    let root = std::env::temp_dir().join(format!("kiln-run-{run_id}-{}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&root)
        .with_context(|| format!("cannot create the run directory {}", root.display()))?;
    if let Some(artifacts) = artifact_dir {
        std::fs::create_dir_all(artifacts).with_context(|| {
            format!(
                "cannot create the artifact directory {}",
                artifacts.display()
            )
        })?;
        let absolute = std::fs::canonicalize(artifacts)
            .with_context(|| format!("cannot resolve {}", artifacts.display()))?;
        std::os::unix::fs::symlink(&absolute, RunDirs::new(&root).artifacts()).with_context(
            || format!("cannot link the artifact directory {}", absolute.display()),
        )?;
    }
    Ok(root)
}

/// Docker jobs each hold a container (and services); more at once than the machine has
/// cores only adds contention.
fn default_parallel(kind: ExecutorKind) -> usize {
    match kind {
        ExecutorKind::Host => usize::MAX,
        ExecutorKind::Docker => 2 * std::thread::available_parallelism().map_or(2, |n| n.get()),
    }
}

pub fn prepare(
    args: &Args,
    executor: ExecutorChoice,
    repo: &RepoState,
    values: &RunValues,
    local_repositories: &[(String, PathBuf)],
    run_id: u64,
    cache: Option<CacheEndpoint>,
) -> anyhow::Result<Prepared> {
    let platforms = PlatformMap::new(&args.platforms, executor.kind)?;
    let parallel = args
        .parallel
        .map_or_else(|| default_parallel(executor.kind), |n| n as usize);
    if args.dry_run {
        return Ok(Prepared {
            runner: Arc::new(DryRun { platforms }),
            parallel,
            run_dir: None,
            local: None,
            docker: false,
        });
    }
    let artifact_dir = args.artifact_dir.as_ref().map(|d| repo.root.join(d));
    let run_dir = create_run_dir(run_id, artifact_dir.as_deref())?;
    let shared = RunShared {
        env_file: local_run_env(&values.env),
        secrets: values
            .secrets
            .iter()
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
            .collect(),
        source_repo: repo.root.clone(),
        dirs: RunDirs::new(&run_dir),
        action_cache: args.action_cache.as_ref().map(|d| repo.root.join(d)),
        action_base_url: Some(args.action_base_url.clone()),
        offline: args.action_offline_mode,
        local_repositories: local_repositories.to_vec(),
        cache,
    };
    let docker = executor.docker.is_some();
    let local = Arc::new(LocalRunner::new(platforms, executor.docker, shared));
    Ok(Prepared {
        runner: local.clone(),
        parallel,
        run_dir: Some(run_dir),
        local: Some(local),
        docker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_runs_set_act_below_the_env_file() {
        assert_eq!(local_run_env(&[]), [("ACT".to_owned(), "true".to_owned())]);
        let env = local_run_env(&[
            ("A".to_owned(), "1".to_owned()),
            ("ACT".to_owned(), "".to_owned()),
        ]);
        assert_eq!(
            env.first().map(|(k, v)| (k.as_str(), v.as_str())),
            Some(("ACT", "true"))
        );
        assert_eq!(
            env.last().map(|(k, v)| (k.as_str(), v.as_str())),
            Some(("ACT", ""))
        );
    }
}
