//! Counts for the scheduler's metrics, read at scrape time. Every query walks an index the
//! queue already has (`jobs(state, ...)`, `runs(state, num)`) over the unfinished rows only,
//! so a scrape costs the same however long the history is.

use super::error::Result;
use super::sql;
use super::sqlite::SqliteStore;
use super::types::{JobState, UnixMs};

/// What the store holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tallies {
    /// Jobs whose `needs` are not met yet.
    pub waiting: u64,
    pub queued: u64,
    /// Leased to a runner.
    pub running: u64,
    /// When the job longest in the queue entered it.
    pub oldest_queued_ms: Option<UnixMs>,
    pub runs_running: u64,
}

impl SqliteStore {
    pub fn tallies(&self) -> Result<Tallies> {
        self.read(|c| {
            let by_state: Vec<(i64, i64)> = sql::all(
                c,
                "SELECT state, count(*) FROM jobs WHERE state < 4 GROUP BY state",
                [],
                "counting jobs by state",
                |r| r.try_into(),
            )?;
            let mut tallies = Tallies::default();
            for (state, count) in by_state {
                let count = u64::try_from(count).unwrap_or(0);
                match JobState::from_code(state)? {
                    JobState::Waiting => tallies.waiting = count,
                    JobState::Queued => tallies.queued = count,
                    JobState::Running => tallies.running = count,
                    JobState::Done => {}
                }
            }
            tallies.oldest_queued_ms = sql::one(
                c,
                "SELECT min(queued_ms) FROM jobs WHERE state = 2",
                [],
                "finding the oldest queued job",
                |r| r.get::<_, Option<UnixMs>>(0),
            )?
            .flatten();
            tallies.runs_running = sql::one(
                c,
                "SELECT count(*) FROM runs WHERE state = 1",
                [],
                "counting running runs",
                |r| r.get::<_, i64>(0),
            )?
            .map_or(0, |n| u64::try_from(n).unwrap_or(0));
            Ok(tallies)
        })
    }
}
