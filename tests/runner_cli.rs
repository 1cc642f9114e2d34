//! `kiln runner register` and `kiln runner start` through the built binary, against the fake
//! scheduler of kiln-runner's test support: what an operator types, sees and scripts against.

mod cli_support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use cli_support::{kiln_command, output_within, text};
use kiln_proto::v1 as pb;
use kiln_runner::agent::fake::{FakeScheduler, REGISTRATION_TOKEN};

const LIMIT: Duration = Duration::from_secs(60);

fn kiln() -> tokio::process::Command {
    kiln_command()
}

async fn output(command: &mut tokio::process::Command) -> Output {
    output_within(command, LIMIT).await
}

fn job(steps: &str) -> pb::JobSpec {
    pb::JobSpec {
        run_id: "run-1".to_owned(),
        job_path: "build".to_owned(),
        name: "build".to_owned(),
        workflow_path: ".github/workflows/ci.yml".to_owned(),
        workflow_yaml: format!(
            "on: push\njobs:\n  build:\n    runs-on: linux\n    steps:\n{steps}"
        ),
        contexts_json: r#"{"github":{"repository":"octo/repo","sha":""}}"#.to_owned(),
        runs_on: vec!["linux".to_owned()],
        ..Default::default()
    }
}

async fn register(fake: &FakeScheduler, config: &Path) -> Output {
    output(kiln().args([
        "runner",
        "register",
        "--url",
        &fake.url(),
        "--token",
        REGISTRATION_TOKEN,
        "--labels",
        "linux, x64,LINUX",
        "--name",
        "cli-runner",
        "--config",
        &config.display().to_string(),
    ]))
    .await
}

#[tokio::test]
async fn register_writes_private_credentials_and_start_once_runs_one_job() {
    let fake = FakeScheduler::start().await;
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("runner");
    let registered = register(&fake, &config).await;
    let said = text(&registered);
    assert!(registered.status.success(), "{said}");
    assert!(
        said.contains("registered runner cli-runner (id runner-cli-runner-"),
        "{said}"
    );
    assert!(said.contains("labels linux,x64"), "{said}");
    let file = config.join("credentials.json");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&config), 0o700);
    assert!(
        !said.contains("fake-runner-token"),
        "the token was printed: {said}"
    );

    fake.queue(job("      - run: echo from-the-cli\n"));
    fake.queue(job("      - run: echo second\n"));
    let started = output(kiln().args([
        "runner",
        "start",
        "--config",
        &config.display().to_string(),
        "--executor",
        "host",
        "--once",
    ]))
    .await;
    let said = text(&started);
    assert!(started.status.success(), "{said}");
    assert!(said.contains("runner cli-runner takes jobs from"), "{said}");
    assert!(said.contains("job build succeeded"), "{said}");
    let state = fake.state();
    assert_eq!(state.completions.len(), 1);
    assert_eq!(state.queue.len(), 1, "--once took more than one job");
    assert!(state.log_text("job-1").iter().any(|l| l == "from-the-cli"));
}

#[tokio::test]
async fn a_wrong_registration_token_and_a_missing_registration_say_what_to_do() {
    let fake = FakeScheduler::start().await;
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("runner");
    let refused = output(kiln().args([
        "runner",
        "register",
        "--url",
        &fake.url(),
        "--token",
        "wrong",
        "--labels",
        "linux",
        "--config",
        &config.display().to_string(),
    ]))
    .await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused).contains("refused the registration token"),
        "{}",
        text(&refused)
    );
    assert!(!config.join("credentials.json").exists());

    let unregistered = output(kiln().args([
        "runner",
        "start",
        "--config",
        &config.display().to_string(),
        "--executor",
        "host",
    ]))
    .await;
    assert_eq!(unregistered.status.code(), Some(2));
    assert!(
        text(&unregistered).contains("kiln runner register"),
        "{}",
        text(&unregistered)
    );
}

#[tokio::test]
async fn an_interrupt_drains_and_a_second_one_stops_the_running_job() {
    let fake = FakeScheduler::start().await;
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("runner");
    assert!(register(&fake, &config).await.status.success());
    fake.queue(job("      - run: echo started; sleep 600\n"));
    let mut runner = kiln()
        .args([
            "runner",
            "start",
            "--config",
            &config.display().to_string(),
            "--executor",
            "host",
        ])
        .spawn()
        .unwrap();
    fake.wait_for(LIMIT, "the job to start", |s| {
        s.log_text("job-1").iter().any(|l| l == "started")
    })
    .await;
    let pid = runner.id().unwrap().to_string();
    let interrupt = || {
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
    };
    assert!(interrupt().unwrap().success());
    // Draining: the job keeps running, so the runner does not exit.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        runner.try_wait().unwrap().is_none(),
        "the runner exited on the first interrupt"
    );
    assert!(interrupt().unwrap().success());
    let exited = tokio::time::timeout(LIMIT, runner.wait_with_output())
        .await
        .expect("the runner stopped in time")
        .unwrap();
    let said = text(&exited);
    assert_eq!(exited.status.code(), Some(130), "{said}");
    assert!(said.contains("no new jobs"), "{said}");
    assert!(said.contains("job build stopped"), "{said}");
    assert!(fake.state().completions.is_empty());
}
