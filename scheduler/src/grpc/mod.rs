//! The scheduler's gRPC services over the [`Scheduler`]: `RunnerService` for registered
//! runners and `ControlService` for users' commands. Authentication is a bearer token in the
//! `authorization` metadata (the runner's own token, or the scheduler's control token);
//! store calls run on blocking threads; prost types stay in this module (conversions in
//! `convert.rs`).

mod convert;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use kiln_proto::v1 as pb;
use kiln_proto::PROTOCOL_VERSION;
use pb::control_service_server::{ControlService, ControlServiceServer};
use pb::runner_service_server::{RunnerService, RunnerServiceServer};
use tonic::codegen::tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

use crate::service::{Scheduler, ServiceError, SnapshotWriter};
use crate::store::prelude::*;
use crate::store::{RunnerRecord, RunnerRegistration, StoreError, TokenKind};

/// Both services, ready to be served.
pub fn services(
    scheduler: Arc<Scheduler>,
) -> (
    RunnerServiceServer<RunnerApi>,
    ControlServiceServer<ControlApi>,
) {
    (
        RunnerServiceServer::new(RunnerApi {
            scheduler: scheduler.clone(),
        })
        .max_decoding_message_size(8 << 20),
        ControlServiceServer::new(ControlApi { scheduler }).max_decoding_message_size(8 << 20),
    )
}

/// A service failure as a status: stale leases are FAILED_PRECONDITION (the runner stops the
/// job), another runner's lease PERMISSION_DENIED, the database's own failures are INTERNAL (retried), bad input INVALID_ARGUMENT.
fn status(error: ServiceError) -> Status {
    let message = error.to_string();
    match error {
        ServiceError::Store(store) => match store {
            StoreError::Stale { .. } => Status::failed_precondition(message),
            StoreError::NotHolder { .. } => Status::permission_denied(message),
            StoreError::NotFound { .. } => Status::not_found(message),
            StoreError::LogGap { .. } => Status::out_of_range(message),
            // The runner resends the lines it has not had acknowledged, then completes again.
            StoreError::LogsMissing { .. } => Status::aborted(message),
            StoreError::Invalid(_) => Status::invalid_argument(message),
            _ => Status::internal(message),
        },
        ServiceError::Unauthenticated(_) => Status::unauthenticated(message),
        ServiceError::NotFound(_) => Status::not_found(message),
        ServiceError::Invalid(_) | ServiceError::Plan(_) => Status::invalid_argument(message),
        ServiceError::Corrupt(_) => Status::internal(message),
        ServiceError::Unimplemented(_) => Status::unimplemented(message),
    }
}

/// For a job-scoped call, a job the store does not know is as stale as a lost lease.
fn job_status(error: ServiceError) -> Status {
    match error {
        ServiceError::Store(StoreError::NotFound { .. }) => {
            Status::failed_precondition(error.to_string())
        }
        other => status(other),
    }
}

/// Runs a store-bound call on a blocking thread.
async fn blocking<T: Send + 'static>(
    scheduler: &Arc<Scheduler>,
    call: impl FnOnce(&Scheduler) -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    let scheduler = scheduler.clone();
    tokio::task::spawn_blocking(move || call(&scheduler))
        .await
        .map_err(|e| Status::internal(format!("the scheduler failed while answering: {e}")))?
}

fn bearer<T>(request: &Request<T>) -> Result<String, Status> {
    let missing =
        || Status::unauthenticated("the call carries no `authorization: Bearer <token>` metadata");
    let value = request
        .metadata()
        .get("authorization")
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(missing)?
        .trim();
    if token.is_empty() {
        return Err(missing());
    }
    Ok(token.to_owned())
}

pub struct RunnerApi {
    scheduler: Arc<Scheduler>,
}

impl RunnerApi {
    async fn runner<T>(&self, request: &Request<T>) -> Result<RunnerRecord, Status> {
        let token = bearer(request)?;
        if let Some(known) = self.scheduler.authenticate_runner_cached(&token) {
            return known.map_err(status);
        }
        blocking(&self.scheduler, move |s| {
            s.authenticate_runner(&token).map_err(status)
        })
        .await
    }
}

fn millis_u32(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

#[tonic::async_trait]
impl RunnerService for RunnerApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let request = request.into_inner();
        if request.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "the runner speaks protocol version {} but this scheduler speaks {PROTOCOL_VERSION}; \
                 run the same kiln version on both",
                request.protocol_version
            )));
        }
        let registration = RunnerRegistration {
            name: request.name,
            labels: request.labels,
            capacity: request.capacity,
            version: request.version,
        };
        let token = request.registration_token;
        let (runner, runner_token) = blocking(&self.scheduler, move |s| {
            s.register(&token, &registration).map_err(status)
        })
        .await?;
        let config = self.scheduler.config();
        let ttl = millis_u32(config.lease_ttl);
        Ok(Response::new(pb::RegisterResponse {
            runner_id: runner.id,
            runner_token,
            heartbeat_interval_ms: millis_u32(config.heartbeat_interval),
            lease_ttl_ms: ttl,
            renew_interval_ms: (ttl / 3).max(1),
            poll_timeout_ms: millis_u32(config.poll_timeout),
            cache_url: config.public_url.clone(),
            protocol_version: PROTOCOL_VERSION,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let runner = self.runner(&request).await?;
        let running = request
            .into_inner()
            .running
            .into_iter()
            .map(|r| convert::job_ref(Some(r)))
            .collect::<Result<Vec<_>, Status>>()?;
        let (cancel, stale) = blocking(&self.scheduler, move |s| {
            s.heartbeat(&runner, &running).map_err(status)
        })
        .await?;
        Ok(Response::new(pb::HeartbeatResponse {
            cancel: cancel.iter().map(convert::pb_job_ref).collect(),
            stale: stale.iter().map(convert::pb_job_ref).collect(),
        }))
    }

    async fn poll_job(
        &self,
        request: Request<pb::PollJobRequest>,
    ) -> Result<Response<pb::PollJobResponse>, Status> {
        let runner = self.runner(&request).await?;
        let request = request.into_inner();
        let timeout = self.scheduler.config().poll_timeout;
        if request.free_slots == 0 {
            tokio::time::sleep(timeout).await;
            return Ok(Response::new(pb::PollJobResponse { job: None }));
        }
        let job = self
            .scheduler
            .poll(&runner, &request.poll_id, timeout)
            .await
            .map_err(status)?;
        if job.is_some() {
            self.scheduler.counters().leased();
        }
        Ok(Response::new(pb::PollJobResponse {
            job: job.map(convert::assignment),
        }))
    }

    async fn renew_lease(
        &self,
        request: Request<pb::RenewLeaseRequest>,
    ) -> Result<Response<pb::RenewLeaseResponse>, Status> {
        let runner = self.runner(&request).await?;
        let job = convert::job_ref(request.into_inner().job)?;
        let lease = blocking(&self.scheduler, move |s| {
            s.renew(&runner, &job).map_err(job_status)
        })
        .await?;
        Ok(Response::new(pb::RenewLeaseResponse {
            lease_expires_unix_ms: lease.expires_ms,
            cancel_requested: lease.cancel_requested,
        }))
    }

    async fn report_step(
        &self,
        request: Request<pb::ReportStepRequest>,
    ) -> Result<Response<pb::ReportStepResponse>, Status> {
        let runner = self.runner(&request).await?;
        let request = request.into_inner();
        let report = convert::step_report(&request)?;
        let job = convert::job_ref(request.job)?;
        let ack = blocking(&self.scheduler, move |s| {
            s.report_step(&runner, &job, &report).map_err(job_status)
        })
        .await?;
        Ok(Response::new(pb::ReportStepResponse {
            cancel_requested: ack.cancel_requested,
        }))
    }

    async fn append_logs(
        &self,
        request: Request<pb::AppendLogsRequest>,
    ) -> Result<Response<pb::AppendLogsResponse>, Status> {
        let runner = self.runner(&request).await?;
        let request = request.into_inner();
        let job = convert::job_ref(request.job)?;
        let lines = convert::log_lines(request.lines);
        let ack = blocking(&self.scheduler, move |s| {
            s.append_logs(&runner, &job, &lines).map_err(job_status)
        })
        .await?;
        Ok(Response::new(pb::AppendLogsResponse {
            acked_seq: ack.acked_seq,
            cancel_requested: ack.cancel_requested,
        }))
    }

    async fn complete_job(
        &self,
        request: Request<pb::CompleteJobRequest>,
    ) -> Result<Response<pb::CompleteJobResponse>, Status> {
        let runner = self.runner(&request).await?;
        let request = request.into_inner();
        let result = convert::job_result(&request)?;
        let job = convert::job_ref(request.job)?;
        blocking(&self.scheduler, move |s| {
            s.complete(&runner, &job, &result).map_err(job_status)
        })
        .await?;
        Ok(Response::new(pb::CompleteJobResponse {}))
    }
}

pub struct ControlApi {
    scheduler: Arc<Scheduler>,
}

impl ControlApi {
    async fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let token = bearer(request)?;
        let ok = blocking(&self.scheduler, move |s| {
            s.store()
                .check_token(TokenKind::Control, &token)
                .map_err(|e| status(e.into()))
        })
        .await?;
        if ok {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "the control token is not this scheduler's; use the one in the scheduler's data \
                 directory (control-token)",
            ))
        }
    }

    async fn summary(&self, run_id: String) -> Result<pb::RunSummary, Status> {
        blocking(&self.scheduler, move |s| {
            let run = s
                .store()
                .get_run(&run_id)
                .map_err(|e| status(e.into()))?
                .ok_or_else(|| Status::not_found(format!("run '{run_id}' does not exist")))?;
            let jobs = s
                .store()
                .jobs_of_run(&run_id)
                .map_err(|e| status(e.into()))?;
            Ok(convert::run_summary(run, jobs))
        })
        .await
    }
}

type EventStream = std::pin::Pin<
    Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<pb::RunEvent, Status>> + Send>,
>;

#[tonic::async_trait]
impl ControlService for ControlApi {
    async fn upload_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::UploadSnapshotResponse>, Status> {
        self.authorize(&request).await?;
        let mut chunks = request.into_inner();
        let first = chunks
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("the upload sent no chunk"))??;
        let digest = first.digest.clone();
        let size = first.size;
        let scheduler = self.scheduler.clone();
        let started = {
            let digest = digest.clone();
            blocking(&scheduler, move |s| {
                SnapshotWriter::start(s, &digest, size).map_err(status)
            })
            .await?
        };
        let Some(mut writer) = started else {
            return Ok(Response::new(pb::UploadSnapshotResponse {
                digest,
                already_stored: true,
            }));
        };
        writer.write(&first.data).map_err(status)?;
        while let Some(chunk) = chunks.next().await {
            writer.write(&chunk?.data).map_err(status)?;
        }
        blocking(&scheduler, move |s| writer.finish(s).map_err(status)).await?;
        Ok(Response::new(pb::UploadSnapshotResponse {
            digest,
            already_stored: false,
        }))
    }

    async fn submit_run(
        &self,
        request: Request<pb::SubmitRunRequest>,
    ) -> Result<Response<pb::SubmitRunResponse>, Status> {
        self.authorize(&request).await?;
        let request = request.into_inner();
        let run_request = convert::submit_request(
            request
                .request
                .ok_or_else(|| Status::invalid_argument("the submission holds no request"))?,
        )?;
        let key = request.idempotency_key;
        let submission = blocking(&self.scheduler, move |s| {
            s.submit(&run_request, &key).map_err(status)
        })
        .await?;
        let mut runs = Vec::new();
        for run in submission.runs {
            runs.push(self.summary(run.id).await?);
        }
        Ok(Response::new(pb::SubmitRunResponse {
            runs,
            notices: submission.notices,
        }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::RunSummary>, Status> {
        self.authorize(&request).await?;
        Ok(Response::new(
            self.summary(request.into_inner().run_id).await?,
        ))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        self.authorize(&request).await?;
        let limit = match request.into_inner().limit {
            0 => 20,
            n => n.min(1000) as usize,
        };
        let runs = blocking(&self.scheduler, move |s| {
            s.store().list_runs(limit).map_err(|e| status(e.into()))
        })
        .await?;
        Ok(Response::new(pb::ListRunsResponse {
            runs: runs
                .into_iter()
                .map(|r| convert::run_summary(r, Vec::new()))
                .collect(),
        }))
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::CancelRunResponse>, Status> {
        self.authorize(&request).await?;
        let run_id = request.into_inner().run_id;
        blocking(&self.scheduler, move |s| {
            s.cancel_run(&run_id).map_err(status)
        })
        .await?;
        Ok(Response::new(pb::CancelRunResponse {}))
    }

    type WatchRunStream = EventStream;

    async fn watch_run(
        &self,
        request: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        self.authorize(&request).await?;
        let stream = watch::watch(self.scheduler.clone(), request.into_inner());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn rerun_failed(
        &self,
        request: Request<pb::RerunFailedRequest>,
    ) -> Result<Response<pb::RunSummary>, Status> {
        self.authorize(&request).await?;
        let run_id = request.into_inner().run_id;
        let submission = blocking(&self.scheduler, move |s| {
            s.rerun_failed(&run_id).map_err(status)
        })
        .await?;
        let run = submission
            .runs
            .into_iter()
            .next()
            .ok_or_else(|| Status::internal("the rerun created no run"))?;
        Ok(Response::new(self.summary(run.id).await?))
    }

    async fn list_runners(
        &self,
        request: Request<pb::ListRunnersRequest>,
    ) -> Result<Response<pb::ListRunnersResponse>, Status> {
        self.authorize(&request).await?;
        let scheduler = self.scheduler.clone();
        let runners = blocking(&self.scheduler, move |s| {
            s.store().list_runners().map_err(|e| status(e.into()))
        })
        .await?;
        Ok(Response::new(pb::ListRunnersResponse {
            runners: runners
                .into_iter()
                .map(|r| {
                    let online = scheduler.is_online(&r.runner);
                    convert::runner_info(r, online)
                })
                .collect(),
        }))
    }
}
