//! Job legs, the queue and leases.
//!
//! A queued job's `runs-on` labels are folded to lower case, sorted and interned as a label
//! set; the queue index is `(label set, queue order)` over queued jobs only. A lease looks at
//! the label sets contained in the runner's labels (few: one per distinct `runs-on`) and
//! takes the oldest queued job among them, so leasing costs a few index probes however long
//! the queue is, and the queue itself stays on disk.

use super::error::{Result, StoreError};
use super::logs;
use super::runs::{from_json, run_num, to_json};
use super::secret::random_hex;
use super::sql;
use super::sqlite::{SqliteStore, SqliteTx};
use super::types::*;
use crate::engine::StepRecord;
use kiln_workflow::Conclusion;
use rusqlite::{params, Connection, Row};

/// Reading jobs and leases.
pub trait Jobs {
    fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>>;
    /// The run's job legs in leg order.
    fn jobs_of_run(&self, run_id: &str) -> Result<Vec<JobRecord>>;
    /// The lease a ref names, when it is the job's current one; [`StoreError::Stale`]
    /// otherwise (Heartbeat's answer for each job a runner says it runs).
    fn lease_status(&self, runner_id: &str, job_ref: &JobRef) -> Result<LeaseStatus>;
    /// The distinct label sets queued jobs ask for (folded to lower case, sorted), with how
    /// many jobs ask for each: what the waiting reasons are computed from.
    fn queued_label_sets(&self) -> Result<Vec<(Vec<String>, u64)>>;
}

/// Writing jobs, the queue and leases.
pub trait JobsTx {
    /// Records a leg the engine created, as waiting. Repeating it (a replay) changes nothing.
    /// Returns the job's id.
    fn add_job(&mut self, job: &NewJob) -> Result<String>;
    /// Puts a waiting job in the queue with the payload its runner gets. False, and nothing
    /// changed, when the job was queued before (a replay after restart).
    fn enqueue(
        &mut self,
        job_id: &str,
        runs_on: &[String],
        payload: &[u8],
        now: UnixMs,
    ) -> Result<bool>;
    /// Why a queued job does not start (shown by GetRun); empty clears it.
    fn set_waiting_reason(&mut self, job_id: &str, reason: &str) -> Result<()>;
    /// Leases the oldest queued job whose labels are all among the runner's (compared
    /// case-insensitively), for `ttl_ms`. A repeated `poll_id` of the same runner returns the
    /// assignment it got before while that lease lasts. None when no job matches.
    fn lease(
        &mut self,
        runner_id: &str,
        poll_id: &str,
        now: UnixMs,
        ttl_ms: i64,
    ) -> Result<Option<Assignment>>;
    /// Extends the current lease to `now + ttl_ms` and confirms it.
    fn renew(
        &mut self,
        runner_id: &str,
        job_ref: &JobRef,
        now: UnixMs,
        ttl_ms: i64,
    ) -> Result<LeaseStatus>;
    /// A runner's completion. Refused as stale unless `job_ref` is the current lease (and as
    /// [`StoreError::NotHolder`] when another runner holds it); the
    /// same completion repeated is [`Completion::AlreadyCompleted`].
    fn complete_job(
        &mut self,
        runner_id: &str,
        job_ref: &JobRef,
        result: &JobResult,
        now: UnixMs,
    ) -> Result<Completion>;
    /// Concludes a job the scheduler decided itself (skipped, cancelled before it ran, failed
    /// to start). A lease it had ends (the runner's next call is refused as stale). False
    /// when the job was already done.
    fn conclude_job(
        &mut self,
        job_id: &str,
        conclusion: Conclusion,
        message: &str,
        now: UnixMs,
    ) -> Result<bool>;
    /// Asks the runner of a job to stop it (seen in the renewal, step and log replies).
    /// Returns the job's state: a waiting or queued job is the caller's to conclude.
    fn request_cancel(&mut self, job_id: &str) -> Result<JobState>;
    /// Ends the leases that expired at `now`: the job goes back to the queue (as a new
    /// attempt when the lease was confirmed), or, after [`MAX_ATTEMPTS`] losses or when a
    /// cancellation was pending, is concluded.
    fn expire_leases(&mut self, now: UnixMs) -> Result<Vec<ExpiredLease>>;
    /// Extends every lease to at least `until` (on start, so runners that kept working while
    /// the scheduler was down can renew). Returns how many leases there are.
    fn extend_leases(&mut self, until: UnixMs) -> Result<usize>;
    /// Concludes as failed the jobs queued for `max_wait_ms` or longer.
    fn expire_queued(&mut self, now: UnixMs, max_wait_ms: i64) -> Result<Vec<TimedOutJob>>;
}

/// The label sets of queued jobs, cached by the writer (few, never deleted).
#[derive(Clone)]
pub(crate) struct LabelSets {
    sets: Vec<(i64, Vec<String>)>,
}

pub(crate) fn fold_labels(labels: &[String]) -> Vec<String> {
    let mut folded: Vec<String> = labels.iter().map(|l| l.trim().to_lowercase()).collect();
    folded.sort();
    folded.dedup();
    folded
}

impl LabelSets {
    pub(crate) fn load(conn: &Connection) -> Result<LabelSets> {
        let rows: Vec<(i64, String)> = sql::all(
            conn,
            "SELECT id, labels FROM label_sets",
            [],
            "reading label sets",
            |r| r.try_into(),
        )?;
        let sets = rows
            .into_iter()
            .map(|(id, json)| Ok((id, from_json(&json, "a label set")?)))
            .collect::<Result<_>>()?;
        Ok(LabelSets { sets })
    }

    fn id_for(&mut self, conn: &Connection, labels: &[String]) -> Result<i64> {
        let folded = fold_labels(labels);
        if let Some((id, _)) = self.sets.iter().find(|(_, set)| *set == folded) {
            return Ok(*id);
        }
        let sql = "INSERT INTO label_sets(labels) VALUES (?1)";
        sql::exec(conn, sql, [to_json(&folded)], "recording a label set")?;
        let id = conn.last_insert_rowid();
        self.sets.push((id, folded));
        Ok(id)
    }

    fn matching(&self, runner_labels: &[String]) -> Vec<i64> {
        let have = fold_labels(runner_labels);
        self.sets
            .iter()
            .filter(|(_, set)| set.iter().all(|l| have.binary_search(l).is_ok()))
            .map(|(id, _)| *id)
            .collect()
    }
}

const JOB_COLUMNS: &str = "id, run, leg, job_path, name, runs_on, state, conclusion, attempt, \
     waiting_reason, queued_ms, message, runner_name, started_ms, finished_ms, outputs, steps, \
     summary, cancel_requested, matrix";

/// A row's columns before the parts that need decoding are decoded.
struct RawJob {
    record: JobRecord,
    runs_on: String,
    state: i64,
    conclusion: Option<String>,
    outputs: String,
    steps: String,
}

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        record: JobRecord {
            job_id: row.get(0)?,
            run_id: row.get::<_, i64>(1)?.to_string(),
            leg: row.get(2)?,
            job_path: row.get(3)?,
            name: row.get(4)?,
            runs_on: Vec::new(),
            state: JobState::Waiting,
            conclusion: None,
            attempt: row.get(8)?,
            waiting_reason: row.get(9)?,
            queued_ms: row.get(10)?,
            message: row.get(11)?,
            runner_name: row.get(12)?,
            started_ms: row.get(13)?,
            finished_ms: row.get(14)?,
            outputs: Vec::new(),
            steps: Vec::new(),
            summary: row.get(17)?,
            cancel_requested: row.get(18)?,
            matrix: row.get(19)?,
        },
        runs_on: row.get(5)?,
        state: row.get(6)?,
        conclusion: row.get(7)?,
        outputs: row.get(15)?,
        steps: row.get(16)?,
    })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredStep {
    id: String,
    name: String,
    outcome: String,
    conclusion: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache: Option<kiln_workflow::StepCache>,
}

fn steps_to_json(steps: &[StepRecord]) -> String {
    let stored: Vec<StoredStep> = steps
        .iter()
        .map(|s| StoredStep {
            id: s.id.clone(),
            name: s.name.clone(),
            outcome: s.outcome.as_str().into(),
            conclusion: s.conclusion.as_str().into(),
            cache: s.cache.clone(),
        })
        .collect();
    to_json(&stored)
}

impl RawJob {
    fn decode(self) -> Result<JobRecord> {
        let mut job = self.record;
        job.runs_on = from_json(&self.runs_on, "a job's labels")?;
        job.state = JobState::from_code(self.state)?;
        job.conclusion = optional_conclusion(self.conclusion)?;
        job.outputs = from_json(&self.outputs, "a job's outputs")?;
        let steps: Vec<StoredStep> = from_json(&self.steps, "a job's steps")?;
        job.steps = steps
            .into_iter()
            .map(|s| {
                Ok(StepRecord {
                    id: s.id,
                    name: s.name,
                    outcome: conclusion_from_str(&s.outcome)?,
                    conclusion: conclusion_from_str(&s.conclusion)?,
                    cache: s.cache,
                })
            })
            .collect::<Result<_>>()?;
        Ok(job)
    }
}

fn query_jobs(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<JobRecord>> {
    let rows = sql::all(conn, sql, params, "reading jobs", job_from_row)?;
    rows.into_iter().map(RawJob::decode).collect()
}

pub(crate) fn get_job(conn: &Connection, job_id: &str) -> Result<Option<JobRecord>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
    Ok(query_jobs(conn, &sql, [job_id])?.pop())
}

fn not_found(job_id: &str) -> StoreError {
    StoreError::NotFound {
        what: "job",
        id: job_id.to_string(),
    }
}

/// The current lease of a job, as its row holds it.
pub(crate) struct Lease {
    pub(crate) expires_ms: UnixMs,
    pub(crate) cancel_requested: bool,
}

/// The lease `job_ref` names, when it is the current one and `runner_id` holds it; otherwise
/// why not.
pub(crate) fn current_lease(conn: &Connection, runner_id: &str, job_ref: &JobRef) -> Result<Lease> {
    let row: Option<(String, u32, UnixMs, bool, String)> = sql::one(
        conn,
        "SELECT l.lease_id, l.attempt, l.expires_ms, j.cancel_requested, l.runner_id
         FROM leases l JOIN jobs j ON j.id = l.job_id WHERE l.job_id = ?1",
        [&job_ref.job_id],
        "looking a lease up",
        |r| r.try_into(),
    )?;
    let Some((lease_id, attempt, expires_ms, cancel_requested, holder)) = row else {
        return Err(StoreError::stale(
            job_ref,
            "the job has no lease now (it was completed, cancelled, or its lease expired)",
        ));
    };
    if lease_id == job_ref.lease_id && holder != runner_id {
        return Err(StoreError::NotHolder {
            job_id: job_ref.job_id.clone(),
            lease_id: job_ref.lease_id.clone(),
        });
    }
    if lease_id != job_ref.lease_id || attempt != job_ref.attempt {
        return Err(StoreError::stale(
            job_ref,
            format!("the job was leased again since (attempt {attempt})"),
        ));
    }
    Ok(Lease {
        expires_ms,
        cancel_requested,
    })
}

/// A runner's call about a job proves it started it: the lease is confirmed, and its loss
/// will count as an attempt.
pub(crate) fn confirm_lease(conn: &Connection, job_id: &str) -> Result<()> {
    let sql = "UPDATE leases SET confirmed = 1 WHERE job_id = ?1 AND confirmed = 0";
    sql::exec(conn, sql, [job_id], "confirming a lease")?;
    Ok(())
}

fn end_lease(conn: &Connection, job_id: &str) -> Result<()> {
    sql::exec(
        conn,
        "DELETE FROM leases WHERE job_id = ?1",
        [job_id],
        "ending a lease",
    )?;
    Ok(())
}

impl SqliteTx<'_> {
    fn assignment(&self, job_id: &str) -> Result<Option<Assignment>> {
        sql::one(
            self.conn,
            "SELECT l.lease_id, l.attempt, l.expires_ms, j.run, p.payload, l.runner_id
             FROM leases l JOIN jobs j ON j.id = l.job_id
                 LEFT JOIN job_payloads p ON p.job_id = l.job_id
             WHERE l.job_id = ?1",
            [job_id],
            "reading an assignment",
            |r| {
                Ok(Assignment {
                    job_ref: JobRef {
                        job_id: job_id.to_string(),
                        lease_id: r.get(0)?,
                        attempt: r.get(1)?,
                    },
                    runner_id: r.get(5)?,
                    expires_ms: r.get(2)?,
                    run_id: r.get::<_, i64>(3)?.to_string(),
                    payload: r.get::<_, Option<Vec<u8>>>(4)?.unwrap_or_default(),
                })
            },
        )
    }

    /// The oldest queued job among the label sets a runner's labels cover.
    fn oldest_queued(&self, runner_labels: &[String]) -> Result<Option<String>> {
        let mut best: Option<(i64, String)> = None;
        for set in self.state.label_sets.matching(runner_labels) {
            let head: Option<(String, i64)> = sql::one(
                self.conn,
                "SELECT id, queue_order FROM jobs WHERE state = 2 AND label_set = ?1
                 ORDER BY queue_order LIMIT 1",
                [set],
                "searching the queue",
                |r| r.try_into(),
            )?;
            if let Some((id, order)) = head {
                if best.as_ref().is_none_or(|(b, _)| order < *b) {
                    best = Some((order, id));
                }
            }
        }
        Ok(best.map(|(_, id)| id))
    }

    /// Ends a job for good: no lease, no payload (it holds the run's secrets), its log tail
    /// sealed.
    fn mark_done(
        &mut self,
        job_id: &str,
        conclusion: Conclusion,
        message: &str,
        now: UnixMs,
    ) -> Result<bool> {
        let attempt: Option<u32> = sql::one(
            self.conn,
            "UPDATE jobs SET state = 4, conclusion = ?2, message = ?3, finished_ms = ?4,
                 waiting_reason = ''
             WHERE id = ?1 AND state != 4 RETURNING attempt",
            params![job_id, conclusion.as_str(), message, now],
            "concluding a job",
            |r| r.get(0),
        )?;
        let Some(attempt) = attempt else {
            return Ok(false);
        };
        end_lease(self.conn, job_id)?;
        let sql = "DELETE FROM job_payloads WHERE job_id = ?1";
        sql::exec(self.conn, sql, [job_id], "concluding a job")?;
        logs::seal(self.conn, job_id, attempt)?;
        self.changes.watched = true;
        Ok(true)
    }

    /// Whether the job exists: an update that changed nothing either met a job in another
    /// state (a replay; fine) or no job at all (the caller's mistake).
    fn existing(&self, job_id: &str, found: bool) -> Result<bool> {
        match get_job(self.conn, job_id)? {
            Some(_) => Ok(found),
            None => Err(not_found(job_id)),
        }
    }
}

impl JobsTx for SqliteTx<'_> {
    fn add_job(&mut self, job: &NewJob) -> Result<String> {
        let run = run_num(&job.run_id)?;
        let id = job_id(&job.run_id, job.leg);
        let inserted = sql::exec(
            self.conn,
            "INSERT INTO jobs(id, run, leg, job_path, name, state, matrix)
             VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6) ON CONFLICT DO NOTHING",
            params![id, run, job.leg, job.job_path, job.name, job.matrix],
            "recording a job",
        )?;
        self.changes.watched |= inserted > 0;
        Ok(id)
    }

    fn enqueue(
        &mut self,
        job_id: &str,
        runs_on: &[String],
        payload: &[u8],
        now: UnixMs,
    ) -> Result<bool> {
        let set = self.state.label_sets.id_for(self.conn, runs_on)?;
        let order = self.state.next_queue_order;
        let changed = sql::exec(
            self.conn,
            "UPDATE jobs SET state = 2, runs_on = ?2, label_set = ?3, queued_ms = ?4,
                 queue_order = ?5
             WHERE id = ?1 AND state = 1",
            params![job_id, to_json(runs_on), set, now, order],
            "queueing a job",
        )?;
        if changed == 0 {
            return self.existing(job_id, false);
        }
        sql::exec(
            self.conn,
            "INSERT INTO job_payloads(job_id, payload) VALUES (?1, ?2)",
            params![job_id, payload],
            "queueing a job",
        )?;
        self.state.next_queue_order += 1;
        self.changes.watched = true;
        self.changes.queued = true;
        Ok(true)
    }

    fn set_waiting_reason(&mut self, job_id: &str, reason: &str) -> Result<()> {
        let changed = sql::exec(
            self.conn,
            "UPDATE jobs SET waiting_reason = ?2 WHERE id = ?1 AND waiting_reason != ?2",
            params![job_id, reason],
            "setting a waiting reason",
        )?;
        self.changes.watched |= changed > 0;
        Ok(())
    }

    fn lease(
        &mut self,
        runner_id: &str,
        poll_id: &str,
        now: UnixMs,
        ttl_ms: i64,
    ) -> Result<Option<Assignment>> {
        if !poll_id.is_empty() {
            let earlier: Option<String> = sql::one(
                self.conn,
                "SELECT job_id FROM leases WHERE runner_id = ?1 AND poll_id = ?2",
                [runner_id, poll_id],
                "looking a poll up",
                |r| r.get(0),
            )?;
            if let Some(job_id) = earlier {
                return self.assignment(&job_id);
            }
        }
        let runner: Option<(String, String)> = sql::one(
            self.conn,
            "SELECT name, labels FROM runners WHERE id = ?1",
            [runner_id],
            "looking a runner up",
            |r| r.try_into(),
        )?;
        let Some((runner_name, labels)) = runner else {
            return Err(StoreError::NotFound {
                what: "runner",
                id: runner_id.to_string(),
            });
        };
        let labels: Vec<String> = from_json(&labels, "a runner's labels")?;
        let Some(job_id) = self.oldest_queued(&labels)? else {
            return Ok(None);
        };
        let lease_id = random_hex(16)?;
        let poll_id = if poll_id.is_empty() {
            format!("generated:{lease_id}")
        } else {
            poll_id.to_string()
        };
        let attempt: Option<u32> = sql::one(
            self.conn,
            "UPDATE jobs SET state = 3, runner_name = ?2, started_ms = ?3, waiting_reason = ''
             WHERE id = ?1 AND state = 2 RETURNING attempt",
            params![job_id, runner_name, now],
            "leasing a job",
            |r| r.get(0),
        )?;
        let attempt = attempt.ok_or_else(|| StoreError::Corrupt(format!("queued job {job_id}")))?;
        sql::exec(
            self.conn,
            "INSERT INTO leases(job_id, lease_id, runner_id, attempt, expires_ms, poll_id,
                 leased_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                job_id,
                lease_id,
                runner_id,
                attempt,
                now.saturating_add(ttl_ms),
                poll_id,
                now
            ],
            "leasing a job",
        )?;
        self.changes.watched = true;
        self.assignment(&job_id)
    }

    fn renew(
        &mut self,
        runner_id: &str,
        job_ref: &JobRef,
        now: UnixMs,
        ttl_ms: i64,
    ) -> Result<LeaseStatus> {
        let lease = current_lease(self.conn, runner_id, job_ref)?;
        let expires_ms = lease.expires_ms.max(now.saturating_add(ttl_ms));
        sql::exec(
            self.conn,
            "UPDATE leases SET expires_ms = ?2, confirmed = 1 WHERE job_id = ?1",
            params![job_ref.job_id, expires_ms],
            "renewing a lease",
        )?;
        Ok(LeaseStatus {
            expires_ms,
            cancel_requested: lease.cancel_requested,
        })
    }

    fn complete_job(
        &mut self,
        runner_id: &str,
        job_ref: &JobRef,
        result: &JobResult,
        now: UnixMs,
    ) -> Result<Completion> {
        let done: Option<(i64, Option<String>)> = sql::one(
            self.conn,
            "SELECT state, completed_lease FROM jobs WHERE id = ?1",
            [&job_ref.job_id],
            "looking a job up",
            |r| r.try_into(),
        )?;
        let Some((state, completed_lease)) = done else {
            return Err(not_found(&job_ref.job_id));
        };
        if JobState::from_code(state)? == JobState::Done {
            if completed_lease.as_deref() == Some(job_ref.lease_id.as_str()) {
                return Ok(Completion::AlreadyCompleted);
            }
            return Err(StoreError::stale(job_ref, "the job is already concluded"));
        }
        current_lease(self.conn, runner_id, job_ref)?;
        let held = logs::held_seq(self.conn, &job_ref.job_id, job_ref.attempt)?;
        if result.last_log_seq > held {
            return Err(StoreError::LogsMissing {
                job_id: job_ref.job_id.clone(),
                attempt: job_ref.attempt,
                sent: result.last_log_seq,
                held,
            });
        }
        sql::exec(
            self.conn,
            "UPDATE jobs SET outputs = ?2, steps = ?3, summary = ?4,
                 started_ms = CASE WHEN ?5 > 0 THEN ?5 ELSE started_ms END,
                 completed_lease = ?6
             WHERE id = ?1",
            params![
                job_ref.job_id,
                to_json(&result.outputs),
                steps_to_json(&result.steps),
                result.summary,
                result.started_ms,
                job_ref.lease_id,
            ],
            "completing a job",
        )?;
        // The runner's clock says when the job ended; `now` only when it sent nothing usable.
        let finished = if result.finished_ms > 0 {
            result.finished_ms
        } else {
            now
        };
        self.mark_done(&job_ref.job_id, result.conclusion, &result.error, finished)?;
        let job = get_job(self.conn, &job_ref.job_id)?.ok_or_else(|| not_found(&job_ref.job_id))?;
        Ok(Completion::Completed(Box::new(job)))
    }

    fn conclude_job(
        &mut self,
        job_id: &str,
        conclusion: Conclusion,
        message: &str,
        now: UnixMs,
    ) -> Result<bool> {
        if self.mark_done(job_id, conclusion, message, now)? {
            return Ok(true);
        }
        self.existing(job_id, false)
    }

    fn request_cancel(&mut self, job_id: &str) -> Result<JobState> {
        let state: Option<i64> = sql::one(
            self.conn,
            "UPDATE jobs SET cancel_requested = (state != 4) OR cancel_requested
             WHERE id = ?1 RETURNING state",
            [job_id],
            "cancelling a job",
            |r| r.get(0),
        )?;
        let state = JobState::from_code(state.ok_or_else(|| not_found(job_id))?)?;
        self.changes.watched |= state != JobState::Done;
        Ok(state)
    }

    fn expire_leases(&mut self, now: UnixMs) -> Result<Vec<ExpiredLease>> {
        type Row = (String, String, String, u32, bool, i64, u32, bool);
        let expired: Vec<Row> = sql::all(
            self.conn,
            "SELECT l.job_id, l.lease_id, l.runner_id, l.attempt, l.confirmed, j.run, j.leg,
                 j.cancel_requested
             FROM leases l JOIN jobs j ON j.id = l.job_id
             WHERE l.expires_ms <= ?1 ORDER BY l.expires_ms, l.job_id",
            [now],
            "finding expired leases",
            |r| r.try_into(),
        )?;
        let mut out = Vec::with_capacity(expired.len());
        for (job_id, lease_id, runner_id, attempt, confirmed, run, leg, cancelled) in expired {
            let outcome = if cancelled {
                let reason = "the job was cancelled and its runner stopped renewing its lease";
                self.mark_done(&job_id, Conclusion::Cancelled, reason, now)?;
                ExpiryOutcome::Concluded {
                    conclusion: Conclusion::Cancelled,
                    reason: reason.into(),
                }
            } else if confirmed && attempt >= MAX_ATTEMPTS {
                let reason = format!(
                    "the job's runner stopped renewing its lease {MAX_ATTEMPTS} times (the \
                     runner or its host died, or the network to the scheduler failed); kiln \
                     gives up on a job after {MAX_ATTEMPTS} such attempts. Check the runners \
                     with `kiln runners` and rerun the job"
                );
                self.mark_done(&job_id, Conclusion::Failure, &reason, now)?;
                ExpiryOutcome::Concluded {
                    conclusion: Conclusion::Failure,
                    reason,
                }
            } else {
                let next = if confirmed { attempt + 1 } else { attempt };
                end_lease(self.conn, &job_id)?;
                logs::seal(self.conn, &job_id, attempt)?;
                sql::exec(
                    self.conn,
                    "UPDATE jobs SET state = 2, attempt = ?2, queued_ms = ?3, runner_name = '',
                         started_ms = NULL
                     WHERE id = ?1",
                    params![job_id, next, now],
                    "queueing a job again",
                )?;
                self.changes.watched = true;
                self.changes.queued = true;
                ExpiryOutcome::Requeued { attempt: next }
            };
            out.push(ExpiredLease {
                job_ref: JobRef {
                    job_id,
                    lease_id,
                    attempt,
                },
                run_id: run.to_string(),
                leg,
                runner_id,
                counted: confirmed,
                outcome,
            });
        }
        Ok(out)
    }

    fn extend_leases(&mut self, until: UnixMs) -> Result<usize> {
        let sql = "UPDATE leases SET expires_ms = max(expires_ms, ?1)";
        sql::exec(self.conn, sql, [until], "extending leases")
    }

    fn expire_queued(&mut self, now: UnixMs, max_wait_ms: i64) -> Result<Vec<TimedOutJob>> {
        let due: Vec<(String, i64, u32, String)> = sql::all(
            self.conn,
            "SELECT id, run, leg, runs_on FROM jobs
             WHERE state = 2 AND queued_ms <= ?1 ORDER BY queued_ms, id",
            [now.saturating_sub(max_wait_ms)],
            "finding jobs past the queue timeout",
            |r| r.try_into(),
        )?;
        let mut out = Vec::with_capacity(due.len());
        for (job_id, run, leg, runs_on) in due {
            let labels: Vec<String> = from_json(&runs_on, "a job's labels")?;
            let reason = format!(
                "no runner with the labels [{}] took the job within {} (the queue timeout); \
                 register a runner with these labels, or raise the scheduler's queue timeout",
                labels.join(", "),
                human_duration(max_wait_ms)
            );
            self.mark_done(&job_id, Conclusion::Failure, &reason, now)?;
            out.push(TimedOutJob {
                job_id,
                run_id: run.to_string(),
                leg,
                reason,
            });
        }
        Ok(out)
    }
}

/// `24h`, `90m`, `45s`, `1500ms`: the largest unit that divides the duration.
fn human_duration(ms: i64) -> String {
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

impl Jobs for SqliteStore {
    fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>> {
        self.read(|c| get_job(c, job_id))
    }

    fn jobs_of_run(&self, run_id: &str) -> Result<Vec<JobRecord>> {
        let Ok(num) = run_num(run_id) else {
            return Ok(Vec::new());
        };
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE run = ?1 ORDER BY leg");
        self.read(|c| query_jobs(c, &sql, [num]))
    }

    fn lease_status(&self, runner_id: &str, job_ref: &JobRef) -> Result<LeaseStatus> {
        self.read(|c| {
            current_lease(c, runner_id, job_ref).map(|l| LeaseStatus {
                expires_ms: l.expires_ms,
                cancel_requested: l.cancel_requested,
            })
        })
    }

    fn queued_label_sets(&self) -> Result<Vec<(Vec<String>, u64)>> {
        self.read(|c| {
            let rows: Vec<(String, i64)> = sql::all(
                c,
                "SELECT s.labels, count(*) FROM jobs j JOIN label_sets s ON s.id = j.label_set
                 WHERE j.state = 2 GROUP BY s.id ORDER BY s.id",
                [],
                "reading the queue's label sets",
                |r| r.try_into(),
            )?;
            rows.into_iter()
                .map(|(json, n)| Ok((from_json(&json, "a label set")?, n as u64)))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_fold_case_and_order() {
        let folded = fold_labels(&["Linux".into(), " X64".into(), "linux".into()]);
        assert_eq!(folded, ["linux", "x64"]);
    }

    #[test]
    fn durations_read_in_the_largest_whole_unit() {
        assert_eq!(human_duration(86_400_000), "24h");
        assert_eq!(human_duration(90 * 60_000), "90m");
        assert_eq!(human_duration(3_000), "3s");
        assert_eq!(human_duration(1_500), "1500ms");
    }
}
