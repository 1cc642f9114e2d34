//! A scheduler's ControlService for the user commands' tests: a real tonic server on a
//! loopback port whose answers each test scripts (runs, the events WatchRun streams, replies
//! to lose, streams to break), and which records every call.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::Stream;
use kiln_proto::v1 as pb;
use pb::control_service_server::{ControlService, ControlServiceServer};
use tonic::{Request, Response, Status, Streaming};

pub const TOKEN: &str = "fake-control-token";

#[derive(Default)]
pub struct FakeState {
    /// Stored bundles by digest.
    pub snapshots: HashMap<String, Vec<u8>>,
    /// Bytes received per UploadSnapshot call.
    pub uploads: Vec<usize>,
    pub submits: Vec<pb::SubmitRunRequest>,
    /// SubmitRun calls to carry out and then answer UNAVAILABLE (a lost reply).
    pub lose_submit_replies: u32,
    /// The runs a submission starts (their ids are fixed by the test).
    pub runs_to_start: Vec<pb::RunSummary>,
    /// The runs each idempotency key started.
    pub submitted: HashMap<String, Vec<pb::RunSummary>>,
    /// Every event of every run, in order; WatchRun sends those after the cursors.
    pub events: Vec<pb::RunEvent>,
    /// Per WatchRun call, in order: how many events to send before breaking the stream with
    /// UNAVAILABLE; calls past the list send everything.
    pub break_watch_after: Vec<usize>,
    pub watches: Vec<pb::WatchRunRequest>,
    /// GetRun's answers, by run id.
    pub finished: HashMap<String, pb::RunSummary>,
    pub cancelled: Vec<String>,
    pub reruns: Vec<String>,
    pub runners: Vec<pb::RunnerInfo>,
}

pub struct FakeControl {
    pub state: Arc<Mutex<FakeState>>,
    pub port: u16,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeControl {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeControl {
    pub async fn start() -> FakeControl {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let service = Service {
            state: state.clone(),
        };
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(ControlServiceServer::new(service))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        });
        FakeControl {
            state,
            port,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Service {
    state: Arc<Mutex<FakeState>>,
}

impl Service {
    fn state<T>(&self, request: &Request<T>) -> Result<MutexGuard<'_, FakeState>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if header != Some(&format!("Bearer {TOKEN}")) {
            return Err(Status::unauthenticated("missing or unknown control token"));
        }
        Ok(self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl ControlService for Service {
    async fn upload_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::UploadSnapshotResponse>, Status> {
        drop(self.state(&request)?);
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty upload"))?;
        let digest = first.digest.clone();
        if self.state.lock().unwrap().snapshots.contains_key(&digest) {
            self.state.lock().unwrap().uploads.push(0);
            return Ok(Response::new(pb::UploadSnapshotResponse {
                digest,
                already_stored: true,
            }));
        }
        let mut data = first.data;
        while let Some(chunk) = stream.message().await? {
            assert!(chunk.data.len() <= 1 << 20, "a chunk over 1 MiB");
            data.extend(chunk.data);
        }
        if data.len() as u64 != first.size || blake3::hash(&data).to_hex().as_str() != digest {
            return Err(Status::invalid_argument(
                "the bundle does not match its digest",
            ));
        }
        let mut state = self.state.lock().unwrap();
        state.uploads.push(data.len());
        state.snapshots.insert(digest.clone(), data);
        Ok(Response::new(pb::UploadSnapshotResponse {
            digest,
            already_stored: false,
        }))
    }

    async fn submit_run(
        &self,
        request: Request<pb::SubmitRunRequest>,
    ) -> Result<Response<pb::SubmitRunResponse>, Status> {
        let mut state = self.state(&request)?;
        let request = request.into_inner();
        state.submits.push(request.clone());
        let runs = match state.submitted.get(&request.idempotency_key) {
            Some(runs) => runs.clone(),
            None => {
                let runs = state.runs_to_start.clone();
                state
                    .submitted
                    .insert(request.idempotency_key.clone(), runs.clone());
                runs
            }
        };
        if state.lose_submit_replies > 0 {
            state.lose_submit_replies -= 1;
            return Err(Status::unavailable("the reply was lost"));
        }
        Ok(Response::new(pb::SubmitRunResponse {
            runs,
            notices: vec![
                "skipping .github/workflows/other.yml: runs on pull_request, not on push"
                    .to_owned(),
            ],
        }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::RunSummary>, Status> {
        let state = self.state(&request)?;
        let id = request.into_inner().run_id;
        state
            .finished
            .get(&id)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no run {id}")))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let state = self.state(&request)?;
        let limit = request.into_inner().limit as usize;
        let mut runs: Vec<pb::RunSummary> = state
            .finished
            .values()
            .map(|r| pb::RunSummary {
                jobs: Vec::new(),
                ..r.clone()
            })
            .collect();
        runs.sort_by_key(|run| std::cmp::Reverse(run.created_unix_ms));
        runs.truncate(limit);
        Ok(Response::new(pb::ListRunsResponse { runs }))
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::CancelRunResponse>, Status> {
        let mut state = self.state(&request)?;
        let id = request.into_inner().run_id;
        if !state.finished.contains_key(&id) {
            return Err(Status::not_found(format!("no run {id}")));
        }
        state.cancelled.push(id);
        Ok(Response::new(pb::CancelRunResponse {}))
    }

    type WatchRunStream = EventStream;

    async fn watch_run(
        &self,
        request: Request<pb::WatchRunRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let mut state = self.state(&request)?;
        let watch = request.into_inner();
        let call = state.watches.len();
        state.watches.push(watch.clone());
        let mut events: Vec<Result<pb::RunEvent, Status>> = Vec::new();
        for event in &state.events {
            if !watch.run_ids.contains(&event.run_id) {
                continue;
            }
            match &event.kind {
                Some(pb::run_event::Kind::Logs(logs)) => {
                    if !watch.logs {
                        continue;
                    }
                    let after = watch.log_cursors.get(&logs.job_id).copied().unwrap_or(0);
                    let lines: Vec<pb::LogLine> = logs
                        .lines
                        .iter()
                        .filter(|l| l.seq > after)
                        .cloned()
                        .collect();
                    if !lines.is_empty() {
                        let mut event = event.clone();
                        event.kind = Some(pb::run_event::Kind::Logs(pb::JobLogLines {
                            lines,
                            ..logs.clone()
                        }));
                        events.push(Ok(event));
                    }
                }
                _ if event.event_seq > watch.after_event_seq => events.push(Ok(event.clone())),
                _ => {}
            }
        }
        if let Some(&limit) = state.break_watch_after.get(call) {
            events.truncate(limit);
            events.push(Err(Status::unavailable("the scheduler is restarting")));
        }
        Ok(Response::new(Box::pin(futures_util::stream::iter(events))))
    }

    async fn rerun_failed(
        &self,
        request: Request<pb::RerunFailedRequest>,
    ) -> Result<Response<pb::RunSummary>, Status> {
        let mut state = self.state(&request)?;
        let id = request.into_inner().run_id;
        let run = state
            .finished
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no run {id}")))?;
        state.reruns.push(id);
        Ok(Response::new(pb::RunSummary {
            attempt: run.attempt + 1,
            state: pb::RunState::Running as i32,
            conclusion: 0,
            ..run
        }))
    }

    async fn list_runners(
        &self,
        request: Request<pb::ListRunnersRequest>,
    ) -> Result<Response<pb::ListRunnersResponse>, Status> {
        let state = self.state(&request)?;
        Ok(Response::new(pb::ListRunnersResponse {
            runners: state.runners.clone(),
        }))
    }
}
