//! The cache store: chunk files plus the SQLite index plus in-flight uploads. Synchronous; the
//! HTTP layer calls it from blocking threads.

use crate::chunks::ChunkStore;
use crate::digest::{ChunkRef, Digest};
use crate::durability::Durability;
use crate::error::{CacheError, Result};
use crate::index::{EntryRecord, Index, MatchKind, Reservation};
use crate::prechunk::{Prechunk, WorkerSlots};
use crate::ranges::RangeSet;
use crate::sharing::{DirLock, Opened};
use dashmap::DashMap;
use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How the store is sized and when it forgets.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// Budget for stored (compressed) chunk bytes; least recently used entries go above it.
    pub max_size: u64,
    /// Entries not read or written for this long are removed.
    pub max_unused: Duration,
    /// Reservations idle for this long are dropped so the key can be saved again.
    pub upload_timeout: Duration,
    /// Largest archive one entry may hold.
    pub max_entry_size: u64,
    /// zstd level for chunks the server compresses itself.
    pub zstd_level: i32,
    /// How long the background sync waits after a commit for more commits to sync with it.
    /// Entries are visible at once either way; a crash inside the wait loses them (a miss).
    pub sync_batch_delay: Duration,
    /// How long the lookup record (`kiln cache stats`) keeps its events.
    pub stats_retention: Duration,
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            max_size: 20 << 30,
            max_unused: Duration::from_secs(7 * 24 * 3600),
            upload_timeout: Duration::from_secs(15 * 60),
            max_entry_size: 10 << 30,
            zstd_level: 3,
            sync_batch_delay: Duration::ZERO,
            stats_retention: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// Bytes that travelled and bytes deduplication avoided, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadStats {
    pub uploaded: u64,
    pub dedup_saved: u64,
    /// Archive bytes cut into chunks while the upload was still arriving (not at commit).
    pub cut_while_uploading: u64,
}

/// Which chunks of a batch the client must send, and the bytes it need not.
#[derive(Clone, Debug)]
pub struct NativeReservation {
    pub id: u64,
    pub missing: Vec<Digest>,
    pub dedup_saved: u64,
}

struct ArchiveUpload {
    file: Arc<File>,
    /// Taken around each write: the kernel serialises buffered writes to one file on its inode
    /// lock, where concurrent PATCHes of 4 MiB spin on a CPU while one copies; here they sleep.
    writing: Arc<Mutex<()>>,
    path: PathBuf,
    received: RangeSet,
    /// Cuts the archive while it arrives (see `prechunk`).
    prechunk: Arc<Prechunk>,
    blocks: std::collections::HashMap<String, (PathBuf, u64)>,
    last_activity: Instant,
}

/// Bookkeeping shared by both upload kinds.
struct UploadState {
    reservation: Reservation,
    archive: Option<ArchiveUpload>,
    last_activity: Instant,
    uploaded: u64,
    /// Chunks the index pins to this upload (native uploads): a chunk sent after the client
    /// asked whether it was missing is pinned already and needs no second index write.
    pinned: HashSet<Digest>,
    /// Chunks this upload sent (verified), and their raw bytes: what the upload itself may be
    /// told is present, and what bounds its size.
    sent: HashSet<Digest>,
    sent_raw: u64,
    /// Bytes the client did not send because their chunks were stored (native uploads).
    dedup_saved: u64,
}

/// Accounting of archive writes past an entry's limit is cheaper than the disk filling up.
pub(crate) const MAX_META_BYTES: usize = 64 << 20;

pub struct CacheStore {
    cfg: StoreConfig,
    chunks: Arc<ChunkStore>,
    index: Arc<Mutex<Index>>,
    uploads_dir: PathBuf,
    uploads: DashMap<u64, Arc<Mutex<UploadState>>>,
    durability: Durability,
    cutters: Arc<WorkerSlots>,
    /// Held while the store is open (the last field, so dropped after the syncs are done), so a
    /// process starting meanwhile leaves this one's uploads alone.
    _dir_lock: DirLock,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Pins a chunk to upload `id` and stores it unless it is stored already (returns true then).
fn store_chunk(
    index: &Mutex<Index>,
    chunks: &ChunkStore,
    level: i32,
    id: u64,
    digest: &Digest,
    raw: &[u8],
) -> Result<bool> {
    {
        let mut index = lock(index);
        index.pin(id, std::slice::from_ref(digest))?;
        if !index.known_chunks(std::slice::from_ref(digest))?.is_empty() {
            return Ok(true);
        }
    }
    let stored = chunks.put_raw(digest, raw, level)?;
    lock(index).add_chunk(digest, stored, raw.len() as u64)?;
    Ok(false)
}

/// Writes one event of the lookup record for `(repo, scope, key)`. A failure only loses the
/// event: the lookup or save it describes has happened and must not fail for its bookkeeping.
fn record_event(
    index: &Index,
    at_ms: i64,
    (repo, scope, key): (&str, &str, &str),
    event: crate::stats::Event,
    bytes: u64,
    dedup: u64,
) {
    let recorded = crate::stats::record(index.conn(), at_ms, repo, scope, key, event, bytes, dedup);
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "cache stats: an event could not be recorded");
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the SQLite connection half-updated (each
    // operation is a transaction), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CacheStore {
    /// Opens (or creates) the store. When no other process has it open (see `sharing`), uploads
    /// that were in flight when a previous server died are discarded here: their reservations
    /// vanish, so the same key can be saved again. So are entries committed but never confirmed
    /// durable, and then every chunk nothing pins (the chunks of those entries may be torn).
    /// When others have it open, all of that may be their work in progress and is left alone.
    pub fn open(cfg: StoreConfig) -> Result<Self> {
        crate::token::create_private_dir(&cfg.data_dir)?;
        let index_path = cfg.data_dir.join("index.sqlite");
        let uploads_dir = cfg.data_dir.join("uploads");
        let mut index = Index::open(&index_path)?;
        let mut dropped = 0;
        let (dir_lock, opened) = DirLock::acquire(&cfg.data_dir, || {
            dropped = index.drop_all_reservations()? + index.drop_non_durable()?;
            let _ = fs::remove_dir_all(&uploads_dir);
            Ok(())
        })?;
        crate::token::create_private_dir(&uploads_dir)?;
        let chunks = Arc::new(ChunkStore::open(&cfg.data_dir, opened == Opened::Alone)?);
        if dropped > 0 {
            index.collect_garbage(|d| chunks.remove(d))?;
        }
        let index = Arc::new(Mutex::new(index));
        let durability = Durability::start(
            Arc::clone(&chunks),
            Arc::clone(&index),
            // Without it (the file could not be opened twice) commits checkpoint past the
            // index's backstop, as SQLite does by default.
            Index::checkpointer(&index_path).ok(),
            cfg.sync_batch_delay,
        );
        Ok(CacheStore {
            cfg,
            chunks,
            index,
            uploads_dir,
            uploads: DashMap::new(),
            durability,
            cutters: Arc::default(),
            _dir_lock: dir_lock,
        })
    }

    /// Waits until every entry committed so far has its chunks synced and is marked durable.
    /// The server calls it when it stops, so a clean shutdown loses nothing.
    pub fn flush_durability(&self) {
        self.durability.flush();
    }

    /// Committed entries still waiting for their chunks to be synced, and entries whose sync
    /// failed (visible until a restart drops them), for `/metrics`.
    pub fn durability_backlog(&self) -> (u64, u64) {
        (self.durability.pending(), self.durability.failures())
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub fn data_dir(&self) -> &Path {
        &self.cfg.data_dir
    }

    pub fn chunk_path(&self, digest: &Digest) -> PathBuf {
        self.chunks.path_of(digest)
    }

    fn upload(&self, id: u64) -> Result<Arc<Mutex<UploadState>>> {
        self.uploads
            .get(&id)
            .map(|u| Arc::clone(u.value()))
            .ok_or(CacheError::UnknownUpload(id))
    }

    /// The upload in progress for a triple (v2 finalize names the key, not the upload).
    pub fn find_upload(&self, repo: &str, scope: &str, key: &str, version: &str) -> Option<u64> {
        let folded = crate::index::fold_key(key);
        self.uploads.iter().find_map(|u| {
            let state = lock(u.value());
            let r = &state.reservation;
            (r.repo == repo
                && r.scope == scope
                && r.version == version
                && crate::index::fold_key(&r.key) == folded)
                .then_some(*u.key())
        })
    }

    /// The reservation behind an upload id, for access checks.
    pub fn reservation(&self, id: u64) -> Result<Reservation> {
        let upload = self.upload(id)?;
        let state = lock(&upload);
        Ok(state.reservation.clone())
    }

    /// The most one entry may hold: the configured entry limit, and never more than the whole
    /// store's budget (such an entry could only be evicted at once).
    pub fn entry_limit(&self) -> u64 {
        self.cfg.max_entry_size.min(self.cfg.max_size)
    }

    fn check_bounds(&self, offset: u64, len: u64) -> Result<u64> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| CacheError::BadRequest("range overflows".into()))?;
        let limit = self.entry_limit();
        if end > limit {
            return Err(CacheError::TooLarge(format!(
                "an entry may hold at most {limit} bytes (the entry limit, or the store's --max-size)"
            )));
        }
        Ok(end)
    }

    /// Makes the entry visible now and durable in the background (see `durability`).
    /// `--max-size` holds at every commit, not only at the next maintenance: least recently
    /// used entries are evicted until the store fits again, and an entry that alone takes more
    /// than the whole budget is refused (and its reservation dropped) instead of committed.
    fn commit(&self, id: u64, size: u64, manifest: &[ChunkRef], meta: &[u8]) -> Result<()> {
        let (reservation, uploaded, dedup_saved) = {
            let upload = self.upload(id)?;
            let state = lock(&upload);
            (state.reservation.clone(), state.uploaded, state.dedup_saved)
        };
        let mut digests: Vec<Digest> = manifest.iter().map(|c| c.digest).collect();
        digests.sort();
        digests.dedup();
        {
            let mut index = lock(&self.index);
            let own = index.stored_bytes_of(&digests)?;
            if own > self.cfg.max_size {
                index.abandon(id)?;
                drop(index);
                self.discard_upload_files(id);
                return Err(CacheError::TooLarge(format!(
                    "the entry takes {own} bytes stored, more than the cache's whole budget of {} bytes (--max-size)",
                    self.cfg.max_size
                )));
            }
            let now = now_ms();
            index.commit(id, size, manifest, meta, now)?;
            let r = &reservation;
            let saved = crate::stats::Event::Save;
            record_event(
                &index,
                now,
                (&r.repo, &r.scope, &r.key),
                saved,
                uploaded,
                dedup_saved,
            );
            self.evict_to_budget(&mut index, Some(id))?;
        }
        self.discard_upload_files(id);
        self.durability
            .submit(&self.chunks, &self.index, id, digests);
        Ok(())
    }

    /// Evicts least recently used entries (never `keep`) and collects their chunks until the
    /// stored bytes fit the budget or nothing more can go. Returns (entries, chunks) removed.
    fn evict_to_budget(&self, index: &mut Index, keep: Option<u64>) -> Result<(usize, usize)> {
        let (mut entries, mut chunks) = (0, 0);
        while index.stored_bytes()? > self.cfg.max_size {
            if !index.evict_least_recently_used(keep)? {
                break;
            }
            entries += 1;
            chunks += self.collect_garbage(index)?;
        }
        Ok((entries, chunks))
    }

    fn discard_upload_files(&self, id: u64) {
        self.uploads.remove(&id);
        let _ = fs::remove_file(self.uploads_dir.join(format!("{id}.part")));
        let _ = fs::remove_dir_all(self.uploads_dir.join(format!("{id}.blocks")));
    }

    /// Reserves a tree entry for the native API.
    pub fn reserve_native(&self, res: Reservation) -> Result<u64> {
        let id = lock(&self.index).reserve(&res, now_ms())?;
        self.uploads.insert(
            id,
            Arc::new(Mutex::new(UploadState {
                reservation: res,
                archive: None,
                last_activity: Instant::now(),
                uploaded: 0,
                pinned: HashSet::new(),
                sent: HashSet::new(),
                sent_raw: 0,
                dedup_saved: 0,
            })),
        );
        Ok(id)
    }

    /// Pins a batch of the chunks upload `id` will use and answers which of them the client
    /// must send. Pinning first means a chunk reported present cannot be collected before the
    /// commit, even if every entry that used it is evicted meanwhile.
    ///
    /// Present means present for this client: used by an entry its token can read (its
    /// repository, `read_scopes`) or sent by this upload already. A chunk only other
    /// repositories use is reported missing, so the answer never tells whether some content
    /// exists elsewhere on the server; the client sends it, and the server checks it and keeps
    /// the copy it has.
    pub fn missing_chunks(
        &self,
        id: u64,
        chunks: &[ChunkRef],
        read_scopes: &[String],
    ) -> Result<NativeReservation> {
        let upload = self.upload(id)?;
        let repo = {
            let mut state = lock(&upload);
            state.last_activity = Instant::now();
            state.reservation.repo.clone()
        };
        let digests: Vec<Digest> = chunks.iter().map(|c| c.digest).collect();
        let mut known = {
            let mut index = lock(&self.index);
            index.pin(id, &digests)?;
            index.readable_chunks(&digests, &repo, read_scopes)?
        };
        {
            let mut state = lock(&upload);
            state.pinned.extend(digests.iter().copied());
            known.extend(digests.iter().filter(|d| state.sent.contains(d)));
        }
        let mut missing = Vec::new();
        let mut seen = HashSet::new();
        let mut dedup_saved = 0;
        for c in chunks {
            if !seen.insert(c.digest) {
                continue;
            }
            if known.contains(&c.digest) {
                dedup_saved += u64::from(c.len);
            } else {
                missing.push(c.digest);
            }
        }
        lock(&upload).dedup_saved += dedup_saved;
        Ok(NativeReservation {
            id,
            missing,
            dedup_saved,
        })
    }

    /// Stores one encoded chunk sent by a native client, after verifying it. A chunk the store
    /// holds already (for other entries) is verified and not written again. Returns the bytes
    /// written.
    pub fn put_native_chunk(&self, id: u64, digest: &Digest, encoded: &[u8]) -> Result<u64> {
        let upload = self.upload(id)?;
        if !lock(&upload).pinned.contains(digest) {
            lock(&self.index).pin(id, std::slice::from_ref(digest))?;
            lock(&upload).pinned.insert(*digest);
        }
        let held = !lock(&self.index)
            .known_chunks(std::slice::from_ref(digest))?
            .is_empty();
        let (stored, raw_len) = if held {
            (0, crate::chunks::verify_upload(encoded, digest)?)
        } else {
            self.chunks.put_encoded(digest, encoded)?
        };
        let mut state = lock(&upload);
        if !state.sent.contains(digest) {
            let sent_raw = state.sent_raw.saturating_add(raw_len);
            if sent_raw > self.entry_limit() {
                return Err(CacheError::TooLarge(format!(
                    "the upload's chunks hold more than {} bytes (the entry limit, or the store's --max-size)",
                    self.entry_limit()
                )));
            }
            state.sent_raw = sent_raw;
            state.sent.insert(*digest);
        }
        state.last_activity = Instant::now();
        state.uploaded += encoded.len() as u64;
        drop(state);
        if !held {
            lock(&self.index).add_chunk(digest, stored, raw_len)?;
        }
        Ok(stored)
    }

    /// Commits a native tree entry: `chunks` is the content stream, `meta` the client's listing.
    pub fn commit_native(
        &self,
        id: u64,
        size: u64,
        chunks: &[ChunkRef],
        meta: &[u8],
    ) -> Result<u64> {
        if meta.len() > MAX_META_BYTES {
            return Err(CacheError::TooLarge(format!(
                "tree listing over {MAX_META_BYTES} bytes"
            )));
        }
        let sum: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
        self.check_bounds(0, sum)?;
        if sum != size {
            return Err(CacheError::BadRequest(format!(
                "chunk lengths add up to {sum} bytes, not the declared {size}"
            )));
        }
        let upload = self.upload(id)?;
        let uploaded = lock(&upload).uploaded;
        self.commit(id, size, chunks, meta)?;
        Ok(uploaded)
    }

    /// Drops a reservation explicitly (client gave up).
    pub fn abandon(&self, id: u64) -> Result<()> {
        // A cutting worker pins chunks to the upload: it must be done before the pins go.
        let prechunk = self.uploads.get(&id).and_then(|u| {
            lock(u.value())
                .archive
                .as_ref()
                .map(|a| Arc::clone(&a.prechunk))
        });
        if let Some(p) = prechunk {
            let _ = p.finish();
        }
        {
            let mut index = lock(&self.index);
            index.abandon(id)?;
            // What only this upload held goes now, not at the next maintenance: an upload
            // refused for its size must not leave the store over its budget.
            self.collect_garbage(&mut index)?;
        }
        self.discard_upload_files(id);
        Ok(())
    }

    pub fn lookup(
        &self,
        repo: &str,
        scopes: &[String],
        keys: &[String],
        version: &str,
        allow_tree: bool,
    ) -> Result<Option<(EntryRecord, MatchKind)>> {
        let now = now_ms();
        let mut index = lock(&self.index);
        let found = index.lookup(repo, scopes, keys, version, allow_tree, now)?;
        let (event, bytes) = match &found {
            Some((entry, MatchKind::Exact)) => (crate::stats::Event::ExactHit, entry.size),
            Some((entry, MatchKind::Partial)) => (crate::stats::Event::RestoreKeyHit, entry.size),
            None => (crate::stats::Event::Miss, 0),
        };
        // Attributed to the job's own scope, as the metrics are.
        let scope = scopes.first().map(String::as_str).unwrap_or_default();
        let key = keys.first().map(String::as_str).unwrap_or_default();
        record_event(&index, now, (repo, scope, key), event, bytes, 0);
        Ok(found)
    }

    /// The lookup record totalled since `since_ms` (of one repository, when given), for
    /// `kiln cache stats`: read on a connection of its own, so a long query never holds up
    /// lookups and saves.
    pub fn stats(&self, repo: Option<&str>, since_ms: i64) -> Result<crate::stats::StatsReport> {
        crate::stats::read(&self.cfg.data_dir, repo, since_ms)
    }

    pub fn list(&self, repo: &str, scopes: &[String], key: &str) -> Result<Vec<EntryRecord>> {
        lock(&self.index).list(repo, scopes, key)
    }

    pub fn entry(&self, id: u64) -> Result<Option<EntryRecord>> {
        lock(&self.index).entry(id)
    }

    /// Reads a chunk's uncompressed bytes. A corrupt or vanished chunk is quarantined: it and
    /// every entry using it are removed, so the next lookup is a miss instead of bad data.
    pub fn read_chunk(&self, digest: &Digest) -> Result<Vec<u8>> {
        self.quarantine_on_failure(digest, self.chunks.read_raw(digest))
    }

    /// Fails with `UnknownChunk` unless an entry of `repo` in one of `scopes` uses the chunk:
    /// a token may fetch (or have rechecked) only what it can read, and learns nothing about
    /// what other repositories store (the answer is the same as for a chunk nobody stored).
    pub fn check_readable(&self, digest: &Digest, repo: &str, scopes: &[String]) -> Result<()> {
        let readable =
            lock(&self.index).readable_chunks(std::slice::from_ref(digest), repo, scopes)?;
        if readable.is_empty() {
            return Err(CacheError::UnknownChunk(digest.to_hex()));
        }
        Ok(())
    }

    /// Reads a chunk's encoded bytes, verified without decoding (the client checks the raw
    /// digest); quarantines it like [`Self::read_chunk`].
    pub fn read_chunk_encoded(&self, digest: &Digest) -> Result<axum::body::Bytes> {
        self.quarantine_on_failure(digest, self.chunks.read_encoded(digest))
    }

    /// Verifies a chunk completely (decode and raw digest) because a client found that what it
    /// received does not decode to the chunk's name; quarantines it like [`Self::read_chunk`]
    /// when the stored bytes are at fault.
    pub fn recheck_chunk(&self, digest: &Digest) -> Result<()> {
        self.quarantine_on_failure(digest, self.chunks.verify_fully(digest))
    }

    fn quarantine_on_failure<T>(&self, digest: &Digest, r: Result<T>) -> Result<T> {
        if let Err(CacheError::CorruptChunk { .. } | CacheError::MissingChunk(_)) = &r {
            self.forget_chunk(digest);
        }
        r
    }

    /// Removes a bad chunk and every entry using it. Best effort: the caller already fails.
    fn forget_chunk(&self, digest: &Digest) {
        let _ = lock(&self.index).forget_chunk(digest, |d| self.chunks.remove(d));
    }

    /// Expires idle uploads and unused entries, evicts least recently used entries above the
    /// budget, and deletes chunks that nothing pins. `now` is injectable for tests.
    pub fn maintain(&self, now: SystemTime) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport::default();
        let idle: Vec<u64> = self
            .uploads
            .iter()
            .filter(|u| lock(u.value()).last_activity.elapsed() > self.cfg.upload_timeout)
            .map(|u| *u.key())
            .collect();
        for id in idle {
            self.abandon(id)?;
            report.uploads_expired += 1;
        }
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let cutoff = now_ms - self.cfg.max_unused.as_millis() as i64;
        let mut index = lock(&self.index);
        let stats_cutoff = now_ms - self.cfg.stats_retention.as_millis() as i64;
        crate::stats::expire(index.conn(), stats_cutoff)?;
        report.entries_expired = index.expire_unused(cutoff)?;
        report.chunks_deleted += self.collect_garbage(&mut index)?;
        let (entries, chunks) = self.evict_to_budget(&mut index, None)?;
        report.entries_evicted += entries;
        report.chunks_deleted += chunks;
        Ok(report)
    }

    fn collect_garbage(&self, index: &mut Index) -> Result<usize> {
        index.collect_garbage(|d| self.chunks.remove(d))
    }

    /// Entry count, chunk count and stored bytes, for `/metrics`.
    pub fn totals(&self) -> Result<(u64, u64, u64)> {
        let index = lock(&self.index);
        let (e, c) = index.counts()?;
        Ok((e, c, index.stored_bytes()?))
    }
}

/// What one maintenance pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub uploads_expired: usize,
    pub entries_expired: usize,
    pub entries_evicted: usize,
    pub chunks_deleted: usize,
}

#[path = "store_archive.rs"]
mod archive;

#[cfg(test)]
#[path = "store_prechunk_tests.rs"]
mod prechunk_tests;
