//! The scheduler's durable state: runs with their inputs and per-run op logs (replayed into
//! engines at start), the job queue and its leases, runners and hashed tokens, step reports,
//! compressed logs, the WatchRun event stream, snapshot and artifact metadata.
//!
//! The [`Store`] trait is what the scheduler's services use; [`SqliteStore`] is its
//! implementation (see docs/scheduler.md, "State and durability"). Values are plain Rust types;
//! what the store keeps opaque (run specs, ops, dispatch payloads, event payloads) the caller
//! serializes.
//!
//! Writes happen in transactions: [`Store::write_tx`] (or [`StoreExt::write`]) runs a closure
//! with a [`StoreTx`], and everything it wrote commits together, so a driver can batch one
//! event-loop turn (leases, completions, ops, events) in one commit. A refusal the protocol
//! expects (a stale lease, a log gap, an unknown id) writes nothing, so the closure may catch
//! it and go on with other writes; any other error rolls the whole transaction back.
//!
//! The traits are split by subject ([`Runs`], [`Jobs`], [`Logs`], [`Runners`] to read,
//! [`RunsTx`], [`JobsTx`], [`LogsTx`], [`RunnersTx`] to write); `use
//! kiln_scheduler::store::prelude::*` brings them all into scope.

mod checkpoint;
mod dir;
mod error;
mod jobs;
mod logs;
mod runners;
mod runs;
mod schema;
mod secret;
mod sql;
mod sqlite;
mod tallies;
mod types;

pub use dir::DataDir;
pub use error::{Result, StoreError};
pub use jobs::{Jobs, JobsTx};
pub use logs::{Logs, LogsTx, LOG_BLOCK_BYTES, LOG_BLOCK_LINES};
pub use runners::{Runners, RunnersTx};
pub use runs::{Runs, RunsTx};
pub use schema::known_version as schema_version;
pub use secret::new_token;
pub use sqlite::SqliteStore;
pub use tallies::Tallies;
pub use types::*;

/// Everything to call the store's methods on `&dyn Store` and `&mut dyn StoreTx`.
pub mod prelude {
    pub use super::{
        Jobs, JobsTx, Logs, LogsTx, Runners, RunnersTx, Runs, RunsTx, Store, StoreExt, StoreTx,
    };
}

/// The writes of one transaction.
pub trait StoreTx: RunsTx + JobsTx + LogsTx + RunnersTx {}

impl<T: RunsTx + JobsTx + LogsTx + RunnersTx> StoreTx for T {}

/// The scheduler's durable state. Reads see every committed write; writes go through
/// [`Store::write_tx`].
pub trait Store: Runs + Jobs + Logs + Runners + Send + Sync {
    /// Runs `f` in one write transaction: all its writes commit together when it returns
    /// `Ok`, none when it returns an error. Transactions run one at a time.
    fn write_tx(&self, f: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>) -> Result<()>;

    /// Bumped after each commit that appended events or log lines or changed a job or run:
    /// a WatchRun stream waits on it, then reads after its cursors.
    fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Bumped after each commit that put a job in the queue: a waiting PollJob wakes and
    /// tries to lease.
    fn subscribe_queue(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// Typed results out of a write transaction.
pub trait StoreExt: Store {
    /// Runs `f` in one write transaction and returns its value (see [`Store::write_tx`]).
    fn write<T>(&self, f: impl FnOnce(&mut dyn StoreTx) -> Result<T>) -> Result<T> {
        let mut f = Some(f);
        let mut out = None;
        self.write_tx(&mut |tx| {
            let f = f.take().ok_or_else(|| {
                StoreError::Invalid("a write transaction ran its closure twice".into())
            })?;
            out = Some(f(tx)?);
            Ok(())
        })?;
        out.ok_or_else(|| StoreError::Invalid("a write transaction did not run its closure".into()))
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
