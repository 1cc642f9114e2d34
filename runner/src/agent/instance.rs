//! Which runner, and which start of it, a container or network belongs to.
//!
//! Every container and network a registered runner's jobs create (job and service
//! containers, networks, Docker actions' containers, and what steps create through the job's
//! Docker socket) carries the runner's id ([`RUNNER_LABEL`]) and the start of the runner that
//! ran the job ([`RUNNER_PROCESS_LABEL`] = `<pid>-<nonce>`). Two things remove them when the
//! runner could not:
//! - the runner's guard, when the runner dies however it dies: what carries that start's
//!   label ([`remove_objects_of_instance`]), never a newer start's;
//! - the runner's next start: what carries the runner's id from any earlier start, whatever
//!   its work directory still holds ([`remove_objects_of_earlier_instances`]).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use super::{AgentError, Executor};
use crate::backend::{local_daemon_socket, DockerBackend, DockerConfig, Removed};

/// The registered runner's id (`credentials.json`'s `runner_id`).
pub const RUNNER_LABEL: &str = "dev.kiln.runner";
/// One start of the runner: `<pid>-<nonce>`.
pub const RUNNER_PROCESS_LABEL: &str = "dev.kiln.runner-process";

/// One start of `kiln runner start`: its process id and a random nonce, so a later process
/// that reuses the pid is another instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance(String);

impl Instance {
    /// A new instance for this process.
    pub fn of_this_process() -> Instance {
        Instance(format!("{}-{:016x}", std::process::id(), fastrand::u64(..)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn pid(value: &str) -> Option<u32> {
        value.split_once('-')?.0.parse().ok()
    }
}

impl FromStr for Instance {
    type Err = String;

    fn from_str(value: &str) -> Result<Instance, String> {
        let valid = value.split_once('-').is_some_and(|(pid, nonce)| {
            pid.parse::<u32>().is_ok()
                && !nonce.is_empty()
                && nonce.chars().all(|c| c.is_ascii_hexdigit())
        });
        match valid {
            true => Ok(Instance(value.to_owned())),
            false => Err(format!(
                "`{value}` is not a runner instance (PID-NONCE, the nonce in hex)"
            )),
        }
    }
}

impl std::fmt::Display for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The labels a runner puts on its jobs' containers and networks.
pub(crate) fn job_labels(runner_id: &str, instance: &Instance) -> Vec<(String, String)> {
    vec![
        (RUNNER_LABEL.to_owned(), runner_id.to_owned()),
        (RUNNER_PROCESS_LABEL.to_owned(), instance.0.clone()),
    ]
}

/// A connection to the Docker daemon this machine's jobs could have used: the executor's, or
/// (for a host runner, whose steps reach Docker through the job's socket) the local daemon's.
/// `None` when this machine names no daemon (no `DOCKER_HOST` and no local socket).
pub(crate) async fn docker_here(
    executor: Option<&Executor>,
) -> Option<Result<DockerBackend, AgentError>> {
    if let Some(docker) = executor.and_then(Executor::docker) {
        return Some(Ok(docker.clone()));
    }
    if std::env::var_os("DOCKER_HOST").is_none() && local_daemon_socket().is_none() {
        return None;
    }
    Some(
        DockerBackend::connect(DockerConfig::default())
            .await
            .map_err(AgentError::from),
    )
}

/// Called by the runner's guard once the runner is gone: force-removes every container, then
/// every network, labelled with `instance`, within `limit` (Docker may be absent or slow; the
/// guard must end). `Ok(None)`: no Docker daemon is named on this machine, so the runner's
/// jobs created nothing there.
pub async fn remove_objects_of_instance(
    instance: &Instance,
    limit: Duration,
) -> Result<Option<Removed>, AgentError> {
    let work = async {
        let Some(docker) = docker_here(None).await else {
            return Ok(None);
        };
        let removed = docker?
            .remove_labelled(&[(RUNNER_PROCESS_LABEL, instance.as_str())])
            .await?;
        Ok(Some(removed))
    };
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or(Err(AgentError::DockerTimeout {
            seconds: limit.as_secs(),
        }))
}

/// At a runner's start: removes the containers and networks labelled with its runner id
/// that an earlier start of it left (killed before it, or its guard, could remove them).
/// Objects of a start that still runs (the same credentials used by a second runner process
/// on this machine) are left alone. Returns one line per thing removed, spared or failed.
pub(crate) async fn remove_objects_of_earlier_instances(
    executor: &Executor,
    runner_id: &str,
    current: &Instance,
) -> Vec<String> {
    let docker = match docker_here(Some(executor)).await {
        None => return Vec::new(),
        Some(Ok(docker)) => docker,
        Some(Err(error)) => {
            return vec![format!(
                "could not look for containers an earlier run of this runner left: {error}"
            )]
        }
    };
    let still_running = |labels: &HashMap<String, String>| {
        labels
            .get(RUNNER_PROCESS_LABEL)
            .is_some_and(|value| value == current.as_str() || runner_process_alive(value))
    };
    let removed = docker
        .remove_labelled_but(&[(RUNNER_LABEL, runner_id)], still_running)
        .await;
    match removed {
        Ok(removed) => describe(&removed),
        Err(error) => vec![format!(
            "could not remove the containers an earlier run of this runner left: {error}"
        )],
    }
}

/// One line per container and network removed or spared.
fn describe(removed: &Removed) -> Vec<String> {
    let mut notes: Vec<String> = removed
        .containers
        .iter()
        .map(|name| format!("removed container {name}, left by an earlier run of this runner"))
        .collect();
    notes.extend(
        removed
            .networks
            .iter()
            .map(|name| format!("removed network {name}, left by an earlier run of this runner")),
    );
    notes.extend(removed.spared.iter().map(|name| {
        format!("left {name} alone: another process of this runner that still runs created it")
    }));
    notes
}

/// Whether the instance label `value` names a `kiln runner start` process alive on this
/// machine (a pid reused by another program does not count), or this process, which may
/// hold several agents (the library's tests do).
fn runner_process_alive(value: &str) -> bool {
    let Some(pid) = Instance::pid(value) else {
        return false;
    };
    if pid == std::process::id() {
        return true;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2)
        .any(|pair| pair[0] == b"runner" && pair[1] == b"start")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_are_a_pid_and_a_nonce_and_differ_between_starts() {
        let first = Instance::of_this_process();
        let second = Instance::of_this_process();
        assert_ne!(first, second);
        assert_eq!(Instance::pid(first.as_str()), Some(std::process::id()));
        assert_eq!(first.as_str().parse::<Instance>(), Ok(first.clone()));
        for bad in ["", "12", "x-ab", "12-", "12-xyz", "-ab"] {
            assert!(bad.parse::<Instance>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_a_live_runner_process_spares_its_objects() {
        assert!(!runner_process_alive("4194305-ab"), "no such pid");
        assert!(!runner_process_alive("junk"));
        // Another agent in this process.
        assert!(runner_process_alive(&format!("{}-ab", std::process::id())));
        // Alive, but no `kiln runner start`.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut runner = std::process::Command::new("sh")
            .args(["-c", "sleep 30; true", "runner", "start"])
            .spawn()
            .unwrap();
        let other_alive = runner_process_alive(&format!("{}-ab", other.id()));
        // The child may not have replaced the forked copy of this program yet.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let runner_value = format!("{}-ab", runner.id());
        while !runner_process_alive(&runner_value) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let alive = runner_process_alive(&runner_value);
        for child in [&mut other, &mut runner] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert!(!other_alive, "another program's process is no runner");
        assert!(alive, "a live `runner start` process is spared");
    }
}
