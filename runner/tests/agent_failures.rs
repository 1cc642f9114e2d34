//! The runner agent when things go wrong: a lease that is no longer the runner's, a scheduler
//! that is away for a while, a token the scheduler refuses.

mod agent_support;

use std::time::{Duration, Instant};

use agent_support::{alive, spec, start_agent};
use kiln_proto::v1 as pb;
use kiln_runner::agent::fake::FakeScheduler;
use kiln_runner::agent::{AgentError, AgentEvent, AgentExit, JobOutcome};
use kiln_workflow::Conclusion;

const LIMIT: Duration = Duration::from_secs(60);

/// A job whose first step writes its pid and sleeps; the `always()` step after it leaves a
/// file behind if it ever runs.
fn sleeper(pid: &std::path::Path, marker: &std::path::Path) -> pb::JobSpec {
    spec(
        "sleeper",
        &format!(
            "      - run: |\n          echo $$ > {}\n          echo started\n          sleep 600\n      - if: always()\n        run: touch {}\n",
            pid.display(),
            marker.display()
        ),
    )
}

/// The sleeper job, running on a fresh runner: its pid is known once this returns.
struct Sleeping {
    agent: agent_support::Agent,
    pid: i32,
    marker: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start_sleeper(fake: &FakeScheduler, once: bool) -> Sleeping {
    let dir = tempfile::tempdir().unwrap();
    let (pid_file, marker) = (dir.path().join("pid"), dir.path().join("always-ran"));
    fake.queue(sleeper(&pid_file, &marker));
    let agent = start_agent(fake, 1, once).await;
    fake.wait_for(LIMIT, "the step to start", |s| {
        s.log_text("job-1").iter().any(|l| l == "started")
    })
    .await;
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    Sleeping {
        agent,
        pid,
        marker,
        _dir: dir,
    }
}

async fn assert_stopped_silently(
    fake: &FakeScheduler,
    exit: AgentExit,
    pid: i32,
    marker: &std::path::Path,
) {
    let outcome = match exit {
        AgentExit::Once(outcome) => outcome,
        other => panic!("unexpected exit {other:?}"),
    };
    let JobOutcome::Stopped(reason) = outcome else {
        panic!("the job was reported instead of stopped: {outcome:?}");
    };
    assert!(!reason.is_empty());
    assert!(!alive(pid), "the step outlived the lost lease");
    // Give a runner that would keep talking time to do so.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let state = fake.state();
    let late = state.calls_after_stale("job-1", Duration::from_millis(100));
    assert!(late.is_empty(), "calls after the lease was lost: {late:?}");
    assert!(state.completions.is_empty());
    assert!(
        !marker.exists(),
        "an always() step ran after the lease was lost"
    );
}

#[tokio::test]
async fn a_stale_renewal_stops_the_job_at_once_and_nothing_more_is_sent() {
    let fake = FakeScheduler::start().await;
    let mut sleeping = start_sleeper(&fake, true).await;
    fake.state().stale.insert("job-1".to_owned());
    let exit = sleeping
        .agent
        .finish(LIMIT)
        .await
        .expect("the runner ends well");
    assert!(fake.state().stale_answered.contains_key("job-1"));
    assert_stopped_silently(&fake, exit, sleeping.pid, &sleeping.marker).await;
    // The job's folder went with it.
    let jobs = sleeping.agent.work.path().join("work/jobs");
    assert_eq!(std::fs::read_dir(jobs).unwrap().count(), 0);
}

#[tokio::test]
async fn a_job_the_heartbeat_calls_stale_stops_without_reporting() {
    let fake = FakeScheduler::start().await;
    let mut sleeping = start_sleeper(&fake, true).await;
    {
        // The scheduler gave the job away: every call about the old lease is refused too.
        let mut state = fake.state();
        state.heartbeat_stale.insert("job-1".to_owned());
        state.stale.insert("job-1".to_owned());
    }
    let exit = sleeping
        .agent
        .finish(LIMIT)
        .await
        .expect("the runner ends well");
    assert_stopped_silently(&fake, exit, sleeping.pid, &sleeping.marker).await;
}

#[tokio::test]
async fn the_completion_arrives_after_the_scheduler_was_away() {
    let mut fake = FakeScheduler::start().await;
    fake.queue(spec(
        "steady",
        "      - run: |\n          for i in 1 2 3 4 5 6 7 8; do echo \"tick-$i\"; sleep 0.4; done\n",
    ));
    let mut agent = start_agent(&fake, 1, true).await;
    fake.wait_for(LIMIT, "the first line", |s| {
        s.log_text("job-1").iter().any(|l| l == "tick-1")
    })
    .await;
    fake.go_away();
    let away_since = Instant::now();
    // Longer than the job: it finishes while the scheduler cannot be reached.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(fake.state().completions.is_empty());
    let calls_while_away = fake
        .state()
        .calls
        .iter()
        // A request already relayed when the relay closed may reach its handler just after.
        .filter(|c| c.at > away_since + Duration::from_millis(100))
        .count();
    assert_eq!(calls_while_away, 0, "the fake was reachable while away");
    fake.come_back().await;
    let exit = agent.finish(LIMIT).await.expect("the runner ends well");
    assert_eq!(
        exit,
        AgentExit::Once(JobOutcome::Reported(Conclusion::Success))
    );
    let state = fake.state();
    let ticks: Vec<String> = state
        .log_text("job-1")
        .into_iter()
        .filter(|l| l.starts_with("tick-"))
        .collect();
    let expected: Vec<String> = (1..=8).map(|i| format!("tick-{i}")).collect();
    assert_eq!(ticks, expected);
    let seqs: Vec<u64> = state.logs["job-1"].keys().copied().collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(state.completions[0].last_log_seq, seqs.len() as u64);
    let events = agent.drain_events();
    let away = events
        .iter()
        .position(|e| matches!(e, AgentEvent::Unreachable { .. }));
    let back = events.iter().position(|e| *e == AgentEvent::Reachable);
    assert!(
        matches!((away, back), (Some(a), Some(b)) if a < b),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_refused_token_stops_the_runner_and_its_jobs_with_the_fix() {
    let fake = FakeScheduler::start().await;
    let mut sleeping = start_sleeper(&fake, false).await;
    fake.state().revoked = true;
    let error = sleeping
        .agent
        .finish(LIMIT)
        .await
        .expect_err("the runner must stop");
    assert!(
        matches!(error, AgentError::Unauthenticated { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("register it again with `kiln runner register`"),
        "{message}"
    );
    assert!(!alive(sleeping.pid), "the job outlived the runner");
    assert!(fake.state().completions.is_empty());
}

#[tokio::test]
async fn a_runner_refused_from_the_start_says_so_at_once() {
    let fake = FakeScheduler::start().await;
    let mut agent = start_agent(&fake, 1, false).await;
    fake.state().revoked = true;
    let error = agent
        .finish(Duration::from_secs(20))
        .await
        .expect_err("the runner must stop");
    assert!(
        error.to_string().contains("refused this runner's token"),
        "{error}"
    );
}

#[tokio::test]
async fn draining_lets_the_running_job_finish_and_report() {
    let fake = FakeScheduler::start().await;
    // Lines reach the fake in batches up to a second late: the step must still be running
    // when the drain comes, or the runner would rightly take the next job before it.
    fake.queue(spec(
        "a",
        "      - run: echo started; sleep 4; echo finished\n",
    ));
    fake.queue(spec("b", "      - run: echo b\n"));
    let mut agent = start_agent(&fake, 1, false).await;
    fake.wait_for(LIMIT, "the step to start", |s| {
        s.log_text("job-1").iter().any(|l| l == "started")
    })
    .await;
    agent.stop.drain.cancel();
    let exit = agent.finish(LIMIT).await.expect("the runner ends well");
    assert_eq!(exit, AgentExit::Drained);
    let state = fake.state();
    assert_eq!(state.completions.len(), 1);
    assert!(state.log_text("job-1").iter().any(|l| l == "finished"));
    assert_eq!(state.queue.len(), 1, "a draining runner took another job");
}

#[tokio::test]
async fn aborting_stops_the_running_job_without_reporting_it() {
    let fake = FakeScheduler::start().await;
    let mut sleeping = start_sleeper(&fake, false).await;
    sleeping.agent.stop.drain.cancel();
    sleeping.agent.stop.abort.cancel();
    let exit = sleeping
        .agent
        .finish(LIMIT)
        .await
        .expect("the runner ends well");
    assert_eq!(exit, AgentExit::Aborted);
    assert!(!alive(sleeping.pid));
    assert!(!sleeping.marker.exists());
    assert!(fake.state().completions.is_empty());
}
