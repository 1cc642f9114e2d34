//! The user's side of a kiln scheduler: the ControlService client behind `kiln submit`,
//! `kiln runs`, `kiln logs`, `kiln cancel`, `kiln rerun` and `kiln runners`. Every command
//! names the scheduler with `--url`/`KILN_URL` and authenticates with `--token`/`KILN_TOKEN`;
//! a failed call becomes an error that says which of those to fix.

pub mod convert;
pub mod follow;
pub mod snapshot;

use std::time::Duration;

use anyhow::anyhow;
use kiln_proto::v1 as pb;
use pb::control_service_client::ControlServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

const URL_VARIABLE: &str = "KILN_URL";
const TOKEN_VARIABLE: &str = "KILN_TOKEN";
/// The deadline of every unary call: they only read or store a little.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);
/// Attempts of a repeatable call before a transient failure is reported.
const RETRIES: u32 = 6;

/// `call!(control, method, message)`: one repeatable unary call with the deadline, made
/// again after transient failures; gives the reply's message or the last status.
macro_rules! call {
    ($control:expr, $method:ident, $message:expr) => {{
        let control: &$crate::remote::Control = $control;
        let message = $message;
        control
            .retrying(|| {
                let mut rpc = control.rpc.clone();
                let message = message.clone();
                async move { rpc.$method($crate::remote::request(message)).await }
            })
            .await
            .map(tonic::Response::into_inner)
    }};
}
pub(crate) use call;

/// `--url` and `--token`, taken by every command that talks to a scheduler.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectFlags {
    /// The scheduler: http://HOST:PORT (default: $KILN_URL).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The scheduler's control token, DATA/control-token (default: $KILN_TOKEN).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
}

/// Puts `authorization: Bearer <token>` on every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub type Rpc = ControlServiceClient<InterceptedService<Channel, Bearer>>;

/// A scheduler to call, and how to explain what went wrong with it.
#[derive(Clone)]
pub struct Control {
    pub rpc: Rpc,
    pub url: String,
    /// Where the token came from, for the error that says it was refused.
    token_source: &'static str,
}

impl Control {
    /// Resolves the flags and their variables; connects lazily (at the first call).
    pub fn connect(flags: &ConnectFlags) -> anyhow::Result<Control> {
        let (url, _) = flag_or_variable(&flags.url, URL_VARIABLE, "--url").ok_or_else(|| {
            anyhow!("no scheduler given: pass --url http://HOST:PORT or set {URL_VARIABLE}")
        })?;
        let (token, token_source) = flag_or_variable(&flags.token, TOKEN_VARIABLE, "--token")
            .ok_or_else(|| {
                anyhow!(
                    "no control token given: pass --token or set {TOKEN_VARIABLE} (the scheduler wrote it to DATA/control-token)"
                )
            })?;
        let endpoint = endpoint(&url)?;
        let bearer = format!("Bearer {token}")
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| {
                anyhow!("the control token from {token_source} holds characters a header cannot carry; copy it again from the scheduler's DATA/control-token")
            })?;
        Ok(Control {
            rpc: ControlServiceClient::with_interceptor(endpoint.connect_lazy(), Bearer(bearer))
                // Snapshots and runs with many jobs exceed tonic's 4 MiB default.
                .max_decoding_message_size(64 << 20),
            url,
            token_source,
        })
    }

    /// Makes a call, again after a transient failure (a scheduler restarting), a few times
    /// over about six seconds. Only for calls that are safe to repeat.
    pub async fn retrying<T, Fut>(&self, mut call: impl FnMut() -> Fut) -> Result<T, Status>
    where
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut backoff = Backoff::new();
        let mut attempts = 1;
        loop {
            match call().await {
                Err(status) if is_transient(status.code()) && attempts < RETRIES => {
                    attempts += 1;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                answer => return answer,
            }
        }
    }

    /// What a failed call means, in words that say what to do.
    pub fn explain(&self, status: &Status) -> anyhow::Error {
        let detail = status.message();
        match status.code() {
            Code::Unauthenticated => anyhow!(
                "the scheduler at {} refused the control token from {} ({detail}); use the token in the scheduler's DATA/control-token",
                self.url,
                self.token_source
            ),
            code if is_transient(code) => anyhow!(
                "cannot reach the scheduler at {} ({detail}); check that `kiln scheduler` listens there (--url or {URL_VARIABLE})",
                self.url
            ),
            Code::NotFound => anyhow!("{detail}; `kiln runs` lists the scheduler's runs"),
            code => anyhow!("the scheduler at {} answered {code:?}: {detail}", self.url),
        }
    }
}

/// The flag's value, else the variable's; with where it came from.
fn flag_or_variable(
    flag: &Option<String>,
    variable: &'static str,
    flag_name: &'static str,
) -> Option<(String, &'static str)> {
    match flag {
        Some(value) => Some((value.clone(), flag_name)),
        None => std::env::var(variable)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|value| (value, variable)),
    }
}

fn endpoint(url: &str) -> anyhow::Result<Endpoint> {
    let fix = || {
        format!("pass --url http://HOST:PORT (or set {URL_VARIABLE}), the address `kiln scheduler --listen` serves")
    };
    if !url.starts_with("http://") {
        return Err(anyhow!(
            "the scheduler URL {url} is not http://HOST:PORT (kiln speaks plain HTTP/2 to its scheduler; put TLS around it with a tunnel); {}",
            fix()
        ));
    }
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| anyhow!("the scheduler URL {url} is not valid ({e}); {}", fix()))?;
    Ok(kiln_proto::client_endpoint(endpoint))
}

/// Codes after which the same call may succeed later: the scheduler is restarting, the
/// connection broke (Unknown and Cancelled are what a dropped stream gives), or it is busy.
pub fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted
    )
}

/// A request with the unary calls' deadline.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_DEADLINE);
    request
}

/// Doubling waits between reconnection attempts, from 200 ms up to 5 s.
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff {
            next: Duration::from_millis(200),
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        delay
    }

    pub fn reset(&mut self) {
        *self = Backoff::new();
    }
}

/// A fresh random id for idempotency keys: the clock's nanoseconds and the process id run
/// through blake3, so two submissions never share one.
pub fn random_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut hasher = blake3::Hasher::new();
    hasher.update(&now.as_nanos().to_le_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    let stack_address = &now as *const _ as usize;
    hasher.update(&stack_address.to_le_bytes());
    hasher.finalize().to_hex()[..32].to_owned()
}
