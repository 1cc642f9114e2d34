//! The real `@actions/cache` npm client against kiln, over API v1 and v2: save, exact hit,
//! restore-key hit, miss, conflict on a second save, scope isolation, corruption.
//! Needs node and `cd tests/npm && npm ci` (done by .ci/run); fails loudly without them.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::{bytes, write, TestServer};

#[derive(Clone, Copy, Debug)]
enum Api {
    V1,
    V2,
}

fn npm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/npm")
}

fn require_node() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is not installed: install Node.js 20+, then run `cd tests/npm && npm ci`"
    );
    assert!(
        npm_dir()
            .join("node_modules/@actions/cache/package.json")
            .is_file(),
        "the npm client is missing: run `cd tests/npm && npm ci`"
    );
}

struct Job<'a> {
    server: &'a TestServer,
    api: Api,
    token: String,
    git_ref: String,
    workspace: PathBuf,
    temp: PathBuf,
}

impl Job<'_> {
    /// Runs the driver; returns its result and its whole output (for assertion messages).
    fn run_logged(&self, args: &[&str]) -> (serde_json::Value, String) {
        let mut cmd = Command::new("node");
        cmd.arg(npm_dir().join("driver.mjs"))
            .args(args)
            .current_dir(&self.workspace)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.temp)
            .env("GITHUB_WORKSPACE", &self.workspace)
            .env("RUNNER_TEMP", &self.temp)
            .env("GITHUB_REF", &self.git_ref)
            .env("GITHUB_SERVER_URL", "https://github.com")
            .env("ACTIONS_RUNTIME_TOKEN", &self.token)
            .env("CACHE_PATHS", "data")
            .env("RUNNER_DEBUG", "1");
        match self.api {
            Api::V1 => cmd.env("ACTIONS_CACHE_URL", format!("{}/", self.server.url)),
            Api::V2 => cmd
                .env("ACTIONS_RESULTS_URL", format!("{}/", self.server.url))
                .env("ACTIONS_CACHE_SERVICE_V2", "true"),
        };
        let out = cmd.output().expect("run node");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("KILN_RESULT "))
            .unwrap_or_else(|| {
                panic!(
                    "no result from node: {stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        (
            serde_json::from_str(line).unwrap(),
            format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        )
    }

    fn save(&self, key: &str) -> i64 {
        let (v, log) = self.run_logged(&["save", key]);
        eprintln!("save {key}:\n{log}");
        v["cacheId"]
            .as_i64()
            .unwrap_or_else(|| panic!("save {key}: {v}\n{log}"))
    }

    fn restore(&self, key: &str, restore_keys: &[&str]) -> Option<String> {
        let mut args = vec!["restore", key];
        args.extend_from_slice(restore_keys);
        let (v, log) = self.run_logged(&args);
        assert!(v.get("error").is_none(), "restore {key}: {v}\n{log}");
        // Shown by the test harness only when the test fails.
        eprintln!("restore {key}:\n{log}");
        v["matchedKey"].as_str().map(str::to_string)
    }
}

fn job<'a>(server: &'a TestServer, api: Api, git_ref: &str, root: &Path, name: &str) -> Job<'a> {
    let workspace = root.join(name).join("ws");
    let temp = root.join(name).join("tmp");
    std::fs::create_dir_all(&workspace).unwrap();
    std::fs::create_dir_all(&temp).unwrap();
    Job {
        server,
        api,
        token: server.token("o/r", git_ref, None, false),
        git_ref: git_ref.into(),
        workspace,
        temp,
    }
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
