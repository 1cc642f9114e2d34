//! Job summaries (`GITHUB_STEP_SUMMARY`): GitHub shows them on the run page; `kiln run` prints
//! each job's summary after the result table, between delimiter lines, and with
//! `--summary-dir DIR` also writes them to `DIR/<workflow>/<job>.md`. Step summaries arrive
//! masked and within GitHub's 1 MiB limit per step (the executor refuses larger ones with an
//! error annotation). Before them, one line per cache step says what it did.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

use super::report::RunReport;
use crate::cmd::output::human;
use kiln_workflow::{CacheSave, StepCache};

pub use kiln_runner::summary::job_summary;

/// `job`, or `workflow/job` when several workflows ran.
fn label(report: &RunReport, job: &str, several: bool) -> String {
    if several {
        format!("{}/{job}", report.workflow)
    } else {
        job.to_owned()
    }
}

/// Prints every job summary, delimited so it cannot be mistaken for log output.
pub fn print(reports: &[RunReport]) {
    let several = reports.len() > 1;
    let mut out = std::io::stdout().lock();
    for report in reports {
        for job in &report.jobs {
            let Some(summary) = &job.summary else {
                continue;
            };
            let name = label(report, &job.name, several);
            // A closed stdout only loses the text; the report and exit status still stand.
            let _ = write!(
                out,
                "\n──── summary of {name} ────\n{summary}──── end of summary of {name} ────\n"
            );
        }
    }
    let _ = out.flush();
}

/// One line per cache step of the run: `job / step: restore-key hit (deps-1), 12.0 MiB
/// restored; saved deps-2 (14.1 MiB, 2.0 MiB sent)`.
pub fn cache_lines(reports: &[RunReport]) -> Vec<String> {
    let several = reports.len() > 1;
    let mut lines = Vec::new();
    for report in reports {
        for job in &report.jobs {
            for step in &job.steps {
                if let Some(cache) = &step.cache {
                    let job = label(report, &job.name, several);
                    lines.push(format!("{job} / {}: {}", step.name, describe(cache)));
                }
            }
        }
    }
    lines
}

fn describe(cache: &StepCache) -> String {
    let mut parts = Vec::new();
    if let Some(lookup) = cache.lookup {
        let mut text = lookup.as_str().to_owned();
        match &cache.matched_key {
            Some(matched) if *matched != cache.key => text.push_str(&format!(" ({matched})")),
            _ if lookup == kiln_workflow::CacheLookup::Miss => {
                text.push_str(&format!(" ({})", cache.key))
            }
            _ => {}
        }
        if cache.restored_bytes > 0 {
            text.push_str(&format!(", {} restored", human(cache.restored_bytes)));
        }
        parts.push(text);
    }
    match cache.save {
        Some(CacheSave::Saved) => parts.push(format!(
            "saved {} ({}, {} sent)",
            cache.key,
            human(cache.saved_bytes),
            human(cache.uploaded_bytes)
        )),
        Some(CacheSave::Exists) => parts.push(format!("not saved: {} exists", cache.key)),
        Some(CacheSave::NothingToSave) => parts.push("not saved: no files".to_owned()),
        Some(CacheSave::Failed) => parts.push("save failed".to_owned()),
        Some(CacheSave::NotNeeded) | None => {}
    }
    parts.join("; ")
}

/// Prints the cache lines under the result table.
pub fn print_caches(reports: &[RunReport]) {
    let lines = cache_lines(reports);
    if lines.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\nCACHE");
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

/// A file name from a workflow or job name: path separators and other awkward characters
/// become `_`, so a name never leaves its folder.
fn file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || " -_.,()".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match cleaned.trim() {
        "" | "." | ".." => "_".to_owned(),
        trimmed => trimmed.to_owned(),
    }
}

/// Writes `DIR/<workflow>/<job>.md` for every job that has a summary.
pub fn write(dir: &Path, reports: &[RunReport]) -> anyhow::Result<()> {
    for report in reports {
        for job in &report.jobs {
            let Some(summary) = &job.summary else {
                continue;
            };
            let folder = dir.join(file_name(&report.workflow));
            std::fs::create_dir_all(&folder)
                .with_context(|| format!("cannot create {}", folder.display()))?;
            let path = folder.join(format!("{}.md", file_name(&job.name)));
            std::fs::write(&path, summary)
                .with_context(|| format!("cannot write the summary {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_leave_their_folder() {
        assert_eq!(file_name("build (3.12, linux)"), "build (3.12, linux)");
        assert_eq!(file_name("caller/inner"), "caller_inner");
        assert_eq!(file_name(".."), "_");
        assert_eq!(file_name("a\\b:c"), "a_b_c");
    }
}
