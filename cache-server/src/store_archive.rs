//! Archive uploads (GitHub API v1 PATCHes, v2 Put Blob, Put Block and Put Block List): staged
//! in `DIR/uploads/`, cut into chunks while they arrive (see `prechunk`) and at the commit.

use super::{lock, now_ms, store_chunk, ArchiveUpload, CacheStore, UploadState, UploadStats};
use crate::digest::{ChunkRef, Digest};
use crate::error::{CacheError, Result};
use crate::index::Reservation;
use crate::prechunk::{Prechunk, WorkerSlots};
use crate::ranges::RangeSet;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

impl CacheStore {
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
            sent: HashSet::new(),
            sent_raw: 0,
        };
        self.uploads.insert(id, Arc::new(Mutex::new(state)));
        Ok(id)
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

    /// Where upload `id` keeps block `block_id` (v2 Put Block).
    fn block_path(&self, id: u64, block_id: &str) -> Result<PathBuf> {
        if block_id.is_empty() || block_id.len() > 1024 {
            return Err(CacheError::BadRequest(
                "block id must be 1 to 1024 characters".into(),
            ));
        }
        let dir = self.uploads_dir.join(format!("{id}.blocks"));
        crate::token::create_private_dir(&dir)?;
        Ok(dir.join(blake3::hash(block_id.as_bytes()).to_hex().as_str()))
    }

    /// Writes part of one Azure block (v2 Put Block) at `offset`: the body is streamed to the
    /// block's file, never held whole. Re-sending a block id replaces the block, which is what
    /// SDK retries expect.
    pub fn write_block(&self, id: u64, block_id: &str, offset: u64, data: &[u8]) -> Result<()> {
        self.check_bounds(offset, data.len() as u64)?;
        let upload = self.upload(id)?;
        let path = self.block_path(id, block_id)?;
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(offset == 0)
            .open(&path)
            .map_err(|e| CacheError::io("write block", &path, e))?;
        file.write_all_at(data, offset)
            .map_err(|e| CacheError::io("write block", &path, e))?;
        let mut state = lock(&upload);
        state.last_activity = Instant::now();
        state.uploaded += data.len() as u64;
        Ok(())
    }

    /// Records a block whose `len` bytes [`Self::write_block`] wrote.
    pub fn finish_block(&self, id: u64, block_id: &str, len: u64) -> Result<()> {
        let upload = self.upload(id)?;
        let path = self.block_path(id, block_id)?;
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| CacheError::io("write block", &path, e))?;
        // A longer earlier attempt of the same block leaves nothing behind.
        file.set_len(len)
            .map_err(|e| CacheError::io("truncate", &path, e))?;
        let mut state = lock(&upload);
        let arch = state
            .archive
            .as_mut()
            .ok_or(CacheError::UnknownUpload(id))?;
        if arch.blocks.len() >= 100_000 && !arch.blocks.contains_key(block_id) {
            return Err(CacheError::TooLarge("more than 100000 blocks".into()));
        }
        arch.blocks.insert(block_id.to_string(), (path, len));
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
            // The blob may be no larger than an entry may be, nor than the blocks sent for it:
            // a list naming one block many times would otherwise stage a file many times the
            // size of what was uploaded.
            let assembled = parts
                .iter()
                .try_fold(0u64, |sum, (_, len)| sum.checked_add(*len))
                .ok_or_else(|| CacheError::BadRequest("the block list's size overflows".into()))?;
            self.check_bounds(0, assembled)?;
            let sent: u64 = arch.blocks.values().map(|(_, len)| *len).sum();
            if assembled > sent {
                return Err(CacheError::BadRequest(format!(
                    "the block list assembles {assembled} bytes from {sent} bytes of blocks: each block may be used once"
                )));
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
}
