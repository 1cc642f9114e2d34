//! `needs` ordering, result propagation and job-level status functions.

mod support;
use support::*;

#[test]
fn independent_jobs_start_together_and_dependants_wait() {
    let run = run_ok(
        "on: push
jobs:
  a: {runs-on: ubuntu-latest, steps: [run: echo]}
  b: {runs-on: ubuntu-latest, steps: [run: echo]}
  c: {needs: [a, b], runs-on: ubuntu-latest, steps: [run: echo]}
",
    );
    assert_eq!(run.names(), ["a", "b", "c"]);
    assert_eq!(run.snapshots[0], ["a", "b"]);
    assert!(!run.ran_together("a", "c"));
    assert!(!run.ran_together("b", "c"));
    assert_eq!(run.report_lines(), ["a=success", "b=success", "c=success"]);
    assert_eq!(run.report.conclusion.as_str(), "success");
}

#[test]
fn failed_need_skips_dependants_and_the_skip_cascades() {
    let run = run_failing(
        "on: push
jobs:
  a: {runs-on: x, steps: [run: echo]}
  b: {needs: a, runs-on: x, steps: [run: echo]}
  c: {needs: b, runs-on: x, steps: [run: echo]}
",
        &["a"],
    );
    assert_eq!(run.names(), ["a"]);
    assert_eq!(run.report_lines(), ["a=failure", "b=skipped", "c=skipped"]);
    assert_eq!(run.report.conclusion.as_str(), "failure");
    assert_eq!(
        run.job("b").message.as_deref(),
        Some("a needed job did not succeed: a (failure)")
    );
    assert!(run.events.iter().any(
        |e| matches!(e, kiln_scheduler::EngineEvent::JobSkipped { job_id, .. } if job_id == "c")
    ));
}

#[test]
fn skipped_need_skips_dependant_even_with_failure_or_cancelled() {
    let run = run_ok(
        "on: push
jobs:
  a: {if: false, runs-on: x, steps: [run: echo]}
  b: {needs: a, runs-on: x, steps: [run: echo]}
  c: {needs: a, if: failure(), runs-on: x, steps: [run: echo]}
  d: {needs: a, if: cancelled(), runs-on: x, steps: [run: echo]}
  e: {needs: a, if: always(), runs-on: x, steps: [run: echo]}
",
    );
    assert_eq!(run.names(), ["e"]);
    assert_eq!(
        run.report_lines(),
        [
            "a=skipped",
            "b=skipped",
            "c=skipped",
            "d=skipped",
            "e=success"
        ]
    );
    assert_eq!(run.report.conclusion.as_str(), "success");
}

#[test]
fn always_runs_after_a_failure() {
    let run = run_failing(
        "on: push
jobs:
  a: {runs-on: x, steps: [run: echo]}
  cleanup: {needs: a, if: always(), runs-on: x, steps: [run: echo]}
",
        &["a"],
    );
    assert_eq!(run.names(), ["a", "cleanup"]);
    assert_eq!(run.conclusion("cleanup"), "success");
    assert_eq!(run.report.conclusion.as_str(), "failure");
}

#[test]
fn failure_sees_a_failed_ancestor_two_levels_up() {
    let run = run_failing(
        "on: push
jobs:
  a: {runs-on: x, steps: [run: echo]}
  b: {needs: a, runs-on: x, steps: [run: echo]}
  notify: {needs: b, if: failure(), runs-on: x, steps: [run: echo]}
  happy: {needs: b, if: success(), runs-on: x, steps: [run: echo]}
",
        &["a"],
    );
    assert_eq!(run.names(), ["a", "notify"]);
    assert_eq!(
        run.report_lines(),
        ["a=failure", "b=skipped", "notify=success", "happy=skipped"]
    );
}

#[test]
fn success_requires_every_ancestor_not_only_direct_needs() {
    // b is allowed to run after a fails, and succeeds; c's default success() still sees a.
    let run = run_failing(
        "on: push
jobs:
  a: {runs-on: x, steps: [run: echo]}
  b: {needs: a, if: always(), runs-on: x, steps: [run: echo]}
  c: {needs: b, runs-on: x, steps: [run: echo]}
  d: {needs: b, if: \"!failure()\", runs-on: x, steps: [run: echo]}
",
        &["a"],
    );
    assert_eq!(
        run.report_lines(),
        ["a=failure", "b=success", "c=skipped", "d=skipped"]
    );
}

#[test]
fn condition_without_status_function_gets_implicit_success() {
    let run = run_failing(
        "on: push
jobs:
  a: {runs-on: x, steps: [run: echo]}
  b: {needs: a, if: github.event_name == 'push', runs-on: x, steps: [run: echo]}
",
        &["a"],
    );
    assert_eq!(run.report_lines(), ["a=failure", "b=skipped"]);
}

#[test]
fn false_string_output_is_truthy() {
    let run = Driver::new(only("a", ok().out("flag", "false"))).run(spec(
        "on: push
jobs:
  a: {runs-on: x, steps: [run: echo]}
  b: {needs: a, if: '${{ needs.a.outputs.flag }}', runs-on: x, steps: [run: echo]}
  c: {needs: a, if: needs.a.outputs.flag == 'true', runs-on: x, steps: [run: echo]}
  d: {needs: a, if: \"${{ needs.a.outputs.flag == 'false' }}\", runs-on: x, steps: [run: echo]}
",
    ));
    assert_eq!(
        run.report_lines(),
        ["a=success", "b=success", "c=skipped", "d=success"]
    );
}

#[test]
fn success_and_failure_with_job_ids() {
    let run = run_failing(
        "on: push
jobs:
  a: {runs-on: x, steps: [run: echo]}
  b: {runs-on: x, steps: [run: echo]}
  only-a-failed: {needs: [a, b], if: \"failure('a')\", runs-on: x, steps: [run: echo]}
  b-ok: {needs: [a, b], if: \"success('b')\", runs-on: x, steps: [run: echo]}
  a-ok: {needs: [a, b], if: \"success('a')\", runs-on: x, steps: [run: echo]}
  b-failed: {needs: [a, b], if: \"failure('b')\", runs-on: x, steps: [run: echo]}
",
        &["a"],
    );
    assert_eq!(
        run.report_lines(),
        [
            "a=failure",
            "b=success",
            "only-a-failed=success",
            "b-ok=success",
            "a-ok=skipped",
            "b-failed=skipped"
        ]
    );
}

#[test]
fn needs_context_holds_only_direct_needs_with_result_and_outputs() {
    let run = Driver::new(|d| match d.name.as_str() {
        "a" => ok().out("x", "1"),
        "b" => ok().out("y", "2"),
        _ => ok(),
    })
    .run(spec(
        "on: push
jobs:
  a: {runs-on: x, steps: [run: echo]}
  b: {needs: a, runs-on: x, steps: [run: echo]}
  c: {needs: b, runs-on: x, steps: [run: echo]}
",
    ));
    let needs = run
        .dispatch("c")
        .contexts
        .get("needs")
        .expect("needs")
        .to_json();
    assert_eq!(
        needs,
        serde_json::json!({"b": {"result": "success", "outputs": {"y": "2"}}})
    );
    assert_eq!(
        run.dispatch("a")
            .contexts
            .get("needs")
            .expect("needs")
            .to_json(),
        serde_json::json!({})
    );
}

#[test]
fn if_expression_error_fails_the_job_and_the_run_goes_on() {
    let run = run_ok(
        "on: push
jobs:
  a: {if: \"fromJSON('{') \", runs-on: x, steps: [run: echo]}
  b: {runs-on: x, steps: [run: echo]}
  c: {needs: a, if: always(), runs-on: x, steps: [run: echo]}
",
    );
    assert_eq!(run.report_lines(), ["a=failure", "b=success", "c=success"]);
    let failed = run.events.iter().find_map(|e| match e {
        kiln_scheduler::EngineEvent::JobFailedToStart { job_id, error, .. } if job_id == "a" => {
            Some(error.clone())
        }
        _ => None,
    });
    assert!(failed
        .expect("an event for a")
        .starts_with("Error evaluating 'if'"));
    assert_eq!(run.report.conclusion.as_str(), "failure");
}

#[test]
fn continue_on_error_job_counts_as_success_for_dependants_and_the_run() {
    let run = run_failing(
        "on: push
jobs:
  a: {runs-on: x, continue-on-error: true, steps: [run: echo]}
  b: {needs: a, runs-on: x, steps: [run: echo]}
",
        &["a"],
    );
    assert_eq!(run.report_lines(), ["a=failure", "b=success"]);
    assert_eq!(
        run.dispatch("b")
            .contexts
            .get("needs")
            .expect("needs")
            .to_json()["a"]["result"],
        "success"
    );
    assert_eq!(run.report.conclusion.as_str(), "success");
}

#[test]
fn thirty_job_chain_runs_in_order() {
    let yaml = chain_yaml(30);
    let run = run_ok(&yaml);
    let expected: Vec<String> = (0..30).map(|i| format!("j{i}")).collect();
    assert_eq!(run.names(), expected);
    assert_eq!(run.max_running, 1);
    assert_eq!(run.report.jobs.len(), 30);
    assert!(run
        .report
        .jobs
        .iter()
        .all(|j| j.conclusion.as_str() == "success"));
}

#[test]
fn thirty_job_chain_failure_in_the_middle_skips_the_rest() {
    let yaml = chain_yaml(30);
    let run = run_failing(&yaml, &["j10"]);
    assert_eq!(run.dispatched.len(), 11);
    assert_eq!(run.conclusion("j10"), "failure");
    assert!((11..30).all(|i| run.conclusion(&format!("j{i}")) == "skipped"));
}

#[test]
fn fan_out_of_32_and_fan_in() {
    let mut yaml = String::from("on: push\njobs:\n  setup: {runs-on: x, steps: [run: echo]}\n");
    let mut all = Vec::new();
    for i in 0..32 {
        yaml.push_str(&format!(
            "  w{i}: {{needs: setup, runs-on: x, steps: [run: echo]}}\n"
        ));
        all.push(format!("w{i}"));
    }
    yaml.push_str(&format!(
        "  gather: {{needs: [{}], runs-on: x, steps: [run: echo]}}\n",
        all.join(", ")
    ));
    let run = run_ok(&yaml);
    assert_eq!(run.max_running, 32);
    assert_eq!(run.names().first(), Some(&"setup"));
    assert_eq!(run.names().last(), Some(&"gather"));
    assert_eq!(run.dispatched.len(), 34);
    assert_eq!(
        run.dispatch("gather")
            .contexts
            .get("needs")
            .expect("needs")
            .to_json()
            .as_object()
            .map(|o| o.len()),
        Some(32)
    );
    let failed = run_failing(&yaml, &["w17"]);
    assert_eq!(failed.conclusion("gather"), "skipped");
    assert_eq!(failed.dispatched.len(), 33);
}

#[test]
fn job_filter_runs_only_that_job_ignoring_needs() {
    let mut spec = spec(
        "on: push
jobs:
  a: {runs-on: x, steps: [run: echo]}
  b: {needs: a, runs-on: x, steps: [run: echo]}
  c: {needs: b, runs-on: x, steps: [run: echo]}
",
    );
    spec.job_filter = Some("B".to_string());
    let run = Driver::new(|_| ok()).run(spec);
    assert_eq!(run.names(), ["b"]);
    assert_eq!(run.report_lines(), ["b=success"]);
}

#[test]
fn unknown_job_filter_is_an_error() {
    let mut spec = spec("on: push\njobs:\n  a: {runs-on: x, steps: [run: echo]}\n");
    spec.job_filter = Some("nope".to_string());
    let error = kiln_scheduler::Engine::new(spec).err().expect("an error");
    assert_eq!(
        error,
        kiln_scheduler::EngineError::UnknownJob("nope".to_string())
    );
    assert!(error.to_string().contains("kiln run -l"));
}
