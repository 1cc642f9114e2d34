//! Submissions, runs with their specs and op logs, the WatchRun event stream, and the
//! metadata of snapshots and artifacts.

use super::error::{Result, StoreError};
use super::secret::random_hex;
use super::sql;
use super::sqlite::{SqliteStore, SqliteTx};
use super::types::*;
use kiln_workflow::Conclusion;
use rusqlite::{params, Connection, Row};

/// Reading runs, their op logs and events.
pub trait Runs {
    /// The submission an idempotency key created, if any.
    fn find_submission(&self, idempotency_key: &str) -> Result<Option<Submission>>;
    fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>>;
    /// The most recent runs, newest first.
    fn list_runs(&self, limit: usize) -> Result<Vec<RunRecord>>;
    /// Runs not yet done, oldest first: the ones whose engines are rebuilt at start.
    fn unfinished_runs(&self) -> Result<Vec<RunRecord>>;
    fn run_spec(&self, run_id: &str) -> Result<StoredSpec>;
    /// The run's op log in order.
    fn run_ops(&self, run_id: &str) -> Result<Vec<RunOp>>;
    /// Events with a sequence number above `after_seq`, of the given runs (all runs when
    /// empty), in order, at most `limit`.
    fn read_events(&self, after_seq: u64, run_ids: &[String], limit: usize) -> Result<Vec<Event>>;
    /// The highest event sequence number (0 before the first event).
    fn last_event_seq(&self) -> Result<u64>;
    /// The size of a stored snapshot.
    fn snapshot_size(&self, digest: &str) -> Result<Option<u64>>;
    fn list_artifacts(&self, run_id: &str) -> Result<Vec<ArtifactRecord>>;
}

/// Writing runs, their op logs and events.
pub trait RunsTx {
    /// Creates the runs of one submission, or, when `idempotency_key` was seen before,
    /// returns the first call's runs and creates nothing. An empty key is never repeated.
    fn submit(
        &mut self,
        idempotency_key: &str,
        runs: &[NewRun],
        notices: &[String],
        now: UnixMs,
    ) -> Result<Submission>;
    /// Appends one op to the run's log; returns its sequence number.
    fn append_op(&mut self, run_id: &str, op: &[u8]) -> Result<u64>;
    /// Marks the run done. Repeating it changes nothing.
    fn finish_run(&mut self, run_id: &str, conclusion: Conclusion, now: UnixMs) -> Result<()>;
    /// Appends an event to the WatchRun stream; returns its sequence number.
    fn append_event(&mut self, run_id: &str, payload: &[u8], now: UnixMs) -> Result<u64>;
    /// Records a stored snapshot; false when it was recorded before (its use time is
    /// refreshed).
    fn record_snapshot(&mut self, digest: &str, size: u64, now: UnixMs) -> Result<bool>;
    /// Records (or replaces) an artifact of a run.
    fn record_artifact(&mut self, run_id: &str, name: &str, size: u64, now: UnixMs) -> Result<()>;
    /// Forgets the artifacts created before `created_before` and returns them, so the caller
    /// removes their files (the retention setting).
    fn expire_artifacts(&mut self, created_before: UnixMs) -> Result<Vec<ArtifactRecord>>;
}

/// Run ids are the database's row numbers; a string that is not one names no run.
pub(crate) fn run_num(run_id: &str) -> Result<i64> {
    run_id
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0 && n.to_string() == run_id)
        .ok_or_else(|| StoreError::NotFound {
            what: "run",
            id: run_id.to_string(),
        })
}

const RUN_COLUMNS: &str = "num, submission_id, workflow_name, workflow_path, event_name, sha, \
     git_ref, attempt, rerun_of, state, conclusion, created_ms, finished_ms";

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<(RunRecord, i64, Option<String>)> {
    let rerun_of: Option<i64> = row.get(8)?;
    Ok((
        RunRecord {
            id: row.get::<_, i64>(0)?.to_string(),
            submission_id: row.get(1)?,
            workflow_name: row.get(2)?,
            workflow_path: row.get(3)?,
            event_name: row.get(4)?,
            sha: row.get(5)?,
            git_ref: row.get(6)?,
            attempt: row.get(7)?,
            rerun_of: rerun_of.map(|n| n.to_string()),
            state: RunState::Running,
            conclusion: None,
            created_ms: row.get(11)?,
            finished_ms: row.get(12)?,
        },
        row.get(9)?,
        row.get(10)?,
    ))
}

fn finish_run_row(
    (mut run, state, conclusion): (RunRecord, i64, Option<String>),
) -> Result<RunRecord> {
    run.state = RunState::from_code(state)?;
    run.conclusion = optional_conclusion(conclusion)?;
    Ok(run)
}

fn query_runs(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RunRecord>> {
    let rows = sql::all(conn, sql, params, "reading runs", run_from_row)?;
    rows.into_iter().map(finish_run_row).collect()
}

fn get_run(conn: &Connection, run_id: &str) -> Result<Option<RunRecord>> {
    let Ok(num) = run_num(run_id) else {
        return Ok(None);
    };
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE num = ?1");
    Ok(query_runs(conn, &sql, [num])?.pop())
}

fn find_submission(conn: &Connection, key: &str) -> Result<Option<Submission>> {
    let found: Option<(String, String)> = sql::one(
        conn,
        "SELECT id, notices FROM submissions WHERE idempotency_key = ?1",
        [key],
        "reading a submission",
        |r| r.try_into(),
    )?;
    let Some((submission_id, notices)) = found else {
        return Ok(None);
    };
    let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE submission_id = ?1 ORDER BY position");
    Ok(Some(Submission {
        runs: query_runs(conn, &sql, [&submission_id])?,
        submission_id,
        notices: from_json(&notices, "submission notices")?,
        created: false,
    }))
}

pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    // Serializing strings, numbers and vectors of them cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

impl RunsTx for SqliteTx<'_> {
    fn submit(
        &mut self,
        idempotency_key: &str,
        runs: &[NewRun],
        notices: &[String],
        now: UnixMs,
    ) -> Result<Submission> {
        let key = if idempotency_key.is_empty() {
            format!("generated:{}", random_hex(16)?)
        } else {
            idempotency_key.to_string()
        };
        if let Some(existing) = find_submission(self.conn, &key)? {
            return Ok(existing);
        }
        let submission_id = random_hex(16)?;
        sql::exec(
            self.conn,
            "INSERT INTO submissions(idempotency_key, id, notices, created_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![key, submission_id, to_json(notices), now],
            "recording a submission",
        )?;
        for (position, run) in runs.iter().enumerate() {
            let rerun_of = run.rerun_of.as_deref().map(run_num).transpose()?;
            sql::exec(
                self.conn,
                "INSERT INTO runs(submission_id, position, workflow_name, workflow_path,
                     event_name, sha, git_ref, attempt, rerun_of, spec_format, spec, state,
                     created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, ?12)",
                params![
                    submission_id,
                    position as i64,
                    run.workflow_name,
                    run.workflow_path,
                    run.event_name,
                    run.sha,
                    run.git_ref,
                    run.attempt,
                    rerun_of,
                    run.spec.format,
                    run.spec.bytes,
                    now,
                ],
                "creating a run",
            )?;
        }
        self.changes.watched = true;
        let mut created = find_submission(self.conn, &key)?.ok_or_else(|| {
            StoreError::Corrupt("a submission vanished inside its transaction".into())
        })?;
        created.created = true;
        Ok(created)
    }

    fn append_op(&mut self, run_id: &str, op: &[u8]) -> Result<u64> {
        let num = existing_run(self.conn, run_id)?;
        let seq: Option<i64> = sql::one(
            self.conn,
            "INSERT INTO run_ops(run, seq, op)
             SELECT ?1, coalesce(max(seq), 0) + 1, ?2 FROM run_ops WHERE run = ?1
             RETURNING seq",
            params![num, op],
            "appending to a run's op log",
            |r| r.get(0),
        )?;
        Ok(seq.unwrap_or(0) as u64)
    }

    fn finish_run(&mut self, run_id: &str, conclusion: Conclusion, now: UnixMs) -> Result<()> {
        let num = existing_run(self.conn, run_id)?;
        let changed = sql::exec(
            self.conn,
            "UPDATE runs SET state = 2, conclusion = ?2, finished_ms = ?3
             WHERE num = ?1 AND state = 1",
            params![num, conclusion.as_str(), now],
            "finishing a run",
        )?;
        self.changes.watched |= changed > 0;
        Ok(())
    }

    fn append_event(&mut self, run_id: &str, payload: &[u8], now: UnixMs) -> Result<u64> {
        let num = run_num(run_id)?;
        let seq: Option<i64> = sql::one(
            self.conn,
            "INSERT INTO events(run, payload, created_ms) VALUES (?1, ?2, ?3) RETURNING seq",
            params![num, payload, now],
            "appending an event",
            |r| r.get(0),
        )?;
        self.changes.watched = true;
        Ok(seq.unwrap_or(0) as u64)
    }

    fn record_snapshot(&mut self, digest: &str, size: u64, now: UnixMs) -> Result<bool> {
        let action = "recording a snapshot";
        let known = sql::one(
            self.conn,
            "SELECT 1 FROM snapshots WHERE digest = ?1",
            [digest],
            action,
            |_| Ok(()),
        )?
        .is_some();
        if known {
            let sql = "UPDATE snapshots SET last_used_ms = ?2 WHERE digest = ?1";
            sql::exec(self.conn, sql, params![digest, now], action)?;
        } else {
            sql::exec(
                self.conn,
                "INSERT INTO snapshots(digest, size, stored_ms, last_used_ms)
                 VALUES (?1, ?2, ?3, ?3)",
                params![digest, size as i64, now],
                action,
            )?;
        }
        Ok(!known)
    }

    fn record_artifact(&mut self, run_id: &str, name: &str, size: u64, now: UnixMs) -> Result<()> {
        let num = existing_run(self.conn, run_id)?;
        sql::exec(
            self.conn,
            "INSERT INTO artifacts(run, name, size, created_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(run, name) DO UPDATE SET size = ?3, created_ms = ?4",
            params![num, name, size as i64, now],
            "recording an artifact",
        )?;
        Ok(())
    }

    fn expire_artifacts(&mut self, created_before: UnixMs) -> Result<Vec<ArtifactRecord>> {
        let mut expired = sql::all(
            self.conn,
            "DELETE FROM artifacts WHERE created_ms < ?1 RETURNING run, name, size, created_ms",
            [created_before],
            "expiring artifacts",
            artifact_from_row,
        )?;
        expired.sort_by(|a, b| (a.created_ms, &a.name).cmp(&(b.created_ms, &b.name)));
        Ok(expired)
    }
}

fn existing_run(conn: &Connection, run_id: &str) -> Result<i64> {
    let num = run_num(run_id)?;
    let found = sql::one(
        conn,
        "SELECT 1 FROM runs WHERE num = ?1",
        [num],
        "looking a run up",
        |_| Ok(()),
    )?;
    if found.is_none() {
        return Err(StoreError::NotFound {
            what: "run",
            id: run_id.to_string(),
        });
    }
    Ok(num)
}

fn artifact_from_row(row: &Row<'_>) -> rusqlite::Result<ArtifactRecord> {
    Ok(ArtifactRecord {
        run_id: row.get::<_, i64>(0)?.to_string(),
        name: row.get(1)?,
        size: row.get::<_, i64>(2)? as u64,
        created_ms: row.get(3)?,
    })
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        seq: r.get::<_, i64>(0)? as u64,
        run_id: r.get::<_, i64>(1)?.to_string(),
        payload: r.get(2)?,
        created_ms: r.get(3)?,
    })
}

impl Runs for SqliteStore {
    fn find_submission(&self, idempotency_key: &str) -> Result<Option<Submission>> {
        self.read(|c| find_submission(c, idempotency_key))
    }

    fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        self.read(|c| get_run(c, run_id))
    }

    fn list_runs(&self, limit: usize) -> Result<Vec<RunRecord>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY num DESC LIMIT ?1");
        self.read(|c| query_runs(c, &sql, [limit as i64]))
    }

    fn unfinished_runs(&self) -> Result<Vec<RunRecord>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE state = 1 ORDER BY num");
        self.read(|c| query_runs(c, &sql, []))
    }

    fn run_spec(&self, run_id: &str) -> Result<StoredSpec> {
        let num = run_num(run_id)?;
        self.read(|c| {
            sql::one(
                c,
                "SELECT spec_format, spec FROM runs WHERE num = ?1",
                [num],
                "reading a run's spec",
                |r| {
                    Ok(StoredSpec {
                        format: r.get(0)?,
                        bytes: r.get(1)?,
                    })
                },
            )?
            .ok_or_else(|| StoreError::NotFound {
                what: "run",
                id: run_id.to_string(),
            })
        })
    }

    fn run_ops(&self, run_id: &str) -> Result<Vec<RunOp>> {
        let num = run_num(run_id)?;
        self.read(|c| {
            sql::all(
                c,
                "SELECT seq, op FROM run_ops WHERE run = ?1 ORDER BY seq",
                [num],
                "reading a run's op log",
                |r| {
                    Ok(RunOp {
                        seq: r.get::<_, i64>(0)? as u64,
                        op: r.get(1)?,
                    })
                },
            )
        })
    }

    fn read_events(&self, after_seq: u64, run_ids: &[String], limit: usize) -> Result<Vec<Event>> {
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|c| {
            if run_ids.is_empty() {
                return sql::all(
                    c,
                    "SELECT seq, run, payload, created_ms FROM events
                     WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                    [after, limit],
                    "reading events",
                    event_from_row,
                );
            }
            // Each run's events come from its index range; merged, the first `limit` in
            // sequence order are the answer.
            let mut nums: Vec<i64> = run_ids.iter().filter_map(|id| run_num(id).ok()).collect();
            nums.sort_unstable();
            nums.dedup();
            let mut events = Vec::new();
            for num in nums {
                events.extend(sql::all(
                    c,
                    "SELECT seq, run, payload, created_ms FROM events
                     WHERE run = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                    [num, after, limit],
                    "reading events",
                    event_from_row,
                )?);
            }
            events.sort_by_key(|e| e.seq);
            events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            Ok(events)
        })
    }

    fn last_event_seq(&self) -> Result<u64> {
        self.read(|c| {
            let seq: Option<i64> = sql::one(
                c,
                "SELECT coalesce(max(seq), 0) FROM events",
                [],
                "reading the last event",
                |r| r.get(0),
            )?;
            Ok(seq.unwrap_or(0) as u64)
        })
    }

    fn snapshot_size(&self, digest: &str) -> Result<Option<u64>> {
        self.read(|c| {
            sql::one(
                c,
                "SELECT size FROM snapshots WHERE digest = ?1",
                [digest],
                "looking a snapshot up",
                |r| r.get::<_, i64>(0),
            )
            .map(|size| size.map(|s| s as u64))
        })
    }

    fn list_artifacts(&self, run_id: &str) -> Result<Vec<ArtifactRecord>> {
        let Ok(num) = run_num(run_id) else {
            return Ok(Vec::new());
        };
        self.read(|c| {
            sql::all(
                c,
                "SELECT run, name, size, created_ms FROM artifacts WHERE run = ?1 ORDER BY name",
                [num],
                "listing artifacts",
                artifact_from_row,
            )
        })
    }
}
