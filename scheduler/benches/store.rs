//! Store time per job, the part of the scheduler's 1,000 jobs/s budget spent in SQLite: a job
//! is recorded and queued (with its "queued" event), leased (event), renewed once, and
//! completed with its op appended (event), with 20 log lines on the way.
//!
//! - `job/one_tx_per_call`: every call its own transaction (a lone runner's calls);
//! - `job/batched_64`: the same calls of 64 jobs in one transaction per phase (one event-loop
//!   turn of a busy scheduler);
//! - `job/queue_of_10k`: one transaction per call with 10,000 older jobs queued that the
//!   runner cannot take (they also need `gpu`), so a lease must pass over a long queue.
//!
//! The time reported is the CPU time of the benchmark's thread (user and kernel), the cost a
//! busy scheduler pays on its cores; wall time also counts waiting for a CPU, which on a
//! shared machine says more about the neighbours. `reference/bare_commit` is the floor:
//! one single-row insert committed in its own transaction on the same kind of database.
//!
//! Before the benchmarks it prints the resident memory the process gained while 10,000 jobs
//! with 4 KiB payloads were queued (the queue lives on disk, not in the scheduler's memory).
//!
//! `cargo bench -p kiln-scheduler --bench store`

use criterion::{criterion_group, criterion_main, Criterion};
use kiln_scheduler::store::prelude::*;
use kiln_scheduler::store::*;
use kiln_workflow::Conclusion;
use std::time::Duration;

const T0: UnixMs = 1_700_000_000_000;
const TTL: i64 = 30_000;

struct Bench {
    _dir: tempfile::TempDir,
    store: SqliteStore,
    run_id: String,
    runner_id: String,
    next_leg: std::cell::Cell<u32>,
    payload: Vec<u8>,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(dir.path(), T0).expect("open the store");
        let run = NewRun {
            workflow_name: "bench".into(),
            workflow_path: ".github/workflows/bench.yml".into(),
            event_name: "push".into(),
            sha: "0".repeat(40),
            git_ref: "refs/heads/main".into(),
            attempt: 1,
            rerun_of: None,
            spec: StoredSpec {
                format: 1,
                bytes: vec![b'x'; 4096],
            },
        };
        let run_id = store
            .write(|tx| tx.submit("bench", &[run], &[], T0))
            .expect("submit")
            .runs[0]
            .id
            .clone();
        let registration = RunnerRegistration {
            name: "bench".into(),
            labels: vec!["linux".into(), "x64".into()],
            capacity: 8,
            version: "bench".into(),
        };
        let (runner, _) = store
            .write(|tx| tx.register_runner(&registration, T0))
            .expect("register");
        Bench {
            _dir: dir,
            store,
            run_id,
            runner_id: runner.id,
            next_leg: std::cell::Cell::new(0),
            payload: vec![b'p'; 4096],
        }
    }

    fn queue(&self, tx: &mut dyn StoreTx, labels: &[String]) -> Result<()> {
        let leg = self.next_leg.get();
        self.next_leg.set(leg + 1);
        let id = tx.add_job(&NewJob {
            run_id: self.run_id.clone(),
            leg,
            job_path: "build".into(),
            name: format!("build ({leg})"),
            matrix: None,
        })?;
        tx.enqueue(&id, labels, &self.payload, T0)?;
        tx.append_event(&self.run_id, b"{\"job\":\"queued\"}", T0)?;
        Ok(())
    }

    fn lease(&self, tx: &mut dyn StoreTx, poll: u32) -> Result<Assignment> {
        let assignment = tx
            .lease(&self.runner_id, &format!("poll-{poll}"), T0, TTL)?
            .ok_or_else(|| StoreError::Invalid("nothing to lease".into()))?;
        tx.append_event(&self.run_id, b"{\"job\":\"running\"}", T0)?;
        Ok(assignment)
    }

    fn run(&self, tx: &mut dyn StoreTx, job: &JobRef) -> Result<()> {
        tx.renew(&self.runner_id, job, T0, TTL)?;
        let lines: Vec<LogLine> = (1..=20)
            .map(|seq| LogLine {
                seq,
                step_index: 0,
                unix_ms: T0,
                text: format!("compiling crate number {seq} of the workspace"),
            })
            .collect();
        tx.append_logs(&self.runner_id, job, &lines)?;
        Ok(())
    }

    fn complete(&self, tx: &mut dyn StoreTx, job: &JobRef) -> Result<()> {
        let result = JobResult {
            conclusion: Conclusion::Success,
            outputs: vec![("version".into(), "1.2.3".into())],
            steps: Vec::new(),
            error: String::new(),
            summary: String::new(),
            started_ms: T0,
            finished_ms: T0,
            last_log_seq: 20,
        };
        tx.complete_job(&self.runner_id, job, &result, T0)?;
        tx.append_op(
            &self.run_id,
            b"{\"Complete\":{\"leg\":1,\"conclusion\":\"success\"}}",
        )?;
        tx.append_event(&self.run_id, b"{\"job\":\"done\"}", T0)?;
        Ok(())
    }

    /// `jobs` whole job cycles, each phase of `batch` jobs in one transaction; returns the
    /// thread's CPU time.
    fn cycles(&self, jobs: u64, batch: u64) -> Duration {
        let labels = ["linux".to_string()];
        let start = thread_cpu_time();
        let mut done = 0;
        while done < jobs {
            let n = batch.min(jobs - done);
            let store = &self.store;
            store_write(store, |tx| (0..n).try_for_each(|_| self.queue(tx, &labels)));
            let first_poll = self.next_leg.get();
            let refs = store_write(store, |tx| {
                (0..n)
                    .map(|i| self.lease(tx, first_poll + i as u32).map(|a| a.job_ref))
                    .collect::<Result<Vec<_>>>()
            });
            store_write(store, |tx| refs.iter().try_for_each(|r| self.run(tx, r)));
            store_write(store, |tx| {
                refs.iter().try_for_each(|r| self.complete(tx, r))
            });
            done += n;
        }
        thread_cpu_time().saturating_sub(start)
    }
}

fn thread_cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .expect("clock_gettime(CLOCK_THREAD_CPUTIME_ID)")
}

/// The floor under every transaction: a one-row insert committed alone, with the store's
/// settings (WAL, synchronous = NORMAL).
fn bare_commits(conn: &rusqlite::Connection, n: u64) -> Duration {
    let start = thread_cpu_time();
    for i in 0..n {
        let tx = conn.unchecked_transaction().expect("begin");
        tx.execute("INSERT INTO t(v) VALUES (?1)", [i as i64])
            .expect("insert");
        tx.commit().expect("commit");
    }
    thread_cpu_time().saturating_sub(start)
}

fn store_write<T>(store: &SqliteStore, f: impl FnOnce(&mut dyn StoreTx) -> Result<T>) -> T {
    store.write(f).expect("store write")
}

/// Resident memory of this process, from /proc (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Queues 10,000 jobs that the bench runner cannot take (it lacks `gpu`).
fn queue_10k_foreign(bench: &Bench) {
    let labels = ["linux".to_string(), "gpu".to_string()];
    for _ in 0..100 {
        store_write(&bench.store, |tx| {
            (0..100).try_for_each(|_| bench.queue(tx, &labels))
        });
    }
}

fn print_queue_memory() {
    let bench = Bench::new();
    let before = rss_bytes();
    queue_10k_foreign(&bench);
    let after = rss_bytes();
    println!(
        "store: 10,000 queued jobs with 4 KiB payloads grew resident memory by {:.1} MiB",
        after.saturating_sub(before) as f64 / (1024.0 * 1024.0)
    );
}

fn bench_store(c: &mut Criterion) {
    print_queue_memory();
    let floor_dir = tempfile::tempdir().expect("temporary directory");
    let floor = rusqlite::Connection::open(floor_dir.path().join("floor.db")).expect("open");
    floor
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)",
        )
        .expect("create the reference table");
    c.bench_function("reference/bare_commit", |b| {
        b.iter_custom(|iters| bare_commits(&floor, iters))
    });
    let mut group = c.benchmark_group("job");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    let single = Bench::new();
    group.bench_function("one_tx_per_call", |b| {
        b.iter_custom(|iters| single.cycles(iters, 1))
    });
    let batched = Bench::new();
    group.bench_function("batched_64", |b| {
        b.iter_custom(|iters| batched.cycles(iters, 64))
    });
    let deep = Bench::new();
    queue_10k_foreign(&deep);
    group.bench_function("queue_of_10k", |b| {
        b.iter_custom(|iters| deep.cycles(iters, 1))
    });
    group.finish();
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
