//! The runner agent against a fake scheduler, with the host executor: jobs run, report their
//! steps, logs and completion; cancellation; `--once`; capacity; lost replies.

mod agent_support;

use std::time::{Duration, Instant};

use agent_support::{alive, spec, start_agent};
use kiln_proto::v1 as pb;
use kiln_runner::agent::fake::FakeScheduler;
use kiln_runner::agent::{AgentEvent, AgentExit, JobOutcome};
use kiln_workflow::Conclusion;

const LIMIT: Duration = Duration::from_secs(60);

fn completed(state: &kiln_runner::agent::fake::FakeState, n: usize) -> bool {
    state.completions.len() >= n
}

/// Lines are numbered 1, 2, 3... without a gap or a repeat.
fn assert_contiguous(state: &kiln_runner::agent::fake::FakeState, job: &str) {
    let seqs: Vec<u64> = state.logs[job].keys().copied().collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected);
}

#[tokio::test]
async fn a_job_runs_and_reports_steps_logs_outputs_in_order_despite_lost_replies() {
    let fake = FakeScheduler::start().await;
    {
        let mut state = fake.state();
        // One batch stored but its reply lost, then one refused before storing: both are
        // sent again, and neither loses nor repeats a line.
        state.lose_append_replies = 1;
        state.refuse_appends = 1;
    }
    fake.queue(spec(
        "build",
        r###"      - name: first
        run: |
          for i in 1 2 3; do echo "one-$i"; done
      - id: out
        run: |
          echo "greeting=hello" >> "$GITHUB_OUTPUT"
          echo "## done" >> "$GITHUB_STEP_SUMMARY"
          for i in 1 2 3; do echo "two-$i"; done
      - if: failure()
        run: echo never
"###,
    ));
    let mut agent = start_agent(&fake, 1, true).await;
    let exit = agent.finish(LIMIT).await.expect("the runner ends well");
    assert_eq!(
        exit,
        AgentExit::Once(JobOutcome::Reported(Conclusion::Success))
    );

    let state = fake.state();
    assert_eq!(state.completions.len(), 1);
    let done = &state.completions[0];
    assert_eq!(done.conclusion, pb::Conclusion::Success as i32);
    assert_eq!(done.outputs["greeting"], "hello");
    assert_eq!(done.summary, "## done\n");
    let steps: Vec<(&str, i32)> = done
        .steps
        .iter()
        .map(|s| (s.step_id.as_str(), s.conclusion))
        .collect();
    assert_eq!(
        steps,
        [
            ("__run", pb::Conclusion::Success as i32),
            ("out", pb::Conclusion::Success as i32),
            ("__run_2", pb::Conclusion::Skipped as i32),
        ]
    );

    assert_contiguous(&state, "job-1");
    let text = state.log_text("job-1");
    let ours: Vec<&String> = text
        .iter()
        .filter(|l| l.starts_with("one-") || l.starts_with("two-"))
        .collect();
    assert_eq!(ours, ["one-1", "one-2", "one-3", "two-1", "two-2", "two-3"]);
    assert_eq!(done.last_log_seq, state.logs["job-1"].len() as u64);
    // Lines carry the index of the step that printed them.
    let first = state.logs["job-1"]
        .values()
        .find(|l| l.text == "one-1")
        .unwrap();
    let second = state.logs["job-1"]
        .values()
        .find(|l| l.text == "two-1")
        .unwrap();
    assert_eq!((first.step_index, second.step_index), (0, 1));

    // Started and finished per step, in order; the skipped step only finished.
    let reports: Vec<(u32, i32)> = state.steps.iter().map(|s| (s.index, s.phase)).collect();
    let (started, finished) = (
        pb::StepPhase::Started as i32,
        pb::StepPhase::Finished as i32,
    );
    assert_eq!(
        reports,
        [
            (0, started),
            (0, finished),
            (1, started),
            (1, finished),
            (2, finished)
        ]
    );
    // A step's end reaches the scheduler after the lines it printed: who follows the run
    // sees them between its start and its end.
    let lines = &state.logs["job-1"];
    for (report, stored) in state.steps.iter().zip(&state.lines_before_step) {
        if report.phase == finished {
            let printed = lines
                .values()
                .filter(|l| l.step_index == report.index as i32)
                .map(|l| l.seq as usize)
                .max()
                .unwrap_or(0);
            assert!(
                *stored >= printed,
                "step {} ended with {stored} lines stored, before its line {printed}",
                report.index
            );
        }
    }
    assert!(
        state.leases["job-1"].renewals >= 1,
        "the lease was never renewed"
    );
    // The second poll never happened: --once took one job.
    assert_eq!(state.queue.len(), 0);
}

#[tokio::test]
async fn a_cancel_in_a_renewal_reply_stops_a_long_step_within_one_renew_interval() {
    let fake = FakeScheduler::start().await;
    let pid_file = tempfile::NamedTempFile::new().unwrap();
    let pid_path = pid_file.path().display().to_string();
    fake.queue(spec(
        "slow",
        &format!(
            r#"      - run: |
          echo $$ > {pid_path}
          echo started
          sleep 600
      - if: always()
        run: echo cleanup-ran
"#
        ),
    ));
    let mut agent = start_agent(&fake, 1, true).await;
    fake.wait_for(LIMIT, "the step to start", |s| {
        s.log_text("job-1").iter().any(|l| l == "started")
    })
    .await;
    let pid: i32 = std::fs::read_to_string(pid_file.path())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    let cancelled_at = Instant::now();
    fake.state().cancel.insert("job-1".to_owned());
    let exit = agent.finish(LIMIT).await.expect("the runner ends well");
    let renew = Duration::from_millis(u64::from(fake.state().timings.renew_interval_ms));
    assert!(
        cancelled_at.elapsed() < renew + Duration::from_secs(4),
        "cancellation took {:?}",
        cancelled_at.elapsed()
    );
    assert_eq!(
        exit,
        AgentExit::Once(JobOutcome::Reported(Conclusion::Cancelled))
    );
    assert!(!alive(pid), "the step's process outlived the cancellation");
    let state = fake.state();
    let done = &state.completions[0];
    assert_eq!(done.conclusion, pb::Conclusion::Cancelled as i32);
    // As on GitHub, an `always()` step still runs after a cancellation.
    assert!(state.log_text("job-1").iter().any(|l| l == "cleanup-ran"));
    assert_contiguous(&state, "job-1");
    let events = agent.drain_events();
    assert!(events
        .iter()
        .any(|e| matches!(e, AgentEvent::CancelRequested { job_id, .. } if job_id == "job-1")));
}

#[tokio::test]
async fn a_cancel_in_the_heartbeat_reply_cancels_the_job() {
    let fake = FakeScheduler::start().await;
    fake.queue(spec("slow", "      - run: echo started; sleep 600\n"));
    let mut agent = start_agent(&fake, 1, true).await;
    fake.wait_for(LIMIT, "the step to start", |s| {
        s.log_text("job-1").iter().any(|l| l == "started")
    })
    .await;
    fake.state().heartbeat_cancel.insert("job-1".to_owned());
    let exit = agent.finish(LIMIT).await.expect("the runner ends well");
    assert_eq!(
        exit,
        AgentExit::Once(JobOutcome::Reported(Conclusion::Cancelled))
    );
}

/// Queues two jobs and runs a `--once` runner with `capacity` slots: it must take one.
async fn run_once_with_two_queued(fake: &FakeScheduler, capacity: usize) {
    fake.queue(spec("a", "      - run: echo a\n"));
    fake.queue(spec("b", "      - run: echo b\n"));
    let mut agent = start_agent(fake, capacity, true).await;
    let exit = agent.finish(LIMIT).await.expect("the runner ends well");
    assert_eq!(
        exit,
        AgentExit::Once(JobOutcome::Reported(Conclusion::Success))
    );
    let state = fake.state();
    assert_eq!(state.leases.len(), 1, "more than one job was leased");
    assert_eq!(state.queue.len(), 1);
    assert_eq!(state.completions.len(), 1);
}

#[tokio::test]
async fn once_takes_one_job_and_returns() {
    let fake = FakeScheduler::start().await;
    run_once_with_two_queued(&fake, 4).await;
}

#[tokio::test]
async fn capacity_n_runs_n_jobs_at_once_and_never_more() {
    let fake = FakeScheduler::start().await;
    for name in ["a", "b", "c", "d", "e"] {
        fake.queue(spec(name, "      - run: sleep 1.5\n"));
    }
    let mut agent = start_agent(&fake, 2, false).await;
    fake.wait_for(LIMIT, "five completions", |s| completed(s, 5))
        .await;
    agent.stop.drain.cancel();
    let exit = agent.finish(LIMIT).await.expect("the runner ends well");
    assert_eq!(exit, AgentExit::Drained);
    let state = fake.state();
    assert_eq!(state.most_running, 2, "never two at once, or more than two");
    // A poll only goes out with a free slot.
    assert!(
        state.polls.iter().all(|p| p.free_slots >= 1),
        "{:?}",
        state.polls
    );
    // The heartbeats told the truth about the running jobs.
    assert!(state.heartbeats.iter().all(|h| h.running.len() <= 2));
    assert!(state.heartbeats.iter().any(|h| h.running.len() == 2));
}

#[tokio::test]
async fn a_lost_poll_reply_gets_the_same_job_not_a_second_one() {
    let fake = FakeScheduler::start().await;
    fake.state().lose_poll_replies = 1;
    run_once_with_two_queued(&fake, 1).await;
    let state = fake.state();
    let ids: Vec<&str> = state.polls.iter().map(|p| p.poll_id.as_str()).collect();
    assert!(
        ids.len() >= 2 && ids[0] == ids[1],
        "the retry used another poll id: {ids:?}"
    );
}

#[tokio::test]
async fn a_workflow_the_runner_cannot_parse_fails_the_job_with_the_reason() {
    let fake = FakeScheduler::start().await;
    let mut broken = spec("broken", "      - run: echo a\n");
    broken.workflow_yaml =
        "on: push\njobs:\n  build:\n    runs-on: linux\n    steps: 7\n".to_owned();
    fake.queue(broken);
    let mut agent = start_agent(&fake, 1, true).await;
    let exit = agent.finish(LIMIT).await.expect("the runner ends well");
    assert_eq!(
        exit,
        AgentExit::Once(JobOutcome::Reported(Conclusion::Failure))
    );
    let state = fake.state();
    let done = &state.completions[0];
    assert!(
        done.error.contains("does not parse on this runner"),
        "{}",
        done.error
    );
    assert!(state
        .log_text("job-1")
        .iter()
        .any(|l| l.contains("does not parse on this runner")));
}

#[tokio::test]
async fn the_workspace_comes_from_the_runs_git_source_at_its_commit() {
    let fake = FakeScheduler::start().await;
    let origin = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let output = std::process::Command::new("git")
            .args(args)
            .current_dir(origin.path())
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    git(&["init", "-q"]);
    std::fs::write(origin.path().join("hello.txt"), "from-the-commit").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-qm", "one"]);
    let sha = git(&["rev-parse", "HEAD"]);
    // A later commit the job must not see.
    std::fs::write(origin.path().join("hello.txt"), "later").unwrap();
    git(&["commit", "-qam", "two"]);

    let mut job = spec(
        "checkout",
        "      - uses: actions/checkout@v4\n      - run: cat hello.txt\n",
    );
    job.contexts_json = format!(
        r#"{{"github":{{"repository":"octo/repo","sha":"{sha}","ref":"refs/heads/main","event_name":"push","event":{{}}}}}}"#
    );
    job.source = Some(pb::Source {
        sha: sha.clone(),
        origin: Some(pb::source::Origin::Git(pb::GitRemote {
            url: origin.path().display().to_string(),
        })),
    });
    fake.queue(job);
    let mut agent = start_agent(&fake, 1, true).await;
    let exit = agent.finish(LIMIT).await.expect("the runner ends well");
    let state = fake.state();
    assert_eq!(
        exit,
        AgentExit::Once(JobOutcome::Reported(Conclusion::Success)),
        "{:?}",
        state.log_text("job-1")
    );
    let text = state.log_text("job-1");
    assert!(text.iter().any(|l| l == "from-the-commit"), "{text:?}");
    // The job's folder is gone; the git cache stays for the next job.
    let work = agent.work.path().join("work");
    assert_eq!(std::fs::read_dir(work.join("jobs")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(work.join("git")).unwrap().count(), 1);
}
