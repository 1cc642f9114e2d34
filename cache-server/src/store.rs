//! The cache store: chunk files plus the SQLite index plus in-flight uploads. Synchronous; the
//! HTTP layer calls it from blocking threads.

use crate::chunks::ChunkStore;
use crate::digest::{ChunkRef, Digest};
use crate::durability::Durability;
use crate::error::{CacheError, Result};
use crate::index::{EntryRecord, Index, MatchKind, Reservation};
use crate::prechunk::{Prechunk, WorkerSlots};
use crate::ranges::RangeSet;
use dashmap::DashMap;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
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
    /// Bytes the client did not send because their chunks were stored (native uploads).
    dedup_saved: u64,
}

/// Accounting of archive writes past an entry's limit is cheaper than the disk filling up.
const MAX_META_BYTES: usize = 64 << 20;

pub struct CacheStore {
    cfg: StoreConfig,
    chunks: Arc<ChunkStore>,
    index: Arc<Mutex<Index>>,
    uploads_dir: PathBuf,
    uploads: DashMap<u64, Arc<Mutex<UploadState>>>,
    durability: Durability,
    cutters: Arc<WorkerSlots>,
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
    /// Opens (or creates) the store. Uploads that were in flight when a previous server died are
    /// discarded here: their reservations vanish, so the same key can be saved again. So are
    /// entries committed but never confirmed durable, and then every chunk nothing pins (the
    /// chunks of those entries may be torn).
    pub fn open(cfg: StoreConfig) -> Result<Self> {
        fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| CacheError::io("create", &cfg.data_dir, e))?;
        let chunks = Arc::new(ChunkStore::open(&cfg.data_dir)?);
        let index_path = cfg.data_dir.join("index.sqlite");
        let mut index = Index::open(&index_path)?;
        let dropped = index.drop_all_reservations()? + index.drop_non_durable()?;
        if dropped > 0 {
            for d in index.collect_garbage()? {
                chunks.remove(&d)?;
            }
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
        let uploads_dir = cfg.data_dir.join("uploads");
        let _ = fs::remove_dir_all(&uploads_dir);
        fs::create_dir_all(&uploads_dir).map_err(|e| CacheError::io("create", &uploads_dir, e))?;
        Ok(CacheStore {
            cfg,
            chunks,
            index,
            uploads_dir,
            uploads: DashMap::new(),
            durability,
            cutters: Arc::default(),
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

    /// Reserves `(scope, key, version)` for an archive upload (GitHub APIs).
    pub fn reserve_archive(&self, res: Reservation) -> Result<u64> {
        let id = lock(&self.index).reserve(&res, now_ms())?;
        let path = self.uploads_dir.join(format!("{id}.part"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| CacheError::io("create upload file", &path, e));
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                let _ = lock(&self.index).abandon(id);
                return Err(e);
            }
        };
        let state = UploadState {
            reservation: res,
            archive: Some(ArchiveUpload {
                file: Arc::new(file),
                writing: Arc::default(),
                path,
                received: RangeSet::default(),
                prechunk: Arc::default(),
                blocks: Default::default(),
                last_activity: Instant::now(),
            }),
            last_activity: Instant::now(),
            uploaded: 0,
            pinned: HashSet::new(),
            dedup_saved: 0,
        };
        self.uploads.insert(id, Arc::new(Mutex::new(state)));
        Ok(id)
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

    fn check_bounds(&self, offset: u64, len: u64) -> Result<u64> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| CacheError::BadRequest("range overflows".into()))?;
        if end > self.cfg.max_entry_size {
            return Err(CacheError::TooLarge(format!(
                "an entry may hold at most {} bytes",
                self.cfg.max_entry_size
            )));
        }
        Ok(end)
    }

    /// Writes archive bytes at `offset` (v1 PATCH, v2 Put Blob). Ranges may arrive out of order.
    pub fn write_archive(&self, id: u64, offset: u64, data: &[u8]) -> Result<()> {
        let end = self.check_bounds(offset, data.len() as u64)?;
        let upload = self.upload(id)?;
        let (file, writing, path) = {
            let mut state = lock(&upload);
            state.last_activity = Instant::now();
            let arch = state
                .archive
                .as_mut()
                .ok_or(CacheError::UnknownUpload(id))?;
            (
                Arc::clone(&arch.file),
                Arc::clone(&arch.writing),
                arch.path.clone(),
            )
        };
        {
            let _writing = lock(&writing);
            file.write_all_at(data, offset)
                .map_err(|e| CacheError::io("write upload", &path, e))?;
        }
        let (prechunk, contiguous) = {
            let mut state = lock(&upload);
            state.uploaded += data.len() as u64;
            let Some(arch) = state.archive.as_mut() else {
                return Ok(());
            };
            arch.received.insert(offset, end);
            arch.last_activity = Instant::now();
            (Arc::clone(&arch.prechunk), arch.received.contiguous_end())
        };
        prechunk.note_write(offset);
        if self.cutters.try_take() {
            if prechunk.claim(contiguous) {
                self.start_prechunk(id, prechunk, file, upload);
            } else {
                self.cutters.put_back();
            }
        }
        Ok(())
    }

    /// Starts the thread that cuts an archive upload while it arrives (see `prechunk`).
    fn start_prechunk(
        &self,
        id: u64,
        prechunk: Arc<Prechunk>,
        file: Arc<File>,
        upload: Arc<Mutex<UploadState>>,
    ) {
        let (index, chunks, level) = (
            Arc::clone(&self.index),
            Arc::clone(&self.chunks),
            self.cfg.zstd_level,
        );
        let worker = Arc::clone(&prechunk);
        let slots = Arc::clone(&self.cutters);
        let spawned = std::thread::Builder::new()
            .name(format!("kiln-cache-cut-{id}"))
            .spawn(move || {
                struct Slot(Arc<WorkerSlots>);
                impl Drop for Slot {
                    fn drop(&mut self) {
                        self.0.put_back();
                    }
                }
                let _slot = Slot(slots);
                let contiguous = || {
                    lock(&upload)
                        .archive
                        .as_ref()
                        .map_or(0, |a| a.received.contiguous_end())
                };
                worker.run(&file, contiguous, |digest, raw| {
                    store_chunk(&index, &chunks, level, id, digest, raw)
                });
            });
        if spawned.is_err() {
            // No thread: the commit cuts everything, as it would without prechunking.
            self.cutters.put_back();
            prechunk.give_up();
        }
    }

    /// Stores one Azure block (v2 Put Block). Re-sending the same block id replaces it, which
    /// is what SDK retries expect.
    pub fn put_block(&self, id: u64, block_id: &str, data: &[u8]) -> Result<()> {
        if block_id.is_empty() || block_id.len() > 1024 {
            return Err(CacheError::BadRequest(
                "block id must be 1 to 1024 characters".into(),
            ));
        }
        self.check_bounds(0, data.len() as u64)?;
        let upload = self.upload(id)?;
        let dir = self.uploads_dir.join(format!("{id}.blocks"));
        fs::create_dir_all(&dir).map_err(|e| CacheError::io("create", &dir, e))?;
        let path = dir.join(blake3::hash(block_id.as_bytes()).to_hex().as_str());
        fs::write(&path, data).map_err(|e| CacheError::io("write block", &path, e))?;
        let mut state = lock(&upload);
        state.last_activity = Instant::now();
        state.uploaded += data.len() as u64;
        let arch = state
            .archive
            .as_mut()
            .ok_or(CacheError::UnknownUpload(id))?;
        if arch.blocks.len() >= 100_000 && !arch.blocks.contains_key(block_id) {
            return Err(CacheError::TooLarge("more than 100000 blocks".into()));
        }
        arch.blocks
            .insert(block_id.to_string(), (path, data.len() as u64));
        Ok(())
    }

    /// Assembles blocks in the order of the committed block list (v2 Put Block List).
    pub fn commit_block_list(&self, id: u64, block_ids: &[String]) -> Result<u64> {
        let upload = self.upload(id)?;
        // The blocks replace whatever Put Blob wrote: cuts made of that are void. (Not under
        // the upload's lock: the worker takes it to see how much has arrived.)
        let prechunk = lock(&upload)
            .archive
            .as_ref()
            .map(|a| Arc::clone(&a.prechunk));
        if let Some(prechunk) = prechunk {
            let _ = prechunk.finish();
        }
        let (file, writing, path, parts) = {
            let state = lock(&upload);
            let arch = state
                .archive
                .as_ref()
                .ok_or(CacheError::UnknownUpload(id))?;
            let mut parts = Vec::with_capacity(block_ids.len());
            for b in block_ids {
                let (p, len) = arch.blocks.get(b).ok_or_else(|| {
                    CacheError::BadRequest(format!("block list names unknown block {b:?}"))
                })?;
                parts.push((p.clone(), *len));
            }
            (
                Arc::clone(&arch.file),
                Arc::clone(&arch.writing),
                arch.path.clone(),
                parts,
            )
        };
        let _writing = lock(&writing);
        let mut offset = 0u64;
        for (p, len) in &parts {
            self.check_bounds(offset, *len)?;
            let data = fs::read(p).map_err(|e| CacheError::io("read block", p, e))?;
            file.write_all_at(&data, offset)
                .map_err(|e| CacheError::io("write upload", &path, e))?;
            offset += len;
        }
        file.set_len(offset)
            .map_err(|e| CacheError::io("truncate", &path, e))?;
        let mut state = lock(&upload);
        if let Some(arch) = state.archive.as_mut() {
            arch.received = RangeSet::default();
            arch.received.insert(0, offset);
        }
        Ok(offset)
    }

    /// Checks that exactly `size` bytes arrived, chunks them, and makes the entry visible.
    pub fn finalize_archive(&self, id: u64, size: u64) -> Result<UploadStats> {
        let upload = self.upload(id)?;
        let prechunk = lock(&upload)
            .archive
            .as_ref()
            .map(|a| Arc::clone(&a.prechunk))
            .ok_or(CacheError::UnknownUpload(id))?;
        // Before the file may be truncated below: the worker must not read during that.
        let cut = prechunk.finish();
        let (path, uploaded) = {
            let state = lock(&upload);
            let arch = state
                .archive
                .as_ref()
                .ok_or(CacheError::UnknownUpload(id))?;
            if !arch.received.covers(0, size) || arch.received.end() != size {
                return Err(CacheError::IncompleteUpload {
                    id,
                    reason: format!(
                        "expected {size} bytes, received {} bytes ending at {}",
                        arch.received.total(),
                        arch.received.end()
                    ),
                });
            }
            // Drop bytes past `size` (a retried, longer Put Blob may have left some).
            arch.file
                .set_len(size)
                .map_err(|e| CacheError::io("truncate", &arch.path, e))?;
            (arch.path.clone(), state.uploaded)
        };
        let mut file = File::open(&path).map_err(|e| CacheError::io("open upload", &path, e))?;
        // The worker's cuts hold if it read nothing past the final size (a cut depends only on
        // the bytes it looked at, and those are all still there); then only the tail is left.
        let (mut manifest, mut dedup_saved, from) = match cut {
            Some(c) if c.read_upto <= size => (c.manifest, c.dedup_saved, c.upto),
            _ => (Vec::new(), 0u64, 0),
        };
        file.seek(SeekFrom::Start(from))
            .map_err(|e| CacheError::io("read upload", &path, e))?;
        for chunk in crate::cdc::StreamChunker::new(file) {
            let chunk = chunk.map_err(|e| CacheError::io("read upload", &path, e))?;
            let digest = Digest::of(&chunk.data);
            if self.store_chunk_for(id, &digest, &chunk.data)? {
                dedup_saved += chunk.data.len() as u64;
            }
            manifest.push(ChunkRef {
                digest,
                len: chunk.data.len() as u32,
            });
        }
        lock(&upload).dedup_saved = dedup_saved;
        self.commit(id, size, &manifest, &[])?;
        Ok(UploadStats {
            uploaded,
            dedup_saved,
            cut_while_uploading: from,
        })
    }

    /// Pins and stores one chunk of an upload. Returns true when it was already stored.
    fn store_chunk_for(&self, id: u64, digest: &Digest, raw: &[u8]) -> Result<bool> {
        store_chunk(
            &self.index,
            &self.chunks,
            self.cfg.zstd_level,
            id,
            digest,
            raw,
        )
    }

    /// Makes the entry visible now and durable in the background (see `durability`).
    fn commit(&self, id: u64, size: u64, manifest: &[ChunkRef], meta: &[u8]) -> Result<()> {
        let (reservation, uploaded, dedup_saved) = {
            let upload = self.upload(id)?;
            let state = lock(&upload);
            (state.reservation.clone(), state.uploaded, state.dedup_saved)
        };
        let now = now_ms();
        {
            let mut index = lock(&self.index);
            index.commit(id, size, manifest, meta, now)?;
            let saved = crate::stats::Event::Save;
            let r = &reservation;
            record_event(
                &index,
                now,
                (&r.repo, &r.scope, &r.key),
                saved,
                uploaded,
                dedup_saved,
            );
        }
        self.discard_upload_files(id);
        let mut digests: Vec<Digest> = manifest.iter().map(|c| c.digest).collect();
        digests.sort();
        digests.dedup();
        self.durability
            .submit(&self.chunks, &self.index, id, digests);
        Ok(())
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
                dedup_saved: 0,
            })),
        );
        Ok(id)
    }

    /// Pins a batch of the chunks upload `id` will use and answers which of them the client
    /// must send. Pinning first means a chunk reported present cannot be collected before the
    /// commit, even if every entry that used it is evicted meanwhile.
    pub fn missing_chunks(&self, id: u64, chunks: &[ChunkRef]) -> Result<NativeReservation> {
        let upload = self.upload(id)?;
        lock(&upload).last_activity = Instant::now();
        let digests: Vec<Digest> = chunks.iter().map(|c| c.digest).collect();
        let known = {
            let mut index = lock(&self.index);
            index.pin(id, &digests)?;
            index.known_chunks(&digests)?
        };
        lock(&upload).pinned.extend(digests.iter().copied());
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

    /// Stores one encoded chunk sent by a native client, after verifying it.
    pub fn put_native_chunk(&self, id: u64, digest: &Digest, encoded: &[u8]) -> Result<u64> {
        let upload = self.upload(id)?;
        if !lock(&upload).pinned.contains(digest) {
            lock(&self.index).pin(id, std::slice::from_ref(digest))?;
            lock(&upload).pinned.insert(*digest);
        }
        let (stored, raw_len) = self.chunks.put_encoded(digest, encoded)?;
        lock(&self.index).add_chunk(digest, stored, raw_len)?;
        let mut state = lock(&upload);
        state.last_activity = Instant::now();
        state.uploaded += encoded.len() as u64;
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
        lock(&self.index).abandon(id)?;
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
        let mut index = lock(&self.index);
        if index.forget_chunk(digest).is_ok() {
            let _ = self.chunks.remove(digest);
        }
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
        while index.stored_bytes()? > self.cfg.max_size {
            if !index.evict_least_recently_used()? {
                break;
            }
            report.entries_evicted += 1;
            report.chunks_deleted += self.collect_garbage(&mut index)?;
        }
        Ok(report)
    }

    fn collect_garbage(&self, index: &mut Index) -> Result<usize> {
        let garbage = index.collect_garbage()?;
        for d in &garbage {
            self.chunks.remove(d)?;
        }
        Ok(garbage.len())
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

#[cfg(test)]
#[path = "store_prechunk_tests.rs"]
mod prechunk_tests;
