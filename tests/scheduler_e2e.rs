//! `kiln scheduler` with real `kiln runner start --executor host` processes on loopback, and a
//! small gRPC client standing in for `kiln submit`: fan-out and fan-in with artifacts, the
//! cache across runners, label routing, a runner and the scheduler killed mid-run, concurrency
//! groups across submissions, stale leases and tokens. Short lease TTLs keep it bounded.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kiln_proto::v1 as pb;
use pb::control_service_client::ControlServiceClient;
use pb::runner_service_client::RunnerServiceClient;
use tokio::io::AsyncBufReadExt as _;
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use tonic::Request;

const LIMIT: Duration = Duration::from_secs(90);

fn kiln() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command.stdin(Stdio::null()).kill_on_drop(true);
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Sched {
    child: Child,
    data: PathBuf,
    port: u16,
    log: PathBuf,
}

impl Sched {
    async fn start(data: &Path, port: u16) -> Sched {
        let log = data.with_extension(format!("log{}", rand_suffix()));
        let file = std::fs::File::create(&log).unwrap();
        let mut child = kiln()
            .args([
                "scheduler",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data",
                &data.display().to_string(),
                "--lease-ttl",
                "3s",
                "--heartbeat-interval",
                "1s",
                "--poll-timeout",
                "2s",
            ])
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(LIMIT, lines.next_line())
            .await
            .expect("the scheduler starts in time")
            .unwrap()
            .unwrap_or_default();
        assert!(first.contains("listening on"), "{first}");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Sched {
            child,
            data: data.to_path_buf(),
            port,
            log,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn token(&self, name: &str) -> String {
        std::fs::read_to_string(self.data.join(name))
            .unwrap()
            .trim()
            .to_owned()
    }

    async fn control(&self) -> Control {
        let channel = Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        Control {
            client: ControlServiceClient::new(channel),
            token: self.token("control-token"),
        }
    }

    async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

struct Runner {
    child: Child,
    log: PathBuf,
}

impl Runner {
    async fn start(sched: &Sched, home: &Path, name: &str, labels: &str) -> Runner {
        Runner::start_with(sched, home, name, labels, &["--executor", "host"]).await
    }

    async fn start_with(
        sched: &Sched,
        home: &Path,
        name: &str,
        labels: &str,
        executor: &[&str],
    ) -> Runner {
        let config = register(sched, home, name, labels).await;
        Runner::spawn(&config, &home.join(format!("{name}.log")), executor)
    }

    /// `kiln runner start` of a registered runner; its output goes to `log` (stdout) and
    /// `log` with `.err` added (stderr, where its guard writes).
    fn spawn(config: &Path, log: &Path, executor: &[&str]) -> Runner {
        let child = kiln()
            .args(["runner", "start", "--config", &config.display().to_string()])
            .args(executor)
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("log.err")).unwrap())
            .spawn()
            .unwrap();
        Runner {
            child,
            log: log.to_path_buf(),
        }
    }

    async fn sigkill(&mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }

    /// What the runner printed, and what it (and its guard) wrote to stderr.
    fn output(&self) -> String {
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        format!(
            "{}\nstderr:\n{}",
            read(&self.log),
            read(&self.log.with_extension("log.err"))
        )
    }
}

/// Registers runner `name` with its config in `home/name`; returns that directory.
async fn register(sched: &Sched, home: &Path, name: &str, labels: &str) -> PathBuf {
    let config = home.join(name);
    let registered = tokio::time::timeout(
        LIMIT,
        kiln()
            .args([
                "runner",
                "register",
                "--url",
                &sched.url(),
                "--token",
                &sched.token("registration-token"),
                "--labels",
                labels,
                "--name",
                name,
                "--config",
                &config.display().to_string(),
            ])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(registered.status.success(), "{registered:?}");
    config
}

struct Control {
    client: ControlServiceClient<Channel>,
    token: String,
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

impl Control {
    fn req<T>(&self, message: T) -> Request<T> {
        with_token(message, &self.token)
    }

    /// Commits the repository, uploads it as a bundle, and submits a push.
    async fn submit(&mut self, repo: &Path) -> Vec<String> {
        git(repo, &["add", "-A"]);
        git(repo, &["commit", "-qm", "change", "--allow-empty"]);
        let sha = git(repo, &["rev-parse", "HEAD"]);
        let bundle = repo.with_extension(format!("bundle{}", rand_suffix()));
        git(
            repo,
            &["bundle", "create", "-q", bundle.to_str().unwrap(), "HEAD"],
        );
        let bytes = std::fs::read(&bundle).unwrap();
        let digest = blake3::hash(&bytes).to_hex().to_string();
        let chunks: Vec<pb::SnapshotChunk> = bytes
            .chunks(64 * 1024)
            .map(|data| pb::SnapshotChunk {
                digest: digest.clone(),
                size: bytes.len() as u64,
                data: data.to_vec(),
            })
            .collect();
        self.client
            .upload_snapshot(self.req(tokio_stream_iter(chunks)))
            .await
            .unwrap();
        let request = pb::SubmitRunRequest {
            request: Some(pb::RunRequest {
                event_name: "push".to_owned(),
                source: Some(pb::Source {
                    sha,
                    origin: Some(pb::source::Origin::Snapshot(pb::Snapshot {
                        digest,
                        size: bytes.len() as u64,
                        ..Default::default()
                    })),
                }),
                repository: "octo/app".to_owned(),
                r#ref: "refs/heads/main".to_owned(),
                actor: "tester".to_owned(),
                ..Default::default()
            }),
            idempotency_key: String::new(),
        };
        let response = self.client.submit_run(self.req(request)).await.unwrap();
        response
            .into_inner()
            .runs
            .into_iter()
            .map(|r| r.run_id)
            .collect()
    }

    async fn get(&mut self, run_id: &str) -> Option<pb::RunSummary> {
        let request = self.req(pb::GetRunRequest {
            run_id: run_id.to_owned(),
        });
        self.client
            .get_run(request)
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    /// Waits until `check` holds for the run (the scheduler may be restarting meanwhile).
    async fn wait(
        &mut self,
        run_id: &str,
        what: &str,
        check: impl Fn(&pb::RunSummary) -> bool,
    ) -> pb::RunSummary {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(run) = self.get(run_id).await {
                if check(&run) {
                    return run;
                }
                assert!(Instant::now() < deadline, "{what}: {run:#?}");
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the scheduler did not answer"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn done(&mut self, run_id: &str) -> pb::RunSummary {
        self.wait(run_id, "the run finishes", |r| {
            r.state == pb::RunState::Done as i32
        })
        .await
    }
}

fn tokio_stream_iter<T: Send + 'static>(
    items: Vec<T>,
) -> impl tonic::codegen::tokio_stream::Stream<Item = T> + Send + 'static {
    tonic::codegen::tokio_stream::iter(items)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn repo(dir: &Path, workflows: &[(&str, &str)]) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join(".github/workflows")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    for (name, text) in workflows {
        std::fs::write(repo.join(".github/workflows").join(name), text).unwrap();
    }
    repo
}

/// Waits until a step wrote `mark` into the file `marks`.
async fn wait_for_mark(marks: &Path, mark: &str) {
    let deadline = Instant::now() + LIMIT;
    while !std::fs::read_to_string(marks)
        .unwrap_or_default()
        .contains(mark)
    {
        assert!(Instant::now() < deadline, "the step never wrote {mark}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn conclusion(run: &pb::RunSummary) -> pb::Conclusion {
    pb::Conclusion::try_from(run.conclusion).unwrap()
}

fn job<'a>(run: &'a pb::RunSummary, name: &str) -> &'a pb::JobSummary {
    run.jobs
        .iter()
        .find(|j| j.name == name)
        .unwrap_or_else(|| panic!("no job {name}: {run:#?}"))
}

const FAN: &str = r#"on: push
jobs:
  build:
    runs-on: linux
    strategy:
      matrix:
        n: [1, 2, 3]
    steps:
      - run: mkdir -p out && echo "leg ${{ matrix.n }}" > out/leg-${{ matrix.n }}.txt && sleep 3
      - uses: actions/upload-artifact@v4
        with:
          name: leg-${{ matrix.n }}
          path: out/
  collect:
    needs: build
    runs-on: linux
    steps:
      - uses: actions/download-artifact@v4
        with:
          name: leg-1
          path: all
      - uses: actions/download-artifact@v4
        with:
          name: leg-2
          path: all
      - uses: actions/download-artifact@v4
        with:
          name: leg-3
          path: all
      - run: cat all/leg-1.txt all/leg-2.txt all/leg-3.txt | sort | tr '\n' ' ' | grep -x 'leg 1 leg 2 leg 3 '
"#;

/// Runs FAN on three runners started with `executor` and checks that each took one leg and
/// the fan-in succeeded.
async fn fan_out_and_in(names: [&str; 3], executor: &[&str]) {
    let home = tempfile::tempdir().unwrap();
    let sched = Sched::start(&home.path().join("data"), free_port()).await;
    let mut runners = Vec::new();
    for name in names {
        runners.push(Runner::start_with(&sched, home.path(), name, "linux", executor).await);
    }
    let repo = repo(home.path(), &[("fan.yml", FAN)]);
    let mut control = sched.control().await;
    let runs = control.submit(&repo).await;
    let run = control.done(&runs[0]).await;
    assert_eq!(
        conclusion(&run),
        pb::Conclusion::Success,
        "{run:#?}\n{}",
        std::fs::read_to_string(&runners[0].log).unwrap_or_default()
    );
    let mut legs: Vec<&str> = run
        .jobs
        .iter()
        .filter(|j| j.job_path == "build")
        .map(|j| j.runner_name.as_str())
        .collect();
    legs.sort();
    assert_eq!(legs, names, "one leg on each runner");
    assert_eq!(
        job(&run, "collect").conclusion,
        pb::Conclusion::Success as i32
    );
}

#[tokio::test]
async fn a_matrix_fans_out_over_three_runners_and_fans_in_with_artifacts() {
    fan_out_and_in(["r1", "r2", "r3"], &["--executor", "host"]).await;
}

#[tokio::test]
async fn a_matrix_fans_out_over_three_docker_runners_and_fans_in_with_artifacts() {
    let Some(docker) = kiln_runner::testing::require_docker().await else {
        return;
    };
    let image = kiln_runner::testing::ensure_busybox_image(&docker).await;
    let platform = format!("linux={image}");
    fan_out_and_in(
        ["d1", "d2", "d3"],
        &["--executor", "docker", "-P", &platform],
    )
    .await;
}

const CACHE: &str = r#"on: push
jobs:
  save:
    runs-on: [linux, a]
    steps:
      - run: mkdir -p c && echo cached-$GITHUB_SHA > c/file
      - uses: actions/cache@v4
        with:
          path: c
          key: k-${{ github.sha }}
  restore:
    needs: save
    runs-on: [linux, b]
    steps:
      - uses: actions/cache@v4
        id: c
        with:
          path: c
          key: k-${{ github.sha }}
      - run: test "${{ steps.c.outputs.cache-hit }}" = true && grep -q cached c/file
"#;

#[tokio::test]
async fn the_cache_saved_on_one_runner_is_restored_on_another_and_labels_route_jobs() {
    let home = tempfile::tempdir().unwrap();
    let sched = Sched::start(&home.path().join("data"), free_port()).await;
    let _other = Runner::start(&sched, home.path(), "other", "gpu").await;
    let _a = Runner::start(&sched, home.path(), "ra", "linux,a").await;
    let _b = Runner::start(&sched, home.path(), "rb", "linux,b").await;
    let repo = repo(home.path(), &[("cache.yml", CACHE)]);
    let mut control = sched.control().await;
    let runs = control.submit(&repo).await;
    let run = control.done(&runs[0]).await;
    assert_eq!(conclusion(&run), pb::Conclusion::Success, "{run:#?}");
    assert_eq!(job(&run, "save").runner_name, "ra");
    assert_eq!(job(&run, "restore").runner_name, "rb");
    assert!(
        run.jobs.iter().all(|j| j.runner_name != "other"),
        "a runner without the labels never gets a job"
    );

    // One scrape target: the scheduler's gauges and counters beside the embedded cache's.
    let (code, metrics) = http_get(&format!("{}/metrics", sched.url()), "").await;
    assert_eq!(code, 200, "{metrics}");
    for sample in [
        "kiln_scheduler_jobs_completed_total{conclusion=\"success\"} 2",
        "kiln_scheduler_jobs_leased_total 2",
        "kiln_scheduler_jobs{state=\"queued\"} 0",
        "kiln_scheduler_runs_running 0",
        "kiln_scheduler_runners{online=\"true\"} 3",
        "kiln_scheduler_runner_slots{state=\"busy\"} 0",
        "kiln_cache_entries ",
    ] {
        assert!(
            metrics.contains(sample),
            "{sample} missing from:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn a_job_whose_labels_no_runner_has_waits_with_the_reason() {
    let home = tempfile::tempdir().unwrap();
    let sched = Sched::start(&home.path().join("data"), free_port()).await;
    let _r = Runner::start(&sched, home.path(), "r", "linux").await;
    let workflow =
        "on: push\njobs:\n  gpu:\n    runs-on: [linux, gpu]\n    steps:\n      - run: 'true'\n";
    let repo = repo(home.path(), &[("gpu.yml", workflow)]);
    let mut control = sched.control().await;
    let runs = control.submit(&repo).await;
    let run = control
        .wait(&runs[0], "the job says why it waits", |r| {
            r.jobs.first().is_some_and(|j| !j.waiting_reason.is_empty())
        })
        .await;
    assert_eq!(
        run.jobs[0].waiting_reason,
        "no registered runner has all of the labels: linux, gpu"
    );
    assert_eq!(run.jobs[0].state, pb::JobState::Queued as i32);
}

/// Runs a job that marks its start and end in a file, SIGKILLs the runner holding it once
/// the step started, and lets a second runner take it over; returns the run and the marks
/// written by then (and a few seconds later).
async fn kill_a_runner_mid_job(home: &Path) -> (pb::RunSummary, Vec<String>) {
    let marks = home.join("marks");
    let workflow = format!(
        "on: push\njobs:\n  slow:\n    runs-on: linux\n    steps:\n      - run: echo start >> {m} && sleep 4 && echo end >> {m}\n",
        m = marks.display()
    );
    let sched = Sched::start(&home.join("data"), free_port()).await;
    let mut first = Runner::start(&sched, home, "first", "linux").await;
    let repo = repo(home, &[("slow.yml", &workflow)]);
    let mut control = sched.control().await;
    let runs = control.submit(&repo).await;
    control
        .wait(&runs[0], "the first runner runs the job", |r| {
            r.jobs.first().is_some_and(|j| {
                j.state == pb::JobState::Running as i32 && j.runner_name == "first"
            })
        })
        .await;
    wait_for_mark(&marks, "start").await;
    first.sigkill().await;
    let _second = Runner::start(&sched, home, "second", "linux").await;
    let run = control.done(&runs[0]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let marks = std::fs::read_to_string(&marks).unwrap();
    (run, marks.lines().map(str::to_owned).collect())
}

#[tokio::test]
async fn a_runner_killed_while_it_holds_a_job_loses_it_to_another_runner() {
    let home = tempfile::tempdir().unwrap();
    let (run, marks) = kill_a_runner_mid_job(home.path()).await;
    assert_eq!(conclusion(&run), pb::Conclusion::Success, "{run:#?}");
    let slow = job(&run, "slow");
    assert_eq!(slow.runner_name, "second", "completed on the other runner");
    assert_eq!(slow.attempt, 2, "the lost attempt counted once");
    assert_eq!(
        marks.iter().filter(|m| *m == "start").count(),
        2,
        "started once per attempt: {marks:?}"
    );
}

#[tokio::test]
async fn nothing_a_killed_runner_started_writes_afterwards() {
    let home = tempfile::tempdir().unwrap();
    let (_, marks) = kill_a_runner_mid_job(home.path()).await;
    assert_eq!(
        marks,
        ["start", "start", "end"],
        "the dead runner's step went on"
    );
}

#[tokio::test]
async fn the_scheduler_killed_mid_run_and_restarted_finishes_the_run_once() {
    let home = tempfile::tempdir().unwrap();
    let marks = home.path().join("marks");
    let workflow = format!(
        "on: push\njobs:\n  a:\n    runs-on: linux\n    steps:\n      - run: echo a-start >> {m} && sleep 4 && echo a >> {m}\n  b:\n    needs: a\n    runs-on: linux\n    steps:\n      - run: echo b >> {m}\n",
        m = marks.display()
    );
    let data = home.path().join("data");
    let port = free_port();
    let mut sched = Sched::start(&data, port).await;
    let _runner = Runner::start(&sched, home.path(), "r", "linux").await;
    let repo = repo(home.path(), &[("two.yml", &workflow)]);
    let mut control = sched.control().await;
    let runs = control.submit(&repo).await;
    control
        .wait(&runs[0], "job a runs", |r| {
            r.jobs
                .first()
                .is_some_and(|j| j.state == pb::JobState::Running as i32)
        })
        .await;
    // Killed while the step runs (not while the runner fetches the snapshot).
    wait_for_mark(&marks, "a-start").await;
    sched.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sched = Sched::start(&data, port).await;
    let mut control = sched.control().await;
    let run = control.done(&runs[0]).await;
    assert_eq!(
        conclusion(&run),
        pb::Conclusion::Success,
        "{run:#?}\n{}",
        sched.log()
    );
    assert_eq!(run.jobs.len(), 2);
    assert!(run.jobs.iter().all(|j| j.attempt == 1), "{run:#?}");
    assert_eq!(
        std::fs::read_to_string(&marks)
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        ["a-start", "a", "b"],
        "each job ran once"
    );
}

/// `kiln submit` itself, as a user runs it, follows the run while the scheduler is SIGKILLed
/// and started again: it ends with the run's result, and each line a step printed shows once.
#[tokio::test]
async fn kiln_submit_keeps_following_across_a_scheduler_restart() {
    let home = tempfile::tempdir().unwrap();
    let marks = home.path().join("marks");
    let workflow = format!(
        "on: push\njobs:\n  a:\n    runs-on: linux\n    steps:\n      - run: echo line-a-start && echo a-start >> {m} && sleep 4 && echo line-a-end\n  b:\n    needs: a\n    runs-on: linux\n    steps:\n      - run: echo line-b\n",
        m = marks.display()
    );
    let data = home.path().join("data");
    let port = free_port();
    let mut sched = Sched::start(&data, port).await;
    let _runner = Runner::start(&sched, home.path(), "r", "linux").await;
    let repo = repo(home.path(), &[("two.yml", &workflow)]);
    let output = home.path().join("submit.out");
    let mut submit = kiln()
        .args(["submit", "--url", &sched.url()])
        .env("KILN_TOKEN", sched.token("control-token"))
        .current_dir(&repo)
        .stdout(std::fs::File::create(&output).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_mark(&marks, "a-start").await;
    sched.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sched = Sched::start(&data, port).await;
    let status = tokio::time::timeout(LIMIT, submit.wait())
        .await
        .expect("kiln submit ends with the run")
        .unwrap();
    let printed = std::fs::read_to_string(&output).unwrap();
    assert!(status.success(), "{status}\n{printed}\n{}", sched.log());
    for line in ["line-a-start", "line-a-end", "line-b"] {
        let shown = printed
            .lines()
            .filter(|l| l.rsplit("] ").next().map(str::trim) == Some(line))
            .count();
        assert_eq!(shown, 1, "`{line}` shown {shown} times:\n{printed}");
    }
}

fn group_workflow(cancel_in_progress: bool) -> String {
    format!(
        "on: push\nconcurrency:\n  group: deploy\n  cancel-in-progress: {cancel_in_progress}\njobs:\n  deploy:\n    runs-on: linux\n    steps:\n      - run: sleep 3\n"
    )
}

#[tokio::test]
async fn two_submissions_to_one_concurrency_group_wait_or_cancel() {
    for cancel_in_progress in [false, true] {
        let home = tempfile::tempdir().unwrap();
        let sched = Sched::start(&home.path().join("data"), free_port()).await;
        let _r1 = Runner::start(&sched, home.path(), "r1", "linux").await;
        let _r2 = Runner::start(&sched, home.path(), "r2", "linux").await;
        let repo = repo(
            home.path(),
            &[("deploy.yml", &group_workflow(cancel_in_progress))],
        );
        let mut control = sched.control().await;
        let first = control.submit(&repo).await.remove(0);
        control
            .wait(&first, "the first deploy runs", |r| {
                r.jobs
                    .first()
                    .is_some_and(|j| j.state == pb::JobState::Running as i32)
            })
            .await;
        let second = control.submit(&repo).await.remove(0);
        let pending = control.get(&second).await.unwrap();
        assert!(
            pending.jobs.is_empty(),
            "the second run waits for the group before any job starts: {pending:#?}"
        );
        let first_run = control.done(&first).await;
        let expected = if cancel_in_progress {
            pb::Conclusion::Cancelled
        } else {
            pb::Conclusion::Success
        };
        assert_eq!(conclusion(&first_run), expected, "{first_run:#?}");
        let second_run = control.done(&second).await;
        assert_eq!(conclusion(&second_run), pb::Conclusion::Success);
    }
}

#[tokio::test]
async fn tokens_are_checked_and_a_stale_lease_cannot_complete() {
    let home = tempfile::tempdir().unwrap();
    let sched = Sched::start(&home.path().join("data"), free_port()).await;
    let mut control = sched.control().await;
    let listing = pb::ListRunsRequest { limit: 5 };
    let missing = control.client.list_runs(Request::new(listing)).await;
    assert_eq!(missing.unwrap_err().code(), tonic::Code::Unauthenticated);
    let wrong = control.client.list_runs(with_token(listing, "wrong")).await;
    assert_eq!(wrong.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert!(control.client.list_runs(control.req(listing)).await.is_ok());

    let channel = Channel::from_shared(sched.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut runner = RunnerServiceClient::new(channel);
    let bad = runner
        .register(pb::RegisterRequest {
            registration_token: "wrong".to_owned(),
            name: "fake".to_owned(),
            labels: vec!["linux".to_owned()],
            protocol_version: kiln_proto::PROTOCOL_VERSION,
            ..Default::default()
        })
        .await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::Unauthenticated);
    let registered = runner
        .register(pb::RegisterRequest {
            registration_token: sched.token("registration-token"),
            name: "fake".to_owned(),
            labels: vec!["linux".to_owned()],
            protocol_version: kiln_proto::PROTOCOL_VERSION,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let heartbeat = runner
        .heartbeat(with_token(pb::HeartbeatRequest::default(), "nope"))
        .await;
    assert_eq!(heartbeat.unwrap_err().code(), tonic::Code::Unauthenticated);
    let token = registered.runner_token.clone();

    let workflow =
        "on: push\njobs:\n  only:\n    runs-on: linux\n    steps:\n      - run: 'true'\n";
    let repo = repo(home.path(), &[("one.yml", workflow)]);
    let runs = control.submit(&repo).await;
    let poll = |id: &str| {
        with_token(
            pb::PollJobRequest {
                poll_id: id.to_owned(),
                free_slots: 1,
            },
            &token,
        )
    };
    let first = runner
        .poll_job(poll("p1"))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let first_ref = first.r#ref.clone().unwrap();
    runner
        .renew_lease(with_token(
            pb::RenewLeaseRequest {
                job: Some(first_ref.clone()),
            },
            &token,
        ))
        .await
        .unwrap();
    // The lease runs out (TTL 3 s) and the job is queued again as attempt 2.
    let deadline = Instant::now() + LIMIT;
    let second = loop {
        if let Some(job) = runner
            .poll_job(poll(&format!("p{}", rand_suffix() + 2)))
            .await
            .unwrap()
            .into_inner()
            .job
        {
            break job;
        }
        assert!(Instant::now() < deadline, "the job never came back");
    };
    let second_ref = second.r#ref.clone().unwrap();
    assert_eq!(second_ref.attempt, 2);
    let complete = |job: pb::JobRef| {
        with_token(
            pb::CompleteJobRequest {
                job: Some(job),
                conclusion: pb::Conclusion::Success as i32,
                ..Default::default()
            },
            &token,
        )
    };
    let late = runner.complete_job(complete(first_ref)).await;
    assert_eq!(late.unwrap_err().code(), tonic::Code::FailedPrecondition);
    runner
        .complete_job(complete(second_ref.clone()))
        .await
        .unwrap();
    runner.complete_job(complete(second_ref)).await.unwrap();
    let run = control.done(&runs[0]).await;
    assert_eq!(conclusion(&run), pb::Conclusion::Success);
    let spec = second.spec.unwrap();
    let snapshot = match spec.source.unwrap().origin.unwrap() {
        pb::source::Origin::Snapshot(s) => s,
        other => panic!("{other:?}"),
    };
    let client = reqwest_get(&snapshot.url, &snapshot.token).await;
    assert_eq!(
        client, 403,
        "the job is done: its snapshot token opens nothing"
    );
    assert_eq!(reqwest_get(&snapshot.url, "forged").await, 401);
}

/// The status of an HTTP GET with a bearer token (a raw HTTP/1.1 request, to need no client).
async fn reqwest_get(url: &str, token: &str) -> u16 {
    http_get(url, token).await.0
}

/// `(status, body)` of a GET over HTTP/1.1.
async fn http_get(url: &str, token: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

#[tokio::test]
async fn sigterm_stops_the_scheduler_while_a_watch_stream_is_open() {
    let home = tempfile::tempdir().unwrap();
    let mut sched = Sched::start(&home.path().join("data"), free_port()).await;
    let mut control = sched.control().await;
    let mut stream = control
        .client
        .watch_run(control.req(pb::WatchRunRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let watcher = tokio::spawn(async move { while let Ok(Some(_)) = stream.message().await {} });
    let pid = sched.child.id().unwrap();
    let started = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), sched.child.wait())
        .await
        .expect("the scheduler stops in time")
        .unwrap();
    assert!(status.success(), "{status:?}\n{}", sched.log());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(sched.log().contains("stopping"), "{}", sched.log());
    let _ = tokio::time::timeout(Duration::from_secs(5), watcher).await;
}

const REPORTED: &str = r####"on: push
jobs:
  build:
    strategy:
      matrix:
        os: [alpha, beta]
        include:
          - os: beta
            extra: { deep: true }
    runs-on: ubuntu-latest
    outputs:
      zz_declared_first: ${{ steps.o.outputs.z }}
      aa_declared_second: ${{ steps.o.outputs.a }}
    steps:
      - id: o
        run: printf 'z=1\na=2\n' >> "$GITHUB_OUTPUT"
      - run: mkdir -p c && echo "${{ matrix.os }}" > c/file
      - uses: actions/cache@v4
        with:
          path: c
          key: k-${{ matrix.os }}-${{ github.sha }}
      - run: echo "### built ${{ matrix.os }}" >> "$GITHUB_STEP_SUMMARY"
"####;

/// `kiln submit --report` writes what `kiln run --report` writes for the same workflow: each
/// leg's matrix values, its step summary and its cache steps' reports come through the
/// runner, the scheduler's store and GetRun unchanged.
#[tokio::test]
async fn kiln_submit_reports_matrix_summary_and_cache_steps_as_kiln_run_does() {
    let home = tempfile::tempdir().unwrap();
    let sched = Sched::start(&home.path().join("data"), free_port()).await;
    let _runner = Runner::start(&sched, home.path(), "r", "ubuntu-latest").await;
    let repo = repo(home.path(), &[("reported.yml", REPORTED)]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "reported"]);
    let submitted = tokio::time::timeout(
        LIMIT,
        kiln()
            .args(["submit", "--url", &sched.url(), "--report", "remote.json"])
            .env("KILN_TOKEN", sched.token("control-token"))
            .current_dir(&repo)
            .output(),
    )
    .await
    .expect("kiln submit ends")
    .unwrap();
    assert!(submitted.status.success(), "{submitted:?}\n{}", sched.log());
    let local = tokio::time::timeout(
        LIMIT,
        kiln()
            .args(["run", "--executor", "host", "--report", "local.json"])
            .env("XDG_CACHE_HOME", home.path().join("local-cache"))
            .current_dir(&repo)
            .output(),
    )
    .await
    .expect("kiln run ends")
    .unwrap();
    assert!(local.status.success(), "{local:?}");

    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(repo.join(name)).unwrap()).unwrap()
    };
    let by_name = |report: &serde_json::Value| -> Vec<serde_json::Value> {
        let mut jobs = report["jobs"].as_array().unwrap().clone();
        jobs.sort_by_key(|j| j["name"].as_str().unwrap_or_default().to_owned());
        jobs
    };
    // Outputs keep the order the workflow declares them in, as the report's text shows it.
    for name in ["remote.json", "local.json"] {
        let text = std::fs::read_to_string(repo.join(name)).unwrap();
        let first = text.find("zz_declared_first").expect("the first output");
        let second = text.find("aa_declared_second").expect("the second output");
        assert!(first < second, "{name}: outputs out of order:\n{text}");
    }
    let (remote, local) = (by_name(&read("remote.json")), by_name(&read("local.json")));
    assert_eq!(remote.len(), 2, "{remote:#?}");
    assert_eq!(remote.len(), local.len());
    assert_eq!(remote[1]["matrix"]["extra"]["deep"], true, "{remote:#?}");
    for (remote, local) in remote.iter().zip(&local) {
        assert_eq!(remote["name"], local["name"]);
        assert_eq!(
            remote["matrix"], local["matrix"],
            "matrix of {}",
            local["name"]
        );
        assert!(remote["summary"].as_str().unwrap().contains("### built"));
        assert_eq!(
            remote["summary"], local["summary"],
            "summary of {}",
            local["name"]
        );
        let caches = |job: &serde_json::Value| -> Vec<serde_json::Value> {
            job["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["cache"].clone())
                .collect()
        };
        assert!(
            caches(remote).iter().any(|c| c["save"] == "saved"),
            "{remote:#?}"
        );
        assert_eq!(
            caches(remote),
            caches(local),
            "cache steps of {}",
            local["name"]
        );
    }
}

/// `kiln logs RUN` without --follow prints the lines stored so far of a run still running,
/// then exits; with the run done it prints them all.
#[tokio::test]
async fn kiln_logs_prints_what_a_running_run_has_printed_so_far() {
    let home = tempfile::tempdir().unwrap();
    let marks = home.path().join("marks");
    let release = home.path().join("release");
    let workflow = format!(
        "on: push\njobs:\n  slow:\n    runs-on: linux\n    steps:\n      - run: echo early-$((40+2)) && echo started >> {m} && while [ ! -e {r} ]; do sleep 0.1; done && echo late-$((40+2))\n",
        m = marks.display(),
        r = release.display()
    );
    let sched = Sched::start(&home.path().join("data"), free_port()).await;
    let _runner = Runner::start(&sched, home.path(), "r", "linux").await;
    let repo = repo(home.path(), &[("slow.yml", &workflow)]);
    let mut control = sched.control().await;
    let run_id = control.submit(&repo).await.remove(0);
    wait_for_mark(&marks, "started").await;
    let logs = || async {
        let out = tokio::time::timeout(
            LIMIT,
            kiln()
                .args(["logs", &run_id, "--url", &sched.url()])
                .env("KILN_TOKEN", sched.token("control-token"))
                .output(),
        )
        .await
        .expect("kiln logs without --follow returns")
        .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The step's first line may reach the scheduler a moment after the mark (the command
    // line shows the words unexpanded: early-$((40+2)), so only the output matches).
    let deadline = Instant::now() + LIMIT;
    let mut printed = logs().await;
    while !printed.contains("early-42") {
        assert!(
            Instant::now() < deadline,
            "never printed early-42: {printed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        printed = logs().await;
    }
    assert!(!printed.contains("late-42"), "{printed}");

    std::fs::write(&release, "").unwrap();
    let run = control.done(&run_id).await;
    assert_eq!(conclusion(&run), pb::Conclusion::Success, "{run:#?}");
    let printed = logs().await;
    for line in ["early-42", "late-42"] {
        assert_eq!(printed.matches(line).count(), 1, "{printed}");
    }
}

/// The runner id `kiln runner register` wrote to `config`.
fn runner_id(config: &Path) -> String {
    let text = std::fs::read_to_string(config.join("credentials.json")).unwrap();
    let credentials: serde_json::Value = serde_json::from_str(&text).unwrap();
    credentials["runner_id"].as_str().unwrap().to_owned()
}

/// Every container (running or not) and network that carries `label` (`KEY=VALUE`), as
/// `container NAME` / `network NAME`, each with its runner-process label.
async fn objects_labelled(
    docker: &kiln_runner::backend::DockerBackend,
    label: &str,
) -> Vec<(String, String)> {
    use bollard::query_parameters::ListNetworksOptionsBuilder;
    let process = |labels: Option<&std::collections::HashMap<String, String>>| {
        labels
            .and_then(|l| l.get(kiln_runner::agent::RUNNER_PROCESS_LABEL))
            .cloned()
            .unwrap_or_default()
    };
    let mut found: Vec<(String, String)> =
        kiln_runner::testing::containers_with_label(docker, label)
            .await
            .into_iter()
            .map(|c| {
                let name = c.names.unwrap_or_default().join(",");
                (format!("container {name}"), process(c.labels.as_ref()))
            })
            .collect();
    let filters = std::collections::HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
    let networks = docker
        .client()
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .unwrap();
    found.extend(networks.into_iter().map(|n| {
        (
            format!("network {}", n.name.unwrap_or_default()),
            process(n.labels.as_ref()),
        )
    }));
    found
}

fn docker_cli_present() -> bool {
    std::process::Command::new("docker")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// A Docker runner SIGKILLed while its jobs run: its guard removes every container and
/// network its jobs created (job and service containers, the service network, a Docker
/// action's container, and one a host step started with `docker run -d` through the job's
/// socket), all of which carry the runner's id and this start of it.
#[tokio::test]
async fn a_killed_docker_runners_guard_removes_its_jobs_containers_and_networks() {
    let Some(docker) = kiln_runner::testing::require_docker().await else {
        return;
    };
    let image = kiln_runner::testing::ensure_busybox_image(&docker).await;
    let home = tempfile::tempdir().unwrap();
    let sched = Sched::start(&home.path().join("data"), free_port()).await;
    let platform = format!("linux={image}");
    let mut runner = Runner::start_with(
        &sched,
        home.path(),
        "dk",
        "linux,host",
        &[
            "--executor",
            "docker",
            "-P",
            &platform,
            "-P",
            "host=-self-hosted",
            "--capacity",
            "2",
        ],
    )
    .await;
    let id = runner_id(&home.path().join("dk"));
    let mut workflow = format!(
        "on: push\njobs:\n  boxed:\n    runs-on: linux\n    services:\n      web:\n        image: {image}\n    steps:\n      - uses: docker://{image}\n        with:\n          entrypoint: sleep\n          args: '300'\n"
    );
    // The container a step starts through the job's socket; the host job needs the CLI.
    let cli = docker_cli_present();
    if cli {
        workflow.push_str(&format!(
            "  hosted:\n    runs-on: host\n    steps:\n      - run: docker run -d --name kiln-guard-e2e-{}-{} {image} sleep 300 && sleep 300\n",
            std::process::id(),
            rand_suffix()
        ));
    } else {
        eprintln!("NOTE: no docker CLI here: the container a step starts through the job's socket is not covered");
    }
    // Job, service and action containers (and the step's), and the service network.
    let expected = if cli { 5 } else { 4 };
    let repo = repo(home.path(), &[("guard.yml", &workflow)]);
    let mut control = sched.control().await;
    control.submit(&repo).await;
    let label = format!("{}={id}", kiln_runner::agent::RUNNER_LABEL);
    let deadline = Instant::now() + LIMIT;
    let objects = loop {
        let objects = objects_labelled(&docker, &label).await;
        if objects.len() >= expected {
            break objects;
        }
        assert!(
            Instant::now() < deadline,
            "the jobs' objects never all carried {label}: {objects:?}\n{}",
            runner.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let this_start = format!("{}-", runner.child.id().unwrap());
    assert!(
        objects
            .iter()
            .all(|(_, process)| process.starts_with(&this_start)),
        "every object names this start of the runner ({this_start}...): {objects:?}"
    );

    runner.sigkill().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = objects_labelled(&docker, &label).await;
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "20 s after the runner was killed, its jobs' objects remain: {left:?}\n{}",
            runner.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The guard writes its line once the last removal returned, a moment after.
    let said = "removed the containers and networks its jobs left";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !runner.output().contains(said) {
        assert!(
            Instant::now() < deadline,
            "the guard says what it removed: {}",
            runner.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates and starts a busybox container (`sleep 300`) with these labels; returns its name.
async fn labelled_container(
    docker: &kiln_runner::backend::DockerBackend,
    image: &str,
    labels: &[(&str, &str)],
) -> String {
    use bollard::models::ContainerCreateBody;
    use bollard::query_parameters::CreateContainerOptionsBuilder;
    let name = format!("kiln-guard-test-{}-{}", std::process::id(), rand_suffix());
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(vec!["sleep".to_owned(), "300".to_owned()]),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    let created = docker
        .client()
        .create_container(Some(options), body)
        .await
        .unwrap();
    docker
        .client()
        .start_container(&created.id, None)
        .await
        .unwrap();
    name
}

async fn container_exists(docker: &kiln_runner::backend::DockerBackend, name: &str) -> bool {
    docker.client().inspect_container(name, None).await.is_ok()
}

/// A runner started again removes the containers and networks labelled with its id that an
/// earlier start left, though its work directory holds no job folder naming them; it leaves
/// alone another runner's, and those of a start of it that still runs.
#[tokio::test]
async fn a_runner_started_again_removes_what_an_earlier_start_left_without_a_job_folder() {
    use kiln_runner::agent::{RUNNER_LABEL, RUNNER_PROCESS_LABEL};
    let Some(docker) = kiln_runner::testing::require_docker().await else {
        return;
    };
    let image = kiln_runner::testing::ensure_busybox_image(&docker).await;
    let home = tempfile::tempdir().unwrap();
    let sched = Sched::start(&home.path().join("data"), free_port()).await;
    let config = register(&sched, home.path(), "again", "linux").await;
    let id = runner_id(&config);
    // A pid above Linux's highest: that start of the runner is gone.
    let dead = "4194305-0bad";
    let left = labelled_container(
        &docker,
        &image,
        &[(RUNNER_LABEL, &id), (RUNNER_PROCESS_LABEL, dead)],
    )
    .await;
    let network = format!("kiln-guard-test-{}-{}", std::process::id(), rand_suffix());
    docker
        .client()
        .create_network(bollard::models::NetworkCreateRequest {
            name: network.clone(),
            labels: Some(std::collections::HashMap::from([
                (RUNNER_LABEL.to_owned(), id.clone()),
                (RUNNER_PROCESS_LABEL.to_owned(), dead.to_owned()),
            ])),
            ..Default::default()
        })
        .await
        .unwrap();
    let other_runner = labelled_container(
        &docker,
        &image,
        &[
            (RUNNER_LABEL, "another-runner"),
            (RUNNER_PROCESS_LABEL, dead),
        ],
    )
    .await;
    // A process that looks like a live `kiln runner start` of the same runner.
    let mut live = std::process::Command::new("sh")
        .args(["-c", "sleep 120; true", "runner", "start"])
        .spawn()
        .unwrap();
    let live_process = format!("{}-ab", live.id());
    let live_start = labelled_container(
        &docker,
        &image,
        &[(RUNNER_LABEL, &id), (RUNNER_PROCESS_LABEL, &live_process)],
    )
    .await;

    let runner = Runner::spawn(
        &config,
        &home.path().join("again.log"),
        &["--executor", "docker"],
    );
    let deadline = Instant::now() + LIMIT;
    while !runner.output().contains("takes jobs from") {
        assert!(
            Instant::now() < deadline,
            "the runner never started: {}",
            runner.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = runner.output();
    let gone = (
        container_exists(&docker, &left).await,
        docker
            .client()
            .inspect_network(&network, None)
            .await
            .is_ok(),
    );
    let kept = (
        container_exists(&docker, &other_runner).await,
        container_exists(&docker, &live_start).await,
    );
    for name in [&left, &other_runner, &live_start] {
        let _ = docker
            .client()
            .remove_container(
                name,
                Some(
                    bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .build(),
                ),
            )
            .await;
    }
    let _ = docker.client().remove_network(&network).await;
    let _ = live.kill();
    let _ = live.wait();
    assert_eq!(
        gone,
        (false, false),
        "the earlier start's container and network are removed: {output}"
    );
    assert_eq!(
        kept,
        (true, true),
        "another runner's container and a live start's are kept: {output}"
    );
    assert!(
        output.contains(&format!("removed container {left}, left by an earlier run"))
            && output.contains(&format!("removed network {network}"))
            && output.contains(&format!("left {live_start} alone")),
        "{output}"
    );
}

/// The guard of a runner whose Docker daemon does not answer still ends, within its bound,
/// and says on stderr that the containers could not be removed (the next start will).
#[tokio::test]
async fn the_guard_ends_in_bounded_time_when_docker_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    // Accepts every connection and never answers.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let started = Instant::now();
    let mut guard = kiln()
        .args([
            "runner",
            "guard",
            "--runner-pid",
            "4194305",
            "--instance",
            "4194305-0bad",
        ])
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The runner's end of the pipe closes: the runner is gone.
    drop(guard.stdin.take());
    let out = tokio::time::timeout(Duration::from_secs(60), guard.wait_with_output())
        .await
        .expect("the guard ends although Docker does not answer")
        .unwrap();
    silent.abort();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("dev.kiln.runner-process=4194305-0bad) could not be removed")
            && stderr.contains("the runner's next start removes them"),
        "{stderr}"
    );
}
