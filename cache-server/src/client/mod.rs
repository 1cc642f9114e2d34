//! The native cache client that kiln's built-in `actions/cache` calls: save and restore of
//! `path:` patterns under a key, over the native chunk API. Blocking; run it on a blocking
//! thread from async code.

mod fetch;
pub mod glob;
mod restore;
mod save;
pub mod tree;
mod write;

use crate::error::{CacheError, Result};
use crate::http::native::wire::*;
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

pub use restore::{RestoreOutcome, RestoreRequest, RestoreStats};
pub use save::{SaveOutcome, SaveRequest, SaveStats};

/// The cache `version` for a kiln tree entry: sha256 of the `path:` lines and a salt, so kiln's
/// entries never collide with `actions/cache` archives that use the same key.
pub fn tree_version(paths: &[String]) -> String {
    let mut parts: Vec<&str> = paths
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    parts.push("kiln-tree-3");
    hex(&Sha256::digest(parts.join("|").as_bytes()))
}

/// The version `@actions/cache` computes for the same `path:` lines (zstd, Linux), for reading
/// entries that stock `actions/cache` saved (restore handles their tar+zstd archives safely).
pub fn actions_cache_version(paths: &[String]) -> String {
    let mut parts: Vec<&str> = paths.iter().map(|s| s.as_str()).collect();
    parts.push("zstd-without-long");
    parts.push("1.0");
    hex(&Sha256::digest(parts.join("|").as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A connection to a kiln cache server with a job token.
#[derive(Clone)]
pub struct CacheClient {
    base: String,
    token: String,
    agent: ureq::Agent,
    /// Parallel requests for uploads and downloads.
    pub concurrency: usize,
    /// zstd level for chunks the client uploads.
    pub zstd_level: i32,
}

const MAX_RESPONSE: u64 = 256 << 20;

impl CacheClient {
    pub fn new(base_url: &str, token: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .max_idle_connections_per_host(32)
            .build();
        CacheClient {
            base: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            agent: ureq::Agent::new_with_config(config),
            concurrency: 4,
            zstd_level: 1,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Sends a request and returns the status and body; transport failures become errors.
    fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<(u16, Vec<u8>)> {
        let url = self.url(path);
        let fail = |e: ureq::Error| CacheError::Http(format!("{method} {url}: {e}"));
        let mut resp = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("Authorization", &self.auth())
                .call()
                .map_err(fail)?,
            ("PUT", Some((ct, b))) => self
                .agent
                .put(&url)
                .header("Authorization", &self.auth())
                .content_type(ct)
                .send(b)
                .map_err(fail)?,
            (_, Some((ct, b))) => self
                .agent
                .post(&url)
                .header("Authorization", &self.auth())
                .content_type(ct)
                .send(b)
                .map_err(fail)?,
            (_, None) => self
                .agent
                .post(&url)
                .header("Authorization", &self.auth())
                .send_empty()
                .map_err(fail)?,
        };
        let status = resp.status().as_u16();
        // Sized from Content-Length: growing by doubling would copy every chunk about twice.
        let expected = resp.body().content_length().unwrap_or(0).min(MAX_RESPONSE);
        let mut bytes = Vec::with_capacity(expected as usize);
        resp.body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .reader()
            .read_to_end(&mut bytes)
            .map_err(|e| {
                CacheError::Http(format!("{method} {url}: reading the response failed: {e}"))
            })?;
        Ok((status, bytes))
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T> {
        let payload = serde_json::to_vec(body).map_err(|e| CacheError::Protocol(e.to_string()))?;
        let (status, bytes) = self.exchange("POST", path, Some(("application/json", &payload)))?;
        if !(200..300).contains(&status) {
            return Err(status_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| CacheError::Protocol(format!("{path}: {e}")))
    }

    /// The server's lookup record of the token's repository since `since_ms`
    /// (`kiln cache stats --url`).
    pub fn stats(&self, since_ms: i64) -> Result<crate::stats::StatsReport> {
        let path = format!("/stats?since_ms={since_ms}");
        let (status, bytes) = self.exchange("GET", &path, None)?;
        if !(200..300).contains(&status) {
            return Err(status_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| CacheError::Protocol(format!("{path}: {e}")))
    }

    fn lookup(&self, keys: &[String], version: &str) -> Result<LookupResponse> {
        self.json(
            "/native/v1/lookup",
            &LookupRequest {
                keys: keys.to_vec(),
                version: version.to_string(),
            },
        )
    }

    /// Fetches one chunk and checks it against its digest. The server only checked the encoded
    /// bytes, so a mismatch here (damage in transit, or bad bytes under a good encoded digest) is
    /// reported back for a full check that removes the chunk if the store holds it wrong.
    fn fetch_chunk(&self, digest: &crate::digest::Digest) -> Result<Vec<u8>> {
        let (path, bytes) = self.fetch_encoded(digest)?;
        self.recheck_if_corrupt(&path, crate::chunks::decode_chunk(&bytes, digest))
    }

    /// [`Self::fetch_chunk`], handing the checked bytes to `take` from a buffer the thread
    /// keeps instead of a fresh one per chunk.
    fn fetch_chunk_with<T>(
        &self,
        digest: &crate::digest::Digest,
        take: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<T> {
        let (path, bytes) = self.fetch_encoded(digest)?;
        self.recheck_if_corrupt(
            &path,
            crate::chunks::with_verified_raw(&bytes, digest, take),
        )?
    }

    fn fetch_encoded(&self, digest: &crate::digest::Digest) -> Result<(String, Vec<u8>)> {
        let path = format!("/native/v1/chunks/{}", digest.to_hex());
        let (status, bytes) = self.exchange("GET", &path, None)?;
        if status != 200 {
            return Err(status_error(status, &bytes));
        }
        Ok((path, bytes))
    }

    fn recheck_if_corrupt<T>(&self, path: &str, checked: Result<T>) -> Result<T> {
        if let Err(CacheError::CorruptChunk { .. }) = &checked {
            // Best effort: the restore fails as corrupt whatever the server finds.
            let _ = self.exchange("POST", &format!("{path}/recheck"), None);
        }
        checked
    }
}

/// Turns an error status and its JSON body into an error that keeps the server's message.
fn status_error(status: u16, body: &[u8]) -> CacheError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
    CacheError::ServerStatus { status, message }
}

/// Where `path:` patterns are resolved: the workspace and the home directory for `~`.
#[derive(Clone, Debug)]
pub struct PathContext {
    pub workspace: PathBuf,
    pub home: Option<PathBuf>,
    /// Keep every file the restore writes (and the save reads) inside `workspace`, even if
    /// something swaps a directory for a symlink meanwhile: for a container job's workspace,
    /// which processes in the container can change while this client works on the host.
    pub confine: bool,
}
