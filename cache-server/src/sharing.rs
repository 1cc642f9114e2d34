//! Several processes on one data directory (two `kiln run`s at once share the user's cache by
//! default). Each holds a lock on `DIR/lock` for as long as its store is open: shared while it
//! runs, exclusive only while it starts. A process that gets the exclusive lock is alone, so what
//! it finds in flight (reservations, upload files, temp chunk files, entries not yet durable) was
//! left by processes that died, and it cleans that up; one that starts while others run leaves
//! all of that alone (it may be their work in progress) and waits only for a starting process's
//! clean-up to end.
//!
//! What the processes share is safe to share: reservations and entries are SQLite rows (upload
//! ids, keys and write-once conflicts are decided there), upload files are named by those ids,
//! temp chunk files by process, and chunk files are removed only inside the index transaction
//! that drops their rows, so a chunk another process pins at the same moment is either kept or
//! found missing and stored again.

use crate::error::{CacheError, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// A store's hold on its data directory; released when dropped (or when the process dies).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Whether this process found the data directory to itself when it opened the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    /// No other process had it open: leftovers of dead processes may be cleaned up.
    Alone,
    /// Other processes have it open: what is in flight may be theirs.
    Shared,
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: `file` is an open descriptor for the duration of the call.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl DirLock {
    /// Takes the lock; `clean_up` runs first when this process is alone, under the exclusive
    /// lock, so no other process starts using the directory until it is done.
    pub(crate) fn acquire(
        data_dir: &Path,
        clean_up: impl FnOnce() -> Result<()>,
    ) -> Result<(DirLock, Opened)> {
        let path = data_dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| CacheError::io("open", &path, e))?;
        let lock_error = |e| CacheError::io("lock", &path, e);
        let opened = match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => {
                clean_up()?;
                Opened::Alone
            }
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Opened::Shared,
            Err(e) => return Err(lock_error(e)),
        };
        // From exclusive, or waiting for a process that is still cleaning up.
        flock(&file, libc::LOCK_SH).map_err(lock_error)?;
        Ok((DirLock { _file: file }, opened))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_process_alone_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut cleaned = 0;
        let (first, opened) = DirLock::acquire(dir.path(), || {
            cleaned += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((opened, cleaned), (Opened::Alone, 1));
        let (second, opened) = DirLock::acquire(dir.path(), || panic!("not alone")).unwrap();
        assert_eq!(opened, Opened::Shared);
        drop(first);
        let (_third, opened) = DirLock::acquire(dir.path(), || panic!("still shared")).unwrap();
        assert_eq!(opened, Opened::Shared);
        drop(second);
        drop(_third);
        let (_fourth, opened) = DirLock::acquire(dir.path(), || Ok(())).unwrap();
        assert_eq!(opened, Opened::Alone);
    }
}
