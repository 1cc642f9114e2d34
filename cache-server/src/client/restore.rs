//! Restore: look the keys up, then fetch, verify and write the files with a pool of threads
//! (see `write`; file creation, not bandwidth, dominates on real filesystems). Files that
//! already exist with the same size and digest are left alone and their chunks not fetched.

use super::beneath::Beneath;
use super::fetch::OrderedFetch;
use super::glob::parse_patterns;
use super::tree::{self, FileDigest, Kind, PieceHasher, TreeEntry};
use super::write::{write_files, FilePlan, ParentDir};
use super::{CacheClient, PathContext};
use crate::digest::ChunkRef;
use crate::error::{CacheError, Result};
use crate::http::native::to_refs;
use crate::unpack::{check_symlink_target, clear_path, safe_relative, LinkGuard};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

/// Threads that compare files already present with the listing (reading and hashing them).
const COMPARE_THREADS: usize = 4;
/// Threads creating directories of one depth at once.
const MKDIR_THREADS: usize = 4;

#[derive(Clone, Debug)]
pub struct RestoreRequest {
    pub key: String,
    pub restore_keys: Vec<String>,
    pub paths: Vec<String>,
    pub context: PathContext,
    /// Defaults to [`super::tree_version`] of `paths`.
    pub version: Option<String>,
    /// Only check whether an entry exists (`lookup-only`).
    pub lookup_only: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreStats {
    pub files_written: u64,
    /// Files already present with the same content.
    pub files_skipped: u64,
    pub bytes_written: u64,
    pub chunks_fetched: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreOutcome {
    Miss,
    Hit {
        /// The key of the entry found, in its original case.
        matched_key: String,
        /// `cache-hit`: the primary key matched exactly (case-insensitively).
        exact: bool,
        stats: RestoreStats,
    },
    /// The entry's data was corrupt on the server, which dropped it: treat as a miss. Files
    /// written before the corruption was found hold only verified bytes.
    Corrupt(String),
}

/// What is at a file's destination before the restore writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    Nothing,
    /// A file with the listing's size and digest: left alone.
    Same,
    /// Anything else (other bytes, a directory, a symlink): replaced.
    Other,
}

/// Where a file's pieces are: `cuts` are the offsets inside the file where the entry's chunks
/// end, and whether the file starts and ends on a chunk boundary (which makes its first and
/// last pieces whole chunks).
#[derive(Clone, Debug, Default)]
struct PieceLayout {
    cuts: Vec<u64>,
    starts_at_chunk: bool,
    ends_at_chunk: bool,
}

impl PieceLayout {
    /// The layout of the file at `[offset, offset + size)` of an entry whose chunks end at
    /// `chunk_ends` (ascending).
    fn of(chunk_ends: &[u64], offset: u64, size: u64) -> Self {
        let end = offset + size;
        let first = chunk_ends.partition_point(|&c| c <= offset);
        PieceLayout {
            cuts: chunk_ends[first..]
                .iter()
                .take_while(|&&c| c < end)
                .map(|&c| c - offset)
                .collect(),
            starts_at_chunk: offset == 0 || chunk_ends.binary_search(&offset).is_ok(),
            ends_at_chunk: chunk_ends.binary_search(&end).is_ok(),
        }
    }

    fn whole_chunk(&self, piece: usize) -> bool {
        (piece > 0 || self.starts_at_chunk) && (piece < self.cuts.len() || self.ends_at_chunk)
    }
}

/// What is at `path`, compared with a file of `size` bytes and the listing's digest.
fn compare_found(
    path: &Path,
    size: u64,
    expected: &[u8; 32],
    kind: FileDigest,
    layout: &PieceLayout,
) -> Found {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Found::Nothing;
    };
    if meta.is_file() && meta.len() == size && same_content(path, size, expected, kind, layout) {
        Found::Same
    } else {
        Found::Other
    }
}

/// Whether the regular file at `path`, of `size` bytes, has the listing's digest.
fn same_content(
    path: &Path,
    size: u64,
    expected: &[u8; 32],
    kind: FileDigest,
    layout: &PieceLayout,
) -> bool {
    // The stat saw a regular file; whatever replaced it since is not followed or waited on.
    let Ok(mut f) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return false;
    };
    let by_pieces = kind.by_pieces();
    let mut piece = 0usize;
    let mut hasher = PieceHasher::new(kind, layout.whole_chunk(piece));
    let mut pieces = Vec::with_capacity(layout.cuts.len() + 1);
    let mut next_cut = layout.cuts.iter().copied().peekable();
    let mut pos = 0u64;
    // Sized to the file: a full buffer per small file would zero 256 KiB for a few bytes.
    let mut buf = vec![0u8; (size as usize).clamp(1, 256 * 1024)];
    while pos < size {
        let n = match f.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n.min((size - pos) as usize),
        };
        let mut data = &buf[..n];
        while !data.is_empty() {
            let room = match next_cut.peek() {
                Some(&cut) if by_pieces => (cut - pos) as usize,
                _ => data.len(),
            };
            let take = room.min(data.len());
            hasher.update(&data[..take]);
            data = &data[take..];
            pos += take as u64;
            if by_pieces && next_cut.peek() == Some(&pos) {
                next_cut.next();
                pieces.push(hasher.finish());
                piece += 1;
                hasher = PieceHasher::new(kind, layout.whole_chunk(piece));
            }
        }
    }
    let digest = if by_pieces {
        if size > 0 {
            pieces.push(hasher.finish());
        }
        tree::piece_digest(pieces)
    } else {
        hasher.finish()
    };
    digest == *expected
}

/// `unpack::clear_path`, inside the anchor when confined.
fn clear(beneath: Option<&Arc<Beneath>>, path: &Path) -> Result<()> {
    match beneath {
        Some(b) => b.clear(path),
        None => clear_path(path),
    }
}

fn create_dir_all(beneath: Option<&Arc<Beneath>>, dir: &Path) -> Result<()> {
    match beneath {
        Some(b) => b.create_dir_all(dir),
        None => fs::create_dir_all(dir).map_err(|e| CacheError::io("create", dir, e)),
    }
}

fn path_bytes(path: &Path) -> &[u8] {
    path.as_os_str().as_encoded_bytes()
}

/// The bytes of `path`'s parent, for the clean absolute paths a plan builds (a root joined with
/// a checked relative path): everything before the last `/`.
fn parent_bytes(path: &Path) -> Option<&[u8]> {
    let bytes = path_bytes(path);
    match bytes.iter().rposition(|&b| b == b'/') {
        Some(0) if bytes.len() > 1 => Some(&bytes[..1]),
        Some(0) | None => None,
        Some(i) => Some(&bytes[..i]),
    }
}

fn depth(path: &Path) -> usize {
    path_bytes(path).iter().filter(|&&b| b == b'/').count()
}

/// Creates directories inside directories this restore created, shallowest first, each depth
/// on several threads: mkdir allocates an inode, which on a well-used ext4 costs as much as a
/// file create, and a tree has thousands of directories. A thread takes all the new children
/// of one parent at a time: creating entries locks the parent directory, so threads spread
/// over different parents instead of spinning on one parent's lock.
fn make_fresh_dirs(mut dirs: Vec<&Path>, beneath: Option<&Arc<Beneath>>) -> Result<()> {
    // Depth, then parent: each key computed once (comparing `Path`s parses their components).
    dirs.sort_by_cached_key(|d| (depth(d), parent_bytes(d)));
    let mut rest = dirs.as_slice();
    while let Some(first) = rest.first() {
        let level_depth = depth(first);
        let level = rest.partition_point(|d| depth(d) == level_depth);
        let (now, later) = rest.split_at(level);
        rest = later;
        let mut siblings: Vec<&[&Path]> = Vec::new();
        let mut group = now;
        while let Some(head) = group.first() {
            let head_parent = parent_bytes(head);
            let n = group.partition_point(|d| parent_bytes(d) == head_parent);
            let (same_parent, others) = group.split_at(n);
            siblings.push(same_parent);
            group = others;
        }
        let next = AtomicUsize::new(0);
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..MKDIR_THREADS.min(siblings.len()))
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        let mut parent = ParentDir::confined(beneath.cloned());
                        while let Some(group) = siblings.get(next.fetch_add(1, Ordering::Relaxed)) {
                            for dir in *group {
                                match parent.mkdir(dir) {
                                    Ok(()) => {}
                                    // A file's parent created on the way (create_dir_all).
                                    Err(e)
                                        if e.kind() == std::io::ErrorKind::AlreadyExists
                                            && fs::symlink_metadata(dir)
                                                .is_ok_and(|m| m.is_dir()) => {}
                                    Err(e) => return Err(CacheError::io("create", dir, e)),
                                }
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(CacheError::Task("a mkdir thread panicked".into())))
                })
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
    }
    Ok(())
}

pub(super) fn is_corruption(e: &CacheError) -> bool {
    matches!(
        e,
        CacheError::ServerStatus { status: 410, .. } | CacheError::CorruptChunk { .. }
    )
}

impl CacheClient {
    pub fn restore(&self, req: &RestoreRequest) -> Result<RestoreOutcome> {
        let patterns = parse_patterns(
            &req.paths,
            &req.context.workspace,
            req.context.home.as_deref(),
        )?;
        let version = req
            .version
            .clone()
            .unwrap_or_else(|| super::tree_version(&req.paths));
        let mut keys = vec![req.key.clone()];
        keys.extend(
            req.restore_keys
                .iter()
                .filter(|k| !k.trim().is_empty())
                .cloned(),
        );
        let hit = self.lookup(&keys, &version)?;
        if !hit.hit {
            return Ok(RestoreOutcome::Miss);
        }
        let exact = hit.exact;
        let matched_key = hit.key.clone();
        if req.lookup_only {
            return Ok(RestoreOutcome::Hit {
                matched_key,
                exact,
                stats: RestoreStats::default(),
            });
        }
        let chunks = to_refs(&hit.chunks)?;
        let beneath = if req.context.confine {
            Some(Arc::new(Beneath::open(&req.context.workspace)?))
        } else {
            None
        };
        let result = if hit.kind == "archive" {
            if beneath.is_some() {
                return Err(CacheError::Protocol(
                    "an archive saved by stock actions/cache is not restored into a confined workspace; save it with kiln's client".into(),
                ));
            }
            self.restore_archive(&chunks, &req.context.workspace)
        } else {
            let meta = STANDARD
                .decode(hit.meta.as_bytes())
                .map_err(|_| CacheError::Protocol("tree listing is not base64".into()))?;
            let (listing, digest_kind) = tree::decode(&meta)?;
            self.restore_tree(
                &listing,
                digest_kind,
                &chunks,
                &tree::roots(&patterns),
                beneath.as_ref(),
            )
        };
        match result {
            Ok(stats) => Ok(RestoreOutcome::Hit {
                matched_key,
                exact,
                stats,
            }),
            Err(e) if is_corruption(&e) => Ok(RestoreOutcome::Corrupt(e.to_string())),
            Err(e) => Err(e),
        }
    }

    /// Entries saved by stock `actions/cache` (tar + zstd, paths relative to the workspace).
    fn restore_archive(&self, chunks: &[ChunkRef], workspace: &Path) -> Result<RestoreStats> {
        struct ChunkReader {
            fetch: OrderedFetch,
            current: Vec<u8>,
            pos: usize,
            error: Arc<Mutex<Option<CacheError>>>,
        }
        impl Read for ChunkReader {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                while self.pos == self.current.len() {
                    match self.fetch.next() {
                        None => return Ok(0),
                        Some((_, Ok(data))) => {
                            self.current = data;
                            self.pos = 0;
                        }
                        Some((_, Err(e))) => {
                            let msg = e.to_string();
                            if let Ok(mut slot) = self.error.lock() {
                                *slot = Some(e);
                            }
                            return Err(std::io::Error::other(msg));
                        }
                    }
                }
                let n = buf.len().min(self.current.len() - self.pos);
                buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
                self.pos += n;
                Ok(n)
            }
        }
        let error = Arc::new(Mutex::new(None));
        let reader = ChunkReader {
            fetch: OrderedFetch::start(self, chunks, &vec![true; chunks.len()]),
            current: Vec::new(),
            pos: 0,
            error: Arc::clone(&error),
        };
        let decoder = zstd::stream::read::Decoder::new(reader)
            .map_err(|e| CacheError::Protocol(format!("archive is not zstd: {e}")))?;
        let result = crate::unpack::unpack_tar(decoder, workspace);
        if let Some(e) = error.lock().ok().and_then(|mut s| s.take()) {
            return Err(e);
        }
        let s = result?;
        Ok(RestoreStats {
            files_written: s.files,
            files_skipped: 0,
            bytes_written: s.bytes,
            chunks_fetched: chunks.len() as u64,
        })
    }

    /// Checks the whole listing before touching the disk: roots exist, paths stay inside their
    /// root, nothing is written through a symlink of the entry, symlinks point inside.
    fn plan_tree(listing: &[TreeEntry], roots: &[PathBuf]) -> Result<Vec<PathBuf>> {
        let mut guards: HashMap<u32, LinkGuard> = HashMap::new();
        let mut dests = Vec::with_capacity(listing.len());
        for e in listing {
            let root =
                roots
                    .get(e.root as usize)
                    .ok_or_else(|| CacheError::UnsafeArchiveEntry {
                        entry: e.rel.clone(),
                        reason: format!(
                            "it names path pattern {} but only {} are given",
                            e.root,
                            roots.len()
                        ),
                    })?;
            let rel = safe_relative(&e.rel)?;
            if e.kind == Kind::Symlink {
                if rel.as_os_str().is_empty() {
                    return Err(CacheError::UnsafeArchiveEntry {
                        entry: root.display().to_string(),
                        reason: "a cached path that is itself a symlink is not restored".into(),
                    });
                }
                check_symlink_target(&e.rel, &rel, Path::new(&e.link))?;
                guards.entry(e.root).or_default().add(rel.clone());
            }
            dests.push(if rel.as_os_str().is_empty() {
                root.clone()
            } else {
                root.join(&rel)
            });
        }
        for e in listing {
            if let Some(g) = guards.get(&e.root) {
                g.check(&e.rel, &safe_relative(&e.rel)?)?;
            }
        }
        Ok(dests)
    }

    fn restore_tree(
        &self,
        listing: &[TreeEntry],
        digest_kind: FileDigest,
        chunks: &[ChunkRef],
        roots: &[PathBuf],
        beneath: Option<&Arc<Beneath>>,
    ) -> Result<RestoreStats> {
        let dests = Self::plan_tree(listing, roots)?;
        let total: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
        let listed: u64 = listing
            .iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| e.size)
            .sum();
        if total != listed {
            return Err(CacheError::Protocol(format!(
                "entry holds {total} bytes but its listing {listed}"
            )));
        }
        let chunk_ends: Vec<u64> = chunks
            .iter()
            .scan(0u64, |end, c| {
                *end += u64::from(c.len);
                Some(*end)
            })
            .collect();
        let mut stats = RestoreStats::default();
        // Directories made so far, and whether each was created empty by this restore: nothing
        // can exist in those yet, which saves a stat per file on the common restore into a
        // fresh workspace.
        // Keyed by the path's bytes: hashing a `Path` walks its components, and this map is
        // consulted once or more per entry, before any thread starts writing.
        let mut made_dirs: HashMap<&[u8], bool> = HashMap::new();
        let mut fresh_dirs: Vec<&Path> = Vec::new();
        let mut files = Vec::new();
        // Files that may be on disk already, to compare with the listing: (index in files, piece
        // layout, digest).
        let mut present: Vec<(usize, PieceLayout, [u8; 32])> = Vec::new();
        let mut offset = 0u64;
        for (e, dest) in listing.iter().zip(&dests) {
            match e.kind {
                Kind::Dir => {
                    let key = path_bytes(dest);
                    let parent_fresh = parent_bytes(dest)
                        .and_then(|p| made_dirs.get(p))
                        .copied()
                        .unwrap_or(false);
                    if parent_fresh && !made_dirs.contains_key(key) {
                        // Nothing can be there yet: one mkdir, no stat, made below in parallel.
                        fresh_dirs.push(dest);
                        made_dirs.insert(key, true);
                    } else if !made_dirs.contains_key(key) {
                        let fresh = match fs::symlink_metadata(dest) {
                            Ok(m) if m.is_dir() => false,
                            Ok(_) => {
                                clear(beneath, dest)?;
                                true
                            }
                            Err(_) => true,
                        };
                        create_dir_all(beneath, dest)?;
                        made_dirs.insert(key, fresh);
                    }
                }
                Kind::File => {
                    let mut in_fresh_dir = false;
                    if let (Some(parent), Some(key)) = (dest.parent(), parent_bytes(dest)) {
                        in_fresh_dir = match made_dirs.get(key) {
                            Some(fresh) => *fresh,
                            None => {
                                let fresh = fs::symlink_metadata(parent).is_err();
                                create_dir_all(beneath, parent)?;
                                made_dirs.insert(key, fresh);
                                fresh
                            }
                        };
                    }
                    // Outside fresh directories something may be there already: the compare
                    // threads look (a stat here would put one per file on this thread).
                    if !in_fresh_dir {
                        let layout = PieceLayout::of(&chunk_ends, offset, e.size);
                        present.push((files.len(), layout, e.blake3));
                    }
                    let mtime = u64::try_from(e.mtime_secs)
                        .ok()
                        .map(|s| UNIX_EPOCH + Duration::new(s, e.mtime_nanos));
                    files.push(FilePlan {
                        dest: dest.clone(),
                        start: offset,
                        size: e.size,
                        mode: e.mode,
                        mtime,
                        skip: false,
                        exists: false,
                    });
                    offset += e.size;
                }
                Kind::Symlink => {}
            }
        }
        make_fresh_dirs(fresh_dirs, beneath)?;
        // Reading and hashing files already present is the whole cost of restoring over an
        // identical tree: spread it over threads.
        let found: Vec<Found> = {
            let next = AtomicUsize::new(0);
            let results = Mutex::new(vec![Found::Other; present.len()]);
            std::thread::scope(|scope| {
                for _ in 0..COMPARE_THREADS.min(present.len()) {
                    scope.spawn(|| loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((fi, layout, digest)) = present.get(i) else {
                            return;
                        };
                        let f: &FilePlan = &files[*fi];
                        let found = compare_found(&f.dest, f.size, digest, digest_kind, layout);
                        if let Ok(mut r) = results.lock() {
                            r[i] = found;
                        }
                    });
                }
            });
            results.into_inner().unwrap_or_else(|p| p.into_inner())
        };
        for ((fi, _, _), found) in present.iter().zip(found) {
            files[*fi].skip = found == Found::Same;
            files[*fi].exists = found == Found::Other;
        }
        stats.files_skipped = files.iter().filter(|f| f.skip).count() as u64;
        let written = write_files(self, &files, chunks, beneath)?;
        stats.files_written = written.files;
        stats.bytes_written = written.bytes;
        stats.chunks_fetched = written.chunks;
        for (e, dest) in listing.iter().zip(&dests) {
            if e.kind == Kind::Symlink {
                match beneath {
                    Some(b) => {
                        b.remove_all(dest)?;
                        b.symlink(Path::new(&e.link), dest)?;
                    }
                    None => {
                        if fs::symlink_metadata(dest).is_ok_and(|m| m.is_dir()) {
                            fs::remove_dir_all(dest)
                                .map_err(|err| CacheError::io("replace", dest, err))?;
                        }
                        clear_path(dest)?;
                        std::os::unix::fs::symlink(&e.link, dest)
                            .map_err(|err| CacheError::io("create symlink", dest, err))?;
                    }
                }
            }
        }
        for (e, dest) in listing.iter().zip(&dests).rev() {
            if e.kind == Kind::Dir {
                match beneath {
                    Some(b) => b.set_dir_mode(dest, e.mode | 0o700)?,
                    None => fs::set_permissions(dest, fs::Permissions::from_mode(e.mode | 0o700))
                        .map_err(|err| CacheError::io("set mode of", dest, err))?,
                }
            }
        }
        Ok(stats)
    }
}

#[cfg(test)]
#[path = "restore_tests.rs"]
mod tests;
