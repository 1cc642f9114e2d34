//! The runner agent with the Docker executor (busybox test image): jobs run in containers that
//! are gone afterwards, also when the lease is lost mid-step; what an earlier instance of the
//! runner left is removed when it starts again; a missing image fails the job with the fix.

mod agent_support;

use std::collections::HashMap;
use std::time::Duration;

use agent_support::{spec, start_agent_on, Agent};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use kiln_runner::agent::fake::FakeScheduler;
use kiln_runner::agent::{AgentEvent, AgentExit, Executor, JobOutcome};
use kiln_runner::backend::{DockerBackend, JOB_KEY_LABEL};
use kiln_runner::testing::{containers_with_label, ensure_busybox_image, require_docker};
use kiln_workflow::Conclusion;

const LIMIT: Duration = Duration::from_secs(120);

/// Containers (running or not) whose label `key` has value `value`.
async fn containers_labelled(docker: &DockerBackend, key: &str, value: &str) -> Vec<String> {
    containers_with_label(docker, &format!("{key}={value}"))
        .await
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// A Docker runner (busybox for `linux`) with one job queued, named uniquely: `None` (after
/// the skip message) without Docker.
async fn docker_runner(
    prefix: &str,
    steps: &str,
    once: bool,
) -> Option<(DockerBackend, FakeScheduler, String, Agent)> {
    let docker = require_docker().await?;
    let image = ensure_busybox_image(&docker).await;
    let fake = FakeScheduler::start().await;
    let name = unique(prefix);
    fake.queue(spec(&name, steps));
    let work = tempfile::tempdir().unwrap();
    let platforms = [format!("linux={image}")];
    let executor = Executor::Docker(docker.clone());
    let agent = start_agent_on(&fake, 1, once, executor, &platforms, work).await;
    Some((docker, fake, name, agent))
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), fastrand_suffix())
}

fn fastrand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

#[tokio::test]
async fn a_job_runs_in_a_container_that_is_gone_afterwards() {
    let Some((docker, fake, name, mut agent)) = docker_runner(
        "agent-docker",
        "      - run: test -f /.dockerenv && echo in-a-container\n",
        true,
    )
    .await
    else {
        return;
    };
    let exit = agent.finish(LIMIT).await.expect("the runner ends well");
    let log = fake.state().log_text("job-1");
    assert_eq!(
        exit,
        AgentExit::Once(JobOutcome::Reported(Conclusion::Success)),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l == "in-a-container"), "{log:?}");
    assert!(containers_labelled(&docker, "kiln.job", &name)
        .await
        .is_empty());
}

#[tokio::test]
async fn a_lost_lease_removes_the_jobs_container_at_once() {
    let Some((docker, fake, name, mut agent)) = docker_runner(
        "agent-stale",
        "      - run: echo started; sleep 600\n",
        true,
    )
    .await
    else {
        return;
    };
    fake.wait_for(LIMIT, "the step to start", |s| {
        s.log_text("job-1").iter().any(|l| l == "started")
    })
    .await;
    assert_eq!(
        containers_labelled(&docker, "kiln.job", &name).await.len(),
        1
    );
    fake.state().stale.insert("job-1".to_owned());
    let exit = agent.finish(LIMIT).await.expect("the runner ends well");
    assert!(
        matches!(exit, AgentExit::Once(JobOutcome::Stopped(_))),
        "{exit:?}"
    );
    assert!(containers_labelled(&docker, "kiln.job", &name)
        .await
        .is_empty());
    assert!(fake.state().completions.is_empty());
}

#[tokio::test]
async fn a_runner_starting_again_removes_what_its_last_run_left() {
    let Some(docker) = require_docker().await else {
        return;
    };
    let image = ensure_busybox_image(&docker).await;
    let key = unique("leftover-job");
    // What a runner killed mid-job leaves: its job folder, and a container under the job's key.
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(
        work.path()
            .join(format!("work/jobs/job-9-1-lease/run/jobs/{key}")),
    )
    .unwrap();
    let labels = HashMap::from([(JOB_KEY_LABEL.to_owned(), key.clone())]);
    let created = docker
        .client()
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&key).build()),
            bollard::models::ContainerCreateBody {
                image: Some(image.clone()),
                cmd: Some(vec!["sleep".to_owned(), "600".to_owned()]),
                labels: Some(labels),
                ..Default::default()
            },
        )
        .await
        .expect("create the leftover container");
    docker
        .client()
        .start_container(
            &created.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .expect("start it");
    assert_eq!(
        containers_labelled(&docker, JOB_KEY_LABEL, &key)
            .await
            .len(),
        1
    );

    let fake = FakeScheduler::start().await;
    let platforms = [format!("linux={image}")];
    let mut agent = start_agent_on(
        &fake,
        1,
        false,
        Executor::Docker(docker.clone()),
        &platforms,
        work,
    )
    .await;
    let mut leftovers = Vec::new();
    loop {
        let event = tokio::time::timeout(LIMIT, agent.events.recv())
            .await
            .expect("the runner started in time")
            .expect("events");
        match event {
            AgentEvent::Leftover(text) => leftovers.push(text),
            AgentEvent::Started { .. } => break,
            _ => {}
        }
    }
    assert!(
        containers_labelled(&docker, JOB_KEY_LABEL, &key)
            .await
            .is_empty(),
        "{leftovers:?}"
    );
    assert!(!agent.work.path().join("work/jobs/job-9-1-lease").exists());
    assert!(leftovers.iter().any(|l| l.contains(&key)), "{leftovers:?}");
    agent.stop.drain.cancel();
    assert_eq!(
        agent.finish(LIMIT).await.expect("drained"),
        AgentExit::Drained
    );
}

#[tokio::test]
async fn a_missing_image_fails_the_job_with_the_fix() {
    let Some(docker) = require_docker().await else {
        return;
    };
    let fake = FakeScheduler::start().await;
    let mut job = spec("no-image", "      - run: echo never\n");
    job.workflow_yaml = job.workflow_yaml.replace(
        "    runs-on: linux\n",
        "    runs-on: linux\n    container: kiln-test-no-such-image:1\n",
    );
    fake.queue(job);
    let work = tempfile::tempdir().unwrap();
    let mut agent = start_agent_on(&fake, 1, true, Executor::Docker(docker), &[], work).await;
    let exit = agent.finish(LIMIT).await.expect("the runner ends well");
    assert_eq!(
        exit,
        AgentExit::Once(JobOutcome::Reported(Conclusion::Failure))
    );
    let error = fake.state().completions[0].error.clone();
    assert!(error.contains("kiln does not pull images"), "{error}");
}
