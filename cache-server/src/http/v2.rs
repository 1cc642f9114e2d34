//! GitHub cache API v2: the twirp `CacheService` (JSON) and the Azure Blob emulation that
//! `signed_upload_url` points to (Put Blob, Put Block, Put Block List).

use super::download::request_id;
use super::{
    blocking, lookup_keys, stream_body, stream_into_upload, validate_key, validate_version,
    CacheService, JsonError,
};
use crate::error::CacheError;
use crate::index::{EntryKind, MatchKind, Reservation};
use crate::metrics::Counter;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

const SERVICE: &str = "/twirp/github.actions.results.api.v1.CacheService";
/// Largest single Put Blob / Put Block body (the SDKs use at most 128 MiB / 64 MiB... and
/// 4000 MiB is Azure's own block limit, far more than any cache client sends).
const MAX_BLOB_BODY: u64 = 256 << 20;
const MAX_TWIRP_BODY: usize = 64 << 10;
/// A block list names at most 100,000 blocks (of ids up to 1,024 characters in the SDKs' base64).
const MAX_BLOCK_LIST_BODY: usize = 16 << 20;

pub(super) fn routes() -> Router<Arc<CacheService>> {
    Router::new()
        .route(&format!("{SERVICE}/{{method}}"), post(twirp))
        .route(
            "/blob/{account}/{container}/{id}",
            put(blob_put).layer(DefaultBodyLimit::disable()),
        )
}

/// int64 fields arrive as JSON strings from the toolkit and as numbers from Go clients.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        N(i64),
        S(String),
    }
    match Num::deserialize(d)? {
        Num::N(n) => Ok(n),
        Num::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Deserialize)]
struct CreateReq {
    key: String,
    version: String,
}

#[derive(Deserialize)]
struct FinalizeReq {
    key: String,
    version: String,
    #[serde(deserialize_with = "int64", alias = "sizeBytes")]
    size_bytes: i64,
}

#[derive(Deserialize)]
struct DownloadReq {
    key: String,
    version: String,
    #[serde(default, alias = "restoreKeys")]
    restore_keys: Vec<String>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, CacheError> {
    serde_json::from_slice(body)
        .map_err(|e| CacheError::BadRequest(format!("request JSON does not match the method: {e}")))
}

async fn twirp(
    State(svc): State<Arc<CacheService>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, JsonError> {
    let body = svc.read_body(&headers, body, MAX_TWIRP_BODY).await?;
    let access = svc.access(&headers)?;
    match method.as_str() {
        "CreateCacheEntry" => {
            let req: CreateReq = parse(&body)?;
            validate_key(&req.key)?;
            validate_version(&req.version)?;
            // A read-only token is a policy denial, which GitHub reports as ok:false.
            let Some(scope) = access.write_scope.clone() else {
                return Ok(Json(json!({"ok": false, "message": "cache write denied: token has no writable scopes"})).into_response());
            };
            let res = Reservation {
                repo: access.repo,
                scope,
                key: req.key,
                version: req.version,
                kind: EntryKind::Archive,
            };
            let store = Arc::clone(&svc.store);
            let id = blocking(move || store.reserve_archive(res)).await?;
            let exp = svc.url_expiry();
            let url = format!(
                "{}/blob/kilncache/uploads/{id}?exp={exp}&sig={}",
                svc.base_url(&headers),
                svc.secret.sign_url("ul", id, exp)
            );
            Ok(Json(json!({"ok": true, "signed_upload_url": url})).into_response())
        }
        "FinalizeCacheEntryUpload" => {
            let req: FinalizeReq = parse(&body)?;
            let scope = access.require_write()?.to_string();
            if req.size_bytes < 0 {
                return Err(
                    CacheError::BadRequest("size_bytes must not be negative".into()).into(),
                );
            }
            let Some(id) = svc
                .store
                .find_upload(&access.repo, &scope, &req.key, &req.version)
            else {
                return Ok(Json(json!({"ok": false, "message": format!("no upload in progress for key {:?}; create the entry first", req.key)})).into_response());
            };
            let store = Arc::clone(&svc.store);
            let size = req.size_bytes as u64;
            let stats = blocking(move || store.finalize_archive(id, size)).await?;
            svc.metrics
                .add(&access.repo, &scope, Counter::BytesUploaded, stats.uploaded);
            svc.metrics.add(
                &access.repo,
                &scope,
                Counter::BytesDedupSaved,
                stats.dedup_saved,
            );
            Ok(Json(json!({"ok": true, "entry_id": id.to_string()})).into_response())
        }
        "GetCacheEntryDownloadURL" => {
            let req: DownloadReq = parse(&body)?;
            validate_version(&req.version)?;
            let keys = lookup_keys(&req.key, req.restore_keys)?;
            let store = Arc::clone(&svc.store);
            let (repo, scopes, version) = (
                access.repo.clone(),
                access.read_scopes.clone(),
                req.version.clone(),
            );
            let hit =
                blocking(move || store.lookup(&repo, &scopes, &keys, &version, false)).await?;
            let own_scope = access.read_scopes.first().cloned().unwrap_or_default();
            match hit {
                None => {
                    svc.metrics.add(&access.repo, &own_scope, Counter::Miss, 1);
                    Ok(Json(json!({"ok": false})).into_response())
                }
                Some((entry, kind)) => {
                    let counter = if kind == MatchKind::Exact {
                        Counter::ExactHit
                    } else {
                        Counter::RestoreKeyHit
                    };
                    svc.metrics.add(&access.repo, &own_scope, counter, 1);
                    Ok(Json(json!({
                        "ok": true,
                        "signed_download_url": svc.download_url(&headers, entry.id),
                        "matched_key": entry.key,
                    }))
                    .into_response())
                }
            }
        }
        other => {
            Err(CacheError::BadRequest(format!("unknown CacheService method {other:?}")).into())
        }
    }
}

/// Azure answers errors with XML; the SDKs only need the status and request id.
struct BlobError(CacheError);

impl From<CacheError> for BlobError {
    fn from(e: CacheError) -> Self {
        BlobError(e)
    }
}

impl IntoResponse for BlobError {
    fn into_response(self) -> Response {
        let status = super::status_of(&self.0);
        let msg = self
            .0
            .to_string()
            .replace('&', "&amp;")
            .replace('<', "&lt;");
        let body = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>InvalidInput</Code><Message>{msg}</Message></Error>");
        (
            status,
            [
                ("x-ms-request-id", request_id()),
                ("content-type", HeaderValue::from_static("application/xml")),
            ],
            body,
        )
            .into_response()
    }
}

fn created() -> Response {
    let mut resp = StatusCode::CREATED.into_response();
    let h = resp.headers_mut();
    h.insert("x-ms-request-id", request_id());
    h.insert("x-ms-version", HeaderValue::from_static("2025-01-05"));
    h.insert("etag", HeaderValue::from_static("\"0x8DC0000000000000\""));
    h.insert(
        "last-modified",
        HeaderValue::from_static("Thu, 01 Jan 2026 00:00:00 GMT"),
    );
    h.insert(
        "x-ms-request-server-encrypted",
        HeaderValue::from_static("false"),
    );
    resp
}

/// Extracts the block ids of a Put Block List body, in document order.
fn parse_block_list(xml: &str) -> Result<Vec<String>, CacheError> {
    let mut ids = Vec::new();
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find('>') else { break };
        let tag = &rest[..close];
        rest = &rest[close + 1..];
        if matches!(tag, "Latest" | "Committed" | "Uncommitted") {
            let end_tag = format!("</{tag}>");
            let end = rest.find(&end_tag).ok_or_else(|| {
                CacheError::BadRequest(format!("block list has an unclosed <{tag}>"))
            })?;
            ids.push(rest[..end].trim().to_string());
            rest = &rest[end + end_tag.len()..];
        }
    }
    if ids.is_empty() && !xml.contains("<BlockList") {
        return Err(CacheError::BadRequest(
            "body is not a BlockList document".into(),
        ));
    }
    Ok(ids)
}

async fn blob_put(
    State(svc): State<Arc<CacheService>>,
    Path((_account, _container, id)): Path<(String, String, u64)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, BlobError> {
    let exp = q.get("exp").and_then(|e| e.parse().ok()).unwrap_or(0);
    let sig = q.get("sig").map(String::as_str).unwrap_or("");
    svc.secret.check_url("ul", id, exp, sig)?;
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BLOB_BODY) {
        return Err(CacheError::TooLarge(format!(
            "blob bodies are limited to {MAX_BLOB_BODY} bytes"
        ))
        .into());
    }
    match q.get("comp").map(String::as_str) {
        None => {
            stream_into_upload(&svc.store, id, 0, body, MAX_BLOB_BODY).await?;
            Ok(created())
        }
        Some("block") => {
            let block_id = q
                .get("blockid")
                .cloned()
                .ok_or_else(|| CacheError::BadRequest("comp=block needs a blockid".into()))?;
            let (store, id_of_block) = (Arc::clone(&svc.store), block_id.clone());
            let len = stream_body(
                body,
                MAX_BLOB_BODY,
                Arc::new(move |at, data| store.write_block(id, &id_of_block, at, data)),
            )
            .await?;
            let store = Arc::clone(&svc.store);
            blocking(move || store.finish_block(id, &block_id, len)).await?;
            Ok(created())
        }
        Some("blocklist") => {
            let data = svc.read_body(&headers, body, MAX_BLOCK_LIST_BODY).await?;
            let xml = std::str::from_utf8(&data)
                .map_err(|_| CacheError::BadRequest("block list is not UTF-8".into()))?;
            let ids = parse_block_list(xml)?;
            let store = Arc::clone(&svc.store);
            blocking(move || store.commit_block_list(id, &ids)).await?;
            Ok(created())
        }
        Some(other) => {
            Err(CacheError::BadRequest(format!("unsupported blob operation comp={other}")).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_block_list;

    #[test]
    fn block_list_order() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><BlockList><Latest>b</Latest><Latest>a</Latest><Uncommitted>c</Uncommitted></BlockList>"#;
        assert_eq!(parse_block_list(xml).unwrap(), vec!["b", "a", "c"]);
        assert!(parse_block_list("<BlockList><Latest>x</BlockList>").is_err());
        assert!(parse_block_list("garbage").is_err());
        assert_eq!(
            parse_block_list("<BlockList></BlockList>").unwrap(),
            Vec::<String>::new()
        );
    }
}
