//! Signed, token-free downloads of archive entries (v1 `archiveLocation`, v2
//! `signed_download_url`), with HTTP and Azure-style ranges.

use super::{blocking, CacheService, ChannelBody, JsonError};
use crate::error::CacheError;
use crate::index::EntryRecord;
use crate::metrics::Counter;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<CacheService>> {
    Router::new().route("/dl/{id}", get(download).head(download))
}

#[derive(Deserialize)]
struct Signed {
    exp: u64,
    sig: String,
}

impl CacheService {
    pub(super) fn download_url(&self, headers: &HeaderMap, id: u64) -> String {
        let exp = self.url_expiry();
        format!(
            "{}/dl/{id}?exp={exp}&sig={}",
            self.base_url(headers),
            self.secret.sign_url("dl", id, exp)
        )
    }
}

/// Parses `bytes=a-b`, `bytes=a-` or `bytes=-n` against `size`; `None` means "whole entry".
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, CacheError> {
    let bad = || CacheError::BadRequest(format!("unsupported range {value:?}"));
    let spec = value.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(bad());
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| bad())?;
            (size.saturating_sub(n), size)
        }
        (s, "") => (s.parse().map_err(|_| bad())?, size),
        (s, e) => {
            let s: u64 = s.parse().map_err(|_| bad())?;
            let e: u64 = e.parse().map_err(|_| bad())?;
            (s, e.saturating_add(1).min(size))
        }
    };
    if start >= end || start >= size {
        return Err(CacheError::BadRequest(format!(
            "range {value:?} is outside the {size}-byte entry"
        )));
    }
    Ok(Some((start, end)))
}

async fn download(
    State(svc): State<Arc<CacheService>>,
    Path(id): Path<u64>,
    Query(q): Query<Signed>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = svc.secret.check_url("dl", id, q.exp, &q.sig) {
        return JsonError(e).into_response();
    }
    let store = Arc::clone(&svc.store);
    let entry = match blocking(move || store.entry(id)).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return JsonError(CacheError::BadRequest(format!(
                "entry {id} does not exist (it may have been evicted)"
            )))
            .into_response()
        }
        Err(e) => return JsonError(e).into_response(),
    };
    let range_header = headers
        .get("x-ms-range")
        .or_else(|| headers.get(header::RANGE))
        .and_then(|v| v.to_str().ok());
    let range = match range_header.map(|r| parse_range(r, entry.size)) {
        Some(Ok(r)) => r,
        Some(Err(_)) if entry.size == 0 => None,
        Some(Err(e)) => {
            let mut resp = JsonError(e).into_response();
            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            return resp;
        }
        None => None,
    };
    let (start, end) = range.unwrap_or((0, entry.size));
    let mut builder = Response::builder()
        .status(if range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"0x{:016X}\"", entry.id))
        .header("x-ms-blob-type", "BlockBlob")
        .header("x-ms-version", "2025-01-05")
        .header("x-ms-request-id", request_id());
    if range.is_some() {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{}", end - 1, entry.size),
        );
    }
    if method == Method::HEAD {
        return builder
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    svc.metrics
        .add(&entry.repo, &entry.scope, Counter::BytesServed, end - start);
    let body = stream_entry(Arc::clone(&svc), entry, start, end);
    builder
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A unique-enough request id for the Azure SDKs, which only need it to be present.
pub(super) fn request_id() -> HeaderValue {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    HeaderValue::from_str(&format!("00000000-0000-4000-8000-{n:012x}"))
        .unwrap_or(HeaderValue::from_static("0"))
}

/// Streams bytes `[start, end)` of an entry. Up to four chunks are read and verified ahead on
/// blocking threads; a corrupt chunk ends the stream early (and the store drops the entry).
fn stream_entry(svc: Arc<CacheService>, entry: EntryRecord, start: u64, end: u64) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut pending = VecDeque::new();
        let mut offset = 0u64;
        let mut chunks = entry.chunks.iter();
        loop {
            while pending.len() < 4 {
                let Some(c) = chunks.next() else { break };
                let c_start = offset;
                offset += u64::from(c.len);
                if offset <= start || c_start >= end {
                    continue;
                }
                let store = Arc::clone(&svc.store);
                let digest = c.digest;
                let lo = start.saturating_sub(c_start) as usize;
                let hi = (end.min(offset) - c_start) as usize;
                pending.push_back(tokio::task::spawn_blocking(move || {
                    store.read_chunk(&digest).and_then(|raw| {
                        raw.get(lo..hi).map(Bytes::copy_from_slice).ok_or_else(|| {
                            CacheError::CorruptChunk {
                                digest: digest.to_hex(),
                                reason: "shorter than the manifest says".into(),
                            }
                        })
                    })
                }));
            }
            let Some(next) = pending.pop_front() else {
                break;
            };
            let item = next
                .await
                .map_err(|e| CacheError::Task(e.to_string()))
                .and_then(|r| r);
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    Body::new(ChannelBody { rx })
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some((90, 100)));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some((90, 100)));
        assert_eq!(parse_range("bytes=10-1000", 100).unwrap(), Some((10, 100)));
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=5-1", 100).is_err());
        assert!(parse_range("items=0-1", 100).is_err());
        assert!(parse_range("bytes=0-1,3-4", 100).is_err());
        assert!(parse_range("bytes=x-", 100).is_err());
    }
}
