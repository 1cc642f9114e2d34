//! What a queued job keeps and what its runner gets: the queue names the run's workflow text
//! instead of holding a copy per job, the service joins it in at lease time (also after a
//! restart, from the run's stored spec), and payloads queued by the previous schema, which
//! carry their text, still lease as they were.

mod service_support;

use kiln_scheduler::store::schema_version;
use service_support::*;

/// Long enough that a copy of it in a payload cannot be missed.
fn wide_workflow() -> String {
    let legs: Vec<String> = (0..40).map(|n| format!("leg-number-{n}")).collect();
    format!(
        "name: Wide
on: push
jobs:
  build:
    runs-on: linux
    strategy:
      matrix:
        n: [{}]
    steps:
      - run: echo ${{{{ matrix.n }}}}
      - run: echo a line only the workflow file holds
",
        legs.join(", ")
    )
}

fn queued_payloads(h: &Harness) -> Vec<Vec<u8>> {
    let conn = rusqlite::Connection::open(h.dir.path().join("scheduler.db")).unwrap();
    let mut stmt = conn.prepare("SELECT payload FROM job_payloads").unwrap();
    let payloads = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<Vec<Vec<u8>>>>()
        .unwrap();
    payloads
}

#[test]
fn queued_jobs_name_the_runs_text_and_get_it_when_leased_also_after_a_restart() {
    let text = wide_workflow();
    let mut h = Harness::new(&[(".github/workflows/wide.yml", &text)]);
    h.submit(&[]);
    let payloads = queued_payloads(&h);
    assert_eq!(payloads.len(), 40);
    for payload in &payloads {
        let payload = String::from_utf8_lossy(payload);
        assert!(
            !payload.contains("a line only the workflow file holds"),
            "a queued payload holds the workflow text: {payload}"
        );
        assert!(payload.len() < text.len() * 2, "{payload}");
    }

    let runner = h.runner("r", &["linux"]);
    let job = h.lease(&runner).expect("a leg");
    assert_eq!(job.payload.workflow_yaml, text);
    assert_eq!(job.payload.workflow_path, ".github/workflows/wide.yml");

    // A restart starts with no text in memory: it is read from the run's stored spec.
    h.restart();
    let runner = h.runner("r2", &["linux"]);
    let job = h.lease(&runner).expect("a leg");
    assert_eq!(job.payload.workflow_yaml, text);
}

#[test]
fn a_database_of_the_previous_schema_upgrades_and_its_queued_jobs_keep_their_text() {
    let text = wide_workflow();
    let mut h = Harness::new(&[(".github/workflows/wide.yml", &text)]);
    let run_id = h.submit(&[]);
    // Make the database what schema version 1 left: payloads carrying the workflow text, no
    // matrix column, and only the first migration recorded.
    h.sched = None;
    {
        let conn = rusqlite::Connection::open(h.dir.path().join("scheduler.db")).unwrap();
        let rows: Vec<(String, Vec<u8>)> = conn
            .prepare("SELECT job_id, payload FROM job_payloads")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for (job_id, payload) in rows {
            let mut value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            let object = value.as_object_mut().unwrap();
            object.remove("workflow_text");
            object.insert(
                "workflow_yaml".into(),
                serde_json::Value::from(text.clone()),
            );
            conn.execute(
                "UPDATE job_payloads SET payload = ?2 WHERE job_id = ?1",
                rusqlite::params![job_id, serde_json::to_vec(&value).unwrap()],
            )
            .unwrap();
        }
        conn.execute_batch(
            "ALTER TABLE jobs DROP COLUMN matrix; DELETE FROM schema_migrations WHERE version > 1;",
        )
        .unwrap();
    }
    h.open();

    let conn = rusqlite::Connection::open(h.dir.path().join("scheduler.db")).unwrap();
    let versions: Vec<u32> = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(versions, (1..=schema_version()).collect::<Vec<_>>());
    assert_eq!(h.run(&run_id).workflow_name, "Wide");
    assert_eq!(h.jobs(&run_id).len(), 40);

    let runner = h.runner("r", &["linux"]);
    let job = h.lease(&runner).expect("a leg queued before the upgrade");
    assert_eq!(job.payload.workflow_yaml, text);
    assert_eq!(job.payload.job_path, "build");
}
