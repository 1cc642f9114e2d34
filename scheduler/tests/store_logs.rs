//! Step reports and logs: idempotent appends, reading across compressed blocks and the
//! uncompressed tail while the job runs, after it ends and after a reopen.

mod store_support;

use kiln_scheduler::store::prelude::*;
use kiln_scheduler::store::*;
use kiln_workflow::Conclusion;
use store_support::*;

fn leased_job(store: &SqliteStore) -> Assignment {
    let run_id = run(store, "k");
    queue(store, &run_id, 0, &["linux"], T0);
    let (runner, _) = register(store, "r", &["linux"]);
    lease(store, &runner.id, "p", T0).unwrap()
}

fn lines(range: std::ops::RangeInclusive<u64>) -> Vec<LogLine> {
    range.map(line).collect()
}

/// (blocks, tail lines) of an attempt, read beside the store.
fn layout(dir: &std::path::Path, job_id: &str) -> (i64, i64) {
    let conn = rusqlite::Connection::open(dir.join("scheduler.db")).unwrap();
    let count = |table: &str| -> i64 {
        conn.query_row(
            &format!("SELECT count(*) FROM {table} WHERE job_id = ?1"),
            [job_id],
            |r| r.get(0),
        )
        .unwrap()
    };
    (count("log_blocks"), count("log_tail"))
}

#[test]
fn appended_lines_are_stored_once_and_gaps_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = leased_job(&store);
    let mut changes = store.subscribe_changes();
    changes.mark_unchanged();
    let ack = store
        .write(|tx| tx.append_logs(&a.runner_id, &a.job_ref, &lines(1..=10)))
        .unwrap();
    assert_eq!((ack.acked_seq, ack.appended), (10, 10));
    assert!(changes.has_changed().unwrap(), "new lines wake watchers");
    // A resent batch overlapping the stored lines adds only the new ones.
    let ack = store
        .write(|tx| tx.append_logs(&a.runner_id, &a.job_ref, &lines(5..=15)))
        .unwrap();
    assert_eq!((ack.acked_seq, ack.appended), (15, 5));
    let ack = store
        .write(|tx| tx.append_logs(&a.runner_id, &a.job_ref, &lines(1..=15)))
        .unwrap();
    assert_eq!((ack.acked_seq, ack.appended), (15, 0));

    let err = store
        .write(|tx| tx.append_logs(&a.runner_id, &a.job_ref, &lines(17..=20)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::LogGap {
                first: 17,
                held: 15,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("resend from line 16"), "{err}");
    let shuffled = vec![line(16), line(18)];
    assert!(store
        .write(|tx| tx.append_logs(&a.runner_id, &a.job_ref, &shuffled))
        .is_err());

    let read = store.read_logs(&a.job_ref.job_id, 1, 0, 1_000).unwrap();
    assert_eq!(read, lines(1..=15));
    assert_eq!(store.log_attempts(&a.job_ref.job_id).unwrap(), [(1, 15)]);

    let mut stale = a.job_ref.clone();
    stale.lease_id = "0".repeat(32);
    let err = store
        .write(|tx| tx.append_logs(&a.runner_id, &stale, &lines(16..=16)))
        .unwrap_err();
    assert!(matches!(err, StoreError::Stale { .. }), "{err}");
}

#[test]
fn logs_read_across_compressed_blocks_and_the_tail_while_running_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let total = 2 * LOG_BLOCK_LINES + 77;
    let a = {
        let store = open(dir.path());
        let a = leased_job(&store);
        // Batches of 64 fill the tail to exactly the block size.
        for start in (1..=total).step_by(64) {
            let batch = lines(start..=(start + 63).min(total));
            store
                .write(|tx| tx.append_logs(&a.runner_id, &a.job_ref, &batch))
                .unwrap();
        }
        let job_id = &a.job_ref.job_id;
        let (blocks, tail) = layout(dir.path(), job_id);
        assert_eq!(blocks, 2, "every {LOG_BLOCK_LINES} lines make a block");
        assert!(tail > 0, "the newest lines are still uncompressed");

        // While the job runs: everything, from inside a block, across the block boundary
        // into the tail, and a limited page.
        assert_eq!(
            store.read_logs(job_id, 1, 0, usize::MAX).unwrap(),
            lines(1..=total)
        );
        assert_eq!(
            store.read_logs(job_id, 1, 700, usize::MAX).unwrap(),
            lines(701..=total)
        );
        let boundary = 2 * LOG_BLOCK_LINES - 3;
        assert_eq!(
            store.read_logs(job_id, 1, boundary, 10).unwrap(),
            lines(boundary + 1..=boundary + 10)
        );
        assert!(store.read_logs(job_id, 1, total, 10).unwrap().is_empty());
        assert!(store.read_logs(job_id, 2, 0, 10).unwrap().is_empty());

        store
            .write(|tx| tx.complete_job(&a.runner_id, &a.job_ref, &success(total), T0 + 50))
            .unwrap();
        let (blocks, tail) = layout(dir.path(), job_id);
        assert_eq!(
            (blocks, tail),
            (3, 0),
            "the end of the job compresses the tail"
        );
        a
    };
    let store = open(dir.path());
    let job_id = &a.job_ref.job_id;
    assert_eq!(
        store.read_logs(job_id, 1, 0, usize::MAX).unwrap(),
        lines(1..=total)
    );
    assert_eq!(
        store.read_logs(job_id, 1, total - 5, 3).unwrap(),
        lines(total - 4..=total - 2)
    );
}

#[test]
fn stored_blocks_are_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = leased_job(&store);
    let batch = lines(1..=LOG_BLOCK_LINES);
    store
        .write(|tx| tx.append_logs(&a.runner_id, &a.job_ref, &batch))
        .unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("scheduler.db")).unwrap();
    let (raw_len, data): (i64, Vec<u8>) = conn
        .query_row("SELECT raw_len, data FROM log_blocks", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let text: usize = batch.iter().map(|l| l.text.len()).sum();
    assert!(raw_len as usize > text);
    assert!(
        data.len() * 4 < text,
        "{} bytes for {text} bytes of text",
        data.len()
    );
    let needle = batch[100].text.as_bytes();
    assert!(!data.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn a_lost_attempts_tail_is_sealed_and_the_next_attempt_logs_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = leased_job(&store);
    let job_id = first.job_ref.job_id.clone();
    store
        .write(|tx| tx.append_logs(&first.runner_id, &first.job_ref, &lines(1..=3)))
        .unwrap();
    store.write(|tx| tx.expire_leases(T0 + TTL)).unwrap();
    assert_eq!(layout(dir.path(), &job_id), (1, 0));
    let runner = &store.list_runners().unwrap()[0].runner;
    let second = lease(&store, &runner.id, "p2", T0 + TTL).unwrap();
    assert_eq!(second.job_ref.attempt, 2);
    let ack = store
        .write(|tx| tx.append_logs(&second.runner_id, &second.job_ref, &lines(1..=2)))
        .unwrap();
    assert_eq!(ack.acked_seq, 2);
    assert_eq!(store.read_logs(&job_id, 1, 0, 100).unwrap(), lines(1..=3));
    assert_eq!(store.read_logs(&job_id, 2, 0, 100).unwrap(), lines(1..=2));
    assert_eq!(store.log_attempts(&job_id).unwrap(), [(1, 3), (2, 2)]);
}

#[test]
fn step_reports_are_idempotent_per_attempt_index_and_phase() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = leased_job(&store);
    let started = StepReport {
        index: 0,
        phase: StepPhase::Started,
        step_id: "__run".into(),
        name: "Run make".into(),
        outcome: None,
        conclusion: None,
        unix_ms: T0 + 1,
    };
    let finished = StepReport {
        phase: StepPhase::Finished,
        outcome: Some(Conclusion::Failure),
        conclusion: Some(Conclusion::Success),
        unix_ms: T0 + 2,
        ..started.clone()
    };
    let ack = store
        .write(|tx| tx.report_step(&a.runner_id, &a.job_ref, &started))
        .unwrap();
    assert!(ack.new && !ack.cancel_requested);
    assert!(
        !store
            .write(|tx| tx.report_step(&a.runner_id, &a.job_ref, &started))
            .unwrap()
            .new
    );
    assert!(
        store
            .write(|tx| tx.report_step(&a.runner_id, &a.job_ref, &finished))
            .unwrap()
            .new
    );
    assert!(
        !store
            .write(|tx| tx.report_step(&a.runner_id, &a.job_ref, &finished))
            .unwrap()
            .new
    );
    assert_eq!(
        store.step_reports(&a.job_ref.job_id, 1).unwrap(),
        [started, finished.clone()]
    );
    // A report confirms the lease: losing it now counts an attempt.
    let expired = store.write(|tx| tx.expire_leases(T0 + TTL)).unwrap();
    assert!(expired[0].counted);
    let err = store
        .write(|tx| tx.report_step(&a.runner_id, &a.job_ref, &finished))
        .unwrap_err();
    assert!(matches!(err, StoreError::Stale { .. }), "{err}");
}
