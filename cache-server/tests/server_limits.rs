//! The server against hostile or careless clients: request bodies bounded per endpoint, a block
//! list that cannot assemble more than was uploaded, `--max-size` held at every commit, chunks
//! scoped to the repositories whose entries use them, honest status codes, checked arithmetic on
//! request numbers, and two processes sharing one data directory.

mod support;

use kiln_cache::chunks::encode_chunk;
use kiln_cache::client::{
    CacheClient, PathContext, RestoreOutcome, RestoreRequest, SaveOutcome, SaveRequest,
};
use kiln_cache::digest::Digest;
use kiln_cache::index::{EntryKind, Reservation};
use kiln_cache::{CacheStore, ServiceConfig, StoreConfig};
use std::path::Path;
use support::*;

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    )
}

/// Sends `body` with `method` and returns the status and the body's text.
fn send(
    method: &str,
    url: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let auth = format!("Bearer {token}");
    let agent = agent();
    let mut req = match method {
        "PUT" => agent.put(url),
        "PATCH" => agent.patch(url),
        _ => agent.post(url),
    }
    .header("Authorization", &auth);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match req.send(body) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            (status, resp.body_mut().read_to_string().unwrap_or_default())
        }
        // The server answered (413) and closed before the whole body was sent.
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            (413, "refused while sending".into())
        }
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

fn get(url: &str, token: &str) -> (u16, String) {
    let mut resp = agent()
        .get(url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Reserves `key` at `url` (native or v1) and returns the answer's `field`.
fn reserve_at(url: &str, token: &str, key: &str, field: &str) -> u64 {
    let request = serde_json::json!({"key": key, "version": "v"}).to_string();
    let json_type = [("Content-Type", "application/json")];
    let (status, body) = send("POST", url, token, &json_type, request.as_bytes());
    assert_eq!(status, 200, "{body}");
    json(&body)[field].as_u64().unwrap()
}

fn reserve_native(server: &TestServer, token: &str, key: &str) -> u64 {
    let url = format!("{}/native/v1/reserve", server.url);
    reserve_at(&url, token, key, "upload_id")
}

/// Reserves `key` through v1; the cache id and the v1 base URL.
fn reserve_v1(server: &TestServer, token: &str, key: &str) -> (u64, String) {
    let v1 = format!("{}/_apis/artifactcache/caches", server.url);
    (reserve_at(&v1, token, key, "cacheId"), v1)
}

fn ctx(ws: &Path) -> PathContext {
    PathContext {
        workspace: ws.to_path_buf(),
        home: None,
        confine: false,
    }
}

fn save(client: &CacheClient, ws: &Path, key: &str) -> kiln_cache::Result<SaveOutcome> {
    client.save(&SaveRequest {
        key: key.into(),
        paths: vec!["deps".into()],
        context: ctx(ws),
        version: None,
    })
}

/// Saves one file of `len` bytes under `key` with `token`; the client and the content.
fn save_one(
    server: &TestServer,
    token: &str,
    key: &str,
    seed: u64,
    len: usize,
) -> (CacheClient, Vec<u8>) {
    let ws = tempfile::tempdir().unwrap();
    let content = bytes(seed, len);
    write(&ws.path().join("deps/f"), &content);
    let client = CacheClient::new(&server.url, token);
    assert!(matches!(
        save(&client, ws.path(), key).unwrap(),
        SaveOutcome::Saved(_)
    ));
    (client, content)
}

fn restore(client: &CacheClient, ws: &Path, key: &str) -> RestoreOutcome {
    client
        .restore(&RestoreRequest {
            key: key.into(),
            restore_keys: vec![],
            paths: vec!["deps".into()],
            context: ctx(ws),
            version: None,
            lookup_only: false,
        })
        .unwrap()
}

/// The `missing` batch was parsed whole whatever its size (123 MB took the server to 730 MB).
/// Now every JSON endpoint has a bound fit for what it carries, refused before the body is read
/// when a larger length is declared, and after reading that much otherwise.
#[test]
fn request_bodies_are_bounded_per_endpoint() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let token = server.token("o/r", "main", None, false);
    let id = reserve_native(&server, &token, "k");
    let missing = format!("{}/native/v1/uploads/{id}/missing", server.url);
    // 20,000 chunks named: 1.8 MB of valid JSON, over the batch limit.
    let chunk = format!(r#"{{"d":"{}","n":1000}}"#, "ab".repeat(32));
    let big = format!(
        r#"{{"chunks":[{}]}}"#,
        vec![chunk.as_str(); 20_000].join(",")
    );
    let (status, body) = send("POST", &missing, &token, &[], big.as_bytes());
    assert_eq!(status, 413, "{body}");
    // A batch within the bound is answered.
    let small = format!(r#"{{"chunks":[{}]}}"#, vec![chunk.as_str(); 100].join(","));
    let (status, body) = send("POST", &missing, &token, &[], small.as_bytes());
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["missing"].as_array().unwrap().len(), 1);
    // The other small JSON endpoints.
    let padded = format!(r#"{{"keys":["k"],"version":"v"{}}}"#, " ".repeat(200_000));
    let (status, _) = send(
        "POST",
        &format!("{}/native/v1/lookup", server.url),
        &token,
        &[],
        padded.as_bytes(),
    );
    assert_eq!(status, 413);
    let v1 = format!("{}/_apis/artifactcache/caches", server.url);
    let padded = format!(r#"{{"key":"k1","version":"v"{}}}"#, " ".repeat(200_000));
    let (status, _) = send(
        "POST",
        &v1,
        &token,
        &[("Content-Type", "application/json")],
        padded.as_bytes(),
    );
    assert_eq!(status, 413);
    let (cache, v1) = reserve_v1(&server, &token, "k1");
    let padded = format!(r#"{{"size":0{}}}"#, " ".repeat(200_000));
    let (status, _) = send(
        "POST",
        &format!("{v1}/{cache}"),
        &token,
        &[],
        padded.as_bytes(),
    );
    assert_eq!(status, 413, "v1 commit");
}

/// A `Content-Range` end of 2^64-1 overflowed a counter ("declared 0 bytes").
#[test]
fn content_range_numbers_are_checked() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let token = server.token("o/r", "main", None, false);
    let (id, v1) = reserve_v1(&server, &token, "k");
    for range in [
        "bytes 0-18446744073709551615/*",
        "bytes 18446744073709551615-18446744073709551615/*",
        "bytes 18446744073709551000-18446744073709551614/*",
    ] {
        let (status, body) = send(
            "PATCH",
            &format!("{v1}/{id}"),
            &token,
            &[("Content-Range", range)],
            b"abc",
        );
        assert!(status == 400 || status == 413, "{range}: {status} {body}");
        assert!(!body.contains("declared 0"), "{range}: {body}");
    }
}

/// A Put Block List naming one 4 MiB block 256 times staged a 1 GiB file.
#[test]
fn a_block_list_assembles_no_more_than_was_uploaded() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let token = server.token("o/r", "main", None, false);
    let twirp = format!(
        "{}/twirp/github.actions.results.api.v1.CacheService",
        server.url
    );
    let (status, body) = send(
        "POST",
        &format!("{twirp}/CreateCacheEntry"),
        &token,
        &[("Content-Type", "application/json")],
        br#"{"key":"k","version":"v"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let url = json(&body)["signed_upload_url"]
        .as_str()
        .unwrap()
        .to_string();
    let block = bytes(1, 64 << 10);
    let (status, _) = send(
        "PUT",
        &format!("{url}&comp=block&blockid=YQ=="),
        "",
        &[],
        &block,
    );
    assert_eq!(status, 201);
    let list = format!(
        "<?xml version=\"1.0\"?><BlockList>{}</BlockList>",
        "<Latest>YQ==</Latest>".repeat(256)
    );
    let (status, body) = send(
        "PUT",
        &format!("{url}&comp=blocklist"),
        "",
        &[],
        list.as_bytes(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("each block may be used once"), "{body}");
    let staged: u64 = std::fs::read_dir(data.path().join("uploads"))
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    assert!(staged <= block.len() as u64, "{staged} bytes staged");
    // The list an SDK sends (each block once) still works, and the entry is complete.
    let list = "<?xml version=\"1.0\"?><BlockList><Latest>YQ==</Latest></BlockList>";
    let (status, body) = send(
        "PUT",
        &format!("{url}&comp=blocklist"),
        "",
        &[],
        list.as_bytes(),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = send(
        "POST",
        &format!("{twirp}/FinalizeCacheEntryUpload"),
        &token,
        &[("Content-Type", "application/json")],
        format!(
            r#"{{"key":"k","version":"v","size_bytes":"{}"}}"#,
            block.len()
        )
        .as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["ok"], true, "{body}");
}

/// `--max-size` was only enforced by the 10-minute maintenance.
#[test]
fn max_size_holds_at_every_commit() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = ServiceConfig::new(data.path());
    cfg.store.max_size = 3 << 20;
    let server = TestServer::start_with(cfg);
    let client = CacheClient::new(&server.url, &server.token("o/r", "main", None, false));
    let ws = tempfile::tempdir().unwrap();
    for (i, key) in ["one", "two", "three"].iter().enumerate() {
        write(&ws.path().join("deps/f"), &bytes(i as u64 + 1, 1_200_000));
        assert!(matches!(
            save(&client, ws.path(), key).unwrap(),
            SaveOutcome::Saved(_)
        ));
        let (_, _, stored) = server.service.store().totals().unwrap();
        assert!(stored <= 3 << 20, "after {key}: {stored} bytes stored");
    }
    let out = tempfile::tempdir().unwrap();
    assert_eq!(restore(&client, out.path(), "one"), RestoreOutcome::Miss);
    assert!(matches!(
        restore(&client, out.path(), "three"),
        RestoreOutcome::Hit { .. }
    ));
    // One entry larger than the whole budget is refused rather than kept.
    write(&ws.path().join("deps/f"), &bytes(9, 4 << 20));
    let err = save(&client, ws.path(), "huge").unwrap_err().to_string();
    assert!(err.contains("--max-size"), "{err}");
    assert_eq!(restore(&client, out.path(), "huge"), RestoreOutcome::Miss);
    let (_, _, stored) = server.service.store().totals().unwrap();
    assert!(stored <= 3 << 20, "{stored} bytes stored");
    // The same through v1: an archive over the budget is refused as it arrives.
    let token = server.token("o/r", "main", None, false);
    let (id, v1) = reserve_v1(&server, &token, "big");
    let archive = bytes(3, 4 << 20);
    let range = format!("bytes 0-{}/*", archive.len() - 1);
    let (status, _) = send(
        "PATCH",
        &format!("{v1}/{id}"),
        &token,
        &[("Content-Range", &range)],
        &archive,
    );
    assert_eq!(status, 413);
}

/// A token of another repository fetched any chunk by its digest, and `missing` told it whether
/// some content existed anywhere on the server.
#[test]
fn chunks_are_scoped_to_the_repositories_that_use_them() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let owner = server.token("o/secret", "main", None, false);
    let other = server.token("o/other", "main", None, false);
    let (_, content) = save_one(&server, &owner, "k", 7, 300_000);
    let digest = Digest::of(&content).to_hex();
    let chunk_url = format!("{}/native/v1/chunks/{digest}", server.url);
    assert_eq!(get(&chunk_url, &owner).0, 200);
    let (status, body) = get(&chunk_url, &other);
    assert_eq!(status, 404, "{body}");
    // The same answer as for a chunk nobody stored.
    let (status, nobody) = get(
        &format!("{}/native/v1/chunks/{}", server.url, "00".repeat(32)),
        &other,
    );
    assert_eq!(status, 404);
    assert_eq!(
        body.replace(&digest, "D"),
        nobody.replace(&"00".repeat(32), "D")
    );
    let (status, _) = send("POST", &format!("{chunk_url}/recheck"), &other, &[], b"");
    assert_eq!(status, 404);
    // `missing` says the other repository lacks it; it uploads it and its save and restore work.
    let id = reserve_native(&server, &other, "k");
    let ask = format!(r#"{{"chunks":[{{"d":"{digest}","n":{}}}]}}"#, content.len());
    let missing = format!("{}/native/v1/uploads/{id}/missing", server.url);
    let (_, body) = send("POST", &missing, &other, &[], ask.as_bytes());
    assert_eq!(json(&body)["missing"][0], digest.as_str(), "{body}");
    let (status, _) = send(
        "PUT",
        &format!("{}/native/v1/uploads/{id}/chunks/{digest}", server.url),
        &other,
        &[],
        &encode_chunk(&content, 1),
    );
    assert_eq!(status, 201);
    // Sent by this upload: now it may be told.
    let (_, body) = send("POST", &missing, &other, &[], ask.as_bytes());
    assert!(
        json(&body)["missing"].as_array().unwrap().is_empty(),
        "{body}"
    );
    let other_client = CacheClient::new(&server.url, &other);
    let ws2 = tempfile::tempdir().unwrap();
    write(&ws2.path().join("deps/f"), &content);
    assert!(matches!(
        save(&other_client, ws2.path(), "k2").unwrap(),
        SaveOutcome::Saved(_)
    ));
    let out = tempfile::tempdir().unwrap();
    assert!(matches!(
        restore(&other_client, out.path(), "k2"),
        RestoreOutcome::Hit { .. }
    ));
    assert_eq!(std::fs::read(out.path().join("deps/f")).unwrap(), content);
    assert_eq!(get(&chunk_url, &other).0, 200);
}

/// An uploaded chunk whose bytes do not match its name got 410 ("the entries that use it were
/// removed"), though nothing was.
#[test]
fn a_chunk_that_does_not_match_its_name_is_a_bad_request() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let token = server.token("o/r", "main", None, false);
    let (client, content) = save_one(&server, &token, "k", 4, 100_000);
    let id = reserve_native(&server, &token, "k2");
    let digest = Digest::of(&content).to_hex();
    let (status, body) = send(
        "PUT",
        &format!("{}/native/v1/uploads/{id}/chunks/{digest}", server.url),
        &token,
        &[],
        &encode_chunk(&bytes(5, 100_000), 1),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("does not match"), "{body}");
    assert!(!body.contains("were removed"), "{body}");
    let out = tempfile::tempdir().unwrap();
    assert!(matches!(
        restore(&client, out.path(), "k"),
        RestoreOutcome::Hit { .. }
    ));
}

fn reservation(key: &str) -> Reservation {
    Reservation {
        repo: "o/r".into(),
        scope: "refs/heads/main".into(),
        key: key.into(),
        version: "v".into(),
        kind: EntryKind::Archive,
    }
}

/// Two processes on one data directory (two `kiln run`s): the second one's start-up dropped the
/// first one's uploads in progress, whose saves then failed. Now a store opened while another
/// has the directory leaves its work alone; one opened alone cleans up after dead ones.
#[test]
fn a_second_store_on_the_directory_leaves_uploads_in_progress_alone() {
    let data = tempfile::tempdir().unwrap();
    let first = CacheStore::open(StoreConfig::new(data.path())).unwrap();
    let archive = bytes(11, 3 << 20);
    let id = first.reserve_archive(reservation("k")).unwrap();
    first.write_archive(id, 0, &archive[..1 << 20]).unwrap();
    let second = CacheStore::open(StoreConfig::new(data.path())).unwrap();
    // The reservation is still taken, and the first upload goes on to a complete entry.
    assert!(second.reserve_archive(reservation("k")).is_err());
    first
        .write_archive(id, 1 << 20, &archive[1 << 20..])
        .unwrap();
    first.finalize_archive(id, archive.len() as u64).unwrap();
    let (entry, _) = second
        .lookup(
            "o/r",
            &["refs/heads/main".into()],
            &["k".into()],
            "v",
            false,
        )
        .unwrap()
        .expect("the first store's entry");
    let mut got = Vec::new();
    for c in &entry.chunks {
        got.extend(second.read_chunk(&c.digest).unwrap());
    }
    assert_eq!(got, archive);
    // An upload left by a store that went away while another stayed is cleaned up by the next
    // store that is alone.
    let abandoned = second.reserve_archive(reservation("left")).unwrap();
    second.write_archive(abandoned, 0, b"partial").unwrap();
    std::mem::forget(second);
    drop(first);
    // `second` still holds the directory (its lock was never released): not alone.
    let third = CacheStore::open(StoreConfig::new(data.path())).unwrap();
    assert!(third.reserve_archive(reservation("left")).is_err());
}

/// After every store on a directory is closed, the next one is alone and drops what dead ones
/// left in flight.
#[test]
fn a_store_alone_drops_what_dead_stores_left() {
    let data = tempfile::tempdir().unwrap();
    {
        let store = CacheStore::open(StoreConfig::new(data.path())).unwrap();
        let id = store.reserve_archive(reservation("left")).unwrap();
        store.write_archive(id, 0, b"partial").unwrap();
    }
    let store = CacheStore::open(StoreConfig::new(data.path())).unwrap();
    assert!(store.reserve_archive(reservation("left")).is_ok());
    assert_eq!(
        std::fs::read_dir(data.path().join("uploads"))
            .unwrap()
            .count(),
        1
    );
}

/// `token.key` was created 0644 and the data directory 0755: any local user could mint a token
/// for any repository.
#[test]
fn the_key_and_the_data_are_private_and_an_exposed_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cache");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    drop(kiln_cache::CacheService::open(ServiceConfig::new(&data)).unwrap());
    assert_eq!(mode(&data.join("token.key")), 0o600);
    for sub in ["", "chunks", "chunks/ab", "uploads", "tmp"] {
        assert_eq!(mode(&data.join(sub)) & 0o077, 0, "{sub}");
    }
    let key = data.join("token.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = kiln_cache::CacheService::open(ServiceConfig::new(&data))
        .err()
        .expect("an exposed key is refused")
        .to_string();
    assert!(err.contains("chmod 600"), "{err}");
    // A data directory others could enter is closed (it is the cache's own).
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(kiln_cache::CacheService::open(ServiceConfig::new(&data)).is_ok());
    assert_eq!(mode(&data), 0o700);
}
