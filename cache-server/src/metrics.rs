//! Counters per repository and scope, rendered as Prometheus text on `/metrics`.

use dashmap::DashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default, Debug)]
pub struct Counters {
    pub exact_hits: AtomicU64,
    pub restore_key_hits: AtomicU64,
    pub misses: AtomicU64,
    pub bytes_served: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub bytes_dedup_saved: AtomicU64,
}

#[derive(Default, Debug)]
pub struct Metrics {
    by_scope: DashMap<(String, String), Counters>,
}

/// Which counter to bump.
#[derive(Clone, Copy, Debug)]
pub enum Counter {
    ExactHit,
    RestoreKeyHit,
    Miss,
    BytesServed,
    BytesUploaded,
    BytesDedupSaved,
}

impl Metrics {
    pub fn add(&self, repo: &str, scope: &str, counter: Counter, n: u64) {
        let entry = self
            .by_scope
            .entry((repo.to_string(), scope.to_string()))
            .or_default();
        let c = &*entry;
        let cell = match counter {
            Counter::ExactHit => &c.exact_hits,
            Counter::RestoreKeyHit => &c.restore_key_hits,
            Counter::Miss => &c.misses,
            Counter::BytesServed => &c.bytes_served,
            Counter::BytesUploaded => &c.bytes_uploaded,
            Counter::BytesDedupSaved => &c.bytes_dedup_saved,
        };
        cell.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, repo: &str, scope: &str, counter: Counter) -> u64 {
        self.by_scope
            .get(&(repo.to_string(), scope.to_string()))
            .map(|c| {
                let cell = match counter {
                    Counter::ExactHit => &c.exact_hits,
                    Counter::RestoreKeyHit => &c.restore_key_hits,
                    Counter::Miss => &c.misses,
                    Counter::BytesServed => &c.bytes_served,
                    Counter::BytesUploaded => &c.bytes_uploaded,
                    Counter::BytesDedupSaved => &c.bytes_dedup_saved,
                };
                cell.load(Ordering::Relaxed)
            })
            .unwrap_or(0)
    }

    /// Prometheus text exposition, with store totals appended.
    pub fn render(&self, totals: Option<(u64, u64, u64)>) -> String {
        let mut rows: Vec<((String, String), [u64; 6])> = self
            .by_scope
            .iter()
            .map(|e| {
                let c = e.value();
                (
                    e.key().clone(),
                    [
                        c.exact_hits.load(Ordering::Relaxed),
                        c.restore_key_hits.load(Ordering::Relaxed),
                        c.misses.load(Ordering::Relaxed),
                        c.bytes_served.load(Ordering::Relaxed),
                        c.bytes_uploaded.load(Ordering::Relaxed),
                        c.bytes_dedup_saved.load(Ordering::Relaxed),
                    ],
                )
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        const NAMES: [(&str, &str); 6] = [
            (
                "kiln_cache_exact_hits_total",
                "Lookups that hit the primary key exactly.",
            ),
            (
                "kiln_cache_restore_key_hits_total",
                "Lookups that hit a prefix or a restore key.",
            ),
            ("kiln_cache_misses_total", "Lookups that found nothing."),
            (
                "kiln_cache_bytes_served_total",
                "Entry bytes sent to clients.",
            ),
            ("kiln_cache_bytes_uploaded_total", "Bytes clients uploaded."),
            (
                "kiln_cache_bytes_dedup_saved_total",
                "Bytes not stored or sent because their chunks already existed.",
            ),
        ];
        let mut out = String::new();
        for (i, (name, help)) in NAMES.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((repo, scope), values) in &rows {
                let _ = writeln!(
                    out,
                    "{name}{{repository=\"{}\",scope=\"{}\"}} {}",
                    escape(repo),
                    escape(scope),
                    values[i]
                );
            }
        }
        if let Some((entries, chunks, bytes)) = totals {
            let _ = writeln!(out, "# HELP kiln_cache_entries Committed entries.\n# TYPE kiln_cache_entries gauge\nkiln_cache_entries {entries}");
            let _ = writeln!(out, "# HELP kiln_cache_chunks Stored chunks.\n# TYPE kiln_cache_chunks gauge\nkiln_cache_chunks {chunks}");
            let _ = writeln!(out, "# HELP kiln_cache_stored_bytes Bytes of stored chunks.\n# TYPE kiln_cache_stored_bytes gauge\nkiln_cache_stored_bytes {bytes}");
        }
        out
    }
}

/// A label value as Prometheus' text format wants it: backslash, quote and newline escaped.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn renders_labels_escaped() {
        let m = Metrics::default();
        m.add("o/r", "refs/heads/\"x\"", Counter::Miss, 2);
        let text = m.render(Some((1, 2, 3)));
        assert!(text.contains(
            "kiln_cache_misses_total{repository=\"o/r\",scope=\"refs/heads/\\\"x\\\"\"} 2"
        ));
        assert!(text.contains("kiln_cache_stored_bytes 3"));
    }
}
