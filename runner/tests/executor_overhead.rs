//! Per-step overhead of the executor in host mode: a 50-step job of `true`. The bound is
//! loose because debug builds and a busy shared machine vary; the printed figure is the
//! measurement.

mod executor_support;

use executor_support::Setup;
use kiln_workflow::Conclusion;

#[tokio::test]
async fn fifty_trivial_steps_cost_little_more_than_fifty_shells() {
    let setup = Setup::new();
    let mut yaml = String::from("on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n");
    for _ in 0..50 {
        yaml.push_str("      - run: \"true\"\n");
    }
    let start = std::time::Instant::now();
    let ran = setup.run(&yaml, "j").await;
    let elapsed = start.elapsed();
    assert_eq!(ran.result.conclusion, Conclusion::Success);
    assert_eq!(ran.result.steps.len(), 50);
    let per_step_ms = elapsed.as_secs_f64() * 1000.0 / 50.0;
    println!(
        "executor overhead: 50 steps in {elapsed:?} ({per_step_ms:.2} ms per step incl. bash)"
    );
    assert!(per_step_ms < 40.0, "{per_step_ms:.2} ms per step");
}
