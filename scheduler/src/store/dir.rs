//! The scheduler's data directory: the database, the content-addressed snapshots and the run
//! artifacts beside it, the token files, and the lock that keeps a second scheduler out.
//! Everything is created private to the scheduler's user (directories 0700, files 0600): the
//! database holds secrets' hashes, job payloads with the runs' secrets, and logs.

use super::error::{Result, StoreError};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const LOCK_FILE: &str = "scheduler.lock";
const DB_FILE: &str = "scheduler.db";

/// An open data directory, locked for this process until dropped.
pub struct DataDir {
    root: PathBuf,
    _lock: Flock<File>,
}

impl std::fmt::Debug for DataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDir").field("root", &self.root).finish()
    }
}

impl DataDir {
    /// Creates the directory if needed and takes its exclusive lock. A second scheduler on the
    /// same directory (another process, or another open in this one) gets
    /// [`StoreError::Locked`] and touches nothing.
    pub fn open(root: &Path) -> Result<DataDir> {
        create_private_dir(root)?;
        let lock_path = root.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(StoreError::io("open the lock file", &lock_path))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StoreError::Locked {
                    dir: root.to_path_buf(),
                    holder: if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (process {holder} holds {})", lock_path.display())
                    },
                });
            }
            Err((_, errno)) => {
                return Err(StoreError::Io {
                    action: "lock",
                    path: lock_path,
                    source: std::io::Error::from(errno),
                })
            }
        };
        // The pid is only for the message a second scheduler prints; the lock is the flock.
        let write_pid = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            write!(f, "{}", std::process::id())
        };
        write_pid(&mut lock).map_err(StoreError::io("write the lock file", &lock_path))?;
        Ok(DataDir {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn db_path(&self) -> PathBuf {
        self.root.join(DB_FILE)
    }

    /// The bundle stored under a blake3 digest. Refuses anything but 64 lowercase hex digits,
    /// so a digest from a request cannot name a path outside the directory.
    pub fn snapshot_path(&self, digest: &str) -> Result<PathBuf> {
        let digest_ok = digest.len() == 64
            && digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !digest_ok {
            return Err(StoreError::Invalid(format!(
                "snapshot digest '{digest}' is not 64 lowercase hex digits (a blake3 digest)"
            )));
        }
        let dir = self.root.join("snapshots");
        create_private_dir(&dir)?;
        Ok(dir.join(digest))
    }

    /// The directory of one run's artifacts (`artifacts/<run>/`).
    pub fn run_artifacts_dir(&self, run_id: &str) -> Result<PathBuf> {
        if run_id.is_empty() || !run_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(StoreError::Invalid(format!(
                "run id '{run_id}' is not a number"
            )));
        }
        let dir = self.root.join("artifacts").join(run_id);
        create_private_dir(&dir)?;
        Ok(dir)
    }

    /// Reads the token kept in `<dir>/<file_name>`, or creates the file (mode 0600) holding a
    /// new random token. Returns the token and whether it was created.
    pub fn load_or_create_token(&self, file_name: &str) -> Result<(String, bool)> {
        let path = self.root.join(file_name);
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => return Ok((text.trim().to_string(), false)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("read", &path)(e)),
        }
        let token = super::secret::new_token()?;
        let tmp = self.root.join(format!("{file_name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(StoreError::io("create", &tmp))?;
        writeln!(file, "{token}")
            .and_then(|_| file.sync_all())
            .map_err(StoreError::io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(StoreError::io("rename", &path))?;
        Ok((token, true))
    }
}

/// Creates `dir` (and its missing parents) with mode 0700; an existing directory is made
/// 0700 too, since it will hold secrets.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(StoreError::io("create the directory", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(StoreError::io("restrict the permissions of", dir))
}

/// Creates the database file 0600 before SQLite opens it: SQLite gives its `-wal` and `-shm`
/// files the database file's mode.
pub(crate) fn create_private_file(path: &Path) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(StoreError::io("create", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(StoreError::io("restrict the permissions of", path))
}
