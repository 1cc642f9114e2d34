//! The tree listing stored with a native entry: every file, directory and symlink under the
//! `path:` roots, in a deterministic order, with mode, mtime, size and a digest of each file.
//! File contents are the concatenation, in listing order, that the entry's chunks cut up.
//!
//! Listing formats, all still read:
//! - `KLT1` stores blake3 of each file.
//! - `KLT2` stores the piece digest ([`piece_digest`]): blake3 over the digest of each piece, a
//!   piece being the part of the file inside one chunk of the entry, each piece by blake3. A
//!   piece that is a whole chunk has the chunk's own digest, so the bytes of large files are
//!   hashed once on save, not once per file and once per chunk.
//! - `KLT3` (what saves write) is `KLT2` with the pieces that are only part of a chunk (small
//!   files, and the ends of large ones) digested by xxh3-128 ([`PieceHasher`]). Their bytes are
//!   hashed for the chunk's name anyway; the second pass only serves to skip identical files
//!   on restore, and blake3 on few-KiB inputs cannot use its SIMD width: on a tree of 50,000
//!   small files it was about 7 % of a save's CPU.

use super::glob::{selected, Pattern};
use crate::error::{CacheError, Result};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File = 0,
    Dir = 1,
    Symlink = 2,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    pub kind: Kind,
    /// Index of the `path:` pattern whose root this entry is under.
    pub root: u32,
    /// Path below that root, `/`-separated; empty for the root itself.
    pub rel: String,
    pub mode: u32,
    pub mtime_secs: i64,
    pub mtime_nanos: u32,
    pub size: u64,
    pub blake3: [u8; 32],
    pub link: String,
}

/// Limits that keep a hostile listing from exhausting memory.
const MAX_ENTRIES: u64 = 10_000_000;
const MAX_LISTING_BYTES: usize = 1 << 30;
const MAGIC_BLAKE3: &[u8; 4] = b"KLT1";
const MAGIC_PIECES: &[u8; 4] = b"KLT2";
const MAGIC_MIXED: &[u8; 4] = b"KLT3";

/// What the `blake3` field of a listing's files holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileDigest {
    /// blake3 of the whole file (`KLT1`).
    Blake3,
    /// [`piece_digest`] over the file's pieces, cut at the entry's chunk boundaries, each piece
    /// by blake3 (`KLT2`).
    Pieces,
    /// As `Pieces`, with the pieces that are part of a chunk by xxh3-128 (`KLT3`).
    MixedPieces,
}

impl FileDigest {
    /// Whether the digest is made of per-chunk pieces (else one digest of the whole file).
    pub fn by_pieces(self) -> bool {
        self != FileDigest::Blake3
    }
}

/// Digests one piece of a file the way a listing of `kind` does. `whole_chunk`: the piece is a
/// whole chunk of the entry (its digest is then the chunk's name, blake3).
pub enum PieceHasher {
    Blake3(Box<blake3::Hasher>),
    Xxh3(Box<xxhash_rust::xxh3::Xxh3>),
}

impl PieceHasher {
    pub fn new(kind: FileDigest, whole_chunk: bool) -> Self {
        if kind == FileDigest::MixedPieces && !whole_chunk {
            PieceHasher::Xxh3(Box::default())
        } else {
            PieceHasher::Blake3(Box::default())
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            PieceHasher::Blake3(h) => {
                h.update(data);
            }
            PieceHasher::Xxh3(h) => h.update(data),
        }
    }

    pub fn finish(&self) -> [u8; 32] {
        match self {
            PieceHasher::Blake3(h) => *h.finalize().as_bytes(),
            PieceHasher::Xxh3(h) => xxh3_digest(h.digest128()),
        }
    }
}

/// The `KLT3` digest of a piece that is part of a chunk.
pub fn partial_piece_digest(data: &[u8]) -> [u8; 32] {
    xxh3_digest(xxhash_rust::xxh3::xxh3_128(data))
}

fn xxh3_digest(v: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&v.to_le_bytes());
    out
}

/// The file digest of `KLT2`/`KLT3` listings: blake3 of the concatenated piece digests, in file
/// order.
/// A file without bytes has no pieces.
pub fn piece_digest(pieces: impl IntoIterator<Item = [u8; 32]>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for p in pieces {
        h.update(&p);
    }
    *h.finalize().as_bytes()
}

/// Positive patterns' roots, in pattern order (negated patterns get no root).
pub fn roots(patterns: &[Pattern]) -> Vec<PathBuf> {
    patterns
        .iter()
        .filter(|p| !p.negated)
        .map(|p| p.root.clone())
        .collect()
}

/// Walks the roots and lists what the patterns select. Directories are listed before their
/// contents and children in byte order, so the same tree always gives the same stream.
pub fn walk(patterns: &[Pattern]) -> Result<Vec<TreeEntry>> {
    walk_with(patterns, FileStats::Stat, |_, _| true)
}

/// Whether the walk reads regular files' metadata.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FileStats {
    Stat,
    /// Regular files are known by their directory entry's type alone and listed with mode,
    /// mtime and size zero: for a caller that opens every file anyway and takes them from the
    /// open file, which spares a lookup by name per file (`fstat` against `fstatat`).
    FromOpenFile,
}

/// [`walk`], handing each entry and its full path to `found` as soon as it is listed (so a save
/// can read files while the walk goes on); `found` returning false stops the walk.
pub fn walk_with(
    patterns: &[Pattern],
    file_stats: FileStats,
    mut found: impl FnMut(&TreeEntry, &Path) -> bool,
) -> Result<Vec<TreeEntry>> {
    let roots = roots(patterns);
    let mut entries = Vec::new();
    let mut walked: Vec<&PathBuf> = Vec::new();
    for root in &roots {
        if walked.iter().any(|w| root.starts_with(w)) {
            continue;
        }
        // Roots walked already that lie inside this one: their trees are listed, so the walk
        // steps over them (nothing else under this root can have been seen).
        let inside: Vec<&PathBuf> = walked
            .iter()
            .copied()
            .filter(|w| w.starts_with(root))
            .collect();
        walked.push(root);
        let meta = match fs::symlink_metadata(root) {
            Ok(m) => m,
            Err(_) => continue,
        };
        let mut stack = vec![(root.clone(), Some(meta))];
        while let Some((path, meta)) = stack.pop() {
            if !inside.is_empty() && inside.iter().any(|w| **w == path) {
                continue;
            }
            let is_dir = meta.as_ref().is_some_and(|m| m.is_dir());
            if selected(patterns, &path) {
                if let Some(e) = entry_for(&roots, &path, meta.as_ref())? {
                    if !found(&e, &path) {
                        return Ok(entries);
                    }
                    entries.push(e);
                }
            }
            if is_dir {
                let mut children: Vec<(PathBuf, Option<fs::Metadata>)> = Vec::new();
                let rd = fs::read_dir(&path).map_err(|e| CacheError::io("list", &path, e))?;
                for child in rd {
                    let child = child.map_err(|e| CacheError::io("list", &path, e))?;
                    let p = child.path();
                    // The entry's type comes with the directory listing (no syscall unless the
                    // filesystem does not record it).
                    let by_type = file_stats == FileStats::FromOpenFile
                        && child.file_type().is_ok_and(|t| t.is_file());
                    // Relative to the open directory (fstatat), not a walk of the full path
                    // per file; like symlink_metadata, it does not follow symlinks.
                    let m = if by_type {
                        None
                    } else {
                        Some(
                            child
                                .metadata()
                                .map_err(|e| CacheError::io("stat", &p, e))?,
                        )
                    };
                    children.push((p, m));
                }
                children.sort_by(|a, b| {
                    b.0.as_os_str()
                        .as_encoded_bytes()
                        .cmp(a.0.as_os_str().as_encoded_bytes())
                });
                stack.extend(children);
            }
        }
    }
    Ok(entries)
}

/// The entry for `path`; `meta` None is a regular file whose metadata the caller reads later
/// ([`FileStats::FromOpenFile`]).
fn entry_for(
    roots: &[PathBuf],
    path: &Path,
    meta: Option<&fs::Metadata>,
) -> Result<Option<TreeEntry>> {
    let Some((root_index, root)) = roots.iter().enumerate().find(|(_, r)| path.starts_with(r))
    else {
        return Ok(None);
    };
    let rel = path
        .strip_prefix(root)
        .map(|r| r.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(meta) = meta else {
        return Ok(Some(TreeEntry {
            kind: Kind::File,
            root: root_index as u32,
            rel,
            mode: 0,
            mtime_secs: 0,
            mtime_nanos: 0,
            size: 0,
            blake3: [0; 32],
            link: String::new(),
        }));
    };
    let ft = meta.file_type();
    let (kind, link) = if ft.is_symlink() {
        let target = fs::read_link(path).map_err(|e| CacheError::io("read link", path, e))?;
        (Kind::Symlink, target.to_string_lossy().into_owned())
    } else if ft.is_dir() {
        (Kind::Dir, String::new())
    } else if ft.is_file() {
        (Kind::File, String::new())
    } else {
        // Sockets, fifos and devices are not cache content.
        return Ok(None);
    };
    Ok(Some(TreeEntry {
        kind,
        root: root_index as u32,
        rel,
        mode: meta.permissions().mode() & 0o7777,
        mtime_secs: meta.mtime(),
        mtime_nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        size: if kind == Kind::File { meta.len() } else { 0 },
        blake3: [0; 32],
        link,
    }))
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Serialises and compresses a listing whose file digests are [`FileDigest::MixedPieces`].
pub fn encode(entries: &[TreeEntry]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(entries.len() * 96 + 16);
    out.extend_from_slice(MAGIC_MIXED);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        out.push(e.kind as u8);
        out.extend_from_slice(&e.root.to_le_bytes());
        out.extend_from_slice(&e.mode.to_le_bytes());
        out.extend_from_slice(&e.mtime_secs.to_le_bytes());
        out.extend_from_slice(&e.mtime_nanos.to_le_bytes());
        out.extend_from_slice(&e.size.to_le_bytes());
        out.extend_from_slice(&e.blake3);
        put_str(&mut out, &e.rel);
        put_str(&mut out, &e.link);
    }
    // Level 1: a third of a listing is digests that no level compresses, and level 3 took twice
    // as long for no smaller output, at the end of the save where nothing else runs.
    zstd::bulk::compress(&out, 1)
        .map_err(|e| CacheError::Protocol(format!("compressing the tree listing failed: {e}")))
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| CacheError::Protocol("tree listing is truncated".into()))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn string(&mut self) -> Result<String> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| CacheError::Protocol("tree listing has a non-UTF-8 path".into()))
    }
}

/// Decompresses and parses a listing; every length is checked against the data.
pub fn decode(compressed: &[u8]) -> Result<(Vec<TreeEntry>, FileDigest)> {
    let data = zstd::bulk::decompress(compressed, MAX_LISTING_BYTES)
        .map_err(|e| CacheError::Protocol(format!("tree listing does not decompress: {e}")))?;
    let mut c = Cursor {
        data: &data,
        pos: 0,
    };
    let digest_kind = match c.take(4)? {
        m if m == MAGIC_MIXED => FileDigest::MixedPieces,
        m if m == MAGIC_PIECES => FileDigest::Pieces,
        m if m == MAGIC_BLAKE3 => FileDigest::Blake3,
        _ => {
            return Err(CacheError::Protocol(
                "tree listing has an unknown format".into(),
            ))
        }
    };
    let count = u64::from_le_bytes(c.array()?);
    if count > MAX_ENTRIES {
        return Err(CacheError::Protocol(format!(
            "tree listing claims {count} entries"
        )));
    }
    let mut entries = Vec::with_capacity((count as usize).min(data.len() / 64 + 1));
    for _ in 0..count {
        let kind = match c.take(1)?[0] {
            0 => Kind::File,
            1 => Kind::Dir,
            2 => Kind::Symlink,
            k => {
                return Err(CacheError::Protocol(format!(
                    "tree listing has unknown entry kind {k}"
                )))
            }
        };
        entries.push(TreeEntry {
            kind,
            root: u32::from_le_bytes(c.array()?),
            mode: u32::from_le_bytes(c.array()?) & 0o7777,
            mtime_secs: i64::from_le_bytes(c.array()?),
            mtime_nanos: u32::from_le_bytes(c.array()?).min(999_999_999),
            size: u64::from_le_bytes(c.array()?),
            blake3: c.array()?,
            rel: c.string()?,
            link: c.string()?,
        });
    }
    Ok((entries, digest_kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_round_trip_and_garbage() {
        let e = TreeEntry {
            kind: Kind::Symlink,
            root: 1,
            rel: "a/b".into(),
            mode: 0o755,
            mtime_secs: -5,
            mtime_nanos: 7,
            size: 0,
            blake3: [3; 32],
            link: "../c".into(),
        };
        let enc = encode(std::slice::from_ref(&e)).unwrap();
        assert_eq!(decode(&enc).unwrap(), (vec![e], FileDigest::MixedPieces));
        assert!(decode(b"junk").is_err());
        let truncated = zstd::bulk::compress(&enc_raw_prefix(), 1).unwrap();
        assert!(decode(&truncated).is_err());
    }

    /// Overlapping `path:` lines list each path once: an inner root walked first is stepped
    /// over by the outer one, and a root inside one walked already is not walked again.
    #[test]
    fn overlapping_roots_list_each_path_once() {
        let ws = tempfile::tempdir().unwrap();
        for f in ["t/debug/x/a", "t/debug/b", "t/c"] {
            let p = ws.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, f).unwrap();
        }
        let lines: Vec<String> = ["t/debug", "t", "t/debug/x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let patterns = super::super::glob::parse_patterns(&lines, ws.path(), None).unwrap();
        let listed: Vec<(u32, String)> = walk(&patterns)
            .unwrap()
            .into_iter()
            .map(|e| (e.root, e.rel))
            .collect();
        let expected: Vec<(u32, String)> =
            [(0, ""), (0, "b"), (0, "x"), (0, "x/a"), (1, ""), (1, "c")]
                .iter()
                .map(|(r, p)| (*r, p.to_string()))
                .collect();
        assert_eq!(listed, expected);
    }

    fn enc_raw_prefix() -> Vec<u8> {
        let mut v = MAGIC_MIXED.to_vec();
        v.extend_from_slice(&5u64.to_le_bytes());
        v.push(0);
        v
    }
}
