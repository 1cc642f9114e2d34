//! The two shapes almost every statement of the store has: all rows mapped, or at most one.
//! Statements are prepared through the connection's cache, so a hot path parses its SQL once.

use super::error::{DbContext, Result};
use rusqlite::{Connection, OptionalExtension, Params, Row};

pub(crate) fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    action: &'static str,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).ctx(action)?;
    let rows = stmt
        .query_map(params, map)
        .ctx(action)?
        .collect::<rusqlite::Result<Vec<T>>>()
        .ctx(action);
    rows
}

pub(crate) fn one<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    action: &'static str,
    map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.query_row(params, map).optional())
        .ctx(action)
}

/// Runs a statement that changes rows; returns how many.
pub(crate) fn exec(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    action: &'static str,
) -> Result<usize> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute(params))
        .ctx(action)
}
