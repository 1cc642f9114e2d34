//! The gRPC services on loopback over a real store: what a runner's calls do to a run and what
//! a watcher sees: job, step, log and run events, the stream's end when the run is done, and a
//! resumed stream that sends only what came after its cursors.

mod service_support;

use std::time::Duration;

use kiln_proto::v1 as pb;
use kiln_scheduler::store::prelude::*;
use kiln_scheduler::store::{JobRef, LogLine, RunnerRecord, TokenKind};
use pb::control_service_client::ControlServiceClient;
use pb::runner_service_client::RunnerServiceClient;
use service_support::*;
use tonic::transport::Channel;
use tonic::Request;

const ONE_JOB: &str = "on: push
jobs:
  only:
    runs-on: linux
    steps:
      - run: 'true'
";

const CONTROL: &str = "control-secret";

async fn serve(h: &Harness) -> Channel {
    let now = h.s().now();
    h.s()
        .store()
        .write(|tx| tx.set_token(TokenKind::Control, CONTROL, now))
        .unwrap();
    let (runner, control) = kiln_scheduler::grpc::services(h.arc());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(runner)
            .add_service(control)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Everything a watch stream sends until it ends (bounded in time).
async fn collect(
    control: &mut ControlServiceClient<Channel>,
    request: pb::WatchRunRequest,
) -> Vec<pb::RunEvent> {
    let mut stream = control
        .watch_run(bearer(request, CONTROL))
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.message()).await {
            Ok(Ok(Some(event))) => events.push(event),
            Ok(Ok(None)) => return events,
            Ok(Err(status)) => panic!("the stream failed: {status}"),
            Err(_) => panic!("the stream did not end after the run finished: {events:#?}"),
        }
    }
}

fn kinds(events: &[pb::RunEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e.kind.as_ref().unwrap() {
            pb::run_event::Kind::Run(r) => format!("run:{}", r.state),
            pb::run_event::Kind::Job(j) => format!("job:{}", j.state),
            pb::run_event::Kind::Step(s) => format!("step:{}:{}", s.name, s.phase),
            pb::run_event::Kind::Logs(l) => format!(
                "logs:{}",
                l.lines
                    .iter()
                    .map(|l| l.text.as_str())
                    .collect::<Vec<_>>()
                    .join("|")
            ),
            pb::run_event::Kind::Notice(n) => format!("notice:{n}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_runs_a_job_over_grpc_and_a_watcher_sees_it_all_then_the_end() {
    let h = Harness::new(&[(".github/workflows/one.yml", ONE_JOB)]);
    let channel = serve(&h).await;
    let mut runner = RunnerServiceClient::new(channel.clone());
    let mut control = ControlServiceClient::new(channel);

    let registered = register_runner(&mut runner, "r").await;
    assert_eq!(registered.lease_ttl_ms, TTL_MS as u32);
    assert_eq!(registered.renew_interval_ms, TTL_MS as u32 / 3);
    let old = runner
        .register(pb::RegisterRequest {
            registration_token: REGISTRATION.to_owned(),
            name: "old".to_owned(),
            protocol_version: kiln_proto::PROTOCOL_VERSION + 1,
            ..Default::default()
        })
        .await;
    assert_eq!(old.unwrap_err().code(), tonic::Code::FailedPrecondition);
    let token = registered.runner_token;

    let run_id = h.submit(&[("TOKEN", "hidden")]);
    let job = runner
        .poll_job(bearer(
            pb::PollJobRequest {
                poll_id: "p".to_owned(),
                free_slots: 1,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .job
        .expect("a job");
    let job_ref = job.r#ref.clone().unwrap();
    let spec = job.spec.unwrap();
    assert_eq!(
        spec.secrets.get("TOKEN").map(String::as_str),
        Some("hidden")
    );
    assert!(!spec.contexts_json.contains("hidden"));

    let step = |phase: pb::StepPhase| pb::ReportStepRequest {
        job: Some(job_ref.clone()),
        index: 0,
        phase: phase as i32,
        step_id: "__run".to_owned(),
        name: "Run true".to_owned(),
        conclusion: if phase == pb::StepPhase::Finished {
            pb::Conclusion::Success as i32
        } else {
            0
        },
        outcome: if phase == pb::StepPhase::Finished {
            pb::Conclusion::Success as i32
        } else {
            0
        },
        unix_ms: T0,
    };
    runner
        .report_step(bearer(step(pb::StepPhase::Started), &token))
        .await
        .unwrap();
    let lines = |from: u64, texts: &[&str]| pb::AppendLogsRequest {
        job: Some(job_ref.clone()),
        lines: texts
            .iter()
            .enumerate()
            .map(|(i, t)| pb::LogLine {
                seq: from + i as u64,
                step_index: 0,
                unix_ms: T0,
                text: t.to_string(),
            })
            .collect(),
    };
    let ack = runner
        .append_logs(bearer(lines(1, &["one", "two"]), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.acked_seq, 2);
    let again = runner
        .append_logs(bearer(lines(2, &["two", "three"]), &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.acked_seq, 3, "a resent line is stored once");
    let gap = runner
        .append_logs(bearer(lines(9, &["nine"]), &token))
        .await;
    assert_eq!(gap.unwrap_err().code(), tonic::Code::OutOfRange);

    // A watcher started mid-run sees what happened so far and what follows.
    let watcher = {
        let mut control = control.clone();
        let run_id = run_id.clone();
        tokio::spawn(async move {
            collect(
                &mut control,
                pb::WatchRunRequest {
                    run_ids: vec![run_id],
                    after_event_seq: 0,
                    logs: true,
                    ..Default::default()
                },
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    runner
        .report_step(bearer(step(pb::StepPhase::Finished), &token))
        .await
        .unwrap();
    let unspecified = runner
        .complete_job(bearer(
            pb::CompleteJobRequest {
                job: Some(job_ref.clone()),
                ..Default::default()
            },
            &token,
        ))
        .await;
    assert_eq!(
        unspecified.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    let missing_logs = runner
        .complete_job(bearer(
            pb::CompleteJobRequest {
                job: Some(job_ref.clone()),
                conclusion: pb::Conclusion::Success as i32,
                last_log_seq: 5,
                ..Default::default()
            },
            &token,
        ))
        .await;
    assert_eq!(missing_logs.unwrap_err().code(), tonic::Code::Aborted);
    runner
        .complete_job(bearer(
            pb::CompleteJobRequest {
                job: Some(job_ref.clone()),
                conclusion: pb::Conclusion::Success as i32,
                last_log_seq: 3,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap();
    let renew = runner
        .renew_lease(bearer(
            pb::RenewLeaseRequest {
                job: Some(job_ref.clone()),
            },
            &token,
        ))
        .await;
    assert_eq!(
        renew.unwrap_err().code(),
        tonic::Code::FailedPrecondition,
        "a completed job's lease is gone"
    );

    let events = watcher.await.unwrap();
    let seen = kinds(&events);
    assert!(seen.contains(&"logs:one|two|three".to_owned()), "{seen:?}");
    assert!(seen.contains(&"step:Run true:1".to_owned()), "{seen:?}");
    assert!(seen.contains(&"step:Run true:2".to_owned()), "{seen:?}");
    assert_eq!(
        seen.last().map(String::as_str),
        Some("run:2"),
        "the last event says the run is done: {seen:?}"
    );
    let done = events.last().unwrap();
    let Some(pb::run_event::Kind::Run(summary)) = &done.kind else {
        unreachable!()
    };
    assert_eq!(summary.conclusion, pb::Conclusion::Success as i32);
    assert_eq!(summary.jobs.len(), 1);

    // Resumed after the step's start event, with the logs seen up to line 2.
    let started_seq = events
        .iter()
        .find(|e| matches!(&e.kind, Some(pb::run_event::Kind::Step(s)) if s.phase == 1))
        .unwrap()
        .event_seq;
    let resumed = collect(
        &mut control,
        pb::WatchRunRequest {
            run_ids: vec![run_id.clone()],
            after_event_seq: started_seq,
            logs: true,
            log_cursors: [(job_ref.job_id.clone(), 2)].into_iter().collect(),
            ..Default::default()
        },
    )
    .await;
    let seen_again = kinds(&resumed);
    assert!(!seen_again.contains(&"step:Run true:1".to_owned()));
    assert!(seen_again.contains(&"step:Run true:2".to_owned()));
    assert!(
        seen_again.contains(&"logs:three".to_owned()),
        "{seen_again:?}"
    );
    assert!(
        resumed
            .iter()
            .all(|e| e.event_seq == 0 || e.event_seq > started_seq),
        "{resumed:#?}"
    );

    let unknown = control
        .get_run(bearer(
            pb::GetRunRequest {
                run_id: "999".to_owned(),
            },
            CONTROL,
        ))
        .await;
    assert_eq!(unknown.unwrap_err().code(), tonic::Code::NotFound);
    let runners = control
        .list_runners(bearer(pb::ListRunnersRequest {}, CONTROL))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(runners.runners.len(), 1);
    assert_eq!(runners.runners[0].name, "r");
}

async fn register_runner(
    runner: &mut RunnerServiceClient<Channel>,
    name: &str,
) -> pb::RegisterResponse {
    runner
        .register(pb::RegisterRequest {
            registration_token: REGISTRATION.to_owned(),
            name: name.to_owned(),
            labels: vec!["linux".to_owned()],
            protocol_version: kiln_proto::PROTOCOL_VERSION,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Every job-scoped call checks that the calling runner holds the lease: a second registered
/// runner with a valid token of its own, given the first one's JobRef, is refused with
/// PERMISSION_DENIED on each call, and the holder then completes the job as if nothing
/// happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_cannot_act_on_a_lease_another_runner_holds() {
    let h = Harness::new(&[(".github/workflows/one.yml", ONE_JOB)]);
    let channel = serve(&h).await;
    let mut runner = RunnerServiceClient::new(channel.clone());
    let holder = register_runner(&mut runner, "holder").await.runner_token;
    let intruder = register_runner(&mut runner, "intruder").await.runner_token;
    let run_id = h.submit(&[]);
    let job = runner
        .poll_job(bearer(
            pb::PollJobRequest {
                poll_id: "p".to_owned(),
                free_slots: 1,
            },
            &holder,
        ))
        .await
        .unwrap()
        .into_inner()
        .job
        .expect("a job");
    let job_ref = job.r#ref.unwrap();
    let line = pb::AppendLogsRequest {
        job: Some(job_ref.clone()),
        lines: vec![pb::LogLine {
            seq: 1,
            step_index: 0,
            unix_ms: T0,
            text: "forged".to_owned(),
        }],
    };
    let step = pb::ReportStepRequest {
        job: Some(job_ref.clone()),
        index: 0,
        phase: pb::StepPhase::Started as i32,
        step_id: "__run".to_owned(),
        name: "forged".to_owned(),
        unix_ms: T0,
        ..Default::default()
    };
    let complete = |conclusion: pb::Conclusion, lines: u64| pb::CompleteJobRequest {
        job: Some(job_ref.clone()),
        conclusion: conclusion as i32,
        last_log_seq: lines,
        ..Default::default()
    };
    let renew = pb::RenewLeaseRequest {
        job: Some(job_ref.clone()),
    };
    let denied = |result: Result<(), tonic::Status>| {
        let status = result.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("another runner"), "{status:?}");
    };
    denied(
        runner
            .renew_lease(bearer(renew.clone(), &intruder))
            .await
            .map(drop),
    );
    denied(
        runner
            .append_logs(bearer(line.clone(), &intruder))
            .await
            .map(drop),
    );
    denied(runner.report_step(bearer(step, &intruder)).await.map(drop));
    denied(
        runner
            .complete_job(bearer(complete(pb::Conclusion::Failure, 0), &intruder))
            .await
            .map(drop),
    );

    runner.renew_lease(bearer(renew, &holder)).await.unwrap();
    let ack = runner
        .append_logs(bearer(line, &holder))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.acked_seq, 1, "the intruder's line was not stored");
    runner
        .complete_job(bearer(complete(pb::Conclusion::Success, 1), &holder))
        .await
        .unwrap();
    assert_eq!(
        h.run(&run_id).conclusion,
        Some(kiln_workflow::Conclusion::Success)
    );
}

fn stored_lines(from: u64, texts: &[&str]) -> Vec<LogLine> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| LogLine {
            seq: from + i as u64,
            step_index: 0,
            unix_ms: T0,
            text: text.to_string(),
        })
        .collect()
}

/// `(attempt, text)` of every log line of the events, in order.
fn log_texts(events: &[pb::RunEvent]) -> Vec<(u32, String)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(pb::run_event::Kind::Logs(logs)) => Some(
                logs.lines
                    .iter()
                    .map(|l| (logs.attempt, l.text.clone()))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

/// A run whose job lost its runner after three lines and is on its second attempt, which
/// has printed two lines; the run is still running.
fn run_on_its_second_attempt(h: &Harness) -> (String, RunnerRecord, JobRef) {
    let run_id = h.submit(&[]);
    let first = h.runner("first", &["linux"]);
    let job = h.take(&first, "only");
    h.s()
        .append_logs(&first, &job.job_ref, &stored_lines(1, &["a1", "a2", "a3"]))
        .unwrap();
    h.clock.advance(TTL_MS + 1);
    h.s().tick().unwrap();
    let second = h.runner("second", &["linux"]);
    let again = h.take(&second, "only");
    assert_eq!(again.job_ref.attempt, 2);
    h.s()
        .append_logs(&second, &again.job_ref, &stored_lines(1, &["b1", "b2"]))
        .unwrap();
    (run_id, second, again.job_ref)
}

/// `stored_only` ends the stream after what is stored, although the run goes on; a cursor
/// that counts in an earlier attempt gets the rest of that attempt, then the current one
/// from its first line (sequence numbers start again with each attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_only_watch_ends_and_cursors_count_in_their_attempt() {
    let h = Harness::new(&[(".github/workflows/one.yml", ONE_JOB)]);
    let channel = serve(&h).await;
    let mut control = ControlServiceClient::new(channel);
    let (run_id, _, job_ref) = run_on_its_second_attempt(&h);
    let job_id = job_ref.job_id;
    let watch = |cursor: Option<(u32, u64)>| pb::WatchRunRequest {
        run_ids: vec![run_id.clone()],
        logs: true,
        stored_only: true,
        log_cursors: cursor
            .map(|(_, seq)| (job_id.clone(), seq))
            .into_iter()
            .collect(),
        log_cursor_attempts: cursor
            .map(|(attempt, _)| (job_id.clone(), attempt))
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let text = |pairs: &[(u32, &str)]| -> Vec<(u32, String)> {
        pairs.iter().map(|(a, t)| (*a, t.to_string())).collect()
    };

    let fresh = collect(&mut control, watch(None)).await;
    assert_eq!(log_texts(&fresh), text(&[(2, "b1"), (2, "b2")]));
    assert!(
        fresh
            .iter()
            .any(|e| matches!(&e.kind, Some(pb::run_event::Kind::Run(_)))),
        "the run's state is sent too: {fresh:#?}"
    );
    let resumed = collect(&mut control, watch(Some((1, 2)))).await;
    assert_eq!(
        log_texts(&resumed),
        text(&[(1, "a3"), (2, "b1"), (2, "b2")])
    );
    let current = collect(&mut control, watch(Some((2, 1)))).await;
    assert_eq!(log_texts(&current), text(&[(2, "b2")]));
}

/// Watching every run (no ids) streams log lines too: those of unfinished runs, and the last
/// ones of a run that finishes while watched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_every_run_streams_their_log_lines() {
    let h = Harness::new(&[(".github/workflows/one.yml", ONE_JOB)]);
    let channel = serve(&h).await;
    let mut control = ControlServiceClient::new(channel);
    let (_, second, job_ref) = run_on_its_second_attempt(&h);
    let all = collect(
        &mut control,
        pb::WatchRunRequest {
            logs: true,
            stored_only: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        log_texts(&all),
        [(2, "b1".to_owned()), (2, "b2".to_owned())]
    );

    // Followed live: a line written while watching arrives, and so does the run's end.
    let mut stream = control
        .watch_run(bearer(
            pb::WatchRunRequest {
                logs: true,
                ..Default::default()
            },
            CONTROL,
        ))
        .await
        .unwrap()
        .into_inner();
    h.s()
        .append_logs(&second, &job_ref, &stored_lines(3, &["b3"]))
        .unwrap();
    h.s()
        .complete(
            &second,
            &job_ref,
            &result(kiln_workflow::Conclusion::Success, &[]),
        )
        .unwrap();
    let mut seen = Vec::new();
    while !log_texts(&seen).contains(&(2, "b3".to_owned()))
        || !seen.iter().any(|e| {
            matches!(&e.kind, Some(pb::run_event::Kind::Run(r)) if r.state == pb::RunState::Done as i32)
        })
    {
        let event = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("the line and the run's end arrive")
            .unwrap()
            .unwrap();
        seen.push(event);
    }
}
