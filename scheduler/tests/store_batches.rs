//! Group commit: calls that arrive while another one runs share its commit, each still
//! succeeds or fails alone (a failed or panicking call undoes only its own writes), and each
//! returns only once its writes are committed.

mod store_support;

use kiln_scheduler::store::prelude::*;
use kiln_scheduler::store::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store_support::*;

/// One store call's closure, sent to a thread of its own.
type Call = Box<dyn FnOnce(&mut dyn StoreTx) -> Result<()> + Send>;

/// Runs `first` in a call that holds the writer until `others` more calls wait for it, then
/// runs those calls; returns every call's result, first one first.
fn batch(
    store: &Arc<SqliteStore>,
    first: impl FnOnce(&mut dyn StoreTx) -> Result<()> + Send + 'static,
    others: Vec<Call>,
) -> Vec<std::thread::Result<Result<()>>> {
    let waiting_for = others.len();
    let (started, holding) = std::sync::mpsc::channel();
    let holder = {
        let store = store.clone();
        std::thread::spawn(move || {
            let inner = store.clone();
            store.write(move |tx| {
                first(tx)?;
                started.send(()).unwrap();
                let start = Instant::now();
                while inner.writers_waiting() < waiting_for {
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "the calls never came"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(())
            })
        })
    };
    holding.recv().unwrap();
    let rest: Vec<_> = others
        .into_iter()
        .map(|call| {
            let store = store.clone();
            std::thread::spawn(move || store.write(call))
        })
        .collect();
    std::iter::once(holder)
        .chain(rest)
        .map(|t| t.join())
        .collect()
}

#[test]
fn calls_waiting_for_the_writer_share_one_commit_and_a_failed_one_undoes_only_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let before = store.commits();
    let results = batch(
        &store,
        |tx| tx.submit("first", &[new_run("first")], &[], T0).map(drop),
        vec![
            Box::new(|tx| {
                tx.submit("failing", &[new_run("failing")], &[], T0)?;
                Err(StoreError::Invalid("this call fails".into()))
            }),
            Box::new(|tx| tx.submit("third", &[new_run("third")], &[], T0).map(drop)),
        ],
    );
    let results: Vec<Result<()>> = results.into_iter().map(|r| r.unwrap()).collect();
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(&results[1], Err(StoreError::Invalid(m)) if m == "this call fails"),
        "{:?}",
        results[1]
    );
    assert!(results[2].is_ok(), "{:?}", results[2]);
    assert_eq!(
        store.commits() - before,
        1,
        "the three calls shared one commit"
    );

    let mut names: Vec<String> = store
        .list_runs(10)
        .unwrap()
        .into_iter()
        .map(|r| r.workflow_name)
        .collect();
    names.sort();
    assert_eq!(names, ["first", "third"]);
    assert!(store.find_submission("failing").unwrap().is_none());
    // What the committed calls wrote is in the database file's log, for any connection.
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.list_runs(10).unwrap().len(), 2);
}

#[test]
fn a_call_that_panics_in_a_batch_undoes_its_writes_and_the_store_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let results = batch(
        &store,
        |tx| tx.submit("first", &[new_run("first")], &[], T0).map(drop),
        vec![Box::new(|tx| {
            tx.submit("panics", &[new_run("panics")], &[], T0)?;
            panic!("a bug in a call");
        })],
    );
    assert!(results[0].as_ref().unwrap().is_ok());
    assert!(results[1].is_err(), "the panic reaches its caller");
    assert!(store.find_submission("first").unwrap().is_some());
    assert!(store.find_submission("panics").unwrap().is_none());
    // The writer is neither stuck nor poisoned.
    run(&store, "after");
    assert!(store.find_submission("after").unwrap().is_some());
}
