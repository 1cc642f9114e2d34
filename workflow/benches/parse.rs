//! Parse and validate a generated 1,000-job workflow: needs, a matrix and five steps with
//! expressions per job.

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use kiln_workflow::yaml::{self, Limits};
use kiln_workflow::{parse_workflow_with, ParseOptions};

fn generated_workflow(jobs: usize) -> String {
    let mut text = String::from(
        "name: big\non:\n  push:\n    branches: [main]\nenv:\n  GLOBAL: ${{ github.sha }}\njobs:\n",
    );
    for i in 0..jobs {
        let _ = writeln!(text, "  job_{i}:");
        if i > 0 {
            let _ = writeln!(
                text,
                "    needs: [job_{}{}]",
                i - 1,
                if i > 1 {
                    format!(", job_{}", i / 2)
                } else {
                    String::new()
                }
            );
        }
        let _ = write!(
            text,
            "    runs-on: ${{{{ matrix.os }}}}
    if: github.event_name == 'push'
    strategy:
      matrix:
        os: [ubuntu-latest, windows-latest]
        node: [18, 20, 22]
    env:
      JOB: job_{i}
    steps:
      - uses: actions/checkout@v4
      - name: Setup ${{{{ matrix.node }}}}
        uses: actions/setup-node@v4
        with:
          node-version: ${{{{ matrix.node }}}}
      - run: npm ci
      - id: test
        run: npm test -- --shard=${{{{ strategy.job-index }}}}
        env:
          CI: true
      - if: failure() && steps.test.outcome == 'failure'
        run: echo failed ${{{{ github.run_id }}}}
"
        );
    }
    text
}

fn bench(c: &mut Criterion) {
    let content = generated_workflow(1000);
    // GitHub caps a run at 256 jobs; the benchmark measures the parser, not that limit.
    let options = ParseOptions {
        max_jobs: 1000,
        ..ParseOptions::default()
    };
    let result = parse_workflow_with("big.yml", &content, &options);
    assert!(
        !result.has_errors(),
        "the generated workflow is valid: {:?}",
        result.diagnostics.first()
    );
    c.bench_function("parse_workflow 1000 jobs", |b| {
        b.iter(|| parse_workflow_with("big.yml", black_box(&content), &options))
    });
}

/// The YAML tree alone, to see how the total splits between reading and validating.
fn bench_yaml(c: &mut Criterion) {
    let content = generated_workflow(1000);
    c.bench_function("yaml tree 1000 jobs", |b| {
        b.iter(|| yaml::parse(black_box(&content), Limits::default()))
    });
}

criterion_group!(benches, bench, bench_yaml);
criterion_main!(benches);
