//! A dry run cannot expand a matrix computed from needed jobs' outputs: with
//! `defer_matrices_from_needs` such a job is reported as deferred instead of failing on the
//! empty output, and the rest of the graph goes on.

mod support;

use kiln_scheduler::{Engine, EngineEvent, EngineOptions};
use support::{ok, spec, Driver};

const WORKFLOW: &str = "on: push
jobs:
  setup:
    runs-on: ubuntu-latest
    outputs:
      targets: ${{ steps.s.outputs.targets }}
    steps:
      - id: s
        run: echo
  build:
    needs: setup
    runs-on: ${{ matrix.os }}
    strategy:
      matrix:
        os: ${{ fromJSON(needs.setup.outputs.targets) }}
    steps:
      - run: echo
  whole:
    needs: setup
    runs-on: ubuntu-latest
    strategy:
      matrix: ${{ fromJSON(needs.setup.outputs.targets) }}
    steps:
      - run: echo
  static:
    needs: setup
    runs-on: ubuntu-latest
    strategy:
      matrix:
        n: [1, 2]
    steps:
      - run: echo ${{ matrix.n }}
  after:
    needs: [build, whole]
    runs-on: ubuntu-latest
    steps:
      - run: echo
";

#[test]
fn matrices_from_needs_are_deferred_and_dependants_still_run() {
    let engine = Engine::with_options(
        spec(WORKFLOW),
        EngineOptions {
            defer_matrices_from_needs: true,
        },
    )
    .expect("engine starts");
    let run = Driver::new(|_| ok()).drive(engine);
    assert!(!run.ran("build") && !run.ran("whole"), "{:?}", run.names());
    assert!(
        run.ran("static (1)") && run.ran("static (2)"),
        "{:?}",
        run.names()
    );
    assert!(run.ran("after"), "{:?}", run.names());
    assert_eq!(run.conclusion("build"), "success");
    let deferred: Vec<(&str, &str)> = run
        .events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::JobDeferred { job_id, reason, .. } => {
                Some((job_id.as_str(), reason.as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(deferred.len(), 2, "{:?}", run.events);
    assert_eq!(deferred[0].0, "build");
    assert!(
        deferred[0]
            .1
            .contains("${{ fromJSON(needs.setup.outputs.targets) }}"),
        "{}",
        deferred[0].1
    );
    assert!(run
        .job("build")
        .message
        .as_deref()
        .is_some_and(|m| m.contains("known only when")));
}

#[test]
fn without_the_option_an_empty_output_fails_the_matrix_as_on_github() {
    let run = Driver::new(|_| ok()).run(spec(WORKFLOW));
    assert_eq!(run.conclusion("build"), "failure");
    assert!(run.events.iter().any(
        |e| matches!(e, EngineEvent::JobFailedToStart { error, .. } if error.contains("fromJson"))
    ));
    assert!(!run
        .events
        .iter()
        .any(|e| matches!(e, EngineEvent::JobDeferred { .. })));
}
