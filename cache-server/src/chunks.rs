//! The chunk store: one file per chunk under `chunks/<hh>/<digest>`, holding a one-byte codec tag
//! and the (possibly zstd-compressed) bytes. Every read is verified against the digest.

use crate::digest::Digest;
use crate::error::{CacheError, Result};
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Content-defined chunking parameters, shared by the server (archives) and the client (trees)
/// so that the same bytes produce the same chunks on both sides.
pub const CHUNK_MIN: u32 = 256 * 1024;
pub const CHUNK_AVG: u32 = 1024 * 1024;
pub const CHUNK_MAX: u32 = 4 * 1024 * 1024;

const TAG_RAW: u8 = 0;
const TAG_ZSTD: u8 = 1;

/// The largest encoded chunk anyone may send: a raw chunk plus its tag, or a zstd frame that
/// expanded slightly on incompressible data.
pub const MAX_ENCODED_CHUNK: usize = CHUNK_MAX as usize + 64 * 1024;

/// Encodes a chunk for storage and transfer: zstd at `level` when that saves at least 1/32 of
/// the bytes, raw otherwise (already-compressed archives would only cost CPU twice).
pub fn encode_chunk(raw: &[u8], level: i32) -> Vec<u8> {
    if let Ok(compressed) = zstd::bulk::compress(raw, level) {
        if compressed.len() + raw.len() / 32 < raw.len() {
            let mut out = Vec::with_capacity(compressed.len() + 1);
            out.push(TAG_ZSTD);
            out.extend_from_slice(&compressed);
            return out;
        }
    }
    let mut out = Vec::with_capacity(raw.len() + 1);
    out.push(TAG_RAW);
    out.extend_from_slice(raw);
    out
}

/// Decodes an encoded chunk and checks it against `digest`. The output is bounded by
/// [`CHUNK_MAX`], so a hostile frame cannot make us allocate without limit.
pub fn decode_chunk(encoded: &[u8], digest: &Digest) -> Result<Vec<u8>> {
    let corrupt = |reason: String| CacheError::CorruptChunk {
        digest: digest.to_hex(),
        reason,
    };
    let (tag, body) = encoded
        .split_first()
        .ok_or_else(|| corrupt("empty chunk".into()))?;
    let raw = match *tag {
        TAG_RAW => body.to_vec(),
        TAG_ZSTD => zstd::bulk::decompress(body, CHUNK_MAX as usize)
            .map_err(|e| corrupt(format!("zstd frame does not decode: {e}")))?,
        other => return Err(corrupt(format!("unknown codec tag {other}"))),
    };
    if raw.len() > CHUNK_MAX as usize {
        return Err(corrupt(format!(
            "{} bytes exceed the chunk limit",
            raw.len()
        )));
    }
    let actual = Digest::of(&raw);
    if actual != *digest {
        return Err(corrupt(format!("content hashes to {actual}")));
    }
    Ok(raw)
}

/// Filesystem chunk store. Writes go to a temp file that is fsynced and renamed into place, so
/// a chunk file is either absent or complete.
#[derive(Debug)]
pub struct ChunkStore {
    root: PathBuf,
    tmp: PathBuf,
    tmp_counter: AtomicU64,
}

impl ChunkStore {
    pub fn open(data_dir: &Path) -> Result<Self> {
        let root = data_dir.join("chunks");
        let tmp = data_dir.join("tmp");
        fs::create_dir_all(&root).map_err(|e| CacheError::io("create", &root, e))?;
        // Temp files left by a killed server are garbage: nothing refers to them.
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(|e| CacheError::io("create", &tmp, e))?;
        Ok(ChunkStore {
            root,
            tmp,
            tmp_counter: AtomicU64::new(0),
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
        let raw_len = decode_chunk(encoded, digest)?.len() as u64;
        self.write_atomically(digest, encoded)?;
        Ok((encoded.len() as u64, raw_len))
    }

    /// Encodes and stores raw chunk bytes whose digest the caller computed.
    pub fn put_raw(&self, digest: &Digest, raw: &[u8], level: i32) -> Result<u64> {
        let encoded = encode_chunk(raw, level);
        self.write_atomically(digest, &encoded)?;
        Ok(encoded.len() as u64)
    }

    fn write_atomically(&self, digest: &Digest, encoded: &[u8]) -> Result<()> {
        let target = self.path_of(digest);
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{}-{n}", digest.to_hex()));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(encoded)?;
            // The entry that will reference this chunk is committed after this returns, so the
            // bytes must be durable before the rename makes them visible.
            f.sync_data()?;
            Ok(())
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
        for shard in shards {
            let dir = self.root.join(shard);
            if let Ok(f) = File::open(&dir) {
                f.sync_all().map_err(|e| CacheError::io("sync", &dir, e))?;
            }
        }
        Ok(())
    }

    /// Reads the encoded bytes of a chunk and verifies them. Returns the encoded bytes and the
    /// uncompressed length.
    pub fn read_encoded(&self, digest: &Digest) -> Result<(Vec<u8>, usize)> {
        let path = self.path_of(digest);
        let encoded = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(CacheError::MissingChunk(digest.to_hex()))
            }
            Err(e) => return Err(CacheError::io("read chunk", path, e)),
        };
        let raw = decode_chunk(&encoded, digest)?;
        Ok((encoded, raw.len()))
    }

    /// Reads and verifies a chunk, returning its uncompressed bytes.
    pub fn read_raw(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.path_of(digest);
        let encoded = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(CacheError::MissingChunk(digest.to_hex()))
            }
            Err(e) => return Err(CacheError::io("read chunk", path, e)),
        };
        decode_chunk(&encoded, digest)
    }

    pub fn remove(&self, digest: &Digest) -> Result<()> {
        let path = self.path_of(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CacheError::io("remove chunk", path, e)),
        }
    }
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
    fn store_round_trip_and_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
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
