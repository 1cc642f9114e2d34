//! The scheduler's Prometheus metrics, served on `/metrics` beside the embedded cache's.
//! Gauges are read from the store at scrape time (jobs by state, queue depth per label set,
//! the oldest queued job's age, running runs, runners and their slots); counters count what
//! runners did since the scheduler started (jobs leased, completions by conclusion), so they
//! reset with the process as Prometheus counters may.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use kiln_cache::metrics::escape;
use kiln_workflow::Conclusion;

use crate::service::{Result, Scheduler};
use crate::store::prelude::*;

const CONCLUSIONS: [Conclusion; 4] = [
    Conclusion::Success,
    Conclusion::Failure,
    Conclusion::Cancelled,
    Conclusion::Skipped,
];

/// What runners did since the scheduler started.
#[derive(Debug, Default)]
pub struct Counters {
    leased: AtomicU64,
    completed: [AtomicU64; 4],
}

impl Counters {
    pub fn leased(&self) {
        self.leased.fetch_add(1, Ordering::Relaxed);
    }

    pub fn completed(&self, conclusion: Conclusion) {
        let index = CONCLUSIONS.iter().position(|c| *c == conclusion);
        if let Some(index) = index {
            self.completed[index].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `name{labels} value` lines under one HELP and TYPE header.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

impl Scheduler {
    /// The metrics in Prometheus' text format. Reads the store (call it off the async
    /// runtime's workers).
    pub fn metrics_text(&self) -> Result<String> {
        let store = self.store();
        let tallies = store.tallies()?;
        let label_sets = store.queued_label_sets()?;
        let runners = store.list_runners()?;
        let now = self.now();
        let mut out = String::new();
        family(
            &mut out,
            "kiln_scheduler_jobs",
            "gauge",
            "Unfinished jobs by state: waiting (needs not met), queued (for a runner), running (leased).",
            &[
                ("{state=\"waiting\"}".into(), tallies.waiting),
                ("{state=\"queued\"}".into(), tallies.queued),
                ("{state=\"running\"}".into(), tallies.running),
            ],
        );
        let depth: Vec<(String, u64)> = label_sets
            .iter()
            .map(|(labels, n)| (format!("{{labels=\"{}\"}}", escape(&labels.join(","))), *n))
            .collect();
        family(
            &mut out,
            "kiln_scheduler_queue_depth",
            "gauge",
            "Queued jobs per label set they ask for (lower case, sorted, comma-separated).",
            &depth,
        );
        let oldest = tallies.oldest_queued_ms.map_or(0, |ms| {
            u64::try_from(now.saturating_sub(ms)).unwrap_or(0) / 1000
        });
        family(
            &mut out,
            "kiln_scheduler_queue_oldest_seconds",
            "gauge",
            "How long the job longest in the queue has waited (0 when the queue is empty).",
            &[(String::new(), oldest)],
        );
        family(
            &mut out,
            "kiln_scheduler_runs_running",
            "gauge",
            "Runs not finished yet.",
            &[(String::new(), tallies.runs_running)],
        );
        let online: Vec<_> = runners
            .iter()
            .filter(|r| self.is_online(&r.runner))
            .collect();
        family(
            &mut out,
            "kiln_scheduler_runners",
            "gauge",
            "Registered runners, by whether they called within three heartbeat intervals.",
            &[
                ("{online=\"true\"}".into(), online.len() as u64),
                (
                    "{online=\"false\"}".into(),
                    (runners.len() - online.len()) as u64,
                ),
            ],
        );
        let (capacity, busy) = runners.iter().filter(|r| self.is_online(&r.runner)).fold(
            (0u64, 0u64),
            |(capacity, busy), r| {
                (
                    capacity + u64::from(r.runner.capacity),
                    busy + r.running_job_ids.len() as u64,
                )
            },
        );
        family(
            &mut out,
            "kiln_scheduler_runner_slots",
            "gauge",
            "Job slots of the online runners: all of them, and those running a job.",
            &[
                ("{state=\"total\"}".into(), capacity),
                ("{state=\"busy\"}".into(), busy),
            ],
        );
        let counters = self.counters();
        family(
            &mut out,
            "kiln_scheduler_jobs_leased_total",
            "counter",
            "Jobs given to runners since the scheduler started (a job retried after its runner was lost, or a poll repeated after a lost reply, counts again).",
            &[(String::new(), counters.leased.load(Ordering::Relaxed))],
        );
        let completed: Vec<(String, u64)> = CONCLUSIONS
            .iter()
            .zip(&counters.completed)
            .map(|(c, n)| {
                (
                    format!("{{conclusion=\"{}\"}}", c.as_str()),
                    n.load(Ordering::Relaxed),
                )
            })
            .collect();
        family(
            &mut out,
            "kiln_scheduler_jobs_completed_total",
            "counter",
            "Jobs runners completed since the scheduler started, by conclusion.",
            &completed,
        );
        Ok(out)
    }
}
