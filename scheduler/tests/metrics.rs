//! `/metrics`' scheduler part: the gauges follow the queue, the leases and the runners; the
//! completion counter counts each completion once.

mod service_support;

use kiln_workflow::Conclusion;
use service_support::*;

const GPU_JOB: &str = "on: push
jobs:
  train:
    runs-on: [Linux, gpu]
    steps:
      - run: 'true'
";

/// The value of the sample `name_and_labels` (as written in the text), failing when absent.
fn sample(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name_and_labels} in:\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn gauges_follow_the_queue_leases_and_runners() {
    let h = Harness::new(&[(".github/workflows/gpu.yml", GPU_JOB)]);
    h.submit(&[]);
    h.clock.advance(5_000);
    let text = h.s().metrics_text().unwrap();
    assert_eq!(sample(&text, "kiln_scheduler_jobs{state=\"queued\"}"), 1);
    assert_eq!(sample(&text, "kiln_scheduler_jobs{state=\"running\"}"), 0);
    assert_eq!(
        sample(&text, "kiln_scheduler_queue_depth{labels=\"gpu,linux\"}"),
        1
    );
    assert_eq!(sample(&text, "kiln_scheduler_queue_oldest_seconds"), 5);
    assert_eq!(sample(&text, "kiln_scheduler_runs_running"), 1);
    assert_eq!(sample(&text, "kiln_scheduler_runners{online=\"true\"}"), 0);
    assert!(text.contains("# TYPE kiln_scheduler_jobs_completed_total counter"));

    let runner = h.runner("big", &["linux", "GPU"]);
    let job = h.take(&runner, "train");
    let text = h.s().metrics_text().unwrap();
    assert_eq!(sample(&text, "kiln_scheduler_jobs{state=\"queued\"}"), 0);
    assert_eq!(sample(&text, "kiln_scheduler_jobs{state=\"running\"}"), 1);
    assert_eq!(sample(&text, "kiln_scheduler_queue_oldest_seconds"), 0);
    assert!(!text.contains("kiln_scheduler_queue_depth{"), "{text}");
    assert_eq!(sample(&text, "kiln_scheduler_runners{online=\"true\"}"), 1);
    assert_eq!(
        sample(&text, "kiln_scheduler_runner_slots{state=\"total\"}"),
        1
    );
    assert_eq!(
        sample(&text, "kiln_scheduler_runner_slots{state=\"busy\"}"),
        1
    );

    h.finish(&job, Conclusion::Failure);
    // A repeated completion (a lost reply) is not counted again.
    h.finish(&job, Conclusion::Failure);
    let text = h.s().metrics_text().unwrap();
    assert_eq!(
        sample(
            &text,
            "kiln_scheduler_jobs_completed_total{conclusion=\"failure\"}"
        ),
        1
    );
    assert_eq!(sample(&text, "kiln_scheduler_runs_running"), 0);

    // A runner silent for three heartbeat intervals is offline, and its slots leave the
    // totals.
    h.clock.advance(31_000);
    let text = h.s().metrics_text().unwrap();
    assert_eq!(sample(&text, "kiln_scheduler_runners{online=\"false\"}"), 1);
    assert_eq!(
        sample(&text, "kiln_scheduler_runner_slots{state=\"total\"}"),
        0
    );
}
