//! Background durability: an entry becomes visible as soon as its row commits, and this worker
//! syncs its chunks afterwards and then marks the row durable. At start-up the store drops
//! every committed entry not marked durable (see [`crate::index::Index::drop_non_durable`]), so
//! a crash inside the window loses the entry (a later miss) but never leaves a visible entry
//! that references a chunk whose bytes may not have reached the disk.
//!
//! Why: syncing an entry's new chunks costs as long as writing them (hundreds of MiB), and a
//! save waited for it before its commit answered.

use crate::chunks::ChunkStore;
use crate::digest::Digest;
use crate::error::CacheError;
use crate::index::{Checkpointer, Index};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct Job {
    entry: u64,
    digests: Vec<Digest>,
}

/// Entries committed but not yet durable, and a condition to wait until there are none.
#[derive(Default)]
struct Pending {
    count: Mutex<u64>,
    drained: Condvar,
}

impl Pending {
    fn add(&self, n: u64) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += n;
    }

    fn finish(&self, n: u64) {
        let mut count = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *count = count.saturating_sub(n);
        if *count == 0 {
            self.drained.notify_all();
        }
    }
}

/// The background syncer. Dropping it finishes every queued job first.
pub(crate) struct Durability {
    queue: Mutex<Option<Sender<Job>>>,
    pending: Arc<Pending>,
    failures: Arc<AtomicU64>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Durability {
    /// Starts the worker. `batch_delay` is how long it waits after a commit for more commits to
    /// sync together (each sync round forces a journal commit, so batching saves disk time).
    pub(crate) fn start(
        chunks: Arc<ChunkStore>,
        index: Arc<Mutex<Index>>,
        checkpointer: Option<Checkpointer>,
        batch_delay: Duration,
    ) -> Self {
        let (tx, rx) = channel::<Job>();
        let pending = Arc::new(Pending::default());
        let failures = Arc::new(AtomicU64::new(0));
        let (worker_pending, worker_failures) = (Arc::clone(&pending), Arc::clone(&failures));
        let worker = std::thread::Builder::new()
            .name("kiln-cache-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    let deadline = Instant::now() + batch_delay;
                    loop {
                        let left = deadline.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(job) => batch.push(job),
                            Err(RecvTimeoutError::Timeout) => break,
                            // Shutting down: sync what is queued without waiting any longer.
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                    while let Ok(job) = rx.try_recv() {
                        batch.push(job);
                    }
                    let n = batch.len() as u64;
                    let failed = sync_batch(&chunks, &index, batch);
                    worker_failures.fetch_add(failed, Ordering::Relaxed);
                    // The commits just synced are in the log; folding it into the database
                    // here keeps that work (and its fsync) out of the next commit.
                    if let Some(c) = &checkpointer {
                        if let Err(e) = c.checkpoint() {
                            tracing::debug!(error = %e, "cache index checkpoint failed; a later one retries");
                        }
                    }
                    worker_pending.finish(n);
                }
            })
            .ok();
        Durability {
            queue: Mutex::new(worker.as_ref().map(|_| tx)),
            pending,
            failures,
            worker: Mutex::new(worker),
        }
    }

    /// Queues the sync of a just-committed entry. Without a worker (the thread could not be
    /// started) the sync runs here, which is slower but just as safe.
    pub(crate) fn submit(
        &self,
        chunks: &ChunkStore,
        index: &Mutex<Index>,
        entry: u64,
        digests: Vec<Digest>,
    ) {
        let job = Job { entry, digests };
        self.pending.add(1);
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let job = match queue.as_ref() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(unsent) => unsent.0,
            },
            None => job,
        };
        drop(queue);
        let failed = sync_batch(chunks, index, vec![job]);
        self.failures.fetch_add(failed, Ordering::Relaxed);
        self.pending.finish(1);
    }

    /// Committed entries whose chunks are not yet synced.
    pub(crate) fn pending(&self) -> u64 {
        *self.pending.count.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entries whose background sync failed (they stay visible until a restart drops them).
    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Waits until every entry committed so far is durable (or its sync failed).
    pub(crate) fn flush(&self) {
        let mut count = self.pending.count.lock().unwrap_or_else(|p| p.into_inner());
        while *count > 0 {
            count = self
                .pending
                .drained
                .wait(count)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for Durability {
    fn drop(&mut self) {
        // Closing the queue makes the worker sync what is left and stop.
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(worker) = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = worker.join();
        }
    }
}

fn lock_index(index: &Mutex<Index>) -> std::sync::MutexGuard<'_, Index> {
    index.lock().unwrap_or_else(|p| p.into_inner())
}

/// Syncs the chunks of every job at once and marks the entries durable. When the combined sync
/// fails, each job is retried alone so one torn chunk costs only the entries that use it.
/// Returns how many entries could not be made durable.
fn sync_batch(chunks: &ChunkStore, index: &Mutex<Index>, batch: Vec<Job>) -> u64 {
    let all: Vec<Digest> = batch
        .iter()
        .flat_map(|j| j.digests.iter().copied())
        .collect();
    if chunks.make_durable(&all).is_ok() {
        let ids: Vec<u64> = batch.iter().map(|j| j.entry).collect();
        return match lock_index(index).mark_durable(&ids) {
            Ok(()) => 0,
            Err(e) => {
                tracing::warn!(error = %e, "marking cache entries durable failed; a restart drops them");
                ids.len() as u64
            }
        };
    }
    let mut failed = 0;
    for job in batch {
        match chunks.make_durable(&job.digests) {
            Ok(()) => {
                if let Err(e) = lock_index(index).mark_durable(&[job.entry]) {
                    tracing::warn!(error = %e, entry = job.entry, "marking a cache entry durable failed; a restart drops it");
                    failed += 1;
                }
            }
            Err(e) => {
                failed += 1;
                // A torn or vanished chunk (left by a killed server): drop it and every entry
                // using it, so the next lookup is a miss and the next save uploads it again.
                if let CacheError::CorruptChunk { digest: hex, .. }
                | CacheError::MissingChunk(hex) = &e
                {
                    if let Ok(d) = Digest::from_hex(hex) {
                        let _ = lock_index(index).forget_chunk(&d, |d| chunks.remove(d));
                    }
                }
                tracing::warn!(error = %e, entry = job.entry, "syncing a cache entry failed; a restart drops it");
            }
        }
    }
    failed
}
