//! The entry index in SQLite: `(repo, scope, key, version) -> manifest`, chunk pins and chunk
//! sizes. All methods are synchronous; the store calls them under one mutex from blocking threads.

use crate::digest::{decode_chunk_list, encode_chunk_list, ChunkRef, Digest};
use crate::error::{CacheError, Result};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};
use std::collections::HashSet;
use std::path::Path;

/// What an entry holds: an opaque archive (GitHub APIs) or a file tree (native client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Archive = 0,
    Tree = 1,
}

impl EntryKind {
    fn from_db(v: i64) -> EntryKind {
        if v == 1 {
            EntryKind::Tree
        } else {
            EntryKind::Archive
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Archive => "archive",
            EntryKind::Tree => "tree",
        }
    }
}

/// Whether a lookup hit the primary key exactly or fell back to a prefix or restore key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchKind {
    Exact,
    Partial,
}

/// A committed entry.
#[derive(Clone, Debug)]
pub struct EntryRecord {
    pub id: u64,
    pub repo: String,
    pub scope: String,
    pub key: String,
    pub version: String,
    pub kind: EntryKind,
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
    pub meta: Vec<u8>,
    pub created_at_ms: i64,
}

/// The identity of a reservation (an entry that is still being uploaded).
#[derive(Clone, Debug)]
pub struct Reservation {
    pub repo: String,
    pub scope: String,
    pub key: String,
    pub version: String,
    pub kind: EntryKind,
}

/// Key comparison is case-insensitive (GitHub's rule); the original key is stored and returned.
pub fn fold_key(key: &str) -> String {
    key.to_lowercase()
}

pub struct Index {
    conn: Connection,
}

/// Log pages after which a commit checkpoints by itself (SQLite's default is 1,000).
const WAL_CHECKPOINT_BACKSTOP: u32 = 16_384;

/// Copies the write-ahead log into the database file (and syncs it) from the store's sync
/// thread, so commits never wait for that.
pub struct Checkpointer {
    conn: Connection,
}

impl Checkpointer {
    /// A passive checkpoint: as much of the log as no reader or writer holds, without waiting.
    pub fn checkpoint(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS entries(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL, scope TEXT NOT NULL, key TEXT NOT NULL, key_folded TEXT NOT NULL,
    version TEXT NOT NULL, kind INTEGER NOT NULL, committed INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL DEFAULT 0, chunks BLOB, meta BLOB,
    created_at INTEGER NOT NULL, last_access INTEGER NOT NULL,
    UNIQUE(repo, scope, key_folded, version));
CREATE TABLE IF NOT EXISTS entry_chunks(
    entry_id INTEGER NOT NULL, digest BLOB NOT NULL, PRIMARY KEY(entry_id, digest)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entry_chunks_by_digest ON entry_chunks(digest);
CREATE TABLE IF NOT EXISTS chunks(
    digest BLOB PRIMARY KEY, stored INTEGER NOT NULL, raw INTEGER NOT NULL) WITHOUT ROWID;
";

const ENTRY_COLUMNS: &str = "id, repo, scope, key, version, kind, size, chunks, meta, created_at";

fn entry_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(EntryRecord, Vec<u8>)> {
    let chunks: Option<Vec<u8>> = row.get(7)?;
    let meta: Option<Vec<u8>> = row.get(8)?;
    Ok((
        EntryRecord {
            id: row.get::<_, i64>(0)? as u64,
            repo: row.get(1)?,
            scope: row.get(2)?,
            key: row.get(3)?,
            version: row.get(4)?,
            kind: EntryKind::from_db(row.get(5)?),
            size: row.get::<_, i64>(6)? as u64,
            chunks: Vec::new(),
            meta: meta.unwrap_or_default(),
            created_at_ms: row.get(9)?,
        },
        chunks.unwrap_or_default(),
    ))
}

fn finish_entry((mut rec, chunks): (EntryRecord, Vec<u8>)) -> Result<EntryRecord> {
    rec.chunks = decode_chunk_list(&chunks)?;
    Ok(rec)
}

impl Index {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        // Checkpoints belong to the store's sync thread ([`Checkpointer`]). SQLite's default runs
        // one inside whichever commit takes the log past 1,000 pages: a save's 2 MB listing
        // did, and its commit waited about 10 ms for the database file's fsync. This bound only
        // keeps the log from growing without end if that thread falls behind.
        conn.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_BACKSTOP}"
        ))?;
        // Stores made before background durability committed every entry after syncing it, so
        // their rows are durable: the column's default says so.
        let has_durable: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('entries') WHERE name = 'durable'")?
            .exists([])?;
        if !has_durable {
            conn.execute_batch(
                "ALTER TABLE entries ADD COLUMN durable INTEGER NOT NULL DEFAULT 1",
            )?;
        }
        crate::stats::migrate(&conn)?;
        Ok(Index { conn })
    }

    /// The connection, for the lookup record (`stats`).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// A connection of its own for checkpointing the log off the request path.
    pub fn checkpointer(path: &Path) -> Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(Checkpointer { conn })
    }

    /// Creates an uncommitted entry; fails with `AlreadyExists` if the triple is taken, whether
    /// committed or still uploading (entries are write-once). Written without waiting for the
    /// disk: a restart drops every reservation anyway ([`Index::drop_all_reservations`]), so one
    /// lost in a crash changes nothing, and a save does not start with an fsync (0.2 ms on an
    /// idle disk, far more on one busy with builds).
    pub fn reserve(&mut self, res: &Reservation, now_ms: i64) -> Result<u64> {
        let inserted = self.without_sync(|conn| {
            Ok(conn.execute(
                "INSERT OR IGNORE INTO entries(repo, scope, key, key_folded, version, kind, created_at, last_access)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                params![res.repo, res.scope, res.key, fold_key(&res.key), res.version, res.kind as i64, now_ms],
            )?)
        })?;
        if inserted == 0 {
            return Err(CacheError::AlreadyExists {
                scope: res.scope.clone(),
                key: res.key.clone(),
                version: res.version.clone(),
            });
        }
        Ok(self.conn.last_insert_rowid() as u64)
    }

    pub fn reservation(&self, id: u64) -> Result<Option<Reservation>> {
        Ok(self
            .conn
            .query_row(
                "SELECT repo, scope, key, version, kind FROM entries WHERE id = ?1 AND committed = 0",
                params![id as i64],
                |r| {
                    Ok(Reservation {
                        repo: r.get(0)?,
                        scope: r.get(1)?,
                        key: r.get(2)?,
                        version: r.get(3)?,
                        kind: EntryKind::from_db(r.get(4)?),
                    })
                },
            )
            .optional()?)
    }

    /// Runs the per-chunk writes (pins, chunk rows) without waiting for the disk: losing them in
    /// a power cut is harmless (reservations do not survive a restart; a lost chunk row only
    /// means the chunk is sent again), and the next `synchronous = FULL` commit (an entry's
    /// commit, which follows them in the log) makes them durable in order.
    fn without_sync<T>(&mut self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        self.conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        let result = f(&mut self.conn);
        let restored = self.conn.execute_batch("PRAGMA synchronous = FULL");
        let value = result?;
        restored?;
        Ok(value)
    }

    /// Protects chunks from garbage collection while `entry_id` (reserved or committed) uses them.
    pub fn pin(&mut self, entry_id: u64, digests: &[Digest]) -> Result<()> {
        self.without_sync(|conn| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR IGNORE INTO entry_chunks(entry_id, digest) VALUES (?1, ?2)",
                )?;
                for d in digests {
                    stmt.execute(params![entry_id as i64, &d.0[..]])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// The subset of `digests` that are stored and used by a committed entry of `repo` in one of
    /// `scopes`: what a token of that repository may learn exists, and fetch.
    pub fn readable_chunks(
        &self,
        digests: &[Digest],
        repo: &str,
        scopes: &[String],
    ) -> Result<HashSet<Digest>> {
        let mut readable = HashSet::new();
        if scopes.is_empty() {
            return Ok(readable);
        }
        let marks = vec!["?"; scopes.len()].join(", ");
        let sql = format!(
            "SELECT 1 FROM entry_chunks JOIN entries ON entries.id = entry_chunks.entry_id
             WHERE entry_chunks.digest = ?1 AND entries.committed = 1 AND entries.repo = ?2
             AND entries.scope IN ({marks})
             AND EXISTS (SELECT 1 FROM chunks WHERE chunks.digest = ?1) LIMIT 1"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        for d in digests {
            let args = [
                rusqlite::types::Value::Blob(d.0.to_vec()),
                rusqlite::types::Value::Text(repo.to_string()),
            ]
            .into_iter()
            .chain(
                scopes
                    .iter()
                    .map(|s| rusqlite::types::Value::Text(s.clone())),
            );
            if stmt.exists(params_from_iter(args))? {
                readable.insert(*d);
            }
        }
        Ok(readable)
    }

    /// The subset of `digests` already stored.
    pub fn known_chunks(&self, digests: &[Digest]) -> Result<HashSet<Digest>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM chunks WHERE digest = ?1")?;
        let mut known = HashSet::new();
        for d in digests {
            if stmt.exists(params![&d.0[..]])? {
                known.insert(*d);
            }
        }
        Ok(known)
    }

    /// Records a stored chunk. Returns false if it was already recorded.
    pub fn add_chunk(&mut self, digest: &Digest, stored: u64, raw: u64) -> Result<bool> {
        let n = self.without_sync(|conn| {
            Ok(conn.execute(
                "INSERT OR IGNORE INTO chunks(digest, stored, raw) VALUES (?1, ?2, ?3)",
                params![&digest.0[..], stored as i64, raw as i64],
            )?)
        })?;
        Ok(n == 1)
    }

    /// Makes a reservation visible with its manifest, not yet durable: the store syncs its chunks
    /// in the background and then calls [`Index::mark_durable`]. Every chunk must be stored; the
    /// pins are reduced to exactly the manifest's chunks. Written without waiting for the disk:
    /// a row lost in a crash is an entry the restart would have dropped anyway.
    pub fn commit(
        &mut self,
        id: u64,
        size: u64,
        chunks: &[ChunkRef],
        meta: &[u8],
        now_ms: i64,
    ) -> Result<()> {
        self.without_sync(|conn| {
            let tx = conn.transaction()?;
            let mut unique: Vec<Digest> = chunks.iter().map(|c| c.digest).collect();
            unique.sort();
            unique.dedup();
            {
                let mut exists = tx.prepare_cached("SELECT 1 FROM chunks WHERE digest = ?1")?;
                for d in &unique {
                    if !exists.exists(params![&d.0[..]])? {
                        return Err(CacheError::MissingChunk(d.to_hex()));
                    }
                }
                tx.execute(
                    "DELETE FROM entry_chunks WHERE entry_id = ?1",
                    params![id as i64],
                )?;
                let mut pin = tx
                    .prepare_cached("INSERT INTO entry_chunks(entry_id, digest) VALUES (?1, ?2)")?;
                for d in &unique {
                    pin.execute(params![id as i64, &d.0[..]])?;
                }
            }
            let updated = tx.execute(
                "UPDATE entries SET committed = 1, durable = 0, size = ?2, chunks = ?3, meta = ?4,
                    created_at = ?5, last_access = ?5
                 WHERE id = ?1 AND committed = 0",
                params![
                    id as i64,
                    size as i64,
                    encode_chunk_list(chunks),
                    meta,
                    now_ms
                ],
            )?;
            if updated != 1 {
                return Err(CacheError::UnknownUpload(id));
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Records that every chunk of these entries is synced (`synchronous = FULL`, so the mark and
    /// every earlier row in the log reach the disk). Entries removed meanwhile are ignored.
    pub fn mark_durable(&mut self, ids: &[u64]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("UPDATE entries SET durable = 1 WHERE id = ?1")?;
            for id in ids {
                stmt.execute(params![*id as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes committed entries whose chunks were never confirmed synced: run at start-up, so
    /// an entry visible after a crash never references a chunk that may be torn.
    pub fn drop_non_durable(&mut self) -> Result<usize> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM entry_chunks WHERE entry_id IN
             (SELECT id FROM entries WHERE committed = 1 AND durable = 0)",
            [],
        )?;
        let n = tx.execute(
            "DELETE FROM entries WHERE committed = 1 AND durable = 0",
            [],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Drops an uncommitted reservation and its pins.
    pub fn abandon(&mut self, id: u64) -> Result<()> {
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            "DELETE FROM entries WHERE id = ?1 AND committed = 0",
            params![id as i64],
        )?;
        if n == 1 {
            tx.execute(
                "DELETE FROM entry_chunks WHERE entry_id = ?1",
                params![id as i64],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes every reservation: run at start-up, when no upload can still be in flight.
    pub fn drop_all_reservations(&mut self) -> Result<usize> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM entry_chunks WHERE entry_id IN (SELECT id FROM entries WHERE committed = 0)",
            [],
        )?;
        let n = tx.execute("DELETE FROM entries WHERE committed = 0", [])?;
        tx.commit()?;
        Ok(n)
    }

    pub fn reservation_ids(&self) -> Result<Vec<u64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM entries WHERE committed = 0")?;
        let ids = stmt
            .query_map([], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids.into_iter().map(|i| i as u64).collect())
    }

    /// GitHub's matching: for each readable scope in order, the primary key exactly, then as a
    /// prefix, then each restore key exactly and then as a prefix; newest first. A hit refreshes
    /// the entry's last access.
    pub fn lookup(
        &mut self,
        repo: &str,
        scopes: &[String],
        keys: &[String],
        version: &str,
        allow_tree: bool,
        now_ms: i64,
    ) -> Result<Option<(EntryRecord, MatchKind)>> {
        let kind_filter = if allow_tree { "" } else { " AND kind = 0" };
        let exact_sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE repo = ?1 AND scope = ?2 AND version = ?3
             AND committed = 1 AND key_folded = ?4{kind_filter} ORDER BY created_at DESC, id DESC LIMIT 1"
        );
        let prefix_sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE repo = ?1 AND scope = ?2 AND version = ?3
             AND committed = 1 AND key_folded >= ?4 AND substr(key_folded, 1, length(?4)) = ?4{kind_filter}
             ORDER BY created_at DESC, id DESC LIMIT 1"
        );
        let mut found = None;
        'scopes: for scope in scopes {
            for (i, key) in keys.iter().enumerate() {
                let folded = fold_key(key);
                for sql in [&exact_sql, &prefix_sql] {
                    let hit = self
                        .conn
                        .prepare_cached(sql)?
                        .query_row(params![repo, scope, version, folded], entry_from_row)
                        .optional()?;
                    if let Some(raw) = hit {
                        let rec = finish_entry(raw)?;
                        let kind = if i == 0 && fold_key(&rec.key) == folded {
                            MatchKind::Exact
                        } else {
                            MatchKind::Partial
                        };
                        found = Some((rec, kind));
                        break 'scopes;
                    }
                }
            }
        }
        if let Some((rec, _)) = &found {
            self.conn.execute(
                "UPDATE entries SET last_access = ?2 WHERE id = ?1",
                params![rec.id as i64, now_ms],
            )?;
        }
        Ok(found)
    }

    pub fn entry(&self, id: u64) -> Result<Option<EntryRecord>> {
        let sql = format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id = ?1 AND committed = 1");
        match self
            .conn
            .query_row(&sql, params![id as i64], entry_from_row)
            .optional()?
        {
            Some(raw) => Ok(Some(finish_entry(raw)?)),
            None => Ok(None),
        }
    }

    /// Lists committed entries of a repository and scope whose key matches `key`
    /// case-insensitively (the v1 diagnostics call).
    pub fn list(&self, repo: &str, scopes: &[String], key: &str) -> Result<Vec<EntryRecord>> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries WHERE repo = ?1 AND scope = ?2 AND key_folded = ?3
             AND committed = 1 ORDER BY created_at DESC LIMIT 100"
        );
        let mut out = Vec::new();
        let mut stmt = self.conn.prepare(&sql)?;
        for scope in scopes {
            let rows = stmt
                .query_map(params![repo, scope, fold_key(key)], entry_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for raw in rows {
                out.push(finish_entry(raw)?);
            }
        }
        Ok(out)
    }

    /// Removes a chunk's record and every entry (committed or not) that uses it; `remove`
    /// deletes its file inside the same transaction (see [`Index::collect_garbage`]).
    pub fn forget_chunk(
        &mut self,
        digest: &Digest,
        remove: impl FnOnce(&Digest) -> Result<()>,
    ) -> Result<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<i64> = {
            let mut stmt = tx.prepare("SELECT entry_id FROM entry_chunks WHERE digest = ?1")?;
            let rows = stmt.query_map(params![&digest.0[..]], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        for id in &ids {
            tx.execute("DELETE FROM entries WHERE id = ?1", params![id])?;
            tx.execute("DELETE FROM entry_chunks WHERE entry_id = ?1", params![id])?;
        }
        tx.execute(
            "DELETE FROM chunks WHERE digest = ?1",
            params![&digest.0[..]],
        )?;
        remove(digest)?;
        tx.commit()?;
        Ok(ids.len())
    }

    /// Deletes committed entries not accessed since `cutoff_ms`. Returns how many.
    pub fn expire_unused(&mut self, cutoff_ms: i64) -> Result<usize> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM entry_chunks WHERE entry_id IN
             (SELECT id FROM entries WHERE committed = 1 AND last_access < ?1)",
            params![cutoff_ms],
        )?;
        let n = tx.execute(
            "DELETE FROM entries WHERE committed = 1 AND last_access < ?1",
            params![cutoff_ms],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Deletes the least recently used committed entry other than `keep` (the entry just
    /// committed, when eviction runs at a commit), keeping at least one. Returns false when there
    /// was nothing to delete.
    pub fn evict_least_recently_used(&mut self, keep: Option<u64>) -> Result<bool> {
        let committed: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM entries WHERE committed = 1",
            [],
            |r| r.get(0),
        )?;
        if committed <= 1 {
            return Ok(false);
        }
        let keep = keep.map_or(-1, |k| k as i64);
        let Some(id) = self
            .conn
            .query_row(
                "SELECT id FROM entries WHERE committed = 1 AND id != ?1
                 ORDER BY last_access ASC, id ASC LIMIT 1",
                params![keep],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
        else {
            return Ok(false);
        };
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM entry_chunks WHERE entry_id = ?1", params![id])?;
        tx.execute("DELETE FROM entries WHERE id = ?1", params![id])?;
        tx.commit()?;
        Ok(true)
    }

    /// Removes the records of chunks no entry pins, and their files (`remove`) inside the same
    /// write transaction: an upload pinning one of them meanwhile (in this process or another on
    /// the same store) either pinned it first, and it is kept, or waits for this transaction
    /// and then finds it gone and stores it again. Returns how many were removed.
    pub fn collect_garbage(
        &mut self,
        mut remove: impl FnMut(&Digest) -> Result<()>,
    ) -> Result<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let garbage: Vec<Digest> = {
            let mut stmt = tx.prepare(
                "DELETE FROM chunks WHERE NOT EXISTS
                 (SELECT 1 FROM entry_chunks WHERE entry_chunks.digest = chunks.digest) RETURNING digest",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
            let mut out = Vec::new();
            for row in rows {
                if let Ok(arr) = <[u8; 32]>::try_from(row?.as_slice()) {
                    out.push(Digest(arr));
                }
            }
            out
        };
        for d in &garbage {
            remove(d)?;
        }
        tx.commit()?;
        Ok(garbage.len())
    }

    /// Stored bytes of the chunks among `digests` (distinct) that the store holds.
    pub fn stored_bytes_of(&self, digests: &[Digest]) -> Result<u64> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT stored FROM chunks WHERE digest = ?1")?;
        let mut total = 0u64;
        for d in digests {
            if let Some(n) = stmt
                .query_row(params![&d.0[..]], |r| r.get::<_, i64>(0))
                .optional()?
            {
                total = total.saturating_add(n as u64);
            }
        }
        Ok(total)
    }

    /// Total stored (compressed) bytes of all chunks.
    pub fn stored_bytes(&self) -> Result<u64> {
        let n: i64 =
            self.conn
                .query_row("SELECT COALESCE(SUM(stored), 0) FROM chunks", [], |r| {
                    r.get(0)
                })?;
        Ok(n as u64)
    }

    pub fn counts(&self) -> Result<(u64, u64)> {
        let entries: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM entries WHERE committed = 1",
            [],
            |r| r.get(0),
        )?;
        let chunks: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM chunks", [], |r| r.get(0))?;
        Ok((entries as u64, chunks as u64))
    }
}
