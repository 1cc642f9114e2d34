use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot run `git {args}` in {}: {source}; is git installed and on PATH?", repo.display())]
    GitSpawn {
        repo: PathBuf,
        args: String,
        source: std::io::Error,
    },
    #[error("`git {args}` failed in {}: {message}", repo.display())]
    Git {
        repo: PathBuf,
        args: String,
        message: String,
    },
    #[error("git object {oid} is malformed: {reason}")]
    BadObject { oid: String, reason: String },
    #[error("the workflow file {path}: {message}")]
    Workflow { path: String, message: String },
    #[error("invalid {what} {value:?}: {reason}")]
    BadOption {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("the cache store failed: {0}")]
    Store(#[from] kiln_cache::CacheError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;
