//! Concurrency groups and run cancellation.

mod support;
use kiln_scheduler::{Engine, EngineEvent};
use support::*;

#[test]
fn same_group_never_runs_together_and_is_case_insensitive() {
    let run = run_ok(
        "on: push
jobs:
  a: {runs-on: x, concurrency: Deploy, steps: [run: echo]}
  b: {runs-on: x, concurrency: deploy, steps: [run: echo]}
  free: {runs-on: x, steps: [run: echo]}
",
    );
    assert_eq!(run.snapshots[0], ["a", "free"]);
    assert!(!run.ran_together("a", "b"));
    assert_eq!(
        run.report_lines(),
        ["a=success", "b=success", "free=success"]
    );
    assert!(run.events.iter().any(|e| matches!(e, EngineEvent::LegPending { name, group, .. } if name == "b" && group == "deploy")));
}

#[test]
fn newer_pending_entry_cancels_the_older_pending_one() {
    let run = run_ok(
        "on: push
jobs:
  a: {runs-on: x, concurrency: g, steps: [run: echo]}
  b: {runs-on: x, concurrency: g, steps: [run: echo]}
  c: {runs-on: x, concurrency: G, steps: [run: echo]}
  after-b: {needs: b, runs-on: x, steps: [run: echo]}
",
    );
    assert_eq!(run.names(), ["a", "c"]);
    assert_eq!(
        run.report_lines(),
        ["a=success", "b=cancelled", "c=success", "after-b=skipped"]
    );
    assert_eq!(run.report.conclusion.as_str(), "cancelled");
    assert!(run
        .events
        .iter()
        .any(|e| matches!(e, EngineEvent::LegCancelled { name, reason, .. } if name == "b" && reason.contains("higher priority"))));
}

#[test]
fn cancel_in_progress_cancels_the_running_entry() {
    // a and x start together; x finishes first (LIFO), which makes c ready; c enters a's group
    // with cancel-in-progress, so the engine asks to cancel a.
    let run = Driver::new(|_| ok()).order(Order::Lifo).run(spec(
        "on: push
jobs:
  a: {runs-on: x, concurrency: {group: deploy}, steps: [run: echo]}
  x: {runs-on: x, steps: [run: echo]}
  c:
    needs: x
    runs-on: x
    concurrency: {group: deploy, cancel-in-progress: true}
    steps: [run: echo]
",
    ));
    assert_eq!(run.names(), ["a", "x", "c"]);
    assert_eq!(run.cancel_requests, ["a"]);
    assert!(!run.ran_together("a", "c"));
    assert_eq!(
        run.report_lines(),
        ["a=cancelled", "x=success", "c=success"]
    );
}

#[test]
fn cancel_in_progress_on_a_leg_not_yet_started_cancels_it_outright() {
    let run = run_ok(
        "on: push
jobs:
  a: {runs-on: x, concurrency: g, steps: [run: echo]}
  b: {runs-on: x, concurrency: {group: g, cancel-in-progress: '${{ github.event_name == ''push'' }}'}, steps: [run: echo]}
",
    );
    assert_eq!(run.names(), ["b"]);
    assert!(run.cancel_requests.is_empty());
    assert_eq!(run.report_lines(), ["a=cancelled", "b=success"]);
}

#[test]
fn matrix_legs_evaluate_their_own_group() {
    let run = run_ok(
        "on: push
jobs:
  t:
    runs-on: x
    concurrency: env-${{ matrix.env }}
    strategy: {matrix: {env: [prod, dev], n: [1, 2]}}
    steps: [run: echo]
",
    );
    assert_eq!(run.snapshots[0], ["t (prod, 1)", "t (dev, 1)"]);
    assert!(!run.ran_together("t (prod, 1)", "t (prod, 2)"));
    assert_eq!(
        run.report_lines(),
        [
            "t (prod, 1)=success",
            "t (prod, 2)=success",
            "t (dev, 1)=success",
            "t (dev, 2)=success"
        ]
    );
}

#[test]
fn job_group_equal_to_the_workflow_group_is_a_deadlock() {
    let run = run_ok(
        "on: push
concurrency: ci-${{ github.ref }}
jobs:
  a: {runs-on: x, concurrency: 'CI-${{ github.ref }}', steps: [run: echo]}
  b: {runs-on: x, concurrency: other, steps: [run: echo]}
",
    );
    assert_eq!(run.names(), ["b"]);
    assert_eq!(run.report_lines(), ["a=cancelled", "b=success"]);
    assert!(run
        .job("a")
        .message
        .as_deref()
        .is_some_and(|m| m.contains("deadlock")));
}

#[test]
fn empty_group_means_no_group() {
    let run = run_ok(
        "on: push
jobs:
  a: {runs-on: x, concurrency: '${{ vars.NONE }}', steps: [run: echo]}
  b: {runs-on: x, concurrency: '${{ vars.NONE }}', steps: [run: echo]}
",
    );
    assert_eq!(run.snapshots[0], ["a", "b"]);
}

#[test]
fn cancel_run_stops_running_legs_and_only_always_or_cancelled_jobs_run_after() {
    let run = Driver::new(|_| ok()).cancel_after(1).run(spec(
        "on: push
jobs:
  a: {runs-on: x, steps: [run: echo]}
  b: {runs-on: x, steps: [run: echo]}
  c: {needs: b, runs-on: x, steps: [run: echo]}
  report: {needs: b, if: always(), runs-on: x, steps: [run: echo]}
  on-cancel: {needs: b, if: cancelled(), runs-on: x, steps: [run: echo]}
  on-failure: {needs: b, if: failure(), runs-on: x, steps: [run: echo]}
",
    ));
    assert_eq!(run.cancel_requests, ["b"]);
    assert_eq!(run.names(), ["a", "b", "report", "on-cancel"]);
    assert_eq!(
        run.report_lines(),
        [
            "a=success",
            "b=cancelled",
            "c=cancelled",
            "report=success",
            "on-cancel=success",
            "on-failure=cancelled"
        ]
    );
    assert_eq!(run.report.conclusion.as_str(), "cancelled");
}

#[test]
fn cancel_run_keeps_always_jobs_running_and_cancels_queued_legs() {
    let run = Driver::new(|_| ok()).cancel_after(1).run(spec(
        "on: push
jobs:
  first: {runs-on: x, steps: [run: echo]}
  keep: {if: always(), runs-on: x, steps: [run: echo]}
  m:
    runs-on: x
    strategy: {max-parallel: 1, matrix: {v: [1, 2, 3]}}
    steps: [run: echo]
",
    ));
    assert_eq!(run.cancel_requests, ["m (1)"]);
    assert_eq!(
        run.report_lines(),
        [
            "first=success",
            "keep=success",
            "m (1)=cancelled",
            "m (2)=cancelled",
            "m (3)=cancelled"
        ]
    );
    assert!(!run.ran("m (2)"));
}

#[test]
fn cancel_run_is_idempotent_and_finishes_an_idle_engine() {
    let mut engine = Engine::new(spec(
        "on: push\njobs:\n  a: {runs-on: x, steps: [run: echo]}\n",
    ))
    .expect("engine");
    let first = engine.cancel_run();
    assert!(first.is_empty());
    assert!(engine.cancel_run().is_empty());
    // a was queued, never dispatched: cancelling concludes it at once.
    assert!(engine.poll().is_empty());
    assert!(engine.is_finished());
    assert_eq!(engine.report().jobs[0].conclusion.as_str(), "cancelled");
}

#[test]
fn completing_unknown_or_finished_legs_is_ignored() {
    let mut engine = Engine::new(spec(
        "on: push\njobs:\n  a: {runs-on: x, steps: [run: echo]}\n",
    ))
    .expect("engine");
    let dispatched = engine.poll();
    assert_eq!(dispatched.len(), 1);
    let leg = dispatched[0].leg;
    assert!(engine
        .complete(
            kiln_scheduler::LegId(999),
            kiln_scheduler::JobCompletion::new(kiln_workflow::Conclusion::Failure)
        )
        .is_empty());
    engine.complete(
        leg,
        kiln_scheduler::JobCompletion::new(kiln_workflow::Conclusion::Success),
    );
    engine.complete(
        leg,
        kiln_scheduler::JobCompletion::new(kiln_workflow::Conclusion::Failure),
    );
    assert!(engine.is_finished());
    assert_eq!(engine.report().conclusion.as_str(), "success");
}
