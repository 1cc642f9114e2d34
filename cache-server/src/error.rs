//! One error type for the whole crate. Messages say what failed and, where it helps, what to do.

use std::path::PathBuf;

/// Everything that can go wrong in the cache store, the HTTP service and the client.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cache index database failed: {0} (check that the data directory is writable and not used by another server)")]
    Index(#[from] rusqlite::Error),
    #[error("chunk {digest} is corrupt: {reason}; the entries that use it were removed, save them again")]
    CorruptChunk { digest: String, reason: String },
    #[error("chunk {0} is not in the store; upload it before committing the entry")]
    MissingChunk(String),
    #[error("cache entry already exists: scope {scope}, key {key}, version {version} (entries are write-once; use a new key)")]
    AlreadyExists {
        scope: String,
        key: String,
        version: String,
    },
    #[error("upload {0} is unknown or expired; reserve the entry again")]
    UnknownUpload(u64),
    #[error("upload {id} is incomplete: {reason}")]
    IncompleteUpload { id: u64, reason: String },
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("access denied: {0}")]
    Forbidden(String),
    #[error("invalid or expired token: {0} (mint a new one with `kiln cache token`)")]
    BadToken(String),
    #[error("request body too large: {0}")]
    TooLarge(String),
    #[error("archive entry {entry:?} refused: {reason}")]
    UnsafeArchiveEntry { entry: String, reason: String },
    /// A restore (or a confined save) refused to touch a path: it goes through a symlink, leads
    /// out of where the restore writes, or would create a symlink that does.
    #[error("path {path} refused: {reason}")]
    UnsafePath { path: PathBuf, reason: String },
    #[error("{0} holds no kiln cache (no token.key): check the path, or start `kiln cache serve --data` on it once to create one")]
    NoCache(PathBuf),
    #[error("the cache's signing key or data are open to other users ({detail}): whoever can read the key can mint tokens for any repository. Fix: {fix} (and if others may have read the key already, delete it instead: a new one is made, and tokens minted with the old one stop working)")]
    Exposed { detail: String, fix: String },
    #[error("chunk {digest} does not match its name: {reason}; nothing was stored (the client sent other bytes than it named)")]
    DigestMismatch { digest: String, reason: String },
    #[error("chunk {0} is not in any entry this token can read")]
    UnknownChunk(String),
    #[error("cache server request failed: {0}")]
    Http(String),
    #[error("cache server answered {status}: {message}")]
    ServerStatus { status: u16, message: String },
    #[error("invalid path pattern {pattern:?}: {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("invalid data from cache server: {0}")]
    Protocol(String),
    #[error("background task failed: {0}")]
    Task(String),
}

impl CacheError {
    /// Wraps an I/O error with the operation and the path it concerned.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CacheError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = CacheError> = std::result::Result<T, E>;
