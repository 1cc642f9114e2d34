//! Step reports and job logs.
//!
//! A job attempt's log lines arrive numbered from 1. They are first written uncompressed to
//! `log_tail` (readable at once by `kiln logs --follow`); every [`LOG_BLOCK_LINES`] lines or
//! [`LOG_BLOCK_BYTES`] bytes, and when the attempt ends, the tail is compressed with zstd into
//! one `log_blocks` row that records its first and last line numbers. `log_heads` keeps the
//! highest line stored per attempt, so a resent batch is recognised without reading the logs.

use super::error::{DbContext, Result, StoreError};
use super::jobs::{confirm_lease, current_lease};
use super::sql;
use super::sqlite::{SqliteStore, SqliteTx};
use super::types::*;
use rusqlite::{params, Connection};

/// The tail is compressed once it holds this many lines...
pub const LOG_BLOCK_LINES: u64 = 512;
/// ...or this many bytes of text.
pub const LOG_BLOCK_BYTES: u64 = 64 * 1024;

const ZSTD_LEVEL: i32 = 3;

/// Reading step reports and logs.
pub trait Logs {
    /// The step reports of one attempt, by step index then phase.
    fn step_reports(&self, job_id: &str, attempt: u32) -> Result<Vec<StepReport>>;
    /// Up to `max_lines` lines of one attempt after line `after_seq`, in order; compressed
    /// blocks and the uncompressed tail read as one sequence.
    fn read_logs(
        &self,
        job_id: &str,
        attempt: u32,
        after_seq: u64,
        max_lines: usize,
    ) -> Result<Vec<LogLine>>;
    /// The attempts of a job that have log lines, with the highest line stored for each.
    fn log_attempts(&self, job_id: &str) -> Result<Vec<(u32, u64)>>;
}

/// Writing step reports and logs: both need the job's current lease, and both confirm it.
pub trait LogsTx {
    /// Records a step's start or end; a repeat of the same (job, attempt, index, phase) is
    /// ignored (`new` false).
    fn report_step(
        &mut self,
        runner_id: &str,
        job_ref: &JobRef,
        report: &StepReport,
    ) -> Result<StepAck>;
    /// Appends consecutive lines; lines at or below the highest stored one are ignored, so a
    /// batch may be resent. A batch that starts past the next line is refused
    /// ([`StoreError::LogGap`]).
    fn append_logs(
        &mut self,
        runner_id: &str,
        job_ref: &JobRef,
        lines: &[LogLine],
    ) -> Result<LogAck>;
}

/// The highest line stored for an attempt (0 when none).
pub(crate) fn held_seq(conn: &Connection, job_id: &str, attempt: u32) -> Result<u64> {
    Ok(head(conn, job_id, attempt)?.map_or(0, |h| h.max_seq))
}

struct Head {
    max_seq: u64,
    tail_lines: u64,
    tail_bytes: u64,
}

fn head(conn: &Connection, job_id: &str, attempt: u32) -> Result<Option<Head>> {
    sql::one(
        conn,
        "SELECT max_seq, tail_lines, tail_bytes FROM log_heads WHERE job_id = ?1 AND attempt = ?2",
        params![job_id, attempt],
        "reading a log's head",
        |r| {
            Ok(Head {
                max_seq: r.get::<_, i64>(0)? as u64,
                tail_lines: r.get::<_, i64>(1)? as u64,
                tail_bytes: r.get::<_, i64>(2)? as u64,
            })
        },
    )
}

/// Compresses an attempt's uncompressed lines into one block (when the tail is full, and
/// when the attempt ends).
pub(crate) fn seal(conn: &Connection, job_id: &str, attempt: u32) -> Result<()> {
    let lines = read_tail(conn, job_id, attempt, 0, usize::MAX)?;
    let (Some(first), Some(last)) = (lines.first(), lines.last()) else {
        return Ok(());
    };
    let raw = encode_block(&lines);
    let data = compress(&raw).map_err(StoreError::io("compress log lines of job", job_id))?;
    let action = "storing a log block";
    sql::exec(
        conn,
        "INSERT INTO log_blocks(job_id, attempt, first_seq, last_seq, raw_len, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            job_id,
            attempt,
            first.seq as i64,
            last.seq as i64,
            raw.len() as i64,
            data
        ],
        action,
    )?;
    let key = params![job_id, attempt];
    sql::exec(
        conn,
        "DELETE FROM log_tail WHERE job_id = ?1 AND attempt = ?2",
        key,
        action,
    )?;
    sql::exec(
        conn,
        "UPDATE log_heads SET tail_lines = 0, tail_bytes = 0 WHERE job_id = ?1 AND attempt = ?2",
        key,
        action,
    )?;
    Ok(())
}

thread_local! {
    /// A compression context costs more to set up than compressing a block: each writing
    /// thread keeps one.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn compress(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|slot| {
        let mut slot = slot.borrow_mut();
        let compressor = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
        };
        compressor.compress(raw)
    })
}

fn read_tail(
    conn: &Connection,
    job_id: &str,
    attempt: u32,
    after_seq: u64,
    max_lines: usize,
) -> Result<Vec<LogLine>> {
    let limit = i64::try_from(max_lines).unwrap_or(i64::MAX);
    let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
    sql::all(
        conn,
        "SELECT seq, step_index, unix_ms, text FROM log_tail
         WHERE job_id = ?1 AND attempt = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
        params![job_id, attempt, after, limit],
        "reading log lines",
        |r| {
            Ok(LogLine {
                seq: r.get::<_, i64>(0)? as u64,
                step_index: r.get(1)?,
                unix_ms: r.get(2)?,
                text: r.get(3)?,
            })
        },
    )
}

/// A block's lines, consecutive from its first: step index, time, text length, text.
fn encode_block(lines: &[LogLine]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| 16 + l.text.len()).sum());
    for line in lines {
        out.extend_from_slice(&line.step_index.to_le_bytes());
        out.extend_from_slice(&line.unix_ms.to_le_bytes());
        out.extend_from_slice(&(line.text.len() as u32).to_le_bytes());
        out.extend_from_slice(line.text.as_bytes());
    }
    out
}

fn decode_block(first_seq: u64, raw: &[u8], job_id: &str) -> Result<Vec<LogLine>> {
    let corrupt = || StoreError::Corrupt(format!("a log block of job {job_id}"));
    let mut lines = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (head, tail) = rest.split_at_checked(16).ok_or_else(corrupt)?;
        let step_index = i32::from_le_bytes(head[0..4].try_into().map_err(|_| corrupt())?);
        let unix_ms = i64::from_le_bytes(head[4..12].try_into().map_err(|_| corrupt())?);
        let len = u32::from_le_bytes(head[12..16].try_into().map_err(|_| corrupt())?) as usize;
        let (text, tail) = tail.split_at_checked(len).ok_or_else(corrupt)?;
        lines.push(LogLine {
            seq: first_seq + lines.len() as u64,
            step_index,
            unix_ms,
            text: String::from_utf8(text.to_vec()).map_err(|_| corrupt())?,
        });
        rest = tail;
    }
    Ok(lines)
}

fn read_logs(
    conn: &Connection,
    job_id: &str,
    attempt: u32,
    after_seq: u64,
    max_lines: usize,
) -> Result<Vec<LogLine>> {
    let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let blocks: Vec<(i64, i64, Vec<u8>)> = sql::all(
        conn,
        "SELECT first_seq, raw_len, data FROM log_blocks
         WHERE job_id = ?1 AND attempt = ?2 AND last_seq > ?3 ORDER BY first_seq",
        params![job_id, attempt, after],
        "reading log blocks",
        |r| r.try_into(),
    )?;
    let mut out = Vec::new();
    for (first_seq, raw_len, data) in blocks {
        if out.len() >= max_lines {
            return Ok(out);
        }
        let raw = zstd::bulk::decompress(&data, raw_len.max(0) as usize)
            .map_err(|_| StoreError::Corrupt(format!("a log block of job {job_id}")))?;
        let lines = decode_block(first_seq as u64, &raw, job_id)?;
        let wanted = max_lines - out.len();
        out.extend(lines.into_iter().filter(|l| l.seq > after_seq).take(wanted));
    }
    let wanted = max_lines - out.len();
    if wanted > 0 {
        out.extend(read_tail(conn, job_id, attempt, after_seq, wanted)?);
    }
    Ok(out)
}

impl LogsTx for SqliteTx<'_> {
    fn report_step(
        &mut self,
        runner_id: &str,
        job_ref: &JobRef,
        report: &StepReport,
    ) -> Result<StepAck> {
        let lease = current_lease(self.conn, runner_id, job_ref)?;
        confirm_lease(self.conn, &job_ref.job_id)?;
        let inserted = sql::exec(
            self.conn,
            "INSERT INTO step_reports(job_id, attempt, idx, phase, step_id, name, outcome,
                 conclusion, unix_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
            params![
                job_ref.job_id,
                job_ref.attempt,
                report.index,
                report.phase.code(),
                report.step_id,
                report.name,
                report.outcome.map(|c| c.as_str()),
                report.conclusion.map(|c| c.as_str()),
                report.unix_ms,
            ],
            "recording a step report",
        )?;
        self.changes.watched |= inserted > 0;
        Ok(StepAck {
            new: inserted > 0,
            cancel_requested: lease.cancel_requested,
        })
    }

    fn append_logs(
        &mut self,
        runner_id: &str,
        job_ref: &JobRef,
        lines: &[LogLine],
    ) -> Result<LogAck> {
        let lease = current_lease(self.conn, runner_id, job_ref)?;
        let (job_id, attempt) = (job_ref.job_id.as_str(), job_ref.attempt);
        let mut head = head(self.conn, job_id, attempt)?.unwrap_or(Head {
            max_seq: 0,
            tail_lines: 0,
            tail_bytes: 0,
        });
        let held = head.max_seq;
        let new: Vec<&LogLine> = lines.iter().filter(|l| l.seq > held).collect();
        if let Some(first) = new.first() {
            if first.seq != held + 1 {
                return Err(StoreError::LogGap {
                    job_id: job_id.to_string(),
                    attempt,
                    first: first.seq,
                    held,
                });
            }
            if new.windows(2).any(|w| w[1].seq != w[0].seq + 1) {
                return Err(StoreError::Invalid(format!(
                    "job {job_id} attempt {attempt}: the log lines of a batch must be numbered \
                     consecutively"
                )));
            }
        }
        confirm_lease(self.conn, job_id)?;
        if new.is_empty() {
            return Ok(LogAck {
                acked_seq: held,
                appended: 0,
                cancel_requested: lease.cancel_requested,
            });
        }
        let action = "storing log lines";
        for line in &new {
            sql::exec(
                self.conn,
                "INSERT INTO log_tail(job_id, attempt, seq, step_index, unix_ms, text)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    job_id,
                    attempt,
                    line.seq as i64,
                    line.step_index,
                    line.unix_ms,
                    line.text
                ],
                action,
            )?;
            head.max_seq = line.seq;
            head.tail_lines += 1;
            head.tail_bytes += line.text.len() as u64;
        }
        sql::exec(
            self.conn,
            "INSERT INTO log_heads(job_id, attempt, max_seq, tail_lines, tail_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(job_id, attempt) DO UPDATE
             SET max_seq = ?3, tail_lines = ?4, tail_bytes = ?5",
            params![
                job_id,
                attempt,
                head.max_seq as i64,
                head.tail_lines as i64,
                head.tail_bytes as i64
            ],
            action,
        )?;
        if head.tail_lines >= LOG_BLOCK_LINES || head.tail_bytes >= LOG_BLOCK_BYTES {
            seal(self.conn, job_id, attempt)?;
        }
        self.changes.watched = true;
        Ok(LogAck {
            acked_seq: head.max_seq,
            appended: new.len(),
            cancel_requested: lease.cancel_requested,
        })
    }
}

impl Logs for SqliteStore {
    fn step_reports(&self, job_id: &str, attempt: u32) -> Result<Vec<StepReport>> {
        type Row = (
            u32,
            i64,
            String,
            String,
            Option<String>,
            Option<String>,
            UnixMs,
        );
        self.read(|c| {
            let rows: Vec<Row> = sql::all(
                c,
                "SELECT idx, phase, step_id, name, outcome, conclusion, unix_ms
                 FROM step_reports WHERE job_id = ?1 AND attempt = ?2 ORDER BY idx, phase",
                params![job_id, attempt],
                "reading step reports",
                |r| r.try_into(),
            )?;
            rows.into_iter()
                .map(
                    |(index, phase, step_id, name, outcome, conclusion, unix_ms)| {
                        Ok(StepReport {
                            index,
                            phase: StepPhase::from_code(phase)?,
                            step_id,
                            name,
                            outcome: optional_conclusion(outcome)?,
                            conclusion: optional_conclusion(conclusion)?,
                            unix_ms,
                        })
                    },
                )
                .collect()
        })
    }

    fn read_logs(
        &self,
        job_id: &str,
        attempt: u32,
        after_seq: u64,
        max_lines: usize,
    ) -> Result<Vec<LogLine>> {
        self.read(|c| {
            // One snapshot for blocks and tail: a tail compressed between the two reads would
            // otherwise be missed by both.
            let tx = c.unchecked_transaction().ctx("reading log lines")?;
            let lines = read_logs(&tx, job_id, attempt, after_seq, max_lines)?;
            tx.finish().ctx("reading log lines")?;
            Ok(lines)
        })
    }

    fn log_attempts(&self, job_id: &str) -> Result<Vec<(u32, u64)>> {
        self.read(|c| {
            sql::all(
                c,
                "SELECT attempt, max_seq FROM log_heads WHERE job_id = ?1 ORDER BY attempt",
                [job_id],
                "reading a job's logs",
                |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_refuse_truncation() {
        let lines: Vec<LogLine> = (5..9)
            .map(|seq| LogLine {
                seq,
                step_index: seq as i32 - 6,
                unix_ms: 1_000 + seq as i64,
                text: format!("line {seq} é"),
            })
            .collect();
        let raw = encode_block(&lines);
        assert_eq!(decode_block(5, &raw, "j").unwrap(), lines);
        assert!(matches!(
            decode_block(5, &raw[..raw.len() - 1], "j"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
