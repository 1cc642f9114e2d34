//! How reads verify chunks: the server checks a zstd chunk's encoded digest (no decode), the
//! client checks the raw digest after decoding, and a client-side mismatch makes the server
//! check the chunk fully and remove it when the store holds it wrong. Chunks stored before the
//! encoded digest existed are still verified by decoding.

mod support;

use kiln_cache::chunks::{encode_chunk, stored_form};
use kiln_cache::client::{
    CacheClient, PathContext, RestoreOutcome, RestoreRequest, SaveOutcome, SaveRequest,
};
use std::fs;
use std::path::{Path, PathBuf};
use support::{write, TestServer};

fn ctx(ws: &Path) -> PathContext {
    PathContext {
        workspace: ws.to_path_buf(),
        home: None,
        confine: false,
    }
}

fn save(client: &CacheClient, ws: &Path) -> SaveOutcome {
    client
        .save(&SaveRequest {
            key: "k".into(),
            paths: vec!["d".into()],
            context: ctx(ws),
            version: None,
        })
        .unwrap()
}

fn restore(client: &CacheClient, ws: &Path) -> RestoreOutcome {
    client
        .restore(&RestoreRequest {
            key: "k".into(),
            restore_keys: vec![],
            paths: vec!["d".into()],
            context: ctx(ws),
            version: None,
            lookup_only: false,
        })
        .unwrap()
}

/// Compressible content below the minimum chunk size: one zstd chunk.
fn text(word: &str) -> Vec<u8> {
    format!("let {word} = compute(input, options);\n")
        .repeat(4000)
        .into_bytes()
}

fn chunk_files(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in fs::read_dir(data.join("chunks")).unwrap() {
        for f in fs::read_dir(shard.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

/// A server with one saved entry holding one zstd chunk; returns the chunk's file.
fn saved_one_chunk(data: &Path, src: &Path) -> (TestServer, CacheClient, PathBuf) {
    let server = TestServer::start(data);
    let client = CacheClient::new(&server.url, &server.token("o/r", "main", None, false));
    write(&src.join("d/code.rs"), &text("value"));
    assert!(matches!(save(&client, src), SaveOutcome::Saved(_)));
    let files = chunk_files(data);
    assert_eq!(files.len(), 1);
    let file = files[0].clone();
    assert_eq!(
        fs::read(&file).unwrap()[0],
        3,
        "a zstd chunk is stored framed with the xxh3 of its encoded bytes"
    );
    (server, client, file)
}

fn assert_corrupt_then_miss_and_removed(client: &CacheClient, data: &Path) {
    let dst = tempfile::tempdir().unwrap();
    assert!(matches!(
        restore(client, dst.path()),
        RestoreOutcome::Corrupt(_)
    ));
    assert!(
        !dst.path().join("d/code.rs").exists(),
        "no file may be written from a corrupt chunk"
    );
    assert_eq!(restore(client, dst.path()), RestoreOutcome::Miss);
    assert!(chunk_files(data).is_empty(), "the bad chunk is removed");
}

#[test]
fn corrupt_compressed_chunk_is_a_miss_and_removed() {
    let (data, src) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_server, client, file) = saved_one_chunk(data.path(), src.path());
    let mut bytes = fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&file, bytes).unwrap();
    assert_corrupt_then_miss_and_removed(&client, data.path());
}

#[test]
fn chunk_failing_the_clients_check_is_rechecked_and_removed() {
    let (data, src) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_server, client, file) = saved_one_chunk(data.path(), src.path());
    // Wrong content under a matching encoded digest: the server's read check passes, only the
    // client's raw digest check can see it, and the server's recheck must then remove it.
    let forged = encode_chunk(&text("other"), 3);
    let mut bytes = stored_form(&forged).unwrap().to_vec();
    bytes.extend_from_slice(&forged);
    fs::write(&file, bytes).unwrap();
    assert_corrupt_then_miss_and_removed(&client, data.path());
}

#[test]
fn recheck_keeps_a_sound_chunk_and_refuses_unknown_ones() {
    let (data, src) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (server, client, file) = saved_one_chunk(data.path(), src.path());
    let token = server.token("o/r", "main", None, false);
    let digest = file.file_name().unwrap().to_string_lossy().into_owned();
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let recheck = |d: &str| {
        agent
            .post(format!("{}/native/v1/chunks/{d}/recheck", server.url))
            .header("Authorization", &format!("Bearer {token}"))
            .send_empty()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(recheck(&digest), 204, "damage in transit: the chunk stays");
    // A chunk no entry of this repository uses: as unknown as one nobody stored.
    assert_eq!(recheck(&"0".repeat(64)), 404);
    let unauthenticated = agent
        .post(format!("{}/native/v1/chunks/{digest}/recheck", server.url))
        .send_empty()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(unauthenticated, 401);
    let dst = tempfile::tempdir().unwrap();
    assert!(matches!(
        restore(&client, dst.path()),
        RestoreOutcome::Hit { exact: true, .. }
    ));
    assert_eq!(
        fs::read(dst.path().join("d/code.rs")).unwrap(),
        text("value")
    );
}

#[test]
fn chunks_stored_before_the_encoded_digest_are_verified_by_decoding() {
    let (data, src) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_server, client, file) = saved_one_chunk(data.path(), src.path());
    // The format older servers wrote: the encoded chunk alone.
    let legacy = encode_chunk(&text("value"), 3);
    fs::write(&file, &legacy).unwrap();
    let dst = tempfile::tempdir().unwrap();
    assert!(matches!(
        restore(&client, dst.path()),
        RestoreOutcome::Hit { .. }
    ));
    assert_eq!(
        fs::read(dst.path().join("d/code.rs")).unwrap(),
        text("value")
    );
    let mut bad = legacy;
    let last = bad.len() - 2;
    bad[last] ^= 0x01;
    fs::write(&file, bad).unwrap();
    assert_corrupt_then_miss_and_removed(&client, data.path());
}
