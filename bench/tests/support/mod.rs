//! A throw-away git repository whose commits the tests write file by file, with fixed dates so
//! the replay order is known.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestRepo {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    clock: i64,
}

impl TestRepo {
    pub fn new() -> TestRepo {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("repo");
        std::fs::create_dir(&path).unwrap();
        let repo = TestRepo {
            _dir: dir,
            path,
            clock: 1_700_000_000,
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    pub fn git(&self, args: &[&str]) -> String {
        let date = format!("{} +0000", self.clock);
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.path)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn write(&self, file: &str, text: &str) {
        let path = self.path.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub fn symlink(&self, target: &str, link: &str) {
        let path = self.path.join(link);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, path).unwrap();
    }

    /// Commits everything, a minute after the previous commit; returns the commit id.
    pub fn commit(&mut self, message: &str) -> String {
        self.clock += 60;
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    /// A merge commit (never fast-forward).
    pub fn merge(&mut self, branch: &str) -> String {
        self.clock += 60;
        self.git(&[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            &format!("merge {branch}"),
            branch,
        ]);
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    /// The tree of `rev` unpacked into `dir`, as a checkout would leave it.
    pub fn export(&self, rev: &str, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let archive = Command::new("git")
            .arg("-C")
            .arg(&self.path)
            .args(["archive", rev])
            .output()
            .unwrap();
        assert!(archive.status.success());
        let mut tar = Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(dir)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        tar.stdin
            .take()
            .unwrap()
            .write_all(&archive.stdout)
            .unwrap();
        assert!(tar.wait().unwrap().success());
    }
}

/// A workflow caching `target` on `hashFiles('**/Cargo.lock')` with a restore key.
pub const CARGO_WORKFLOW: &str = r#"name: ci
on: [push, pull_request]
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: cargo cache
        uses: actions/cache@v4
        with:
          path: |
            ~/.cargo/registry
            target
          key: ${{ runner.os }}-cargo-${{ hashFiles('**/Cargo.lock') }}
          restore-keys: |
            ${{ runner.os }}-cargo-
      - run: cargo test
"#;
