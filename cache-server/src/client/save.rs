//! Save: walk the paths, cut the concatenated file contents into content-defined chunks, ask
//! the server which chunks it lacks (batch by batch, so memory stays bounded), upload only those,
//! then commit the chunk list and the tree listing.

use super::glob::parse_patterns;
use super::tree::{self, Kind, TreeEntry};
use super::{status_error, CacheClient, PathContext};
use crate::chunks::{encode_chunk, CHUNK_AVG, CHUNK_MAX, CHUNK_MIN};
use crate::digest::{ChunkRef, Digest};
use crate::error::{CacheError, Result};
use crate::http::native::wire::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct SaveRequest {
    pub key: String,
    /// The `path:` lines.
    pub paths: Vec<String>,
    pub context: PathContext,
    /// Defaults to [`super::tree_version`] of `paths`.
    pub version: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaveStats {
    pub entry_id: u64,
    pub files: u64,
    /// Bytes of file content in the entry.
    pub bytes: u64,
    pub chunks: u64,
    pub chunks_uploaded: u64,
    /// Encoded bytes that went over the wire.
    pub bytes_uploaded: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaveOutcome {
    Saved(SaveStats),
    /// The key is taken in this scope (entries are write-once), or being saved by another job.
    AlreadyExists,
    /// The token may not write (read-only job); the message says why.
    Denied(String),
    /// The paths matched nothing.
    NothingToSave,
}

/// Reads the files of a listing back to back, hashing each and insisting it still has the size
/// the walk saw (a file that changes mid-save would otherwise corrupt the entry silently).
struct ConcatReader {
    files: Vec<(PathBuf, u64)>,
    next: usize,
    current: Option<(File, u64, blake3::Hasher)>,
    hashes: Arc<Mutex<Vec<[u8; 32]>>>,
}

impl Read for ConcatReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((file, remaining, hasher)) = &mut self.current {
                if *remaining == 0 {
                    let digest = *hasher.finalize().as_bytes();
                    self.hashes
                        .lock()
                        .map_err(|_| io::Error::other("hash list poisoned"))?
                        .push(digest);
                    self.current = None;
                    continue;
                }
                let want = buf.len().min(*remaining as usize);
                let n = file.read(&mut buf[..want])?;
                if n == 0 {
                    let path = &self.files[self.next - 1].0;
                    return Err(io::Error::other(format!(
                        "{} shrank while it was being saved",
                        path.display()
                    )));
                }
                hasher.update(&buf[..n]);
                *remaining -= n as u64;
                return Ok(n);
            }
            let Some((path, size)) = self.files.get(self.next) else {
                return Ok(0);
            };
            let file = File::open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            self.current = Some((file, *size, blake3::Hasher::new()));
            self.next += 1;
        }
    }
}

/// A chunk cut by the producer, waiting for a worker.
struct CutChunk {
    seq: usize,
    data: Vec<u8>,
}

impl CacheClient {
    /// Saves the paths under `key`. Returns `AlreadyExists`/`Denied` rather than failing for the
    /// two refusals a job must tolerate.
    pub fn save(&self, req: &SaveRequest) -> Result<SaveOutcome> {
        let patterns = parse_patterns(
            &req.paths,
            &req.context.workspace,
            req.context.home.as_deref(),
        )?;
        let mut entries = tree::walk(&patterns)?;
        if entries.is_empty() {
            return Ok(SaveOutcome::NothingToSave);
        }
        let version = req
            .version
            .clone()
            .unwrap_or_else(|| super::tree_version(&req.paths));
        let payload = serde_json::to_vec(&ReserveRequest {
            key: req.key.clone(),
            version,
        })
        .map_err(|e| CacheError::Protocol(e.to_string()))?;
        let (status, body) = self.exchange(
            "POST",
            "/native/v1/reserve",
            Some(("application/json", &payload)),
        )?;
        match status {
            200..=299 => {}
            409 => return Ok(SaveOutcome::AlreadyExists),
            403 => return Ok(SaveOutcome::Denied(status_error(status, &body).to_string())),
            _ => return Err(status_error(status, &body)),
        }
        let id = serde_json::from_slice::<ReserveResponse>(&body)
            .map_err(|e| CacheError::Protocol(e.to_string()))?
            .upload_id;
        match self.upload_tree(id, &patterns, &mut entries) {
            Ok(stats) => Ok(SaveOutcome::Saved(stats)),
            Err(e) => {
                // Free the key now rather than when the reservation times out.
                let _ = self.exchange("POST", &format!("/native/v1/uploads/{id}/abort"), None);
                Err(e)
            }
        }
    }

    fn upload_tree(
        &self,
        id: u64,
        patterns: &[super::glob::Pattern],
        entries: &mut [TreeEntry],
    ) -> Result<SaveStats> {
        let roots = tree::roots(patterns);
        let files: Vec<(PathBuf, u64)> = entries
            .iter()
            .filter(|e| e.kind == Kind::File)
            .map(|e| {
                let root = &roots[e.root as usize];
                (
                    if e.rel.is_empty() {
                        root.clone()
                    } else {
                        root.join(&e.rel)
                    },
                    e.size,
                )
            })
            .collect();
        let total: u64 = files.iter().map(|f| f.1).sum();
        let hashes = Arc::new(Mutex::new(Vec::with_capacity(files.len())));
        let reader = ConcatReader {
            files,
            next: 0,
            current: None,
            hashes: Arc::clone(&hashes),
        };
        let (tx, rx) = sync_channel::<CutChunk>(self.concurrency * 2);
        let producer = std::thread::spawn(move || -> Result<()> {
            let chunker = fastcdc::v2020::StreamCDC::new(reader, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX);
            for (seq, chunk) in chunker.enumerate() {
                let chunk = chunk.map_err(|e| CacheError::Io {
                    action: "read",
                    path: PathBuf::from("saved files"),
                    source: io::Error::other(e.to_string()),
                })?;
                if tx
                    .send(CutChunk {
                        seq,
                        data: chunk.data,
                    })
                    .is_err()
                {
                    break;
                }
            }
            Ok(())
        });
        let rx = Arc::new(Mutex::new(rx));
        let results: Arc<Mutex<Vec<(usize, ChunkRef)>>> = Arc::default();
        let uploaded_chunks = Arc::new(AtomicU64::new(0));
        let uploaded_bytes = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..self.concurrency.max(1))
            .map(|_| {
                let (client, rx, results, uc, ub) = (
                    self.clone(),
                    Arc::clone(&rx),
                    Arc::clone(&results),
                    Arc::clone(&uploaded_chunks),
                    Arc::clone(&uploaded_bytes),
                );
                std::thread::spawn(move || client.upload_worker(id, &rx, &results, &uc, &ub))
            })
            .collect();
        let mut first_error = None;
        for w in workers {
            match w.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert(CacheError::Task("an upload thread panicked".into()));
                }
            }
        }
        drop(rx);
        match producer.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(CacheError::Task("the chunking thread panicked".into()));
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let mut results = std::mem::take(
            &mut *results
                .lock()
                .map_err(|_| CacheError::Task("results poisoned".into()))?,
        );
        results.sort_by_key(|r| r.0);
        let chunks: Vec<ChunkRef> = results.into_iter().map(|r| r.1).collect();
        let hashes = std::mem::take(
            &mut *hashes
                .lock()
                .map_err(|_| CacheError::Task("hashes poisoned".into()))?,
        );
        for (e, h) in entries
            .iter_mut()
            .filter(|e| e.kind == Kind::File)
            .zip(hashes)
        {
            e.blake3 = h;
        }
        let meta = tree::encode(entries)?;
        let commit = CommitRequest {
            size: total,
            chunks: chunks
                .iter()
                .map(|c| WireChunk {
                    d: c.digest.to_hex(),
                    n: c.len,
                })
                .collect(),
            meta: STANDARD.encode(meta),
        };
        let done: CommitResponse =
            self.json(&format!("/native/v1/uploads/{id}/commit"), &commit)?;
        Ok(SaveStats {
            entry_id: done.entry_id,
            files: entries.iter().filter(|e| e.kind == Kind::File).count() as u64,
            bytes: total,
            chunks: chunks.len() as u64,
            chunks_uploaded: uploaded_chunks.load(Ordering::Relaxed),
            bytes_uploaded: uploaded_bytes.load(Ordering::Relaxed),
        })
    }

    /// Takes batches of cut chunks, asks which are missing, uploads those.
    fn upload_worker(
        &self,
        id: u64,
        rx: &Mutex<Receiver<CutChunk>>,
        results: &Mutex<Vec<(usize, ChunkRef)>>,
        uploaded_chunks: &AtomicU64,
        uploaded_bytes: &AtomicU64,
    ) -> Result<()> {
        const BATCH: usize = 8;
        loop {
            let batch: Vec<CutChunk> = {
                let rx = rx
                    .lock()
                    .map_err(|_| CacheError::Task("chunk queue poisoned".into()))?;
                let Ok(first) = rx.recv() else { return Ok(()) };
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(c) => batch.push(c),
                        Err(_) => break,
                    }
                }
                batch
            };
            let refs: Vec<ChunkRef> = batch
                .iter()
                .map(|c| ChunkRef {
                    digest: Digest::of(&c.data),
                    len: c.data.len() as u32,
                })
                .collect();
            let ask = MissingRequest {
                chunks: refs
                    .iter()
                    .map(|c| WireChunk {
                        d: c.digest.to_hex(),
                        n: c.len,
                    })
                    .collect(),
            };
            let answer: MissingResponse =
                self.json(&format!("/native/v1/uploads/{id}/missing"), &ask)?;
            let mut missing: std::collections::HashSet<String> =
                answer.missing.into_iter().collect();
            for (chunk, r) in batch.iter().zip(&refs) {
                let hex = r.digest.to_hex();
                // remove(): a chunk repeated within the batch travels once.
                if !missing.remove(&hex) {
                    continue;
                }
                let encoded = encode_chunk(&chunk.data, self.zstd_level);
                let (status, body) = self.exchange(
                    "PUT",
                    &format!("/native/v1/uploads/{id}/chunks/{hex}"),
                    Some(("application/octet-stream", &encoded)),
                )?;
                if !(200..300).contains(&status) {
                    return Err(status_error(status, &body));
                }
                uploaded_chunks.fetch_add(1, Ordering::Relaxed);
                uploaded_bytes.fetch_add(encoded.len() as u64, Ordering::Relaxed);
            }
            let mut out = results
                .lock()
                .map_err(|_| CacheError::Task("results poisoned".into()))?;
            out.extend(batch.iter().map(|c| c.seq).zip(refs));
        }
    }
}
