//! The database schema as numbered migrations, applied in order at open. `schema_migrations`
//! records each applied version; a database holding a version this kiln does not know was
//! written by a newer kiln and is refused rather than misread.
//!
//! A migration is never edited once released: a change is a new migration appended to
//! [`MIGRATIONS`].

use super::error::{DbContext, Result, StoreError};
use super::types::UnixMs;
use rusqlite::{Connection, OptionalExtension};
use std::path::Path;
use std::time::Duration;

/// `(version, SQL)`, in order, versions from 1 without holes.
pub(crate) const MIGRATIONS: &[(u32, &str)] = &[(1, V1), (2, V2), (3, V3)];

/// The highest schema version this kiln knows.
pub fn known_version() -> u32 {
    MIGRATIONS.last().map_or(0, |(v, _)| *v)
}

/// States and conclusions are stored as small integers and words (see `types.rs`); ids of runs
/// are the `runs.num` row ids, written as decimal strings outside the store.
///
/// No partial index has a constant in its `WHERE`: SQLite compares a statement's bound
/// parameters with it, and then prepares the statement again for every new value. A job's
/// payload has its own table, so the updates of a job's state do not copy it.
const V1: &str = "
CREATE TABLE submissions(
    idempotency_key TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    notices TEXT NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE runs(
    num INTEGER PRIMARY KEY AUTOINCREMENT,
    submission_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    workflow_name TEXT NOT NULL,
    workflow_path TEXT NOT NULL,
    event_name TEXT NOT NULL,
    sha TEXT NOT NULL,
    git_ref TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    rerun_of INTEGER,
    spec_format INTEGER NOT NULL,
    spec BLOB NOT NULL,
    state INTEGER NOT NULL,
    conclusion TEXT,
    created_ms INTEGER NOT NULL,
    finished_ms INTEGER
);
CREATE INDEX runs_by_submission ON runs(submission_id, position);
CREATE INDEX runs_by_state ON runs(state, num);

CREATE TABLE run_ops(
    run INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    op BLOB NOT NULL,
    PRIMARY KEY(run, seq)
) WITHOUT ROWID;

CREATE TABLE events(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run INTEGER NOT NULL,
    payload BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX events_by_run ON events(run, seq);

CREATE TABLE label_sets(
    id INTEGER PRIMARY KEY,
    labels TEXT NOT NULL UNIQUE
);

CREATE TABLE jobs(
    id TEXT PRIMARY KEY,
    run INTEGER NOT NULL,
    leg INTEGER NOT NULL,
    job_path TEXT NOT NULL,
    name TEXT NOT NULL,
    runs_on TEXT NOT NULL DEFAULT '[]',
    label_set INTEGER,
    state INTEGER NOT NULL,
    conclusion TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    waiting_reason TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    queued_ms INTEGER,
    queue_order INTEGER,
    runner_name TEXT NOT NULL DEFAULT '',
    started_ms INTEGER,
    finished_ms INTEGER,
    outputs TEXT NOT NULL DEFAULT '[]',
    steps TEXT NOT NULL DEFAULT '[]',
    summary TEXT NOT NULL DEFAULT '',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    completed_lease TEXT,
    UNIQUE(run, leg)
);
CREATE INDEX jobs_queue ON jobs(state, label_set, queue_order);
CREATE INDEX jobs_by_queued_time ON jobs(state, queued_ms);

CREATE TABLE job_payloads(
    job_id TEXT PRIMARY KEY,
    payload BLOB NOT NULL
);

CREATE TABLE leases(
    job_id TEXT PRIMARY KEY,
    lease_id TEXT NOT NULL UNIQUE,
    runner_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    confirmed INTEGER NOT NULL DEFAULT 0,
    poll_id TEXT NOT NULL,
    leased_ms INTEGER NOT NULL,
    UNIQUE(runner_id, poll_id)
) WITHOUT ROWID;
CREATE INDEX leases_by_expiry ON leases(expires_ms);

CREATE TABLE runners(
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    labels TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    version TEXT NOT NULL,
    token_hash BLOB NOT NULL,
    registered_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE tokens(
    kind TEXT PRIMARY KEY,
    hash BLOB NOT NULL,
    set_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE step_reports(
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    phase INTEGER NOT NULL,
    step_id TEXT NOT NULL,
    name TEXT NOT NULL,
    outcome TEXT,
    conclusion TEXT,
    unix_ms INTEGER NOT NULL,
    PRIMARY KEY(job_id, attempt, idx, phase)
) WITHOUT ROWID;

CREATE TABLE log_heads(
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    max_seq INTEGER NOT NULL,
    tail_lines INTEGER NOT NULL,
    tail_bytes INTEGER NOT NULL,
    PRIMARY KEY(job_id, attempt)
) WITHOUT ROWID;

CREATE TABLE log_tail(
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    step_index INTEGER NOT NULL,
    unix_ms INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY(job_id, attempt, seq)
) WITHOUT ROWID;

CREATE TABLE log_blocks(
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    raw_len INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY(job_id, attempt, first_seq)
) WITHOUT ROWID;

CREATE TABLE snapshots(
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    stored_ms INTEGER NOT NULL,
    last_used_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE artifacts(
    run INTEGER NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY(run, name)
) WITHOUT ROWID;
CREATE INDEX artifacts_by_age ON artifacts(created_ms);
";

/// A leg's matrix values (JSON object text; NULL for a job without a matrix), so GetRun and
/// `kiln submit --report` show them as `kiln run --report` does.
const V2: &str = "ALTER TABLE jobs ADD COLUMN matrix TEXT;";

/// Queued job payloads name their run's workflow text (kept once, in the run's spec) instead
/// of each carrying a copy; the service joins the text in when the job is leased. The tables
/// do not change, and payloads queued before still carry their text, which is used as it is.
/// The version is what matters: a kiln that knows only version 1 would misread the new
/// payloads, so it refuses the database instead.
const V3: &str = "";

/// Opens a connection with the settings every connection of the store uses. WAL lets readers
/// run beside the one writer; `synchronous = NORMAL` syncs the log only at checkpoints, so a
/// committed transaction survives a crash of the process (SIGKILL) but the last ones may be
/// lost to a power failure. The log is copied into the database every 16,384 pages (64 MiB)
/// instead of SQLite's 1,000: the pages a job touches (the queue's index, the newest rows of
/// jobs, events and logs) are rewritten by every job, and a checkpoint copies each page once
/// however often the log holds it; the log file is cut back to 64 MiB after each. That
/// automatic checkpoint is only a backstop: the store's checkpoint thread folds the log in
/// a moment after commits (`checkpoint.rs`), so commits do not wait for it. Temporary
/// storage (the rows a `RETURNING` statement buffers, the savepoint journals of a batch's
/// calls) stays in memory instead of temporary files created and deleted per statement.
pub(crate) fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).ctx("opening the database")?;
    conn.busy_timeout(Duration::from_secs(10))
        .ctx("setting the busy timeout")?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = OFF;
         PRAGMA wal_autocheckpoint = 16384;
         PRAGMA journal_size_limit = 67108864;
         PRAGMA cache_size = -8192;
         PRAGMA temp_store = MEMORY;",
    )
    .ctx("setting the journal mode")?;
    Ok(conn)
}

/// Applies the migrations this database lacks, each in its own transaction.
pub(crate) fn migrate(conn: &mut Connection, path: &Path, now: UnixMs) -> Result<u32> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations(
             version INTEGER PRIMARY KEY,
             applied_ms INTEGER NOT NULL)",
    )
    .ctx("creating the schema version table")?;
    let found: u32 = conn
        .query_row("SELECT max(version) FROM schema_migrations", [], |r| {
            r.get::<_, Option<u32>>(0)
        })
        .optional()
        .ctx("reading the schema version")?
        .flatten()
        .unwrap_or(0);
    let known = known_version();
    if found > known {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        let tx = conn.transaction().ctx("starting a migration")?;
        tx.execute_batch(sql).ctx("applying a schema migration")?;
        tx.execute(
            "INSERT INTO schema_migrations(version, applied_ms) VALUES (?1, ?2)",
            (version, now),
        )
        .ctx("recording a schema migration")?;
        tx.commit().ctx("committing a schema migration")?;
    }
    Ok(known)
}
