//! The scheduler as the runner calls it: one gRPC channel (reconnected on demand), the runner
//! token on every call, a deadline per call, and the one function that says what a failed
//! call means ([`classify`]).

use std::future::Future;
use std::time::Duration;

use kiln_proto::v1 as pb;
use pb::runner_service_client::RunnerServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use super::credentials::{Credentials, Timings};
use super::AgentError;

/// The deadline of calls that only store something (steps, logs, completion).
const STORE_DEADLINE: Duration = Duration::from_secs(30);
/// What a long poll may take beyond the scheduler's own poll timeout before it is abandoned.
const POLL_MARGIN: Duration = Duration::from_secs(10);

/// Puts `authorization: Bearer <token>` on every call.
#[derive(Clone)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Rpc = RunnerServiceClient<InterceptedService<Channel, Bearer>>;

/// What a failed call means for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The scheduler is unreachable, overloaded or restarting: send the same call again later.
    Transient(String),
    /// FAILED_PRECONDITION: the job's lease is no longer this runner's; stop the job and send
    /// nothing more about it.
    Stale(String),
    /// The runner's token was refused: nothing this runner sends will be accepted.
    Unauthenticated(String),
    /// The scheduler refused the request itself (a bug or a version mismatch): not retried.
    Invalid(String),
}

/// The one place that decides what a status code means (see runner.proto's header).
pub(crate) fn classify(status: &Status) -> Failure {
    let detail = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    };
    match status.code() {
        Code::FailedPrecondition => Failure::Stale(detail),
        Code::Unauthenticated => Failure::Unauthenticated(detail),
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::DataLoss => Failure::Invalid(detail),
        // Unavailable, DeadlineExceeded, Aborted and ResourceExhausted are transient by the
        // contract. Cancelled, Unknown and Internal are what broken connections, proxies and
        // a scheduler failing to write (disk full) produce: the same call may succeed later,
        // and every call is safe to repeat.
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unavailable => Failure::Transient(detail),
    }
}

/// Exponential backoff with jitter: base, 2 x base, 4 x base... up to `cap`, each delay
/// drawn between half of it and all of it, so runners that lost the scheduler together do
/// not all come back in the same millisecond.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// The wait before the next attempt, one failure later.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let exponent = self.failures.min(20);
        self.failures = self.failures.saturating_add(1);
        let full = self.base.saturating_mul(1 << exponent).min(self.cap);
        let half = full / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// A call succeeded: the next failure starts from the base again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// One call in flight, or none: the loops hold their calls across turns in these.
pub(crate) type Call<T> = Option<futures_util::future::BoxFuture<'static, Result<T, Failure>>>;

/// Resolves with the call's answer (and empties the slot), or never when there is no call.
pub(crate) async fn answer<T>(call: &mut Call<T>) -> Result<T, Failure> {
    match call.as_mut() {
        Some(future) => {
            let answer = future.await;
            *call = None;
            answer
        }
        None => std::future::pending().await,
    }
}

/// A random id, unique enough for poll ids.
pub(crate) fn random_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

fn endpoint(url: &str) -> Result<Endpoint, AgentError> {
    let invalid = |detail: String| AgentError::Url {
        url: url.to_owned(),
        detail,
    };
    if url.starts_with("https://") {
        return Err(invalid(
            "this kiln speaks plain HTTP/2 to its scheduler; use http:// (put TLS around both ends with a tunnel or a VPN when the network is not trusted)".to_owned(),
        ));
    }
    if !url.starts_with("http://") {
        return Err(invalid(
            "expected http://HOST:PORT, the address `kiln scheduler --listen` serves".to_owned(),
        ));
    }
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| invalid(e.to_string()))?;
    Ok(kiln_proto::client_endpoint(endpoint))
}

fn client(url: &str, token: Option<&str>) -> Result<Rpc, AgentError> {
    let bearer = match token {
        Some(token) => Some(
            format!("Bearer {token}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| AgentError::Url {
                    url: url.to_owned(),
                    detail:
                        "the runner token holds characters a header cannot carry; register again"
                            .to_owned(),
                })?,
        ),
        None => None,
    };
    // Lazy: the channel connects at the first call and reconnects after a failure, so a
    // scheduler that is down when the runner starts is waited for, not fatal.
    let channel = endpoint(url)?.connect_lazy();
    Ok(RunnerServiceClient::with_interceptor(
        channel,
        Bearer(bearer),
    ))
}

/// Sends one call with a deadline; a call that outlives it counts as transient.
async fn unary<Req, Resp, Fut>(
    rpc: &Rpc,
    message: Req,
    deadline: Duration,
    send: impl FnOnce(Rpc, Request<Req>) -> Fut,
) -> Result<Resp, Failure>
where
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    let mut request = Request::new(message);
    request.set_timeout(deadline);
    match tokio::time::timeout(
        deadline + Duration::from_secs(1),
        send(rpc.clone(), request),
    )
    .await
    {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(classify(&status)),
        Err(_) => Err(Failure::Transient(format!(
            "no answer within {}s",
            deadline.as_secs_f64()
        ))),
    }
}

/// What the runner needs to register.
#[derive(Debug, Clone)]
pub struct Registration {
    pub url: String,
    pub registration_token: String,
    pub name: String,
    pub labels: Vec<String>,
    pub capacity: u32,
    /// This kiln's version, shown by `kiln runners`.
    pub version: String,
}

/// Registers a runner: trades the registration token for the runner's identity.
pub async fn register(registration: &Registration) -> Result<Credentials, AgentError> {
    let url = registration.url.trim_end_matches('/').to_owned();
    let rpc = client(&url, None)?;
    let request = pb::RegisterRequest {
        registration_token: registration.registration_token.clone(),
        name: registration.name.clone(),
        labels: registration.labels.clone(),
        capacity: registration.capacity,
        version: registration.version.clone(),
        protocol_version: kiln_proto::PROTOCOL_VERSION,
    };
    let answer = unary(
        &rpc,
        request,
        STORE_DEADLINE,
        |mut rpc, request| async move { rpc.register(request).await },
    )
    .await
    .map_err(|failure| match failure {
        Failure::Unauthenticated(detail) => AgentError::RegistrationRefused {
            url: url.clone(),
            detail,
        },
        Failure::Transient(detail) => AgentError::Unreachable {
            url: url.clone(),
            detail,
        },
        Failure::Stale(detail) | Failure::Invalid(detail) => AgentError::Rejected {
            url: url.clone(),
            call: "Register",
            detail,
        },
    })?;
    if answer.runner_token.is_empty() || answer.runner_id.is_empty() {
        return Err(AgentError::Rejected {
            url,
            call: "Register",
            detail: "the answer holds no runner id or token".to_owned(),
        });
    }
    Ok(Credentials {
        url,
        runner_id: answer.runner_id,
        runner_token: answer.runner_token,
        name: registration.name.clone(),
        labels: registration.labels.clone(),
        timings: Timings {
            heartbeat_interval_ms: answer.heartbeat_interval_ms,
            lease_ttl_ms: answer.lease_ttl_ms,
            renew_interval_ms: answer.renew_interval_ms,
            poll_timeout_ms: answer.poll_timeout_ms,
        },
    })
}

/// The scheduler, for a registered runner. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub(crate) struct Scheduler {
    rpc: Rpc,
    timings: Timings,
}

impl Scheduler {
    pub(crate) fn new(credentials: &Credentials) -> Result<Scheduler, AgentError> {
        Ok(Scheduler {
            rpc: client(&credentials.url, Some(&credentials.runner_token))?,
            timings: credentials.timings,
        })
    }

    pub(crate) async fn heartbeat(
        &self,
        request: pb::HeartbeatRequest,
    ) -> Result<pb::HeartbeatResponse, Failure> {
        let deadline = self.timings.heartbeat().max(Duration::from_secs(5));
        unary(
            &self.rpc,
            request,
            deadline,
            |mut rpc, request| async move { rpc.heartbeat(request).await },
        )
        .await
    }

    pub(crate) async fn poll(
        &self,
        request: pb::PollJobRequest,
    ) -> Result<pb::PollJobResponse, Failure> {
        let deadline = self.timings.poll_timeout() + POLL_MARGIN;
        unary(
            &self.rpc,
            request,
            deadline,
            |mut rpc, request| async move { rpc.poll_job(request).await },
        )
        .await
    }

    pub(crate) async fn renew(
        &self,
        request: pb::RenewLeaseRequest,
    ) -> Result<pb::RenewLeaseResponse, Failure> {
        // A renewal that takes longer than the interval is overtaken by the next one.
        let deadline = self.timings.renew().max(Duration::from_secs(1));
        unary(
            &self.rpc,
            request,
            deadline,
            |mut rpc, request| async move { rpc.renew_lease(request).await },
        )
        .await
    }

    pub(crate) async fn report_step(
        &self,
        request: pb::ReportStepRequest,
    ) -> Result<pb::ReportStepResponse, Failure> {
        unary(
            &self.rpc,
            request,
            STORE_DEADLINE,
            |mut rpc, request| async move { rpc.report_step(request).await },
        )
        .await
    }

    pub(crate) async fn append_logs(
        &self,
        request: pb::AppendLogsRequest,
    ) -> Result<pb::AppendLogsResponse, Failure> {
        unary(
            &self.rpc,
            request,
            STORE_DEADLINE,
            |mut rpc, request| async move { rpc.append_logs(request).await },
        )
        .await
    }

    pub(crate) async fn complete(
        &self,
        request: pb::CompleteJobRequest,
    ) -> Result<pb::CompleteJobResponse, Failure> {
        unary(
            &self.rpc,
            request,
            STORE_DEADLINE,
            |mut rpc, request| async move { rpc.complete_job(request).await },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_classified_as_the_contract_says() {
        let class = |code| classify(&Status::new(code, "x"));
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::ResourceExhausted,
            Code::Internal,
        ] {
            assert!(matches!(class(code), Failure::Transient(_)), "{code:?}");
        }
        assert!(matches!(class(Code::FailedPrecondition), Failure::Stale(_)));
        assert!(matches!(
            class(Code::Unauthenticated),
            Failure::Unauthenticated(_)
        ));
        for code in [Code::InvalidArgument, Code::Unimplemented, Code::NotFound] {
            assert!(matches!(class(code), Failure::Invalid(_)), "{code:?}");
        }
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[3] >= Duration::from_millis(400) && delays[3] <= Duration::from_millis(800));
        for delay in &delays[5..] {
            assert!(*delay >= Duration::from_secs(1) && *delay <= Duration::from_secs(2));
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(endpoint("http://127.0.0.1:7000").is_ok());
        let https = endpoint("https://sched:7000").unwrap_err().to_string();
        assert!(https.contains("plain HTTP/2"), "{https}");
        assert!(endpoint("sched:7000").is_err());
    }
}
