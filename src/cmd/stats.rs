//! Rendering `kiln cache stats`: a table, or a self-contained HTML page with the hit rate of
//! each key family per day and the bytes per day.

use crate::cmd::output::{human, percent, text_table};
use crate::html::{Page, Series, PALETTE};
use kiln_cache::stats::{StatsReport, Tally};
use std::collections::BTreeMap;
use std::fmt::Write as _;

const HEADER: [&str; 14] = [
    "repository",
    "key family",
    "scope",
    "lookups",
    "exact",
    "restore",
    "miss",
    "hit rate",
    "served",
    "uploaded",
    "dedup saved",
    "entries",
    "entry bytes",
    "evictions",
];

fn cells(t: &Tally) -> Vec<String> {
    vec![
        t.lookups.to_string(),
        t.exact_hits.to_string(),
        t.restore_key_hits.to_string(),
        t.misses.to_string(),
        percent(t.hit_rate),
        human(t.bytes_served),
        human(t.bytes_uploaded),
        human(t.bytes_dedup_saved),
    ]
}

fn rows(r: &StatsReport) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = r
        .groups
        .iter()
        .map(|g| {
            let mut row = vec![g.repository.clone(), g.key_family.clone(), g.scope.clone()];
            row.extend(cells(&g.tally));
            row.extend([
                g.entries.to_string(),
                human(g.entry_bytes),
                g.tally.evictions.to_string(),
            ]);
            row
        })
        .collect();
    let mut total = vec!["total".to_string(), String::new(), String::new()];
    total.extend(cells(&r.totals));
    total.extend([
        r.store_entries.map(|e| e.to_string()).unwrap_or_default(),
        r.store_chunk_bytes
            .map(|b| format!("{} stored", human(b)))
            .unwrap_or_default(),
        r.totals.evictions.to_string(),
    ]);
    out.push(total);
    out
}

pub fn table(r: &StatsReport) -> String {
    let mut out = String::new();
    if r.groups.is_empty() {
        let _ = writeln!(out, "no lookups, saves or entries recorded in this period");
        return out;
    }
    out.push_str(&text_table(&HEADER, &rows(r), 3));
    out
}

pub fn html(r: &StatsReport) -> String {
    let mut page = Page::new("kiln cache statistics");
    page.paragraph(
        &format!(
            "{} lookups: {} exact hits, {} restore-key hits, {} misses (hit rate {}). {} served, {} uploaded, {} not sent thanks to deduplication.",
            r.totals.lookups,
            r.totals.exact_hits,
            r.totals.restore_key_hits,
            r.totals.misses,
            percent(r.totals.hit_rate),
            human(r.totals.bytes_served),
            human(r.totals.bytes_uploaded),
            human(r.totals.bytes_dedup_saved)
        ),
        "",
    );
    let days: Vec<String> = {
        let mut d: Vec<String> = r.days.iter().map(|d| d.day.clone()).collect();
        d.sort();
        d.dedup();
        d
    };
    let index: BTreeMap<&str, usize> = days
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();
    let mut families: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
    let mut served = vec![Some(0.0); days.len()];
    let mut uploaded = vec![Some(0.0); days.len()];
    for d in &r.days {
        let i = index[d.day.as_str()];
        let name = format!("{} {}", d.repository, d.key_family);
        let values = families
            .entry(name)
            .or_insert_with(|| vec![None; days.len()]);
        if d.tally.lookups > 0 {
            values[i] = Some(d.tally.hit_rate);
        }
        served[i] = Some(served[i].unwrap_or(0.0) + d.tally.bytes_served as f64);
        uploaded[i] = Some(uploaded[i].unwrap_or(0.0) + d.tally.bytes_uploaded as f64);
    }
    let series: Vec<Series> = families
        .into_iter()
        .filter(|(_, v)| v.iter().any(Option::is_some))
        .enumerate()
        .map(|(i, (name, values))| Series {
            name,
            color: PALETTE[i % PALETTE.len()],
            values,
        })
        .collect();
    page.line_chart(
        "hit-rate",
        "Hit rate per key family and day",
        "day (UTC)",
        "hit rate",
        "%",
        &days,
        &series,
    );
    page.line_chart(
        "bytes",
        "Bytes per day",
        "day (UTC)",
        "bytes",
        "B",
        &days,
        &[
            Series {
                name: "served".into(),
                color: PALETTE[0],
                values: served,
            },
            Series {
                name: "uploaded".into(),
                color: PALETTE[1],
                values: uploaded,
            },
        ],
    );
    page.heading(2, "Per repository, key family and scope");
    page.table(&HEADER, &rows(r), 3);
    page.finish()
}
