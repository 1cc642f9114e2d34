//! The SQLite store: one writer connection behind a mutex (transactions run one at a time,
//! so a job is never leased twice), a small pool of reader connections (WAL lets them read
//! beside the writer), and the change counters watchers wait on.

use super::dir::{create_private_file, DataDir};
use super::error::{DbContext, Result, StoreError};
use super::jobs::LabelSets;
use super::schema;
use super::types::UnixMs;
use super::{Store, StoreTx};
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::watch;

/// Reader connections kept for reuse; more are opened when many read at once.
const IDLE_READERS: usize = 8;

pub struct SqliteStore {
    dir: DataDir,
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
    changes: watch::Sender<u64>,
    queue: watch::Sender<u64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("dir", &self.dir)
            .finish()
    }
}

pub(crate) struct Writer {
    conn: Connection,
    state: WriterState,
}

/// What the writer keeps in memory between transactions. Rebuilt from the database after a
/// rollback, so it never holds what did not commit.
pub(crate) struct WriterState {
    pub(crate) label_sets: LabelSets,
    pub(crate) next_queue_order: i64,
}

impl WriterState {
    fn load(conn: &Connection) -> Result<WriterState> {
        let max_order: Option<i64> = conn
            .query_row("SELECT max(queue_order) FROM jobs", [], |r| r.get(0))
            .ctx("reading the queue order")?;
        Ok(WriterState {
            label_sets: LabelSets::load(conn)?,
            next_queue_order: max_order.unwrap_or(0) + 1,
        })
    }
}

/// What a transaction changed, for the notifications sent after it commits.
#[derive(Default)]
pub(crate) struct Changes {
    pub(crate) watched: bool,
    pub(crate) queued: bool,
}

/// The write transaction handed to [`Store::write_tx`]'s closure.
pub struct SqliteTx<'a> {
    pub(crate) conn: &'a Connection,
    pub(crate) state: &'a mut WriterState,
    pub(crate) changes: &'a mut Changes,
}

impl SqliteStore {
    /// Opens (creating it if needed) the store in `dir`: takes the directory's lock, applies
    /// the migrations the database lacks, and refuses a database of a newer kiln.
    pub fn open(dir: &Path, now: UnixMs) -> Result<SqliteStore> {
        let dir = DataDir::open(dir)?;
        let path = dir.db_path();
        create_private_file(&path)?;
        let mut conn = schema::connect(&path)?;
        schema::migrate(&mut conn, &path, now)?;
        conn.set_prepared_statement_cache_capacity(64);
        let state = WriterState::load(&conn)?;
        Ok(SqliteStore {
            dir,
            writer: Mutex::new(Writer { conn, state }),
            readers: Mutex::new(Vec::new()),
            changes: watch::Sender::new(0),
            queue: watch::Sender::new(0),
        })
    }

    pub fn data_dir(&self) -> &DataDir {
        &self.dir
    }

    /// Runs `f` on a reader connection; it sees every transaction committed before.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let idle = lock(&self.readers).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = schema::connect(&self.dir.db_path())?;
                conn.execute_batch("PRAGMA query_only = ON")
                    .ctx("opening a reader")?;
                conn.set_prepared_statement_cache_capacity(32);
                conn
            }
        };
        let out = f(&conn);
        let mut idle = lock(&self.readers);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store for SqliteStore {
    fn write_tx(&self, f: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>) -> Result<()> {
        let mut writer = lock(&self.writer);
        let Writer { conn, state } = &mut *writer;
        let mut changes = Changes::default();
        let result = (|| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .ctx("starting a transaction")?;
            f(&mut SqliteTx {
                conn: &tx,
                state,
                changes: &mut changes,
            })?;
            tx.commit().ctx("committing a transaction")
        })();
        if let Err(e) = result {
            // The transaction rolled back (dropped uncommitted); forget what it cached.
            match WriterState::load(conn) {
                Ok(fresh) => *state = fresh,
                Err(reload) => return Err(StoreError::Corrupt(format!("{e}; then {reload}"))),
            }
            return Err(e);
        }
        drop(writer);
        if changes.watched {
            self.changes.send_modify(|n| *n += 1);
        }
        if changes.queued {
            self.queue.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn subscribe_queue(&self) -> watch::Receiver<u64> {
        self.queue.subscribe()
    }
}
