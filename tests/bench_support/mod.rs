//! A small repository whose history `kiln bench cache` replays with known outcomes, for the
//! command's end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn git(dir: &Path, args: &[&str], clock: i64) {
    let date = format!("{clock} +0000");
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

pub const WORKFLOW: &str = r#"on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - name: cargo cache
        uses: actions/cache@v4
        with:
          path: target
          key: ${{ runner.os }}-cargo-${{ hashFiles('Cargo.lock') }}
          restore-keys: ${{ runner.os }}-cargo-
"#;

/// The outcomes [`lockfile_history`] replays to, oldest first.
pub const OUTCOMES: [&str; 5] = ["miss", "exact", "restore-key", "exact", "restore-key"];

/// `DIR/repo` on branch main: five commits of [`WORKFLOW`] whose Cargo.lock reads a, a, b, b, c.
pub fn lockfile_history(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"], 0);
    std::fs::create_dir_all(repo.join(".github/workflows")).unwrap();
    std::fs::write(repo.join(".github/workflows/ci.yml"), WORKFLOW).unwrap();
    for (i, lock) in ["a", "a", "b", "b", "c"].iter().enumerate() {
        std::fs::write(repo.join("Cargo.lock"), lock).unwrap();
        std::fs::write(repo.join("n.txt"), i.to_string()).unwrap();
        let clock = 1_700_000_000 + 60 * i as i64;
        git(&repo, &["add", "-A"], clock);
        git(&repo, &["commit", "-qm", &format!("c{i}")], clock);
    }
    repo
}
