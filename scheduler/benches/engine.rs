//! Scheduling cost of whole runs driven by a fake executor that finishes every leg at once:
//! a 64-leg matrix, a 30-job needs chain, and 1,000 legs (four 250-leg matrices).

#[path = "../tests/support/mod.rs"]
mod support;

use criterion::{criterion_group, criterion_main, Criterion};
use kiln_scheduler::{Engine, JobCompletion, RunSpec};
use kiln_workflow::Conclusion;
use std::hint::black_box;

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

fn bench(c: &mut Criterion) {
    for (name, yaml, legs) in [
        ("matrix_64_legs", matrix_64(), 64),
        ("chain_30_jobs", support::chain_yaml(30), 30),
        ("run_1000_legs", support::thousand_legs_yaml(), 1000),
    ] {
        let spec = support::spec(&yaml);
        assert_eq!(drive(&spec), legs);
        c.bench_function(name, |b| b.iter(|| drive(black_box(&spec))));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
