//! `kiln submit`, `kiln runs`, `kiln logs`, `kiln cancel`, `kiln rerun` and `kiln runners`
//! through the built binary, against a scripted ControlService on a loopback port.

mod cli_support;
mod control_support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use cli_support::{kiln_command, output_within, text};
use control_support::{FakeControl, TOKEN};
use kiln_proto::v1 as pb;
use pb::run_event::Kind;

const LIMIT: Duration = Duration::from_secs(60);
const WORKFLOW: &str =
    "name: ci\non: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - id: hello\n        run: echo one\n";

fn kiln(fake: &FakeControl, dir: &Path) -> tokio::process::Command {
    let mut command = kiln_command();
    command
        .current_dir(dir)
        .env("KILN_URL", fake.url())
        .env("KILN_TOKEN", TOKEN)
        .env_remove("KILN_REGISTRATION_TOKEN");
    command
}

async fn output(command: &mut tokio::process::Command) -> Output {
    output_within(command, LIMIT).await
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository with one workflow, committed.
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["config", "user.name", "t"]);
    std::fs::create_dir_all(root.join(".github/workflows")).unwrap();
    std::fs::write(root.join(".github/workflows/ci.yml"), WORKFLOW).unwrap();
    std::fs::write(root.join("a.txt"), "committed\n").unwrap();
    std::fs::write(root.join(".gitignore"), "*.log\n").unwrap();
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "first"]);
    dir
}

const STARTED_MS: i64 = 1_700_000_000_000;

fn job(state: pb::JobState, conclusion: pb::Conclusion) -> pb::JobSummary {
    let done = state == pb::JobState::Done;
    pb::JobSummary {
        job_id: "job-1".into(),
        job_path: "build".into(),
        name: "build".into(),
        state: state as i32,
        conclusion: conclusion as i32,
        runner_name: "r1".into(),
        attempt: 1,
        started_unix_ms: STARTED_MS,
        finished_unix_ms: if done { STARTED_MS + 1500 } else { 0 },
        steps: if done {
            vec![pb::StepResult {
                step_id: "hello".into(),
                name: "Run echo one".into(),
                outcome: conclusion as i32,
                conclusion: conclusion as i32,
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
        outputs: if done {
            [("v".to_owned(), "1".to_owned())].into()
        } else {
            Default::default()
        },
        ..Default::default()
    }
}

fn run(state: pb::RunState, conclusion: pb::Conclusion, job: pb::JobSummary) -> pb::RunSummary {
    pb::RunSummary {
        run_id: "run-1".into(),
        workflow_name: "ci".into(),
        workflow_path: ".github/workflows/ci.yml".into(),
        event_name: "push".into(),
        attempt: 1,
        state: state as i32,
        conclusion: conclusion as i32,
        created_unix_ms: STARTED_MS - 100,
        finished_unix_ms: if state == pb::RunState::Done {
            STARTED_MS + 2000
        } else {
            0
        },
        jobs: vec![job],
        sha: "0123456789abcdef0123456789abcdef01234567".into(),
        r#ref: "refs/heads/main".into(),
    }
}

fn event(seq: u64, kind: Kind) -> pb::RunEvent {
    pb::RunEvent {
        event_seq: seq,
        run_id: "run-1".into(),
        kind: Some(kind),
    }
}

fn logs(first: u64, texts: &[&str]) -> pb::RunEvent {
    event(
        0,
        Kind::Logs(pb::JobLogLines {
            job_id: "job-1".into(),
            attempt: 1,
            lines: texts
                .iter()
                .enumerate()
                .map(|(i, t)| pb::LogLine {
                    seq: first + i as u64,
                    step_index: 0,
                    unix_ms: STARTED_MS,
                    text: (*t).to_owned(),
                })
                .collect(),
        }),
    )
}

fn step(seq: u64, phase: pb::StepPhase, conclusion: pb::Conclusion, ms: i64) -> pb::RunEvent {
    event(
        seq,
        Kind::Step(pb::StepEvent {
            job_id: "job-1".into(),
            index: 0,
            phase: phase as i32,
            step_id: "hello".into(),
            name: "Run echo one".into(),
            conclusion: conclusion as i32,
            unix_ms: ms,
        }),
    )
}

/// A run whose one job prints five lines and ends with `conclusion`.
fn script(fake: &FakeControl, conclusion: pb::Conclusion) {
    let mut state = fake.state();
    state.runs_to_start = vec![run(
        pb::RunState::Running,
        pb::Conclusion::Unspecified,
        job(pb::JobState::Queued, pb::Conclusion::Unspecified),
    )];
    state.events = vec![
        event(
            1,
            Kind::Job(job(pb::JobState::Running, pb::Conclusion::Unspecified)),
        ),
        step(
            2,
            pb::StepPhase::Started,
            pb::Conclusion::Unspecified,
            STARTED_MS,
        ),
        logs(1, &["line-1", "line-2"]),
        logs(3, &["line-3"]),
        logs(4, &["line-4", "line-5"]),
        step(3, pb::StepPhase::Finished, conclusion, STARTED_MS + 1200),
        event(4, Kind::Job(job(pb::JobState::Done, conclusion))),
        event(
            5,
            Kind::Run(run(
                pb::RunState::Done,
                conclusion,
                job(pb::JobState::Done, conclusion),
            )),
        ),
    ];
    let done = run(
        pb::RunState::Done,
        conclusion,
        job(pb::JobState::Done, conclusion),
    );
    state.finished.insert("run-1".into(), done);
}

#[tokio::test]
async fn submit_follows_across_a_broken_stream_without_losing_or_repeating_lines() {
    let fake = FakeControl::start().await;
    script(&fake, pb::Conclusion::Success);
    // The first stream breaks in the middle of the logs (after line-3), the second right
    // after the step finished: each resumes from the cursors.
    fake.state().break_watch_after = vec![4, 2];
    let repo = repository();
    let out = output(kiln(&fake, repo.path()).args(["submit", "--report", "report.json"])).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    for n in 1..=5 {
        assert_eq!(
            said.matches(&format!("[ci/build]   line-{n}\n")).count(),
            1,
            "line-{n} not exactly once: {said}"
        );
    }
    assert_eq!(
        said.matches("[ci/build] 🚀 job started").count(),
        1,
        "{said}"
    );
    assert_eq!(
        said.matches("[ci/build] ✔ Run echo one: success (1.20s)")
            .count(),
        1,
        "{said}"
    );
    assert_eq!(
        said.matches("[ci/build] ✔ job success (1.50s)").count(),
        1,
        "{said}"
    );
    assert!(said.contains("lost the scheduler"), "{said}");
    assert!(
        said.contains("kiln: skipping .github/workflows/other.yml"),
        "{said}"
    );
    assert!(said.contains("workflow ci: success"), "{said}");
    let state = fake.state();
    assert_eq!(state.watches.len(), 3, "one stream and two resumptions");
    assert_eq!(state.watches[1].after_event_seq, 2);
    assert_eq!(state.watches[1].log_cursors.get("job-1"), Some(&3));
    assert_eq!(state.watches[2].after_event_seq, 3);
    assert_eq!(state.watches[2].log_cursors.get("job-1"), Some(&5));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["workflow"], "ci");
    assert_eq!(report["conclusion"], "success");
    assert_eq!(report["jobs"][0]["id"], "build");
    assert_eq!(report["jobs"][0]["outputs"]["v"], "1");
    assert_eq!(report["jobs"][0]["started_at"], "2023-11-14T22:13:20.000Z");
    assert_eq!(report["jobs"][0]["steps"][0]["id"], "hello");
}

#[tokio::test]
async fn a_failed_run_exits_1_and_detach_prints_the_ids_without_following() {
    let fake = FakeControl::start().await;
    script(&fake, pb::Conclusion::Failure);
    let repo = repository();
    let out = output(kiln(&fake, repo.path()).arg("submit")).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("workflow ci: failure"),
        "{}",
        text(&out)
    );

    let watches = fake.state().watches.len();
    let out = output(kiln(&fake, repo.path()).args(["submit", "--detach"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "run-1\n");
    assert_eq!(
        fake.state().watches.len(),
        watches,
        "--detach followed the run"
    );
}

#[tokio::test]
async fn a_lost_submit_reply_is_retried_with_the_same_key_and_starts_nothing_twice() {
    let fake = FakeControl::start().await;
    script(&fake, pb::Conclusion::Success);
    fake.state().lose_submit_replies = 1;
    let repo = repository();
    let out = output(kiln(&fake, repo.path()).args([
        "submit", "-j", "build", "--input", "x=1", "--var", "V=2", "-s", "S=3", "--matrix",
        "os:linux",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let state = fake.state();
    assert_eq!(state.submits.len(), 2);
    assert_eq!(
        state.submits[0].idempotency_key,
        state.submits[1].idempotency_key
    );
    assert!(!state.submits[0].idempotency_key.is_empty());
    assert_eq!(state.submitted.len(), 1, "two submissions were started");
    let request = state.submits[0].request.clone().unwrap();
    let pair = |kv: &[pb::KeyValue]| {
        kv.iter()
            .map(|p| format!("{}={}", p.key, p.value))
            .collect::<Vec<_>>()
    };
    assert_eq!(request.event_name, "push");
    assert_eq!(request.job, "build");
    assert_eq!(pair(&request.inputs), ["x=1"]);
    assert_eq!(pair(&request.vars), ["V=2"]);
    assert_eq!(pair(&request.secrets), ["S=3"]);
    assert_eq!(pair(&request.matrix), ["os=linux"]);
    assert_eq!(request.r#ref, "refs/heads/main");
    assert_eq!(request.actor, "t");
}

fn run_git_bundle(bundle: &[u8], sha: &str, work: &Path) -> std::path::PathBuf {
    let file = work.join("s.bundle");
    std::fs::write(&file, bundle).unwrap();
    let clone = work.join("clone");
    git(
        work,
        &[
            "clone",
            "-q",
            "--no-checkout",
            &file.display().to_string(),
            &clone.display().to_string(),
        ],
    );
    git(&clone, &["checkout", "-q", sha]);
    clone
}

#[tokio::test]
async fn the_snapshot_holds_the_dirty_work_tree_and_leaves_the_index_and_head_alone() {
    let fake = FakeControl::start().await;
    script(&fake, pb::Conclusion::Success);
    let repo = repository();
    let root = repo.path();
    let head = git(root, &["rev-parse", "HEAD"]);
    std::fs::write(root.join("a.txt"), "modified\n").unwrap();
    std::fs::write(root.join("staged.txt"), "staged\n").unwrap();
    git(root, &["add", "staged.txt"]);
    std::fs::write(root.join("untracked.txt"), "new\n").unwrap();
    std::fs::write(root.join("ignored.log"), "noise\n").unwrap();
    let index_before = std::fs::read(root.join(".git/index")).unwrap();
    let status_before = git(root, &["status", "--porcelain"]);

    let out = output(kiln(&fake, root).args(["submit", "--detach"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read(root.join(".git/index")).unwrap(),
        index_before,
        "the index changed"
    );
    assert_eq!(git(root, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(root, &["status", "--porcelain"]), status_before);
    assert_eq!(
        git(root, &["for-each-ref"]).lines().count(),
        1,
        "a ref was added"
    );

    let (sha, bundle, digest) = {
        let state = fake.state();
        let request = state.submits[0].request.clone().unwrap();
        let source = request.source.unwrap();
        let Some(pb::source::Origin::Snapshot(snapshot)) = source.origin else {
            panic!("no snapshot")
        };
        (
            source.sha,
            state.snapshots[&snapshot.digest].clone(),
            snapshot.digest,
        )
    };
    assert_eq!(blake3::hash(&bundle).to_hex().as_str(), digest);
    assert_ne!(sha, head, "the snapshot of a dirty tree is a new commit");
    let work = tempfile::tempdir().unwrap();
    let clone = run_git_bundle(&bundle, &sha, work.path());
    let read = |name: &str| std::fs::read_to_string(clone.join(name)).ok();
    assert_eq!(read("a.txt").as_deref(), Some("modified\n"));
    assert_eq!(read("staged.txt").as_deref(), Some("staged\n"));
    assert_eq!(read("untracked.txt").as_deref(), Some("new\n"));
    assert_eq!(read("ignored.log"), None, "an ignored file was sent");
    assert_eq!(
        git(&clone, &["rev-parse", "HEAD^"]),
        head,
        "the snapshot's parent is HEAD"
    );
}

#[tokio::test]
async fn a_clean_tree_is_sent_as_head_and_a_stored_snapshot_is_not_sent_again() {
    let fake = FakeControl::start().await;
    script(&fake, pb::Conclusion::Success);
    let repo = repository();
    let head = git(repo.path(), &["rev-parse", "HEAD"]);
    for _ in 0..2 {
        let out = output(kiln(&fake, repo.path()).args(["submit", "--detach"])).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    let state = fake.state();
    assert_eq!(
        state.submits[0]
            .request
            .as_ref()
            .unwrap()
            .source
            .as_ref()
            .unwrap()
            .sha,
        head
    );
    assert_eq!(state.uploads.len(), 2);
    assert!(state.uploads[0] > 0);
    assert_eq!(
        state.uploads[1], 0,
        "the second upload sent the bundle again"
    );
}

#[tokio::test]
async fn a_wrong_token_an_unreachable_scheduler_and_an_unknown_run_say_what_to_fix() {
    let fake = FakeControl::start().await;
    let repo = repository();
    let out = output(
        kiln(&fake, repo.path())
            .args(["runs"])
            .env("KILN_TOKEN", "wrong"),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("refused the control token from KILN_TOKEN"),
        "{}",
        text(&out)
    );
    let out = output(kiln(&fake, repo.path()).args(["runs", "--token", "wrong"])).await;
    assert!(
        text(&out).contains("refused the control token from --token"),
        "{}",
        text(&out)
    );
    let out = output(
        kiln(&fake, repo.path())
            .args(["submit"])
            .env_remove("KILN_TOKEN"),
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("pass --token or set KILN_TOKEN"),
        "{}",
        text(&out)
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = output(kiln(&fake, repo.path()).args(["runners", "--url", &url])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains(&format!("cannot reach the scheduler at {url}")),
        "{}",
        text(&out)
    );

    let out = output(kiln(&fake, repo.path()).args(["cancel", "nope"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("no run nope; `kiln runs` lists"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn runs_logs_cancel_rerun_and_runners_print_tables_and_json() {
    let fake = FakeControl::start().await;
    script(&fake, pb::Conclusion::Failure);
    fake.state().runners = vec![pb::RunnerInfo {
        runner_id: "runner-1".into(),
        name: "build-host".into(),
        labels: vec!["linux".into(), "x64".into()],
        online: true,
        last_seen_unix_ms: STARTED_MS,
        running_job_ids: vec!["job-1".into()],
        version: "0.1.0".into(),
        capacity: 2,
    }];
    let repo = repository();
    let dir = repo.path();

    let out = output(kiln(&fake, dir).arg("runs")).await;
    let said = text(&out);
    assert!(
        said.starts_with("RUN    WORKFLOW  EVENT  ATTEMPT  STATUS   CREATED"),
        "{said}"
    );
    assert!(
        said.contains(
            "run-1  ci        push   1        failure  2023-11-14T22:13:19.900Z  0123456789ab"
        ),
        "{said}"
    );
    let out = output(kiln(&fake, dir).args(["runs", "--format", "json"])).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["id"], "run-1");
    assert_eq!(json[0]["status"], "failure");

    let out = output(kiln(&fake, dir).args(["logs", "run-1", "build"])).await;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert_eq!(said.matches("[ci/build]   line-").count(), 5, "{said}");
    let out = output(kiln(&fake, dir).args(["logs", "run-1", "deploy"])).await;
    assert!(
        text(&out).contains("run-1 has no job `deploy`; its jobs: build (job-1)"),
        "{}",
        text(&out)
    );

    let out = output(kiln(&fake, dir).args(["cancel", "run-1"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(fake.state().cancelled, ["run-1"]);

    let out = output(kiln(&fake, dir).args(["rerun", "run-1"])).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "rerun without --failed: {}",
        text(&out)
    );
    let out = output(kiln(&fake, dir).args(["rerun", "run-1", "--failed"])).await;
    assert!(
        text(&out).contains("run run-1 attempt 2 started"),
        "{}",
        text(&out)
    );
    assert_eq!(fake.state().reruns, ["run-1"]);

    let out = output(kiln(&fake, dir).arg("runners")).await;
    let said = text(&out);
    assert!(
        said.contains("NAME        ID        LABELS     STATUS  RUNNING"),
        "{said}"
    );
    assert!(
        said.contains("build-host  runner-1  linux,x64  online  1/2"),
        "{said}"
    );
    let out = output(kiln(&fake, dir).args(["runners", "--format", "json"])).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["labels"], serde_json::json!(["linux", "x64"]));
    assert_eq!(json[0]["online"], true);
}

/// The keys of every object, recursively, with arrays' first element standing for all;
/// `outputs` is a map whose keys are the workflow's, not the report's.
fn shape(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let inner = if k == "outputs" {
                        serde_json::Value::Null
                    } else {
                        shape(v)
                    };
                    (k.clone(), inner)
                })
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.first().map(shape).into_iter().collect())
        }
        _ => serde_json::Value::Null,
    }
}

#[tokio::test]
async fn the_report_has_kiln_runs_shape_for_the_same_results() {
    let fake = FakeControl::start().await;
    script(&fake, pb::Conclusion::Success);
    let repo = repository();
    let dir = repo.path();
    let local = output(kiln(&fake, dir).args([
        "run",
        "--executor",
        "host",
        "--no-cache",
        "--report",
        "local.json",
    ]))
    .await;
    assert_eq!(local.status.code(), Some(0), "{}", text(&local));
    let out = output(kiln(&fake, dir).args(["submit", "--report", "remote.json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    let (local, remote) = (read("local.json"), read("remote.json"));
    assert_eq!(shape(&local), shape(&remote));
    for key in ["workflow", "file", "event", "conclusion"] {
        assert_eq!(local[key], remote[key], "{key}");
    }
    for key in ["id", "name", "conclusion"] {
        assert_eq!(local["jobs"][0][key], remote["jobs"][0][key], "{key}");
    }
    assert_eq!(
        local["jobs"][0]["steps"][0]["id"],
        remote["jobs"][0]["steps"][0]["id"]
    );
}
