//! The store's durability: migrations, reopening, idempotent submissions, op logs, events,
//! the data directory's lock and permissions, and tokens kept only as hashes.

mod store_support;

use kiln_scheduler::store::prelude::*;
use kiln_scheduler::store::*;
use kiln_workflow::Conclusion;
use std::os::unix::fs::PermissionsExt;
use store_support::*;

fn applied_versions(dir: &std::path::Path) -> Vec<u32> {
    let conn = rusqlite::Connection::open(dir.join("scheduler.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap();
    let versions = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<Vec<u32>>>()
        .unwrap();
    versions
}

#[test]
fn migrations_apply_from_empty_and_a_reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (run_id, job_id, token) = {
        let store = open(dir.path());
        let run_id = run(&store, "submit-1");
        store
            .write(|tx| {
                tx.append_op(&run_id, b"op one")?;
                tx.append_op(&run_id, b"op two")?;
                tx.append_event(&run_id, b"event", T0)
            })
            .unwrap();
        let job_id = queue(&store, &run_id, 0, &["linux"], T0);
        let (runner, token) = register(&store, "builder", &["linux"]);
        let assignment = lease(&store, &runner.id, "poll-1", T0).unwrap();
        store
            .write(|tx| {
                tx.append_logs(
                    &assignment.runner_id,
                    &assignment.job_ref,
                    &[line(1), line(2)],
                )
            })
            .unwrap();
        (run_id, job_id, token)
    };
    let known = schema_version();
    assert_eq!(
        applied_versions(dir.path()),
        (1..=known).collect::<Vec<_>>()
    );

    let store = open(dir.path());
    assert_eq!(
        applied_versions(dir.path()),
        (1..=known).collect::<Vec<_>>()
    );
    let run = store.get_run(&run_id).unwrap().unwrap();
    assert_eq!(run.workflow_name, "ci");
    assert_eq!(run.state, RunState::Running);
    assert_eq!(
        store.run_spec(&run_id).unwrap(),
        StoredSpec {
            format: 1,
            bytes: b"{\"workflow\":\"ci\"}".to_vec()
        }
    );
    let ops: Vec<Vec<u8>> = store
        .run_ops(&run_id)
        .unwrap()
        .into_iter()
        .map(|o| o.op)
        .collect();
    assert_eq!(ops, [b"op one".to_vec(), b"op two".to_vec()]);
    assert_eq!(store.read_events(0, &[], 10).unwrap().len(), 1);
    let job = store.get_job(&job_id).unwrap().unwrap();
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.runner_name, "builder");
    assert_eq!(job.runs_on, ["linux"]);
    assert_eq!(
        store.read_logs(&job_id, 1, 0, 100).unwrap(),
        [line(1), line(2)]
    );
    let runner = store.authenticate_runner(&token).unwrap().unwrap();
    assert_eq!(runner.name, "builder");
    // Ids keep growing after a reopen: a new run never reuses an old id.
    let second = store_support::run(&store, "submit-2");
    assert_ne!(second, run_id);
}

#[test]
fn a_database_of_a_newer_kiln_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let newer = schema_version() + 1;
    let conn = rusqlite::Connection::open(dir.path().join("scheduler.db")).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations(version, applied_ms) VALUES (?1, 0)",
        [newer],
    )
    .unwrap();
    drop(conn);
    let err = SqliteStore::open(dir.path(), T0).unwrap_err();
    assert!(
        matches!(err, StoreError::TooNew { found, .. } if found == newer),
        "{err}"
    );
    assert!(err.to_string().contains("newer kiln"), "{err}");
}

#[test]
fn a_repeated_submission_returns_the_first_calls_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let runs = [new_run("ci"), new_run("lint")];
    let notices = vec!["workflow x skipped".to_string()];
    let first = store
        .write(|tx| tx.submit("key-1", &runs, &notices, T0))
        .unwrap();
    assert!(first.created);
    assert_eq!(first.runs.len(), 2);
    assert_eq!(first.runs[1].workflow_name, "lint");

    let again = store
        .write(|tx| tx.submit("key-1", &runs, &[], T0 + 5))
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.submission_id, first.submission_id);
    assert_eq!(again.runs, first.runs);
    assert_eq!(again.notices, notices);
    assert_eq!(
        store.find_submission("key-1").unwrap().unwrap().runs,
        first.runs
    );
    assert_eq!(store.list_runs(100).unwrap().len(), 2);

    let other = store
        .write(|tx| tx.submit("key-2", &runs[..1], &[], T0))
        .unwrap();
    assert!(other.created);
    let unkeyed = store
        .write(|tx| tx.submit("", &runs[..1], &[], T0))
        .unwrap();
    let unkeyed_again = store
        .write(|tx| tx.submit("", &runs[..1], &[], T0))
        .unwrap();
    assert_ne!(unkeyed.runs[0].id, unkeyed_again.runs[0].id);
    let newest: Vec<String> = store
        .list_runs(2)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        newest,
        [unkeyed_again.runs[0].id.clone(), unkeyed.runs[0].id.clone()]
    );
}

#[test]
fn unfinished_runs_are_listed_for_replay_with_their_ops_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = run(&store, "a");
    let b = run(&store, "b");
    store
        .write(|tx| {
            for i in 0..5u8 {
                tx.append_op(&a, &[i])?;
                tx.append_op(&b, &[100 + i])?;
            }
            tx.finish_run(&b, Conclusion::Success, T0 + 9)
        })
        .unwrap();
    let unfinished: Vec<String> = store
        .unfinished_runs()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(unfinished, std::slice::from_ref(&a));
    let ops = store.run_ops(&a).unwrap();
    assert_eq!(
        ops.iter().map(|o| o.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(
        ops.iter().map(|o| o.op[0]).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    let done = store.get_run(&b).unwrap().unwrap();
    assert_eq!(
        (done.state, done.conclusion),
        (RunState::Done, Some(Conclusion::Success))
    );
    assert_eq!(done.finished_ms, Some(T0 + 9));
    assert!(matches!(
        store.write(|tx| tx.append_op("999", b"x")),
        Err(StoreError::NotFound { what: "run", .. })
    ));
}

#[test]
fn a_failed_transaction_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let result: Result<()> = store.write(|tx| {
        let sub = tx.submit("k", &[new_run("ci")], &[], T0)?;
        tx.append_op(&sub.runs[0].id, b"op")?;
        Err(StoreError::Invalid("stop".into()))
    });
    assert!(result.is_err());
    assert!(store.list_runs(10).unwrap().is_empty());
    assert!(store.find_submission("k").unwrap().is_none());
}

#[test]
fn events_read_after_a_sequence_number_for_given_runs_and_wake_watchers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = run(&store, "a");
    let b = run(&store, "b");
    let mut changes = store.subscribe_changes();
    changes.mark_unchanged();
    let mut seqs = Vec::new();
    for i in 0..6u8 {
        let target = if i % 2 == 0 { &a } else { &b };
        seqs.push(store.write(|tx| tx.append_event(target, &[i], T0)).unwrap());
    }
    assert!(changes.has_changed().unwrap(), "an event wakes watchers");
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
    assert_eq!(store.last_event_seq().unwrap(), seqs[5]);

    let of_a = store
        .read_events(seqs[1], std::slice::from_ref(&a), 100)
        .unwrap();
    assert_eq!(
        of_a.iter().map(|e| e.payload[0]).collect::<Vec<_>>(),
        [2, 4]
    );
    assert!(of_a.iter().all(|e| e.run_id == a));
    let both = store
        .read_events(seqs[0], &[b.clone(), a.clone()], 3)
        .unwrap();
    assert_eq!(
        both.iter().map(|e| e.payload[0]).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let all = store.read_events(0, &[], 100).unwrap();
    assert_eq!(all.len(), 6);
    assert!(store.read_events(seqs[5], &[], 100).unwrap().is_empty());
}

#[test]
fn a_second_open_of_the_data_directory_is_refused_while_the_first_lives() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let run_id = run(&store, "k");
    let err = SqliteStore::open(dir.path(), T0).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("another kiln scheduler"), "{message}");
    assert!(
        message.contains(&std::process::id().to_string()),
        "{message}"
    );

    // Another process sees the lock too (flock(1) asks for the same lock; -E sets its exit
    // code on conflict).
    let lock = dir.path().join("scheduler.lock");
    let status = std::process::Command::new("flock")
        .args(["-n", "-E", "42"])
        .arg(&lock)
        .arg("true")
        .status()
        .expect("run flock(1)");
    assert_eq!(status.code(), Some(42));

    // The refused open changed nothing; once the first store is gone, the next one opens.
    assert!(store.get_run(&run_id).unwrap().is_some());
    drop(store);
    let reopened = open(dir.path());
    assert!(reopened.get_run(&run_id).unwrap().is_some());
}

#[test]
fn files_and_directories_are_private() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let store = open(&dir);
    run(&store, "k");
    let (_, created) = store
        .data_dir()
        .load_or_create_token("registration-token")
        .unwrap();
    assert!(created);
    let snapshot = store.data_dir().snapshot_path(&"ab".repeat(32)).unwrap();
    let artifacts = store.data_dir().run_artifacts_dir("1").unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(snapshot.parent().unwrap()), 0o700);
    assert_eq!(mode(&artifacts), 0o700);
    assert_eq!(mode(artifacts.parent().unwrap()), 0o700);
    for file in [
        "scheduler.db",
        "scheduler.db-wal",
        "scheduler.lock",
        "registration-token",
    ] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    assert!(store.data_dir().snapshot_path("../../etc/passwd").is_err());
    assert!(store.data_dir().run_artifacts_dir("../1").is_err());
}

#[test]
fn a_token_file_is_created_once_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (token, created) = store
        .data_dir()
        .load_or_create_token("control-token")
        .unwrap();
    assert!(created);
    assert_eq!(token.len(), 64);
    let (again, created) = store
        .data_dir()
        .load_or_create_token("control-token")
        .unwrap();
    assert!(!created);
    assert_eq!(again, token);
}

fn bytes_contain(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn tokens_are_kept_only_as_hashes() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (runner, runner_token) = register(&store, "builder", &["linux"]);
    let registration = new_token().unwrap();
    let control = new_token().unwrap();
    store
        .write(|tx| {
            tx.set_token(TokenKind::Registration, &registration, T0)?;
            tx.set_token(TokenKind::Control, &control, T0)
        })
        .unwrap();

    assert!(store
        .check_token(TokenKind::Registration, &registration)
        .unwrap());
    assert!(store.check_token(TokenKind::Control, &control).unwrap());
    assert!(!store
        .check_token(TokenKind::Control, &registration)
        .unwrap());
    assert!(!store.check_token(TokenKind::Control, "").unwrap());
    assert_eq!(
        store
            .authenticate_runner(&runner_token)
            .unwrap()
            .unwrap()
            .id,
        runner.id
    );
    let forged = format!("{}.{}", runner.id, "0".repeat(64));
    assert!(store.authenticate_runner(&forged).unwrap().is_none());
    assert!(store.authenticate_runner("garbage").unwrap().is_none());

    let mut files = Vec::new();
    for name in ["scheduler.db", "scheduler.db-wal"] {
        files.extend(std::fs::read(dir.path().join(name)).unwrap_or_default());
    }
    for raw in [&runner_token, &registration, &control] {
        assert!(
            !bytes_contain(&files, raw.as_bytes()),
            "a raw token is on disk"
        );
        // What is stored is its hash (so the search above looked in the right place).
        let hash = sha2::Sha256::digest(raw.as_bytes());
        assert!(
            bytes_contain(&files, &hash),
            "the token's hash is not on disk"
        );
    }

    // Registering the same name again replaces the runner; the old token stops working.
    let (replacement, new_token) = register(&store, "builder", &["linux", "gpu"]);
    assert_ne!(replacement.id, runner.id);
    assert!(store.authenticate_runner(&runner_token).unwrap().is_none());
    assert_eq!(
        store
            .authenticate_runner(&new_token)
            .unwrap()
            .unwrap()
            .labels,
        ["linux", "gpu"]
    );
    assert_eq!(store.list_runners().unwrap().len(), 1);
}

#[test]
fn snapshots_and_artifacts_are_recorded_and_artifacts_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let digest = "cd".repeat(32);
    assert!(store
        .write(|tx| tx.record_snapshot(&digest, 77, T0))
        .unwrap());
    assert!(!store
        .write(|tx| tx.record_snapshot(&digest, 77, T0 + 1))
        .unwrap());
    assert_eq!(store.snapshot_size(&digest).unwrap(), Some(77));
    assert_eq!(store.snapshot_size(&"ef".repeat(32)).unwrap(), None);

    let run_id = run(&store, "k");
    store
        .write(|tx| {
            tx.record_artifact(&run_id, "old", 1, T0)?;
            tx.record_artifact(&run_id, "new", 2, T0 + 1_000)
        })
        .unwrap();
    let expired = store.write(|tx| tx.expire_artifacts(T0 + 500)).unwrap();
    assert_eq!(
        expired.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        ["old"]
    );
    let left: Vec<String> = store
        .list_artifacts(&run_id)
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(left, ["new"]);
}

/// A database written before the jobs' matrix column (schema 1) opens with its jobs intact:
/// migration 2 adds the column, and old jobs read as having no matrix.
#[test]
fn a_database_of_schema_one_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (run_id, job_id) = {
        let store = open(dir.path());
        let run_id = run(&store, "old");
        let job_id = queue(&store, &run_id, 0, &["linux"], T0);
        (run_id, job_id)
    };
    {
        let conn = rusqlite::Connection::open(dir.path().join("scheduler.db")).unwrap();
        conn.execute_batch(
            "ALTER TABLE jobs DROP COLUMN matrix; DELETE FROM schema_migrations WHERE version > 1;",
        )
        .unwrap();
    }
    assert_eq!(applied_versions(dir.path()), [1]);
    let store = open(dir.path());
    assert_eq!(
        applied_versions(dir.path()),
        (1..=schema_version()).collect::<Vec<_>>()
    );
    let jobs = store.jobs_of_run(&run_id).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job_id, job_id);
    assert_eq!(jobs[0].matrix, None);
    assert_eq!(jobs[0].state, JobState::Queued);
}
