//! The native client against a real server on loopback: round trip, matching, scopes, dedup,
//! corruption, eviction and garbage collection.

mod support;

use kiln_cache::client::{
    CacheClient, PathContext, RestoreOutcome, RestoreRequest, SaveOutcome, SaveRequest,
};
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};
use support::{bytes, write, TestServer};

fn ctx(ws: &Path) -> PathContext {
    PathContext {
        workspace: ws.to_path_buf(),
        home: Some(ws.join("home")),
        confine: false,
    }
}

fn save(client: &CacheClient, ws: &Path, key: &str, paths: &[&str]) -> SaveOutcome {
    client
        .save(&SaveRequest {
            key: key.into(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            context: ctx(ws),
            version: None,
        })
        .unwrap()
}

fn restore(
    client: &CacheClient,
    ws: &Path,
    key: &str,
    restore_keys: &[&str],
    paths: &[&str],
) -> RestoreOutcome {
    client
        .restore(&RestoreRequest {
            key: key.into(),
            restore_keys: restore_keys.iter().map(|s| s.to_string()).collect(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            context: ctx(ws),
            version: None,
            lookup_only: false,
        })
        .unwrap()
}

fn make_tree(ws: &Path) {
    write(&ws.join("target/a.txt"), b"alpha");
    write(&ws.join("target/sub/b.bin"), &bytes(1, 3 << 20));
    write(&ws.join("target/sub/empty"), b"");
    write(&ws.join("target/skip/no.txt"), b"excluded");
    write(&ws.join("home/.npm/c.json"), b"{}");
    std::os::unix::fs::symlink("a.txt", ws.join("target/link")).unwrap();
}

const PATHS: &[&str] = &["target", "!target/skip", "~/.npm"];

#[test]
fn round_trip_matching_and_write_once() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let client = CacheClient::new(&server.url, &server.token("o/r", "main", None, false));
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let SaveOutcome::Saved(stats) = save(&client, src.path(), "Linux-deps-abc", PATHS) else {
        panic!("not saved")
    };
    assert_eq!(stats.files, 4);
    assert_eq!(
        save(&client, src.path(), "linux-DEPS-abc", PATHS),
        SaveOutcome::AlreadyExists
    );

    let dst = tempfile::tempdir().unwrap();
    match restore(&client, dst.path(), "linux-deps-ABC", &[], PATHS) {
        RestoreOutcome::Hit {
            matched_key,
            exact,
            stats,
        } => {
            assert_eq!(matched_key, "Linux-deps-abc");
            assert!(exact);
            assert_eq!(stats.files_written, 4);
        }
        other => panic!("expected a hit, got {other:?}"),
    }
    let d = dst.path();
    assert_eq!(fs::read(d.join("target/a.txt")).unwrap(), b"alpha");
    assert_eq!(
        fs::read(d.join("target/sub/b.bin")).unwrap(),
        bytes(1, 3 << 20)
    );
    assert_eq!(fs::read(d.join("target/sub/empty")).unwrap(), b"");
    assert_eq!(
        fs::read_link(d.join("target/link")).unwrap(),
        Path::new("a.txt")
    );
    assert_eq!(fs::read(d.join("home/.npm/c.json")).unwrap(), b"{}");
    assert!(!d.join("target/skip").exists());

    // Restoring again skips every file already present with the same content.
    match restore(&client, dst.path(), "Linux-deps-abc", &[], PATHS) {
        RestoreOutcome::Hit { stats, .. } => {
            assert_eq!(stats.files_skipped, 4);
            assert_eq!(stats.chunks_fetched, 0);
        }
        other => panic!("expected a hit, got {other:?}"),
    }
    // A file changed in place (same size, one byte in a later chunk of it) is written again.
    let mut changed = bytes(1, 3 << 20);
    changed[(3 << 20) - 10] ^= 1;
    write(&d.join("target/sub/b.bin"), &changed);
    match restore(&client, dst.path(), "Linux-deps-abc", &[], PATHS) {
        RestoreOutcome::Hit { stats, .. } => {
            assert_eq!((stats.files_skipped, stats.files_written), (3, 1));
        }
        other => panic!("expected a hit, got {other:?}"),
    }
    assert_eq!(
        fs::read(d.join("target/sub/b.bin")).unwrap(),
        bytes(1, 3 << 20)
    );
    // Prefix of the primary key, then restore keys; a different version (paths) misses.
    match restore(
        &client,
        dst.path(),
        "Linux-deps-zzz",
        &["nomatch-", "linux-deps-"],
        PATHS,
    ) {
        RestoreOutcome::Hit {
            matched_key, exact, ..
        } => {
            assert_eq!(matched_key, "Linux-deps-abc");
            assert!(!exact);
        }
        other => panic!("expected a restore-key hit, got {other:?}"),
    }
    assert_eq!(
        restore(&client, dst.path(), "Linux-deps-abc", &[], &["target"]),
        RestoreOutcome::Miss
    );
    assert_eq!(
        restore(&client, dst.path(), "other", &["x-"], PATHS),
        RestoreOutcome::Miss
    );
    let metrics = server.service.metrics().render(None);
    assert!(
        metrics.contains(
            "kiln_cache_exact_hits_total{repository=\"o/r\",scope=\"refs/heads/main\"} 3"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("kiln_cache_misses_total{repository=\"o/r\",scope=\"refs/heads/main\"} 2"),
        "{metrics}"
    );
}

/// A tree of many directories (created in parallel, files made by name inside them) comes
/// back with every byte, the executable bits and the mtimes, also when the workspace is reached
/// through a symlink.
#[test]
fn deep_tree_keeps_content_modes_and_mtimes_through_a_symlinked_workspace() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let client = CacheClient::new(&server.url, &server.token("o/r", "main", None, false));
    let src = tempfile::tempdir().unwrap();
    let when = SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
    let mut expected = Vec::new();
    for i in 0..400u64 {
        let rel = format!("deps/p{:02}/q{}/f{i:03}.txt", i % 25, (i / 25) % 4);
        // A few big files so that files span chunks and pieces are written by several threads.
        let content = if i % 97 == 0 {
            bytes(i, (2 << 20) + i as usize)
        } else {
            bytes(i, (i as usize * 37) % 3000)
        };
        let path = src.path().join(&rel);
        write(&path, &content);
        let mode = if i % 3 == 0 { 0o755 } else { 0o644 };
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when + Duration::from_secs(i))
            .unwrap();
        expected.push((rel, content, mode, when + Duration::from_secs(i)));
    }
    let SaveOutcome::Saved(stats) = save(&client, src.path(), "deep", &["deps"]) else {
        panic!("not saved")
    };
    assert_eq!(stats.files, 400);

    let dst = tempfile::tempdir().unwrap();
    fs::create_dir(dst.path().join("real")).unwrap();
    std::os::unix::fs::symlink("real", dst.path().join("ws")).unwrap();
    match restore(&client, &dst.path().join("ws"), "deep", &[], &["deps"]) {
        RestoreOutcome::Hit { stats, .. } => assert_eq!(stats.files_written, 400),
        other => panic!("expected a hit, got {other:?}"),
    }
    for (rel, content, mode, mtime) in &expected {
        let path = dst.path().join("real").join(rel);
        assert_eq!(&fs::read(&path).unwrap(), content, "{rel}");
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, *mode, "{rel}");
        assert_eq!(meta.modified().unwrap(), *mtime, "{rel}");
    }
}

/// Restoring over an older copy: identical files are left alone (not even rewritten), changed
/// and missing ones written, and a symlink where a file belongs is replaced, never written
/// through.
#[test]
fn restore_over_an_older_copy_skips_same_files_and_replaces_the_rest() {
    use std::os::unix::fs::MetadataExt;
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let client = CacheClient::new(&server.url, &server.token("o/r", "main", None, false));
    let src = tempfile::tempdir().unwrap();
    for i in 0..60u64 {
        write(
            &src.path().join(format!("deps/d{}/f{i}", i % 6)),
            &bytes(i, 500 + i as usize),
        );
    }
    assert!(matches!(
        save(&client, src.path(), "k", &["deps"]),
        SaveOutcome::Saved(_)
    ));
    let dst = tempfile::tempdir().unwrap();
    let d = dst.path();
    assert!(matches!(
        restore(&client, d, "k", &[], &["deps"]),
        RestoreOutcome::Hit { .. }
    ));
    let same = d.join("deps/d1/f1");
    let inode = fs::metadata(&same).unwrap().ino();
    write(&d.join("deps/d2/f2"), b"changed");
    fs::remove_file(d.join("deps/d3/f3")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    write(&victim, b"must stay");
    fs::remove_file(d.join("deps/d4/f4")).unwrap();
    std::os::unix::fs::symlink(&victim, d.join("deps/d4/f4")).unwrap();
    match restore(&client, d, "k", &[], &["deps"]) {
        RestoreOutcome::Hit { stats, .. } => {
            assert_eq!((stats.files_skipped, stats.files_written), (57, 3));
        }
        other => panic!("expected a hit, got {other:?}"),
    }
    for i in 0..60u64 {
        let path = d.join(format!("deps/d{}/f{i}", i % 6));
        assert!(fs::symlink_metadata(&path).unwrap().is_file(), "{i}");
        assert_eq!(fs::read(&path).unwrap(), bytes(i, 500 + i as usize), "{i}");
    }
    assert_eq!(fs::metadata(&same).unwrap().ino(), inode);
    assert_eq!(fs::read(&victim).unwrap(), b"must stay");
}

#[test]
fn scopes_are_isolated_and_tokens_enforced() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let feature = CacheClient::new(&server.url, &server.token("o/r", "feature", None, false));
    let other = CacheClient::new(&server.url, &server.token("o/r", "other", None, false));
    let main = CacheClient::new(&server.url, &server.token("o/r", "main", None, false));
    let pr = CacheClient::new(
        &server.url,
        &server.token("o/r", "refs/pull/5/merge", Some("feature"), false),
    );
    let foreign = CacheClient::new(&server.url, &server.token("x/y", "main", None, false));
    assert!(matches!(
        save(&feature, src.path(), "k", PATHS),
        SaveOutcome::Saved(_)
    ));
    let dst = tempfile::tempdir().unwrap();
    assert_eq!(
        restore(&other, dst.path(), "k", &[], PATHS),
        RestoreOutcome::Miss
    );
    assert_eq!(
        restore(&main, dst.path(), "k", &[], PATHS),
        RestoreOutcome::Miss
    );
    assert_eq!(
        restore(&foreign, dst.path(), "k", &[], PATHS),
        RestoreOutcome::Miss
    );
    assert!(matches!(
        restore(&pr, dst.path(), "k", &[], PATHS),
        RestoreOutcome::Hit { .. }
    ));
    // The default branch is readable from every ref, and the same key in two scopes coexists.
    assert!(matches!(
        save(&main, src.path(), "m", PATHS),
        SaveOutcome::Saved(_)
    ));
    assert!(matches!(
        restore(&other, dst.path(), "m", &[], PATHS),
        RestoreOutcome::Hit { .. }
    ));
    assert!(matches!(
        save(&other, src.path(), "k", PATHS),
        SaveOutcome::Saved(_)
    ));
    let read_only = CacheClient::new(&server.url, &server.token("o/r", "main", None, true));
    assert!(matches!(
        save(&read_only, src.path(), "ro", PATHS),
        SaveOutcome::Denied(_)
    ));
    let forged = CacheClient::new(&server.url, "not.a.token");
    assert!(forged
        .restore(&RestoreRequest {
            key: "k".into(),
            restore_keys: vec![],
            paths: vec!["target".into()],
            context: ctx(dst.path()),
            version: None,
            lookup_only: true
        })
        .is_err());
}

#[test]
fn second_save_after_one_file_change_uploads_about_one_chunk() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let client = CacheClient::new(&server.url, &server.token("o/r", "main", None, false));
    let src = tempfile::tempdir().unwrap();
    for i in 0..200u64 {
        write(
            &src.path().join(format!("deps/f{i:03}.bin")),
            &bytes(i, 4096 + (i as usize * 977) % 60_000),
        );
    }
    for i in 0..3u64 {
        write(
            &src.path().join(format!("deps/big{i}.bin")),
            &bytes(1000 + i, 8 << 20),
        );
    }
    let SaveOutcome::Saved(first) = save(&client, src.path(), "k1", &["deps"]) else {
        panic!()
    };
    write(&src.path().join("deps/f100.bin"), &bytes(9999, 5000));
    let SaveOutcome::Saved(second) = save(&client, src.path(), "k2", &["deps"]) else {
        panic!()
    };
    assert!(first.bytes > 24 << 20);
    assert!(second.chunks_uploaded <= 2, "{second:?}");
    assert!(second.bytes_uploaded <= (2 * 4) << 20, "{second:?}");
    assert!(second.bytes_uploaded * 5 < second.bytes, "{second:?}");
    let metrics = server.service.metrics().render(None);
    assert!(metrics.contains(
        "kiln_cache_bytes_dedup_saved_total{repository=\"o/r\",scope=\"refs/heads/main\"}"
    ));
    let dst = tempfile::tempdir().unwrap();
    assert!(matches!(
        restore(&client, dst.path(), "k2", &[], &["deps"]),
        RestoreOutcome::Hit { .. }
    ));
    assert_eq!(
        fs::read(dst.path().join("deps/f100.bin")).unwrap(),
        bytes(9999, 5000)
    );
    assert_eq!(
        fs::read(dst.path().join("deps/big2.bin")).unwrap(),
        bytes(1002, 8 << 20)
    );
}

fn chunk_files(data: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for shard in fs::read_dir(data.join("chunks")).unwrap() {
        for f in fs::read_dir(shard.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

#[test]
fn corrupt_chunk_is_a_miss_not_bad_bytes() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let client = CacheClient::new(&server.url, &server.token("o/r", "main", None, false));
    let src = tempfile::tempdir().unwrap();
    write(&src.path().join("d/one.bin"), &bytes(5, 100_000));
    assert!(matches!(
        save(&client, src.path(), "k", &["d"]),
        SaveOutcome::Saved(_)
    ));
    let files = chunk_files(data.path());
    assert_eq!(files.len(), 1);
    let mut raw = fs::read(&files[0]).unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x01;
    fs::write(&files[0], raw).unwrap();
    let dst = tempfile::tempdir().unwrap();
    assert!(matches!(
        restore(&client, dst.path(), "k", &[], &["d"]),
        RestoreOutcome::Corrupt(_)
    ));
    assert!(
        !dst.path().join("d/one.bin").exists(),
        "no file may be written from a corrupt chunk"
    );
    assert_eq!(
        restore(&client, dst.path(), "k", &[], &["d"]),
        RestoreOutcome::Miss
    );
    assert!(
        chunk_files(data.path()).is_empty(),
        "the corrupt chunk is removed"
    );
    // The key can be saved again.
    assert!(matches!(
        save(&client, src.path(), "k", &["d"]),
        SaveOutcome::Saved(_)
    ));
}

#[test]
fn eviction_by_age_and_size_keeps_what_is_referenced() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = kiln_cache::ServiceConfig::new(data.path());
    cfg.store.max_size = (3 << 20) + (1 << 19);
    let server = TestServer::start_with(cfg);
    let client = CacheClient::new(&server.url, &server.token("o/r", "main", None, false));
    let src = tempfile::tempdir().unwrap();
    for (i, key) in ["a", "b", "c"].iter().enumerate() {
        write(
            &src.path().join(format!("{key}/data.bin")),
            &bytes(i as u64 + 40, 1 << 20),
        );
        assert!(matches!(
            save(&client, src.path(), key, &[key]),
            SaveOutcome::Saved(_)
        ));
        std::thread::sleep(Duration::from_millis(5));
    }
    let dst = tempfile::tempdir().unwrap();
    // Touch "a" so that "b" is the least recently used.
    assert!(matches!(
        restore(&client, dst.path(), "a", &[], &["a"]),
        RestoreOutcome::Hit { .. }
    ));
    let store = server.service.store();
    let chunks_before = chunk_files(data.path()).len();
    write(&src.path().join("d/data.bin"), &bytes(77, 1 << 20));
    assert!(matches!(
        save(&client, src.path(), "d", &["d"]),
        SaveOutcome::Saved(_)
    ));
    // The commit of "d" evicted "b" already: maintenance finds the store within its budget.
    let (_, _, stored) = store.totals().unwrap();
    assert!(stored <= (3 << 20) + (1 << 19), "{stored}");
    let report = store.maintain(SystemTime::now()).unwrap();
    assert_eq!(report.entries_evicted, 0, "{report:?}");
    assert_eq!(
        restore(&client, dst.path(), "b", &[], &["b"]),
        RestoreOutcome::Miss
    );
    for k in ["a", "c", "d"] {
        assert!(
            matches!(
                restore(&client, dst.path(), k, &[], &[k]),
                RestoreOutcome::Hit { .. }
            ),
            "{k}"
        );
    }
    let chunks_after = chunk_files(data.path()).len();
    assert!(
        chunks_after <= chunks_before + 1 && chunks_after >= 3,
        "{chunks_before} -> {chunks_after}"
    );
    let later = SystemTime::now() + Duration::from_secs(8 * 24 * 3600);
    let report = store.maintain(later).unwrap();
    assert_eq!(report.entries_expired, 3);
    assert!(chunk_files(data.path()).is_empty());
}

#[test]
fn chunks_pinned_by_an_upload_survive_eviction() {
    use kiln_cache::digest::{ChunkRef, Digest};
    use kiln_cache::index::{EntryKind, Reservation};
    let data = tempfile::tempdir().unwrap();
    let store = kiln_cache::CacheStore::open(kiln_cache::StoreConfig::new(data.path())).unwrap();
    let res = |key: &str| Reservation {
        repo: "o/r".into(),
        scope: "refs/heads/main".into(),
        key: key.into(),
        version: "v".into(),
        kind: EntryKind::Tree,
    };
    let raw = bytes(3, 50_000);
    let chunk = ChunkRef {
        digest: Digest::of(&raw),
        len: raw.len() as u32,
    };
    let main = vec!["refs/heads/main".to_string()];
    let first = store.reserve_native(res("old")).unwrap();
    assert_eq!(
        store
            .missing_chunks(first, &[chunk], &main)
            .unwrap()
            .missing
            .len(),
        1
    );
    store
        .put_native_chunk(
            first,
            &chunk.digest,
            &kiln_cache::chunks::encode_chunk(&raw, 1),
        )
        .unwrap();
    store
        .commit_native(first, raw.len() as u64, &[chunk], b"")
        .unwrap();
    // A second upload learns the chunk is present; then every entry using it expires.
    let second = store.reserve_native(res("new")).unwrap();
    assert!(store
        .missing_chunks(second, &[chunk], &main)
        .unwrap()
        .missing
        .is_empty());
    let report = store
        .maintain(SystemTime::now() + Duration::from_secs(30 * 24 * 3600))
        .unwrap();
    assert_eq!(report.entries_expired, 1);
    assert_eq!(report.chunks_deleted, 0);
    store
        .commit_native(second, raw.len() as u64, &[chunk], b"")
        .unwrap();
    assert_eq!(store.read_chunk(&chunk.digest).unwrap(), raw);
}

/// A store-level native upload that has sent one chunk of `len` bytes (seed `seed`) without
/// asking whether it was missing: the store, the upload's id, the chunk and its bytes.
fn upload_with_one_chunk(
    cfg: kiln_cache::StoreConfig,
    key: &str,
    seed: u64,
    len: usize,
) -> (
    kiln_cache::CacheStore,
    u64,
    kiln_cache::digest::ChunkRef,
    Vec<u8>,
) {
    use kiln_cache::digest::{ChunkRef, Digest};
    use kiln_cache::index::{EntryKind, Reservation};
    let store = kiln_cache::CacheStore::open(cfg).unwrap();
    let raw = bytes(seed, len);
    let chunk = ChunkRef {
        digest: Digest::of(&raw),
        len: raw.len() as u32,
    };
    let id = store
        .reserve_native(Reservation {
            repo: "o/r".into(),
            scope: "refs/heads/main".into(),
            key: key.into(),
            version: "v".into(),
            kind: EntryKind::Tree,
        })
        .unwrap();
    store
        .put_native_chunk(
            id,
            &chunk.digest,
            &kiln_cache::chunks::encode_chunk(&raw, 1),
        )
        .unwrap();
    (store, id, chunk, raw)
}

/// A chunk sent without first asking whether it is missing is pinned by the upload as well:
/// garbage collection before the commit leaves it alone.
#[test]
fn a_chunk_sent_unasked_is_pinned_too() {
    let data = tempfile::tempdir().unwrap();
    let (store, id, chunk, raw) = upload_with_one_chunk(
        kiln_cache::StoreConfig::new(data.path()),
        "unasked",
        7,
        40_000,
    );
    let report = store
        .maintain(SystemTime::now() + Duration::from_secs(30 * 24 * 3600))
        .unwrap();
    assert_eq!(report.chunks_deleted, 0);
    store
        .commit_native(id, raw.len() as u64, &[chunk], b"")
        .unwrap();
    assert_eq!(store.read_chunk(&chunk.digest).unwrap(), raw);
}

/// A commit carrying a large listing leaves the index's log for the store's sync thread to fold
/// into the database file: the commit itself does not wait for that file's fsync.
#[test]
fn a_commit_leaves_the_index_checkpoint_to_the_sync_thread() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = kiln_cache::StoreConfig::new(data.path());
    // Long enough that the sync thread has not run when the sizes below are read.
    cfg.sync_batch_delay = Duration::from_millis(500);
    let (store, id, chunk, raw) = upload_with_one_chunk(cfg, "k", 5, 50_000);
    let db = data.path().join("index.sqlite");
    let before = fs::metadata(&db).unwrap().len();
    // Far past SQLite's default of 1,000 log pages between checkpoints.
    let listing = bytes(6, 8 << 20);
    store
        .commit_native(id, raw.len() as u64, &[chunk], &listing)
        .unwrap();
    let after_commit = fs::metadata(&db).unwrap().len();
    assert!(
        after_commit < before + (1 << 20),
        "the commit checkpointed: {before} -> {after_commit} bytes"
    );
    store.flush_durability();
    let after_sync = fs::metadata(&db).unwrap().len();
    assert!(
        after_sync >= before + (8 << 20),
        "the sync thread did not checkpoint: {before} -> {after_sync} bytes"
    );
}

fn confined_request(ws: &Path, key: &str, paths: &[&str]) -> RestoreRequest {
    RestoreRequest {
        key: key.into(),
        restore_keys: vec![],
        paths: paths.iter().map(|s| s.to_string()).collect(),
        context: PathContext {
            confine: true,
            home: None,
            ..ctx(ws)
        },
        version: None,
        lookup_only: false,
    }
}

/// A container job's workspace is confined: the whole tree (directories, files, a symlink,
/// modes) round-trips, also over an older copy, but a directory on the way that is a symlink
/// out of the workspace (planted by an earlier job in the container) is refused, where an
/// unconfined restore would create the tree behind it.
#[test]
fn a_confined_restore_stays_inside_the_workspace() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let client = CacheClient::new(&server.url, &server.token("o/r", "main", None, false));
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    write(&s.join("sub/deps/a/one"), b"one");
    write(&s.join("sub/deps/b/two"), &bytes(2, 2 << 20));
    std::os::unix::fs::symlink("../a/one", s.join("sub/deps/b/link")).unwrap();
    fs::set_permissions(s.join("sub/deps/a"), fs::Permissions::from_mode(0o750)).unwrap();
    let saved = client
        .save(&SaveRequest {
            key: "k".into(),
            paths: vec!["sub/deps".into()],
            context: PathContext {
                confine: true,
                ..ctx(s)
            },
            version: None,
        })
        .unwrap();
    assert!(matches!(saved, SaveOutcome::Saved(_)), "{saved:?}");

    let dst = tempfile::tempdir().unwrap();
    let d = dst.path();
    for _ in 0..2 {
        let out = client
            .restore(&confined_request(d, "k", &["sub/deps"]))
            .unwrap();
        assert!(matches!(out, RestoreOutcome::Hit { .. }), "{out:?}");
        assert_eq!(fs::read(d.join("sub/deps/a/one")).unwrap(), b"one");
        assert_eq!(
            fs::read(d.join("sub/deps/b/two")).unwrap(),
            bytes(2, 2 << 20)
        );
        assert_eq!(
            fs::read_link(d.join("sub/deps/b/link")).unwrap(),
            Path::new("../a/one")
        );
        let mode = fs::metadata(d.join("sub/deps/a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750);
    }

    let planted = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), planted.path().join("sub")).unwrap();
    let refused = client.restore(&confined_request(planted.path(), "k", &["sub/deps"]));
    let err = refused.expect_err("a symlink out of the workspace must be refused");
    assert!(
        err.to_string().contains("goes through the symlink"),
        "{err}"
    );
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);

    // Nor does a confined save read files behind such a symlink.
    write(&outside.path().join("deps/secret"), b"host file");
    let exfiltrate = client.save(&SaveRequest {
        key: "k2".into(),
        paths: vec!["sub/deps".into()],
        context: PathContext {
            confine: true,
            ..ctx(planted.path())
        },
        version: None,
    });
    let err = exfiltrate.expect_err("files behind a symlink out of the workspace are not read");
    assert!(err.to_string().contains("leads out of"), "{err}");
    let miss = client
        .restore(&confined_request(d, "k2", &["sub/deps"]))
        .unwrap();
    assert!(matches!(miss, RestoreOutcome::Miss), "{miss:?}");
}
