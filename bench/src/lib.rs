//! kiln-bench: what a repository's `actions/cache` keys would have done over its real history.
//!
//! [`bench_cache`] replays the history oldest first ([`history`]), reads each commit's
//! workflows (or one given workflow) from git objects, finds the cache steps ([`steps`]),
//! evaluates their keys with `hashFiles()` over the commit's tree ([`tree`]), and looks them
//! up in and saves them to a real kiln cache store ([`replay`]), with modelled content
//! ([`content`]). The result is a [`report::BenchReport`]; the binary renders it.
//! No printing here.

pub mod content;
pub mod error;
pub mod git;
pub mod history;
pub mod replay;
pub mod report;
pub mod setup;
pub mod steps;
pub mod tree;

pub use error::{BenchError, Result};

use content::{ContentModel, Speeds};
use history::Selection;
use kiln_workflow::model::{Param, Template};
use kiln_workflow::value::Value;
use replay::{KeyOverride, ReplaySetup, Workflows};
use report::{BenchReport, Comparison};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What `kiln bench cache` was asked.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub repo: PathBuf,
    /// One workflow file (from the working tree) applied to every commit.
    pub workflow: Option<PathBuf>,
    pub selection: Selection,
    pub branches: bool,
    pub default_branch: Option<String>,
    pub content: ContentModel,
    pub speeds: Speeds,
    /// Another primary key, replayed on the same history (`--compare-key`)...
    pub compare_key: Option<String>,
    /// ...for the step this names (`--compare-step`: its name, id, `job / step`, or
    /// `workflow: job / step`); required when the history has more than one cache step.
    pub compare_step: Option<String>,
    /// Where the replay's stores go (a fresh temporary directory inside it); default: /dev/shm
    /// when it exists (the store syncs its files; memory makes that free), else the system's
    /// temporary directory.
    pub scratch: Option<PathBuf>,
}

/// A template from a `--compare-key` text, as if written in a workflow's `with: key:`.
pub fn key_param(text: &str) -> Result<Param> {
    let segments =
        kiln_workflow::expr::template::split(text).map_err(|e| BenchError::BadOption {
            what: "key expression",
            value: text.to_string(),
            reason: e.to_string(),
        })?;
    let template = Template {
        raw: text.to_string(),
        pos: Default::default(),
        segments,
    };
    Ok(Param {
        value: Value::string(text),
        template: template.has_expressions().then_some(template),
        pos: Default::default(),
    })
}

fn scratch_dir(given: Option<&Path>) -> Result<tempfile::TempDir> {
    let base = match given {
        Some(dir) => dir.to_path_buf(),
        None => {
            let shm = Path::new("/dev/shm");
            if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
                shm.to_path_buf()
            } else {
                std::env::temp_dir()
            }
        }
    };
    Ok(tempfile::Builder::new()
        .prefix("kiln-bench-")
        .tempdir_in(base)?)
}

/// `--compare-key` replaces one step's key: `--compare-step` must name a step of the replay,
/// and may be left out only when there is one.
fn check_compare_step(
    steps: &[report::StepReport],
    selector: Option<&str>,
    key: &str,
) -> Result<()> {
    let mut labels: Vec<String> = steps.iter().map(|s| s.label()).collect();
    labels.sort();
    labels.dedup();
    let bad = |reason: String| BenchError::BadOption {
        what: "--compare-key",
        value: key.to_string(),
        reason,
    };
    match selector {
        Some(name) if !steps.iter().any(|s| s.is_named(name)) => Err(bad(format!(
            "--compare-step {name:?} names none of the cache steps: {}",
            labels.join("; ")
        ))),
        None if labels.len() > 1 => Err(bad(format!(
            "the history has {} cache steps; name the one to compare with --compare-step (its name, id, `job / step` or one of: {})",
            labels.len(),
            labels.join("; ")
        ))),
        _ => Ok(()),
    }
}

/// Replays the history and returns the report.
pub fn bench_cache(options: &BenchOptions) -> Result<BenchReport> {
    let repo = Arc::new(git::Repo::open(&options.repo)?);
    let cwd = std::fs::canonicalize(&options.repo)?
        .to_string_lossy()
        .into_owned();
    let repository = Path::new(&cwd)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repository".into());
    let default = history::default_branch(&repo, options.default_branch.as_deref());
    let runs = history::plan(&repo, &options.selection, options.branches, &default)?;
    let workflows = match &options.workflow {
        Some(path) => {
            let text = std::fs::read(path)?;
            let shown = path.to_string_lossy().into_owned();
            let defs =
                replay::parse_defs(&shown, &text).map_err(|message| BenchError::Workflow {
                    path: shown.clone(),
                    message,
                })?;
            Workflows::Fixed(defs)
        }
        None => Workflows::OfEachCommit,
    };
    let objects = tree::Objects::new(Arc::clone(&repo));
    let scratch = scratch_dir(options.scratch.as_deref())?;
    let setup = ReplaySetup {
        objects: &objects,
        cwd,
        repository: repository.clone(),
        model: options.content.clone(),
        speeds: options.speeds.clone(),
        store_dir: &scratch.path().join("replay"),
    };
    let started = Instant::now();
    let (totals, steps, commits) = replay::replay_runs(&setup, &runs, &workflows, None)?;
    let replay_ms = started.elapsed().as_secs_f64() * 1e3;
    let comparison = match &options.compare_key {
        Some(text) => {
            let key = key_param(text)?;
            check_compare_step(&steps, options.compare_step.as_deref(), text)?;
            let setup = ReplaySetup {
                store_dir: &scratch.path().join("compare"),
                ..setup
            };
            let key_override = KeyOverride {
                key,
                step: options.compare_step.clone(),
            };
            let (totals, steps, commits) =
                replay::replay_runs(&setup, &runs, &workflows, Some(key_override))?;
            Some(Comparison {
                key: text.clone(),
                step: options.compare_step.clone(),
                totals,
                steps,
                commits,
            })
        }
        None => None,
    };
    let bytes_are_estimates = steps.iter().any(|s| s.content != "real");
    Ok(BenchReport {
        repository,
        workflow_override: options
            .workflow
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
        default_branch: default,
        branches: options.branches,
        bytes_are_estimates,
        content_model: options.content.clone(),
        speeds: options.speeds.clone(),
        totals,
        steps,
        ms_per_commit: if runs.is_empty() {
            0.0
        } else {
            replay_ms / runs.len() as f64
        },
        commits,
        comparison,
        replay_ms,
    })
}
