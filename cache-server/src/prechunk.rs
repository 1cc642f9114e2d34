//! Cutting an archive upload (v1 PATCH ranges, v2 Put Blob) into chunks while it arrives.
//!
//! Without this, the commit reads the whole staged archive back and cuts, hashes and stores it
//! on one thread after the last byte came in: for a 250 MiB archive that was most of the save.
//! A worker thread follows the contiguous prefix of the upload instead and cuts whatever has
//! at least [`CHUNK_MAX`] bytes after it (a cut never looks further, so these cuts are the ones
//! a single pass over the finished archive makes); the commit cuts only the tail.
//!
//! A byte the worker read may be written again (a retried PATCH with other bytes, a shorter
//! final size): then the work is stale and the commit cuts the archive from the start, as
//! before. The chunks the worker stored stay pinned to the upload either way, so the
//! collector leaves them alone until the upload ends.

use crate::cdc::cut_length;
use crate::chunks::CHUNK_MAX;
use crate::digest::{ChunkRef, Digest};
use crate::error::Result;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Contiguous bytes past the last cut, beyond the look-ahead a cut needs, worth waking a worker
/// for: fewer would wake it for every small PATCH.
const START_AFTER: u64 = 8 << 20;
/// Bytes a worker reads back from the staged upload per pass (between checks for a stop); the
/// tail after its last cut, under [`CHUNK_MAX`], is read again by the next pass.
const PASS: u64 = 16 << 20;

/// Workers running across all uploads: at most one per CPU, since each holds a [`PASS`]-sized
/// buffer and more would only compete for the same cores. An upload without a worker is cut
/// at its commit, as before.
pub(crate) struct WorkerSlots {
    running: AtomicUsize,
    max: usize,
}

impl Default for WorkerSlots {
    fn default() -> Self {
        WorkerSlots {
            running: AtomicUsize::new(0),
            max: std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
        }
    }
}

impl WorkerSlots {
    pub fn try_take(&self) -> bool {
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn put_back(&self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Default)]
pub(crate) struct Prechunk {
    state: Mutex<State>,
    idle: Condvar,
}

#[derive(Default)]
pub(crate) struct State {
    /// Bytes `[0, cut)` are cut into `manifest`.
    pub(crate) cut: u64,
    /// The worker read, or is reading, bytes below this offset.
    read_upto: u64,
    manifest: Vec<ChunkRef>,
    dedup_saved: u64,
    /// A write landed below `read_upto`, or reading or storing failed: start over at commit.
    stale: bool,
    pub(crate) running: bool,
    stopped: bool,
    /// The cuts went to a commit (or were thrown away): a second `finish` gets none.
    taken: bool,
}

/// What the worker cut, handed to the commit.
pub(crate) struct Cut {
    pub upto: u64,
    pub read_upto: u64,
    pub manifest: Vec<ChunkRef>,
    pub dedup_saved: u64,
}

impl Prechunk {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    pub(crate) fn lock_for_tests(&self) -> MutexGuard<'_, State> {
        self.lock()
    }

    /// Call after writing bytes at `offset`: if the worker already read there, its cuts may
    /// describe bytes that are gone.
    pub fn note_write(&self, offset: u64) {
        let mut s = self.lock();
        if offset < s.read_upto {
            s.stale = true;
        }
    }

    /// Whether a worker should start now that `[0, contiguous)` has arrived; if so the caller
    /// must start one (running [`Prechunk::run`]), as this claims the slot.
    pub fn claim(&self, contiguous: u64) -> bool {
        let mut s = self.lock();
        if s.running || s.stale || s.stopped || contiguous < s.cut + CHUNK_MAX as u64 + START_AFTER
        {
            return false;
        }
        s.running = true;
        true
    }

    /// Releases a claim whose worker could not be started; the commit then cuts everything.
    pub fn give_up(&self) {
        let mut s = self.lock();
        s.running = false;
        s.stale = true;
        self.idle.notify_all();
    }

    /// The worker: cuts while at least [`CHUNK_MAX`] bytes past the last cut have arrived.
    /// `contiguous` reports the received prefix; `store` stores a chunk and says whether it was
    /// stored already.
    pub fn run(
        &self,
        file: &File,
        contiguous: impl Fn() -> u64,
        store: impl Fn(&Digest, &[u8]) -> Result<bool>,
    ) {
        let mut buf = Vec::new();
        loop {
            let arrived = contiguous();
            let (start, end) = {
                let mut s = self.lock();
                if s.stopped || s.stale || arrived < s.cut + CHUNK_MAX as u64 {
                    s.running = false;
                    self.idle.notify_all();
                    return;
                }
                let end = arrived.min(s.cut + PASS);
                s.read_upto = s.read_upto.max(end);
                (s.cut, end)
            };
            buf.resize((end - start) as usize, 0);
            let mut cut = Vec::new();
            let mut saved = 0u64;
            let mut pos = 0usize;
            let mut failed = file.read_exact_at(&mut buf, start).is_err();
            while !failed && buf.len() - pos >= CHUNK_MAX as usize {
                let len = cut_length(&buf[pos..]);
                let data = &buf[pos..pos + len];
                let digest = Digest::of(data);
                match store(&digest, data) {
                    Ok(already) => {
                        if already {
                            saved += len as u64;
                        }
                        cut.push(ChunkRef {
                            digest,
                            len: len as u32,
                        });
                        pos += len;
                    }
                    Err(_) => failed = true,
                }
            }
            let mut s = self.lock();
            if failed {
                // The commit's own pass reports the error, if it persists.
                s.stale = true;
            } else {
                s.cut = start + pos as u64;
                s.manifest.extend(cut);
                s.dedup_saved += saved;
            }
        }
    }

    /// Stops the worker (waiting for it) and takes its cuts, or `None` if they are stale or were
    /// taken before. No worker starts afterwards.
    pub fn finish(&self) -> Option<Cut> {
        let mut s = self.lock();
        s.stopped = true;
        while s.running {
            s = self.idle.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.stale || s.taken {
            return None;
        }
        s.taken = true;
        Some(Cut {
            upto: s.cut,
            read_upto: s.read_upto,
            manifest: std::mem::take(&mut s.manifest),
            dedup_saved: s.dedup_saved,
        })
    }
}
