//! Expansion time for a matrix at GitHub's 256-job limit: 4 x 4 x 4 x 4 vectors, one exclude
//! that removes 16 combinations, 16 includes appended as new jobs, and two extras-only
//! includes merged into every combination.

use criterion::{criterion_group, criterion_main, Criterion};
use kiln_workflow::matrix::{expand, MAX_LEGS};
use kiln_workflow::{Object, Value};
use std::hint::black_box;

fn vector(prefix: &str) -> Value {
    Value::array(
        (0..4)
            .map(|i| Value::string(format!("{prefix}{i}")))
            .collect(),
    )
}

fn entry(pairs: &[(&str, Value)]) -> Value {
    let mut object = Object::new();
    for (key, value) in pairs {
        object.insert(*key, value.clone());
    }
    Value::object(object)
}

fn limit_matrix() -> Object {
    let mut matrix = Object::new();
    for name in ["os", "arch", "runtime", "db"] {
        matrix.insert(name, vector(name));
    }
    matrix.insert(
        "exclude",
        Value::array(vec![entry(&[
            ("os", Value::string("os0")),
            ("arch", Value::string("arch0")),
        ])]),
    );
    let mut includes = vec![
        entry(&[("experimental", Value::Bool(false))]),
        entry(&[("timeout", Value::Number(30.0))]),
    ];
    includes.extend((0..16).map(|i| {
        entry(&[
            ("os", Value::string(format!("extra{i}"))),
            ("arch", Value::string("arm64")),
        ])
    }));
    matrix.insert("include", Value::array(includes));
    matrix
}

fn bench_expand(c: &mut Criterion) {
    let matrix = limit_matrix();
    let legs = expand(&matrix).map(|legs| legs.len());
    assert_eq!(
        legs,
        Ok(MAX_LEGS),
        "the benchmark matrix must sit exactly at the limit"
    );
    c.bench_function("expand 256-leg matrix", |b| {
        b.iter(|| expand(black_box(&matrix)))
    });
}

criterion_group!(benches, bench_expand);
criterion_main!(benches);
