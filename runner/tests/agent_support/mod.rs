//! Starts the real runner agent (host executor) against the fake scheduler, and builds jobs.

#![allow(dead_code)]

use std::time::Duration;

use kiln_proto::v1 as pb;
use kiln_runner::agent::fake::{FakeScheduler, REGISTRATION_TOKEN};
use kiln_runner::agent::{
    register, AgentConfig, AgentError, AgentEvent, AgentExit, Credentials, Executor, Registration,
    Stop,
};
use kiln_runner::platform::{ExecutorKind, PlatformMap};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::task::JoinHandle;

/// A job of a one-job workflow.
pub fn spec(name: &str, steps_yaml: &str) -> pb::JobSpec {
    let workflow = format!(
        "on: push\njobs:\n  build:\n    runs-on: linux\n    outputs:\n      greeting: ${{{{ steps.out.outputs.greeting }}}}\n    steps:\n{steps_yaml}"
    );
    pb::JobSpec {
        run_id: "run-1".to_owned(),
        job_path: "build".to_owned(),
        name: name.to_owned(),
        workflow_path: ".github/workflows/ci.yml".to_owned(),
        workflow_yaml: workflow,
        contexts_json: r#"{"github":{"repository":"octo/repo","sha":"","ref":"refs/heads/main","event_name":"push","event":{}},"matrix":null}"#.to_owned(),
        runs_on: vec!["linux".to_owned()],
        ..Default::default()
    }
}

pub async fn credentials(fake: &FakeScheduler) -> Credentials {
    register(&Registration {
        url: fake.url(),
        registration_token: REGISTRATION_TOKEN.to_owned(),
        name: "test-runner".to_owned(),
        labels: vec!["linux".to_owned()],
        capacity: 1,
        version: "test".to_owned(),
    })
    .await
    .expect("register with the fake scheduler")
}

pub struct Agent {
    pub handle: JoinHandle<Result<AgentExit, AgentError>>,
    pub events: UnboundedReceiver<AgentEvent>,
    pub stop: Stop,
    pub work: tempfile::TempDir,
}

impl Agent {
    /// Waits for the agent to return, at most `limit`.
    pub async fn finish(&mut self, limit: Duration) -> Result<AgentExit, AgentError> {
        tokio::time::timeout(limit, &mut self.handle)
            .await
            .expect("the runner did not return in time")
            .expect("the runner task panicked")
    }

    /// Every event so far.
    pub fn drain_events(&mut self) -> Vec<AgentEvent> {
        let mut events = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            events.push(event);
        }
        events
    }
}

pub async fn start_agent(fake: &FakeScheduler, capacity: usize, once: bool) -> Agent {
    let work = tempfile::tempdir().expect("work dir");
    start_agent_on(fake, capacity, once, Executor::Host, &[], work).await
}

/// A runner with this executor, `-P` mappings and work directory (`work/work`).
pub async fn start_agent_on(
    fake: &FakeScheduler,
    capacity: usize,
    once: bool,
    executor: Executor,
    platforms: &[String],
    work: tempfile::TempDir,
) -> Agent {
    let credentials = credentials(fake).await;
    let kind = match executor {
        Executor::Host => ExecutorKind::Host,
        Executor::Docker(_) => ExecutorKind::Docker,
    };
    let platforms = PlatformMap::new(platforms, kind).expect("platforms");
    let mut config = AgentConfig::new(credentials, work.path().join("work"), executor, platforms);
    config.capacity = capacity;
    config.once = once;
    config.retry_cap = Duration::from_millis(500);
    config.options.offline = true;
    let (notify, events) = unbounded_channel();
    let stop = Stop::default();
    let handle = tokio::spawn(kiln_runner::agent::run(config, notify, stop.clone()));
    Agent {
        handle,
        events,
        stop,
        work,
    }
}

/// Whether a process with this pid is alive.
pub fn alive(pid: i32) -> bool {
    // A zombie (killed, not yet reaped by its parent) counts as gone.
    let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = status
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("");
    !status.is_empty() && state != "Z"
}
