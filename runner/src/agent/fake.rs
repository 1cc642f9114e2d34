//! A scheduler for tests (feature `test-support`): a real tonic server implementing
//! `RunnerService` on a loopback port, whose answers each test scripts through [`FakeState`]
//! (jobs to hand out, jobs to cancel or declare stale, replies to lose, a revoked token), and
//! which records every call it got. It sits behind a TCP relay, so a test can make the
//! scheduler unreachable ([`FakeScheduler::go_away`]) and bring it back on the same address.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kiln_proto::v1 as pb;
use pb::runner_service_server::{RunnerService, RunnerServiceServer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use super::credentials::Timings;

pub const REGISTRATION_TOKEN: &str = "fake-registration-token";
pub const RUNNER_TOKEN: &str = "fake-runner-token";

/// One call the fake received.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub method: &'static str,
    /// The job a job-scoped call was about.
    pub job_id: Option<String>,
    pub at: Instant,
}

/// A lease the fake granted.
#[derive(Debug, Clone)]
pub struct Lease {
    pub job: pb::JobRef,
    pub leased_at: Instant,
    pub renewals: u32,
    pub completed_at: Option<Instant>,
}

/// What the fake holds and how it answers; tests change it while the runner runs.
pub struct FakeState {
    pub timings: Timings,
    /// Jobs to lease, in order; the fake fills in their `ref`.
    pub queue: VecDeque<pb::JobSpec>,
    pub leases: BTreeMap<String, Lease>,
    /// Stored log lines per job, by sequence number.
    pub logs: BTreeMap<String, BTreeMap<u64, pb::LogLine>>,
    pub steps: Vec<pb::ReportStepRequest>,
    /// For each report in `steps`: the lines of its job stored when it arrived.
    pub lines_before_step: Vec<usize>,
    pub completions: Vec<pb::CompleteJobRequest>,
    pub calls: Vec<CallRecord>,
    pub polls: Vec<pb::PollJobRequest>,
    pub heartbeats: Vec<pb::HeartbeatRequest>,
    /// The most leases running at once.
    pub most_running: usize,
    /// Assignments by poll id, so a repeated poll gets the same one.
    answered_polls: HashMap<String, Option<pb::JobAssignment>>,
    /// Every call but Register gets UNAUTHENTICATED.
    pub revoked: bool,
    /// Jobs whose replies ask for cancellation (RenewLease, AppendLogs, ReportStep).
    pub cancel: HashSet<String>,
    /// Jobs named in Heartbeat's `cancel` list.
    pub heartbeat_cancel: HashSet<String>,
    /// Jobs whose job-scoped calls get FAILED_PRECONDITION, and when the first one was answered.
    pub stale: HashSet<String>,
    pub stale_answered: HashMap<String, Instant>,
    /// Jobs named in Heartbeat's `stale` list.
    pub heartbeat_stale: HashSet<String>,
    /// AppendLogs calls to store and then answer UNAVAILABLE (a lost reply).
    pub lose_append_replies: u32,
    /// AppendLogs calls to refuse with UNAVAILABLE without storing anything.
    pub refuse_appends: u32,
    /// PollJob calls to lease a job for and then answer UNAVAILABLE.
    pub lose_poll_replies: u32,
    next_lease: u64,
}

impl FakeState {
    fn new(timings: Timings) -> FakeState {
        FakeState {
            timings,
            queue: VecDeque::new(),
            leases: BTreeMap::new(),
            logs: BTreeMap::new(),
            steps: Vec::new(),
            lines_before_step: Vec::new(),
            completions: Vec::new(),
            calls: Vec::new(),
            polls: Vec::new(),
            heartbeats: Vec::new(),
            most_running: 0,
            answered_polls: HashMap::new(),
            revoked: false,
            cancel: HashSet::new(),
            heartbeat_cancel: HashSet::new(),
            stale: HashSet::new(),
            stale_answered: HashMap::new(),
            heartbeat_stale: HashSet::new(),
            lose_append_replies: 0,
            refuse_appends: 0,
            lose_poll_replies: 0,
            next_lease: 0,
        }
    }

    /// The stored log text of a job, in sequence order.
    pub fn log_text(&self, job_id: &str) -> Vec<String> {
        self.logs
            .get(job_id)
            .map(|lines| lines.values().map(|l| l.text.clone()).collect())
            .unwrap_or_default()
    }

    /// Calls about `job_id` received after the fake first told the runner the job was stale.
    pub fn calls_after_stale(&self, job_id: &str, grace: Duration) -> Vec<CallRecord> {
        let Some(at) = self.stale_answered.get(job_id) else {
            return Vec::new();
        };
        self.calls
            .iter()
            .filter(|c| c.job_id.as_deref() == Some(job_id) && c.at > *at + grace)
            .cloned()
            .collect()
    }

    fn running(&self) -> usize {
        self.leases
            .values()
            .filter(|l| l.completed_at.is_none() && !self.stale.contains(&l.job.job_id))
            .count()
    }

    fn record(&mut self, method: &'static str, job: Option<&pb::JobRef>) -> Result<(), Status> {
        self.calls.push(CallRecord {
            method,
            job_id: job.map(|j| j.job_id.clone()),
            at: Instant::now(),
        });
        if self.revoked {
            return Err(Status::unauthenticated("the runner token was revoked"));
        }
        Ok(())
    }

    /// The lease `job` names, or FAILED_PRECONDITION.
    fn check(&mut self, job: Option<&pb::JobRef>) -> Result<String, Status> {
        let job = job.ok_or_else(|| Status::invalid_argument("no job ref"))?;
        let current = self.leases.get(&job.job_id);
        let matches = current.is_some_and(|l| l.job.lease_id == job.lease_id);
        if !matches || self.stale.contains(&job.job_id) {
            self.stale_answered
                .entry(job.job_id.clone())
                .or_insert_with(Instant::now);
            return Err(Status::failed_precondition("the lease is not yours"));
        }
        Ok(job.job_id.clone())
    }

    fn lease_next(&mut self) -> Option<pb::JobAssignment> {
        let spec = self.queue.pop_front()?;
        self.next_lease += 1;
        let job = pb::JobRef {
            job_id: format!("job-{}", self.next_lease),
            lease_id: format!("lease-{}", self.next_lease),
            attempt: 1,
        };
        self.leases.insert(
            job.job_id.clone(),
            Lease {
                job: job.clone(),
                leased_at: Instant::now(),
                renewals: 0,
                completed_at: None,
            },
        );
        self.most_running = self.most_running.max(self.running());
        Some(pb::JobAssignment {
            r#ref: Some(job),
            lease_expires_unix_ms: 0,
            spec: Some(spec),
        })
    }
}

struct Service {
    state: Arc<Mutex<FakeState>>,
    queued: Arc<Notify>,
}

impl Service {
    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn authorized<T>(request: &Request<T>) -> Result<(), Status> {
    let header = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if header == Some(&format!("Bearer {RUNNER_TOKEN}")) {
        Ok(())
    } else {
        Err(Status::unauthenticated("missing or unknown runner token"))
    }
}

fn expires() -> i64 {
    super::convert::unix_ms(std::time::SystemTime::now() + Duration::from_secs(3))
}

#[tonic::async_trait]
impl RunnerService for Service {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.state();
        state.record("Register", None)?;
        if request.registration_token != REGISTRATION_TOKEN {
            return Err(Status::unauthenticated("unknown registration token"));
        }
        if request.protocol_version != kiln_proto::PROTOCOL_VERSION {
            return Err(Status::failed_precondition("protocol version mismatch"));
        }
        let timings = state.timings;
        Ok(Response::new(pb::RegisterResponse {
            // Unique, as a real scheduler's: a runner removes the containers labelled with
            // its id at start, and tests of other fakes may run at the same time.
            runner_id: format!("runner-{}-{}", request.name, super::client::random_id()),
            runner_token: RUNNER_TOKEN.to_owned(),
            heartbeat_interval_ms: timings.heartbeat_interval_ms,
            lease_ttl_ms: timings.lease_ttl_ms,
            renew_interval_ms: timings.renew_interval_ms,
            poll_timeout_ms: timings.poll_timeout_ms,
            cache_url: String::new(),
            protocol_version: kiln_proto::PROTOCOL_VERSION,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        authorized(&request)?;
        let request = request.into_inner();
        let mut state = self.state();
        state.record("Heartbeat", None)?;
        let named = |set: &HashSet<String>| -> Vec<pb::JobRef> {
            request
                .running
                .iter()
                .filter(|j| set.contains(&j.job_id))
                .cloned()
                .collect()
        };
        let reply = pb::HeartbeatResponse {
            cancel: named(&state.heartbeat_cancel),
            stale: named(&state.heartbeat_stale),
        };
        for job in &reply.stale {
            state
                .stale_answered
                .entry(job.job_id.clone())
                .or_insert_with(Instant::now);
        }
        state.heartbeats.push(request);
        Ok(Response::new(reply))
    }

    async fn poll_job(
        &self,
        request: Request<pb::PollJobRequest>,
    ) -> Result<Response<pb::PollJobResponse>, Status> {
        authorized(&request)?;
        let request = request.into_inner();
        let deadline = {
            let mut state = self.state();
            state.record("PollJob", None)?;
            state.polls.push(request.clone());
            if let Some(answer) = state.answered_polls.get(&request.poll_id) {
                return Ok(Response::new(pb::PollJobResponse {
                    job: answer.clone(),
                }));
            }
            Instant::now() + state.timings.poll_timeout()
        };
        loop {
            let notified = self.queued.notified();
            {
                let mut state = self.state();
                let job = if request.free_slots > 0 {
                    state.lease_next()
                } else {
                    None
                };
                if job.is_some() || Instant::now() >= deadline {
                    state
                        .answered_polls
                        .insert(request.poll_id.clone(), job.clone());
                    if job.is_some() && state.lose_poll_replies > 0 {
                        state.lose_poll_replies -= 1;
                        return Err(Status::unavailable("the reply was lost"));
                    }
                    return Ok(Response::new(pb::PollJobResponse { job }));
                }
            }
            let _ = tokio::time::timeout_at(deadline.into(), notified).await;
        }
    }

    async fn renew_lease(
        &self,
        request: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::RenewLeaseResponse>, Status> {
        authorized(&request)?;
        let request = request.into_inner();
        let mut state = self.state();
        state.record("RenewLease", request.job.as_ref())?;
        let id = state.check(request.job.as_ref())?;
        if let Some(lease) = state.leases.get_mut(&id) {
            lease.renewals += 1;
        }
        Ok(Response::new(pb::RenewLeaseResponse {
            lease_expires_unix_ms: expires(),
            cancel_requested: state.cancel.contains(&id),
        }))
    }

    async fn report_step(
        &self,
        request: Request<pb::ReportStepRequest>,
    ) -> Result<Response<pb::ReportStepResponse>, Status> {
        authorized(&request)?;
        let request = request.into_inner();
        let mut state = self.state();
        state.record("ReportStep", request.job.as_ref())?;
        let id = state.check(request.job.as_ref())?;
        let repeated = state
            .steps
            .iter()
            .any(|s| s.job == request.job && s.index == request.index && s.phase == request.phase);
        if !repeated {
            let stored = request
                .job
                .as_ref()
                .and_then(|job| state.logs.get(&job.job_id))
                .map_or(0, |lines| lines.len());
            state.lines_before_step.push(stored);
            state.steps.push(request);
        }
        Ok(Response::new(pb::ReportStepResponse {
            cancel_requested: state.cancel.contains(&id),
        }))
    }

    async fn append_logs(
        &self,
        request: Request<pb::AppendLogsRequest>,
    ) -> Result<Response<pb::AppendLogsResponse>, Status> {
        authorized(&request)?;
        let request = request.into_inner();
        let mut state = self.state();
        state.record("AppendLogs", request.job.as_ref())?;
        let id = state.check(request.job.as_ref())?;
        if state.refuse_appends > 0 {
            state.refuse_appends -= 1;
            return Err(Status::unavailable("try again"));
        }
        let stored = state.logs.entry(id.clone()).or_default();
        let mut acked = stored.keys().next_back().copied().unwrap_or(0);
        for line in request.lines {
            // Only the next line in order is taken: a gap would lose lines.
            if line.seq == acked + 1 {
                acked = line.seq;
                stored.insert(line.seq, line);
            } else if line.seq > acked + 1 {
                return Err(Status::invalid_argument(format!(
                    "line {} follows line {acked}",
                    line.seq
                )));
            }
        }
        if state.lose_append_replies > 0 {
            state.lose_append_replies -= 1;
            return Err(Status::unavailable("the reply was lost"));
        }
        Ok(Response::new(pb::AppendLogsResponse {
            acked_seq: acked,
            cancel_requested: state.cancel.contains(&id),
        }))
    }

    async fn complete_job(
        &self,
        request: Request<pb::CompleteJobRequest>,
    ) -> Result<Response<pb::CompleteJobResponse>, Status> {
        authorized(&request)?;
        let request = request.into_inner();
        let mut state = self.state();
        state.record("CompleteJob", request.job.as_ref())?;
        let id = state.check(request.job.as_ref())?;
        let stored = state
            .logs
            .get(&id)
            .and_then(|l| l.keys().next_back().copied())
            .unwrap_or(0);
        if stored != request.last_log_seq {
            return Err(Status::failed_precondition(format!(
                "the runner sent {} lines, the scheduler holds {stored}",
                request.last_log_seq
            )));
        }
        let first = state
            .leases
            .get(&id)
            .is_some_and(|l| l.completed_at.is_none());
        if first {
            if let Some(lease) = state.leases.get_mut(&id) {
                lease.completed_at = Some(Instant::now());
            }
            state.completions.push(request);
        }
        Ok(Response::new(pb::CompleteJobResponse {}))
    }
}

/// The fake scheduler and its relay.
pub struct FakeScheduler {
    pub state: Arc<Mutex<FakeState>>,
    queued: Arc<Notify>,
    server: JoinHandle<()>,
    relay_port: u16,
    target: SocketAddr,
    relay: Option<Relay>,
}

struct Relay {
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    fn start(listener: TcpListener, target: SocketAddr) -> Relay {
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let kept = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                kept.lock().unwrap_or_else(|p| p.into_inner()).push(relay);
            }
        });
        Relay {
            accept,
            connections,
        }
    }

    fn stop(self) {
        self.accept.abort();
        for connection in self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            connection.abort();
        }
    }
}

impl FakeScheduler {
    /// Starts the fake with short timings (heartbeat 500 ms, lease 3 s renewed every second,
    /// polls of 500 ms).
    pub async fn start() -> FakeScheduler {
        Self::start_with(Timings {
            heartbeat_interval_ms: 500,
            lease_ttl_ms: 3000,
            renew_interval_ms: 1000,
            poll_timeout_ms: 500,
        })
        .await
    }

    pub async fn start_with(timings: Timings) -> FakeScheduler {
        let state = Arc::new(Mutex::new(FakeState::new(timings)));
        let queued = Arc::new(Notify::new());
        let service = Service {
            state: state.clone(),
            queued: queued.clone(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(RunnerServiceServer::new(service))
                .serve_with_incoming(incoming)
                .await;
        });
        let relay_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let relay_port = relay_listener.local_addr().expect("address").port();
        FakeScheduler {
            state,
            queued,
            server,
            relay_port,
            target,
            relay: Some(Relay::start(relay_listener, target)),
        }
    }

    /// The address runners use.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.relay_port)
    }

    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job for the next poll.
    pub fn queue(&self, spec: pb::JobSpec) {
        self.state().queue.push_back(spec);
        self.queued.notify_waiters();
    }

    /// Closes the scheduler's address and cuts every open connection: calls fail as they
    /// would with the scheduler's host gone.
    pub fn go_away(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.stop();
        }
    }

    /// Serves on the same address again, with the same state.
    pub async fn come_back(&mut self) {
        if self.relay.is_none() {
            let listener = TcpListener::bind(("127.0.0.1", self.relay_port))
                .await
                .expect("the fake scheduler's address is taken");
            self.relay = Some(Relay::start(listener, self.target));
        }
    }

    /// Waits until `check` holds, or panics after `limit`.
    pub async fn wait_for(&self, limit: Duration, what: &str, check: impl Fn(&FakeState) -> bool) {
        let deadline = Instant::now() + limit;
        while !check(&self.state()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FakeScheduler {
    fn drop(&mut self) {
        self.go_away();
        self.server.abort();
    }
}
