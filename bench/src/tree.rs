//! A commit's tree as a [`FileSource`], so `hashFiles()` runs over git objects with the
//! workflow crate's own glob, order and digest code. Trees are parsed once per object id and
//! blob digests computed once per object id for the whole replay.
//!
//! As a checkout would show it: a submodule (gitlink) is an empty directory, a symbolic link
//! is resolved inside the tree. A link leading out of the repository cannot be read from git
//! objects: hashing through it is an error that says so.

use crate::error::{BenchError, Result};
use crate::git::Repo;
use kiln_workflow::hashfiles::{DirEntry, EntryKind, FileSource, HashFilesError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

const MODE_DIR: u32 = 0o040000;
const MODE_LINK: u32 = 0o120000;
const MODE_GITLINK: u32 = 0o160000;
/// Links followed while resolving one path (Linux's limit).
const MAX_LINKS: usize = 40;

#[derive(Clone, Debug)]
pub struct TreeEntry {
    pub name: Vec<u8>,
    pub mode: u32,
    pub oid: String,
}

impl TreeEntry {
    fn kind(&self) -> EntryKind {
        match self.mode & 0o170000 {
            MODE_DIR | MODE_GITLINK => EntryKind::Directory,
            MODE_LINK => EntryKind::Symlink,
            _ => EntryKind::File,
        }
    }
}

/// Object caches shared by every commit of a replay.
pub struct Objects {
    repo: Arc<Repo>,
    trees: Mutex<HashMap<String, Arc<Vec<TreeEntry>>>>,
    digests: Mutex<HashMap<String, [u8; 32]>>,
}

impl Objects {
    pub fn new(repo: Arc<Repo>) -> Objects {
        Objects {
            repo,
            trees: Mutex::default(),
            digests: Mutex::default(),
        }
    }

    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// The entries of a tree object.
    pub fn tree(&self, oid: &str) -> Result<Arc<Vec<TreeEntry>>> {
        if let Some(tree) = lock(&self.trees).get(oid) {
            return Ok(Arc::clone(tree));
        }
        let data = self.object(oid, "tree")?;
        let tree = Arc::new(parse_tree(oid, &data)?);
        lock(&self.trees).insert(oid.to_string(), Arc::clone(&tree));
        Ok(tree)
    }

    /// A blob's bytes.
    pub fn blob(&self, oid: &str) -> Result<Vec<u8>> {
        self.object(oid, "blob")
    }

    /// SHA-256 of a blob, computed once per object id.
    pub fn blob_sha256(&self, oid: &str) -> Result<[u8; 32]> {
        if let Some(d) = lock(&self.digests).get(oid) {
            return Ok(*d);
        }
        let digest: [u8; 32] = Sha256::digest(self.blob(oid)?).into();
        lock(&self.digests).insert(oid.to_string(), digest);
        Ok(digest)
    }

    fn object(&self, oid: &str, want: &str) -> Result<Vec<u8>> {
        match self.repo.read_object(oid)? {
            Some((kind, data)) if kind == want => Ok(data),
            Some((kind, _)) => Err(BenchError::BadObject {
                oid: oid.into(),
                reason: format!("expected a {want}, found a {kind}"),
            }),
            None => Err(BenchError::BadObject {
                oid: oid.into(),
                reason: "it is missing from the repository (a shallow or partial clone?)".into(),
            }),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `<mode> <name>\0<raw oid>` records; the oid length follows from the object id's hex length.
fn parse_tree(oid: &str, data: &[u8]) -> Result<Vec<TreeEntry>> {
    let raw_len = oid.len() / 2;
    let bad = |reason: &str| BenchError::BadObject {
        oid: oid.into(),
        reason: reason.into(),
    };
    let mut entries = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let space = data[at..]
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("an entry without a mode"))?;
        let mode = std::str::from_utf8(&data[at..at + space])
            .ok()
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .ok_or_else(|| bad("an entry with a bad mode"))?;
        at += space + 1;
        let nul = data[at..]
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| bad("an entry without a name"))?;
        let name = data[at..at + nul].to_vec();
        at += nul + 1;
        let raw = data
            .get(at..at + raw_len)
            .ok_or_else(|| bad("an entry cut short"))?;
        at += raw_len;
        entries.push(TreeEntry {
            name,
            mode,
            oid: raw.iter().map(|b| format!("{b:02x}")).collect(),
        });
    }
    Ok(entries)
}

/// One commit's tree, seen as a checkout at `cwd`.
pub struct CommitTree<'a> {
    objects: &'a Objects,
    root: String,
    cwd: String,
}

/// What a path leads to and its path with links resolved.
struct Resolved {
    kind: EntryKind,
    oid: String,
    real: String,
}

fn other(message: String) -> io::Error {
    io::Error::other(message)
}

impl<'a> CommitTree<'a> {
    pub fn new(objects: &'a Objects, root_tree: &str, cwd: &str) -> CommitTree<'a> {
        CommitTree {
            objects,
            root: root_tree.to_string(),
            cwd: cwd.trim_end_matches('/').to_string(),
        }
    }

    pub fn cwd(&self) -> &str {
        &self.cwd
    }

    /// The blob id of a file, resolving links, for key-change explanations.
    pub fn blob_of(&self, path: &str) -> Option<String> {
        self.resolve(path, true, 0)
            .ok()
            .filter(|r| r.kind == EntryKind::File)
            .map(|r| r.oid)
    }

    /// The files (path relative to the workspace, blob id) a `path:` line of a cache step names
    /// when it is tracked in this commit: the file itself, or every file below the directory,
    /// in name order. None when the path is not in the tree (built output, `~`, globs...).
    /// Links are not followed (the cache keeps them as links).
    pub fn tracked_files(&self, line: &str) -> Option<Vec<(String, String)>> {
        let rel = line.trim().trim_start_matches("./").trim_end_matches('/');
        if rel.is_empty()
            || rel.starts_with(['~', '/', '!'])
            || rel.contains(['*', '?', '[', '{'])
            || rel.split('/').any(|c| c == "..")
        {
            return None;
        }
        let found = self
            .resolve(&format!("{}/{rel}", self.cwd), false, 0)
            .ok()?;
        let mut files = Vec::new();
        match found.kind {
            EntryKind::File => files.push((rel.to_string(), found.oid)),
            EntryKind::Directory => self.collect(rel, &found, &mut files).ok()?,
            _ => return None,
        }
        Some(files)
    }

    fn collect(
        &self,
        rel: &str,
        dir: &Resolved,
        out: &mut Vec<(String, String)>,
    ) -> io::Result<()> {
        let mut entries: Vec<TreeEntry> = self.entries_of(dir)?.to_vec();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for entry in entries {
            let path = format!("{rel}/{}", String::from_utf8_lossy(&entry.name));
            match (entry.kind(), entry.mode & 0o170000 == MODE_GITLINK) {
                (EntryKind::File, _) => out.push((path, entry.oid)),
                (EntryKind::Directory, false) => {
                    let sub = Resolved {
                        kind: EntryKind::Directory,
                        oid: entry.oid,
                        real: String::new(),
                    };
                    self.collect(&path, &sub, out)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn resolve(&self, path: &str, follow_last: bool, depth: usize) -> io::Result<Resolved> {
        let relative = if path == self.cwd {
            ""
        } else {
            path.strip_prefix(&self.cwd)
                .and_then(|p| p.strip_prefix('/'))
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?
        };
        let components: Vec<&str> = relative.split('/').filter(|c| !c.is_empty()).collect();
        let mut current = Resolved {
            kind: EntryKind::Directory,
            oid: self.root.clone(),
            real: self.cwd.clone(),
        };
        for (i, name) in components.iter().enumerate() {
            let last = i + 1 == components.len();
            if *name == "." {
                continue;
            }
            if *name == ".." {
                return self.resolve(
                    &normalize(&format!("{}/{}", current.real, components[i..].join("/")))?,
                    follow_last,
                    depth + 1,
                );
            }
            if current.kind != EntryKind::Directory {
                return Err(io::Error::from(io::ErrorKind::NotADirectory));
            }
            let entries = self.entries_of(&current)?;
            let entry = entries
                .iter()
                .find(|e| e.name == name.as_bytes())
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            let here = format!("{}/{name}", current.real);
            if entry.kind() == EntryKind::Symlink && (!last || follow_last) {
                if depth >= MAX_LINKS {
                    return Err(other(format!(
                        "too many levels of symbolic links at {here}"
                    )));
                }
                let target = self
                    .objects
                    .blob(&entry.oid)
                    .map_err(|e| other(e.to_string()))?;
                let target = String::from_utf8(target).map_err(|_| {
                    other(format!("the link {here} has a target that is not UTF-8"))
                })?;
                let joined = if target.starts_with('/') {
                    target
                } else {
                    format!("{}/{target}", current.real)
                };
                let rest = components[i + 1..].join("/");
                let next = if rest.is_empty() {
                    joined
                } else {
                    format!("{joined}/{rest}")
                };
                let next = normalize(&next)?;
                if next != self.cwd && !next.starts_with(&format!("{}/", self.cwd)) {
                    return Err(other(format!(
                        "the symbolic link {here} leads out of the repository ({next}), which git objects cannot show"
                    )));
                }
                return self.resolve(&next, follow_last, depth + 1);
            }
            current = Resolved {
                kind: entry.kind(),
                oid: if entry.mode & 0o170000 == MODE_GITLINK {
                    String::new()
                } else {
                    entry.oid.clone()
                },
                real: here,
            };
        }
        Ok(current)
    }

    fn entries_of(&self, dir: &Resolved) -> io::Result<Arc<Vec<TreeEntry>>> {
        if dir.oid.is_empty() {
            // A submodule: an empty directory in a checkout without its contents.
            return Ok(Arc::new(Vec::new()));
        }
        self.objects
            .tree(&dir.oid)
            .map_err(|e| other(e.to_string()))
    }
}

/// Removes `.` and `..` components of an absolute path.
fn normalize(path: &str) -> io::Result<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

impl FileSource for CommitTree<'_> {
    fn lstat(&self, path: &str) -> io::Result<EntryKind> {
        Ok(self.resolve(path, false, 0)?.kind)
    }

    fn stat(&self, path: &str) -> io::Result<EntryKind> {
        Ok(self.resolve(path, true, 0)?.kind)
    }

    fn read_dir(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        let dir = self.resolve(path, true, 0)?;
        if dir.kind != EntryKind::Directory {
            return Err(io::Error::from(io::ErrorKind::NotADirectory));
        }
        Ok(self
            .entries_of(&dir)?
            .iter()
            .map(|e| DirEntry {
                name: e.name.clone(),
                kind: Some(e.kind()),
            })
            .collect())
    }

    fn real_path(&self, path: &str) -> io::Result<String> {
        Ok(self.resolve(path, true, 0)?.real)
    }

    fn sha256(
        &self,
        path: &str,
        _buffer: &mut [u8],
        _deadline: Instant,
    ) -> Result<[u8; 32], HashFilesError> {
        let failed = |action, source| HashFilesError::Io {
            action,
            path: PathBuf::from(path),
            source,
        };
        let file = self.resolve(path, true, 0).map_err(|e| failed("open", e))?;
        if file.kind != EntryKind::File {
            return Err(failed("read", io::Error::from(io::ErrorKind::IsADirectory)));
        }
        self.objects
            .blob_sha256(&file.oid)
            .map_err(|e| failed("read", other(e.to_string())))
    }
}
