//! The HTTP service: GitHub cache API v1 (REST) and v2 (twirp + Azure blob emulation), the native
//! chunk API, signed downloads and `/metrics`. Build it with [`CacheService::router`] to embed it
//! in another server (the scheduler), or run it alone with [`serve`].

mod download;
pub mod native;
mod stats;
mod v1;
mod v2;

use crate::error::{CacheError, Result};
use crate::metrics::Metrics;
use crate::store::{CacheStore, StoreConfig};
use crate::token::{self, Access, Secret, TokenRequest};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Everything the service needs besides the store.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub store: StoreConfig,
    /// Default branch per repository; repositories not listed use `default_branch`.
    pub default_branches: HashMap<String, String>,
    pub default_branch: String,
    /// Base URL put into download and upload URLs. Without it the request's Host header is
    /// used, so URLs point back the way the client came (which works from containers too).
    pub public_url: Option<String>,
    /// Lifetime of signed download and upload URLs.
    pub url_ttl: Duration,
    /// How often maintenance (expiry, eviction, garbage collection) runs under [`serve`].
    pub maintenance_interval: Duration,
}

impl ServiceConfig {
    pub fn new(data_dir: impl Into<std::path::PathBuf>) -> Self {
        ServiceConfig {
            store: StoreConfig::new(data_dir),
            default_branches: HashMap::new(),
            default_branch: "main".into(),
            public_url: None,
            url_ttl: Duration::from_secs(6 * 3600),
            maintenance_interval: Duration::from_secs(600),
        }
    }
}

/// Metrics text a service embedding the cache adds to `/metrics` (called on a blocking
/// thread at each scrape; it may read a database).
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// The cache service: store, signing secret and metrics.
pub struct CacheService {
    store: Arc<CacheStore>,
    secret: Secret,
    metrics: Metrics,
    metrics_sources: std::sync::RwLock<Vec<MetricsSource>>,
    cfg: ServiceConfig,
    chunk_bodies: BodyBuffers,
    body_budget: Arc<tokio::sync::Semaphore>,
}

/// Request bodies held in memory at once, across all requests, in KiB (JSON documents and
/// chunks; archive bodies are streamed to disk and not counted). A body is read only once its
/// share is free (its declared length, or its endpoint's limit when it declares none): many
/// large requests at once wait for each other instead of growing the server without bound.
const BODY_BUDGET_KIB: usize = 256 << 10;

/// A request body read whole, holding its share of the body budget until dropped.
pub(super) struct HeldBody {
    pub bytes: Bytes,
    _share: tokio::sync::OwnedSemaphorePermit,
}

impl std::ops::Deref for HeldBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl CacheService {
    /// Opens the store; the signing secret comes from `<data>/token.key` (created if missing).
    pub fn open(cfg: ServiceConfig) -> Result<Arc<Self>> {
        let secret = Secret::load_or_create(&cfg.store.data_dir)?;
        Self::open_with_secret(cfg, secret)
    }

    pub fn open_with_secret(cfg: ServiceConfig, secret: Secret) -> Result<Arc<Self>> {
        let store = Arc::new(CacheStore::open(cfg.store.clone())?);
        Ok(Arc::new(CacheService {
            store,
            secret,
            metrics: Metrics::default(),
            metrics_sources: Default::default(),
            cfg,
            chunk_bodies: BodyBuffers::default(),
            body_budget: Arc::new(tokio::sync::Semaphore::new(BODY_BUDGET_KIB)),
        }))
    }

    pub fn store(&self) -> &Arc<CacheStore> {
        &self.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Appends `source`'s text to every `/metrics` answer (one port, one scrape target).
    pub fn add_metrics_source(&self, source: MetricsSource) {
        self.metrics_sources
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(source);
    }

    /// Mints a job token this service accepts.
    pub fn mint_token(&self, req: &TokenRequest) -> Result<String> {
        token::mint(&self.secret, req)
    }

    /// The routes; merge them into another axum app to share a port.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .nest("/_apis/artifactcache", v1::routes())
            .nest("/{prefix}/_apis/artifactcache", v1::routes())
            .merge(v2::routes())
            .merge(native::routes())
            .merge(download::routes())
            .merge(stats::routes())
            .route("/metrics", get(metrics_text))
            .route("/healthz", get(|| async { "ok\n" }))
            .with_state(Arc::clone(self))
    }

    /// Verifies the bearer token and adds the repository's default branch to its read scopes.
    fn access(&self, headers: &HeaderMap) -> Result<Access> {
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                CacheError::BadToken("the Authorization: Bearer header is missing".into())
            })?;
        let tok = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| CacheError::BadToken("Authorization is not a Bearer token".into()))?;
        let access = token::verify(&self.secret, tok.trim())?;
        let branch = self
            .cfg
            .default_branches
            .get(&access.repo)
            .unwrap_or(&self.cfg.default_branch);
        let default_ref = if branch.starts_with("refs/") {
            branch.clone()
        } else {
            format!("refs/heads/{branch}")
        };
        Ok(access.with_default_branch(&default_ref))
    }

    /// Base URL for URLs handed to clients, without a trailing slash.
    fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(u) = &self.cfg.public_url {
            return u.trim_end_matches('/').to_string();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or("127.0.0.1");
        format!("http://{host}")
    }

    fn url_expiry(&self) -> u64 {
        token::unix_now().saturating_add(self.cfg.url_ttl.as_secs())
    }

    /// Waits for the share of the body budget a body of at most `max` bytes needs (what it
    /// declares, when it declares a length); a body declaring more than `max` is refused at once.
    async fn body_share(
        &self,
        headers: &HeaderMap,
        max: usize,
    ) -> Result<tokio::sync::OwnedSemaphorePermit> {
        let declared = declared_length(headers)?;
        if declared.is_some_and(|n| n > max as u64) {
            return Err(CacheError::TooLarge(format!(
                "this request's body may be at most {max} bytes"
            )));
        }
        let bytes = declared.map_or(max, |n| n as usize);
        let kib = bytes.div_ceil(1024).clamp(1, BODY_BUDGET_KIB) as u32;
        Arc::clone(&self.body_budget)
            .acquire_many_owned(kib)
            .await
            .map_err(|e| CacheError::Task(format!("the request body budget closed: {e}")))
    }

    /// Reads a whole body of at most `max` bytes (a JSON document), within the body budget.
    async fn read_body(&self, headers: &HeaderMap, body: Body, max: usize) -> Result<HeldBody> {
        let share = self.body_share(headers, max).await?;
        let bytes = axum::body::to_bytes(body, max).await.map_err(|e| {
            CacheError::TooLarge(format!("request body over {max} bytes or unreadable: {e}"))
        })?;
        Ok(HeldBody {
            bytes,
            _share: share,
        })
    }
}

/// The `Content-Length` a request declares, if any.
fn declared_length(headers: &HeaderMap) -> Result<Option<u64>> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| CacheError::BadRequest("Content-Length is not a number".into()))
        })
        .transpose()
}

/// Runs `f` on the blocking pool (the store does file and SQLite I/O).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CacheError::Task(e.to_string()))?
}

/// Where [`stream_body`] puts each batch: `(offset in the body, bytes)`, on the blocking pool.
type BodySink = Arc<dyn Fn(u64, &[u8]) -> Result<()> + Send + Sync>;

/// Streams a request body to `write(offset, bytes)` (run on the blocking pool), refusing more
/// than `max` bytes. Writes happen in 4 MiB batches so a 128 MiB block never sits in memory
/// whole. Returns the body's length.
async fn stream_body(body: Body, max: u64, write: BodySink) -> Result<u64> {
    const BATCH: usize = 4 << 20;
    let mut body = body;
    let mut buf: Vec<u8> = Vec::with_capacity(BATCH.min(max.saturating_add(1) as usize));
    let mut total = 0u64;
    let mut offset = 0u64;
    loop {
        let frame =
            body.frame().await.transpose().map_err(|e| {
                CacheError::BadRequest(format!("failed to read the request body: {e}"))
            })?;
        let done = frame.is_none();
        if let Some(data) = frame.and_then(|f| f.into_data().ok()) {
            total = total.saturating_add(data.len() as u64);
            if total > max {
                return Err(CacheError::TooLarge(format!(
                    "body exceeds the declared {max} bytes"
                )));
            }
            buf.extend_from_slice(&data);
        }
        if (done && !buf.is_empty()) || buf.len() >= BATCH {
            let batch = std::mem::replace(&mut buf, Vec::with_capacity(BATCH));
            let at = offset;
            offset += batch.len() as u64;
            let write = Arc::clone(&write);
            blocking(move || write(at, &batch)).await?;
        }
        if done {
            return Ok(total);
        }
    }
}

/// Streams a request body into an archive upload at `offset` (v1 PATCH, v2 Put Blob).
async fn stream_into_upload(
    store: &Arc<CacheStore>,
    id: u64,
    offset: u64,
    body: Body,
    max: u64,
) -> Result<u64> {
    let store = Arc::clone(store);
    stream_body(
        body,
        max,
        Arc::new(move |at, data| {
            let at = offset
                .checked_add(at)
                .ok_or_else(|| CacheError::BadRequest("range overflows".into()))?;
            store.write_archive(id, at, data)
        }),
    )
    .await
}

/// Buffers that uploaded chunks are collected into, kept for the next upload. A chunk arrives
/// in several frames of hyper's read buffer and is checked and written in one piece; a fresh
/// buffer per chunk faulted in its pages anew every time (a fifth of the page faults of a tree
/// save with client and server in one process).
#[derive(Default)]
struct BodyBuffers(std::sync::Mutex<Vec<Vec<u8>>>);

impl BodyBuffers {
    /// At most this many are kept (each up to one encoded chunk, 4 MiB): enough for the
    /// uploads of a few clients at once.
    const KEPT: usize = 8;

    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut kept| kept.pop())
            .unwrap_or_default()
    }

    fn give(&self, buffer: Vec<u8>) {
        if let Ok(mut kept) = self.0.lock() {
            if kept.len() < Self::KEPT {
                kept.push(buffer);
            }
        }
    }
}

/// Reads a whole body of at most `max` bytes into `out`, replacing what it held. The caller
/// holds the body's share of the budget ([`CacheService::body_share`]).
async fn read_body_into(body: Body, max: usize, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    let mut body = body;
    while let Some(frame) = body
        .frame()
        .await
        .transpose()
        .map_err(|e| CacheError::BadRequest(format!("failed to read the request body: {e}")))?
    {
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max {
                return Err(CacheError::TooLarge(format!(
                    "request body over {max} bytes"
                )));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(())
}

fn status_of(err: &CacheError) -> StatusCode {
    match err {
        CacheError::AlreadyExists { .. } => StatusCode::CONFLICT,
        CacheError::BadRequest(_)
        | CacheError::Protocol(_)
        | CacheError::BadPattern { .. }
        | CacheError::IncompleteUpload { .. }
        | CacheError::DigestMismatch { .. }
        | CacheError::UnsafeArchiveEntry { .. } => StatusCode::BAD_REQUEST,
        CacheError::Forbidden(_) => StatusCode::FORBIDDEN,
        CacheError::BadToken(_) => StatusCode::UNAUTHORIZED,
        CacheError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        CacheError::UnknownUpload(_) | CacheError::UnknownChunk(_) => StatusCode::NOT_FOUND,
        CacheError::MissingChunk(_) | CacheError::CorruptChunk { .. } => StatusCode::GONE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error rendered as JSON `{code, message, msg}`: twirp clients read `msg`, others `message`.
struct JsonError(CacheError);

impl From<CacheError> for JsonError {
    fn from(e: CacheError) -> Self {
        JsonError(e)
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        let code = match status {
            StatusCode::CONFLICT => "already_exists",
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => "invalid_argument",
            StatusCode::FORBIDDEN => "permission_denied",
            StatusCode::UNAUTHORIZED => "unauthenticated",
            StatusCode::NOT_FOUND | StatusCode::GONE => "not_found",
            _ => "internal",
        };
        let msg = self.0.to_string();
        if status.is_server_error() {
            tracing::warn!(error = %msg, "cache request failed");
        }
        let body = serde_json::json!({ "code": code, "msg": msg, "message": msg });
        (status, axum::Json(body)).into_response()
    }
}

async fn metrics_text(
    axum::extract::State(svc): axum::extract::State<Arc<CacheService>>,
) -> Response {
    let store = Arc::clone(&svc.store);
    let totals = blocking(move || store.totals()).await.ok();
    let mut text = svc.metrics.render(totals);
    let sources = svc
        .metrics_sources
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    let added = blocking(move || {
        Ok::<_, CacheError>(sources.iter().map(|source| source()).collect::<String>())
    })
    .await
    .unwrap_or_default();
    let (pending, failed) = svc.store.durability_backlog();
    text.push_str(&format!(
        "# HELP kiln_cache_entries_not_durable Committed entries whose chunks are still being synced.\n\
         # TYPE kiln_cache_entries_not_durable gauge\nkiln_cache_entries_not_durable {pending}\n\
         # HELP kiln_cache_durability_failures_total Entries whose chunks could not be synced (a restart drops them).\n\
         # TYPE kiln_cache_durability_failures_total counter\nkiln_cache_durability_failures_total {failed}\n"
    ));
    text.push_str(&added);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// A response body fed from a channel, so chunk reads on blocking threads can stream out. An
/// `Err` item aborts the response mid-stream (the client sees a short body, never bad bytes).
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<std::result::Result<Bytes, CacheError>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = CacheError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Bytes>, CacheError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(http_body::Frame::data)))
    }
}

/// Serves the service on `listener` until `shutdown` resolves, running maintenance periodically.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<CacheService>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let maint = Arc::clone(&service);
    let interval = service.cfg.maintenance_interval;
    let maintenance = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let store = Arc::clone(&maint.store);
            if let Err(e) = blocking(move || store.maintain(std::time::SystemTime::now())).await {
                tracing::warn!(error = %e, "cache maintenance failed");
            }
        }
    });
    let app = service.router();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| CacheError::io("serve", "listener", e));
    maintenance.abort();
    // Entries committed just before the stop must not be dropped by the next start.
    let store = Arc::clone(&service.store);
    let _ = tokio::task::spawn_blocking(move || store.flush_durability()).await;
    result
}

/// Checks the shape GitHub's clients enforce: at most 512 characters and no commas.
fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.chars().count() > 512 || key.contains(',') {
        return Err(CacheError::BadRequest(format!(
            "key {key:?} must be 1 to 512 characters without commas"
        )));
    }
    Ok(())
}

fn validate_version(version: &str) -> Result<()> {
    if version.is_empty() || version.len() > 512 {
        return Err(CacheError::BadRequest(
            "version must be 1 to 512 characters".into(),
        ));
    }
    Ok(())
}

/// Lookup keys: the primary key first, then restore keys, duplicates dropped, at most 10.
fn lookup_keys(primary: &str, restore: impl IntoIterator<Item = String>) -> Result<Vec<String>> {
    let mut keys = vec![primary.to_string()];
    for k in restore {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    if keys.len() > 10 {
        return Err(CacheError::BadRequest(format!(
            "{} keys given; at most 10 are allowed",
            keys.len()
        )));
    }
    for k in &keys {
        validate_key(k)?;
    }
    Ok(keys)
}

/// Runs the service on its own runtime until Ctrl-C (SIGINT), for `kiln cache serve`.
/// `on_ready` receives the bound address once the port is open.
pub fn serve_until_interrupted(
    service: Arc<CacheService>,
    listen: &str,
    on_ready: impl FnOnce(std::net::SocketAddr),
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CacheError::io("start the runtime for", listen, e))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| CacheError::io("listen on", listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| CacheError::io("listen on", listen, e))?;
        on_ready(addr);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        serve(listener, service, shutdown).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declaring(n: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, n.to_string().parse().unwrap());
        h
    }

    /// Large bodies wait for each other instead of all being held at once.
    #[test]
    fn request_bodies_share_one_memory_budget() {
        let data = tempfile::tempdir().unwrap();
        let svc = CacheService::open(ServiceConfig::new(data.path())).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let max = BODY_BUDGET_KIB * 1024;
            let first = svc.body_share(&declaring(max / 4 * 3), max).await.unwrap();
            let half = declaring(max / 2);
            let second = svc.body_share(&half, max);
            tokio::pin!(second);
            let waited = tokio::time::timeout(Duration::from_millis(200), second.as_mut()).await;
            assert!(
                waited.is_err(),
                "the second body was let in over the budget"
            );
            drop(first);
            let got = tokio::time::timeout(Duration::from_secs(5), second).await;
            assert!(matches!(got, Ok(Ok(_))));
            // More than the endpoint allows is refused at once.
            let err = svc.body_share(&declaring(2048), 1024).await.unwrap_err();
            assert!(matches!(err, CacheError::TooLarge(_)), "{err}");
        });
    }
}
