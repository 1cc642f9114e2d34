//! The queue and its leases: label matching, atomic leasing under concurrent pollers, poll
//! idempotency, renewal, expiry and attempts, restart grace, completion, queue timeout and
//! cancellation.

mod store_support;

use kiln_scheduler::store::prelude::*;
use kiln_scheduler::store::*;
use kiln_workflow::Conclusion;
use std::collections::HashSet;
use std::sync::Arc;
use store_support::*;

#[test]
fn concurrent_pollers_lease_each_job_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let run_id = run(&store, "k");
    const JOBS: u32 = 300;
    for leg in 0..JOBS {
        queue(&store, &run_id, leg, &["linux"], T0);
    }
    let runners: Vec<String> = (0..8)
        .map(|i| register(&store, &format!("runner-{i}"), &["linux"]).0.id)
        .collect();
    let threads: Vec<_> = runners
        .into_iter()
        .map(|runner| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for poll in 0.. {
                    match lease(&store, &runner, &format!("poll-{poll}"), T0) {
                        Some(a) => got.push(a.job_ref.job_id),
                        None => break,
                    }
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().unwrap());
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(
        all.len(),
        JOBS as usize,
        "every job leased once, none twice"
    );
    assert_eq!(distinct.len(), JOBS as usize);
    for job in store.jobs_of_run(&run_id).unwrap() {
        assert_eq!(job.state, JobState::Running);
    }
}

#[test]
fn a_job_goes_only_to_a_runner_with_all_its_labels_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let run_id = run(&store, "k");
    let gpu = queue(&store, &run_id, 0, &["Linux", "GPU"], T0);
    let plain = queue(&store, &run_id, 1, &["linux"], T0 + 1);
    let plain_later = queue(&store, &run_id, 2, &["LINUX"], T0 + 2);
    let (linux_only, _) = register(&store, "small", &["linux"]);
    let (big, _) = register(&store, "big", &["gpu", "linux", "x64"]);
    let (mac, _) = register(&store, "mac", &["macos"]);

    assert_eq!(lease(&store, &mac.id, "m1", T0), None, "no label in common");
    let first = lease(&store, &linux_only.id, "s1", T0).unwrap();
    assert_eq!(
        first.job_ref.job_id, plain,
        "the gpu job is not this runner's"
    );
    assert_eq!(first.payload, format!("payload of {plain}").into_bytes());
    assert_eq!(first.run_id, run_id);
    assert_eq!(first.expires_ms, T0 + TTL);
    let second = lease(&store, &big.id, "b1", T0).unwrap();
    assert_eq!(
        second.job_ref.job_id, gpu,
        "the oldest job the big runner can take"
    );
    let third = lease(&store, &big.id, "b2", T0).unwrap();
    assert_eq!(third.job_ref.job_id, plain_later);
    assert_eq!(lease(&store, &linux_only.id, "s2", T0), None);

    let sets = store.queued_label_sets().unwrap();
    assert!(sets.is_empty(), "{sets:?}");
    assert!(matches!(
        store.write(|tx| tx.lease("nobody", "p", T0, TTL)),
        Err(StoreError::NotFound { what: "runner", .. })
    ));
}

#[test]
fn the_queue_reports_its_label_sets_and_wakes_pollers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let run_id = run(&store, "k");
    let mut queue_changes = store.subscribe_queue();
    queue_changes.mark_unchanged();
    queue(&store, &run_id, 0, &["Linux", "GPU"], T0);
    assert!(queue_changes.has_changed().unwrap());
    queue(&store, &run_id, 1, &["gpu", "linux"], T0);
    queue(&store, &run_id, 2, &["arm"], T0);
    let sets = store.queued_label_sets().unwrap();
    assert_eq!(
        sets,
        [
            (vec!["gpu".to_string(), "linux".to_string()], 2),
            (vec!["arm".to_string()], 1)
        ]
    );
}

#[test]
fn a_retried_poll_returns_the_same_assignment() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let run_id = run(&store, "k");
    queue(&store, &run_id, 0, &["linux"], T0);
    queue(&store, &run_id, 1, &["linux"], T0);
    let third = queue(&store, &run_id, 2, &["linux"], T0);
    let (runner, _) = register(&store, "r", &["linux"]);
    let first = lease(&store, &runner.id, "poll-a", T0).unwrap();
    let retry = lease(&store, &runner.id, "poll-a", T0 + 5).unwrap();
    assert_eq!(retry, first);
    let next = lease(&store, &runner.id, "poll-b", T0).unwrap();
    assert_ne!(next.job_ref.job_id, first.job_ref.job_id);
    // Another runner's poll id is its own.
    let (other, _) = register(&store, "o", &["linux"]);
    let others = lease(&store, &other.id, "poll-a", T0).unwrap();
    assert_eq!(others.job_ref.job_id, third);
}

#[test]
fn renewal_extends_only_the_current_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let run_id = run(&store, "k");
    queue(&store, &run_id, 0, &["linux"], T0);
    let (runner, _) = register(&store, "r", &["linux"]);
    let a = lease(&store, &runner.id, "p", T0).unwrap();
    let renewed = store
        .write(|tx| tx.renew(&a.runner_id, &a.job_ref, T0 + 1_000, TTL))
        .unwrap();
    assert_eq!(renewed.expires_ms, T0 + 1_000 + TTL);
    assert!(!renewed.cancel_requested);

    let mut wrong_lease = a.job_ref.clone();
    wrong_lease.lease_id = "0".repeat(32);
    let mut wrong_attempt = a.job_ref.clone();
    wrong_attempt.attempt = 2;
    for stale in [wrong_lease, wrong_attempt] {
        let err = store
            .write(|tx| tx.renew(&runner.id, &stale, T0 + 1_000, TTL))
            .unwrap_err();
        assert!(matches!(err, StoreError::Stale { .. }), "{err}");
        assert!(store.lease_status(&runner.id, &stale).is_err());
    }
    // Past its expiry the lease is lost; its job goes to the next lease, and the old ref stays
    // refused.
    let expired = store
        .write(|tx| tx.expire_leases(T0 + 1_000 + TTL))
        .unwrap();
    assert_eq!(expired.len(), 1);
    let b = lease(&store, &runner.id, "p2", T0 + 5_000).unwrap();
    assert_eq!(b.job_ref.job_id, a.job_ref.job_id);
    assert_ne!(b.job_ref.lease_id, a.job_ref.lease_id);
    let err = store
        .write(|tx| tx.renew(&a.runner_id, &a.job_ref, T0 + 5_000, TTL))
        .unwrap_err();
    assert!(matches!(err, StoreError::Stale { .. }), "{err}");
    assert!(store
        .write(|tx| tx.renew(&b.runner_id, &b.job_ref, T0 + 5_000, TTL))
        .is_ok());
}

#[test]
fn a_lost_confirmed_lease_requeues_as_the_next_attempt_and_fails_after_three() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let run_id = run(&store, "k");
    let job_id = queue(&store, &run_id, 7, &["linux"], T0);
    let (runner, _) = register(&store, "r", &["linux"]);
    let mut now = T0;
    for attempt in 1..=MAX_ATTEMPTS {
        let a = lease(&store, &runner.id, &format!("p{attempt}"), now).unwrap();
        assert_eq!(a.job_ref.attempt, attempt);
        store
            .write(|tx| tx.renew(&a.runner_id, &a.job_ref, now, TTL))
            .unwrap();
        assert!(store
            .write(|tx| tx.expire_leases(now + TTL - 1))
            .unwrap()
            .is_empty());
        now += TTL;
        let expired = store.write(|tx| tx.expire_leases(now)).unwrap();
        assert_eq!(expired.len(), 1);
        let lost = &expired[0];
        assert_eq!(lost.job_ref, a.job_ref);
        assert_eq!((lost.run_id.as_str(), lost.leg), (run_id.as_str(), 7));
        assert!(lost.counted);
        let job = store.get_job(&job_id).unwrap().unwrap();
        if attempt < MAX_ATTEMPTS {
            assert_eq!(
                lost.outcome,
                ExpiryOutcome::Requeued {
                    attempt: attempt + 1
                }
            );
            assert_eq!((job.state, job.attempt), (JobState::Queued, attempt + 1));
            assert_eq!(job.runner_name, "");
        } else {
            let ExpiryOutcome::Concluded { conclusion, reason } = &lost.outcome else {
                panic!("the third loss must conclude the job: {:?}", lost.outcome);
            };
            assert_eq!(*conclusion, Conclusion::Failure);
            assert!(reason.contains("3 times"), "{reason}");
            assert_eq!(job.state, JobState::Done);
            assert_eq!(job.conclusion, Some(Conclusion::Failure));
            assert_eq!(&job.message, reason);
        }
    }
    assert_eq!(lease(&store, &runner.id, "after", now), None);
}

#[test]
fn an_unconfirmed_lease_expires_without_counting_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let run_id = run(&store, "k");
    let job_id = queue(&store, &run_id, 0, &["linux"], T0);
    let (runner, _) = register(&store, "r", &["linux"]);
    for round in 0..MAX_ATTEMPTS + 2 {
        let now = T0 + i64::from(round) * TTL;
        let a = lease(&store, &runner.id, &format!("p{round}"), now).unwrap();
        assert_eq!(a.job_ref.attempt, 1);
        let expired = store.write(|tx| tx.expire_leases(now + TTL)).unwrap();
        assert_eq!(expired.len(), 1);
        assert!(!expired[0].counted);
        assert_eq!(expired[0].outcome, ExpiryOutcome::Requeued { attempt: 1 });
    }
    let job = store.get_job(&job_id).unwrap().unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Queued, 1));

    // A log line confirms a lease as a renewal does.
    let a = lease(&store, &runner.id, "logged", T0).unwrap();
    store
        .write(|tx| tx.append_logs(&a.runner_id, &a.job_ref, &[line(1)]))
        .unwrap();
    let expired = store.write(|tx| tx.expire_leases(T0 + TTL)).unwrap();
    assert!(expired[0].counted);
    assert_eq!(expired[0].outcome, ExpiryOutcome::Requeued { attempt: 2 });
}

#[test]
fn on_restart_every_lease_gets_the_grace_of_a_full_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = {
        let store = open(dir.path());
        let run_id = run(&store, "k");
        queue(&store, &run_id, 0, &["linux"], T0);
        queue(&store, &run_id, 1, &["linux"], T0);
        let (runner, _) = register(&store, "r", &["linux"]);
        let a = lease(&store, &runner.id, "p1", T0).unwrap();
        let b = lease(&store, &runner.id, "p2", T0).unwrap();
        store
            .write(|tx| tx.renew(&b.runner_id, &b.job_ref, T0, 60_000))
            .unwrap();
        (a, b)
    };
    // The scheduler was down longer than the TTL.
    let restart = T0 + 10 * TTL;
    let store = SqliteStore::open(dir.path(), restart).unwrap();
    assert_eq!(
        store.write(|tx| tx.extend_leases(restart + TTL)).unwrap(),
        2
    );
    assert!(store
        .write(|tx| tx.expire_leases(restart))
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .lease_status(&a.runner_id, &a.job_ref)
            .unwrap()
            .expires_ms,
        restart + TTL
    );
    // A lease that ran longer keeps its own expiry.
    assert_eq!(
        store
            .lease_status(&b.runner_id, &b.job_ref)
            .unwrap()
            .expires_ms,
        T0 + 60_000
    );
    let renewed = store
        .write(|tx| tx.renew(&a.runner_id, &a.job_ref, restart + 1, TTL))
        .unwrap();
    assert_eq!(renewed.expires_ms, restart + 1 + TTL);
    // Without renewal the grace runs out like any lease.
    let expired = store
        .write(|tx| tx.expire_leases(restart + 1 + TTL))
        .unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].job_ref, a.job_ref);
    let expired = store.write(|tx| tx.expire_leases(T0 + 60_000)).unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].job_ref, b.job_ref);
}

#[test]
fn a_completion_needs_the_current_lease_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let run_id = run(&store, "k");
    let job_id = queue(&store, &run_id, 0, &["linux"], T0);
    let waiting = queue(&store, &run_id, 1, &["gpu"], T0);
    let (runner, _) = register(&store, "r", &["linux"]);
    let a = lease(&store, &runner.id, "p", T0).unwrap();
    store
        .write(|tx| tx.append_logs(&a.runner_id, &a.job_ref, &[line(1), line(2)]))
        .unwrap();

    let err = store
        .write(|tx| tx.complete_job(&a.runner_id, &a.job_ref, &success(3), T0 + 30))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::LogsMissing {
                sent: 3,
                held: 2,
                ..
            }
        ),
        "{err}"
    );
    let mut stale = a.job_ref.clone();
    stale.lease_id = "f".repeat(32);
    let err = store
        .write(|tx| tx.complete_job(&runner.id, &stale, &success(2), T0 + 30))
        .unwrap_err();
    assert!(matches!(err, StoreError::Stale { .. }), "{err}");

    let done = store
        .write(|tx| tx.complete_job(&a.runner_id, &a.job_ref, &success(2), T0 + 30))
        .unwrap();
    let Completion::Completed(job) = done else {
        panic!("the first completion completes: {done:?}");
    };
    assert_eq!(job.state, JobState::Done);
    assert_eq!(job.conclusion, Some(Conclusion::Success));
    assert_eq!(job.outputs, [("out".to_string(), "42".to_string())]);
    assert_eq!(
        (job.started_ms, job.finished_ms),
        (Some(T0 + 10), Some(T0 + 20))
    );
    let again = store
        .write(|tx| tx.complete_job(&a.runner_id, &a.job_ref, &success(2), T0 + 40))
        .unwrap();
    assert_eq!(again, Completion::AlreadyCompleted);
    let err = store
        .write(|tx| tx.complete_job(&runner.id, &stale, &success(2), T0 + 40))
        .unwrap_err();
    assert!(matches!(err, StoreError::Stale { .. }), "{err}");
    // The lease is gone, so the runner's other calls are refused.
    assert!(store
        .write(|tx| tx.renew(&a.runner_id, &a.job_ref, T0 + 40, TTL))
        .is_err());
    assert!(store.list_runners().unwrap()[0].running_job_ids.is_empty());
    // The payload (it carries the run's secrets) does not outlive the job.
    let conn = rusqlite::Connection::open(dir.path().join("scheduler.db")).unwrap();
    let payloads = |id: &str| -> i64 {
        conn.query_row(
            "SELECT count(*) FROM job_payloads WHERE job_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(payloads(&job_id), 0);
    assert_eq!(payloads(&waiting), 1, "a queued job keeps its payload");
}

#[test]
fn jobs_no_runner_takes_fail_after_the_queue_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let run_id = run(&store, "k");
    let old = queue(&store, &run_id, 0, &["Solaris", "sparc"], T0);
    let young = queue(&store, &run_id, 1, &["linux"], T0 + 5_000);
    store
        .write(|tx| tx.set_waiting_reason(&old, "no online runner has the label solaris"))
        .unwrap();
    assert_eq!(
        store.get_job(&old).unwrap().unwrap().waiting_reason,
        "no online runner has the label solaris"
    );
    let day = 86_400_000;
    let timed_out = store.write(|tx| tx.expire_queued(T0 + day, day)).unwrap();
    assert_eq!(timed_out.len(), 1);
    assert_eq!(timed_out[0].job_id, old);
    assert!(
        timed_out[0].reason.contains("[Solaris, sparc]"),
        "{}",
        timed_out[0].reason
    );
    assert!(
        timed_out[0].reason.contains("24h"),
        "{}",
        timed_out[0].reason
    );
    let job = store.get_job(&old).unwrap().unwrap();
    assert_eq!(
        (job.state, job.conclusion),
        (JobState::Done, Some(Conclusion::Failure))
    );
    assert_eq!(job.waiting_reason, "");
    assert_eq!(
        store.get_job(&young).unwrap().unwrap().state,
        JobState::Queued
    );
}

#[test]
fn cancellation_reaches_the_runner_and_survives_a_lost_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let run_id = run(&store, "k");
    let running = queue(&store, &run_id, 0, &["linux"], T0);
    let queued = queue(&store, &run_id, 1, &["gpu"], T0);
    let (runner, _) = register(&store, "r", &["linux"]);
    let a = lease(&store, &runner.id, "p", T0).unwrap();
    assert_eq!(
        store.write(|tx| tx.request_cancel(&running)).unwrap(),
        JobState::Running
    );
    assert!(
        store
            .write(|tx| tx.renew(&a.runner_id, &a.job_ref, T0, TTL))
            .unwrap()
            .cancel_requested
    );
    assert!(
        store
            .lease_status(&a.runner_id, &a.job_ref)
            .unwrap()
            .cancel_requested
    );
    let ack = store
        .write(|tx| tx.append_logs(&a.runner_id, &a.job_ref, &[line(1)]))
        .unwrap();
    assert!(ack.cancel_requested);

    // A queued job is the caller's to conclude.
    assert_eq!(
        store.write(|tx| tx.request_cancel(&queued)).unwrap(),
        JobState::Queued
    );
    assert!(store
        .write(|tx| tx.conclude_job(&queued, Conclusion::Cancelled, "cancelled", T0))
        .unwrap());
    assert!(!store
        .write(|tx| tx.conclude_job(&queued, Conclusion::Failure, "late", T0))
        .unwrap());
    assert_eq!(
        store.get_job(&queued).unwrap().unwrap().conclusion,
        Some(Conclusion::Cancelled)
    );

    // The cancelled job's runner dies: the job is not queued again but concluded.
    let expired = store.write(|tx| tx.expire_leases(T0 + TTL)).unwrap();
    assert!(matches!(
        &expired[0].outcome,
        ExpiryOutcome::Concluded {
            conclusion: Conclusion::Cancelled,
            ..
        }
    ));
    assert_eq!(
        store.get_job(&running).unwrap().unwrap().state,
        JobState::Done
    );
}

#[test]
fn replaying_job_writes_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let run_id = run(&store, "k");
    let id = queue(&store, &run_id, 0, &["linux"], T0);
    let (runner, _) = register(&store, "r", &["linux"]);
    let a = lease(&store, &runner.id, "p", T0).unwrap();
    store
        .write(|tx| {
            let again = tx.add_job(&NewJob {
                run_id: run_id.clone(),
                leg: 0,
                job_path: "other".into(),
                name: "other".into(),
                matrix: None,
            })?;
            assert_eq!(again, id);
            assert!(!tx.enqueue(&id, &["linux".into()], b"new payload", T0 + 1)?);
            Ok(())
        })
        .unwrap();
    let job = store.get_job(&id).unwrap().unwrap();
    assert_eq!((job.state, job.name.as_str()), (JobState::Running, "job 0"));
    assert!(store.lease_status(&a.runner_id, &a.job_ref).is_ok());
    assert!(matches!(
        store.write(|tx| tx.enqueue("9.9", &[], b"", T0)),
        Err(StoreError::NotFound { .. })
    ));
}

/// A runner's token authorises only the leases it holds: another registered runner that
/// learned a lease id (from a log, a proxy, a shared host) can neither keep the job alive,
/// nor write its steps or logs, nor conclude it. The holder is not disturbed by the attempts.
#[test]
fn only_the_holder_of_a_lease_may_act_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let run_id = run(&store, "k");
    queue(&store, &run_id, 0, &["linux"], T0);
    let (holder, _) = register(&store, "holder", &["linux"]);
    let (other, _) = register(&store, "other", &["linux"]);
    let a = lease(&store, &holder.id, "p", T0).unwrap();
    assert_eq!(a.runner_id, holder.id);
    let step = StepReport {
        index: 0,
        phase: StepPhase::Started,
        step_id: "build".into(),
        name: "Build".into(),
        outcome: None,
        conclusion: None,
        unix_ms: T0 + 1,
    };
    let not_holder = |err: StoreError| {
        assert!(matches!(err, StoreError::NotHolder { .. }), "{err}");
        assert!(err.to_string().contains("another runner"), "{err}");
    };
    not_holder(
        store
            .write(|tx| tx.renew(&other.id, &a.job_ref, T0 + 10, TTL))
            .unwrap_err(),
    );
    not_holder(store.lease_status(&other.id, &a.job_ref).unwrap_err());
    not_holder(
        store
            .write(|tx| tx.report_step(&other.id, &a.job_ref, &step))
            .unwrap_err(),
    );
    not_holder(
        store
            .write(|tx| tx.append_logs(&other.id, &a.job_ref, &[line(1)]))
            .unwrap_err(),
    );
    not_holder(
        store
            .write(|tx| tx.complete_job(&other.id, &a.job_ref, &success(0), T0 + 20))
            .unwrap_err(),
    );

    // Nothing the other runner sent was kept: the holder's line 1 is new, its lease unchanged.
    assert_eq!(
        store
            .lease_status(&holder.id, &a.job_ref)
            .unwrap()
            .expires_ms,
        T0 + TTL
    );
    let ack = store
        .write(|tx| tx.append_logs(&holder.id, &a.job_ref, &[line(1)]))
        .unwrap();
    assert_eq!(ack.acked_seq, 1);
    assert!(
        store
            .write(|tx| tx.report_step(&holder.id, &a.job_ref, &step))
            .unwrap()
            .new
    );
    let done = store
        .write(|tx| tx.complete_job(&holder.id, &a.job_ref, &success(1), T0 + 30))
        .unwrap();
    assert!(matches!(done, Completion::Completed(_)));
}
