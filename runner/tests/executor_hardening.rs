//! What a leaky or hostile step can do through the executor: secrets printed in encoded forms
//! or across the cut of a very long line, file commands that are huge or not the files kiln
//! made, outputs past GitHub's limits, processes that leave the step's session, steps that
//! ignore cancellation, containers started beside the job.

mod executor_support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use executor_support::{Ran, Setup};
use kiln_runner::backend::{cgroup_tracking_available, HostBackend, Tracking};
use kiln_runner::executor::{run_job_with, JobEvent, JobStop};
use kiln_runner::testing::process_running as alive;
use kiln_workflow::Conclusion;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "pa\"ss\\wörd-1234-straddle";

fn setup_with_secrets() -> Setup {
    let mut setup = Setup::new();
    setup.secrets.push(("TOKEN".into(), TOKEN.into()));
    setup
        .secrets
        .push(("KEY".into(), "key-line-one\nkey-line-two\n".into()));
    setup
}

fn assert_succeeded(ran: &Ran) {
    assert_eq!(
        ran.result.conclusion,
        Conclusion::Success,
        "{}",
        ran.log_text()
    );
}

fn assert_hidden(log: &str, shown: &str) {
    assert!(!log.contains(shown), "{shown:?} leaked:\n{log}");
}

#[tokio::test]
async fn secrets_are_masked_in_their_encoded_forms() {
    let setup = setup_with_secrets();
    let yaml = r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - env:
          ALL: ${{ toJSON(secrets) }}
          TOKEN: ${{ secrets.TOKEN }}
        run: |
          echo "json: $ALL"
          printf '%s' "$TOKEN" | base64 -w0; echo
          printf 'user:%s\n' "$TOKEN" | base64 -w0; echo
          printf 'us:%s' "$TOKEN" | base64 -w0 | tr '+/' '-_'; echo
"#;
    let ran = setup.run(yaml, "j").await;
    assert_succeeded(&ran);
    let log = ran.log_text();
    assert_hidden(&log, "wörd");
    assert_hidden(&log, "w\\u00f6rd");
    assert_hidden(&log, "key-line");
    assert!(log.contains("\"TOKEN\": \"***\""), "{log}");
    // The Base64 digits that encode only the secret are gone, whatever came before it.
    for text in [
        TOKEN.to_owned(),
        format!("user:{TOKEN}\n"),
        format!("us:{TOKEN}"),
    ] {
        let encoded = STANDARD.encode(&text);
        let url = URL_SAFE_NO_PAD.encode(&text);
        let middle = 8..encoded.len() - 8;
        assert_hidden(&log, &encoded[middle.clone()]);
        assert_hidden(&log, &url[middle]);
    }
}

#[tokio::test]
async fn a_secret_across_the_cut_of_a_very_long_line_is_masked() {
    let setup = setup_with_secrets();
    // The splitter cuts lines at 64 KiB: the secret starts 10 bytes before the cut, and the
    // line goes on well past it. Then a long `::add-mask::` command, whose value is printed
    // after it.
    let yaml = r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - env:
          TOKEN: ${{ secrets.TOKEN }}
        run: |
          { head -c 65526 /dev/zero | tr '\0' x; printf '%s' "$TOKEN"; head -c 100000 /dev/zero | tr '\0' y; echo " tail"; }
          value="dyn-$(head -c 100000 /dev/zero | tr '\0' v)-end"
          echo "::add-mask::$value"
          echo "printed: $value"
"#;
    let ran = setup.run(yaml, "j").await;
    assert_succeeded(&ran);
    let log = ran.log_text();
    assert_hidden(&log, "pa\"ss");
    assert_hidden(&log, "straddle");
    assert!(
        log.contains("yyyy tail"),
        "the end of the long line is shown"
    );
    assert_hidden(&log, "dyn-vvv");
    assert_hidden(&log, "vvv-end");
    assert!(log.contains("printed: ***"));
    assert!(!log.contains("add-mask"), "the command was printed");
}

fn annotations(ran: &Ran) -> String {
    ran.events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Annotation(a) => Some(a.annotation.message.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn file_commands_are_bounded_and_only_read_from_the_files_kiln_made() {
    let setup = Setup::new();
    let outside = setup.run_dir().join("outside-secret");
    std::fs::write(&outside, "LEAKED=host-file-line\n").expect("write");
    let yaml = format!(
        r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - id: big_value
        continue-on-error: true
        run: |
          {{ printf 'big='; head -c 1048577 /dev/zero | tr '\0' a; echo; echo small=ok; }} >> "$GITHUB_OUTPUT"
      - id: big_file
        continue-on-error: true
        run: truncate -s 60M "$GITHUB_ENV"
      - id: link
        continue-on-error: true
        run: ln -sf {outside} "$GITHUB_ENV"
      - id: after
        run: echo "small=${{{{ steps.big_value.outputs.small }}}} leaked=$LEAKED"
"#,
        outside = outside.display()
    );
    let ran = setup.run(&yaml, "j").await;
    let log = ran.log_text();
    let notes = annotations(&ran);
    assert_eq!(ran.step("big_value"), ("failure".into(), "success".into()));
    assert_eq!(ran.step("big_file"), ("failure".into(), "success".into()));
    assert_eq!(ran.step("link"), ("failure".into(), "success".into()));
    assert!(notes.contains("Unable to process file command 'output' successfully. The value of 'big' is 1,048,577 bytes; a value can be at most 1,048,576 bytes (1 MiB)."), "{notes}");
    assert!(notes.contains("Unable to process file command 'env' successfully. The file is 62,914,560 bytes; a step's file commands can hold at most 52,428,800 bytes (50 MiB)."), "{notes}");
    assert!(notes.contains("was replaced by a symbolic link"), "{notes}");
    assert!(ran.logs().iter().any(|l| l == "small=ok leaked="), "{log}");
    assert_hidden(&format!("{log}{notes}"), "host-file-line");
}

#[tokio::test]
async fn job_outputs_over_a_mebibyte_fail_the_job_and_are_not_sent() {
    let setup = Setup::new();
    let yaml = r#"
on: push
jobs:
  j:
    runs-on: x
    outputs:
      a: ${{ steps.s.outputs.a }}
      b: ${{ steps.s.outputs.b }}
    steps:
      - id: s
        run: |
          { printf 'a='; head -c 600000 /dev/zero | tr '\0' a; echo; } >> "$GITHUB_OUTPUT"
          { printf 'b='; head -c 600000 /dev/zero | tr '\0' b; echo; } >> "$GITHUB_OUTPUT"
"#;
    let ran = setup.run(yaml, "j").await;
    assert_eq!(ran.result.conclusion, Conclusion::Failure);
    assert!(ran.result.outputs.is_empty());
    assert_eq!(
        ran.result.error.as_deref(),
        Some("Job outputs exceed 1,048,576 bytes")
    );
    assert!(annotations(&ran).contains("Job outputs exceed 1,048,576 bytes"));
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a pid")
}

async fn ended(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// A job whose step detaches a process into a session of its own (its pid in `dir/name`),
/// then waits for `dir/go` when `wait` is set.
fn detaching_job(dir: &Path, name: &str, wait: bool) -> String {
    let dir = dir.display();
    let wait = if wait {
        format!("while [ ! -e {dir}/go ]; do sleep 0.05; done")
    } else {
        String::new()
    };
    format!(
        r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - run: |
          setsid sh -c 'echo $$ > {dir}/{name}; exec sleep 600' > /dev/null 2>&1 < /dev/null &
          while [ ! -s {dir}/{name} ]; do sleep 0.02; done
          {wait}
"#
    )
}

async fn detached_processes_end_with_their_job_and_only_theirs(tracking: Tracking) {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = Arc::new(HostBackend::new().with_tracking(tracking));
    let (setup_a, setup_b) = (Setup::new(), Setup::new());
    let yaml_b = detaching_job(dir.path(), "b", true);
    let job_b = {
        let backend = backend.clone();
        tokio::spawn(async move {
            setup_b
                .run_on(backend, &yaml_b, "j", CancellationToken::new())
                .await
                .result
                .conclusion
        })
    };
    let yaml_a = detaching_job(dir.path(), "a", false);
    let ran_a = setup_a
        .run_on(backend.clone(), &yaml_a, "j", CancellationToken::new())
        .await;
    assert_eq!(
        ran_a.result.conclusion,
        Conclusion::Success,
        "{}",
        ran_a.log_text()
    );
    let (a, b) = (
        read_pid(&dir.path().join("a")),
        read_pid(&dir.path().join("b")),
    );
    assert!(
        ended(a).await,
        "job a's detached process outlived it ({tracking:?})"
    );
    assert!(
        alive(b),
        "job a's end killed job b's process ({tracking:?})"
    );
    std::fs::write(dir.path().join("go"), "").expect("write");
    assert_eq!(job_b.await.expect("job b"), Conclusion::Success);
    assert!(
        ended(b).await,
        "job b's detached process outlived it ({tracking:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_marker_ends_detached_processes_of_the_job_only() {
    detached_processes_end_with_their_job_and_only_theirs(Tracking::Environment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_tracking_ends_detached_processes_of_the_job_only() {
    detached_processes_end_with_their_job_and_only_theirs(Tracking::Auto).await;
}

#[tokio::test]
async fn a_process_that_clears_the_marker_escapes_it_but_not_the_jobs_cgroup() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pids = dir.path().display();
    let yaml = format!(
        r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - run: |
          RUNNER_TRACKING_ID= setsid sh -c 'echo $$ > {pids}/escaped; exec sleep 600' > /dev/null 2>&1 < /dev/null &
          while [ ! -s {pids}/escaped ]; do sleep 0.02; done
"#
    );
    for (tracking, ends) in [
        (Tracking::Environment, false),
        (Tracking::Auto, cgroup_tracking_available()),
    ] {
        let _ = std::fs::remove_file(dir.path().join("escaped"));
        let backend = Arc::new(HostBackend::new().with_tracking(tracking));
        let ran = Setup::new()
            .run_on(backend, &yaml, "j", CancellationToken::new())
            .await;
        assert_eq!(
            ran.result.conclusion,
            Conclusion::Success,
            "{}",
            ran.log_text()
        );
        let pid = read_pid(&dir.path().join("escaped"));
        let survived = !ended(pid).await;
        if survived {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert_eq!(survived, !ends, "{tracking:?}");
    }
}

#[tokio::test]
async fn killing_a_job_stops_the_steps_that_run_on_cancellation() {
    let setup = Setup::new();
    let yaml = r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - run: sleep 600
      - id: always
        if: always()
        run: sleep 600
      - id: after
        if: always()
        run: echo never
"#;
    let stop = JobStop::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let job = tokio::spawn(run_job_with(
        setup.request(yaml, "j"),
        Arc::new(HostBackend::new()),
        tx,
        stop.clone(),
        None,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = Instant::now();
    stop.kill.cancel();
    let result = tokio::time::timeout(Duration::from_secs(20), job)
        .await
        .expect("the killed job ends")
        .expect("job task");
    assert!(killed_at.elapsed() < Duration::from_secs(10));
    assert_eq!(result.conclusion, Conclusion::Cancelled);
    let always = result
        .steps
        .iter()
        .find(|s| s.id == "always")
        .expect("step");
    assert_eq!(always.conclusion, Conclusion::Cancelled);
    let mut log = String::new();
    while let Ok(event) = rx.try_recv() {
        if let JobEvent::Log { line, .. } = event {
            log.push_str(&line);
        }
    }
    assert!(!log.contains("never"), "{log}");
}

/// The Docker backend, its client and the busybox test image, or `None` (the test is
/// skipped, or fails under KILN_REQUIRE_DOCKER=1) without a daemon.
async fn docker_or_skip() -> Option<(kiln_runner::backend::DockerBackend, bollard::Docker, String)>
{
    let docker = kiln_runner::testing::require_docker().await?;
    let image = kiln_runner::testing::ensure_busybox_image(&docker).await;
    let client = docker.client().clone();
    Some((docker, client, image))
}

/// Docker mode: a container started beside the job (as a step does through the Docker
/// socket) that carries the job's label is removed when the job ends, with the job's own.
#[tokio::test]
async fn containers_carrying_the_jobs_label_are_removed_with_it() {
    use bollard::models::ContainerCreateBody;
    use bollard::query_parameters::{CreateContainerOptionsBuilder, ListContainersOptionsBuilder};
    use kiln_runner::backend::JOB_KEY_LABEL;

    let Some((docker, client, image)) = docker_or_skip().await else {
        return;
    };
    let setup = Setup::new();
    let yaml = "on: push\njobs:\n  label-sweep-job:\n    runs-on: x\n    steps:\n      - run: while [ ! -e go ]; do sleep 0.1; done\n";
    let mut request = setup.request(yaml, "label-sweep-job");
    request.platform_image = Some(image.clone());
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let job = tokio::spawn(kiln_runner::executor::run_job(
        request,
        Arc::new(docker),
        tx,
        CancellationToken::new(),
    ));
    // The job's container, found by its name label; its key labels everything of the job.
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec!["kiln.job=label-sweep-job".to_owned()],
    )]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let key = loop {
        let found = client
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .expect("list containers");
        if let Some(key) = found
            .iter()
            .find_map(|c| c.labels.as_ref()?.get(JOB_KEY_LABEL).cloned())
        {
            break key;
        }
        assert!(Instant::now() < deadline, "the job container never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let beside = client
        .create_container(
            Some(
                CreateContainerOptionsBuilder::new()
                    .name(&format!("kiln-test-beside-{key}"))
                    .build(),
            ),
            ContainerCreateBody {
                image: Some(image.clone()),
                cmd: Some(vec!["sleep".into(), "600".into()]),
                labels: Some(std::collections::HashMap::from([(
                    JOB_KEY_LABEL.to_owned(),
                    key.clone(),
                )])),
                ..Default::default()
            },
        )
        .await
        .expect("create a container beside the job")
        .id;
    client
        .start_container(&beside, None)
        .await
        .expect("start it");
    let jobs = setup.run_dir().join("run").join("jobs");
    for job_dir in std::fs::read_dir(&jobs).expect("jobs folder").flatten() {
        for workspace in std::fs::read_dir(job_dir.path().join("work"))
            .into_iter()
            .flatten()
            .flatten()
        {
            std::fs::write(workspace.path().join("go"), "").expect("write go");
        }
    }
    let result = tokio::time::timeout(Duration::from_secs(60), job)
        .await
        .expect("the job ends")
        .expect("job task");
    assert_eq!(result.conclusion, Conclusion::Success);
    let left = client.inspect_container(&beside, None).await;
    if left.is_ok() {
        let _ = client
            .remove_container(
                &beside,
                Some(
                    bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .build(),
                ),
            )
            .await;
    }
    assert!(left.is_err(), "the labelled container outlived the job");
}

/// What a host step creates with `docker` goes through the job's own socket, carries the
/// job's label, and is removed when the job ends; Docker actions get that socket too.
#[tokio::test]
async fn containers_and_networks_a_step_creates_end_with_the_job() {
    let Some((docker, client, image)) = docker_or_skip().await else {
        return;
    };
    let setup = Setup::new();
    let ids = setup.run_dir().join("ids");
    let network = format!("kiln-test-step-net-{}", std::process::id());
    let yaml = format!(
        r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - run: |
          docker run -d {image} sleep 600 > {ids}
          docker network create {network} >> {ids}
"#,
        ids = ids.display()
    );
    let ran = setup.run(&yaml, "j").await;
    assert_succeeded(&ran);
    let created = std::fs::read_to_string(&ids).expect("the step wrote the ids");
    let mut lines = created.lines();
    let container = lines.next().expect("a container id").trim().to_owned();
    let network_id = lines.next().expect("a network id").trim().to_owned();
    let container_left = client.inspect_container(&container, None).await.is_ok();
    let network_left = client.inspect_network(&network_id, None).await.is_ok();
    if container_left {
        let options = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
            .force(true)
            .build();
        let _ = client.remove_container(&container, Some(options)).await;
    }
    if network_left {
        let _ = client.remove_network(&network_id).await;
    }
    assert!(!container_left, "the step's container outlived the job");
    assert!(!network_left, "the step's network outlived the job");

    // A Docker action's /var/run/docker.sock is the job's socket (0600), not the daemon's.
    let yaml = format!(
        "on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - uses: docker://{image}\n        with:\n          entrypoint: sh\n          args: -c \"ls -l /var/run/docker.sock\"\n"
    );
    let mut request = setup.request(&yaml, "j");
    request.platform_image = Some(image.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let result =
        kiln_runner::executor::run_job(request, Arc::new(docker), tx, CancellationToken::new())
            .await;
    let mut log = String::new();
    while let Ok(event) = rx.try_recv() {
        if let JobEvent::Log { line, .. } = event {
            log.push_str(&format!("{line}\n"));
        }
    }
    assert_eq!(result.conclusion, Conclusion::Success, "{log}");
    assert!(log.contains("srw-------"), "{log}");
}
