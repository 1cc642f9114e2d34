//! Save: walk the paths, cut the concatenated file contents into content-defined chunks, ask
//! the server which chunks it lacks (batch by batch, so memory stays bounded), upload only those,
//! then commit the chunk list and the tree listing.

use super::glob::parse_patterns;
use super::tree::{self, FileStats, Kind, TreeEntry};
use super::{status_error, CacheClient, PathContext};
use crate::beneath::{Beneath, ParentDir};
use crate::cdc::{ChunkBytes, StreamChunker};
use crate::chunks::encode_chunk_into;
use crate::digest::{ChunkRef, Digest};
use crate::error::{CacheError, Result};
use crate::http::native::wire::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver};
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

/// A file to read, in listing order.
struct FileSource {
    path: PathBuf,
}

/// A file's listing metadata, read from the open file (the walk lists regular files by name
/// alone, see [`tree::FileStats::FromOpenFile`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct OpenedFile {
    size: u64,
    mode: u32,
    mtime_secs: i64,
    mtime_nanos: u32,
}

/// Reads the files the walk sends back to back. Each file's size is taken when it is opened and
/// exactly that many bytes are read: a file that shrinks meanwhile is an error (it would
/// otherwise corrupt the entry silently), one that grows is saved as it was when opened. Each
/// file's start in the stream is appended to `starts`, which tells the chunker where the pieces
/// are, and its metadata to `opened`, for the listing.
struct ConcatReader {
    files: Receiver<FileSource>,
    /// The directory of the last file opened: the next is mostly its sibling.
    dir: ParentDir,
    current: Option<(File, u64, PathBuf)>,
    offset: u64,
    starts: Arc<Mutex<Vec<u64>>>,
    opened: Arc<Mutex<Vec<OpenedFile>>>,
}

impl ConcatReader {
    fn new(files: Receiver<FileSource>, dir: ParentDir) -> Self {
        ConcatReader {
            files,
            dir,
            current: None,
            offset: 0,
            starts: Arc::default(),
            opened: Arc::default(),
        }
    }

    /// Opens `path` (never through a symlink, never blocking on a FIFO) and checks that it is
    /// still a regular file.
    fn open(&mut self, path: &std::path::Path) -> io::Result<(File, OpenedFile)> {
        let file = self.dir.open_read(path).map_err(|e| match &e {
            CacheError::Io { source, .. } => io::Error::new(source.kind(), e.to_string()),
            _ => io::Error::other(e.to_string()),
        })?;
        let meta = file
            .metadata()
            .map_err(|e| io::Error::new(e.kind(), format!("stat {}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(io::Error::other(format!(
                "{} is no longer a regular file",
                path.display()
            )));
        }
        let opened = OpenedFile {
            size: meta.len(),
            mode: meta.mode() & 0o7777,
            mtime_secs: meta.mtime(),
            mtime_nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        };
        Ok((file, opened))
    }
}

impl Read for ConcatReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((file, remaining, path)) = &mut self.current {
                if *remaining == 0 {
                    self.current = None;
                    continue;
                }
                let want = buf.len().min(*remaining as usize);
                let n = file.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::other(format!(
                        "{} shrank while it was being saved",
                        path.display()
                    )));
                }
                *remaining -= n as u64;
                self.offset += n as u64;
                return Ok(n);
            }
            // The walk ended (or failed: the caller reports its error) when the channel closes.
            let Ok(next) = self.files.recv() else {
                return Ok(0);
            };
            self.starts
                .lock()
                .map_err(|_| io::Error::other("file list poisoned"))?
                .push(self.offset);
            let (file, opened) = self.open(&next.path)?;
            self.opened
                .lock()
                .map_err(|_| io::Error::other("file list poisoned"))?
                .push(opened);
            if opened.size > 0 {
                self.current = Some((file, opened.size, next.path));
            }
        }
    }
}

/// The part of file `file` (index among the listing's files) at `lo..hi` of a chunk.
#[derive(Clone, Copy)]
struct Piece {
    file: usize,
    lo: usize,
    hi: usize,
}

/// A chunk cut by the producer, waiting for a worker.
struct CutChunk {
    seq: usize,
    data: ChunkBytes,
    pieces: Vec<Piece>,
}

/// What a worker learnt about one chunk: its reference and the digests of its file pieces.
struct HashedChunk {
    seq: usize,
    chunk: ChunkRef,
    pieces: Vec<(usize, [u8; 32])>,
}

/// The pieces of chunk `[start, end)` of the stream, given the start of every file opened so
/// far (all files overlapping the chunk are, since its bytes were read). `cursor` is the first
/// file that may still overlap, and moves forward.
fn pieces_of(starts: &[u64], cursor: &mut usize, start: u64, end: u64) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut i = *cursor;
    while i < starts.len() && starts[i] < end {
        let file_end = starts.get(i + 1).copied().unwrap_or(end).min(end);
        let lo = starts[i].max(start);
        if file_end > lo {
            out.push(Piece {
                file: i,
                lo: (lo - start) as usize,
                hi: (file_end - start) as usize,
            });
        }
        if starts.get(i + 1).is_some_and(|&next| next <= end) {
            i += 1;
        } else {
            break;
        }
    }
    *cursor = i;
    out
}

/// Joins a pipeline thread, keeping the first error seen.
fn join_into<T>(
    handle: std::thread::JoinHandle<Result<T>>,
    what: &str,
    first_error: &mut Option<CacheError>,
) -> Option<T> {
    match handle.join() {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            first_error.get_or_insert(e);
            None
        }
        Err(_) => {
            first_error.get_or_insert(CacheError::Task(format!("the {what} thread panicked")));
            None
        }
    }
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
        let beneath = Arc::new(Beneath::for_save(
            &req.context.workspace,
            req.context.confine,
        ));
        // The walk runs on its own thread and hands files to the reader as it finds them, so
        // reading and uploading start before the last directory is listed.
        let (file_tx, file_rx) = channel::<FileSource>();
        let (found_tx, found_rx) = sync_channel::<()>(1);
        let walker = {
            let patterns = patterns.clone();
            std::thread::spawn(move || {
                tree::walk_with(&patterns, FileStats::FromOpenFile, |e, path| {
                    let _ = found_tx.try_send(());
                    if e.kind != Kind::File {
                        return true;
                    }
                    file_tx
                        .send(FileSource {
                            path: path.to_path_buf(),
                        })
                        .is_ok()
                })
            })
        };
        if found_rx.recv().is_err() {
            // The walk ended without listing anything (or failed).
            let mut error = None;
            join_into(walker, "walk", &mut error);
            return match error {
                Some(e) => Err(e),
                None => Ok(SaveOutcome::NothingToSave),
            };
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
        // Ok(body) to go on; Err(what save returns) when the server refused or failed.
        let reserved: std::result::Result<Vec<u8>, Result<SaveOutcome>> = match self.exchange(
            "POST",
            "/native/v1/reserve",
            Some(("application/json", &payload)),
        ) {
            Ok((200..=299, body)) => Ok(body),
            Ok((409, _)) => Err(Ok(SaveOutcome::AlreadyExists)),
            Ok((403, body)) => Err(Ok(SaveOutcome::Denied(
                status_error(403, &body).to_string(),
            ))),
            Ok((status, body)) => Err(Err(status_error(status, &body))),
            Err(e) => Err(Err(e)),
        };
        let body = match reserved {
            Ok(body) => body,
            Err(result) => {
                // Stop the walk: its next send fails.
                drop(file_rx);
                let _ = walker.join();
                return result;
            }
        };
        let id = serde_json::from_slice::<ReserveResponse>(&body)
            .map_err(|e| CacheError::Protocol(e.to_string()))?
            .upload_id;
        match self.upload_tree(id, file_rx, walker, beneath) {
            Ok(stats) => Ok(SaveOutcome::Saved(stats)),
            Err(e) => {
                // Free the key now rather than when the reservation times out.
                let _ = self.exchange("POST", &format!("/native/v1/uploads/{id}/abort"), None);
                Err(e)
            }
        }
    }

    /// The save pipeline: the walk lists, one thread reads the files back to back and cuts the
    /// stream into chunks, `concurrency` workers hash each chunk and its file pieces (blake3
    /// once per byte; pieces smaller than their chunk also by xxh3), compress and upload what
    /// the server lacks.
    fn upload_tree(
        &self,
        id: u64,
        files: Receiver<FileSource>,
        walker: std::thread::JoinHandle<Result<Vec<TreeEntry>>>,
        beneath: Arc<Beneath>,
    ) -> Result<SaveStats> {
        let reader = ConcatReader::new(files, ParentDir::new(beneath));
        let starts = Arc::clone(&reader.starts);
        let opened = Arc::clone(&reader.opened);
        // Chunks in flight (this queue and the workers' batches) pin the windows they were cut
        // from: a short queue and small batches keep that memory, faulted in fresh, small.
        let (tx, rx) = sync_channel::<CutChunk>(self.concurrency);
        let producer = {
            let starts = Arc::clone(&starts);
            std::thread::spawn(move || -> Result<()> {
                let mut cursor = 0usize;
                let chunker = StreamChunker::threaded(reader).map_err(|e| {
                    CacheError::Task(format!("starting the save's reader thread: {e}"))
                })?;
                for (seq, chunk) in chunker.enumerate() {
                    let chunk = chunk.map_err(|e| CacheError::Io {
                        action: "read",
                        path: PathBuf::from("saved files"),
                        source: e,
                    })?;
                    let end = chunk.offset + chunk.data.len() as u64;
                    let pieces = {
                        let starts = starts
                            .lock()
                            .map_err(|_| CacheError::Task("file list poisoned".into()))?;
                        pieces_of(&starts, &mut cursor, chunk.offset, end)
                    };
                    let cut = CutChunk {
                        seq,
                        data: chunk.data,
                        pieces,
                    };
                    if tx.send(cut).is_err() {
                        break;
                    }
                }
                Ok(())
            })
        };
        let rx = Arc::new(Mutex::new(rx));
        let results: Arc<Mutex<Vec<HashedChunk>>> = Arc::default();
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
            join_into(w, "upload", &mut first_error);
        }
        drop(rx);
        join_into(producer, "chunking", &mut first_error);
        let entries = join_into(walker, "walk", &mut first_error);
        if let Some(e) = first_error {
            return Err(e);
        }
        let mut entries = entries.unwrap_or_default();
        let mut results = std::mem::take(
            &mut *results
                .lock()
                .map_err(|_| CacheError::Task("results poisoned".into()))?,
        );
        results.sort_by_key(|r| r.seq);
        let file_count = entries.iter().filter(|e| e.kind == Kind::File).count();
        let opened = std::mem::take(
            &mut *opened
                .lock()
                .map_err(|_| CacheError::Task("file list poisoned".into()))?,
        );
        if opened.len() != file_count {
            return Err(CacheError::Task(format!(
                "read {} files of the {file_count} the walk listed",
                opened.len()
            )));
        }
        let mut piece_digests: Vec<Vec<[u8; 32]>> = vec![Vec::new(); file_count];
        for r in &results {
            for (file, digest) in &r.pieces {
                let slot = piece_digests.get_mut(*file).ok_or_else(|| {
                    CacheError::Task(format!("chunk piece names file {file} of {file_count}"))
                })?;
                slot.push(*digest);
            }
        }
        let mut total = 0u64;
        for ((e, pieces), file) in entries
            .iter_mut()
            .filter(|e| e.kind == Kind::File)
            .zip(piece_digests)
            .zip(opened)
        {
            e.size = file.size;
            e.mode = file.mode;
            e.mtime_secs = file.mtime_secs;
            e.mtime_nanos = file.mtime_nanos;
            e.blake3 = tree::piece_digest(pieces);
            total += e.size;
        }
        let chunks: Vec<ChunkRef> = results.into_iter().map(|r| r.chunk).collect();
        let streamed: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
        if streamed != total {
            return Err(CacheError::Task(format!(
                "read {streamed} bytes of files that were {total} bytes when opened"
            )));
        }
        let meta = tree::encode(&entries)?;
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
            files: file_count as u64,
            bytes: total,
            chunks: chunks.len() as u64,
            chunks_uploaded: uploaded_chunks.load(Ordering::Relaxed),
            bytes_uploaded: uploaded_bytes.load(Ordering::Relaxed),
        })
    }

    /// Takes batches of cut chunks, hashes them and their pieces, asks which are missing,
    /// uploads those.
    fn upload_worker(
        &self,
        id: u64,
        rx: &Mutex<Receiver<CutChunk>>,
        results: &Mutex<Vec<HashedChunk>>,
        uploaded_chunks: &AtomicU64,
        uploaded_bytes: &AtomicU64,
    ) -> Result<()> {
        const BATCH: usize = 4;
        // One buffer for every chunk this worker encodes: already mapped after the first.
        let mut encoded = Vec::new();
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
            let hashed: Vec<HashedChunk> = batch
                .iter()
                .map(|c| {
                    let digest = Digest::of(&c.data);
                    let pieces = c
                        .pieces
                        .iter()
                        .map(|p| {
                            let d = if p.lo == 0 && p.hi == c.data.len() {
                                digest.0
                            } else {
                                tree::partial_piece_digest(&c.data[p.lo..p.hi])
                            };
                            (p.file, d)
                        })
                        .collect();
                    HashedChunk {
                        seq: c.seq,
                        chunk: ChunkRef {
                            digest,
                            len: c.data.len() as u32,
                        },
                        pieces,
                    }
                })
                .collect();
            let ask = MissingRequest {
                chunks: hashed
                    .iter()
                    .map(|h| WireChunk {
                        d: h.chunk.digest.to_hex(),
                        n: h.chunk.len,
                    })
                    .collect(),
            };
            let answer: MissingResponse =
                self.json(&format!("/native/v1/uploads/{id}/missing"), &ask)?;
            let mut missing: std::collections::HashSet<String> =
                answer.missing.into_iter().collect();
            for (chunk, h) in batch.iter().zip(&hashed) {
                let hex = h.chunk.digest.to_hex();
                // remove(): a chunk repeated within the batch travels once.
                if !missing.remove(&hex) {
                    continue;
                }
                encode_chunk_into(&mut encoded, &chunk.data, self.zstd_level);
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
            results
                .lock()
                .map_err(|_| CacheError::Task("results poisoned".into()))?
                .extend(hashed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn read_all(paths: &[&std::path::Path]) -> io::Result<(Vec<u8>, Vec<OpenedFile>)> {
        let (tx, rx) = channel();
        for path in paths {
            tx.send(FileSource {
                path: path.to_path_buf(),
            })
            .unwrap();
        }
        drop(tx);
        let mut reader = ConcatReader::new(rx, ParentDir::new(Arc::new(Beneath::unconfined())));
        let mut out = Vec::new();
        reader.read_to_end(&mut out)?;
        let opened = reader.opened.lock().unwrap().clone();
        Ok((out, opened))
    }

    /// The listing's metadata of a file comes from the open file; what the walk listed as a
    /// regular file may be something else by the time it is read: a symlink is not followed
    /// out of the cached paths, a FIFO neither hangs the save nor is read, a directory is an
    /// error.
    #[test]
    fn files_are_read_as_opened_and_changed_ones_are_errors_not_hangs() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, empty) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("empty"),
        );
        std::fs::write(&a, b"alpha").unwrap();
        std::fs::write(&b, b"beta").unwrap();
        std::fs::write(&empty, b"").unwrap();
        std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o751)).unwrap();
        let (bytes, opened) = read_all(&[&a, &empty, &b]).unwrap();
        assert_eq!(bytes, b"alphabeta");
        let expected: Vec<OpenedFile> = [&a, &empty, &b]
            .iter()
            .map(|p| {
                let m = std::fs::metadata(p).unwrap();
                OpenedFile {
                    size: m.len(),
                    mode: m.mode() & 0o7777,
                    mtime_secs: m.mtime(),
                    mtime_nanos: m.mtime_nsec() as u32,
                }
            })
            .collect();
        assert_eq!(opened, expected);
        assert_eq!(opened[2].mode, 0o751);

        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, b"secret").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        assert!(read_all(&[&link]).is_err());

        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let error = read_all(&[&sub]).unwrap_err().to_string();
        assert!(error.contains("no longer a regular file"), "{error}");

        let fifo = dir.path().join("fifo");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that lives for the call.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(read_all(&[&fifo]).is_err());
        });
        assert_eq!(
            done_rx.recv_timeout(std::time::Duration::from_secs(10)),
            Ok(true),
            "reading a FIFO must fail at once"
        );
    }

    #[test]
    fn pieces_follow_file_and_chunk_boundaries() {
        // Files: 0 at [0,10), 1 empty at 10, 2 at [10,25), 3 at [25,..).
        let starts = [0, 10, 10, 25];
        let mut cursor = 0;
        let first = pieces_of(&starts, &mut cursor, 0, 12);
        let got: Vec<_> = first.iter().map(|p| (p.file, p.lo, p.hi)).collect();
        assert_eq!(got, vec![(0, 0, 10), (2, 10, 12)]);
        let second = pieces_of(&starts, &mut cursor, 12, 30);
        let got: Vec<_> = second.iter().map(|p| (p.file, p.lo, p.hi)).collect();
        assert_eq!(got, vec![(2, 0, 13), (3, 13, 18)]);
        let third = pieces_of(&starts, &mut cursor, 30, 40);
        let got: Vec<_> = third.iter().map(|p| (p.file, p.lo, p.hi)).collect();
        assert_eq!(got, vec![(3, 0, 10)]);
    }
}
