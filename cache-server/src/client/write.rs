//! Writing a restored tree's files: a pool of threads, each fetching a chunk, verifying it and
//! writing every file piece it holds itself. A file inside one chunk is created, written and
//! closed in one go; a file spread over several chunks is created once and each piece written
//! at its offset by whichever thread holds that chunk, in any order. No thread waits for chunks
//! in order and no bytes are handed between threads: file creation, which dominates on real
//! filesystems, runs on every thread at once, and consecutive chunks (different directories)
//! go to different threads, so creates rarely queue on one directory's lock.

use super::CacheClient;
use crate::beneath::{Beneath, ParentDir};
use crate::digest::ChunkRef;
use crate::error::{CacheError, Result};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Threads that fetch, verify and write at once. File creation blocks on the filesystem
/// journal and directory locks more than on the CPU, so more threads than cores pay off.
const RESTORE_THREADS: usize = 8;

/// One file of the listing, placed in the entry's byte stream.
pub(super) struct FilePlan {
    pub dest: PathBuf,
    pub start: u64,
    pub size: u64,
    pub mode: u32,
    pub mtime: Option<SystemTime>,
    /// Already present with the same content: neither written nor fetched for.
    pub skip: bool,
    /// Something exists at `dest` and must be removed first (never written through).
    pub exists: bool,
}

impl FilePlan {
    fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// What the pool did, for the restore's statistics.
#[derive(Default)]
pub(super) struct Written {
    pub files: u64,
    pub bytes: u64,
    pub chunks: u64,
}

fn finish_file(file: &File, dest: &Path, mtime: Option<SystemTime>) -> Result<()> {
    if let Some(t) = mtime {
        file.set_modified(t)
            .map_err(|e| CacheError::io("set mtime of", dest, e))?;
    }
    Ok(())
}

fn write_whole(dir: &mut ParentDir, f: &FilePlan, data: &[u8]) -> Result<()> {
    let mut file = dir.create(&f.dest, f.mode, f.exists)?;
    file.write_all(data)
        .map_err(|e| CacheError::io("write", &f.dest, e))?;
    finish_file(&file, &f.dest, f.mtime)
}

/// A file spread over several chunks, open while its pieces arrive.
struct OpenFile {
    file: File,
    remaining: AtomicU64,
    /// Taken around each write. The kernel serialises buffered writes to one file on its inode
    /// lock, and a thread waiting for that lock spins on a CPU while the holder copies; waiting
    /// here sleeps instead, so the other threads decode and hash their chunks meanwhile.
    writing: Mutex<()>,
}

/// Shared state of one restore's writer pool.
struct Pool<'a> {
    client: &'a CacheClient,
    beneath: Arc<Beneath>,
    files: &'a [FilePlan],
    /// Indices into `files` of the files with bytes, in stream order.
    streamed: Vec<usize>,
    chunks: &'a [ChunkRef],
    chunk_starts: Vec<u64>,
    order: Vec<usize>,
    next: AtomicUsize,
    open: Mutex<HashMap<usize, Arc<OpenFile>>>,
    failed: AtomicBool,
    files_written: AtomicU64,
    bytes_written: AtomicU64,
}

impl Pool<'_> {
    fn run_thread(&self) -> Result<()> {
        let mut dir = ParentDir::new(Arc::clone(&self.beneath));
        while !self.failed.load(Ordering::Relaxed) {
            let Some(&index) = self.order.get(self.next.fetch_add(1, Ordering::Relaxed)) else {
                return Ok(());
            };
            let result = self.chunk(&mut dir, index);
            if result.is_err() {
                self.failed.store(true, Ordering::Relaxed);
                return result;
            }
        }
        Ok(())
    }

    fn chunk(&self, dir: &mut ParentDir, index: usize) -> Result<()> {
        let expected = self.chunks[index];
        self.client
            .fetch_chunk_with(&expected.digest, |data| self.write_chunk(dir, index, data))
    }

    /// Writes the file pieces in chunk `index`, whose checked bytes are `data`.
    fn write_chunk(&self, dir: &mut ParentDir, index: usize, data: &[u8]) -> Result<()> {
        let expected = self.chunks[index];
        if data.len() != expected.len as usize {
            return Err(CacheError::Protocol(format!(
                "chunk {index} has {} bytes, the manifest says {}",
                data.len(),
                expected.len
            )));
        }
        let c_start = self.chunk_starts[index];
        let c_end = c_start + data.len() as u64;
        let first = self
            .streamed
            .partition_point(|&i| self.files[i].end() <= c_start);
        for &fi in &self.streamed[first..] {
            let f = &self.files[fi];
            if f.start >= c_end {
                break;
            }
            if f.skip {
                continue;
            }
            let lo = f.start.max(c_start);
            let hi = f.end().min(c_end);
            let piece = &data[(lo - c_start) as usize..(hi - c_start) as usize];
            if f.start >= c_start && f.end() <= c_end {
                write_whole(dir, f, piece)?;
                self.files_written.fetch_add(1, Ordering::Relaxed);
                self.bytes_written.fetch_add(f.size, Ordering::Relaxed);
            } else {
                self.write_piece(dir, fi, f, lo - f.start, piece)?;
            }
        }
        Ok(())
    }

    /// Writes one piece of a file spread over chunks; the thread writing its last piece sets
    /// the mtime and closes it.
    fn write_piece(
        &self,
        dir: &mut ParentDir,
        fi: usize,
        f: &FilePlan,
        at: u64,
        piece: &[u8],
    ) -> Result<()> {
        let open = {
            let mut open = self
                .open
                .lock()
                .map_err(|_| CacheError::Task("open file table poisoned".into()))?;
            match open.get(&fi) {
                Some(o) => Arc::clone(o),
                None => {
                    let o = Arc::new(OpenFile {
                        file: dir.create(&f.dest, f.mode, f.exists)?,
                        remaining: AtomicU64::new(f.size),
                        writing: Mutex::new(()),
                    });
                    open.insert(fi, Arc::clone(&o));
                    o
                }
            }
        };
        {
            let _writing = open.writing.lock().unwrap_or_else(|p| p.into_inner());
            open.file
                .write_all_at(piece, at)
                .map_err(|e| CacheError::io("write", &f.dest, e))?;
        }
        let before = open
            .remaining
            .fetch_sub(piece.len() as u64, Ordering::AcqRel);
        if before == piece.len() as u64 {
            finish_file(&open.file, &f.dest, f.mtime)?;
            self.open
                .lock()
                .map_err(|_| CacheError::Task("open file table poisoned".into()))?
                .remove(&fi);
            self.files_written.fetch_add(1, Ordering::Relaxed);
            self.bytes_written.fetch_add(f.size, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Writes every file of `files` not marked `skip`, fetching only the chunks they overlap.
pub(super) fn write_files(
    client: &CacheClient,
    files: &[FilePlan],
    chunks: &[ChunkRef],
    beneath: &Arc<Beneath>,
) -> Result<Written> {
    let mut chunk_starts = Vec::with_capacity(chunks.len());
    let mut pos = 0u64;
    for c in chunks {
        chunk_starts.push(pos);
        pos += u64::from(c.len);
    }
    let streamed: Vec<usize> = (0..files.len()).filter(|&i| files[i].size > 0).collect();
    // A chunk is needed when any file that is written overlaps it.
    let mut wanted = vec![false; chunks.len()];
    let mut ci = 0usize;
    for f in streamed.iter().map(|&i| &files[i]).filter(|f| !f.skip) {
        while ci < chunks.len() && chunk_starts[ci] + u64::from(chunks[ci].len) <= f.start {
            ci += 1;
        }
        let mut k = ci;
        while k < chunks.len() && chunk_starts[k] < f.end() {
            wanted[k] = true;
            k += 1;
        }
    }
    let mut empty_written = 0;
    let mut dir = ParentDir::new(Arc::clone(beneath));
    for f in files.iter().filter(|f| !f.skip && f.size == 0) {
        write_whole(&mut dir, f, &[])?;
        empty_written += 1;
    }
    let order: Vec<usize> = (0..chunks.len()).filter(|&i| wanted[i]).collect();
    let pool = Pool {
        client,
        beneath: Arc::clone(beneath),
        files,
        streamed,
        chunks,
        chunk_starts,
        order,
        next: AtomicUsize::new(0),
        open: Mutex::new(HashMap::new()),
        failed: AtomicBool::new(false),
        files_written: AtomicU64::new(empty_written),
        bytes_written: AtomicU64::new(0),
    };
    let threads = std::env::var("KILN_RT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RESTORE_THREADS)
        .min(pool.order.len());
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| scope.spawn(|| pool.run_thread()))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(CacheError::Task("a restore thread panicked".into())))
            })
            .collect()
    });
    // A corrupt chunk is the error that matters (the caller turns it into a miss); other
    // threads then only report that they stopped.
    let mut first_error = None;
    for r in results {
        if let Err(e) = r {
            if first_error.is_none() || super::restore::is_corruption(&e) {
                first_error = Some(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let unfinished = pool.open.lock().map(|o| o.len()).unwrap_or(0);
    if unfinished > 0 {
        return Err(CacheError::Protocol(format!(
            "the entry ended before {unfinished} files were complete"
        )));
    }
    Ok(Written {
        files: pool.files_written.load(Ordering::Relaxed),
        bytes: pool.bytes_written.load(Ordering::Relaxed),
        chunks: pool.order.len() as u64,
    })
}
