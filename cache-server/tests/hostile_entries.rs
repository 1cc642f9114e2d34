//! Hostile cache entries against the restore: chains of symlinks, each harmless by its text,
//! that would plant a link out of the workspace and then write through it, within one entry
//! and across two; in tree listings (saved by kiln's client) and in archives (saved through the
//! v1 API, as stock `actions/cache` does); for host jobs and confined (container) jobs. Nothing
//! may be written outside the workspace, and the restore says which link it refused.

mod support;

use kiln_cache::client::{
    tree_version, CacheClient, PathContext, RestoreOutcome, RestoreRequest, SaveOutcome,
    SaveRequest,
};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use support::*;

/// A workspace two levels inside a scratch directory: `scratch/work/ws`.
struct Workspace {
    scratch: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let scratch = tempfile::tempdir().unwrap();
        fs::create_dir_all(scratch.path().join("work/ws")).unwrap();
        Workspace { scratch }
    }

    fn path(&self) -> PathBuf {
        self.scratch.path().join("work/ws")
    }

    /// Nothing but the workspace in `work`, nothing but `work` in the scratch directory.
    fn assert_contained(&self) {
        let names = |p: &Path| -> Vec<String> {
            fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(self.scratch.path()), vec!["work"]);
        assert_eq!(names(&self.scratch.path().join("work")), vec!["ws"]);
    }
}

fn context(ws: &Path, confine: bool) -> PathContext {
    PathContext {
        workspace: ws.to_path_buf(),
        home: None,
        confine,
    }
}

fn save(client: &CacheClient, ws: &Path, key: &str, path: &str) {
    let out = client
        .save(&SaveRequest {
            key: key.into(),
            paths: vec![path.into()],
            context: context(ws, false),
            version: None,
        })
        .unwrap();
    assert!(matches!(out, SaveOutcome::Saved(_)), "{key}: {out:?}");
}

fn restore(
    client: &CacheClient,
    ws: &Path,
    key: &str,
    path: &str,
    confine: bool,
) -> kiln_cache::Result<RestoreOutcome> {
    client.restore(&RestoreRequest {
        key: key.into(),
        restore_keys: vec![],
        paths: vec![path.into()],
        context: context(ws, confine),
        version: None,
        lookup_only: false,
    })
}

fn refusal(result: kiln_cache::Result<RestoreOutcome>) -> String {
    match result {
        Err(e) => e.to_string(),
        Ok(other) => panic!("expected the restore to be refused, got {other:?}"),
    }
}

/// Entry A holds `d/l1 -> ..` and `d/l2 -> l1/..` (each stays inside by its text; together
/// `d/l2` is the workspace's parent). Entry B, for `path: d/**/pwned`, lists the file
/// `l2/pwned` without the directory `l2`: restored after A, the old client wrote it through
/// `d/l2` into the workspace's parent.
fn save_the_two_entries(client: &CacheClient) {
    let source = Workspace::new();
    let s = source.path();
    write(&s.join("d/l2/pwned"), b"pwned");
    save(client, &s, "b", "d/**/pwned");
    fs::remove_dir_all(s.join("d")).unwrap();
    fs::create_dir(s.join("d")).unwrap();
    symlink("..", s.join("d/l1")).unwrap();
    symlink("l1/..", s.join("d/l2")).unwrap();
    save(client, &s, "a", "d");
}

/// Two restores into one workspace: `links` (which holds `d/l1 -> ..` and `d/l2 -> l1/..`) is
/// refused, so `write` (which writes `d/l2/pwned`) lands inside; and where the chain was planted
/// anyway (by an older kiln, or by the job), `write` is refused, naming the link. Returns the
/// refusal of `links`.
fn chain_then_write(
    client: &CacheClient,
    (links, links_path): (&str, &str),
    (write, write_path): (&str, &str),
    confine: bool,
) -> String {
    let ws = Workspace::new();
    let w = ws.path();
    let refused = refusal(restore(client, &w, links, links_path, confine));
    // Refused before anything was written.
    assert!(fs::symlink_metadata(w.join("d/l2")).is_err(), "{confine}");
    let out = restore(client, &w, write, write_path, confine).unwrap();
    assert!(matches!(out, RestoreOutcome::Hit { .. }), "{out:?}");
    assert_eq!(fs::read(w.join("d/l2/pwned")).unwrap(), b"pwned");
    ws.assert_contained();

    let ws = Workspace::new();
    let w = ws.path();
    fs::create_dir(w.join("d")).unwrap();
    symlink("..", w.join("d/l1")).unwrap();
    symlink("l1/..", w.join("d/l2")).unwrap();
    let err = refusal(restore(client, &w, write, write_path, confine));
    assert!(err.contains("goes through the symlink"), "{err}");
    assert!(err.contains(&w.join("d/l2").display().to_string()), "{err}");
    ws.assert_contained();
    refused
}

#[test]
fn a_chain_of_links_across_two_tree_entries_writes_nothing_outside() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let client = CacheClient::new(&server.url, &server.token("o/r", "main", None, false));
    save_the_two_entries(&client);
    for confine in [false, true] {
        let err = chain_then_write(&client, ("a", "d"), ("b", "d/**/pwned"), confine);
        assert!(
            err.contains("d/l2") && err.contains("after naming a directory"),
            "{err}"
        );
    }
}

/// A link that stays inside, left by an earlier restore or made by the job, is not written
/// through either: the restore fails and names it.
#[test]
fn a_directory_already_in_the_workspace_that_is_a_link_is_not_written_through() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let client = CacheClient::new(&server.url, &server.token("o/r", "main", None, false));
    let source = Workspace::new();
    write(&source.path().join("deps/sub/f"), b"content");
    save(&client, &source.path(), "k", "deps/**/f");
    let ws = Workspace::new();
    let w = ws.path();
    fs::create_dir_all(w.join("elsewhere")).unwrap();
    fs::create_dir(w.join("deps")).unwrap();
    symlink("../elsewhere", w.join("deps/sub")).unwrap();
    let err = refusal(restore(&client, &w, "k", "deps/**/f", false));
    assert!(err.contains("goes through the symlink"), "{err}");
    assert!(!w.join("elsewhere/f").exists());
}

fn tar_zst(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    zstd::encode_all(&b.into_inner().unwrap()[..], 3).unwrap()
}

fn link(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, path, target).unwrap();
}

fn file(b: &mut tar::Builder<Vec<u8>>, path: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(5);
    h.set_mode(0o644);
    b.append_data(&mut h, path, &b"pwned"[..]).unwrap();
}

/// Saves `archive` through the v1 API under `key`, with the version kiln's own lookup for
/// `path:` uses, so the built-in restore meets it (a job can send any version it likes).
fn save_archive(server: &TestServer, token: &str, key: &str, path: &str, archive: &[u8]) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let base = format!("{}/_apis/artifactcache", server.url);
    let auth = format!("Bearer {token}");
    let version = tree_version(&[path.to_string()]);
    let mut resp = agent
        .post(&format!("{base}/caches"))
        .header("Authorization", &auth)
        .content_type("application/json")
        .send(serde_json::json!({"key": key, "version": version}).to_string())
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    let id = body["cacheId"].as_u64().unwrap();
    let resp = agent
        .patch(&format!("{base}/caches/{id}"))
        .header("Authorization", &auth)
        .header("Content-Range", &format!("bytes 0-{}/*", archive.len() - 1))
        .send(archive)
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = agent
        .post(&format!("{base}/caches/{id}"))
        .header("Authorization", &auth)
        .content_type("application/json")
        .send(serde_json::json!({"size": archive.len()}).to_string())
        .unwrap();
    assert_eq!(resp.status(), 204);
}

#[test]
fn chains_of_links_in_archives_write_nothing_outside() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let token = server.token("o/r", "main", None, false);
    let client = CacheClient::new(&server.url, &token);
    // Within one archive; across two; through a deep chain to the root and back down to an
    // absolute directory; an absolute target.
    let outside = tempfile::tempdir().unwrap();
    let deep = format!("{}/pwned", outside.path().display());
    let archives = [
        (
            "one",
            tar_zst(|b| {
                link(b, "d/l1", "..");
                link(b, "d/l2", "l1/..");
                file(b, "d/l2/pwned");
            }),
        ),
        (
            "links",
            tar_zst(|b| {
                link(b, "d/l1", "..");
                link(b, "d/l2", "l1/..");
            }),
        ),
        ("write", tar_zst(|b| file(b, "d/l2/pwned"))),
        (
            "deep",
            tar_zst(|b| {
                link(b, "d/up", "..");
                link(
                    b,
                    "d/root",
                    "up/../../../../../../../../../../../../../../..",
                );
                file(b, &format!("d/root{deep}")[..]);
            }),
        ),
        ("absolute", tar_zst(|b| link(b, "d/abs", "/tmp"))),
    ];
    for (key, archive) in &archives {
        save_archive(&server, &token, key, "d", archive);
    }
    for confine in [false, true] {
        for key in ["one", "links", "deep", "absolute"] {
            let ws = Workspace::new();
            let err = refusal(restore(&client, &ws.path(), key, "d", confine));
            assert!(err.contains("refused"), "{key}: {err}");
            ws.assert_contained();
            assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        }
        chain_then_write(&client, ("links", "d"), ("write", "d"), confine);
    }
}

/// An archive saved by stock actions/cache is restored into a container job's workspace too,
/// through the same confined writer (it used to be refused there).
#[test]
fn a_benign_archive_restores_into_a_confined_workspace() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let token = server.token("o/r", "main", None, false);
    let client = CacheClient::new(&server.url, &token);
    let archive = tar_zst(|b| {
        file(b, "d/a/f");
        link(b, "d/b", "a/f");
        link(b, "d/a/up", "..");
    });
    save_archive(&server, &token, "ok", "d", &archive);
    let ws = Workspace::new();
    let out = restore(&client, &ws.path(), "ok", "d", true).unwrap();
    assert!(matches!(out, RestoreOutcome::Hit { .. }), "{out:?}");
    assert_eq!(fs::read(ws.path().join("d/b")).unwrap(), b"pwned");
    assert_eq!(fs::read(ws.path().join("d/a/up/a/f")).unwrap(), b"pwned");
}
