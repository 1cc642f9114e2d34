//! The real `@actions/cache` npm client against kiln, over API v1 and v2: save, exact hit,
//! restore-key hit, miss, conflict on a second save, scope isolation, corruption.
//! Needs node and `cd tests/npm && npm ci` (done by .ci/run); fails loudly without them.

#[path = "../../tests/npm/harness.rs"]
mod npm;
mod support;

use npm::{require_node, Api, NpmJob};
use std::path::Path;
use support::{bytes, write, TestServer};

fn job(server: &TestServer, api: Api, git_ref: &str, root: &Path, name: &str) -> NpmJob {
    let token = server.token("o/r", git_ref, None, false);
    NpmJob::new(&server.url, api, token, git_ref, root, name)
}

fn scenario(api: Api, big: bool) {
    require_node();
    let data = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let main = job(&server, api, "refs/heads/main", root.path(), "main");
    let payload = bytes(7, if big { 129 << 20 } else { 3 << 20 });
    write(&main.workspace.join("data/blob.bin"), &payload);
    write(
        &main.workspace.join("data/small.txt"),
        b"hello from the cache",
    );

    let id = main.save("npm-Key-1");
    assert!(
        id > 0,
        "{api:?}: cache id {id}: {}",
        main.run_logged(&["save", "diagnose"]).1
    );
    assert_eq!(
        main.save("npm-key-1"),
        -1,
        "{api:?}: a second save of the same key conflicts"
    );

    let fresh = job(&server, api, "refs/heads/main", root.path(), "fresh");
    assert_eq!(
        fresh.restore("npm-Key-1", &[]).as_deref(),
        Some("npm-Key-1")
    );
    assert_eq!(
        std::fs::read(fresh.workspace.join("data/blob.bin")).unwrap(),
        payload
    );
    assert_eq!(
        std::fs::read(fresh.workspace.join("data/small.txt")).unwrap(),
        b"hello from the cache"
    );
    assert_eq!(
        fresh
            .restore("npm-key-2", &["npm-other-", "NPM-key-"])
            .as_deref(),
        Some("npm-Key-1")
    );
    assert_eq!(fresh.restore("absent", &["nothing-"]), None);

    // Scope isolation: a feature branch's entry is invisible to a sibling branch.
    let feature = job(&server, api, "refs/heads/feature", root.path(), "feature");
    write(&feature.workspace.join("data/f.txt"), b"feature");
    assert!(feature.save("feat-key") > 0);
    let sibling = job(&server, api, "refs/heads/sibling", root.path(), "sibling");
    assert_eq!(sibling.restore("feat-key", &[]), None);
    assert_eq!(
        feature.restore("feat-key", &[]).as_deref(),
        Some("feat-key")
    );
    assert_eq!(
        sibling.restore("npm-Key-1", &[]).as_deref(),
        Some("npm-Key-1"),
        "default branch is readable"
    );
}

#[test]
fn actions_cache_v1() {
    scenario(Api::V1, false);
}

#[test]
fn actions_cache_v2() {
    scenario(Api::V2, false);
}

#[test]
fn actions_cache_v2_block_upload_over_128_mib() {
    scenario(Api::V2, true);
}

#[test]
fn actions_cache_corrupt_chunk_is_a_miss() {
    require_node();
    let data = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path());
    let main = job(&server, Api::V1, "refs/heads/main", root.path(), "main");
    write(&main.workspace.join("data/blob.bin"), &bytes(9, 1 << 20));
    assert!(main.save("k") > 0);
    for shard in std::fs::read_dir(data.path().join("chunks")).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            let mut raw = std::fs::read(&path).unwrap();
            let last = raw.len() - 1;
            raw[last] ^= 0x80;
            std::fs::write(&path, raw).unwrap();
        }
    }
    let fresh = job(&server, Api::V1, "refs/heads/main", root.path(), "fresh");
    // The download is cut short, so the client reports no hit and extracts nothing.
    assert_eq!(fresh.restore("k", &[]), None);
    assert!(!fresh.workspace.join("data/blob.bin").exists());
    assert_eq!(fresh.restore("k", &[]), None);
    assert!(main.save("k") > 0, "the key can be saved again");
}
