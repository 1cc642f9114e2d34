//! BuildKit's `type=gha` cache backend against the server, request for request. BuildKit
//! (cache/remotecache/gha) talks to the cache through go-actions-cache; no BuildKit can be
//! installed here, so these tests replay what that library sends, as its source spells it:
//! - the token is read as a JWT without verifying it: `ac` (a JSON string of
//!   `[{"Scope","Permission"}]`), `exp` and `nbf` must be there;
//! - v1 (`ACTIONS_CACHE_URL`): `GET _apis/artifactcache/cache?keys=K&version=V` (an empty body
//!   is a miss), `POST caches {"key","version"}` answering `cacheID`, 32 MiB `PATCH`es with
//!   `Content-Range: bytes S-E/*`, four at a time, `POST caches/{id} {"size"}`, and downloads
//!   of `archiveLocation` without the token, resumed with `Range: bytes=N-` (the answer's
//!   `Content-Range` must start with `bytes N-`);
//! - v2 (`ACTIONS_CACHE_SERVICE_V2`, `ACTIONS_RESULTS_URL`): the twirp `CreateCacheEntry`,
//!   `FinalizeCacheEntryUpload` (`size_bytes` a JSON number) and `GetCacheEntryDownloadURL`
//!   (`restore_keys` = the keys), the upload through the Azure SDK's `UploadStream` (Put Block
//!   per block, then Put Block List) and downloads through its `Download` (`x-ms-range`);
//! - a save whose key exists must fail as "already exists" (BuildKit ignores only that), and
//!   the index is saved with `SaveMutable`: load `KEY#` (a prefix), reserve `KEY#N+1`; the
//!   importer then loads `KEY`, which must give the newest `KEY#N`.

mod support;

use sha2::{Digest as _, Sha256};
use std::time::Duration;
use support::{bytes, TestServer};

/// go-actions-cache's `version()`: the same for every key.
fn version() -> String {
    hex(&Sha256::digest(b"|go-actionscache-1.0"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Go's `url.Values.Encode` for the characters BuildKit's keys hold.
fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A field as Go's encoding/json finds it: names match case-insensitively.
fn field<'a>(value: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    value
        .as_object()
        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
        .map_or(&serde_json::Value::Null, |(_, v)| v)
}

/// The v1 client as go-actions-cache drives it.
struct V1 {
    base: String,
    token: String,
}

impl V1 {
    fn url(&self, path: &str) -> String {
        format!(
            "{}/_apis/artifactcache/{path}",
            self.base.trim_end_matches('/')
        )
    }

    fn request(&self, method: &str, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        let builder = match method {
            "POST" => agent().post(url),
            "PATCH" => agent().patch(url),
            other => panic!("{other}"),
        };
        builder
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Accept", "application/json;api-version=6.0-preview.1")
            .header("User-Agent", "go-actions-cache/1.0")
    }

    /// `Load`: the entry (`cacheKey`, `archiveLocation`) or None for a miss.
    fn load(&self, key: &str) -> Option<serde_json::Value> {
        let url = format!(
            "{}?keys={}&version={}",
            self.url("cache"),
            query_escape(key),
            version()
        );
        let mut response = agent()
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Accept", "application/json;api-version=6.0-preview.1")
            .header("User-Agent", "go-actions-cache/1.0")
            .call()
            .expect("lookup");
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().expect("body");
        assert!(
            (200..300).contains(&status),
            "lookup {key}: {status} {body}"
        );
        if body.is_empty() {
            return None;
        }
        let entry = json(&body);
        let found = field(&entry, "cacheKey").as_str().unwrap_or_default();
        (!found.is_empty()).then_some(entry)
    }

    /// `reserveV1`: the cache id, or the error body with its status.
    fn reserve(&self, key: &str) -> Result<u64, (u16, serde_json::Value)> {
        let body = serde_json::json!({"key": key, "version": version()}).to_string();
        let mut response = self
            .request("POST", &self.url("caches"))
            .content_type("application/json")
            .send(body)
            .expect("reserve");
        let status = response.status().as_u16();
        let answer = json(&response.body_mut().read_to_string().expect("body"));
        if !(200..300).contains(&status) {
            return Err((status, answer));
        }
        let id = field(&answer, "cacheID")
            .as_u64()
            .unwrap_or_else(|| panic!("cacheID must be a JSON integer: {answer}"));
        assert_ne!(id, 0, "go-actions-cache refuses cacheID 0");
        Ok(id)
    }

    /// `uploadV1`: 32 MiB chunks, four in flight; sent here last chunk first.
    fn upload(&self, id: u64, data: &[u8]) {
        const CHUNK: usize = 32 * 1024 * 1024;
        let chunks: Vec<(usize, &[u8])> = data
            .chunks(CHUNK)
            .enumerate()
            .map(|(i, c)| (i * CHUNK, c))
            .rev()
            .collect();
        std::thread::scope(|scope| {
            for (start, chunk) in chunks {
                scope.spawn(move || {
                    let url = self.url(&format!("caches/{id}"));
                    let range = format!("bytes {start}-{}/*", start + chunk.len() - 1);
                    let mut response = self
                        .request("PATCH", &url)
                        .header("Content-Range", &range)
                        .content_type("application/octet-stream")
                        .send(chunk)
                        .expect("patch");
                    let status = response.status().as_u16();
                    let body = response.body_mut().read_to_string().unwrap_or_default();
                    assert!((200..300).contains(&status), "{range}: {status} {body}");
                });
            }
        });
    }

    fn commit(&self, id: u64, size: usize) {
        let mut response = self
            .request("POST", &self.url(&format!("caches/{id}")))
            .content_type("application/json")
            .send(format!(r#"{{"size":{size}}}"#))
            .expect("commit");
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        assert!((200..300).contains(&status), "commit: {status} {body}");
    }

    fn save(&self, key: &str, data: &[u8]) -> Result<(), (u16, serde_json::Value)> {
        let id = self.reserve(key)?;
        self.upload(id, data);
        self.commit(id, data.len());
        Ok(())
    }

    /// `SaveMutable` without a concurrent writer: the next `KEY#N`.
    fn save_mutable(&self, key: &str, data: &[u8]) -> String {
        let index = match self.load(&format!("{key}#")) {
            None => 0,
            Some(entry) => {
                let found = field(&entry, "cacheKey").as_str().unwrap_or_default();
                found
                    .strip_prefix(&format!("{key}#"))
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("SaveMutable cannot read {found:?}"))
            }
        };
        let next = format!("{key}#{}", index + 1);
        self.save(&next, data).expect("reserve the next index");
        next
    }
}

/// `Entry.Download`: no token; a read at an offset asks for `bytes=N-`.
fn download(url: &str, offset: usize) -> Vec<u8> {
    let mut request = agent().get(url);
    if offset != 0 {
        request = request.header("Range", &format!("bytes={offset}-"));
    }
    let response = request.call().expect("download");
    let status = response.status().as_u16();
    assert!((200..300).contains(&status), "download: {status}");
    if offset != 0 {
        let range = response
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            range.starts_with(&format!("bytes {offset}-")),
            "go-actions-cache refuses content-range {range:?}"
        );
    }
    all_bytes(response)
}

fn all_bytes(mut response: ureq::http::Response<ureq::Body>) -> Vec<u8> {
    response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .expect("body")
}

/// A server with a fresh store, its URL as a job gets it (with the trailing slash), and a
/// read-write token for `refs/heads/main`.
fn started() -> (tempfile::TempDir, TestServer, String, String) {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let base = format!("{}/", server.url);
    let token = server.token("octo/app", "refs/heads/main", None, false);
    (data, server, base, token)
}

fn token_claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .expect("base64url payload");
    serde_json::from_slice(&decoded).expect("JSON claims")
}

#[test]
fn tokens_carry_what_go_actions_cache_reads() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let token = server.token("octo/app", "refs/pull/5/merge", Some("main"), false);
    let claims = token_claims(&token);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let exp = claims["exp"].as_f64().expect("exp is a number");
    let nbf = claims["nbf"].as_f64().expect("nbf is a number");
    assert!(nbf <= now && now < exp, "{claims}");
    let scopes = json(claims["ac"].as_str().expect("ac is a JSON string"));
    let scopes = scopes.as_array().expect("ac holds an array");
    assert!(!scopes.is_empty(), "{claims}");
    let writable: Vec<&str> = scopes
        .iter()
        .filter(|s| {
            field(s, "Permission")
                .as_u64()
                .expect("Permission is an integer")
                & 2
                != 0
        })
        .map(|s| field(s, "Scope").as_str().expect("Scope is a string"))
        .collect();
    // BuildKit names its index after the last writable scope.
    assert_eq!(writable.len(), 1, "{claims}");
}

#[test]
fn buildkit_v1_export_and_import() {
    let (_data, _server, base, token) = started();
    let client = V1 { base, token };

    // Export: a layer blob larger than one 32 MiB chunk, looked up first, then saved.
    let layer = bytes(7, 32 * 1024 * 1024 + 3 * 1024 * 1024 / 2);
    let blob_key = format!("buildkit-blob-1-sha256:{}", hex(&Sha256::digest(&layer)));
    assert!(client.load(&blob_key).is_none(), "nothing saved yet");
    client.save(&blob_key, &layer).expect("first save");
    // A second builder exporting the same layer gets "already exists", which BuildKit ignores.
    let (status, error) = client.save(&blob_key, &layer).expect_err("the key exists");
    let type_key = field(&error, "typeKey").as_str().unwrap_or_default();
    let message = field(&error, "message").as_str().unwrap_or_default();
    assert!(
        type_key.contains("AlreadyExists") || message.to_lowercase().contains("already exists"),
        "{status}: {error}"
    );

    // The index, saved twice as BuildKit's SaveMutable does.
    let index_key = "index-buildkit-1-0123abcd";
    assert_eq!(
        client.save_mutable(index_key, br#"{"layers":[1]}"#),
        format!("{index_key}#1")
    );
    assert_eq!(
        client.save_mutable(index_key, br#"{"layers":[2]}"#),
        format!("{index_key}#2")
    );

    // Import: the index by its key gives the newest save; then the layer, resumed mid-way.
    let index = client.load(index_key).expect("the index");
    assert_eq!(field(&index, "cacheKey"), &format!("{index_key}#2"));
    let location = field(&index, "archiveLocation")
        .as_str()
        .expect("archiveLocation");
    assert_eq!(download(location, 0), br#"{"layers":[2]}"#);
    let entry = client.load(&blob_key).expect("the layer");
    assert_eq!(field(&entry, "cacheKey"), blob_key.as_str());
    let location = field(&entry, "archiveLocation")
        .as_str()
        .expect("archiveLocation");
    assert!(download(location, 0) == layer, "the layer differs");
    let offset = 33 * 1024 * 1024 + 17;
    assert!(
        download(location, offset) == layer[offset..],
        "the resumed read differs"
    );
}

/// The v2 client as go-actions-cache drives it (twirp JSON, then the Azure SDK).
struct V2 {
    base: String,
    token: String,
}

impl V2 {
    fn call(&self, method: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let url = format!(
            "{}twirp/github.actions.results.api.v1.CacheService/{method}",
            self.base
        );
        let mut response = agent()
            .post(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .content_type("application/json")
            .send(body.to_string())
            .expect("twirp call");
        let status = response.status().as_u16();
        (
            status,
            json(&response.body_mut().read_to_string().expect("body")),
        )
    }

    /// `Save`: create, upload with `UploadStream` (blocks of 1 MiB), finalize.
    fn save(&self, key: &str, data: &[u8]) -> Result<(), (u16, serde_json::Value)> {
        let (status, created) = self.call(
            "CreateCacheEntry",
            serde_json::json!({"key": key, "version": version()}),
        );
        if status != 200 || created["ok"] != true {
            return Err((status, created));
        }
        let url = created["signed_upload_url"]
            .as_str()
            .expect("signed_upload_url");
        let separator = if url.contains('?') { '&' } else { '?' };
        let mut ids = Vec::new();
        for (i, block) in data.chunks(1024 * 1024).enumerate() {
            use base64::Engine as _;
            let id = base64::engine::general_purpose::STANDARD
                .encode(format!("kiln-buildkit-test-block-{i:08}"));
            let staged = agent()
                .put(&format!(
                    "{url}{separator}comp=block&blockid={}",
                    query_escape(&id)
                ))
                .header("x-ms-version", "2023-11-03")
                .send(block)
                .expect("stage block")
                .status()
                .as_u16();
            assert_eq!(staged, 201, "Put Block {i}");
            ids.push(id);
        }
        let list: String = ids
            .iter()
            .map(|id| format!("<Latest>{id}</Latest>"))
            .collect();
        let committed = agent()
            .put(&format!("{url}{separator}comp=blocklist"))
            .header("x-ms-version", "2023-11-03")
            .content_type("application/xml")
            .send(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<BlockList>{list}</BlockList>"
            ))
            .expect("commit block list")
            .status()
            .as_u16();
        assert_eq!(committed, 201, "Put Block List");
        let (status, finalized) = self.call(
            "FinalizeCacheEntryUpload",
            serde_json::json!({"key": key, "size_bytes": data.len(), "version": version()}),
        );
        assert!(
            status == 200 && finalized["ok"] == true,
            "{status}: {finalized}"
        );
        Ok(())
    }

    /// `loadV2`: the matched key and download URL, or None.
    fn load(&self, key: &str) -> Option<(String, String)> {
        let (status, found) = self.call(
            "GetCacheEntryDownloadURL",
            serde_json::json!({"key": key, "restore_keys": [key], "version": version()}),
        );
        assert_eq!(status, 200, "{found}");
        (found["ok"] == true).then(|| {
            (
                found["matched_key"]
                    .as_str()
                    .expect("matched_key")
                    .to_owned(),
                found["signed_download_url"]
                    .as_str()
                    .expect("url")
                    .to_owned(),
            )
        })
    }
}

/// `downloadV2`: the Azure SDK's Download, an offset sent as `x-ms-range`.
fn azure_download(url: &str, offset: usize) -> Vec<u8> {
    let mut request = agent().get(url).header("x-ms-version", "2023-11-03");
    if offset != 0 {
        request = request.header("x-ms-range", &format!("bytes={offset}-"));
    }
    let response = request.call().expect("download");
    let status = response.status().as_u16();
    assert_eq!(status, if offset == 0 { 200 } else { 206 });
    all_bytes(response)
}

#[test]
fn buildkit_v2_export_and_import() {
    let (_data, _server, base, token) = started();
    let client = V2 { base, token };
    let layer = bytes(11, 5 * 1024 * 1024 / 2);
    let blob_key = format!("buildkit-blob-1-sha256:{}", hex(&Sha256::digest(&layer)));
    assert!(client.load(&blob_key).is_none());
    client.save(&blob_key, &layer).expect("first save");
    let (status, error) = client.save(&blob_key, &layer).expect_err("the key exists");
    assert_eq!(error["code"], "already_exists", "{status}: {error}");

    let index_key = "index-buildkit-1-0123abcd";
    client
        .save(&format!("{index_key}#1"), b"first")
        .expect("index 1");
    // SaveMutable's load of `KEY#` finds the first index; the importer's load of `KEY` the newest.
    let (matched, _) = client
        .load(&format!("{index_key}#"))
        .expect("index by prefix");
    assert_eq!(matched, format!("{index_key}#1"));
    client
        .save(&format!("{index_key}#2"), b"second")
        .expect("index 2");
    let (matched, url) = client.load(index_key).expect("newest index");
    assert_eq!(matched, format!("{index_key}#2"));
    assert_eq!(azure_download(&url, 0), b"second");

    let (matched, url) = client.load(&blob_key).expect("the layer");
    assert_eq!(matched, blob_key);
    assert!(azure_download(&url, 0) == layer, "the layer differs");
    let offset = 1024 * 1024 + 5;
    assert!(
        azure_download(&url, offset) == layer[offset..],
        "the resumed read differs"
    );
}
