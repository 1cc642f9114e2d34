//! The host backend against real processes.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_runner::backend::{
    host_base_env, Backend, BackendError, ContainerSpec, ExecOutcome, ExecSpec, HostBackend,
    JobEnv, JobSpec, Mount, OutputStream, ServiceSpec,
};
use tokio_util::sync::CancellationToken;

struct Job {
    backend: HostBackend,
    env: JobEnv,
    _workspace: tempfile::TempDir,
}

async fn prepare() -> Job {
    let workspace = tempfile::tempdir().expect("temp workspace");
    let backend = HostBackend::new().with_kill_grace(Duration::from_millis(300));
    let spec = JobSpec {
        job_key: "host-test".into(),
        workspace: workspace.path().to_path_buf(),
        ..Default::default()
    };
    let env = backend
        .prepare(&spec, &CancellationToken::new())
        .await
        .expect("host prepare");
    Job {
        backend,
        env,
        _workspace: workspace,
    }
}

fn sh(script: &str) -> ExecSpec {
    ExecSpec {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: host_base_env(),
        ..Default::default()
    }
}

async fn run(job: &Job, spec: &ExecSpec) -> (ExecOutcome, Vec<(OutputStream, String)>) {
    let mut lines = Vec::new();
    let outcome = job
        .backend
        .exec(&job.env, spec, &mut lines, &CancellationToken::new())
        .await
        .expect("exec runs");
    (outcome, lines)
}

fn text(lines: &[(OutputStream, String)], stream: OutputStream) -> Vec<&str> {
    lines
        .iter()
        .filter(|(s, _)| *s == stream)
        .map(|(_, l)| l.as_str())
        .collect()
}

/// Whether a process still runs (zombies and vanished pids do not).
fn is_running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

async fn wait_until_gone(pid: i32) -> bool {
    for _ in 0..100 {
        if !is_running(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn stdout_and_stderr_lines_arrive_in_order_with_partial_last_line() {
    let job = prepare().await;
    let (outcome, lines) = run(
        &job,
        &sh("echo one; echo err1 >&2; echo two; printf 'no newline'; printf 'tail' >&2"),
    )
    .await;
    assert_eq!(outcome, ExecOutcome::Exited(0));
    assert_eq!(
        text(&lines, OutputStream::Stdout),
        ["one", "two", "no newline"]
    );
    assert_eq!(text(&lines, OutputStream::Stderr), ["err1", "tail"]);
}

#[tokio::test]
async fn lines_are_streamed_while_the_process_runs() {
    let job = Arc::new(prepare().await);
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let running = Arc::clone(&job);
    let started = Instant::now();
    let exec = tokio::spawn(async move {
        let mut sink = sender;
        running
            .backend
            .exec(
                &running.env,
                &sh("echo first; sleep 2; echo second"),
                &mut sink,
                &CancellationToken::new(),
            )
            .await
    });
    let first = tokio::time::timeout(Duration::from_secs(1), receiver.recv())
        .await
        .expect("first line before the process ends");
    assert_eq!(first, Some((OutputStream::Stdout, "first".to_owned())));
    assert!(started.elapsed() < Duration::from_millis(1500));
    let outcome = exec.await.expect("task").expect("exec");
    assert_eq!(outcome, ExecOutcome::Exited(0));
    assert_eq!(
        receiver.recv().await,
        Some((OutputStream::Stdout, "second".to_owned()))
    );
}

#[tokio::test]
async fn exit_codes_and_signals_are_reported() {
    let job = prepare().await;
    assert_eq!(run(&job, &sh("exit 3")).await.0, ExecOutcome::Exited(3));
    assert_eq!(run(&job, &sh("true")).await.0, ExecOutcome::Exited(0));
    assert_eq!(
        run(&job, &sh("kill -9 $$")).await.0,
        ExecOutcome::Exited(137)
    );
}

#[tokio::test]
async fn environment_is_exactly_what_was_given_and_path_finds_programs() {
    let job = prepare().await;
    let spec = ExecSpec {
        argv: vec!["env".into()],
        env: vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("KILN_X".into(), "a b=c".into()),
        ],
        ..Default::default()
    };
    let (outcome, lines) = run(&job, &spec).await;
    assert_eq!(outcome, ExecOutcome::Exited(0));
    let mut vars = text(&lines, OutputStream::Stdout);
    vars.sort_unstable();
    // Besides what was given, only the job's process marker and the job's Docker socket (the
    // proxy that labels the containers a step starts, so they end with the job).
    let added = |v: &&str| v.starts_with("RUNNER_TRACKING_ID=") || v.starts_with("DOCKER_HOST=");
    let given: Vec<&str> = vars.iter().copied().filter(|v| !added(v)).collect();
    assert_eq!(given, ["KILN_X=a b=c", "PATH=/usr/bin:/bin"]);
    assert!(
        vars.iter()
            .any(|v| v.starts_with("RUNNER_TRACKING_ID=kiln_")),
        "{vars:?}"
    );
    assert!(host_base_env().iter().any(|(k, _)| k == "PATH"));
}

#[tokio::test]
async fn workdir_resolves_against_the_workspace() {
    let job = prepare().await;
    let workspace = Path::new(&job.env.workspace_path);
    std::fs::create_dir(workspace.join("sub")).expect("mkdir");
    let mut spec = sh("pwd");
    let (_, lines) = run(&job, &spec).await;
    assert_eq!(
        text(&lines, OutputStream::Stdout),
        [job.env.workspace_path.as_str()]
    );
    spec.workdir = "sub".into();
    let (_, lines) = run(&job, &spec).await;
    assert_eq!(
        text(&lines, OutputStream::Stdout),
        [workspace.join("sub").to_string_lossy().as_ref()]
    );
    spec.workdir = "/".into();
    let (_, lines) = run(&job, &spec).await;
    assert_eq!(text(&lines, OutputStream::Stdout), ["/"]);
    spec.workdir = "missing".into();
    let err = job
        .backend
        .exec(&job.env, &spec, &mut Vec::new(), &CancellationToken::new())
        .await
        .expect_err("missing workdir");
    assert!(matches!(err, BackendError::WorkdirMissing { .. }), "{err}");
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_error_naming_it() {
    let job = prepare().await;
    let spec = ExecSpec {
        argv: vec!["kiln-no-such-program".into()],
        env: host_base_env(),
        ..Default::default()
    };
    let err = job
        .backend
        .exec(&job.env, &spec, &mut Vec::new(), &CancellationToken::new())
        .await
        .expect_err("no such program");
    assert!(err.to_string().contains("kiln-no-such-program"), "{err}");
}

#[tokio::test]
async fn timeout_kills_the_whole_process_tree() {
    let job = prepare().await;
    let mut spec = sh("sleep 30 & echo $!; wait");
    spec.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    let (outcome, lines) = run(&job, &spec).await;
    assert_eq!(outcome, ExecOutcome::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let grandchild: i32 = text(&lines, OutputStream::Stdout)[0].parse().expect("pid");
    assert!(
        wait_until_gone(grandchild).await,
        "sleep {grandchild} survived"
    );
}

#[tokio::test]
async fn processes_ignoring_sigterm_are_killed_after_the_grace_period() {
    let job = prepare().await;
    let mut spec = sh("trap '' TERM; echo ready; sleep 30; echo never");
    spec.timeout = Some(Duration::from_millis(200));
    let started = Instant::now();
    let (outcome, lines) = run(&job, &spec).await;
    assert_eq!(outcome, ExecOutcome::TimedOut);
    // 200 ms timeout + 300 ms grace, with room for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(text(&lines, OutputStream::Stdout), ["ready"]);
}

#[tokio::test]
async fn cancellation_stops_the_process_promptly() {
    let job = prepare().await;
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let outcome = job
        .backend
        .exec(&job.env, &sh("sleep 30"), &mut Vec::new(), &cancel)
        .await
        .expect("exec");
    assert_eq!(outcome, ExecOutcome::Cancelled);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn background_processes_outlive_their_step_until_cleanup() {
    let job = prepare().await;
    let started = Instant::now();
    let (outcome, lines) = run(&job, &sh("sleep 30 >/dev/null 2>&1 & echo $!")).await;
    assert_eq!(outcome, ExecOutcome::Exited(0));
    assert!(started.elapsed() < Duration::from_secs(1));
    let pid: i32 = text(&lines, OutputStream::Stdout)[0].parse().expect("pid");
    assert!(is_running(pid), "later steps may use what a step started");
    job.backend.cleanup(&job.env).await.expect("cleanup");
    assert!(wait_until_gone(pid).await, "cleanup left {pid} running");
    job.backend
        .cleanup(&job.env)
        .await
        .expect("cleanup is idempotent");
}

#[tokio::test]
async fn background_output_does_not_hold_the_step_open() {
    let job = prepare().await;
    let started = Instant::now();
    let (outcome, _) = run(&job, &sh("(sleep 5; echo late) & echo now")).await;
    assert_eq!(outcome, ExecOutcome::Exited(0));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    job.backend.cleanup(&job.env).await.expect("cleanup");
}

#[tokio::test]
async fn container_jobs_and_services_need_docker() {
    let backend = HostBackend::new();
    let workspace = tempfile::tempdir().expect("temp workspace");
    let mut spec = JobSpec {
        job_key: "needs-docker".into(),
        workspace: workspace.path().to_path_buf(),
        container: Some(ContainerSpec {
            image: "debian".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let cancel = CancellationToken::new();
    let err = backend
        .prepare(&spec, &cancel)
        .await
        .expect_err("container");
    assert!(
        err.to_string().contains("`container:`") && err.to_string().contains("--executor docker")
    );
    spec.container = None;
    spec.services.push(ServiceSpec {
        name: "db".into(),
        container: ContainerSpec::default(),
    });
    let err = backend.prepare(&spec, &cancel).await.expect_err("services");
    assert!(err.to_string().contains("`services:`"), "{err}");
    backend
        .cleanup(&JobEnv::unprepared(&spec))
        .await
        .expect("cleanup after a failed prepare");
}

#[tokio::test]
async fn host_mounts_are_seen_at_their_host_path() {
    let backend = HostBackend::new();
    let workspace = tempfile::tempdir().expect("temp workspace");
    let spec = JobSpec {
        job_key: "mounts".into(),
        workspace: workspace.path().to_path_buf(),
        extra_mounts: vec![Mount {
            host_path: "/tmp".into(),
            job_path: "/__w/_temp".into(),
            read_only: false,
        }],
        ..Default::default()
    };
    let env = backend
        .prepare(&spec, &CancellationToken::new())
        .await
        .expect("prepare");
    assert_eq!(env.mounts[0].job_path, "/tmp");
    assert_eq!(env.workspace_path, workspace.path().to_string_lossy());
}

#[tokio::test]
async fn each_step_leads_its_own_session_and_process_group() {
    let job = prepare().await;
    // Fields 5 and 6 of /proc/PID/stat are the process group and the session.
    let (outcome, lines) = run(&job, &sh("echo $$; cut -d' ' -f5,6 /proc/$$/stat")).await;
    assert_eq!(outcome, ExecOutcome::Exited(0));
    let out = text(&lines, OutputStream::Stdout);
    let pid = out[0];
    assert_eq!(out[1], format!("{pid} {pid}"));
}
