//! Scheduling cost of whole runs driven by a fake executor that finishes every leg at once:
//! a 64-leg matrix, a 30-job needs chain, and 1,000 legs (four 250-leg matrices).

use criterion::{criterion_group, criterion_main, Criterion};
use kiln_scheduler::{Engine, JobCompletion, RunSpec};
use kiln_workflow::{parse_workflow, Conclusion, Object};
use std::hint::black_box;
use std::sync::Arc;

fn spec(yaml: &str) -> RunSpec {
    let parsed = parse_workflow("bench.yml", yaml);
    assert!(!parsed.has_errors(), "bench workflow does not parse");
    RunSpec {
        workflow: Arc::new(parsed.value.expect("a workflow")),
        workflow_file: "bench.yml".to_string(),
        github: Object::new(),
        inputs: Object::new(),
        vars: Object::new(),
        secrets: Object::new(),
        job_filter: None,
        matrix_filter: Vec::new(),
    }
}

/// Runs the whole workflow, completing legs in dispatch order; returns the legs run.
fn drive(spec: &RunSpec) -> usize {
    let mut engine = Engine::new(spec.clone()).expect("engine");
    let mut running = std::collections::VecDeque::new();
    let mut total = 0;
    loop {
        for dispatch in engine.poll() {
            running.push_back(dispatch.leg);
            total += 1;
        }
        let Some(leg) = running.pop_front() else {
            break;
        };
        engine.complete(leg, JobCompletion::new(Conclusion::Success));
    }
    assert!(engine.is_finished());
    total
}

fn matrix_64() -> String {
    "on: push
jobs:
  m:
    runs-on: ${{ matrix.os }}
    env: {V: '${{ matrix.a }}-${{ matrix.b }}'}
    strategy: {matrix: {os: [l, m, w, f], a: [0, 1, 2, 3], b: [0, 1, 2, 3]}}
    steps: [run: echo]
"
    .to_string()
}

fn chain_30() -> String {
    let mut yaml = String::from("on: push\njobs:\n  j0: {runs-on: x, steps: [run: echo]}\n");
    for i in 1..30 {
        yaml.push_str(&format!(
            "  j{i}: {{needs: j{}, runs-on: x, steps: [run: echo]}}\n",
            i - 1
        ));
    }
    yaml
}

fn legs_1000() -> String {
    let mut yaml = String::from("on: push\njobs:\n");
    for job in 0..4 {
        let needs = if job == 0 {
            String::new()
        } else {
            format!("needs: m{}, ", job - 1)
        };
        yaml.push_str(&format!(
            "  m{job}: {{{needs}runs-on: x, strategy: {{matrix: {{a: [{}], b: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}}}}, steps: [run: echo]}}\n",
            (0..25).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    yaml
}

fn bench(c: &mut Criterion) {
    for (name, yaml, legs) in [
        ("matrix_64_legs", matrix_64(), 64),
        ("chain_30_jobs", chain_30(), 30),
        ("run_1000_legs", legs_1000(), 1000),
    ] {
        let spec = spec(&yaml);
        assert_eq!(drive(&spec), legs);
        c.bench_function(name, |b| b.iter(|| drive(black_box(&spec))));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
