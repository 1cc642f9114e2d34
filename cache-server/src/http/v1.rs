//! GitHub cache API v1 (`_apis/artifactcache/`), as `@actions/cache` (GHES mode), act and
//! go-actions-cache speak it. Miss is 204, conflict 409, chunks arrive as parallel PATCHes.

use super::{
    blocking, lookup_keys, stream_into_upload, validate_key, validate_version, CacheService,
};
use crate::error::CacheError;
use crate::index::{EntryKind, MatchKind, Reservation};
use crate::metrics::Counter;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// Largest PATCH accepted: the toolkit caps chunks at 128 MiB.
const MAX_PATCH: u64 = 128 << 20;

pub(super) fn routes() -> Router<Arc<CacheService>> {
    Router::new()
        .route("/cache", get(lookup))
        .route("/caches", get(list).post(reserve))
        .route(
            "/caches/{id}",
            post(commit)
                .patch(upload)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/clean", post(|| async { StatusCode::OK }))
}

/// v1 errors: an Azure DevOps-style body whose `message` and `typeKey` clients inspect.
struct V1Error(CacheError);

impl From<CacheError> for V1Error {
    fn from(e: CacheError) -> Self {
        V1Error(e)
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        let status = super::status_of(&self.0);
        let type_key = match &self.0 {
            CacheError::AlreadyExists { .. } => "ArtifactCacheItemAlreadyExistsException",
            _ => "ArtifactCacheException",
        };
        let message = match &self.0 {
            CacheError::AlreadyExists {
                scope,
                key,
                version,
            } => {
                format!("Cache already exists. Scope: {scope}, Key: {key}, Version: {version}")
            }
            other => other.to_string(),
        };
        let body = json!({
            "$id": "1", "innerException": null, "message": message,
            "typeName": format!("Microsoft.Azure.DevOps.ArtifactCache.WebApi.{type_key}, Microsoft.Azure.DevOps.ArtifactCache.WebApi"),
            "typeKey": type_key, "errorCode": 0, "eventId": 3000
        });
        (status, Json(body)).into_response()
    }
}

#[derive(Deserialize)]
struct LookupQuery {
    keys: String,
    version: String,
}

async fn lookup(
    State(svc): State<Arc<CacheService>>,
    headers: HeaderMap,
    Query(q): Query<LookupQuery>,
) -> Result<Response, V1Error> {
    let access = svc.access(&headers)?;
    validate_version(&q.version)?;
    let mut parts = q.keys.split(',').map(str::to_string);
    let primary = parts.next().unwrap_or_default();
    let keys = lookup_keys(&primary, parts)?;
    let store = Arc::clone(&svc.store);
    let (repo, scopes, version) = (
        access.repo.clone(),
        access.read_scopes.clone(),
        q.version.clone(),
    );
    let hit = blocking(move || store.lookup(&repo, &scopes, &keys, &version, false)).await?;
    let own_scope = access.read_scopes.first().cloned().unwrap_or_default();
    match hit {
        None => {
            svc.metrics.add(&access.repo, &own_scope, Counter::Miss, 1);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Some((entry, kind)) => {
            let counter = if kind == MatchKind::Exact {
                Counter::ExactHit
            } else {
                Counter::RestoreKeyHit
            };
            svc.metrics.add(&access.repo, &own_scope, counter, 1);
            let body = json!({
                "cacheKey": entry.key,
                "scope": entry.scope,
                "cacheVersion": entry.version,
                "creationTime": rfc3339(entry.created_at_ms),
                "archiveLocation": svc.download_url(&headers, entry.id),
            });
            Ok(Json(body).into_response())
        }
    }
}

#[derive(Deserialize)]
struct ListQuery {
    key: String,
}

async fn list(
    State(svc): State<Arc<CacheService>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, V1Error> {
    let access = svc.access(&headers)?;
    let store = Arc::clone(&svc.store);
    let entries = blocking(move || store.list(&access.repo, &access.read_scopes, &q.key)).await?;
    let caches: Vec<_> = entries
        .iter()
        .map(|e| json!({"cacheKey": e.key, "scope": e.scope, "cacheVersion": e.version, "creationTime": rfc3339(e.created_at_ms)}))
        .collect();
    Ok(Json(json!({"totalCount": caches.len(), "artifactCaches": caches})).into_response())
}

#[derive(Deserialize)]
struct ReserveBody {
    key: String,
    version: String,
    #[serde(rename = "cacheSize")]
    cache_size: Option<i64>,
}

/// Bodies of the JSON requests (reserve, commit): a key, a version and a size.
const MAX_JSON_BODY: usize = 64 << 10;

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, CacheError> {
    serde_json::from_slice(body)
        .map_err(|e| CacheError::BadRequest(format!("request JSON does not match: {e}")))
}

async fn reserve(
    State(svc): State<Arc<CacheService>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    let body: ReserveBody = parse(&svc.read_body(&headers, body, MAX_JSON_BODY).await?)?;
    let access = svc.access(&headers)?;
    let scope = access.require_write()?.to_string();
    validate_key(&body.key)?;
    validate_version(&body.version)?;
    if let Some(size) = body.cache_size {
        if size < 0 || size as u64 > svc.store.entry_limit() {
            return Err(CacheError::BadRequest(format!(
                "Cache size of ~{} MB ({size} B) is over the data cap limit of {} B",
                size.max(0) >> 20,
                svc.store.entry_limit()
            ))
            .into());
        }
    }
    let res = Reservation {
        repo: access.repo,
        scope,
        key: body.key,
        version: body.version,
        kind: EntryKind::Archive,
    };
    let store = Arc::clone(&svc.store);
    let id = blocking(move || store.reserve_archive(res)).await?;
    Ok(Json(json!({ "cacheId": id })).into_response())
}

fn upload_id(params: &HashMap<String, String>) -> Result<u64, CacheError> {
    params
        .get("id")
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| CacheError::BadRequest("cache id must be a positive integer".into()))
}

/// Checks the token may write the reservation `id`.
async fn writable(svc: &Arc<CacheService>, headers: &HeaderMap, id: u64) -> Result<(), CacheError> {
    let access = svc.access(headers)?;
    let scope = access.require_write()?;
    let res = svc.store.reservation(id)?;
    if res.repo != access.repo || res.scope != scope {
        return Err(CacheError::Forbidden(format!(
            "cache {id} belongs to another repository or scope"
        )));
    }
    Ok(())
}

/// `Content-Range: bytes start-end/*`.
fn content_range(headers: &HeaderMap) -> Result<(u64, u64), CacheError> {
    let bad = || CacheError::BadRequest("Content-Range must be `bytes <start>-<end>/*`".into());
    let v = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(bad)?;
    let spec = v.trim().strip_prefix("bytes ").ok_or_else(bad)?;
    let (range, _total) = spec.split_once('/').ok_or_else(bad)?;
    let (a, b) = range.split_once('-').ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end: u64 = b.trim().parse().map_err(|_| bad())?;
    if end < start {
        return Err(bad());
    }
    let end = end.checked_add(1).ok_or_else(|| {
        CacheError::BadRequest(format!("Content-Range end {end} is past any entry's size"))
    })?;
    Ok((start, end))
}

async fn upload(
    State(svc): State<Arc<CacheService>>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    let id = upload_id(&params)?;
    writable(&svc, &headers, id).await?;
    let (start, end) = content_range(&headers)?;
    let len = end - start;
    if len > MAX_PATCH {
        return Err(
            CacheError::TooLarge(format!("a chunk may be at most {MAX_PATCH} bytes")).into(),
        );
    }
    let got = stream_into_upload(&svc.store, id, start, body, len).await?;
    if got != len {
        return Err(CacheError::BadRequest(format!(
            "Content-Range announces {len} bytes, body had {got}"
        ))
        .into());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct CommitBody {
    size: i64,
}

async fn commit(
    State(svc): State<Arc<CacheService>>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, V1Error> {
    let body: CommitBody = parse(&svc.read_body(&headers, body, MAX_JSON_BODY).await?)?;
    let id = upload_id(&params)?;
    writable(&svc, &headers, id).await?;
    if body.size < 0 {
        return Err(CacheError::BadRequest("size must not be negative".into()).into());
    }
    let res = svc.store.reservation(id)?;
    let store = Arc::clone(&svc.store);
    let stats = blocking(move || store.finalize_archive(id, body.size as u64)).await?;
    svc.metrics.add(
        &res.repo,
        &res.scope,
        Counter::BytesUploaded,
        stats.uploaded,
    );
    svc.metrics.add(
        &res.repo,
        &res.scope,
        Counter::BytesDedupSaved,
        stats.dedup_saved,
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Formats milliseconds since the epoch as RFC 3339 UTC (civil-from-days, no date crate needed).
pub(super) fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600_000), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
