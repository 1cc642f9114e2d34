//! The hot path of every job and step: a typical `if:` condition, parsed once and evaluated
//! 100,000 times against a realistic github/matrix context; and parse + evaluate together,
//! as when a condition is seen for the first time.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use kiln_workflow::expr::{parse, Allowed, JobStatus, SimpleContext};

const CONDITION: &str =
    "github.event_name == 'push' && contains(github.ref, 'main') && matrix.os != 'windows'";
const EVALUATIONS: usize = 100_000;

fn context() -> SimpleContext {
    let json = serde_json::json!({
        "github": {
            "action": "__run_2", "actor": "monalisa", "api_url": "https://api.github.com",
            "base_ref": "", "event_name": "push", "head_ref": "", "job": "build",
            "ref": "refs/heads/main", "ref_name": "main", "ref_type": "branch",
            "repository": "monalisa/testing", "repository_owner": "monalisa", "run_attempt": "1",
            "run_id": "2827197126", "run_number": "845", "server_url": "https://github.com",
            "sha": "2ce6b095f4cceb616efed52266e3e3c0367ba795", "workflow": "CI",
            "workspace": "/home/runner/work/testing/testing",
            "event": {
                "after": "2ce6b095f4cceb616efed52266e3e3c0367ba795",
                "before": "bbe29778fdad33232cd67bd84205d334b94412d7",
                "commits": [{"id": "2ce6b095", "message": "Update main.yml", "distinct": true}],
                "pusher": {"email": "monalisa@users.noreply.github.com", "name": "monalisa"},
                "ref": "refs/heads/main",
                "repository": {"full_name": "monalisa/testing", "default_branch": "main", "private": false}
            }
        },
        "matrix": {"os": "ubuntu-latest", "node": 20, "experimental": false},
        "env": {"CI": "true"}
    });
    SimpleContext::from_json(&json, JobStatus::Success)
}

fn bench(c: &mut Criterion) {
    let ctx = context();
    let allowed = Allowed::everything(["github", "matrix", "env"]);
    let expr = parse(CONDITION, &allowed).expect("the benchmark condition parses");

    let mut group = c.benchmark_group("expressions");
    group.sample_size(20);
    group.bench_function("evaluate typical if x100k", |b| {
        b.iter(|| {
            for _ in 0..EVALUATIONS {
                black_box(expr.evaluate(black_box(&ctx)).expect("evaluates"));
            }
        })
    });
    group.bench_function("parse+evaluate typical if x100k", |b| {
        b.iter(|| {
            for _ in 0..EVALUATIONS {
                let expr = parse(black_box(CONDITION), &allowed).expect("parses");
                black_box(expr.evaluate(&ctx).expect("evaluates"));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
