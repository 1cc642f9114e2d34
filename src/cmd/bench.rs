//! `kiln bench cache`: replays a repository's history through kiln's cache store (kiln-bench)
//! and renders the result as a table, JSON or a self-contained HTML page.

use crate::cmd::output::{emit, human, percent, text_table, Format};
use crate::html::{DotKind, Page, Series, PALETTE};
use anyhow::Context as _;
use kiln_bench::content::{ContentModel, Speeds};
use kiln_bench::history::Selection;
use kiln_bench::report::{BenchReport, Bytes, CommitReport, Counts, StepReport, Timing, Totals};
use kiln_bench::BenchOptions;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Replay a repository's history: how often each actions/cache key hits, and the bytes.
    Cache(CacheArgs),
}

#[derive(clap::Args, Debug)]
pub struct CacheArgs {
    /// The repository (a work tree or a bare repository).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// One workflow file, from the working tree, applied to every commit (default: each
    /// commit's own .github/workflows).
    #[arg(short = 'W', long = "workflow")]
    workflow: Option<PathBuf>,
    /// Replay only the newest N commits.
    #[arg(long, conflicts_with = "range")]
    commits: Option<usize>,
    /// Replay the first-parent commits of A..B.
    #[arg(long)]
    range: Option<String>,
    /// Replay every local branch; merged branches as pull requests, in their own scopes.
    #[arg(long)]
    branches: bool,
    /// The default branch (default: the branch checked out, else main).
    #[arg(long)]
    default_branch: Option<String>,
    /// What untracked cached paths hold: size=256MiB,churn=0.1,ratio=0.4,chunk=1MiB (any subset).
    #[arg(long, default_value = "")]
    content_model: String,
    /// MB/s that turn bytes into time: kiln-save=677,kiln-restore=1313,archive-save=495,archive-restore=773.
    #[arg(long, default_value = "")]
    speeds: String,
    /// Another primary key (an expression as written in `key:`), replayed on the same history
    /// and shown side by side.
    #[arg(long)]
    compare_key: Option<String>,
    /// The step --compare-key replaces: its name, id, `job / step` or `workflow: job / step`
    /// (needed when the history has more than one cache step).
    #[arg(long, requires = "compare_key")]
    compare_step: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Write DIR/cache-bench.{txt,json,html} instead of printing.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where the replay keeps its temporary stores (default: /dev/shm, else the temp dir).
    #[arg(long)]
    scratch: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let BenchCommand::Cache(a) = args.command;
    let selection = match (a.commits, &a.range) {
        (Some(n), _) => Selection::Last(n),
        (None, Some(range)) => Selection::Range(range.clone()),
        (None, None) => Selection::All,
    };
    let options = BenchOptions {
        repo: a.repo.clone(),
        workflow: a.workflow.clone(),
        selection,
        branches: a.branches,
        default_branch: a.default_branch.clone(),
        content: ContentModel::parse(&a.content_model)?,
        speeds: Speeds::parse(&a.speeds)?,
        compare_key: a.compare_key.clone(),
        compare_step: a.compare_step.clone(),
        scratch: a.scratch.clone(),
    };
    let report = kiln_bench::bench_cache(&options)
        .with_context(|| format!("replaying {}", a.repo.display()))?;
    let text = match a.format {
        Format::Table => table(&report),
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Html => html(&report),
    };
    emit(&text, a.out.as_deref(), "cache-bench", a.format)?;
    Ok(ExitCode::SUCCESS)
}

fn seconds(ms: f64) -> String {
    format!("{:.1}s", ms / 1000.0)
}

fn step_name(s: &StepReport) -> String {
    format!("{} / {}", s.job, s.step)
}

const HEADER: [&str; 13] = [
    "step",
    "key family",
    "lookups",
    "exact",
    "restore",
    "miss",
    "hit rate",
    "saves",
    "content",
    "up kiln/archive",
    "down",
    "stored kiln/archive",
    "time kiln/archive",
];

fn row(name: String, family: &str, content: &str, c: &Counts, t: Figures<'_>) -> Vec<String> {
    vec![
        name,
        family.to_string(),
        c.lookups.to_string(),
        c.exact_hits.to_string(),
        c.restore_key_hits.to_string(),
        c.misses.to_string(),
        percent(c.hit_rate),
        c.saves.to_string(),
        content.to_string(),
        format!(
            "{} / {}",
            human(t.chunked.uploaded),
            human(t.archive.uploaded)
        ),
        human(t.chunked.downloaded),
        format!("{} / {}", human(t.chunked.stored), human(t.archive.stored)),
        format!(
            "{} / {}",
            seconds(t.timing.kiln_restore_ms + t.timing.kiln_save_ms),
            seconds(t.timing.archive_restore_ms + t.timing.archive_save_ms)
        ),
    ]
}

/// The byte and time figures shared by a step row and the totals.
#[derive(Clone, Copy)]
struct Figures<'a> {
    chunked: &'a Bytes,
    archive: &'a Bytes,
    timing: &'a Timing,
}

fn rows(steps: &[StepReport], totals: &Totals) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            let figures = Figures {
                chunked: &s.chunked,
                archive: &s.archive,
                timing: &s.timing,
            };
            row(step_name(s), &s.key_family, &s.content, &s.counts, figures)
        })
        .collect();
    let figures = Figures {
        chunked: &totals.chunked,
        archive: &totals.archive,
        timing: &totals.timing,
    };
    out.push(row("total".into(), "", "", &totals.counts, figures));
    out
}

/// Counts and uploaded bytes of every row of one step (all its key families).
fn per_label(steps: &[StepReport]) -> Vec<(String, Vec<String>, Counts, u64)> {
    let mut out: Vec<(String, Vec<String>, Counts, u64)> = Vec::new();
    for s in steps {
        let label = s.label();
        let at = match out.iter().position(|(l, ..)| *l == label) {
            Some(at) => at,
            None => {
                out.push((label, Vec::new(), Counts::default(), 0));
                out.len() - 1
            }
        };
        let entry = &mut out[at];
        entry.1.push(s.key_family.clone());
        entry.2.add(&s.counts);
        entry.3 += s.chunked.uploaded;
    }
    for (_, _, counts, _) in &mut out {
        counts.finish();
    }
    out
}

const SIDE_HEADER: [&str; 8] = [
    "step",
    "key families",
    "lookups",
    "exact",
    "restore",
    "miss",
    "hit rate",
    "uploaded",
];

/// The current keys and the compared key, one line each per step, then the totals.
fn side_by_side(r: &BenchReport) -> Option<(String, Vec<Vec<String>>)> {
    let c = r.comparison.as_ref()?;
    let now = per_label(&r.steps);
    let then = per_label(&c.steps);
    let pair = |a: u64, b: u64| format!("{a} -> {b}");
    let mut rows = Vec::new();
    for (label, families, counts, uploaded) in &now {
        let (other_families, other, other_uploaded) = then
            .iter()
            .find(|(l, ..)| l == label)
            .map(|(_, f, c, u)| (f.clone(), c.clone(), *u))
            .unwrap_or_default();
        rows.push(vec![
            label.clone(),
            format!("{} -> {}", families.join(" "), other_families.join(" ")),
            pair(counts.lookups, other.lookups),
            pair(counts.exact_hits, other.exact_hits),
            pair(counts.restore_key_hits, other.restore_key_hits),
            pair(counts.misses, other.misses),
            format!(
                "{} -> {}",
                percent(counts.hit_rate),
                percent(other.hit_rate)
            ),
            format!("{} -> {}", human(*uploaded), human(other_uploaded)),
        ]);
    }
    let (t, o) = (&r.totals, &c.totals);
    rows.push(vec![
        "total".into(),
        String::new(),
        pair(t.counts.lookups, o.counts.lookups),
        pair(t.counts.exact_hits, o.counts.exact_hits),
        pair(t.counts.restore_key_hits, o.counts.restore_key_hits),
        pair(t.counts.misses, o.counts.misses),
        format!(
            "{} -> {}",
            percent(t.counts.hit_rate),
            percent(o.counts.hit_rate)
        ),
        format!(
            "{} -> {}",
            human(t.chunked.uploaded),
            human(o.chunked.uploaded)
        ),
    ]);
    let title = match &c.step {
        Some(step) => format!("the keys as written -> with key {} for {step}", c.key),
        None => format!("the keys as written -> with key {}", c.key),
    };
    Some((title, rows))
}

fn model_note(r: &BenchReport) -> Option<String> {
    if !r.bytes_are_estimates {
        return None;
    }
    let m = &r.content_model;
    Some(format!(
        "Bytes and times of modelled steps are estimates from the content model (size {}, churn {}, compression ratio {}, chunks of {}); \
         times at {} / {} MB/s (kiln save/restore) and {} / {} MB/s (archive save/restore).",
        human(m.size),
        m.churn,
        m.ratio,
        human(m.chunk),
        r.speeds.kiln_save,
        r.speeds.kiln_restore,
        r.speeds.archive_save,
        r.speeds.archive_restore
    ))
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}

pub fn table(r: &BenchReport) -> String {
    let mut out = format!(
        "{} commits of {} replayed in {:.0} ms ({:.2} ms per commit){}\n\n",
        r.commits.len(),
        r.repository,
        r.replay_ms,
        r.ms_per_commit,
        if r.branches { ", all branches" } else { "" }
    );
    if r.steps.is_empty() {
        out.push_str("no cache steps found (actions/cache, actions/cache/restore, actions/cache/save, or actions/setup-* with cache:)\n");
    } else {
        out.push_str(&text_table(&HEADER, &rows(&r.steps, &r.totals), 2));
    }
    if let Some(note) = model_note(r) {
        let _ = writeln!(out, "\n{note}");
    }
    for s in &r.steps {
        if s.key_changes.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\nkey changes of {} ({}):", step_name(s), s.key_family);
        for k in s.key_changes.iter().take(20) {
            let _ = writeln!(
                out,
                "  {} {}: {}",
                short(&k.commit),
                k.scope,
                k.causes.join(", ")
            );
        }
        if s.key_changes.len() > 20 {
            let _ = writeln!(out, "  ... {} more", s.key_changes.len() - 20);
        }
    }
    if let Some((title, rows)) = side_by_side(r) {
        let _ = writeln!(out, "\n{title}:");
        out.push_str(&text_table(&SIDE_HEADER, &rows, 2));
    }
    if let Some(note) = errors_note(&r.commits) {
        let _ = writeln!(out, "\n{note}");
    }
    if let Some(note) = r.comparison.as_ref().and_then(|c| errors_note(&c.commits)) {
        let _ = writeln!(out, "\nwith the compared key: {note}");
    }
    let skipped: usize = r.commits.iter().map(|c| c.skipped_workflows.len()).sum();
    if skipped > 0 {
        let _ = writeln!(
            out,
            "\n{skipped} workflow files could not be read in some commits (see --format json, commits[].skipped_workflows)"
        );
    }
    out
}

/// How many step runs failed to evaluate their key, and the first error.
fn errors_note(commits: &[CommitReport]) -> Option<String> {
    let errors: Vec<(&CommitReport, &str)> = commits
        .iter()
        .flat_map(|c| {
            c.steps
                .iter()
                .filter_map(move |o| o.error.as_deref().map(|e| (c, e)))
        })
        .collect();
    let (commit, error) = errors.first()?;
    Some(format!(
        "{} step runs failed to evaluate their key or if:; the first, in {}: {error}",
        errors.len(),
        short(&commit.sha)
    ))
}

const OUTCOMES: [DotKind; 6] = [
    DotKind {
        kind: "exact",
        name: "exact hit",
        color: "#009e73",
    },
    DotKind {
        kind: "restore-key",
        name: "restore-key hit",
        color: "#e69f00",
    },
    DotKind {
        kind: "miss",
        name: "miss",
        color: "#d55e00",
    },
    DotKind {
        kind: "save-only",
        name: "save only",
        color: "#56b4e9",
    },
    DotKind {
        kind: "skipped",
        name: "skipped (if:)",
        color: "#cccccc",
    },
    DotKind {
        kind: "error",
        name: "error",
        color: "#000000",
    },
];

/// Running hit rate after each commit, over every step's lookups so far.
fn running_hit_rate(commits: &[CommitReport]) -> Vec<Option<f64>> {
    let (mut hits, mut lookups) = (0u64, 0u64);
    commits
        .iter()
        .map(|c| {
            for o in &c.steps {
                match o.outcome.as_str() {
                    "exact" | "restore-key" => {
                        hits += 1;
                        lookups += 1;
                    }
                    "miss" => lookups += 1,
                    _ => {}
                }
            }
            (lookups > 0).then(|| hits as f64 / lookups as f64)
        })
        .collect()
}

pub fn html(r: &BenchReport) -> String {
    let mut page = Page::new(&format!("Cache replay of {}", r.repository));
    let t = &r.totals.counts;
    page.paragraph(
        &format!(
            "{} commits replayed{} ({:.2} ms per commit). Hit rate {} ({} exact hits, {} restore-key hits, {} misses of {} lookups).",
            r.commits.len(),
            if r.branches { " on every branch" } else { "" },
            r.ms_per_commit,
            percent(t.hit_rate),
            t.exact_hits,
            t.restore_key_hits,
            t.misses,
            t.lookups
        ),
        "",
    );
    if let Some(note) = model_note(r) {
        page.paragraph(&note, "note");
    }
    let x_labels: Vec<String> = r
        .commits
        .iter()
        .map(|c| short(&c.sha).to_string())
        .collect();
    let row_names: Vec<String> = r
        .steps
        .iter()
        .map(|s| format!("{} ({})", step_name(s), s.key_family))
        .collect();
    let mut cells = Vec::new();
    for (col, c) in r.commits.iter().enumerate() {
        for o in &c.steps {
            let tip = format!(
                "{} {} [{}]: {} {}",
                short(&c.sha),
                c.subject,
                c.scope,
                o.outcome,
                o.matched_key.as_deref().unwrap_or(&o.key)
            );
            cells.push((o.step, col, o.outcome.as_str(), tip));
        }
    }
    page.dot_chart(
        "outcomes",
        "Outcome of each cache step per commit",
        "commit (oldest first)",
        &row_names,
        &x_labels,
        &OUTCOMES,
        &cells,
    );
    let (mut kiln, mut archive) = (0u64, 0u64);
    let (mut up_kiln, mut up_archive) = (Vec::new(), Vec::new());
    for c in &r.commits {
        for o in &c.steps {
            kiln += o.uploaded;
            archive += o.archive_uploaded;
        }
        up_kiln.push(Some(kiln as f64));
        up_archive.push(Some(archive as f64));
    }
    page.line_chart(
        "bytes",
        "Bytes uploaded so far",
        "commit (oldest first)",
        "bytes uploaded (compressed)",
        "B",
        &x_labels,
        &[
            Series {
                name: "kiln chunked store".into(),
                color: PALETTE[0],
                values: up_kiln,
            },
            Series {
                name: "whole archive (GitHub)".into(),
                color: PALETTE[1],
                values: up_archive,
            },
        ],
    );
    page.heading(2, "Per cache step");
    page.table(&HEADER, &rows(&r.steps, &r.totals), 2);
    if let Some(c) = &r.comparison {
        if let Some((title, rows)) = side_by_side(r) {
            page.heading(2, &format!("Compared: {title}"));
            page.table(&SIDE_HEADER, &rows, 2);
        }
        page.line_chart(
            "compare",
            "Hit rate so far, keys as written and compared key",
            "commit (oldest first)",
            "hit rate",
            "%",
            &x_labels,
            &[
                Series {
                    name: "keys as written".into(),
                    color: PALETTE[0],
                    values: running_hit_rate(&r.commits),
                },
                Series {
                    name: format!("key {}", c.key),
                    color: PALETTE[5],
                    values: running_hit_rate(&c.commits),
                },
            ],
        );
    }
    for s in &r.steps {
        if s.key_changes.is_empty() {
            continue;
        }
        page.heading(2, &format!("Key changes of {}", step_name(s)));
        let changes: Vec<Vec<String>> = s
            .key_changes
            .iter()
            .map(|k| {
                vec![
                    short(&k.commit).to_string(),
                    k.scope.clone(),
                    k.causes.join(", "),
                    k.to.clone(),
                ]
            })
            .collect();
        page.table(&["commit", "scope", "why", "new key"], &changes, 4);
    }
    page.finish()
}
