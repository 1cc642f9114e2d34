//! The scheduler service over a real store: submissions become queued jobs, runners lease
//! them by label, completions drive the engine, lost leases are retried at most three
//! times, cancellation reaches queued and running jobs, concurrency groups span runs, and a
//! restart rebuilds every engine from its op log without losing or doubling a job.

mod service_support;

use kiln_scheduler::service::*;
use kiln_scheduler::store::*;
use kiln_workflow::Conclusion;
use service_support::*;

const PIPELINE: &str = "name: CI
on: push
jobs:
  build:
    runs-on: [self-hosted, linux]
    strategy:
      matrix:
        n: [1, 2, 3]
    steps:
      - run: echo ${{ matrix.n }} ${{ secrets.TOKEN }}
  ship:
    needs: build
    runs-on: linux
    timeout-minutes: 5
    steps:
      - run: echo shipped
";

#[test]
fn a_run_fans_out_to_runners_and_fans_in_to_success() {
    let h = Harness::new(&[(".github/workflows/ci.yml", PIPELINE)]);
    let run_id = h.submit(&[("TOKEN", "s3cret")]);
    assert_eq!(h.run(&run_id).workflow_name, "CI");
    let runners: Vec<_> = (0..3)
        .map(|i| h.runner(&format!("r{i}"), &["Linux", "self-hosted", "x64"]))
        .collect();
    let jobs: Vec<LeasedJob> = runners
        .iter()
        .map(|r| h.lease(r).expect("a matrix leg for each runner"))
        .collect();
    assert!(h.lease(&runners[0]).is_none(), "ship waits for its needs");
    let mut names: Vec<_> = jobs.iter().map(|j| j.payload.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["build (1)", "build (2)", "build (3)"]);

    let job = &jobs[0];
    assert_eq!(job.payload.workflow_path, ".github/workflows/ci.yml");
    assert_eq!(job.payload.workflow_yaml, PIPELINE);
    assert_eq!(job.payload.job_path, "build");
    assert_eq!(job.payload.runs_on, ["self-hosted", "linux"]);
    assert_eq!(
        job.payload.secrets.get("TOKEN").map(String::as_str),
        Some("s3cret")
    );
    assert!(
        !job.payload.contexts_json.contains("s3cret"),
        "secrets travel apart from the contexts: {}",
        job.payload.contexts_json
    );
    let contexts: serde_json::Value = serde_json::from_str(&job.payload.contexts_json).unwrap();
    assert!(contexts["matrix"]["n"].is_number(), "{contexts}");
    assert_eq!(contexts["github"]["repository"], "octo/app");
    assert_eq!(job.cache.url, "http://sched.test:9");
    assert!(!job.cache.token.is_empty());
    assert_eq!(
        h.s().keys().check_artifacts_token(&job.artifacts.token),
        Some(run_id.clone()),
        "the artifacts token opens this run"
    );

    for job in &jobs {
        h.s().renew(&h.holder(&job.job_ref), &job.job_ref).unwrap();
        h.finish(job, Conclusion::Success);
    }
    let ship = h.take(&runners[1], "ship");
    assert_eq!(ship.payload.timeout_ms, 5 * 60_000);
    assert_eq!(h.run(&run_id).state, RunState::Running);
    h.finish(&ship, Conclusion::Success);
    let run = h.run(&run_id);
    assert_eq!(run.state, RunState::Done);
    assert_eq!(run.conclusion, Some(Conclusion::Success));
    assert!(
        h.s().live_runs().is_empty(),
        "a finished run's engine is dropped"
    );
}

#[test]
fn a_job_goes_only_to_a_runner_with_all_its_labels_and_says_why_it_waits() {
    let h = Harness::new(&[(".github/workflows/ci.yml", PIPELINE)]);
    let run_id = h.submit(&[]);
    h.s().tick().unwrap();
    assert!(
        h.jobs(&run_id)
            .iter()
            .all(|j| j.waiting_reason == "no runner is registered"),
        "{:?}",
        h.jobs(&run_id)
    );
    let only_linux = h.runner("only-linux", &["linux"]);
    assert!(h.lease(&only_linux).is_none(), "lacks self-hosted");
    h.s().tick().unwrap();
    let reasons: Vec<String> = h
        .jobs(&run_id)
        .iter()
        .map(|j| j.waiting_reason.clone())
        .collect();
    assert!(
        reasons
            .iter()
            .all(|r| r == "no registered runner has all of the labels: self-hosted, linux"),
        "{reasons:?}"
    );
    let both = h.runner("both", &["LINUX", "Self-Hosted"]);
    h.s().tick().unwrap();
    assert!(h.jobs(&run_id).iter().all(|j| j.waiting_reason.is_empty()));
    assert!(
        h.lease(&both).is_some(),
        "labels compare case-insensitively"
    );
}

#[test]
fn a_job_no_runner_can_take_fails_after_the_queue_timeout() {
    let h = Harness::new(&[(".github/workflows/ci.yml", PIPELINE)]);
    let run_id = h.submit(&[]);
    h.clock.advance(3_599_000);
    h.s().tick().unwrap();
    assert_eq!(h.run(&run_id).state, RunState::Running, "not yet");
    h.clock.advance(2_000);
    h.s().tick().unwrap();
    let jobs = h.jobs(&run_id);
    let (builds, rest): (Vec<_>, Vec<_>) = jobs.iter().partition(|j| j.job_path == "build");
    assert_eq!(builds.len(), 3);
    assert!(
        builds
            .iter()
            .all(|j| j.conclusion == Some(Conclusion::Failure) && j.message.contains("queue")),
        "{builds:?}"
    );
    assert_eq!(rest.len(), 1, "ship, which never ran: {rest:?}");
    assert_eq!(rest[0].conclusion, Some(Conclusion::Skipped));
    let run = h.run(&run_id);
    assert_eq!(run.state, RunState::Done);
    assert_eq!(run.conclusion, Some(Conclusion::Failure));
}

const ONE_JOB: &str = "on: push
jobs:
  only:
    runs-on: linux
    steps:
      - run: 'true'
";

#[test]
fn a_lost_lease_is_queued_again_and_fails_after_three_losses() {
    let h = Harness::new(&[(".github/workflows/one.yml", ONE_JOB)]);
    let run_id = h.submit(&[]);
    let runner = h.runner("r", &["linux"]);
    let mut refs = Vec::new();
    for attempt in 1..=3 {
        let job = h.take(&runner, "only");
        assert_eq!(job.job_ref.attempt, attempt);
        h.s().renew(&h.holder(&job.job_ref), &job.job_ref).unwrap();
        refs.push(job.job_ref.clone());
        h.clock.advance(TTL_MS + 1);
        h.s().tick().unwrap();
    }
    assert!(h.lease(&runner).is_none(), "no fourth attempt");
    let job = &h.jobs(&run_id)[0];
    assert_eq!(job.conclusion, Some(Conclusion::Failure));
    assert!(
        job.message.contains("3"),
        "the reason names the losses: {}",
        job.message
    );
    assert_eq!(h.run(&run_id).conclusion, Some(Conclusion::Failure));
    let late = h.s().complete(
        &h.holder(&refs[0]),
        &refs[0],
        &result(Conclusion::Success, &[]),
    );
    assert!(
        matches!(late, Err(ServiceError::Store(StoreError::Stale { .. }))),
        "a stale lease's late completion is refused: {late:?}"
    );
}

#[test]
fn a_late_completion_from_a_lost_lease_is_refused_and_the_new_attempt_counts() {
    let h = Harness::new(&[(".github/workflows/one.yml", ONE_JOB)]);
    let run_id = h.submit(&[]);
    let a = h.runner("a", &["linux"]);
    let b = h.runner("b", &["linux"]);
    let first = h.take(&a, "only");
    h.s()
        .renew(&h.holder(&first.job_ref), &first.job_ref)
        .unwrap();
    h.clock.advance(TTL_MS + 1);
    h.s().tick().unwrap();
    let second = h.take(&b, "only");
    let late = h.s().complete(
        &h.holder(&first.job_ref),
        &first.job_ref,
        &result(Conclusion::Failure, &[]),
    );
    assert!(matches!(
        late,
        Err(ServiceError::Store(StoreError::Stale { .. }))
    ));
    assert!(
        h.s()
            .renew(&h.holder(&first.job_ref), &first.job_ref)
            .is_err(),
        "renewal refused too"
    );
    h.finish(&second, Conclusion::Success);
    h.finish(&second, Conclusion::Success);
    assert_eq!(h.run(&run_id).conclusion, Some(Conclusion::Success));
    assert_eq!(
        h.job_lines(&run_id),
        ["only=success"],
        "completed exactly once"
    );
}

#[test]
fn a_job_that_failed_by_itself_is_not_retried() {
    let h = Harness::new(&[(".github/workflows/ci.yml", PIPELINE)]);
    let run_id = h.submit(&[]);
    let runner = h.runner("r", &["linux", "self-hosted"]);
    let job = h.lease(&runner).unwrap();
    h.finish(&job, Conclusion::Failure);
    // fail-fast cancels the two queued siblings at once; ship is skipped.
    assert!(h.lease(&runner).is_none(), "nothing is retried or left");
    let run = h.run(&run_id);
    assert_eq!(run.state, RunState::Done);
    assert_eq!(run.conclusion, Some(Conclusion::Failure));
    let lines = h.job_lines(&run_id);
    assert_eq!(lines.iter().filter(|l| l.ends_with("=failure")).count(), 1);
    assert_eq!(
        lines.iter().filter(|l| l.ends_with("=cancelled")).count(),
        2,
        "{lines:?}"
    );
    assert!(
        lines.contains(&"ship=skipped".to_owned()),
        "a job that never ran is listed too: {lines:?}"
    );
    let ship = h
        .jobs(&run_id)
        .into_iter()
        .find(|j| j.name == "ship")
        .unwrap();
    assert!(!ship.message.is_empty(), "with the reason");
}

const TWO_STAGES: &str = "on: push
jobs:
  first:
    runs-on: linux
    steps:
      - run: 'true'
  second:
    runs-on: linux
    steps:
      - run: 'true'
  after:
    needs: [first, second]
    if: always()
    runs-on: linux
    steps:
      - run: 'true'
";

#[test]
fn cancelling_a_run_concludes_queued_jobs_and_flags_running_ones() {
    let h = Harness::new(&[(".github/workflows/two.yml", TWO_STAGES)]);
    let run_id = h.submit(&[]);
    let runner = h.runner("r", &["linux"]);
    let running = h.take(&runner, "first");
    h.s().cancel_run(&run_id).unwrap();
    let lines = h.job_lines(&run_id);
    assert!(lines.contains(&"second=cancelled".to_owned()), "{lines:?}");
    let status = h
        .s()
        .renew(&h.holder(&running.job_ref), &running.job_ref)
        .unwrap();
    assert!(status.cancel_requested, "the runner learns it on renewal");
    let (cancel, stale) = h
        .s()
        .heartbeat(&runner, std::slice::from_ref(&running.job_ref))
        .unwrap();
    assert_eq!(cancel, std::slice::from_ref(&running.job_ref));
    assert!(stale.is_empty());
    h.finish(&running, Conclusion::Cancelled);
    let after = h.take(&runner, "after");
    h.finish(&after, Conclusion::Success);
    let run = h.run(&run_id);
    assert_eq!(run.conclusion, Some(Conclusion::Cancelled));
}

const DEPLOY: &str = "on: push
concurrency: deploy
jobs:
  deploy:
    runs-on: linux
    steps:
      - run: 'true'
";

const DEPLOY_CANCELLING: &str = "on: push
concurrency:
  group: Deploy
  cancel-in-progress: true
jobs:
  deploy:
    runs-on: linux
    steps:
      - run: 'true'
";

#[test]
fn a_concurrency_group_holds_a_second_submission_until_the_first_is_done() {
    let h = Harness::new(&[(".github/workflows/deploy.yml", DEPLOY)]);
    let first = h.submit(&[]);
    let second = h.submit(&[]);
    let runner = h.runner("r", &["linux"]);
    let job = h.lease(&runner).unwrap();
    assert_eq!(job.payload.run_id, first);
    assert!(
        h.lease(&runner).is_none(),
        "the second run waits for the group"
    );
    h.finish(&job, Conclusion::Success);
    let job = h.lease(&runner).unwrap();
    assert_eq!(
        job.payload.run_id, second,
        "granted when the first finished"
    );
    h.finish(&job, Conclusion::Success);
    assert_eq!(h.run(&first).conclusion, Some(Conclusion::Success));
    assert_eq!(h.run(&second).conclusion, Some(Conclusion::Success));
}

#[test]
fn cancel_in_progress_stops_the_running_submission_of_the_group() {
    let h = Harness::new(&[(".github/workflows/deploy.yml", DEPLOY_CANCELLING)]);
    let first = h.submit(&[]);
    let runner = h.runner("r", &["linux"]);
    let job = h.lease(&runner).unwrap();
    let second = h.submit(&[]);
    assert!(
        h.s()
            .renew(&h.holder(&job.job_ref), &job.job_ref)
            .unwrap()
            .cancel_requested,
        "the first run's job is told to stop"
    );
    h.finish(&job, Conclusion::Cancelled);
    assert_eq!(h.run(&first).conclusion, Some(Conclusion::Cancelled));
    let job = h.lease(&runner).unwrap();
    assert_eq!(job.payload.run_id, second);
    h.finish(&job, Conclusion::Success);
    assert_eq!(h.run(&second).conclusion, Some(Conclusion::Success));
}

#[test]
fn a_newer_pending_submission_cancels_the_older_pending_one() {
    let h = Harness::new(&[(".github/workflows/deploy.yml", DEPLOY)]);
    let first = h.submit(&[]);
    let second = h.submit(&[]);
    let third = h.submit(&[]);
    assert_eq!(h.run(&second).conclusion, Some(Conclusion::Cancelled));
    let runner = h.runner("r", &["linux"]);
    let job = h.lease(&runner).unwrap();
    assert_eq!(job.payload.run_id, first);
    h.finish(&job, Conclusion::Success);
    let job = h.lease(&runner).unwrap();
    assert_eq!(job.payload.run_id, third);
}

#[test]
fn a_restart_rebuilds_every_run_and_loses_or_doubles_nothing() {
    let mut h = Harness::new(&[(".github/workflows/ci.yml", PIPELINE)]);
    let run_id = h.submit(&[("TOKEN", "s3cret")]);
    let runner = h.runner("r", &["linux", "self-hosted"]);
    let done = h.lease(&runner).unwrap();
    h.finish(&done, Conclusion::Success);
    let held = h.lease(&runner).unwrap();
    h.s()
        .renew(&h.holder(&held.job_ref), &held.job_ref)
        .unwrap();
    h.clock.advance(TTL_MS - 100);
    h.restart();
    assert_eq!(h.s().live_runs(), std::slice::from_ref(&run_id));
    h.clock.advance(TTL_MS - 100);
    h.s().tick().unwrap();
    assert!(
        h.s().renew(&h.holder(&held.job_ref), &held.job_ref).is_ok(),
        "the restart grace kept the lease alive past its old expiry"
    );
    let queued = h.lease(&runner).unwrap();
    assert!(
        h.lease(&runner).is_none(),
        "the third leg, once; ship waits"
    );
    h.finish(&held, Conclusion::Success);
    h.restart();
    h.finish(&queued, Conclusion::Success);
    let ship = h.take(&runner, "ship");
    assert_eq!(
        ship.payload.secrets.get("TOKEN").map(String::as_str),
        Some("s3cret")
    );
    h.restart();
    h.finish(&ship, Conclusion::Success);
    assert_eq!(h.run(&run_id).conclusion, Some(Conclusion::Success));
    let mut lines = h.job_lines(&run_id);
    lines.sort();
    assert_eq!(
        lines,
        [
            "build (1)=success",
            "build (2)=success",
            "build (3)=success",
            "ship=success"
        ]
    );
}

#[test]
fn a_restart_keeps_a_concurrency_group_across_runs() {
    let mut h = Harness::new(&[(".github/workflows/deploy.yml", DEPLOY)]);
    let first = h.submit(&[]);
    let second = h.submit(&[]);
    let runner = h.runner("r", &["linux"]);
    let job = h.lease(&runner).unwrap();
    h.restart();
    assert!(
        h.lease(&runner).is_none(),
        "still pending after the restart"
    );
    h.finish(&job, Conclusion::Success);
    assert_eq!(h.run(&first).conclusion, Some(Conclusion::Success));
    let job = h.lease(&runner).unwrap();
    assert_eq!(
        job.payload.run_id, second,
        "granted by the rebuilt coordinator"
    );
}

#[test]
fn the_same_idempotency_key_starts_the_runs_once() {
    let h = Harness::new(&[(".github/workflows/one.yml", ONE_JOB)]);
    let first = h.s().submit(&request(&[]), "key-1").unwrap();
    let again = h.s().submit(&request(&[]), "key-1").unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.runs, again.runs);
    assert_eq!(*h.planner.plans.lock().unwrap(), 1, "planned once");
    let runner = h.runner("r", &["linux"]);
    assert!(h.lease(&runner).is_some());
    assert!(h.lease(&runner).is_none(), "one job, not two");
}

const CALLER: &str = "on: push
jobs:
  call:
    uses: ./.github/workflows/callee.yml
    secrets: inherit
";

const CALLEE: &str = "on: workflow_call
jobs:
  inner:
    runs-on: linux
    steps:
      - run: echo ${{ secrets.TOKEN }}
";

#[test]
fn a_job_of_a_called_workflow_carries_the_callee_text() {
    let h = Harness::new(&[(".github/workflows/caller.yml", CALLER)]);
    h.planner.callees.lock().unwrap().insert(
        "./.github/workflows/callee.yml".to_owned(),
        CALLEE.to_owned(),
    );
    let run_id = h.submit(&[("TOKEN", "t")]);
    let runner = h.runner("r", &["linux"]);
    let job = h.lease(&runner).unwrap();
    assert_eq!(job.payload.job_path, "call/inner");
    assert_eq!(job.payload.workflow_path, ".github/workflows/callee.yml");
    assert_eq!(job.payload.workflow_yaml, CALLEE);
    assert_eq!(
        job.payload.secrets.get("TOKEN").map(String::as_str),
        Some("t")
    );
    h.finish(&job, Conclusion::Success);
    assert_eq!(h.run(&run_id).conclusion, Some(Conclusion::Success));
}

#[test]
fn registration_and_runner_tokens_are_checked() {
    let h = Harness::new(&[]);
    let registration = RunnerRegistration {
        name: "r".to_owned(),
        labels: vec!["linux".to_owned()],
        capacity: 1,
        version: "t".to_owned(),
    };
    assert!(matches!(
        h.s().register("wrong", &registration),
        Err(ServiceError::Unauthenticated(_))
    ));
    assert!(matches!(
        h.s().register("", &registration),
        Err(ServiceError::Unauthenticated(_))
    ));
    let (runner, token) = h.s().register(REGISTRATION, &registration).unwrap();
    assert_eq!(h.s().authenticate_runner(&token).unwrap().id, runner.id);
    assert!(h.s().authenticate_runner("nope").is_err());
    assert!(h.s().authenticate_runner(&format!("{token}x")).is_err());
}

#[test]
fn a_poll_waits_for_a_job_and_returns_it_when_one_is_queued() {
    let h = std::sync::Arc::new(Harness::new(&[(".github/workflows/one.yml", ONE_JOB)]));
    let runner = h.runner("r", &["linux"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let waited = h
            .s()
            .poll(&runner, "p1", std::time::Duration::from_millis(50))
            .await
            .unwrap();
        assert!(waited.is_none(), "nothing queued: empty after the timeout");
        let submitter = {
            let h = h.clone();
            tokio::task::spawn_blocking(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                h.submit(&[])
            })
        };
        let job = h
            .s()
            .poll(&runner, "p2", std::time::Duration::from_secs(20))
            .await
            .unwrap()
            .expect("woken by the submission");
        let run_id = submitter.await.unwrap();
        assert_eq!(job.payload.run_id, run_id);
        let again = h
            .s()
            .poll(&runner, "p2", std::time::Duration::from_millis(10))
            .await
            .unwrap()
            .expect("the same poll id gets the same job");
        assert_eq!(again.job_ref, job.job_ref);
    });
}

const RERUN: &str = "on: push
jobs:
  setup:
    runs-on: linux
    outputs:
      v: ${{ steps.s.outputs.v }}
    steps:
      - id: s
        run: echo v=42 >> $GITHUB_OUTPUT
  test:
    needs: setup
    runs-on: linux
    strategy:
      fail-fast: false
      matrix:
        n: [1, 2]
    steps:
      - run: echo ${{ needs.setup.outputs.v }}
  ship:
    needs: test
    runs-on: linux
    steps:
      - run: 'true'
";

#[test]
fn rerunning_the_failed_jobs_keeps_the_successful_ones_and_their_outputs() {
    let mut h = Harness::new(&[(".github/workflows/rerun.yml", RERUN)]);
    let first = h.submit(&[]);
    let runner = h.runner("r", &["linux"]);
    let setup = h.take(&runner, "setup");
    h.s()
        .complete(
            &h.holder(&setup.job_ref),
            &setup.job_ref,
            &result(Conclusion::Success, &[("v", "42")]),
        )
        .unwrap();
    let a = h.lease(&runner).unwrap();
    let b = h.lease(&runner).unwrap();
    let (passed, failed) = if a.payload.name == "test (1)" {
        (a, b)
    } else {
        (b, a)
    };
    h.finish(&passed, Conclusion::Success);
    assert!(
        matches!(h.s().rerun_failed(&first), Err(ServiceError::Invalid(_))),
        "a running run is not re-run"
    );
    h.finish(&failed, Conclusion::Failure);
    assert_eq!(h.run(&first).conclusion, Some(Conclusion::Failure));

    let rerun = h.s().rerun_failed(&first).unwrap();
    let second = rerun.runs[0].id.clone();
    assert_eq!(rerun.runs[0].attempt, 2);
    assert_eq!(rerun.runs[0].rerun_of.as_deref(), Some(first.as_str()));
    let again = h.take(&runner, "test (2)");
    assert!(
        h.lease(&runner).is_none(),
        "setup and test (1) do not run again"
    );
    let contexts: serde_json::Value = serde_json::from_str(&again.payload.contexts_json).unwrap();
    assert_eq!(
        contexts["needs"]["setup"]["outputs"]["v"], "42",
        "{contexts}"
    );
    assert_eq!(contexts["github"]["run_attempt"], "2");
    h.restart();
    h.finish(&again, Conclusion::Success);
    let ship = h.take(&runner, "ship");
    h.finish(&ship, Conclusion::Success);
    let run = h.run(&second);
    assert_eq!(run.conclusion, Some(Conclusion::Success));
    let mut lines = h.job_lines(&second);
    lines.sort();
    assert_eq!(
        lines,
        [
            "setup=success",
            "ship=success",
            "test (1)=success",
            "test (2)=success"
        ]
    );
    let setup_job = h
        .jobs(&second)
        .into_iter()
        .find(|j| j.name == "setup")
        .unwrap();
    assert!(
        setup_job.message.contains("attempt 1"),
        "{}",
        setup_job.message
    );
    assert!(
        matches!(h.s().rerun_failed(&second), Err(ServiceError::Invalid(_))),
        "nothing failed"
    );
}

#[test]
fn a_submitted_git_url_never_runs_a_command_on_the_scheduler() {
    let h = Harness::new(&[(".github/workflows/one.yml", ONE_JOB)]);
    let marker = h.dir.path().join("pwned");
    for url in [
        format!("ext::sh -c touch% {}", marker.display()),
        "--upload-pack=touch /tmp/x".to_owned(),
        String::new(),
    ] {
        let mut request = request(&[]);
        request.source = Some(SourceSpec {
            sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            origin: SourceOrigin::Git { url: url.clone() },
        });
        let refused = h.s().submit(&request, "");
        assert!(
            matches!(&refused, Err(ServiceError::Invalid(m)) if m.contains("is not a git URL the scheduler clones")),
            "refused before git runs: {url}: {refused:?}"
        );
    }
    assert!(!marker.exists(), "the ext:: command ran");
    let mut request = request(&[]);
    request.source = Some(SourceSpec {
        sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
        origin: SourceOrigin::Snapshot {
            digest: "ab".repeat(32),
            size: 1,
        },
    });
    let refused = h.s().submit(&request, "").unwrap_err();
    assert!(refused.to_string().contains("never uploaded"), "{refused}");
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
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

#[test]
fn a_submission_is_planned_over_its_source_at_its_commit() {
    let h = Harness::new(&[(".github/workflows/one.yml", ONE_JOB)]);
    let origin = tempfile::tempdir().unwrap();
    git(origin.path(), &["init", "-q"]);
    std::fs::write(origin.path().join("first.txt"), "1").unwrap();
    git(origin.path(), &["add", "-A"]);
    git(origin.path(), &["commit", "-qm", "one"]);
    let sha = git(origin.path(), &["rev-parse", "HEAD"]);
    std::fs::write(origin.path().join("later.txt"), "2").unwrap();
    git(origin.path(), &["add", "-A"]);
    git(origin.path(), &["commit", "-qm", "two"]);
    let mut request = request(&[]);
    request.source = Some(SourceSpec {
        sha: sha.clone(),
        origin: SourceOrigin::Git {
            url: origin.path().display().to_string(),
        },
    });
    let submission = h.s().submit(&request, "").unwrap();
    assert_eq!(submission.runs[0].sha, sha);
    assert_eq!(
        *h.planner.checkouts.lock().unwrap(),
        [vec!["first.txt".to_owned()]],
        "the checkout is at the submitted commit"
    );
    let runner = h.runner("r", &["linux"]);
    let job = h.lease(&runner).unwrap();
    let source = job.payload.source.unwrap();
    assert_eq!(source.sha, sha);
    assert!(
        job.snapshot.is_none(),
        "a git source has no snapshot endpoint"
    );
}
