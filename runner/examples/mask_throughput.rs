//! Lines per second through the log masker, the work every output line of a step goes
//! through. Prints, for each scenario, the masker's rate and the rate of a plain copy of the
//! same lines measured in the same run (the reference), so builds can be compared as ratios
//! on a noisy machine:
//!
//! ```text
//! cargo run --release -p kiln-runner --example mask_throughput [SECONDS_PER_ROUND]
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use kiln_runner::mask::{LineMasker, Masker};

/// Build-log-like lines: compiler output, paths, numbers, some punctuation.
fn lines() -> Vec<String> {
    let words = [
        "Compiling",
        "serde",
        "v1.0.210",
        "(/home/runner/.cargo/registry/src/index)",
        "warning:",
        "unused",
        "variable",
        "`count`",
        "-->",
        "src/main.rs:42:9",
        "Downloading",
        "https://",
        "objects.githubusercontent.com/github-production-release-asset",
        "100%",
        "|",
        "=====",
        "Finished",
        "release",
        "[optimized]",
        "target(s)",
        "in",
        "12.34s",
        "test",
        "ok",
        "PASS",
        "{\"level\":\"info\",\"msg\":\"request\"}",
        "GET",
        "/api/v1/items?page=2",
        "200",
        "OK",
    ];
    let mut state = 0x2545_f491_u32;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as usize
    };
    (0..4096)
        .map(|_| {
            let count = 6 + next() % 14;
            (0..count)
                .map(|_| words[next() % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn rate(seconds: f64, lines: &[String], mut work: impl FnMut(&str) -> usize) -> f64 {
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut done = 0u64;
    let mut sink = 0usize;
    while start.elapsed() < budget {
        for line in lines {
            sink = sink.wrapping_add(work(line));
        }
        done += lines.len() as u64;
    }
    black_box(sink);
    done as f64 / start.elapsed().as_secs_f64()
}

fn scenario(name: &str, masker: &Masker, lines: &[String], seconds: f64) {
    let mut masked = Vec::new();
    let mut copied = Vec::new();
    for _ in 0..5 {
        copied.push(rate(seconds, lines, |line| {
            black_box(line.to_owned()).len()
        }));
        let mut stream = LineMasker::new();
        masked.push(rate(seconds, lines, |line| {
            black_box(stream.mask(masker, line).into_owned()).len()
        }));
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (masked, copied) = (median(&mut masked), median(&mut copied));
    println!(
        "{name:<28} masked {:>6.2} M lines/s   copy {:>6.2} M lines/s   masked/copy {:.3}",
        masked / 1e6,
        copied / 1e6,
        masked / copied
    );
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.3);
    let lines = lines();

    let mut token_only = Masker::new();
    token_only.add("kiln-cache-token-5f0c1e2d9a8b7c6d");
    scenario("cache token only", &token_only, &lines, seconds);

    let mut five = Masker::new();
    for secret in [
        "kiln-cache-token-5f0c1e2d9a8b7c6d",
        "hunter2-but-longer",
        "AbCdEfGhIjKlMnOpQrStUvWxYz012345",
        "p@ss\"word\\with'quotes&more",
        "sk_live_51HcYbQ2eZvKYlo2C8x7",
    ] {
        five.add(secret);
    }
    scenario("five secrets", &five, &lines, seconds);

    let mut key = five;
    let pem: String = (0..26)
        .map(|i| {
            format!("MIIEow{i:02}IBAAKCAQEAu7v9QmZk3n1qB0t8Yk2xL4pZr6sWcVbNm1hJgFdSaQeRtYuI\n")
        })
        .collect();
    key.add(&format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{pem}-----END RSA PRIVATE KEY-----\n"
    ));
    scenario("five secrets + a PEM key", &key, &lines, seconds);
}
