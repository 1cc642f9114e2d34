//! Restore: look the keys up, then fetch, verify and write the files with a pool of threads
//! (see `write`; file creation, not bandwidth, dominates on real filesystems). Files that
//! already exist with the same size and digest are left alone and their chunks not fetched.

use super::fetch::OrderedFetch;
use super::glob::parse_patterns;
use super::tree::{self, FileDigest, Kind, PieceHasher, TreeEntry};
use super::write::{write_files, FilePlan};
use super::{CacheClient, PathContext};
use crate::beneath::{check_link_target, Beneath, ParentDir};
use crate::digest::ChunkRef;
use crate::error::{CacheError, Result};
use crate::http::native::to_refs;
use crate::unpack::safe_relative;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Read;
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

/// What is at `path`, compared with a file of `size` bytes and the listing's digest. Looked at
/// through `dir` (no symlink followed on the way): a path the restore could not write is never
/// taken as already restored.
fn compare_found(
    dir: &mut ParentDir,
    path: &Path,
    size: u64,
    expected: &[u8; 32],
    kind: FileDigest,
    layout: &PieceLayout,
) -> Found {
    let st = match dir.stat(path) {
        Ok(None) => return Found::Nothing,
        Ok(Some(st)) => st,
        Err(_) => return Found::Other,
    };
    let is_file = st.st_mode & libc::S_IFMT == libc::S_IFREG;
    if !is_file || st.st_size as u64 != size {
        return Found::Other;
    }
    // The stat saw a regular file; whatever replaced it since is not followed or waited on.
    match dir.open_read(path) {
        Ok(f) if same_content(&f, size, expected, kind, layout) => Found::Same,
        _ => Found::Other,
    }
}

/// Whether the open file `f`, of `size` bytes, has the listing's digest.
fn same_content(
    mut f: &File,
    size: u64,
    expected: &[u8; 32],
    kind: FileDigest,
    layout: &PieceLayout,
) -> bool {
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
fn make_fresh_dirs(mut dirs: Vec<&Path>, beneath: &Arc<Beneath>) -> Result<()> {
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
                        let mut parent = ParentDir::new(Arc::clone(beneath));
                        while let Some(group) = siblings.get(next.fetch_add(1, Ordering::Relaxed)) {
                            for dir in *group {
                                match parent.mkdir(dir) {
                                    Ok(()) => {}
                                    // A file's parent created on the way (create_dir_all).
                                    Err(CacheError::Io { source, .. })
                                        if source.kind() == std::io::ErrorKind::AlreadyExists
                                            && fs::symlink_metadata(dir)
                                                .is_ok_and(|m| m.is_dir()) => {}
                                    Err(e) => return Err(e),
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
        let result = if hit.kind == "archive" {
            // Paths in an archive are relative to the workspace, as actions/cache writes them.
            self.restore_archive(&chunks, &req.context.workspace)
        } else {
            let meta = STANDARD
                .decode(hit.meta.as_bytes())
                .map_err(|_| CacheError::Protocol("tree listing is not base64".into()))?;
            let (listing, digest_kind) = tree::decode(&meta)?;
            let roots = tree::roots(&patterns);
            let beneath = Arc::new(Beneath::for_restore(
                &req.context.workspace,
                &roots,
                req.context.confine,
            ));
            self.restore_tree(&listing, digest_kind, &chunks, &roots, &beneath)
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
    /// root and beneath where the restore writes, nothing is written beneath a symlink of the
    /// entry, and symlinks point inside (`beneath::check_link_target`, the check the writer
    /// makes again when it creates them).
    fn plan_tree(
        listing: &[TreeEntry],
        roots: &[PathBuf],
        beneath: &Beneath,
    ) -> Result<Vec<PathBuf>> {
        let mut links: HashSet<&Path> = HashSet::new();
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
            if e.kind == Kind::Symlink && rel.as_os_str().is_empty() {
                return Err(CacheError::UnsafeArchiveEntry {
                    entry: root.display().to_string(),
                    reason: "a cached path that is itself a symlink is not restored".into(),
                });
            }
            let dest = if rel.as_os_str().is_empty() {
                root.clone()
            } else {
                root.join(&rel)
            };
            let below_anchor = beneath.relative(&dest)?;
            if e.kind == Kind::Symlink {
                check_link_target(below_anchor, Path::new(&e.link)).map_err(|reason| {
                    CacheError::UnsafePath {
                        path: dest.clone(),
                        reason,
                    }
                })?;
            }
            dests.push(dest);
        }
        for (e, dest) in listing.iter().zip(&dests) {
            if e.kind == Kind::Symlink {
                links.insert(dest);
            }
        }
        if !links.is_empty() {
            for dest in &dests {
                if let Some(link) = dest.ancestors().skip(1).find(|a| links.contains(a)) {
                    return Err(CacheError::UnsafePath {
                        path: dest.clone(),
                        reason: format!(
                            "its path goes through {}, a symlink the entry itself creates",
                            link.display()
                        ),
                    });
                }
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
        beneath: &Arc<Beneath>,
    ) -> Result<RestoreStats> {
        let dests = Self::plan_tree(listing, roots, beneath)?;
        let total: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
        let listed = listing
            .iter()
            .filter(|e| e.kind == Kind::File)
            .try_fold(0u64, |sum, e| sum.checked_add(e.size))
            .ok_or_else(|| CacheError::Protocol("the listing's file sizes overflow".into()))?;
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
                                beneath.clear(dest)?;
                                true
                            }
                            Err(_) => true,
                        };
                        beneath.create_dir_all(dest)?;
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
                                beneath.create_dir_all(parent)?;
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
                    scope.spawn(|| {
                        let mut dir = ParentDir::new(Arc::clone(beneath));
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some((fi, layout, digest)) = present.get(i) else {
                                return;
                            };
                            let f: &FilePlan = &files[*fi];
                            let found = compare_found(
                                &mut dir,
                                &f.dest,
                                f.size,
                                digest,
                                digest_kind,
                                layout,
                            );
                            if let Ok(mut r) = results.lock() {
                                r[i] = found;
                            }
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
                beneath.remove_all(dest)?;
                beneath.symlink(Path::new(&e.link), dest)?;
            }
        }
        for (e, dest) in listing.iter().zip(&dests).rev() {
            if e.kind == Kind::Dir {
                beneath.set_dir_mode(dest, e.mode | 0o700)?;
            }
        }
        Ok(stats)
    }
}

#[cfg(test)]
#[path = "restore_tests.rs"]
mod tests;
