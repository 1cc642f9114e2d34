//! A job's log lines between the executor and AppendLogs: numbered from 1 per attempt, sent in
//! batches of at most 1 MiB or after 1 s, kept until the scheduler acknowledges them, and sent
//! again from the first unacknowledged line after a failure. The scheduler ignores lines it
//! already stored, so a resent batch never duplicates a line.
//!
//! Memory is bounded: while the scheduler cannot be reached, lines beyond
//! [`MAX_PENDING_BYTES`] are counted instead of kept, and one numbered line says how many were
//! dropped once there is room again.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use kiln_proto::v1 as pb;

/// The most a batch may weigh: the contract's 1 MiB, less room for the request's framing.
pub(crate) const MAX_BATCH_BYTES: usize = (1 << 20) - 4096;
/// A line is sent at the latest this long after it was produced.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_secs(1);
/// Longer lines are cut: one line must always fit a batch, and no log reader wants 1 MiB lines.
pub(crate) const MAX_LINE_BYTES: usize = 64 << 10;
/// Unacknowledged lines kept in memory at most.
pub(crate) const MAX_PENDING_BYTES: usize = 64 << 20;
/// What a line costs in a batch beyond its text (sequence, step, time, field tags).
const LINE_OVERHEAD: usize = 32;

struct Pending {
    line: pb::LogLine,
    at: Instant,
}

fn weight(line: &pb::LogLine) -> usize {
    line.text.len() + LINE_OVERHEAD
}

#[derive(Default)]
pub(crate) struct LogBuffer {
    /// Unacknowledged lines, oldest first, with consecutive sequence numbers.
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    /// The highest sequence number given to a line (0: none yet).
    last_seq: u64,
    /// Lines dropped for lack of room and not yet announced.
    dropped: u64,
}

impl LogBuffer {
    /// Takes one line of the job's output. `step_index` is -1 for the runner's own messages.
    pub(crate) fn push(&mut self, step_index: i32, unix_ms: i64, text: &str, now: Instant) {
        self.announce_drops(step_index, now, false);
        if self.dropped > 0 || self.pending_bytes >= MAX_PENDING_BYTES {
            self.dropped += 1;
            return;
        }
        self.append(step_index, unix_ms, truncate(text), now);
    }

    fn append(&mut self, step_index: i32, unix_ms: i64, text: String, now: Instant) {
        self.last_seq += 1;
        let line = pb::LogLine {
            seq: self.last_seq,
            step_index,
            unix_ms,
            text,
        };
        self.pending_bytes += weight(&line);
        self.pending.push_back(Pending { line, at: now });
    }

    /// Once half of the room is free again (or the job is over: `force`), one line says how
    /// many lines were lost.
    fn announce_drops(&mut self, step_index: i32, now: Instant, force: bool) {
        if self.dropped > 0 && (force || self.pending_bytes <= MAX_PENDING_BYTES / 2) {
            let text = format!(
                "##[warning]kiln: {} log lines were dropped while the scheduler could not be reached",
                self.dropped
            );
            self.dropped = 0;
            let unix_ms = super::convert::unix_ms(SystemTime::now());
            self.append(step_index, unix_ms, text, now);
        }
    }

    /// When the next batch is due: at once when a full batch waits, else one second after
    /// the oldest unacknowledged line. `None`: nothing to send.
    pub(crate) fn due_at(&self) -> Option<Instant> {
        let oldest = self.pending.front()?;
        if self.pending_bytes >= MAX_BATCH_BYTES {
            return Some(oldest.at);
        }
        Some(oldest.at + FLUSH_AFTER)
    }

    /// The next batch: consecutive lines from the first unacknowledged one, under the size
    /// limit.
    pub(crate) fn batch(&self) -> Vec<pb::LogLine> {
        let mut bytes = 0;
        let mut lines = Vec::new();
        for pending in &self.pending {
            bytes += weight(&pending.line);
            if bytes > MAX_BATCH_BYTES && !lines.is_empty() {
                break;
            }
            lines.push(pending.line.clone());
        }
        lines
    }

    /// The scheduler holds every line up to `acked_seq`.
    pub(crate) fn ack(&mut self, acked_seq: u64, now: Instant) {
        while let Some(front) = self.pending.front() {
            if front.line.seq > acked_seq {
                break;
            }
            self.pending_bytes -= weight(&front.line);
            self.pending.pop_front();
        }
        self.announce_drops(-1, now, false);
    }

    /// The job is over: a pending announcement of dropped lines gets its line now.
    pub(crate) fn close(&mut self, now: Instant) {
        self.announce_drops(-1, now, true);
    }

    /// Every line produced is acknowledged (and no drop is left to announce).
    pub(crate) fn is_flushed(&self) -> bool {
        self.pending.is_empty() && self.dropped == 0
    }

    /// Whether every line up to `seq` is acknowledged.
    pub(crate) fn acked_through(&self, seq: u64) -> bool {
        self.pending.front().is_none_or(|p| p.line.seq > seq)
    }

    /// The highest sequence number given to a line: CompleteJob's `last_log_seq`.
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_LINE_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_LINE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [line cut at {MAX_LINE_BYTES} bytes]", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(lines: &[pb::LogLine]) -> Vec<u64> {
        lines.iter().map(|l| l.seq).collect()
    }

    #[test]
    fn lines_are_numbered_batched_and_resent_from_the_first_unacked() {
        let start = Instant::now();
        let mut logs = LogBuffer::default();
        assert_eq!(logs.due_at(), None);
        for i in 0..5 {
            logs.push(0, 0, &format!("line {i}"), start);
        }
        assert_eq!(logs.due_at(), Some(start + FLUSH_AFTER));
        assert_eq!(seqs(&logs.batch()), [1, 2, 3, 4, 5]);
        // The reply was lost: the same lines go again, with the same numbers.
        assert_eq!(seqs(&logs.batch()), [1, 2, 3, 4, 5]);
        logs.ack(3, start);
        logs.push(1, 0, "line 5", start);
        assert_eq!(seqs(&logs.batch()), [4, 5, 6]);
        logs.ack(6, start);
        assert!(logs.is_flushed());
        assert_eq!(logs.last_seq(), 6);
    }

    #[test]
    fn batches_stay_under_the_limit_and_a_full_batch_is_due_at_once() {
        let start = Instant::now();
        let mut logs = LogBuffer::default();
        let big = "x".repeat(200 << 10);
        for _ in 0..20 {
            logs.push(0, 0, &big, start);
        }
        assert_eq!(logs.due_at(), Some(start));
        let batch = logs.batch();
        let bytes: usize = batch.iter().map(weight).sum();
        assert!(bytes <= MAX_BATCH_BYTES, "{bytes}");
        // Long lines were cut, so many fit.
        assert!(batch.len() >= 15, "{}", batch.len());
        assert!(batch[0].text.ends_with("bytes]"));
    }

    #[test]
    fn lines_beyond_the_memory_bound_are_counted_then_announced() {
        let start = Instant::now();
        let mut logs = LogBuffer::default();
        let line = "y".repeat(MAX_LINE_BYTES);
        let fitting = MAX_PENDING_BYTES / (MAX_LINE_BYTES + LINE_OVERHEAD) + 1;
        for _ in 0..fitting + 10 {
            logs.push(0, 0, &line, start);
        }
        let kept = logs.last_seq();
        assert_eq!(kept as usize, fitting);
        logs.ack(kept, start);
        // The announcement follows the kept lines, numbered next.
        let batch = logs.batch();
        assert_eq!(seqs(&batch), [kept + 1]);
        assert!(
            batch[0].text.contains("10 log lines were dropped"),
            "{}",
            batch[0].text
        );
    }
}
