//! Where hashFiles() reads: the walk and the digests go through [`FileSource`], so the same
//! glob, order and digest code runs over a checked-out workspace ([`LocalFiles`]) or over a
//! commit's tree read from git objects (kiln-bench), and both give the same digest.

use super::HashFilesError;
use sha2::{Digest, Sha256};
use std::fs::{self, File, FileType};
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Instant;

/// What a path is, as `lstat` (or `stat`, following links) tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File,
    Symlink,
    /// A named pipe, socket or device, described for the error message.
    Special(&'static str),
}

/// One entry of a directory listing: its raw name and, when the listing tells it, its kind
/// (not following links).
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub kind: Option<EntryKind>,
}

/// The file system view hashFiles() needs. Paths are absolute, `/`-separated, under the
/// workspace path the caller gave (or elsewhere, for patterns that leave it). Errors of kind
/// `NotFound` mean the path does not exist (or a link is broken).
pub trait FileSource: Sync {
    /// The kind of `path` itself (`lstat`).
    fn lstat(&self, path: &str) -> io::Result<EntryKind>;
    /// The kind of what `path` leads to, following links (`stat`).
    fn stat(&self, path: &str) -> io::Result<EntryKind>;
    /// The entries of a directory, in any order.
    fn read_dir(&self, path: &str) -> io::Result<Vec<DirEntry>>;
    /// The path with every link resolved (`realpath`).
    fn real_path(&self, path: &str) -> io::Result<String>;
    /// SHA-256 of the file's bytes (through links). `buffer` is scratch space the caller keeps.
    fn sha256(
        &self,
        path: &str,
        buffer: &mut [u8],
        deadline: Instant,
    ) -> Result<[u8; 32], HashFilesError>;
}

/// The local file system: a checked-out workspace.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalFiles;

pub(crate) fn kind_of(file_type: &FileType) -> EntryKind {
    if file_type.is_dir() {
        EntryKind::Directory
    } else if file_type.is_file() {
        EntryKind::File
    } else if file_type.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Special(special_kind(file_type))
    }
}

fn special_kind(file_type: &FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_fifo() {
        "a named pipe"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

impl FileSource for LocalFiles {
    fn lstat(&self, path: &str) -> io::Result<EntryKind> {
        Ok(kind_of(&fs::symlink_metadata(path)?.file_type()))
    }

    fn stat(&self, path: &str) -> io::Result<EntryKind> {
        Ok(kind_of(&fs::metadata(path)?.file_type()))
    }

    fn read_dir(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        use std::os::unix::ffi::OsStringExt;
        let mut entries = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            entries.push(DirEntry {
                kind: entry.file_type().ok().map(|t| kind_of(&t)),
                name: entry.file_name().into_vec(),
            });
        }
        Ok(entries)
    }

    fn real_path(&self, path: &str) -> io::Result<String> {
        fs::canonicalize(path)?
            .into_os_string()
            .into_string()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8"))
    }

    fn sha256(
        &self,
        path: &str,
        buffer: &mut [u8],
        deadline: Instant,
    ) -> Result<[u8; 32], HashFilesError> {
        let failed = |action, source| HashFilesError::Io {
            action,
            path: PathBuf::from(path),
            source,
        };
        let mut file = File::open(path).map_err(|source| failed("open", source))?;
        let mut hasher = Sha256::new();
        loop {
            let read = match file.read(buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(failed("read", source)),
            };
            hasher.update(&buffer[..read]);
            if read == buffer.len() && Instant::now() > deadline {
                return Err(HashFilesError::TimedOut {
                    seconds: super::GITHUB_TIMEOUT.as_secs(),
                });
            }
        }
        Ok(hasher.finalize().into())
    }
}
