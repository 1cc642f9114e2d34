//! Helpers shared by the store tests: a fresh store in a temporary directory, a run with
//! queued jobs, a registered runner.
#![allow(dead_code)]

use kiln_scheduler::store::prelude::*;
use kiln_scheduler::store::*;
use std::path::Path;

/// The clock of the tests: an arbitrary fixed instant, moved by hand.
pub const T0: UnixMs = 1_700_000_000_000;
pub const TTL: i64 = 3_000;

pub fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir, T0).expect("open the store")
}

pub fn new_run(workflow: &str) -> NewRun {
    NewRun {
        workflow_name: workflow.to_string(),
        workflow_path: format!(".github/workflows/{workflow}.yml"),
        event_name: "push".into(),
        sha: "0123abcd".into(),
        git_ref: "refs/heads/main".into(),
        attempt: 1,
        rerun_of: None,
        spec: StoredSpec {
            format: 1,
            bytes: format!("{{\"workflow\":\"{workflow}\"}}").into_bytes(),
        },
    }
}

/// Submits one run and returns its id.
pub fn run(store: &SqliteStore, key: &str) -> String {
    store
        .write(|tx| tx.submit(key, &[new_run("ci")], &[], T0))
        .expect("submit")
        .runs[0]
        .id
        .clone()
}

/// Adds leg `leg` of the run and queues it with these labels; the payload names the job.
pub fn queue(store: &SqliteStore, run_id: &str, leg: u32, labels: &[&str], now: UnixMs) -> String {
    let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
    store
        .write(|tx| {
            let id = tx.add_job(&NewJob {
                run_id: run_id.to_string(),
                leg,
                job_path: format!("job{leg}"),
                name: format!("job {leg}"),
                matrix: None,
            })?;
            assert!(tx.enqueue(&id, &labels, format!("payload of {id}").as_bytes(), now)?);
            Ok(id)
        })
        .expect("queue a job")
}

pub fn register(store: &SqliteStore, name: &str, labels: &[&str]) -> (RunnerRecord, String) {
    let registration = RunnerRegistration {
        name: name.to_string(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        capacity: 2,
        version: "0.1.0".into(),
    };
    store
        .write(|tx| tx.register_runner(&registration, T0))
        .expect("register a runner")
}

pub fn lease(
    store: &SqliteStore,
    runner_id: &str,
    poll_id: &str,
    now: UnixMs,
) -> Option<Assignment> {
    store
        .write(|tx| tx.lease(runner_id, poll_id, now, TTL))
        .expect("lease")
}

pub fn success(last_log_seq: u64) -> JobResult {
    JobResult {
        conclusion: kiln_workflow::Conclusion::Success,
        outputs: vec![("out".into(), "42".into())],
        steps: Vec::new(),
        error: String::new(),
        summary: String::new(),
        started_ms: T0 + 10,
        finished_ms: T0 + 20,
        last_log_seq,
    }
}

pub fn line(seq: u64) -> LogLine {
    LogLine {
        seq,
        step_index: 0,
        unix_ms: T0 + seq as i64,
        text: format!("log line number {seq} of the build"),
    }
}
