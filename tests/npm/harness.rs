//! Drives the stock `@actions/cache` npm client (`driver.mjs`) as a job would, against any
//! cache server URL. Shared by cache-server/tests/npm_client.rs and tests/cache_stats.rs
//! (each includes this file with `#[path]`). Needs node and `cd tests/npm && npm ci` (done by
//! .ci/run); fails loudly without them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone, Copy, Debug)]
pub enum Api {
    V1,
    V2,
}

pub fn npm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|dir| dir.join("tests/npm/driver.mjs").is_file())
        .expect("tests/npm/driver.mjs above the crate")
        .join("tests/npm")
}

pub fn require_node() {
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

/// One job's view: its server, API, token, ref, workspace (whose `data` folder is cached) and
/// temporary folder.
pub struct NpmJob {
    pub url: String,
    pub api: Api,
    pub token: String,
    pub git_ref: String,
    pub workspace: PathBuf,
    pub temp: PathBuf,
}

impl NpmJob {
    /// A job with its own folders under `root/name`.
    pub fn new(url: &str, api: Api, token: String, git_ref: &str, root: &Path, name: &str) -> Self {
        let workspace = root.join(name).join("ws");
        let temp = root.join(name).join("tmp");
        std::fs::create_dir_all(&workspace).unwrap();
        std::fs::create_dir_all(&temp).unwrap();
        NpmJob {
            url: url.trim_end_matches('/').to_string(),
            api,
            token,
            git_ref: git_ref.into(),
            workspace,
            temp,
        }
    }

    /// Runs the driver; returns its result and its whole output (for assertion messages).
    pub fn run_logged(&self, args: &[&str]) -> (serde_json::Value, String) {
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
            Api::V1 => cmd.env("ACTIONS_CACHE_URL", format!("{}/", self.url)),
            Api::V2 => cmd
                .env("ACTIONS_RESULTS_URL", format!("{}/", self.url))
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

    /// Saves the workspace's `data` folder under `key`; the cache id (-1 on a conflict).
    pub fn save(&self, key: &str) -> i64 {
        let (v, log) = self.run_logged(&["save", key]);
        eprintln!("save {key}:\n{log}");
        v["cacheId"]
            .as_i64()
            .unwrap_or_else(|| panic!("save {key}: {v}\n{log}"))
    }

    /// Restores into the workspace; the key matched, if any.
    pub fn restore(&self, key: &str, restore_keys: &[&str]) -> Option<String> {
        let mut args = vec!["restore", key];
        args.extend_from_slice(restore_keys);
        let (v, log) = self.run_logged(&args);
        assert!(v.get("error").is_none(), "restore {key}: {v}\n{log}");
        // Shown by the test harness only when the test fails.
        eprintln!("restore {key}:\n{log}");
        v["matchedKey"].as_str().map(str::to_string)
    }
}
