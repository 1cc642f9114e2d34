//! Registered runners and the scheduler's tokens. Only sha256 hashes of tokens are stored
//! (see `secret.rs`); a runner's raw token exists only in the Register reply and the
//! runner's credentials file.

use super::error::{Result, StoreError};
use super::runs::{from_json, to_json};
use super::secret::{hash_token, random_hex, runner_id_of_token, runner_token, token_matches};
use super::sql;
use super::sqlite::{SqliteStore, SqliteTx};
use super::types::*;
use rusqlite::{params, Connection, Row};

/// Reading runners and checking tokens.
pub trait Runners {
    /// The runner a token belongs to; None for an unknown, malformed or replaced token.
    /// Answers are cached in memory until a runner registers (which may replace one), so
    /// the record's `last_seen_ms` may be older than its last heartbeat: [`Runners::get_runner`]
    /// and [`Runners::list_runners`] read it fresh.
    fn authenticate_runner(&self, token: &str) -> Result<Option<RunnerRecord>>;
    fn get_runner(&self, runner_id: &str) -> Result<Option<RunnerRecord>>;
    /// Every runner, by name, with the jobs it holds leases for.
    fn list_runners(&self) -> Result<Vec<RunnerInfo>>;
    /// Whether `token` is the scheduler's token of that kind (false when none is set).
    fn check_token(&self, kind: TokenKind, token: &str) -> Result<bool>;
}

/// Writing runners and tokens.
pub trait RunnersTx {
    /// Creates a runner and returns it with its token (the only time the raw token exists on
    /// the scheduler's side). A runner registered before under the same name is replaced: its
    /// token stops working; leases it holds run out as usual.
    fn register_runner(
        &mut self,
        registration: &RunnerRegistration,
        now: UnixMs,
    ) -> Result<(RunnerRecord, String)>;
    /// Records that the runner was heard from (Heartbeat).
    fn touch_runner(&mut self, runner_id: &str, now: UnixMs) -> Result<()>;
    /// Sets the token of a kind (its hash); the previous one stops working.
    fn set_token(&mut self, kind: TokenKind, token: &str, now: UnixMs) -> Result<()>;
}

const RUNNER_COLUMNS: &str = "id, name, labels, capacity, version, registered_ms, last_seen_ms";

fn runner_from_row(row: &Row<'_>) -> rusqlite::Result<(RunnerRecord, String)> {
    Ok((
        RunnerRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            labels: Vec::new(),
            capacity: row.get(3)?,
            version: row.get(4)?,
            registered_ms: row.get(5)?,
            last_seen_ms: row.get(6)?,
        },
        row.get(2)?,
    ))
}

fn decode_runner((mut runner, labels): (RunnerRecord, String)) -> Result<RunnerRecord> {
    runner.labels = from_json(&labels, "a runner's labels")?;
    Ok(runner)
}

fn get_runner(conn: &Connection, runner_id: &str) -> Result<Option<RunnerRecord>> {
    let sql = format!("SELECT {RUNNER_COLUMNS} FROM runners WHERE id = ?1");
    sql::one(
        conn,
        &sql,
        [runner_id],
        "looking a runner up",
        runner_from_row,
    )?
    .map(decode_runner)
    .transpose()
}

impl RunnersTx for SqliteTx<'_> {
    fn register_runner(
        &mut self,
        registration: &RunnerRegistration,
        now: UnixMs,
    ) -> Result<(RunnerRecord, String)> {
        let name = registration.name.trim();
        if name.is_empty() {
            return Err(StoreError::Invalid(
                "a runner needs a name (`kiln runner register --name`)".into(),
            ));
        }
        let id = format!("r{}", random_hex(8)?);
        let token = runner_token(&id)?;
        let sql = "DELETE FROM runners WHERE name = ?1";
        sql::exec(self.conn, sql, [name], "replacing a runner")?;
        sql::exec(
            self.conn,
            "INSERT INTO runners(id, name, labels, capacity, version, token_hash,
                 registered_ms, last_seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![
                id,
                name,
                to_json(&registration.labels),
                registration.capacity,
                registration.version,
                hash_token(&token).as_slice(),
                now
            ],
            "registering a runner",
        )?;
        self.changes.watched = true;
        self.changes.runners = true;
        let runner = get_runner(self.conn, &id)?.ok_or_else(|| StoreError::NotFound {
            what: "runner",
            id: id.clone(),
        })?;
        Ok((runner, token))
    }

    fn touch_runner(&mut self, runner_id: &str, now: UnixMs) -> Result<()> {
        let changed = sql::exec(
            self.conn,
            "UPDATE runners SET last_seen_ms = max(last_seen_ms, ?2) WHERE id = ?1",
            params![runner_id, now],
            "recording a heartbeat",
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound {
                what: "runner",
                id: runner_id.to_string(),
            });
        }
        Ok(())
    }

    fn set_token(&mut self, kind: TokenKind, token: &str, now: UnixMs) -> Result<()> {
        if token.trim().is_empty() {
            return Err(StoreError::Invalid(format!(
                "the {} token is empty",
                kind.as_str()
            )));
        }
        sql::exec(
            self.conn,
            "INSERT INTO tokens(kind, hash, set_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(kind) DO UPDATE SET hash = ?2, set_ms = ?3",
            params![kind.as_str(), hash_token(token).as_slice(), now],
            "storing a token",
        )?;
        Ok(())
    }
}

/// Runners by id with their token hashes, as authentication read them: a runner's every call
/// authenticates, and the answer changes only when a runner registers (its name's earlier
/// runner is replaced). Entries are dropped after such a commit; a read that began before it
/// is not remembered (the generation moved).
#[derive(Default)]
pub(crate) struct RunnerCache {
    generation: u64,
    runners: std::collections::HashMap<String, (Vec<u8>, RunnerRecord)>,
}

/// Runners kept; beyond, the cache starts over.
const CACHED_RUNNERS: usize = 4096;

impl RunnerCache {
    /// Some(answer) when the runner is cached: the record if the token is its own.
    pub(crate) fn known(&self, runner_id: &str, token: &str) -> Option<Option<RunnerRecord>> {
        let (hash, runner) = self.runners.get(runner_id)?;
        Some(token_matches(token, hash).then(|| runner.clone()))
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn remember(&mut self, generation: u64, hash: Vec<u8>, runner: RunnerRecord) {
        if generation != self.generation {
            return;
        }
        if self.runners.len() >= CACHED_RUNNERS {
            self.runners.clear();
        }
        self.runners.insert(runner.id.clone(), (hash, runner));
    }

    /// After a commit that registered a runner.
    pub(crate) fn forget_all(&mut self) {
        self.generation += 1;
        self.runners.clear();
    }
}

/// The stored hash a token is compared with, found by `sql` from `key`.
fn stored_hash(conn: &Connection, sql: &str, key: &str) -> Result<Option<Vec<u8>>> {
    sql::one(conn, sql, [key], "checking a token", |r| r.get(0))
}

impl SqliteStore {
    /// [`Runners::authenticate_runner`]'s answer when it needs no database read (the runner
    /// is cached), else None.
    pub fn cached_runner(&self, token: &str) -> Option<Option<RunnerRecord>> {
        let id = runner_id_of_token(token)?;
        self.runner_cache().known(id, token)
    }
}

impl Runners for SqliteStore {
    fn authenticate_runner(&self, token: &str) -> Result<Option<RunnerRecord>> {
        let Some(id) = runner_id_of_token(token) else {
            return Ok(None);
        };
        if let Some(known) = self.runner_cache().known(id, token) {
            return Ok(known);
        }
        let generation = self.runner_cache().generation();
        let found = self.read(|c| {
            let hash = stored_hash(c, "SELECT token_hash FROM runners WHERE id = ?1", id)?;
            Ok(match hash {
                Some(hash) => get_runner(c, id)?.map(|runner| (hash, runner)),
                None => None,
            })
        })?;
        let Some((hash, runner)) = found else {
            return Ok(None);
        };
        let matches = token_matches(token, &hash);
        self.runner_cache()
            .remember(generation, hash, runner.clone());
        Ok(matches.then_some(runner))
    }

    fn get_runner(&self, runner_id: &str) -> Result<Option<RunnerRecord>> {
        self.read(|c| get_runner(c, runner_id))
    }

    fn list_runners(&self) -> Result<Vec<RunnerInfo>> {
        self.read(|c| {
            let sql = format!("SELECT {RUNNER_COLUMNS} FROM runners ORDER BY name");
            let rows = sql::all(c, &sql, [], "listing runners", runner_from_row)?;
            rows.into_iter()
                .map(|row| {
                    let runner = decode_runner(row)?;
                    let running_job_ids = sql::all(
                        c,
                        "SELECT job_id FROM leases WHERE runner_id = ?1 ORDER BY job_id",
                        [&runner.id],
                        "listing runners",
                        |r| r.get(0),
                    )?;
                    Ok(RunnerInfo {
                        runner,
                        running_job_ids,
                    })
                })
                .collect()
        })
    }

    fn check_token(&self, kind: TokenKind, token: &str) -> Result<bool> {
        self.read(|c| {
            let stored = stored_hash(c, "SELECT hash FROM tokens WHERE kind = ?1", kind.as_str())?;
            Ok(stored.is_some_and(|hash| token_matches(token, &hash)))
        })
    }
}
