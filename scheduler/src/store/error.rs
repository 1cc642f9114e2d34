//! What can go wrong in the store. Refusals the protocol expects (a stale lease, an unknown
//! id, a gap in a log) are their own variants so the services map them to status codes; the
//! rest are failures of the disk or the database, with the path or the operation in the
//! message.

use std::path::PathBuf;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "another kiln scheduler is using the data directory {dir}{holder}; stop it, or give \
         this one another --data directory"
    )]
    Locked { dir: PathBuf, holder: String },

    #[error(
        "the database {path} has schema version {found}, written by a newer kiln (this one \
         knows versions up to {known}); run the newer kiln, or give this one another --data \
         directory"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },

    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the scheduler's database failed while {action}: {source}; check that the disk is not \
         full and the data directory is writable"
    )]
    Db {
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    /// The commit of a batch of calls failed, and none of its writes happened: every call of
    /// the batch gets the commit's own error, as its message.
    #[error("{0}")]
    Commit(String),

    #[error("the scheduler's database holds a value it cannot read ({0}); it was changed by hand or is damaged")]
    Corrupt(String),

    /// The job reference is not the job's current lease: the runner must stop the job.
    #[error(
        "job {job_id}: lease {lease_id} (attempt {attempt}) is no longer this runner's: {why}"
    )]
    Stale {
        job_id: String,
        lease_id: String,
        attempt: u32,
        why: String,
    },

    /// The lease is another runner's: a runner's token acts only on the jobs it leased, so a
    /// runner that learned another's lease id cannot renew, report, log or complete for it.
    #[error(
        "job {job_id}: lease {lease_id} belongs to another runner; a runner may act only on the \
         jobs it leased itself"
    )]
    NotHolder { job_id: String, lease_id: String },

    #[error("{what} '{id}' does not exist")]
    NotFound { what: &'static str, id: String },

    /// Log lines must follow the ones stored without a hole, or a line would be lost.
    #[error(
        "job {job_id} attempt {attempt}: log lines start at {first} but the scheduler holds \
         lines up to {held}; resend from line {next}",
        next = held + 1
    )]
    LogGap {
        job_id: String,
        attempt: u32,
        first: u64,
        held: u64,
    },

    /// A completion says more log lines were sent than the scheduler holds.
    #[error(
        "job {job_id} attempt {attempt}: the completion says {sent} log lines were sent but the \
         scheduler holds {held}; resend the missing lines, then complete again"
    )]
    LogsMissing {
        job_id: String,
        attempt: u32,
        sent: u64,
        held: u64,
    },

    #[error("invalid argument: {0}")]
    Invalid(String),

    #[error("no random bytes from the operating system: {0}")]
    Random(String),
}

impl StoreError {
    pub(crate) fn db(action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        move |source| StoreError::Db { action, source }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn stale(job_ref: &super::JobRef, why: impl Into<String>) -> StoreError {
        StoreError::Stale {
            job_id: job_ref.job_id.clone(),
            lease_id: job_ref.lease_id.clone(),
            attempt: job_ref.attempt,
            why: why.into(),
        }
    }
}

/// Most statements fail only when SQLite does; they name what they were doing.
pub(crate) trait DbContext<T> {
    fn ctx(self, action: &'static str) -> Result<T>;
}

impl<T> DbContext<T> for rusqlite::Result<T> {
    fn ctx(self, action: &'static str) -> Result<T> {
        self.map_err(StoreError::db(action))
    }
}
