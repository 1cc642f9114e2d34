//! The Docker backend against a real daemon, on the locally built busybox test image.

mod executor_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use executor_support::Setup;
use kiln_runner::backend::{
    Backend, BackendError, ContainerSpec, DockerBackend, DockerConfig, ExecOutcome, ExecSpec,
    JobEnv, JobSpec, Mount, OutputStream, ServiceSpec,
};
use kiln_runner::executor::{prestart, run_job_prestarted, JobEvent, JobRequest, Prestarted};
use kiln_runner::testing::{
    ensure_busybox_image, labelled_objects, require_docker, BUSYBOX_TEST_PAGE,
};
use kiln_workflow::Conclusion;
use tokio_util::sync::CancellationToken;

/// What every Docker test needs: the backend, the test image and a workspace; `None` (the
/// test is skipped) when no daemon answers.
async fn fixture() -> Option<(DockerBackend, String, tempfile::TempDir)> {
    let backend = require_docker().await?;
    let image = ensure_busybox_image(&backend).await;
    Some((backend, image, tempfile::tempdir().expect("workspace")))
}

async fn prepare(backend: &DockerBackend, spec: &JobSpec) -> JobEnv {
    backend
        .prepare(spec, &CancellationToken::new())
        .await
        .expect("prepare")
}

async fn failed_prepare(backend: &DockerBackend, spec: &JobSpec, why: &str) -> BackendError {
    let result = backend.prepare(spec, &CancellationToken::new()).await;
    result.expect_err(why)
}

async fn failed_exec(
    backend: &DockerBackend,
    env: &JobEnv,
    spec: &ExecSpec,
    why: &str,
) -> BackendError {
    let result = backend
        .exec(env, spec, &mut Vec::new(), &CancellationToken::new())
        .await;
    result.expect_err(why)
}

/// Cleans up and checks through the Docker API that nothing of the job is left.
async fn clean_up(backend: &DockerBackend, env: &JobEnv) {
    backend.cleanup(env).await.expect("cleanup");
    assert_nothing_left(backend, &env.job_key).await;
}

/// Unique per test and per test process, so parallel tests and reruns never collide.
fn job_key(test: &str) -> String {
    format!("test-{test}-{}", std::process::id())
}

fn job_spec(test: &str, image: &str, workspace: &tempfile::TempDir) -> JobSpec {
    JobSpec {
        job_key: job_key(test),
        container: Some(ContainerSpec {
            image: image.into(),
            ..Default::default()
        }),
        workspace: workspace.path().to_path_buf(),
        labels: vec![("dev.kiln.test".into(), test.into())],
        ..Default::default()
    }
}

fn service(name: &str, image: &str, options: &str) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        container: ContainerSpec {
            image: image.into(),
            options: options.into(),
            ..Default::default()
        },
    }
}

fn sh(script: &str) -> ExecSpec {
    ExecSpec {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())],
        ..Default::default()
    }
}

async fn run(
    backend: &DockerBackend,
    env: &JobEnv,
    spec: &ExecSpec,
) -> (ExecOutcome, Vec<(OutputStream, String)>) {
    let mut lines = Vec::new();
    let outcome = backend
        .exec(env, spec, &mut lines, &CancellationToken::new())
        .await
        .expect("exec runs");
    (outcome, lines)
}

fn stdout(lines: &[(OutputStream, String)]) -> Vec<&str> {
    lines
        .iter()
        .filter(|(s, _)| *s == OutputStream::Stdout)
        .map(|(_, l)| l.as_str())
        .collect()
}

/// Asserts, through the Docker API, that no container or network carries the job's label.
async fn assert_nothing_left(backend: &DockerBackend, job_key: &str) {
    let left: Vec<String> = labelled_objects(backend)
        .await
        .into_iter()
        .filter(|object| {
            object
                .split_once(' ')
                .is_some_and(|(_, key)| key == job_key)
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn steps_run_in_the_job_container_with_env_workdir_and_mounts() {
    let Some((backend, image, workspace)) = fixture().await else {
        return;
    };
    let temp = tempfile::tempdir().expect("runner temp");
    std::fs::create_dir(workspace.path().join("sub")).expect("mkdir");
    // A `:` in a host path must not be read as a `-v` separator.
    let temp_dir = temp.path().join("runner:temp");
    std::fs::create_dir(&temp_dir).expect("mkdir");
    std::fs::write(temp_dir.join("note"), "from the host").expect("write");
    let mut spec = job_spec("env-workdir", &image, &workspace);
    if let Some(container) = spec.container.as_mut() {
        container.env = vec![("FROM_CONTAINER".into(), "yes".into())];
    }
    spec.extra_mounts = vec![Mount {
        host_path: temp_dir.clone(),
        job_path: "/__w/_temp".into(),
        read_only: false,
    }];
    let env = prepare(&backend, &spec).await;
    assert_eq!(env.workspace_path, workspace.path().to_string_lossy());
    assert!(env.container_id.is_some());
    assert_eq!(
        env.network, None,
        "a job without services uses the default bridge"
    );

    let mut step = sh("echo \"$STEP_VAR $FROM_CONTAINER\"; pwd; echo oops >&2; cat /__w/_temp/note; echo made > out.txt");
    step.env.push(("STEP_VAR".into(), "step".into()));
    step.workdir = "sub".into();
    let (outcome, lines) = run(&backend, &env, &step).await;
    assert_eq!(outcome, ExecOutcome::Exited(0));
    let sub = workspace.path().join("sub");
    assert_eq!(
        stdout(&lines),
        ["step yes", sub.to_string_lossy().as_ref(), "from the host"]
    );
    assert!(lines.contains(&(OutputStream::Stderr, "oops".into())));
    assert_eq!(
        std::fs::read_to_string(sub.join("out.txt")).expect("written through the bind mount"),
        "made\n"
    );
    assert_eq!(
        run(&backend, &env, &sh("exit 7")).await.0,
        ExecOutcome::Exited(7)
    );
    assert_eq!(
        run(&backend, &env, &sh("kill -9 $$")).await.0,
        ExecOutcome::Exited(137)
    );

    clean_up(&backend, &env).await;
    backend.cleanup(&env).await.expect("cleanup twice");
}

#[tokio::test]
async fn every_job_can_get_its_own_network() {
    let Some(backend) = require_docker().await else {
        return;
    };
    let image = ensure_busybox_image(&backend).await;
    let backend = backend.with_config(DockerConfig {
        always_create_network: true,
        ..DockerConfig::default()
    });
    let workspace = tempfile::tempdir().expect("workspace");
    let spec = job_spec("own-network", &image, &workspace);
    let env = prepare(&backend, &spec).await;
    let network = env.network.clone().expect("a network");
    let (outcome, lines) = run(&backend, &env, &sh("hostname -i | grep -c . ")).await;
    assert_eq!(
        (outcome, stdout(&lines)),
        (ExecOutcome::Exited(0), vec!["1"])
    );
    let inspected = backend
        .client()
        .inspect_network(
            &network,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .expect("the network exists");
    assert_eq!(inspected.containers.map(|c| c.len()), Some(1));
    clean_up(&backend, &env).await;
}

#[tokio::test]
async fn output_is_streamed_while_the_step_runs() {
    let Some((backend, image, workspace)) = fixture().await else {
        return;
    };
    let spec = job_spec("streaming", &image, &workspace);
    let backend = Arc::new(backend);
    let env = Arc::new(
        backend
            .prepare(&spec, &CancellationToken::new())
            .await
            .expect("prepare"),
    );
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let (exec_backend, exec_env) = (Arc::clone(&backend), Arc::clone(&env));
    let exec = tokio::spawn(async move {
        let mut sink = sender;
        exec_backend
            .exec(
                &exec_env,
                &sh("echo first; sleep 2; printf second"),
                &mut sink,
                &CancellationToken::new(),
            )
            .await
    });
    let first = tokio::time::timeout(Duration::from_millis(1500), receiver.recv())
        .await
        .expect("first line before the step ends");
    assert_eq!(first, Some((OutputStream::Stdout, "first".to_owned())));
    assert_eq!(
        exec.await.expect("task").expect("exec"),
        ExecOutcome::Exited(0)
    );
    assert_eq!(
        receiver.recv().await,
        Some((OutputStream::Stdout, "second".to_owned()))
    );
    clean_up(&backend, &env).await;
}

#[tokio::test]
async fn timeout_and_cancellation_kill_the_step_promptly() {
    let Some((backend, image, workspace)) = fixture().await else {
        return;
    };
    let spec = job_spec("timeout", &image, &workspace);
    let env = prepare(&backend, &spec).await;

    let mut step = sh("echo started; sleep 30 & sleep 31; echo never");
    step.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    let (outcome, lines) = run(&backend, &env, &step).await;
    assert_eq!(outcome, ExecOutcome::TimedOut);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stdout(&lines), ["started"]);

    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let outcome = backend
        .exec(
            &env,
            &sh("trap '' TERM; sleep 32"),
            &mut Vec::new(),
            &cancel,
        )
        .await
        .expect("exec");
    assert_eq!(outcome, ExecOutcome::Cancelled);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );

    // Neither step left a sleep behind (zombies, state Z, do not count).
    let (_, lines) = run(
        &backend,
        &env,
        &sh("ps -o stat,args | grep 'sleep 3[012]' | grep -v '^Z' || true"),
    )
    .await;
    assert_eq!(stdout(&lines), Vec::<&str>::new());

    clean_up(&backend, &env).await;
}

#[tokio::test]
async fn services_are_healthy_and_reachable_by_alias() {
    let Some((backend, image, workspace)) = fixture().await else {
        return;
    };
    let mut spec = job_spec("services", &image, &workspace);
    let mut web = service(
        "web",
        &image,
        "--health-cmd 'wget -q -O /dev/null http://localhost/' --health-interval 200ms --health-retries 25",
    );
    web.container.ports = vec!["80".into()];
    spec.services.push(web);
    let env = backend
        .prepare(&spec, &CancellationToken::new())
        .await
        .expect("prepare with a service");
    assert!(env.network.is_some());
    let service = &env.services[0];
    assert_eq!(service.name, "web");
    let host_port: u16 = service.ports["80"].parse().expect("published port");
    let reached_from_host = tokio::net::TcpStream::connect(("127.0.0.1", host_port)).await;
    assert!(reached_from_host.is_ok(), "{reached_from_host:?}");

    let (outcome, lines) = run(&backend, &env, &sh("wget -q -O - http://web/")).await;
    assert_eq!(outcome, ExecOutcome::Exited(0));
    assert_eq!(stdout(&lines), [BUSYBOX_TEST_PAGE]);

    // The job container's keep-alive writes nothing, so it saves the daemon a log; a
    // service's log is what a failed service shows.
    let job_container = env.container_id.clone().expect("job container id");
    assert_eq!(log_driver(&backend, &job_container).await, "none");
    assert_ne!(log_driver(&backend, &service.container_id).await, "none");

    clean_up(&backend, &env).await;
}

/// The log driver a container was created with.
async fn log_driver(backend: &DockerBackend, id: &str) -> String {
    let inspected = backend.client().inspect_container(id, None).await;
    let host_config = inspected.expect("inspect").host_config.unwrap_or_default();
    host_config
        .log_config
        .and_then(|config| config.typ)
        .unwrap_or_default()
}

#[tokio::test]
async fn an_unhealthy_or_crashing_service_fails_prepare_and_leaves_nothing() {
    let Some((backend, image, workspace)) = fixture().await else {
        return;
    };

    let mut spec = job_spec("unhealthy", &image, &workspace);
    spec.services.push(service(
        "db",
        &image,
        "--health-cmd 'echo not ready yet; exit 1' --health-interval 100ms --health-retries 2",
    ));
    let err = failed_prepare(&backend, &spec, "unhealthy service").await;
    assert!(
        matches!(&err, BackendError::ServiceUnhealthy { service, last_log } if service == "db" && last_log.contains("not ready yet")),
        "{err}"
    );
    assert_nothing_left(&backend, &spec.job_key).await;

    let mut spec = job_spec("crashing", &image, &workspace);
    // The health check keeps it "starting" until it exits, so the exit is seen, not raced.
    spec.services.push(service(
        "db",
        &image,
        "--entrypoint false --health-cmd true --health-interval 5s",
    ));
    let err = failed_prepare(&backend, &spec, "crashing service").await;
    assert!(
        matches!(&err, BackendError::ServiceExited { service, exit_code: 1, .. } if service == "db"),
        "{err}"
    );
    assert_nothing_left(&backend, &spec.job_key).await;
}

#[tokio::test]
async fn cancelling_prepare_removes_what_it_created() {
    let Some((backend, image, workspace)) = fixture().await else {
        return;
    };
    let mut spec = job_spec("cancel-prepare", &image, &workspace);
    spec.services.push(service(
        "slow",
        &image,
        "--health-cmd false --health-interval 10s --health-retries 10",
    ));
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        trigger.cancel();
    });
    let err = backend
        .prepare(&spec, &cancel)
        .await
        .expect_err("cancelled");
    assert!(matches!(err, BackendError::Cancelled), "{err}");
    assert_nothing_left(&backend, &spec.job_key).await;
    backend
        .cleanup(&JobEnv::unprepared(&spec))
        .await
        .expect("cleanup after a failed prepare");
}

#[tokio::test]
async fn a_missing_image_is_a_clear_error_with_the_fix() {
    let Some((backend, image, workspace)) = fixture().await else {
        return;
    };
    let spec = job_spec("missing-image", "kiln-no-such-image:never", &workspace);
    let err = failed_prepare(&backend, &spec, "no such image").await;
    let text = err.to_string();
    assert!(
        matches!(err, BackendError::ImageMissing { .. })
            && text.contains("kiln-no-such-image:never")
            && text.contains("docker load"),
        "{text}"
    );
    assert_nothing_left(&backend, &spec.job_key).await;

    let spec = job_spec("missing-base", "kiln-base:not-built-here", &workspace);
    let err = failed_prepare(&backend, &spec, "no base image").await;
    assert!(
        err.to_string()
            .contains("kiln image build --tag kiln-base:not-built-here"),
        "{err}"
    );
    assert_nothing_left(&backend, &spec.job_key).await;

    // A missing job image is reported at once, not after the services' health checks.
    let mut spec = job_spec(
        "missing-image-with-service",
        "kiln-no-such-image:never",
        &workspace,
    );
    spec.services.push(service(
        "slow",
        &image,
        "--health-cmd false --health-interval 10s --health-retries 10",
    ));
    let started = std::time::Instant::now();
    let err = failed_prepare(&backend, &spec, "no such image").await;
    assert!(matches!(err, BackendError::ImageMissing { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_nothing_left(&backend, &spec.job_key).await;

    // Pulling happens only when allowed, and then a failure names the image.
    let backend = backend.with_config(DockerConfig {
        allow_pull: true,
        ..DockerConfig::default()
    });
    let spec = job_spec("pull-fails", "127.0.0.1:9/kiln-absent:1", &workspace);
    let err = failed_prepare(&backend, &spec, "no registry there").await;
    assert!(
        matches!(&err, BackendError::PullFailed { image, .. } if image == "127.0.0.1:9/kiln-absent:1"),
        "{err}"
    );
    assert_nothing_left(&backend, &spec.job_key).await;
}

#[tokio::test]
async fn bad_options_fail_before_anything_is_created() {
    let Some(backend) = require_docker().await else {
        return;
    };
    let workspace = tempfile::tempdir().expect("workspace");
    let mut spec = job_spec("bad-options", "kiln-test-busybox:latest", &workspace);
    spec.services.push(service(
        "db",
        "kiln-test-busybox:latest",
        "--cap-add SYS_ADMIN",
    ));
    let err = failed_prepare(&backend, &spec, "unsupported flag").await;
    assert!(
        err.to_string().contains("service `db`") && err.to_string().contains("--cap-add"),
        "{err}"
    );
    assert_nothing_left(&backend, &spec.job_key).await;
}

#[tokio::test]
async fn a_missing_program_or_workdir_is_the_same_error_as_on_the_host() {
    let Some((backend, image, workspace)) = fixture().await else {
        return;
    };
    let spec = job_spec("missing-program", &image, &workspace);
    let env = prepare(&backend, &spec).await;
    let missing_program = ExecSpec {
        argv: vec!["kiln-no-such-program".into()],
        ..sh("")
    };
    let err = failed_exec(&backend, &env, &missing_program, "no such program").await;
    assert!(
        matches!(&err, BackendError::Spawn { program, .. } if program == "kiln-no-such-program")
            && err.to_string().contains("not found"),
        "{err}"
    );
    let missing_dir = ExecSpec {
        workdir: "no/such/dir".into(),
        ..sh("true")
    };
    let err = failed_exec(&backend, &env, &missing_dir, "no such workdir").await;
    assert!(
        matches!(&err, BackendError::WorkdirMissing { path } if path.ends_with("no/such/dir")),
        "{err}"
    );
    // A step that prints the same words itself is still just output.
    let (outcome, lines) = run(
        &backend,
        &env,
        &sh("echo 'OCI runtime exec failed: joke'; exit 126"),
    )
    .await;
    assert_eq!(outcome, ExecOutcome::Exited(126));
    assert_eq!(stdout(&lines), ["OCI runtime exec failed: joke"]);
    backend.cleanup(&env).await.expect("cleanup");
}

#[tokio::test]
async fn leftovers_of_a_killed_run_with_the_same_key_are_replaced() {
    let Some((backend, image, workspace)) = fixture().await else {
        return;
    };
    let mut spec = job_spec("leftovers", &image, &workspace);
    spec.services.push(service("web", &image, ""));
    let cancel = CancellationToken::new();
    // The first run is "killed": its containers and network stay behind.
    let _abandoned = backend
        .prepare(&spec, &cancel)
        .await
        .expect("first prepare");
    let env = backend
        .prepare(&spec, &cancel)
        .await
        .expect("second prepare replaces the leftovers");
    let (outcome, lines) = run(&backend, &env, &sh("wget -q -O - http://web/")).await;
    assert_eq!(
        (outcome, stdout(&lines)),
        (ExecOutcome::Exited(0), vec![BUSYBOX_TEST_PAGE])
    );
    clean_up(&backend, &env).await;

    spec.services.clear();
    let _abandoned = backend
        .prepare(&spec, &cancel)
        .await
        .expect("first prepare");
    let env = backend
        .prepare(&spec, &cancel)
        .await
        .expect("second prepare without a network");
    assert_eq!(
        run(&backend, &env, &sh("true")).await.0,
        ExecOutcome::Exited(0)
    );
    clean_up(&backend, &env).await;
}

#[tokio::test]
async fn job_container_options_ports_volumes_and_workspace_path_apply() {
    let Some((backend, image, workspace)) = fixture().await else {
        return;
    };
    let mut spec = job_spec("container-options", &image, &workspace);
    spec.workspace_job_path = Some("/github/workspace".into());
    if let Some(container) = spec.container.as_mut() {
        container.options =
            "-e FROM_OPTIONS=1 --tmpfs /scratch:size=8m --memory 256m --cpus 1 --user 0:0".into();
        container.ports = vec!["8080".into()];
        container.volumes = vec!["/anonymous".into()];
    }
    let env = prepare(&backend, &spec).await;
    assert_eq!(env.workspace_path, "/github/workspace");
    let script = "pwd; echo $FROM_OPTIONS; grep -c ' /scratch tmpfs ' /proc/mounts; \
                  test -d /anonymous && echo anonymous; echo seen > from-container";
    let (outcome, lines) = run(&backend, &env, &sh(script)).await;
    assert_eq!(outcome, ExecOutcome::Exited(0), "{lines:?}");
    assert_eq!(stdout(&lines), ["/github/workspace", "1", "1", "anonymous"]);
    assert!(workspace.path().join("from-container").exists());
    clean_up(&backend, &env).await;
}

/// The ids of the containers labelled with `job_key`.
async fn containers_of(backend: &DockerBackend, job_key: &str) -> Vec<String> {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![format!("{}={job_key}", kiln_runner::backend::JOB_KEY_LABEL)],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let listed = backend.client().list_containers(Some(options)).await;
    let containers = listed.expect("list containers");
    containers.into_iter().filter_map(|c| c.id).collect()
}

/// Runs the `after` job of a one-step workflow printing its container id on a prestarted
/// container; returns the printed id and the job's conclusion.
async fn run_prestarted(
    backend: Arc<dyn Backend>,
    request: JobRequest,
    prestarted: Prestarted,
) -> (Option<String>, Conclusion) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let result = run_job_prestarted(request, backend, tx, cancel, prestarted).await;
    let mut printed = None;
    while let Ok(event) = rx.try_recv() {
        if let JobEvent::Log { line, .. } = event {
            if let Some(id) = line.strip_prefix("id=") {
                printed = Some(id.to_owned());
            }
        }
    }
    (printed, result.conclusion)
}

const PRESTART_WORKFLOW: &str = r#"
on: push
jobs:
  after:
    runs-on: x
    steps:
      - run: echo "id=${{ job.container.id }}"
"#;

/// The same job with a `container:` of its own, whose image the matrix names.
const PRESTART_WITH_CONTAINER: &str = r#"
on: push
jobs:
  after:
    runs-on: x
    container:
      image: ${{ matrix.image }}
      env: {FROM_CONTAINER: '1'}
    steps:
      - run: echo "id=${{ job.container.id }}"
"#;

#[tokio::test]
async fn a_job_runs_in_the_container_prestarted_for_it() {
    let Some((backend, image, _workspace)) = fixture().await else {
        return;
    };
    let setup = Setup::new();
    let mut request = setup.request(PRESTART_WORKFLOW, "after");
    request.platform_image = Some(image);
    let shared: Arc<dyn Backend> = Arc::new(backend.clone());
    let prestarted = prestart(&request, shared.clone()).expect("prestart");
    let key = prestarted.job_key().to_owned();
    // The container exists before its job runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    let early = loop {
        let ids = containers_of(&backend, &key).await;
        if !ids.is_empty() || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(early.len(), 1, "{early:?}");
    let (printed, conclusion) = run_prestarted(shared, request, prestarted).await;
    assert_eq!(conclusion, Conclusion::Success);
    assert_eq!(printed.as_deref(), Some(early[0].as_str()));
    assert_nothing_left(&backend, &key).await;
}

#[tokio::test]
async fn a_prestart_that_does_not_fit_or_is_not_used_is_removed() {
    let Some((backend, image, _workspace)) = fixture().await else {
        return;
    };
    let setup = Setup::new();
    let mut request = setup.request(PRESTART_WORKFLOW, "after");
    request.platform_image = Some(image.clone());
    let shared: Arc<dyn Backend> = Arc::new(backend.clone());

    // Unused: discarding removes the container and the job's folder.
    let unused = prestart(&request, shared.clone()).expect("prestart");
    let key = unused.job_key().to_owned();
    unused.discard().await.expect("discard");
    assert_nothing_left(&backend, &key).await;
    assert!(!setup.run_dir().join("run/jobs").join(&key).exists());

    // The job turned out to need another container (its `container:` evaluated to an env):
    // it runs in a container of its own and the prestarted one is gone.
    let prestarted = prestart(&request, shared.clone()).expect("prestart");
    let key = prestarted.job_key().to_owned();
    let mut different = setup.request(PRESTART_WITH_CONTAINER, "after");
    different.platform_image = request.platform_image.clone();
    let mut matrix = kiln_workflow::value::Object::new();
    matrix.insert("image", kiln_workflow::value::Value::string(image.as_str()));
    different
        .contexts
        .insert("matrix", kiln_workflow::value::Value::object(matrix));
    let (printed, conclusion) = run_prestarted(shared, different, prestarted).await;
    assert_eq!(conclusion, Conclusion::Success);
    assert!(printed.is_some_and(|id| !id.is_empty()));
    assert_nothing_left(&backend, &key).await;
}

/// Removal by label takes what carries every label given (one start of a runner), leaves
/// what carries only some of them (another start of the same runner), spares what the caller
/// spares, and refuses an empty filter, which would match every object of the daemon.
#[tokio::test]
async fn objects_are_removed_by_all_of_their_labels_and_never_by_none() {
    let Some((backend, image, workspace)) = fixture().await else {
        return;
    };
    let runner = format!("runner-{}", std::process::id());
    let spec_of = |test: &str, start: &str| {
        let mut spec = job_spec(test, &image, &workspace);
        spec.services = vec![service("web", &image, "")];
        spec.labels.push(("dev.kiln.runner".into(), runner.clone()));
        spec.labels
            .push(("dev.kiln.runner-process".into(), start.into()));
        spec
    };
    let old = prepare(&backend, &spec_of("by-label-old", "1-a")).await;
    let new = prepare(&backend, &spec_of("by-label-new", "2-b")).await;
    assert!(backend.remove_labelled(&[]).await.is_err());

    let removed = backend
        .remove_labelled(&[
            ("dev.kiln.runner", &runner),
            ("dev.kiln.runner-process", "1-a"),
        ])
        .await
        .expect("removal");
    let mut containers = removed.containers.clone();
    containers.sort();
    assert_eq!(
        (containers, removed.networks.clone()),
        (
            vec![
                format!("kiln-{}-job", old.job_key),
                format!("kiln-{}-svc-web", old.job_key)
            ],
            vec![format!("kiln-{}", old.job_key)]
        ),
        "{removed:?}"
    );
    assert_nothing_left(&backend, &old.job_key).await;

    let spare_new = |labels: &std::collections::HashMap<String, String>| {
        labels.get("dev.kiln.runner-process").map(String::as_str) == Some("2-b")
    };
    let removed = backend
        .remove_labelled_but(&[("dev.kiln.runner", &runner)], spare_new)
        .await
        .expect("removal");
    assert!(removed.is_empty(), "{removed:?}");
    assert_eq!(removed.spared.len(), 3, "{removed:?}");
    let (outcome, _) = run(&backend, &new, &sh("true")).await;
    assert_eq!(
        outcome,
        ExecOutcome::Exited(0),
        "the other start's job runs on"
    );
    clean_up(&backend, &new).await;
}
