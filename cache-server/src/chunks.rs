//! The chunk store: one file per chunk under `chunks/<hh>/<digest>`, holding the chunk as sent
//! (a one-byte codec tag and raw or zstd bytes), zstd chunks behind a digest of those encoded
//! bytes (see [`stored_form`]). Every read is verified: a raw chunk against its name, a zstd chunk
//! against its encoded digest, so reads never decode to verify.
//!
//! Durability is batched: chunks are written without a sync, and [`ChunkStore::make_durable`]
//! syncs every chunk an entry uses (in parallel, so the filesystem can share journal commits)
//! after the entry's row commits, before the row is marked durable (see `durability`). A crash
//! before that leaves files referenced only by entries the next start drops.

use crate::digest::Digest;
use crate::error::{CacheError, Result};
use axum::body::Bytes;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Content-defined chunking parameters, shared by the server (archives) and the client (trees)
/// so that the same bytes produce the same chunks on both sides.
pub const CHUNK_MIN: u32 = 256 * 1024;
pub const CHUNK_AVG: u32 = 1024 * 1024;
pub const CHUNK_MAX: u32 = 4 * 1024 * 1024;

const TAG_RAW: u8 = 0;
const TAG_ZSTD: u8 = 1;
/// On disk only: a zstd chunk preceded by the blake3 of its encoded bytes (tag and frame).
/// Written before [`TAG_FRAMED_XXH3`]; still read. Chunks stored before either (`TAG_ZSTD`
/// files) are still read too, verified by decoding.
const TAG_FRAMED: u8 = 2;
const FRAMED_HEADER: usize = 33;
/// On disk only: a zstd chunk preceded by the xxh3-128 of its encoded bytes. That digest only
/// guards the file against damage (whoever can rewrite the file can rewrite a blake3 beside it
/// as well); the chunk's name, blake3 of its raw bytes, was checked before it was written, and
/// native clients check it again after decoding. xxh3 is several times faster than blake3 on
/// one thread, and every upload and every read hashes the whole encoded chunk.
const TAG_FRAMED_XXH3: u8 = 3;
const FRAMED_XXH3_HEADER: usize = 17;

/// The largest encoded chunk anyone may send: a raw chunk plus its tag, or a zstd frame that
/// expanded slightly on incompressible data.
pub const MAX_ENCODED_CHUNK: usize = CHUNK_MAX as usize + 64 * 1024;

/// Bytes taken from each of three places of a chunk to guess whether it compresses.
const SAMPLE: usize = 16 * 1024;

/// zstd level for chunks whose samples shrink by less than half: stronger levels save few
/// bytes there for much more CPU. On the benchmark's data (half noise) this level stores 3 %
/// more than level 1 and compresses about twice as fast.
const POOR_RATIO_LEVEL: i32 = -5;

/// How well a chunk's samples compress.
#[derive(Debug, PartialEq, Eq)]
enum Compressibility {
    /// Saves less than 1/32: store raw.
    None,
    /// Saves less than half: use a fast level.
    Poor,
    /// Saves more (or the chunk is too small to sample).
    Good,
}

/// How compressible `raw` looks from a fast zstd pass over three samples (start, middle, end).
/// Already-compressed data (the `.tar.zst` archives the v1 API carries, media, random bytes)
/// then skips a full compression that would be discarded.
fn compressibility(raw: &[u8]) -> Compressibility {
    if raw.len() < 8 * SAMPLE {
        return Compressibility::Good;
    }
    let mid = raw.len() / 2 - SAMPLE / 2;
    let mut sample = Vec::with_capacity(3 * SAMPLE);
    sample.extend_from_slice(&raw[..SAMPLE]);
    sample.extend_from_slice(&raw[mid..mid + SAMPLE]);
    sample.extend_from_slice(&raw[raw.len() - SAMPLE..]);
    match compress(&sample, 1) {
        Ok(c) if c.len() + sample.len() / 32 >= sample.len() => Compressibility::None,
        Ok(c) if c.len() * 2 > sample.len() => Compressibility::Poor,
        Ok(_) => Compressibility::Good,
        Err(_) => Compressibility::None,
    }
}

thread_local! {
    /// One zstd context per thread for its lifetime: a fresh context per chunk allocates and
    /// initialises its tables every time (one chunk is about 1 MiB, so that is per megabyte).
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    /// The decoded bytes of the chunk the thread last checked (see [`with_verified_raw`]).
    static DECODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    compress_after(&mut out, data, level)?;
    Ok(out)
}

/// Appends the zstd frame of `data` to `out` (which may hold a header already): compressing in
/// place spares a copy of every compressed chunk into its encoded form.
fn compress_after(out: &mut Vec<u8>, data: &[u8], level: i32) -> std::io::Result<()> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match slot.as_mut() {
            Some(c) => {
                c.set_compression_level(level)?;
                c
            }
            None => slot.insert(zstd::bulk::Compressor::new(level)?),
        };
        let header = out.len();
        out.reserve(zstd::zstd_safe::compress_bound(data.len()));
        let mut cursor = std::io::Cursor::new(out);
        cursor.set_position(header as u64);
        compressor.compress_to_buffer(data, &mut cursor)?;
        Ok(())
    })
}

/// Decompresses one zstd frame into at most [`CHUNK_MAX`] bytes.
fn decompress(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    decompress_into(body, &mut out)?;
    Ok(out)
}

/// Decompresses one zstd frame into `out` (replacing what it held), at most [`CHUNK_MAX`]
/// bytes: a larger frame fails for want of room.
fn decompress_into(body: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decompressor = match slot.as_mut() {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        // zstd writes up to the capacity and no further; callers reject a result over
        // CHUNK_MAX should the allocator have given more.
        out.clear();
        out.reserve_exact(CHUNK_MAX as usize);
        decompressor.decompress_to_buffer(body, out)?;
        Ok(())
    })
}

/// Encodes a chunk for storage and transfer: zstd when that saves at least 1/32 of the bytes,
/// raw otherwise (already-compressed archives would only cost CPU twice). `level` applies to
/// data that compresses well; poorly compressible data gets [`POOR_RATIO_LEVEL`].
pub fn encode_chunk(raw: &[u8], level: i32) -> Vec<u8> {
    let mut out = Vec::new();
    encode_chunk_into(&mut out, raw, level);
    out
}

/// [`encode_chunk`] into `out`, replacing what it held: a caller encoding chunk after chunk
/// reuses one buffer instead of faulting in fresh pages for every chunk.
pub fn encode_chunk_into(out: &mut Vec<u8>, raw: &[u8], level: i32) {
    out.clear();
    let level = match compressibility(raw) {
        Compressibility::None => return encode_raw_into(out, raw),
        Compressibility::Poor => level.min(POOR_RATIO_LEVEL),
        Compressibility::Good => level,
    };
    out.push(TAG_ZSTD);
    if compress_after(out, raw, level).is_ok() && out.len() - 1 + raw.len() / 32 < raw.len() {
        return;
    }
    out.clear();
    encode_raw_into(out, raw);
}

#[cfg(test)]
fn encode_raw(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_raw_into(&mut out, raw);
    out
}

fn encode_raw_into(out: &mut Vec<u8>, raw: &[u8]) {
    out.reserve(raw.len() + 1);
    out.push(TAG_RAW);
    out.extend_from_slice(raw);
}

/// Decodes an encoded chunk and checks it against `digest`. The output is bounded by
/// [`CHUNK_MAX`], so a hostile frame cannot make us allocate without limit.
pub fn decode_chunk(encoded: &[u8], digest: &Digest) -> Result<Vec<u8>> {
    let raw = match split_encoded(encoded, digest)? {
        (TAG_ZSTD, body) => decompress(body).map_err(|e| not_zstd(digest, e))?,
        (_, body) => body.to_vec(),
    };
    check_raw(&raw, digest)?;
    Ok(raw)
}

/// Checks an encoded chunk against `digest` without keeping its bytes, and returns its raw
/// length: what the server does with every uploaded chunk.
pub fn verify_chunk(encoded: &[u8], digest: &Digest) -> Result<u64> {
    with_verified_raw(encoded, digest, |raw| raw.len() as u64)
}

/// [`verify_chunk`] for bytes a client sent: a mismatch is the client's error (nothing was
/// stored, nothing removed), not a corrupt stored chunk.
pub fn verify_upload(encoded: &[u8], digest: &Digest) -> Result<u64> {
    verify_chunk(encoded, digest).map_err(|e| match e {
        CacheError::CorruptChunk { digest, reason } => {
            CacheError::DigestMismatch { digest, reason }
        }
        other => other,
    })
}

/// Decodes `encoded`, checks the raw bytes against `digest` and hands them to `take`. A raw
/// chunk is checked in place; a zstd one is decoded into a buffer the thread keeps, so checking
/// chunk after chunk faults in no fresh pages. `take` must not decode chunks itself.
pub(crate) fn with_verified_raw<T>(
    encoded: &[u8],
    digest: &Digest,
    take: impl FnOnce(&[u8]) -> T,
) -> Result<T> {
    match split_encoded(encoded, digest)? {
        (TAG_ZSTD, body) => DECODED.with(|cell| {
            let mut raw = cell.borrow_mut();
            decompress_into(body, &mut raw).map_err(|e| not_zstd(digest, e))?;
            check_raw(&raw, digest).map(|()| take(&raw))
        }),
        (_, body) => check_raw(body, digest).map(|()| take(body)),
    }
}

/// An encoded chunk's codec tag ([`TAG_RAW`] or [`TAG_ZSTD`]) and body.
fn split_encoded<'a>(encoded: &'a [u8], digest: &Digest) -> Result<(u8, &'a [u8])> {
    let corrupt = |reason: String| CacheError::CorruptChunk {
        digest: digest.to_hex(),
        reason,
    };
    match encoded.split_first() {
        Some((&tag @ (TAG_RAW | TAG_ZSTD), body)) => Ok((tag, body)),
        Some((other, _)) => Err(corrupt(format!("unknown codec tag {other}"))),
        None => Err(corrupt("empty chunk".into())),
    }
}

fn not_zstd(digest: &Digest, e: std::io::Error) -> CacheError {
    CacheError::CorruptChunk {
        digest: digest.to_hex(),
        reason: format!("zstd frame does not decode: {e}"),
    }
}

/// Checks a chunk's raw bytes against its name (and the chunk size limit).
fn check_raw(raw: &[u8], digest: &Digest) -> Result<()> {
    let corrupt = |reason: String| CacheError::CorruptChunk {
        digest: digest.to_hex(),
        reason,
    };
    if raw.len() > CHUNK_MAX as usize {
        return Err(corrupt(format!(
            "{} bytes exceed the chunk limit",
            raw.len()
        )));
    }
    let actual = Digest::of(raw);
    if actual != *digest {
        return Err(corrupt(format!("content hashes to {actual}")));
    }
    Ok(())
}

/// The bytes a chunk file holds for an encoded chunk whose raw digest has been verified: a raw
/// chunk as is (its name already covers its bytes), a zstd chunk framed with a digest of the
/// encoded bytes ([`TAG_FRAMED_XXH3`]), so a read verifies by hashing the compressed bytes
/// instead of decoding them and hashing twice as many. The header goes in front, so the encoded
/// bytes are the file's tail.
pub fn stored_form(encoded: &[u8]) -> Option<[u8; FRAMED_XXH3_HEADER]> {
    if encoded.first() != Some(&TAG_ZSTD) {
        return None;
    }
    let mut header = [0u8; FRAMED_XXH3_HEADER];
    header[0] = TAG_FRAMED_XXH3;
    header[1..].copy_from_slice(&xxhash_rust::xxh3::xxh3_128(encoded).to_le_bytes());
    Some(header)
}

/// Checks the bytes of a chunk file with the cheapest check each format allows and returns
/// where its encoded form (tag and body, as sent to clients) starts, and whether that form's
/// raw digest is already established (true for every format but the legacy zstd one, whose
/// check decodes: the caller may keep the decoded bytes then).
fn check_file(file: &[u8], digest: &Digest) -> Result<Checked> {
    let corrupt = |reason: String| CacheError::CorruptChunk {
        digest: digest.to_hex(),
        reason,
    };
    match file.first() {
        Some(&TAG_RAW) => check_raw(&file[1..], digest).map(|()| Checked::Raw),
        Some(&tag @ (TAG_FRAMED | TAG_FRAMED_XXH3)) => {
            let header = if tag == TAG_FRAMED {
                FRAMED_HEADER
            } else {
                FRAMED_XXH3_HEADER
            };
            if file.len() <= header || file[header] != TAG_ZSTD {
                return Err(corrupt("framed chunk without a zstd body".into()));
            }
            let body = &file[header..];
            let matches = if tag == TAG_FRAMED {
                blake3::hash(body).as_bytes()[..] == file[1..header]
            } else {
                xxhash_rust::xxh3::xxh3_128(body).to_le_bytes()[..] == file[1..header]
            };
            if !matches {
                return Err(corrupt(
                    "encoded bytes do not match their recorded digest".into(),
                ));
            }
            Ok(Checked::Framed { header })
        }
        _ => decode_chunk(file, digest).map(Checked::Decoded),
    }
}

/// What [`check_file`] established.
enum Checked {
    /// A raw chunk whose bytes hash to its name.
    Raw,
    /// A zstd chunk whose encoded bytes, after a header of `header` bytes, match the digest
    /// recorded when its raw digest was checked.
    Framed { header: usize },
    /// A legacy zstd chunk, decoded and hashed: its raw bytes.
    Decoded(Vec<u8>),
}

/// Decompresses a zstd body whose encoded digest was checked, bounded by [`CHUNK_MAX`].
fn decompress_checked(body: &[u8], digest: &Digest) -> Result<Vec<u8>> {
    decompress(body).map_err(|e| not_zstd(digest, e))
}

/// How many threads sync chunk files at once: concurrent syncs share ext4 journal commits.
const SYNC_THREADS: usize = 8;

/// Filesystem chunk store. Writes go to a temp file that is renamed into place, so a chunk file
/// is either absent or complete once the rename is durable (see [`ChunkStore::make_durable`]).
#[derive(Debug)]
pub struct ChunkStore {
    root: PathBuf,
    tmp: PathBuf,
    /// Names this store's temp files apart from those of other stores on the same directory
    /// (other processes, see `sharing`): two writing one chunk at once must not share a file.
    tmp_prefix: String,
    tmp_counter: AtomicU64,
    /// Chunks this process has synced. Starts empty, so after a restart chunks written by a
    /// killed process are synced again before a new entry may use them (cheap when clean).
    durable: Mutex<HashSet<Digest>>,
    /// Chunks this process wrote and has not synced yet: their bytes are known good.
    unsynced: Mutex<HashSet<Digest>>,
}

impl ChunkStore {
    /// Opens the chunk files of `data_dir`. `alone`: no other process has the directory open
    /// (see `sharing`), so temp files found there are garbage of a killed server.
    pub fn open(data_dir: &Path, alone: bool) -> Result<Self> {
        static STORES: AtomicU64 = AtomicU64::new(0);
        let root = data_dir.join("chunks");
        let tmp = data_dir.join("tmp");
        crate::token::create_private_dir(&root)?;
        // All 256 shard directories up front: made on first use instead, a new store's first
        // saves paid a directory creation (an inode and its block) per shard, about 2 % of a save.
        for shard in 0..=255u8 {
            let dir = root.join(format!("{shard:02x}"));
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(CacheError::io("create", &dir, e)),
            }
        }
        if alone {
            let _ = fs::remove_dir_all(&tmp);
        }
        crate::token::create_private_dir(&tmp)?;
        Ok(ChunkStore {
            root,
            tmp,
            tmp_prefix: format!(
                "{}.{}",
                std::process::id(),
                STORES.fetch_add(1, Ordering::Relaxed)
            ),
            tmp_counter: AtomicU64::new(0),
            durable: Mutex::new(HashSet::new()),
            unsynced: Mutex::new(HashSet::new()),
        })
    }

    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path_of(digest).is_file()
    }

    /// Stores an already encoded chunk after verifying it. Returns the stored size and the
    /// uncompressed length (from the one verifying decode: decoding is most of the cost).
    pub fn put_encoded(&self, digest: &Digest, encoded: &[u8]) -> Result<(u64, u64)> {
        let raw_len = verify_upload(encoded, digest)?;
        self.write_atomically(digest, encoded)?;
        Ok((encoded.len() as u64, raw_len))
    }

    /// Encodes and stores raw chunk bytes whose digest the caller computed.
    pub fn put_raw(&self, digest: &Digest, raw: &[u8], level: i32) -> Result<u64> {
        let encoded = encode_chunk(raw, level);
        self.write_atomically(digest, &encoded)?;
        Ok(encoded.len() as u64)
    }

    /// Writes `encoded`, whose raw digest the caller verified or computed, in its stored form.
    fn write_atomically(&self, digest: &Digest, encoded: &[u8]) -> Result<()> {
        let target = self.path_of(digest);
        if lock_set(&self.durable).contains(digest) && target.is_file() {
            // Same name, same verified bytes, already durable: rewriting would only add a window
            // in which the name points at an unsynced inode.
            return Ok(());
        }
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .tmp
            .join(format!("{}-{}-{n}", digest.to_hex(), self.tmp_prefix));
        let header = stored_form(encoded);
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            // No sync here: make_durable syncs it before any entry using it is marked durable.
            if let Some(header) = &header {
                f.write_all(header)?;
            }
            f.write_all(encoded)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            CacheError::io("write chunk", &tmp, e)
        })?;
        let parent = target.parent().unwrap_or(&self.root);
        if let Err(e) = fs::rename(&tmp, &target) {
            if e.kind() != ErrorKind::NotFound {
                let _ = fs::remove_file(&tmp);
                return Err(CacheError::io("rename chunk into", &target, e));
            }
            fs::create_dir_all(parent).map_err(|e| CacheError::io("create", parent, e))?;
            fs::rename(&tmp, &target).map_err(|e| {
                let _ = fs::remove_file(&tmp);
                CacheError::io("rename chunk into", &target, e)
            })?;
        }
        // Recorded after the rename: a replaced file is a new inode, unsynced whatever came before.
        lock_set(&self.durable).remove(digest);
        lock_set(&self.unsynced).insert(*digest);
        Ok(())
    }

    /// Makes every chunk in `digests` durable: syncs the data of those not synced yet, then their
    /// shard directories. A chunk this process did not write (left by a killed server, whose
    /// write may not have reached the disk) is verified first, so a commit never makes a torn
    /// chunk durable under its name.
    pub fn make_durable(&self, digests: &[Digest]) -> Result<()> {
        let mut pending: Vec<Digest> = {
            let durable = lock_set(&self.durable);
            digests
                .iter()
                .filter(|d| !durable.contains(d))
                .copied()
                .collect()
        };
        pending.sort();
        pending.dedup();
        let next = AtomicUsize::new(0);
        let sync_one = |d: &Digest| -> Result<()> {
            let ours = lock_set(&self.unsynced).contains(d);
            if !ours {
                self.read_encoded(d)?;
            }
            let path = self.path_of(d);
            let file = File::open(&path).map_err(|e| open_error(d, "open chunk", &path, e))?;
            file.sync_data()
                .map_err(|e| CacheError::io("sync chunk", &path, e))
        };
        let threads = SYNC_THREADS.min(pending.len());
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        while let Some(d) = pending.get(next.fetch_add(1, Ordering::Relaxed)) {
                            sync_one(d)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(CacheError::Task("a chunk sync thread panicked".into()))
                    })
                })
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
        self.sync_dirs(pending.iter().copied())?;
        let mut unsynced = lock_set(&self.unsynced);
        let mut durable = lock_set(&self.durable);
        for d in pending {
            unsynced.remove(&d);
            durable.insert(d);
        }
        Ok(())
    }

    /// Makes renames in the shard directories durable. Called once per commit rather than per
    /// chunk because a directory fsync costs as much as the chunk write itself.
    pub fn sync_dirs(&self, digests: impl IntoIterator<Item = Digest>) -> Result<()> {
        let mut shards: Vec<String> = digests
            .into_iter()
            .map(|d| d.to_hex()[..2].to_string())
            .collect();
        shards.sort();
        shards.dedup();
        // The root too: a shard directory created by this upload is itself a new entry there.
        let dirs = shards
            .iter()
            .map(|s| self.root.join(s))
            .chain(std::iter::once(self.root.clone()));
        for dir in dirs {
            if let Ok(f) = File::open(&dir) {
                f.sync_all().map_err(|e| CacheError::io("sync", &dir, e))?;
            }
        }
        Ok(())
    }

    /// Reads a chunk's encoded bytes (as sent to clients), verified the cheapest way its format
    /// allows: the encoded digest of a framed zstd chunk, the name of a raw one. The client checks
    /// the raw digest after decoding, so every byte is still verified end to end.
    pub fn read_encoded(&self, digest: &Digest) -> Result<Bytes> {
        let file = self.read_file(digest)?;
        Ok(match check_file(&file, digest)? {
            Checked::Framed { header } => Bytes::from(file).slice(header..),
            Checked::Raw | Checked::Decoded(_) => Bytes::from(file),
        })
    }

    /// Reads and verifies a chunk, returning its uncompressed bytes. A framed chunk is decoded
    /// once, without hashing its output: its encoded digest was recorded after its raw digest
    /// was checked, so matching encoded bytes decode to the named content.
    pub fn read_raw(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut file = self.read_file(digest)?;
        match check_file(&file, digest)? {
            Checked::Raw => {
                file.remove(0);
                Ok(file)
            }
            Checked::Framed { header } => decompress_checked(&file[header + 1..], digest),
            Checked::Decoded(raw) => Ok(raw),
        }
    }

    /// Verifies a chunk completely: the stored form, then a decode and the raw digest. For a
    /// client that reports a chunk whose decoded bytes did not match (damaged in transit, or a
    /// store whose encoded digest was recorded over wrong bytes).
    pub fn verify_fully(&self, digest: &Digest) -> Result<()> {
        let file = self.read_file(digest)?;
        match check_file(&file, digest)? {
            Checked::Framed { header } => verify_chunk(&file[header..], digest).map(drop),
            Checked::Raw | Checked::Decoded(_) => Ok(()),
        }
    }

    fn read_file(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.path_of(digest);
        fs::read(&path).map_err(|e| open_error(digest, "read chunk", &path, e))
    }

    pub fn remove(&self, digest: &Digest) -> Result<()> {
        // A chunk written again after this must be synced again.
        lock_set(&self.durable).remove(digest);
        lock_set(&self.unsynced).remove(digest);
        let path = self.path_of(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CacheError::io("remove chunk", path, e)),
        }
    }
}

/// A chunk file that cannot be read: absent is a missing chunk (callers quarantine it), anything
/// else an I/O failure of the store.
fn open_error(digest: &Digest, action: &'static str, path: &Path, e: std::io::Error) -> CacheError {
    if e.kind() == ErrorKind::NotFound {
        CacheError::MissingChunk(digest.to_hex())
    } else {
        CacheError::io(action, path, e)
    }
}

/// The sets only cache what is known durable; a panic mid-update leaves them usable (a missing
/// entry only costs one more sync), so poisoning is ignored.
fn lock_set(set: &Mutex<HashSet<Digest>>) -> std::sync::MutexGuard<'_, HashSet<Digest>> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_verifies() {
        let raw = vec![7u8; 100_000];
        let d = Digest::of(&raw);
        let enc = encode_chunk(&raw, 3);
        assert_eq!(enc[0], TAG_ZSTD);
        assert_eq!(decode_chunk(&enc, &d).unwrap(), raw);
        let mut bad = enc.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode_chunk(&bad, &d).is_err());
        assert!(decode_chunk(&[], &d).is_err());
        assert!(decode_chunk(&[9, 1, 2], &d).is_err());
    }

    #[test]
    fn incompressible_chunks_are_stored_raw_without_a_full_attempt() {
        // A xorshift stream: no redundancy for zstd to find.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..600_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(compressibility(&noise), Compressibility::None);
        let enc = encode_chunk(&noise, 3);
        assert_eq!(enc[0], TAG_RAW);
        assert_eq!(decode_chunk(&enc, &Digest::of(&noise)).unwrap(), noise);
        let text = b"fn main() { println!(\"hello\"); }\n".repeat(20_000);
        assert_eq!(compressibility(&text), Compressibility::Good);
        // Half noise, half text: compresses, but poorly.
        let mixed: Vec<u8> = noise
            .chunks(32)
            .zip(text.chunks(32))
            .flat_map(|(n, t)| n.iter().chain(t).copied())
            .collect();
        assert_eq!(compressibility(&mixed), Compressibility::Poor);
        let enc = encode_chunk(&mixed, 3);
        assert_eq!(enc[0], TAG_ZSTD);
        assert_eq!(decode_chunk(&enc, &Digest::of(&mixed)).unwrap(), mixed);
        assert_eq!(encode_chunk(&text, 1)[0], TAG_ZSTD);
    }

    #[test]
    fn make_durable_syncs_once_and_rejects_missing_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path(), true).unwrap();
        let raw = b"durable".repeat(1000);
        let d = Digest::of(&raw);
        store.put_raw(&d, &raw, 3).unwrap();
        store.make_durable(&[d, d]).unwrap();
        assert!(lock_set(&store.durable).contains(&d));
        assert!(lock_set(&store.unsynced).is_empty());
        let absent = Digest::of(b"never stored");
        assert!(matches!(
            store.make_durable(&[absent]),
            Err(CacheError::MissingChunk(_))
        ));
    }

    #[test]
    fn make_durable_verifies_chunks_another_process_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let raw = b"left by a killed server".repeat(100);
        let d = Digest::of(&raw);
        let path = {
            let first = ChunkStore::open(dir.path(), true).unwrap();
            first.put_raw(&d, &raw, 3).unwrap();
            first.path_of(&d)
        };
        // A torn write: the name exists but the bytes never reached the disk.
        fs::write(&path, b"").unwrap();
        let second = ChunkStore::open(dir.path(), true).unwrap();
        assert!(matches!(
            second.make_durable(&[d]),
            Err(CacheError::CorruptChunk { .. })
        ));
    }

    #[test]
    fn each_stored_form_reads_back_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path(), true).unwrap();
        let text = b"compressible text, ".repeat(5000);
        let d = Digest::of(&text);
        let encoded = encode_chunk(&text, 3);
        store.put_encoded(&d, &encoded).unwrap();
        let file = fs::read(store.path_of(&d)).unwrap();
        assert_eq!(file[0], TAG_FRAMED_XXH3);
        assert_eq!(&file[FRAMED_XXH3_HEADER..], &encoded[..]);
        assert_eq!(&store.read_encoded(&d).unwrap()[..], &encoded[..]);
        assert_eq!(store.read_raw(&d).unwrap(), text);
        store.verify_fully(&d).unwrap();
        // A flipped byte in the framed file's body or in its recorded digest is caught.
        for at in [FRAMED_XXH3_HEADER + encoded.len() / 2, 5] {
            let mut damaged = file.clone();
            damaged[at] ^= 0x10;
            fs::write(store.path_of(&d), damaged).unwrap();
            assert!(matches!(
                store.read_encoded(&d),
                Err(CacheError::CorruptChunk { .. })
            ));
        }
        // Files framed with blake3 (written before xxh3 framing) still read back verified.
        let mut blake3_framed = vec![TAG_FRAMED];
        blake3_framed.extend_from_slice(blake3::hash(&encoded).as_bytes());
        blake3_framed.extend_from_slice(&encoded);
        fs::write(store.path_of(&d), &blake3_framed).unwrap();
        assert_eq!(&store.read_encoded(&d).unwrap()[..], &encoded[..]);
        assert_eq!(store.read_raw(&d).unwrap(), text);
        store.verify_fully(&d).unwrap();
        blake3_framed[FRAMED_HEADER + 7] ^= 1;
        fs::write(store.path_of(&d), &blake3_framed).unwrap();
        assert!(store.read_encoded(&d).is_err());
        // Legacy zstd files (no encoded digest) and raw chunks are stored as sent.
        fs::write(store.path_of(&d), &encoded).unwrap();
        assert_eq!(&store.read_encoded(&d).unwrap()[..], &encoded[..]);
        assert_eq!(store.read_raw(&d).unwrap(), text);
        let small = b"too small to compress".to_vec();
        let s = Digest::of(&small);
        store.put_encoded(&s, &encode_raw(&small)).unwrap();
        assert_eq!(fs::read(store.path_of(&s)).unwrap()[0], TAG_RAW);
        assert_eq!(store.read_raw(&s).unwrap(), small);
        // A framed file whose encoded digest matches other content: only the full check sees it.
        let other = encode_chunk(&b"other text, ".repeat(5000), 3);
        let mut forged = stored_form(&other).unwrap().to_vec();
        forged.extend_from_slice(&other);
        fs::write(store.path_of(&d), forged).unwrap();
        assert!(store.read_encoded(&d).is_ok());
        assert!(matches!(
            store.verify_fully(&d),
            Err(CacheError::CorruptChunk { .. })
        ));
    }

    #[test]
    fn store_round_trip_and_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path(), true).unwrap();
        let raw = b"hello chunk".repeat(100);
        let d = Digest::of(&raw);
        store.put_raw(&d, &raw, 3).unwrap();
        assert_eq!(store.read_raw(&d).unwrap(), raw);
        let path = store.path_of(&d);
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(
            store.read_raw(&d),
            Err(CacheError::CorruptChunk { .. })
        ));
    }
}
