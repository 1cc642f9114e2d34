//! The replay's result, in the shape `kiln bench cache --format json` prints (docs/cli.md
//! documents every field).

use crate::content::{ContentModel, Speeds};
use serde::Serialize;

/// Lookups and their outcomes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Counts {
    pub lookups: u64,
    pub exact_hits: u64,
    pub restore_key_hits: u64,
    pub misses: u64,
    /// (exact + restore-key hits) / lookups; 0 without lookups.
    pub hit_rate: f64,
    /// Exact hits / lookups.
    pub exact_hit_rate: f64,
    /// Entries saved.
    pub saves: u64,
    /// Saves refused because the key already existed in the scope (entries are write-once).
    pub save_conflicts: u64,
    /// Key evaluations that failed (the run would have failed the step).
    pub errors: u64,
    /// Runs in which a job or step `if:` skipped the step (no lookup).
    pub skipped: u64,
}

impl Counts {
    pub fn finish(&mut self) {
        let rate = |n: u64| {
            if self.lookups == 0 {
                0.0
            } else {
                n as f64 / self.lookups as f64
            }
        };
        self.hit_rate = rate(self.exact_hits + self.restore_key_hits);
        self.exact_hit_rate = rate(self.exact_hits);
    }

    pub fn add(&mut self, other: &Counts) {
        self.lookups += other.lookups;
        self.exact_hits += other.exact_hits;
        self.restore_key_hits += other.restore_key_hits;
        self.misses += other.misses;
        self.saves += other.saves;
        self.save_conflicts += other.save_conflicts;
        self.errors += other.errors;
        self.skipped += other.skipped;
    }
}

/// Bytes moved and kept, compressed, by one way of caching. Estimates where the step's
/// content is modelled (see `content`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Bytes {
    pub uploaded: u64,
    pub downloaded: u64,
    /// Bytes stored at the end of the replay (nothing is evicted during it).
    pub stored: u64,
    /// Bytes a save did not send because the store held their chunks already.
    pub dedup_saved: u64,
}

/// Estimated time on the critical path, from the bytes at [`Speeds`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Timing {
    pub kiln_restore_ms: f64,
    pub kiln_save_ms: f64,
    pub archive_restore_ms: f64,
    pub archive_save_ms: f64,
}

/// A commit that changed a step's primary key in its scope, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyChange {
    pub commit: String,
    pub scope: String,
    pub from: String,
    pub to: String,
    /// Files of the key's hashFiles() patterns that changed (`path (changed|added|removed)`),
    /// or `key expression` when the key changed with the same hashed files.
    pub causes: Vec<String>,
}

/// One cache step (per key family).
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub workflow: String,
    pub job: String,
    pub step: String,
    /// The step's `id:`, when it has one.
    pub step_id: Option<String>,
    pub uses: String,
    pub key_family: String,
    /// Where the saved bytes come from: `real` (every path is tracked in the commit),
    /// `modelled` (the content model), or `mixed` (some saves each way).
    pub content: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// kiln's chunked store.
    pub chunked: Bytes,
    /// GitHub's behaviour: one compressed archive per key.
    pub archive: Bytes,
    pub timing: Timing,
    pub key_changes: Vec<KeyChange>,
}

/// What one step did in one commit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepOutcome {
    /// Index into `steps`.
    pub step: usize,
    /// `exact`, `restore-key`, `miss`, `save-only` (a save step does no lookup), `skipped` (an
    /// `if:` skipped it), or `error`.
    pub outcome: String,
    pub key: String,
    pub matched_key: Option<String>,
    /// `saved`, `conflict` (the key existed already) or null when the step did not save.
    pub save: Option<String>,
    /// Compressed bytes the chunked store received for this save.
    pub uploaded: u64,
    /// Compressed bytes a whole-archive cache (GitHub's) would have uploaded for it.
    pub archive_uploaded: u64,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CommitReport {
    pub sha: String,
    pub subject: String,
    /// Committer time, seconds since the epoch.
    pub time: i64,
    /// The scope the run wrote to (`refs/heads/main`, `refs/pull/1/merge`, ...).
    pub scope: String,
    pub steps: Vec<StepOutcome>,
    /// Workflow files of this commit that could not be read, with why.
    pub skipped_workflows: Vec<String>,
}

impl StepReport {
    /// `workflow: job / step`, the label `--compare-step` and the tables use.
    pub fn label(&self) -> String {
        format!("{}: {} / {}", self.workflow, self.job, self.step)
    }

    /// Whether `selector` names this step: its name, id, `job / step` or the whole label.
    pub fn is_named(&self, selector: &str) -> bool {
        selector == self.step
            || self.step_id.as_deref() == Some(selector)
            || selector == format!("{} / {}", self.job, self.step)
            || selector == self.label()
    }
}

/// Totals over every step.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    #[serde(flatten)]
    pub counts: Counts,
    pub chunked: Bytes,
    pub archive: Bytes,
    pub timing: Timing,
}

/// The same history with another primary key for some steps (`--compare-key`).
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// The key expression.
    pub key: String,
    /// `--compare-step`, or null when the key replaced every cache step's.
    pub step: Option<String>,
    pub totals: Totals,
    pub steps: Vec<StepReport>,
    pub commits: Vec<CommitReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub repository: String,
    /// `-W` file applied to every commit, or null when each commit's own workflows were read.
    pub workflow_override: Option<String>,
    pub default_branch: String,
    pub branches: bool,
    /// True when some step's bytes come from the content model rather than real files.
    pub bytes_are_estimates: bool,
    pub content_model: ContentModel,
    pub speeds: Speeds,
    pub totals: Totals,
    pub steps: Vec<StepReport>,
    pub commits: Vec<CommitReport>,
    pub comparison: Option<Comparison>,
    /// Wall time of the replay (without the comparison) and per commit.
    pub replay_ms: f64,
    pub ms_per_commit: f64,
}
