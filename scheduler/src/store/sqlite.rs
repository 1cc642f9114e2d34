//! The SQLite store: one writer connection behind a mutex (transactions run one at a time,
//! so a job is never leased twice), a small pool of reader connections (WAL lets them read
//! beside the writer), and the change counters watchers wait on.
//!
//! Group commit: the transactions of calls that arrive while another one runs share one
//! SQLite transaction and one commit. Each runs in a savepoint of its own, so one that fails
//! is undone alone; each call returns only after the commit of its batch (a failed commit
//! fails every call of the batch, and none of their writes happened). A call that finds
//! other calls waiting for the writer leaves the batch open for them; the last one (or the
//! one that finds the batch at [`MAX_BATCH`] calls) commits it.

use super::checkpoint::Checkpointer;
use super::dir::{create_private_file, DataDir};
use super::error::{DbContext, Result, StoreError};
use super::jobs::LabelSets;
use super::runners::RunnerCache;
use super::schema;
use super::types::UnixMs;
use super::{Store, StoreTx};
use rusqlite::Connection;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use tokio::sync::watch;

/// The most calls one commit answers: later ones start the next batch, so the first calls
/// of a busy stream are not kept waiting long.
const MAX_BATCH: usize = 64;

/// Reader connections kept for reuse; more are opened when many read at once.
const IDLE_READERS: usize = 8;

pub struct SqliteStore {
    dir: DataDir,
    writer: Mutex<Writer>,
    /// Calls waiting for the writer: one that finds others waiting leaves its batch open.
    waiting: AtomicUsize,
    readers: Mutex<Vec<Connection>>,
    changes: watch::Sender<u64>,
    queue: watch::Sender<u64>,
    checkpointer: Checkpointer,
    runners: Mutex<RunnerCache>,
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
    /// The batch whose SQLite transaction is open, if any.
    batch: Option<Batch>,
}

/// An open batch: the calls that ran in it wait for its outcome.
struct Batch {
    calls: usize,
    changes: Changes,
    outcome: Arc<Outcome>,
}

/// How a batch ended: None while open, then the commit's result (an error as its message,
/// since every call of the batch gets it).
#[derive(Default)]
struct Outcome {
    result: Mutex<Option<std::result::Result<(), String>>>,
    done: Condvar,
}

impl Outcome {
    fn set(&self, result: std::result::Result<(), String>) {
        *lock(&self.result) = Some(result);
        self.done.notify_all();
    }

    fn wait(&self) -> Result<()> {
        let mut result = lock(&self.result);
        loop {
            if let Some(result) = &*result {
                return result.clone().map_err(StoreError::Commit);
            }
            result = self.done.wait(result).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// What the writer keeps in memory between transactions. Rebuilt from the database after a
/// rollback, so it never holds what did not commit.
#[derive(Clone)]
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
#[derive(Default, Clone, Copy)]
pub(crate) struct Changes {
    pub(crate) watched: bool,
    pub(crate) queued: bool,
    /// A runner registered (and may have replaced another): cached authentications go.
    pub(crate) runners: bool,
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
        let checkpointer = Checkpointer::start(&path)?;
        Ok(SqliteStore {
            dir,
            writer: Mutex::new(Writer {
                conn,
                state,
                batch: None,
            }),
            waiting: AtomicUsize::new(0),
            readers: Mutex::new(Vec::new()),
            changes: watch::Sender::new(0),
            queue: watch::Sender::new(0),
            checkpointer,
            runners: Mutex::default(),
        })
    }

    pub(crate) fn runner_cache(&self) -> MutexGuard<'_, RunnerCache> {
        lock(&self.runners)
    }

    /// Commits since the store opened (one per batch of calls).
    pub fn commits(&self) -> u64 {
        self.checkpointer.commits()
    }

    /// Calls waiting for the writer now.
    pub fn writers_waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
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

/// A statement without parameters or rows, prepared once per connection.
fn statement(conn: &Connection, sql: &str, action: &'static str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .ctx(action)?;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What running a call in the batch came to: the call's own result, or (the outer error) a
/// failure that may have ended the whole transaction, so the batch must be given up.
type CallResult = Result<Result<()>>;

impl SqliteStore {
    /// Runs `f` in a savepoint of the open batch (opening one if needed). Its writes are
    /// undone, and the writer's cache restored, when it fails or panics.
    fn run_in_batch(
        &self,
        writer: &mut Writer,
        f: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>,
        panicked: &mut Option<Box<dyn std::any::Any + Send>>,
    ) -> CallResult {
        let Writer { conn, state, batch } = writer;
        if batch.is_none() {
            // Nothing is pending: the call fails alone.
            if let Err(e) = statement(conn, "BEGIN IMMEDIATE", "starting a transaction") {
                return Ok(Err(e));
            }
            *batch = Some(Batch {
                calls: 0,
                changes: Changes::default(),
                outcome: Arc::default(),
            });
        }
        let Some(open) = batch.as_mut() else {
            return Err(StoreError::Invalid("no open batch".into()));
        };
        open.calls += 1;
        // The first call of a batch needs no savepoint: when it fails, the whole
        // transaction holds nothing but its writes and is rolled back.
        let alone = open.calls == 1;
        if !alone {
            statement(conn, "SAVEPOINT call", "starting a transaction")?;
        }
        let saved = state.clone();
        let mut changes = Changes::default();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f(&mut SqliteTx {
                conn,
                state,
                changes: &mut changes,
            })
        }));
        let result = match run {
            Ok(result) => result,
            Err(payload) => {
                *panicked = Some(payload);
                Err(StoreError::Invalid("a write transaction panicked".into()))
            }
        };
        match result {
            Ok(()) => {
                if !alone {
                    statement(conn, "RELEASE call", "ending a transaction")?;
                }
                open.changes.watched |= changes.watched;
                open.changes.queued |= changes.queued;
                open.changes.runners |= changes.runners;
                Ok(Ok(()))
            }
            Err(e) if alone => {
                *state = saved;
                let outcome = open.outcome.clone();
                *batch = None;
                if !conn.is_autocommit() {
                    statement(conn, "ROLLBACK", "undoing a failed transaction")?;
                }
                outcome.set(Err(e.to_string()));
                Ok(Err(e))
            }
            Err(e) => {
                *state = saved;
                // Undoes this call's writes only; the batch's other calls keep theirs.
                statement(conn, "ROLLBACK TO call", "undoing a failed transaction")?;
                statement(conn, "RELEASE call", "undoing a failed transaction")?;
                Ok(Err(e))
            }
        }
    }

    /// Commits the open batch and tells its calls how it went.
    fn commit(&self, writer: &mut Writer) -> Result<()> {
        let Some(batch) = writer.batch.take() else {
            return Ok(());
        };
        let committed = statement(&writer.conn, "COMMIT", "committing a transaction");
        if let Err(e) = &committed {
            if !writer.conn.is_autocommit() {
                let _ = writer.conn.execute_batch("ROLLBACK");
            }
            batch.outcome.set(Err(e.to_string()));
        } else {
            batch.outcome.set(Ok(()));
            self.checkpointer.committed();
            if batch.changes.runners {
                self.runner_cache().forget_all();
            }
            if batch.changes.watched {
                self.changes.send_modify(|n| *n += 1);
            }
            if batch.changes.queued {
                self.queue.send_modify(|n| *n += 1);
            }
        }
        committed
    }

    /// Commits the batch unless other calls wait to join it; then waits for the batch's
    /// outcome. A call that failed wrote nothing and returns at once.
    fn finish_call(&self, mut writer: MutexGuard<'_, Writer>, result: Result<()>) -> Result<()> {
        let Some(batch) = writer.batch.as_ref() else {
            return result;
        };
        let outcome = batch.outcome.clone();
        let leave_open = self.waiting.load(Ordering::SeqCst) > 0 && batch.calls < MAX_BATCH;
        if leave_open {
            drop(writer);
            result?;
            return outcome.wait();
        }
        if let Err(e) = self.commit(&mut writer) {
            let e = self.abandon(&mut writer, e);
            drop(writer);
            result?;
            return Err(e);
        }
        drop(writer);
        result
    }

    /// After a failure that may have ended the transaction (the batch's or a savepoint's):
    /// everything uncommitted is gone, so the cache is read again from the database.
    fn abandon(&self, writer: &mut Writer, error: StoreError) -> StoreError {
        if let Some(batch) = writer.batch.take() {
            if !writer.conn.is_autocommit() {
                let _ = writer.conn.execute_batch("ROLLBACK");
            }
            batch.outcome.set(Err(error.to_string()));
        }
        match WriterState::load(&writer.conn) {
            Ok(fresh) => {
                writer.state = fresh;
                error
            }
            Err(reload) => StoreError::Corrupt(format!("{error}; then {reload}")),
        }
    }
}

impl Store for SqliteStore {
    fn write_tx(&self, f: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>) -> Result<()> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut writer = lock(&self.writer);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let mut panicked = None;
        let result = match self.run_in_batch(&mut writer, f, &mut panicked) {
            Ok(result) => result,
            Err(broken) => Err(self.abandon(&mut writer, broken)),
        };
        let result = self.finish_call(writer, result);
        if let Some(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
        result
    }

    fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn subscribe_queue(&self) -> watch::Receiver<u64> {
        self.queue.subscribe()
    }
}
