//! Receiving a workspace snapshot (a git bundle) into the data directory, content-addressed:
//! written to a temporary file while its blake3 is computed, and moved to
//! `snapshots/<digest>` only when the digest and size are the ones announced, so a reader
//! never sees a partial or mislabelled bundle.

use crate::store::prelude::*;
use std::io::Write as _;
use std::path::PathBuf;

use super::{Result, Scheduler, ServiceError};
use crate::store::StoreExt as _;

/// The largest snapshot accepted.
pub const MAX_SNAPSHOT_BYTES: u64 = 2 << 30;

pub struct SnapshotWriter {
    file: tempfile::NamedTempFile,
    hasher: blake3::Hasher,
    written: u64,
    digest: String,
    size: u64,
}

impl SnapshotWriter {
    /// Starts receiving a snapshot announced as `digest` (hex blake3) of `size` bytes. None
    /// when it is stored already.
    pub fn start(scheduler: &Scheduler, digest: &str, size: u64) -> Result<Option<SnapshotWriter>> {
        let path = scheduler.store().data_dir().snapshot_path(digest)?;
        if size > MAX_SNAPSHOT_BYTES {
            return Err(ServiceError::Invalid(format!(
                "the snapshot is {size} bytes; the scheduler takes at most {MAX_SNAPSHOT_BYTES}"
            )));
        }
        if path.exists() && scheduler.store().snapshot_size(digest)?.is_some() {
            return Ok(None);
        }
        let dir = path.parent().map(PathBuf::from).unwrap_or_default();
        let file = tempfile::Builder::new()
            .prefix(".upload-")
            .tempfile_in(&dir)
            .map_err(|e| ServiceError::Invalid(format!("cannot store the snapshot: {e}")))?;
        Ok(Some(SnapshotWriter {
            file,
            hasher: blake3::Hasher::new(),
            written: 0,
            digest: digest.to_owned(),
            size,
        }))
    }

    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.written += data.len() as u64;
        if self.written > self.size {
            return Err(ServiceError::Invalid(format!(
                "the snapshot is longer than the {} bytes announced",
                self.size
            )));
        }
        self.hasher.update(data);
        self.file
            .write_all(data)
            .map_err(|e| ServiceError::Invalid(format!("cannot store the snapshot: {e}")))
    }

    /// Checks the digest and size, and stores the snapshot under its digest.
    pub fn finish(self, scheduler: &Scheduler) -> Result<()> {
        let digest = self.hasher.finalize().to_hex().to_string();
        if self.written != self.size || digest != self.digest {
            return Err(ServiceError::Invalid(format!(
                "the snapshot received ({} bytes, blake3 {digest}) is not the one announced \
                 ({} bytes, blake3 {}); upload it again",
                self.written, self.size, self.digest
            )));
        }
        let path = scheduler.store().data_dir().snapshot_path(&self.digest)?;
        self.file
            .as_file()
            .sync_all()
            .map_err(|e| ServiceError::Invalid(format!("cannot store the snapshot: {e}")))?;
        self.file
            .persist(&path)
            .map_err(|e| ServiceError::Invalid(format!("cannot store the snapshot: {e}")))?;
        let now = scheduler.now();
        scheduler
            .store()
            .write(|tx| tx.record_snapshot(&self.digest, self.size, now))?;
        Ok(())
    }
}
