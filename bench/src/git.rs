//! Reading a repository's history and objects by spawning `git`: `log` for the commits, and one
//! long-lived `cat-file --batch` for trees and blobs, so no commit is ever checked out. A
//! checkout (even a cheap worktree) writes every changed file per commit and re-reads them to
//! hash; reading objects touches only the trees and blobs a key's patterns reach, and a blob's
//! digest is computed once for the whole replay (object ids are content addresses).

use crate::error::{BenchError, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

/// One commit of the replayed history.
#[derive(Clone, Debug)]
pub struct CommitInfo {
    pub oid: String,
    pub tree: String,
    pub parents: Vec<String>,
    /// Committer time, seconds since the epoch.
    pub time: i64,
    pub subject: String,
}

/// A repository and its object reader.
pub struct Repo {
    dir: PathBuf,
    objects: Mutex<Option<ObjectReader>>,
}

struct ObjectReader {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Repo {
    /// Opens the repository at `dir` (its work tree or a bare repository).
    pub fn open(dir: &Path) -> Result<Repo> {
        let repo = Repo {
            dir: dir.to_path_buf(),
            objects: Mutex::new(None),
        };
        repo.git(&["rev-parse", "--git-dir"])?;
        Ok(repo)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs git and returns its standard output.
    pub fn git(&self, args: &[&str]) -> Result<String> {
        let output = Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| BenchError::GitSpawn {
                repo: self.dir.clone(),
                args: args.join(" "),
                source,
            })?;
        if !output.status.success() {
            return Err(BenchError::Git {
                repo: self.dir.clone(),
                args: args.join(" "),
                message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        String::from_utf8(output.stdout).map_err(|_| BenchError::Git {
            repo: self.dir.clone(),
            args: args.join(" "),
            message: "its output is not UTF-8".into(),
        })
    }

    /// The commit a revision names.
    pub fn resolve(&self, rev: &str) -> Result<String> {
        Ok(self
            .git(&[
                "rev-parse",
                "--verify",
                "--end-of-options",
                &format!("{rev}^{{commit}}"),
            ])?
            .trim()
            .to_string())
    }

    /// Commits `git log` lists for `args` (revisions and options), oldest first.
    pub fn commits(&self, args: &[&str]) -> Result<Vec<CommitInfo>> {
        let mut full = vec!["log", "--format=%H%x00%T%x00%P%x00%ct%x00%s%x1e"];
        full.extend_from_slice(args);
        let text = self.git(&full)?;
        let mut commits = Vec::new();
        for record in text.split('\x1e') {
            let record = record.trim_start_matches('\n');
            if record.is_empty() {
                continue;
            }
            let fields: Vec<&str> = record.splitn(5, '\0').collect();
            let [oid, tree, parents, time, subject] = fields[..] else {
                return Err(BenchError::Git {
                    repo: self.dir.clone(),
                    args: full.join(" "),
                    message: format!("unexpected record {record:?}"),
                });
            };
            commits.push(CommitInfo {
                oid: oid.to_string(),
                tree: tree.to_string(),
                parents: parents.split_whitespace().map(str::to_string).collect(),
                time: time.trim().parse().unwrap_or(0),
                subject: subject.trim_end().to_string(),
            });
        }
        commits.reverse();
        Ok(commits)
    }

    /// Reads one object: its type and bytes. `Ok(None)` when it does not exist.
    pub fn read_object(&self, oid: &str) -> Result<Option<(String, Vec<u8>)>> {
        let mut guard = self.objects.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(self.start_reader()?);
        }
        let reader = guard.as_mut().expect("started above");
        let result = read_from(reader, oid);
        if result.is_err() {
            // The stream may be out of step now: start a fresh reader next time.
            *guard = None;
        }
        result.map_err(|e| BenchError::Git {
            repo: self.dir.clone(),
            args: "cat-file --batch".into(),
            message: e.to_string(),
        })
    }

    fn start_reader(&self) -> Result<ObjectReader> {
        let mut child = Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| BenchError::GitSpawn {
                repo: self.dir.clone(),
                args: "cat-file --batch".into(),
                source,
            })?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::with_capacity(1 << 16, child.stdout.take().expect("piped"));
        Ok(ObjectReader {
            child,
            stdin,
            stdout,
        })
    }
}

fn read_from(reader: &mut ObjectReader, oid: &str) -> std::io::Result<Option<(String, Vec<u8>)>> {
    if oid.is_empty() || !oid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    reader.stdin.write_all(oid.as_bytes())?;
    reader.stdin.write_all(b"\n")?;
    reader.stdin.flush()?;
    let mut header = String::new();
    reader.stdout.read_line(&mut header)?;
    let header = header.trim_end();
    if header.ends_with(" missing") || header.is_empty() {
        return Ok(None);
    }
    let mut parts = header.split(' ');
    let (_, kind, size) = (parts.next(), parts.next(), parts.next());
    let kind = kind.unwrap_or_default().to_string();
    let size: usize = size
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("unexpected header {header:?}")))?;
    let mut data = vec![0u8; size + 1];
    reader.stdout.read_exact(&mut data)?;
    data.pop();
    Ok(Some((kind, data)))
}
