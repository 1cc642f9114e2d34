//! The native API for kiln runners: the client names the chunks of what it saves, the server
//! answers which are missing, only those travel; restores fetch verified chunks in parallel.

use super::{
    blocking, lookup_keys, read_body_into, validate_key, validate_version, CacheService, JsonError,
};
use crate::chunks::MAX_ENCODED_CHUNK;
use crate::digest::{ChunkRef, Digest};
use crate::error::CacheError;
use crate::index::{EntryKind, MatchKind, Reservation};
use crate::metrics::Counter;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::Arc;

/// Wire types shared with the client.
pub mod wire {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Clone, Debug)]
    pub struct WireChunk {
        /// blake3 of the uncompressed bytes, hex.
        pub d: String,
        /// Uncompressed length.
        pub n: u32,
    }

    #[derive(Serialize, Deserialize, Debug)]
    pub struct LookupRequest {
        pub keys: Vec<String>,
        pub version: String,
    }

    #[derive(Serialize, Deserialize, Debug, Default)]
    pub struct LookupResponse {
        pub hit: bool,
        #[serde(default)]
        pub entry_id: u64,
        #[serde(default)]
        pub key: String,
        #[serde(default)]
        pub exact: bool,
        /// "tree" (native) or "archive" (saved through the GitHub APIs).
        #[serde(default)]
        pub kind: String,
        #[serde(default)]
        pub size: u64,
        #[serde(default)]
        pub chunks: Vec<WireChunk>,
        /// base64 of the tree listing the client stored.
        #[serde(default)]
        pub meta: String,
    }

    #[derive(Serialize, Deserialize, Debug)]
    pub struct ReserveRequest {
        pub key: String,
        pub version: String,
    }

    #[derive(Serialize, Deserialize, Debug)]
    pub struct ReserveResponse {
        pub upload_id: u64,
    }

    #[derive(Serialize, Deserialize, Debug)]
    pub struct MissingRequest {
        pub chunks: Vec<WireChunk>,
    }

    #[derive(Serialize, Deserialize, Debug)]
    pub struct MissingResponse {
        pub missing: Vec<String>,
    }

    #[derive(Serialize, Deserialize, Debug)]
    pub struct CommitRequest {
        pub size: u64,
        pub chunks: Vec<WireChunk>,
        pub meta: String,
    }

    #[derive(Serialize, Deserialize, Debug)]
    pub struct CommitResponse {
        pub entry_id: u64,
    }
}

use wire::*;

/// Bodies of the small JSON requests (lookup: at most 10 keys of 512 characters; reserve).
const MAX_SMALL_JSON: usize = 64 << 10;
/// A `missing` batch: kiln's client asks about 4 chunks at a time.
const MAX_MISSING_CHUNKS: usize = 4096;
/// About 90 bytes of JSON per chunk named.
const WIRE_CHUNK_BYTES: usize = 100;
const MAX_MISSING_BODY: usize = MAX_MISSING_CHUNKS * WIRE_CHUNK_BYTES;

/// The largest commit document an entry within the store's limits needs: its listing in
/// base64, and a chunk list (every chunk but the last is at least `CHUNK_MIN` long).
fn max_commit_body(entry_limit: u64) -> usize {
    let chunks = entry_limit / u64::from(crate::chunks::CHUNK_MIN) + 2;
    let listing = crate::store::MAX_META_BYTES.div_ceil(3) * 4;
    listing.saturating_add((chunks as usize).saturating_mul(WIRE_CHUNK_BYTES)) + 4096
}

/// A chunk as a request names it, borrowed from the body (no allocation per chunk).
#[derive(Deserialize)]
struct ChunkIn<'a> {
    #[serde(borrow)]
    d: Cow<'a, str>,
    n: u32,
}

#[derive(Deserialize)]
struct MissingIn<'a> {
    #[serde(borrow)]
    chunks: Vec<ChunkIn<'a>>,
}

#[derive(Deserialize)]
struct CommitIn<'a> {
    size: u64,
    #[serde(borrow)]
    chunks: Vec<ChunkIn<'a>>,
    #[serde(borrow)]
    meta: Cow<'a, str>,
}

pub(super) fn routes() -> Router<Arc<CacheService>> {
    Router::new()
        .route("/native/v1/lookup", post(lookup))
        .route("/native/v1/reserve", post(reserve))
        .route("/native/v1/uploads/{id}/missing", post(missing))
        .route("/native/v1/uploads/{id}/chunks/{digest}", put(put_chunk))
        .route("/native/v1/uploads/{id}/commit", post(commit))
        .route("/native/v1/uploads/{id}/abort", post(abort))
        .route("/native/v1/chunks/{digest}", get(get_chunk))
        .route("/native/v1/chunks/{digest}/recheck", post(recheck_chunk))
        .layer(DefaultBodyLimit::disable())
}

fn chunk_ref(d: &str, n: u32) -> Result<ChunkRef, CacheError> {
    if n == 0 || n > crate::chunks::CHUNK_MAX {
        return Err(CacheError::BadRequest(format!(
            "chunk length {n} is outside 1..={}",
            crate::chunks::CHUNK_MAX
        )));
    }
    Ok(ChunkRef {
        digest: Digest::from_hex(d)?,
        len: n,
    })
}

pub(crate) fn to_refs(chunks: &[WireChunk]) -> Result<Vec<ChunkRef>, CacheError> {
    chunks.iter().map(|c| chunk_ref(&c.d, c.n)).collect()
}

fn refs_in(chunks: &[ChunkIn<'_>]) -> Result<Vec<ChunkRef>, CacheError> {
    chunks.iter().map(|c| chunk_ref(&c.d, c.n)).collect()
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, CacheError> {
    serde_json::from_slice(body).map_err(|e| CacheError::BadRequest(format!("invalid JSON: {e}")))
}

async fn lookup(
    State(svc): State<Arc<CacheService>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, JsonError> {
    let access = svc.access(&headers)?;
    let req: LookupRequest = parse(&svc.read_body(&headers, body, MAX_SMALL_JSON).await?)?;
    validate_version(&req.version)?;
    let mut it = req.keys.into_iter();
    let primary = it
        .next()
        .ok_or_else(|| CacheError::BadRequest("at least one key is needed".into()))?;
    let keys = lookup_keys(&primary, it)?;
    let store = Arc::clone(&svc.store);
    let (repo, scopes, version) = (access.repo.clone(), access.read_scopes.clone(), req.version);
    let hit = blocking(move || store.lookup(&repo, &scopes, &keys, &version, true)).await?;
    let own_scope = access.read_scopes.first().cloned().unwrap_or_default();
    let Some((entry, kind)) = hit else {
        svc.metrics.add(&access.repo, &own_scope, Counter::Miss, 1);
        return Ok(Json(LookupResponse::default()).into_response());
    };
    let exact = kind == MatchKind::Exact;
    svc.metrics.add(
        &access.repo,
        &own_scope,
        if exact {
            Counter::ExactHit
        } else {
            Counter::RestoreKeyHit
        },
        1,
    );
    let resp = LookupResponse {
        hit: true,
        entry_id: entry.id,
        key: entry.key,
        exact,
        kind: entry.kind.as_str().to_string(),
        size: entry.size,
        chunks: entry
            .chunks
            .iter()
            .map(|c| WireChunk {
                d: c.digest.to_hex(),
                n: c.len,
            })
            .collect(),
        meta: STANDARD.encode(&entry.meta),
    };
    Ok(Json(resp).into_response())
}

async fn reserve(
    State(svc): State<Arc<CacheService>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, JsonError> {
    let access = svc.access(&headers)?;
    let scope = access.require_write()?.to_string();
    let req: ReserveRequest = parse(&svc.read_body(&headers, body, MAX_SMALL_JSON).await?)?;
    validate_key(&req.key)?;
    validate_version(&req.version)?;
    let res = Reservation {
        repo: access.repo,
        scope,
        key: req.key,
        version: req.version,
        kind: EntryKind::Tree,
    };
    let store = Arc::clone(&svc.store);
    let upload_id = blocking(move || store.reserve_native(res)).await?;
    Ok(Json(ReserveResponse { upload_id }).into_response())
}

async fn missing(
    State(svc): State<Arc<CacheService>>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, JsonError> {
    let (res, access) = writable(&svc, &headers, id)?;
    let body = svc.read_body(&headers, body, MAX_MISSING_BODY).await?;
    let req: MissingIn = parse(&body)?;
    if req.chunks.len() > MAX_MISSING_CHUNKS {
        return Err(CacheError::TooLarge(format!(
            "ask about at most {MAX_MISSING_CHUNKS} chunks at a time"
        ))
        .into());
    }
    let chunks = refs_in(&req.chunks)?;
    drop(req);
    drop(body);
    let store = Arc::clone(&svc.store);
    let scopes = access.read_scopes;
    let r = blocking(move || store.missing_chunks(id, &chunks, &scopes)).await?;
    svc.metrics.add(
        &res.repo,
        &res.scope,
        Counter::BytesDedupSaved,
        r.dedup_saved,
    );
    Ok(Json(MissingResponse {
        missing: r.missing.iter().map(Digest::to_hex).collect(),
    })
    .into_response())
}

/// Checks the token may write upload `id`; its reservation and what the token grants.
fn writable(
    svc: &CacheService,
    headers: &HeaderMap,
    id: u64,
) -> Result<(Reservation, crate::token::Access), CacheError> {
    let access = svc.access(headers)?;
    let scope = access.require_write()?;
    let res = svc.store.reservation(id)?;
    if res.repo != access.repo || res.scope != scope {
        return Err(CacheError::Forbidden(format!(
            "upload {id} belongs to another repository or scope"
        )));
    }
    Ok((res, access))
}

async fn put_chunk(
    State(svc): State<Arc<CacheService>>,
    Path((id, digest)): Path<(u64, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, JsonError> {
    let (res, _) = writable(&svc, &headers, id)?;
    let digest = Digest::from_hex(&digest)?;
    let _share = svc.body_share(&headers, MAX_ENCODED_CHUNK).await?;
    let mut data = svc.chunk_bodies.take();
    if let Err(e) = read_body_into(body, MAX_ENCODED_CHUNK, &mut data).await {
        svc.chunk_bodies.give(data);
        return Err(e.into());
    }
    let n = data.len() as u64;
    let store = Arc::clone(&svc.store);
    let (stored, data) =
        blocking(move || Ok((store.put_native_chunk(id, &digest, &data), data))).await?;
    svc.chunk_bodies.give(data);
    stored?;
    svc.metrics
        .add(&res.repo, &res.scope, Counter::BytesUploaded, n);
    Ok(StatusCode::CREATED.into_response())
}

async fn commit(
    State(svc): State<Arc<CacheService>>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, JsonError> {
    writable(&svc, &headers, id)?;
    let limit = max_commit_body(svc.store.entry_limit());
    let body = svc.read_body(&headers, body, limit).await?;
    let req: CommitIn = parse(&body)?;
    let chunks = refs_in(&req.chunks)?;
    let meta = STANDARD
        .decode(req.meta.as_bytes())
        .map_err(|_| CacheError::BadRequest("meta is not base64".into()))?;
    let size = req.size;
    drop(req);
    drop(body);
    let store = Arc::clone(&svc.store);
    blocking(move || store.commit_native(id, size, &chunks, &meta)).await?;
    Ok(Json(CommitResponse { entry_id: id }).into_response())
}

async fn abort(
    State(svc): State<Arc<CacheService>>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Result<Response, JsonError> {
    writable(&svc, &headers, id)?;
    let store = Arc::clone(&svc.store);
    blocking(move || store.abandon(id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_chunk(
    State(svc): State<Arc<CacheService>>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Result<Response, JsonError> {
    let access = svc.access(&headers)?;
    let digest = Digest::from_hex(&digest)?;
    let store = Arc::clone(&svc.store);
    let (repo, scopes) = (access.repo.clone(), access.read_scopes.clone());
    let encoded = blocking(move || {
        store.check_readable(&digest, &repo, &scopes)?;
        store.read_chunk_encoded(&digest)
    })
    .await?;
    let scope = access.read_scopes.first().cloned().unwrap_or_default();
    svc.metrics.add(
        &access.repo,
        &scope,
        Counter::BytesServed,
        encoded.len() as u64,
    );
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        encoded,
    )
        .into_response())
}

/// A client whose decoded chunk did not match its name reports it here: the server only checks
/// the encoded bytes when it serves a chunk, so it now decodes and hashes it, and removes it (with
/// every entry using it) when the stored bytes are bad. 204 when the chunk is sound (the damage
/// was in transit), 410 when it was removed.
async fn recheck_chunk(
    State(svc): State<Arc<CacheService>>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Result<Response, JsonError> {
    let access = svc.access(&headers)?;
    let digest = Digest::from_hex(&digest)?;
    let store = Arc::clone(&svc.store);
    blocking(move || {
        store.check_readable(&digest, &access.repo, &access.read_scopes)?;
        store.recheck_chunk(&digest)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
