//! The scheduler as runners see it, over real loopback gRPC: the service and 8 runner slots
//! (8 runners of capacity 1, each a tonic client that long-polls and completes every job at
//! once: a no-op executor) in one process.
//!
//! - dispatch latency: a chain of jobs (`needs` the one before), so exactly one job becomes
//!   ready when the previous one completes; measured from the moment the slot sends
//!   CompleteJob for job k to the moment a slot's PollJob returns job k+1 (completion, engine,
//!   queue, lease and the reply included). Reference in the same run: a read-only gRPC call
//!   (GetRun) from the same client, the floor any dispatch pays.
//! - throughput: one run of 10,000 jobs (40 jobs of 250 matrix legs) drained by the 8 slots,
//!   from submission to the last completion; and the process's CPU time per job (user and
//!   system, the no-op runners' share included: they are in the same process).
//! - memory: the resident memory the process gained while a run of 10,000 jobs sat queued
//!   with no runner that could take them.
//!
//! `cargo bench -p kiln-scheduler --bench dispatch` (KILN_BENCH_CHAIN=N sets the chain length,
//! default 250, at most 256).

#[path = "../tests/service_support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_proto::v1 as pb;
use kiln_scheduler::service::{Clock, Scheduler, ServiceConfig, SystemClock};
use kiln_scheduler::store::prelude::*;
use kiln_scheduler::store::{SqliteStore, TokenKind};
use pb::control_service_client::ControlServiceClient;
use pb::runner_service_client::RunnerServiceClient;
use support::{request, MemoryPlanner, REGISTRATION};
use tonic::transport::Channel;

const SLOTS: usize = 8;
/// Chains run one after the other in the latency measurement (a workflow holds at most 256
/// jobs).
const ROUNDS: usize = 4;
const LABEL: &str = "bench";

fn chain_workflow(jobs: usize) -> String {
    let mut text = String::from("on: push\njobs:\n");
    for k in 0..jobs {
        text.push_str(&format!("  j{k}:\n    runs-on: {LABEL}\n"));
        if k > 0 {
            text.push_str(&format!("    needs: j{}\n", k - 1));
        }
        text.push_str("    steps:\n      - run: true\n");
    }
    text
}

/// `jobs` jobs of `legs` matrix legs each, all ready at once.
fn wide_workflow(jobs: usize, legs: usize, label: &str) -> String {
    let values: Vec<String> = (0..legs).map(|v| v.to_string()).collect();
    let mut text = String::from("on: push\njobs:\n");
    for k in 0..jobs {
        text.push_str(&format!(
            "  w{k}:\n    runs-on: {label}\n    strategy:\n      matrix:\n        n: [{}]\n    steps:\n      - run: true\n",
            values.join(", ")
        ));
    }
    text
}

struct Service {
    _dir: tempfile::TempDir,
    scheduler: Arc<Scheduler>,
    planner: Arc<MemoryPlanner>,
    addr: SocketAddr,
    control_token: String,
}

async fn start_service() -> Service {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = SystemClock.now_ms();
    let store = SqliteStore::open(dir.path(), now).expect("store");
    store
        .write(|tx| tx.set_token(TokenKind::Registration, REGISTRATION, now))
        .expect("registration token");
    let control_token = "bench-control-token".to_owned();
    store
        .write(|tx| tx.set_token(TokenKind::Control, &control_token, now))
        .expect("control token");
    let planner = Arc::new(MemoryPlanner::default());
    let config = ServiceConfig {
        poll_timeout: Duration::from_secs(5),
        ..ServiceConfig::default()
    };
    let scheduler = Arc::new(
        Scheduler::open(
            Arc::new(store),
            planner.clone(),
            config,
            Arc::new(SystemClock),
        )
        .expect("scheduler"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (runner_service, control_service) = kiln_scheduler::grpc::services(scheduler.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(runner_service)
            .add_service(control_service)
            .serve_with_incoming(incoming(listener)),
    );
    Service {
        _dir: dir,
        scheduler,
        planner,
        addr,
        control_token,
    }
}

/// Accepted connections with Nagle's algorithm off, as `kiln scheduler` serves them: small
/// replies otherwise wait for the peer's delayed ACK (40 ms on Linux loopback).
fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tonic::codegen::tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tonic::codegen::tokio_stream::StreamExt as _;
    tonic::codegen::tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

/// What the slots share: when the last CompleteJob was sent (for the chain), the latencies
/// seen, and how many jobs were completed.
#[derive(Default)]
struct Tally {
    completing_since: Mutex<Option<Instant>>,
    latencies: Mutex<Vec<Duration>>,
    completed: AtomicU64,
}

/// A runner of capacity 1 that completes each job as soon as it has it.
async fn slot(
    addr: SocketAddr,
    name: String,
    labels: Vec<String>,
    tally: Arc<Tally>,
    stop: Arc<tokio::sync::Notify>,
) {
    let mut client = RunnerServiceClient::new(channel(addr).await);
    let registered = client
        .register(pb::RegisterRequest {
            registration_token: REGISTRATION.to_owned(),
            name,
            labels,
            capacity: 1,
            version: "bench".to_owned(),
            protocol_version: kiln_proto::PROTOCOL_VERSION,
        })
        .await
        .expect("register")
        .into_inner();
    let token = registered.runner_token;
    let mut polls = 0u64;
    loop {
        polls += 1;
        let poll = client.poll_job(bearer(
            pb::PollJobRequest {
                poll_id: format!("{}-{polls}", registered.runner_id),
                free_slots: 1,
            },
            &token,
        ));
        let response = tokio::select! {
            response = poll => response,
            () = stop.notified() => return,
        };
        let Some(job) = response.expect("poll").into_inner().job else {
            continue;
        };
        if let Some(since) = tally.completing_since.lock().unwrap().take() {
            tally.latencies.lock().unwrap().push(since.elapsed());
        }
        *tally.completing_since.lock().unwrap() = Some(Instant::now());
        client
            .complete_job(bearer(
                pb::CompleteJobRequest {
                    job: job.r#ref,
                    conclusion: pb::Conclusion::Success as i32,
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("complete");
        tally.completed.fetch_add(1, Ordering::SeqCst);
    }
}

fn start_slots(service: &Service, tally: &Arc<Tally>, stop: &Arc<tokio::sync::Notify>) {
    for n in 0..SLOTS {
        tokio::spawn(slot(
            service.addr,
            format!("slot-{n}"),
            vec![LABEL.to_owned()],
            tally.clone(),
            stop.clone(),
        ));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_time() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(usage.user_time()) + tv(usage.system_time())
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn submit(service: &Service, workflow: String) -> String {
    *service.planner.workflows.lock().unwrap() =
        vec![(".github/workflows/bench.yml".to_owned(), workflow)];
    let submission = service.scheduler.submit(&request(&[]), "").expect("submit");
    submission.runs[0].id.clone()
}

async fn latency(service: &Service, chain: usize) {
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(tokio::sync::Notify::new());
    start_slots(service, &tally, &stop);
    // Let every slot register and park in its long poll.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut run_id = String::new();
    for round in 1..=ROUNDS {
        // The first job is ready when the run is submitted.
        *tally.completing_since.lock().unwrap() = Some(Instant::now());
        run_id = submit(service, chain_workflow(chain));
        wait_until("the chain", Duration::from_secs(600), || {
            tally.completed.load(Ordering::SeqCst) >= (round * chain) as u64
        })
        .await;
        // The last job's completion readies nothing.
        tally.completing_since.lock().unwrap().take();
    }
    stop.notify_waiters();
    let mut latencies = tally.latencies.lock().unwrap().clone();
    latencies.sort();

    // The reference: a read-only round trip to the same service.
    let mut control = ControlServiceClient::new(channel(service.addr).await);
    let mut reference = Vec::new();
    for _ in 0..latencies.len() {
        let start = Instant::now();
        control
            .get_run(bearer(
                pb::GetRunRequest {
                    run_id: run_id.clone(),
                },
                &service.control_token,
            ))
            .await
            .expect("get run");
        reference.push(start.elapsed());
    }
    reference.sort();
    println!(
        "dispatch latency, {ROUNDS} chains of {chain} jobs ({} dispatches), {SLOTS} slots: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().expect("latencies"))
    );
    println!(
        "reference GetRun round trip: p50 {:.3} ms, p99 {:.3} ms; dispatch p50 / GetRun p50 = {:.2}",
        ms(percentile(&reference, 0.5)),
        ms(percentile(&reference, 0.99)),
        ms(percentile(&latencies, 0.5)) / ms(percentile(&reference, 0.5))
    );
}

async fn throughput(service: &Service) {
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(tokio::sync::Notify::new());
    start_slots(service, &tally, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let jobs = 40 * 250;
    let commits = service.scheduler.store().commits();
    let cpu = cpu_time();
    let start = Instant::now();
    submit(service, wide_workflow(40, 250, LABEL));
    wait_until("10,000 jobs", Duration::from_secs(1800), || {
        tally.completed.load(Ordering::SeqCst) >= jobs as u64
    })
    .await;
    let elapsed = start.elapsed();
    let cpu = cpu_time() - cpu;
    let commits = service.scheduler.store().commits() - commits;
    stop.notify_waiters();
    println!(
        "throughput: {jobs} no-op jobs in {:.2} s = {:.0} jobs/s; CPU {:.0} µs per job (whole process: service and the {SLOTS} runner slots); {:.2} commits per job",
        elapsed.as_secs_f64(),
        jobs as f64 / elapsed.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / jobs as f64,
        commits as f64 / jobs as f64
    );
}

async fn memory(service: &Service) {
    let before = rss_kib();
    // No runner has this label: the jobs stay queued.
    submit(service, wide_workflow(40, 250, "nobody-has-this"));
    let queued: u64 = service
        .scheduler
        .store()
        .queued_label_sets()
        .expect("queue")
        .iter()
        .map(|(_, count)| count)
        .sum();
    let after = rss_kib();
    println!(
        "memory: {queued} jobs queued, resident memory {} -> {} MiB (+{:.1} MiB)",
        before / 1024,
        after / 1024,
        (after.saturating_sub(before)) as f64 / 1024.0
    );
}

fn main() {
    let chain = std::env::var("KILN_BENCH_CHAIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let service = start_service().await;
        memory(&service).await;
        let service = start_service().await;
        latency(&service, chain).await;
        let service = start_service().await;
        throughput(&service).await;
    });
}
