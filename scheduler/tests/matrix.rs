//! Matrix legs: names, strategy context, fail-fast, max-parallel, deferred matrices, outputs.

mod support;
use kiln_scheduler::EngineEvent;
use support::*;

const TWO_BY_TWO: &str = "on: push
jobs:
  test:
    runs-on: ${{ matrix.os }}
    strategy:
      matrix:
        os: [linux, mac]
        py: ['3.11', '3.12']
    steps: [run: echo]
";

#[test]
fn legs_in_matrix_order_with_display_names() {
    let run = run_ok(TWO_BY_TWO);
    assert_eq!(
        run.names(),
        [
            "test (linux, 3.11)",
            "test (linux, 3.12)",
            "test (mac, 3.11)",
            "test (mac, 3.12)"
        ]
    );
    assert_eq!(run.max_running, 4);
    assert_eq!(run.dispatch("test (mac, 3.11)").runs_on, ["mac"]);
    assert_eq!(run.dispatch("test (mac, 3.11)").job_id, "test");
    let matrix = run
        .dispatch("test (linux, 3.12)")
        .matrix
        .clone()
        .expect("a matrix");
    assert_eq!(
        kiln_workflow::Value::object(matrix).to_json(),
        serde_json::json!({"os": "linux", "py": "3.12"})
    );
    assert_eq!(run.report.jobs.len(), 4);
    assert_eq!(run.report.jobs[2].name, "test (mac, 3.11)");
}

#[test]
fn strategy_context_per_leg() {
    let run = run_ok(TWO_BY_TWO);
    let strategy = run
        .dispatch("test (mac, 3.11)")
        .contexts
        .get("strategy")
        .expect("strategy")
        .to_json();
    assert_eq!(
        strategy,
        serde_json::json!({"fail-fast": true, "job-index": 2, "job-total": 4, "max-parallel": 4})
    );
    let plain = run_ok("on: push\njobs:\n  a: {runs-on: x, steps: [run: echo]}\n");
    let strategy = plain
        .dispatch("a")
        .contexts
        .get("strategy")
        .expect("strategy")
        .to_json();
    assert_eq!(
        strategy,
        serde_json::json!({"fail-fast": true, "job-index": 0, "job-total": 1, "max-parallel": 1})
    );
    assert_eq!(
        plain
            .dispatch("a")
            .contexts
            .get("matrix")
            .expect("matrix")
            .to_json(),
        serde_json::Value::Null
    );
    assert!(plain.dispatch("a").matrix.is_none());
}

#[test]
fn include_extras_do_not_appear_in_names() {
    let run = run_ok(
        "on: push
jobs:
  t:
    runs-on: x
    strategy:
      matrix:
        node: [18, 20]
        include:
          - node: 20
            experimental: true
          - node: 22
    steps: [run: echo]
",
    );
    assert_eq!(run.names(), ["t (18)", "t (20)", "t (22)"]);
    let m = run
        .dispatch("t (20)")
        .contexts
        .get("matrix")
        .expect("matrix")
        .to_json();
    assert_eq!(m, serde_json::json!({"node": 20, "experimental": true}));
}

#[test]
fn name_with_matrix_expression_is_evaluated_per_leg() {
    let run = run_ok(
        "on: push
jobs:
  t:
    name: Test on ${{ matrix.os }}
    runs-on: x
    strategy: {matrix: {os: [linux, mac]}}
    steps: [run: echo]
  plain:
    name: Build
    runs-on: x
    strategy: {matrix: {v: [1, 2]}}
    steps: [run: echo]
",
    );
    assert_eq!(
        run.names(),
        ["Test on linux", "Test on mac", "Build (1)", "Build (2)"]
    );
}

#[test]
fn fail_fast_cancels_running_and_queued_legs() {
    let run = Driver::new(only("t (1)", fail())).run(spec(
        "on: push
jobs:
  t:
    runs-on: x
    strategy: {max-parallel: 2, matrix: {v: [1, 2, 3, 4]}}
    steps: [run: echo]
",
    ));
    assert_eq!(run.names(), ["t (1)", "t (2)"]);
    assert_eq!(run.cancel_requests, ["t (2)"]);
    assert_eq!(
        run.report_lines(),
        [
            "t (1)=failure",
            "t (2)=cancelled",
            "t (3)=cancelled",
            "t (4)=cancelled"
        ]
    );
    assert_eq!(run.report.conclusion.as_str(), "failure");
    assert!(run
        .events
        .iter()
        .any(|e| matches!(e, EngineEvent::LegCancelled { name, reason, .. } if name == "t (3)" && reason.contains("fail-fast"))));
}

#[test]
fn fail_fast_false_lets_other_legs_finish() {
    let run = Driver::new(only("t (1)", fail())).run(spec(
        "on: push
jobs:
  t:
    runs-on: x
    strategy: {fail-fast: false, matrix: {v: [1, 2, 3]}}
    steps: [run: echo]
  after: {needs: t, runs-on: x, steps: [run: echo]}
",
    ));
    assert!(run.cancel_requests.is_empty());
    assert_eq!(
        run.report_lines(),
        [
            "t (1)=failure",
            "t (2)=success",
            "t (3)=success",
            "after=skipped"
        ]
    );
    assert_eq!(
        run.dispatch("t (2)")
            .contexts
            .get("strategy")
            .expect("s")
            .to_json()["fail-fast"],
        false
    );
}

#[test]
fn continue_on_error_leg_does_not_trigger_fail_fast() {
    let run = Driver::new(|d| {
        if d.name.contains("true") {
            fail()
        } else {
            ok()
        }
    })
    .run(spec(
        "on: push
jobs:
  t:
    runs-on: x
    continue-on-error: ${{ matrix.experimental }}
    strategy: {matrix: {experimental: [true, false], n: [1, 2]}}
    steps: [run: echo]
  after: {needs: t, runs-on: x, steps: [run: echo]}
",
    ));
    assert!(run.cancel_requests.is_empty());
    assert_eq!(
        run.report_lines(),
        [
            "t (true, 1)=failure",
            "t (true, 2)=failure",
            "t (false, 1)=success",
            "t (false, 2)=success",
            "after=success"
        ]
    );
    assert!(run.dispatch("t (true, 1)").continue_on_error);
    assert!(!run.dispatch("t (false, 1)").continue_on_error);
    assert_eq!(run.report.conclusion.as_str(), "success");
}

#[test]
fn max_parallel_caps_running_legs() {
    let run = run_ok(
        "on: push
jobs:
  t:
    runs-on: x
    strategy: {max-parallel: 3, matrix: {v: [1, 2, 3, 4, 5, 6, 7]}}
    steps: [run: echo]
  other: {runs-on: x, steps: [run: echo]}
",
    );
    assert_eq!(run.max_running, 4, "3 legs plus the independent job");
    assert!(run
        .snapshots
        .iter()
        .all(|s| s.iter().filter(|n| n.starts_with("t (")).count() <= 3));
    assert_eq!(run.dispatched.len(), 8);
    let s = run
        .dispatch("t (7)")
        .contexts
        .get("strategy")
        .expect("s")
        .to_json();
    assert_eq!(s["max-parallel"], 3);
    assert_eq!(s["job-total"], 7);
}

#[test]
fn sixty_four_leg_matrix() {
    let run = run_ok(
        "on: push
jobs:
  m:
    runs-on: x
    strategy:
      matrix:
        a: [0, 1, 2, 3]
        b: [0, 1, 2, 3]
        c: [0, 1, 2, 3]
    steps: [run: echo]
  done: {needs: m, runs-on: x, steps: [run: echo]}
",
    );
    assert_eq!(run.dispatched.len(), 65);
    assert_eq!(run.max_running, 64);
    assert_eq!(run.names()[0], "m (0, 0, 0)");
    assert_eq!(run.names()[1], "m (0, 0, 1)");
    assert_eq!(run.names()[63], "m (3, 3, 3)");
    assert_eq!(run.names()[64], "done");
    let indexes: Vec<f64> = run.dispatched[..64]
        .iter()
        .map(|d| {
            d.contexts
                .get("strategy")
                .expect("s")
                .index(&kiln_workflow::Value::string("job-index"))
                .to_number()
        })
        .collect();
    assert_eq!(indexes, (0..64).map(f64::from).collect::<Vec<_>>());
}

#[test]
fn outputs_merge_last_finished_wins_and_empty_does_not_clear() {
    let yaml = "on: push
jobs:
  t:
    runs-on: x
    strategy: {matrix: {n: [1, 2, 3]}}
    outputs: {v: x, only: y}
    steps: [run: echo]
  use: {needs: t, runs-on: x, steps: [run: echo]}
";
    let rule = |d: &kiln_scheduler::Dispatch| match d.name.as_str() {
        "t (1)" => ok().out("v", "one").out("only", "first"),
        "t (2)" => ok().out("v", "two").out("only", ""),
        "t (3)" => ok().out("v", "").out("only", ""),
        _ => ok(),
    };
    let fifo = Driver::new(rule).run(spec(yaml));
    let outputs = fifo
        .dispatch("use")
        .contexts
        .get("needs")
        .expect("needs")
        .to_json()["t"]["outputs"]
        .clone();
    assert_eq!(outputs, serde_json::json!({"v": "two", "only": "first"}));
    let lifo = Driver::new(rule).order(Order::Lifo).run(spec(yaml));
    assert_eq!(lifo.completion_order, ["t (3)", "t (2)", "t (1)", "use"]);
    let outputs = lifo
        .dispatch("use")
        .contexts
        .get("needs")
        .expect("needs")
        .to_json()["t"]["outputs"]
        .clone();
    assert_eq!(outputs, serde_json::json!({"v": "one", "only": "first"}));
    assert_eq!(
        fifo.job("t (1)").outputs.get("v").map(String::as_str),
        Some("one")
    );
}

#[test]
fn deferred_matrix_from_needs_outputs() {
    let run = Driver::new(only("plan", ok().out("targets", r#"["a","b","c"]"#))).run(spec(
        "on: push
jobs:
  plan: {runs-on: x, outputs: {targets: x}, steps: [run: echo]}
  build:
    needs: plan
    runs-on: x
    strategy:
      matrix:
        target: ${{ fromJSON(needs.plan.outputs.targets) }}
        mode: [debug]
    steps: [run: echo]
  whole:
    needs: plan
    runs-on: x
    strategy:
      matrix: ${{ fromJSON(format('{{\"n\":{0}}}', needs.plan.outputs.targets)) }}
    steps: [run: echo]
",
    ));
    assert_eq!(
        run.names(),
        [
            "plan",
            "build (a, debug)",
            "build (b, debug)",
            "build (c, debug)",
            "whole (a)",
            "whole (b)",
            "whole (c)"
        ]
    );
}

#[test]
fn matrix_that_evaluates_to_an_error_fails_the_job() {
    let run = Driver::new(only("plan", ok().out("list", "[]"))).run(spec(
        "on: push
jobs:
  plan: {runs-on: x, steps: [run: echo]}
  build:
    needs: plan
    runs-on: x
    strategy: {matrix: {v: '${{ fromJSON(needs.plan.outputs.list) }}'}}
    steps: [run: echo]
  bad-json:
    needs: plan
    runs-on: x
    strategy: {matrix: {v: '${{ fromJSON(needs.plan.outputs.missing) }}'}}
    steps: [run: echo]
  after: {needs: build, if: always(), runs-on: x, steps: [run: echo]}
",
    ));
    assert_eq!(
        run.report_lines(),
        [
            "plan=success",
            "build=failure",
            "bad-json=failure",
            "after=success"
        ]
    );
    assert!(run
        .job("build")
        .message
        .as_deref()
        .is_some_and(|m| m.contains("does not contain any values")));
    assert!(run
        .job("bad-json")
        .message
        .as_deref()
        .is_some_and(|m| m.starts_with("Error evaluating 'strategy.matrix'")));
}

#[test]
fn matrix_filter_keeps_matching_legs() {
    let mut s = spec(TWO_BY_TWO);
    s.matrix_filter = vec![("os".to_string(), "MAC".to_string())];
    let run = Driver::new(|_| ok()).run(s);
    assert_eq!(run.names(), ["test (mac, 3.11)", "test (mac, 3.12)"]);
    assert_eq!(run.report.jobs.len(), 2);
    let mut s = spec(TWO_BY_TWO);
    s.matrix_filter = vec![("os".to_string(), "windows".to_string())];
    let run = Driver::new(|_| ok()).run(s);
    assert!(run.dispatched.is_empty());
    assert_eq!(run.report_lines(), ["test=skipped"]);
}

#[test]
fn job_if_false_skips_the_whole_matrix_as_one_entry() {
    let run = run_ok(
        "on: push
jobs:
  t:
    if: github.event_name == 'pull_request'
    name: Tests
    runs-on: x
    strategy: {matrix: {v: [1, 2]}}
    steps: [run: echo]
",
    );
    assert_eq!(run.report_lines(), ["Tests=skipped"]);
    assert!(run.events.iter().any(
        |e| matches!(e, EngineEvent::JobSkipped { reason, .. } if reason.contains("pull_request"))
    ));
}

#[test]
fn fail_fast_and_max_parallel_from_expressions() {
    let mut s = spec(
        "on: push
jobs:
  t:
    runs-on: x
    strategy:
      fail-fast: ${{ vars.FAST == 'yes' }}
      max-parallel: ${{ fromJSON(vars.MAX) }}
      matrix: {v: [1, 2, 3]}
    steps: [run: echo]
",
    );
    s.vars = object(serde_json::json!({"FAST": "no", "MAX": "1"}));
    let run = Driver::new(only("t (1)", fail())).run(s);
    assert_eq!(run.max_running, 1);
    assert_eq!(
        run.report_lines(),
        ["t (1)=failure", "t (2)=success", "t (3)=success"]
    );
}

#[test]
fn a_matrix_from_needs_takes_expression_keys_inserts_and_spliced_vectors() {
    let outcome = ok()
        .out("axis", "python")
        .out("more", "[\"3.11\", \"3.12\"]")
        .out("extra", "{\"os\": [\"linux\"]}");
    let run = Driver::new(only("prepare", outcome)).run(spec(
        "on: push
jobs:
  prepare: {runs-on: x, steps: [run: echo]}
  test:
    needs: prepare
    runs-on: x
    strategy:
      matrix:
        ${{ needs.prepare.outputs.axis }}: ['3.10', '${{ fromJSON(needs.prepare.outputs.more) }}']
        ${{ insert }}: ${{ fromJSON(needs.prepare.outputs.extra) }}
    steps: [run: echo]
",
    ));
    assert_eq!(
        run.names(),
        [
            "prepare",
            "test (3.10, linux)",
            "test (3.11, linux)",
            "test (3.12, linux)"
        ]
    );
    let matrix = run
        .dispatch("test (3.12, linux)")
        .matrix
        .clone()
        .expect("a matrix");
    assert_eq!(
        kiln_workflow::Value::object(matrix).to_json(),
        serde_json::json!({"python": "3.12", "os": "linux"})
    );
}

#[test]
fn a_whole_strategy_from_needs_sets_fail_fast_max_parallel_and_the_matrix() {
    let outcome = ok().out(
        "strategy",
        "{\"fail-fast\": false, \"max-parallel\": 1, \"matrix\": {\"os\": [\"a\", \"b\"]}}",
    );
    let run = Driver::new(only("plan", outcome)).run(spec(
        "on: push
jobs:
  plan: {runs-on: x, steps: [run: echo]}
  test:
    needs: plan
    runs-on: x
    strategy: ${{ fromJSON(needs.plan.outputs.strategy) }}
    steps: [run: echo]
",
    ));
    assert_eq!(run.names(), ["plan", "test (a)", "test (b)"]);
    assert_eq!(run.max_running, 1);
    let strategy = run
        .dispatch("test (b)")
        .contexts
        .get("strategy")
        .expect("strategy")
        .to_json();
    assert_eq!(
        strategy,
        serde_json::json!({"fail-fast": false, "job-index": 1, "job-total": 2, "max-parallel": 1})
    );
}
