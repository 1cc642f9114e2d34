//! Status functions inside a called workflow: the jobs of the callee see the calling job's
//! ancestors as their own, as on GitHub.

mod support;
use support::*;

const CALLEE: &str = "on: workflow_call
jobs:
  plain:
    runs-on: x
    steps: [run: echo]
  on-failure:
    if: failure()
    runs-on: x
    steps: [run: echo]
  on-success:
    if: success()
    runs-on: x
    steps: [run: echo]
  always:
    if: always()
    runs-on: x
    steps: [run: echo]
";

const CALLER: &str = "on: push
jobs:
  lint:
    runs-on: x
    steps: [run: echo]
  call:
    needs: lint
    if: always()
    uses: ./.github/workflows/callee.yml
";

fn run_with_lint(lint_fails: bool) -> Run {
    Driver::new(move |d| {
        if lint_fails && d.job_id == "lint" {
            fail()
        } else {
            ok()
        }
    })
    .run(spec_with(
        CALLER,
        &[("./.github/workflows/callee.yml", CALLEE)],
    ))
}

#[test]
fn callee_jobs_see_a_failure_of_a_job_their_caller_needed() {
    let run = run_with_lint(true);
    assert_eq!(run.conclusion("lint"), "failure");
    assert_eq!(run.conclusion("call / plain"), "skipped");
    assert_eq!(run.conclusion("call / on-success"), "skipped");
    assert_eq!(run.conclusion("call / on-failure"), "success");
    assert_eq!(run.conclusion("call / always"), "success");
}

#[test]
fn callee_jobs_run_normally_when_the_callers_needs_succeeded() {
    let run = run_with_lint(false);
    assert_eq!(run.conclusion("call / plain"), "success");
    assert_eq!(run.conclusion("call / on-success"), "success");
    assert_eq!(run.conclusion("call / on-failure"), "skipped");
    assert_eq!(run.conclusion("call / always"), "success");
}
