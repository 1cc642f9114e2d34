//! What the server saw, kept for `kiln cache stats`: every lookup (its repository, scope, key
//! family, outcome and the size of the entry it returned), every save (bytes uploaded and
//! deduplicated) and every entry removed (evicted for age or size, or dropped as damaged), in
//! one compact table of the index (`cache_events`, migration 1 of this module; rows older than
//! the retention are dropped at maintenance). The queries total them per repository, key
//! family and scope, and per day.
//!
//! Events are written without waiting for the disk (like reservations and pins): a crash may
//! lose the last few, never the entries themselves.

use crate::error::Result;
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    ExactHit = 0,
    RestoreKeyHit = 1,
    Miss = 2,
    Save = 3,
    /// An entry was removed (the table's trigger writes these).
    Removed = 4,
}

/// Creates the events table and the trigger that records removed entries, once: applied
/// migrations are named in a table of their own (`kiln_migrations`), so this one cannot clash
/// with other schema changes of the index.
pub(crate) fn migrate(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS kiln_migrations(name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL);",
    )?;
    let applied: bool = conn
        .prepare("SELECT 1 FROM kiln_migrations WHERE name = 'stats-1-cache-events'")?
        .exists([])?;
    if applied {
        return Ok(());
    }
    conn.execute_batch(
        "BEGIN;
         CREATE TABLE IF NOT EXISTS cache_events(
             id INTEGER PRIMARY KEY, at INTEGER NOT NULL, repo TEXT NOT NULL, scope TEXT NOT NULL,
             family TEXT NOT NULL, kind INTEGER NOT NULL, bytes INTEGER NOT NULL DEFAULT 0,
             dedup INTEGER NOT NULL DEFAULT 0);
         CREATE INDEX IF NOT EXISTS cache_events_by_time ON cache_events(at);
         CREATE TRIGGER IF NOT EXISTS cache_events_removed AFTER DELETE ON entries
             WHEN OLD.committed = 1
             BEGIN
                 INSERT INTO cache_events(at, repo, scope, family, kind, bytes)
                 VALUES (CAST(strftime('%s', 'now') AS INTEGER) * 1000, OLD.repo, OLD.scope, OLD.key, 4, OLD.size);
             END;
         INSERT INTO kiln_migrations(name, applied_at) VALUES ('stats-1-cache-events', CAST(strftime('%s', 'now') AS INTEGER));
         COMMIT;",
    )?;
    Ok(())
}

/// Records one event. The family is computed here, so the table never holds whole keys of
/// lookups and saves (the removal trigger stores the key; queries fold it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    conn: &Connection,
    at_ms: i64,
    repo: &str,
    scope: &str,
    key: &str,
    event: Event,
    bytes: u64,
    dedup: u64,
) -> Result<()> {
    conn.execute_batch("PRAGMA synchronous = NORMAL")?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO cache_events(at, repo, scope, family, kind, bytes, dedup) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                at_ms,
                repo,
                scope,
                key_family(key),
                event as i64,
                bytes as i64,
                dedup as i64
            ])
        });
    let restored = conn.execute_batch("PRAGMA synchronous = FULL");
    inserted?;
    restored?;
    Ok(())
}

/// Drops events older than `cutoff_ms`. Returns how many.
pub(crate) fn expire(conn: &Connection, cutoff_ms: i64) -> Result<usize> {
    Ok(conn.execute("DELETE FROM cache_events WHERE at < ?1", params![cutoff_ms])?)
}

/// Lookups and their outcomes, and bytes, for one group of events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub lookups: u64,
    pub exact_hits: u64,
    pub restore_key_hits: u64,
    pub misses: u64,
    /// Hits (exact or by restore key) over lookups; 0 without lookups.
    pub hit_rate: f64,
    /// Size of the entries hits returned: what runners without the files download.
    pub bytes_served: u64,
    /// Bytes clients sent for saves.
    pub bytes_uploaded: u64,
    /// Bytes saves did not send or store because their chunks were stored already.
    pub bytes_dedup_saved: u64,
    pub saves: u64,
    /// Entries removed: evicted for age or size, or dropped as damaged.
    pub evictions: u64,
}

impl Tally {
    fn add(&mut self, kind: i64, bytes: u64, dedup: u64) {
        match kind {
            0 => {
                self.lookups += 1;
                self.exact_hits += 1;
                self.bytes_served += bytes;
            }
            1 => {
                self.lookups += 1;
                self.restore_key_hits += 1;
                self.bytes_served += bytes;
            }
            2 => {
                self.lookups += 1;
                self.misses += 1;
            }
            3 => {
                self.saves += 1;
                self.bytes_uploaded += bytes;
                self.bytes_dedup_saved += dedup;
            }
            _ => self.evictions += 1,
        }
    }

    fn finish(&mut self) {
        self.hit_rate = if self.lookups == 0 {
            0.0
        } else {
            (self.exact_hits + self.restore_key_hits) as f64 / self.lookups as f64
        };
    }
}

/// One repository, key family and scope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    pub repository: String,
    pub key_family: String,
    pub scope: String,
    #[serde(flatten)]
    pub tally: Tally,
    /// Entries stored now, and the bytes they hold (before compression and deduplication).
    pub entries: u64,
    pub entry_bytes: u64,
}

/// One day (UTC) of one repository and key family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DayStats {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub repository: String,
    pub key_family: String,
    #[serde(flatten)]
    pub tally: Tally,
}

/// What `kiln cache stats` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Events from this time on (ms since the epoch).
    pub since_ms: i64,
    pub until_ms: i64,
    pub totals: Tally,
    pub groups: Vec<GroupStats>,
    pub days: Vec<DayStats>,
    /// Entries and bytes of stored chunks (compressed, each chunk once) in the whole store;
    /// null when the report is limited to one repository (chunks are shared between them).
    pub store_entries: Option<u64>,
    pub store_chunk_bytes: Option<u64>,
}

/// Reads the lookup record of the store in `data_dir` without opening the store: read-only,
/// so it is safe next to a running server (opening the store would drop its uploads).
pub fn read(data_dir: &std::path::Path, repo: Option<&str>, since_ms: i64) -> Result<StatsReport> {
    let path = data_dir.join("index.sqlite");
    if !path.is_file() {
        return Err(crate::CacheError::BadRequest(format!(
            "{} does not exist: is {} a cache server's data directory?",
            path.display(),
            data_dir.display()
        )));
    }
    let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let has_record: bool = conn
        .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cache_events'")?
        .exists([])?;
    if !has_record {
        return Err(crate::CacheError::BadRequest(format!(
            "the store in {} has no lookup record yet: start this version's server on it once",
            data_dir.display()
        )));
    }
    query(&conn, repo, since_ms, crate::store::now_ms())
}

/// Totals the events since `since_ms` (of `repo` only, when given).
pub fn query(
    conn: &Connection,
    repo: Option<&str>,
    since_ms: i64,
    now_ms: i64,
) -> Result<StatsReport> {
    let mut groups: BTreeMap<(String, String, String), GroupStats> = BTreeMap::new();
    let mut days: BTreeMap<(String, String, String), Tally> = BTreeMap::new();
    let mut totals = Tally::default();
    {
        let mut stmt = conn.prepare(
            "SELECT strftime('%Y-%m-%d', at / 1000, 'unixepoch'), repo, scope, family, kind, bytes, dedup FROM cache_events
             WHERE at >= ?1 AND (?2 IS NULL OR repo = ?2) ORDER BY at",
        )?;
        let mut rows = stmt.query(params![since_ms, repo])?;
        while let Some(row) = rows.next()? {
            let day: String = row.get(0)?;
            let repo: String = row.get(1)?;
            let scope: String = row.get(2)?;
            let family = key_family(&row.get::<_, String>(3)?);
            let kind: i64 = row.get(4)?;
            let bytes = row.get::<_, i64>(5)?.max(0) as u64;
            let dedup = row.get::<_, i64>(6)?.max(0) as u64;
            totals.add(kind, bytes, dedup);
            groups
                .entry((repo.clone(), family.clone(), scope.clone()))
                .or_insert_with(|| GroupStats {
                    repository: repo.clone(),
                    key_family: family.clone(),
                    scope,
                    tally: Tally::default(),
                    entries: 0,
                    entry_bytes: 0,
                })
                .tally
                .add(kind, bytes, dedup);
            days.entry((day, repo, family))
                .or_default()
                .add(kind, bytes, dedup);
        }
    }
    {
        let mut stmt = conn.prepare(
            "SELECT repo, scope, key, size FROM entries WHERE committed = 1 AND (?1 IS NULL OR repo = ?1)",
        )?;
        let mut rows = stmt.query(params![repo])?;
        while let Some(row) = rows.next()? {
            let repo: String = row.get(0)?;
            let scope: String = row.get(1)?;
            let family = key_family(&row.get::<_, String>(2)?);
            let size = row.get::<_, i64>(3)?.max(0) as u64;
            let group = groups
                .entry((repo.clone(), family.clone(), scope.clone()))
                .or_insert_with(|| GroupStats {
                    repository: repo,
                    key_family: family,
                    scope,
                    tally: Tally::default(),
                    entries: 0,
                    entry_bytes: 0,
                });
            group.entries += 1;
            group.entry_bytes += size;
        }
    }
    let (store_entries, store_chunk_bytes) = if repo.is_none() {
        let entries: i64 = conn.query_row(
            "SELECT COUNT(*) FROM entries WHERE committed = 1",
            [],
            |r| r.get(0),
        )?;
        let bytes: i64 =
            conn.query_row("SELECT COALESCE(SUM(stored), 0) FROM chunks", [], |r| {
                r.get(0)
            })?;
        (Some(entries as u64), Some(bytes as u64))
    } else {
        (None, None)
    };
    totals.finish();
    Ok(StatsReport {
        since_ms,
        until_ms: now_ms,
        totals,
        groups: groups
            .into_values()
            .map(|mut g| {
                g.tally.finish();
                g
            })
            .collect(),
        days: days
            .into_iter()
            .map(|((day, repository, key_family), mut tally)| {
                tally.finish();
                DayStats {
                    day,
                    repository,
                    key_family,
                    tally,
                }
            })
            .collect(),
        store_entries,
        store_chunk_bytes,
    })
}

/// A key with its hash-like segments replaced by `*`, so the keys one `actions/cache` step
/// writes over time count together: `Linux-cargo-3f9a…` and `Linux-cargo-77b1…` are both
/// `Linux-cargo-*`. Segments are split at `-`, `_`, `.`, `/`, `:`, `+`, `=` and spaces; a
/// segment is hash-like when it is 12 or more hex digits, or 5 or more decimal digits (run
/// ids, timestamps, dates written without separators). Versions like `1.75.0` or `py311` stay.
pub fn key_family(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut segment = String::new();
    let flush = |segment: &mut String, out: &mut String| {
        if is_hash_like(segment) {
            out.push('*');
        } else {
            out.push_str(segment);
        }
        segment.clear();
    };
    for c in key.chars() {
        if matches!(c, '-' | '_' | '.' | '/' | ':' | '+' | '=' | ' ') {
            flush(&mut segment, &mut out);
            out.push(c);
        } else {
            segment.push(c);
        }
    }
    flush(&mut segment, &mut out);
    out
}

fn is_hash_like(segment: &str) -> bool {
    let digits = segment.bytes().all(|b| b.is_ascii_digit());
    (segment.len() >= 12 && segment.bytes().all(|b| b.is_ascii_hexdigit()))
        || (digits && segment.len() >= 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_like_segments_become_stars() {
        let a = "Linux-cargo-3f9a0c1d2e3f4a5b6c7d8e9f00112233445566778899aabbccddeeff00112233";
        let b = "Linux-cargo-77b1aa00bb11cc22dd33ee44ff5566778899aabbccddeeff0011223344556677";
        assert_eq!(key_family(a), "Linux-cargo-*");
        assert_eq!(key_family(a), key_family(b));
        assert_eq!(key_family("deps-node-18.x-1234567"), "deps-node-18.x-*");
        assert_eq!(key_family("py311-pip-v2"), "py311-pip-v2");
        assert_eq!(key_family("rust-1.75.0-abc"), "rust-1.75.0-abc");
        assert_eq!(key_family(""), "");
    }
}
