//! Latency of one job with one `true` step: prepare, exec, cleanup, per backend.
//!
//! `cargo run -p kiln-runner --release --example backend_latency [ROUNDS]`
//! Docker rounds use the busybox test image and `kiln-base:bookworm` when it exists.

use std::time::{Duration, Instant};

use kiln_runner::backend::{
    host_base_env, Backend, ContainerSpec, ExecOutcome, ExecSpec, HostBackend, JobSpec, ServiceSpec,
};
use kiln_runner::image::image_exists;
use kiln_runner::testing::{ensure_busybox_image, require_docker};
use tokio_util::sync::CancellationToken;

struct Timings {
    prepare: Vec<Duration>,
    exec: Vec<Duration>,
    cleanup: Vec<Duration>,
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

async fn measure(
    backend: &dyn Backend,
    image: Option<&str>,
    services: &[ServiceSpec],
    rounds: usize,
) -> Timings {
    let workspace = tempfile::tempdir().expect("workspace");
    let cancel = CancellationToken::new();
    let mut timings = Timings {
        prepare: Vec::new(),
        exec: Vec::new(),
        cleanup: Vec::new(),
    };
    for round in 0..rounds {
        let spec = JobSpec {
            job_key: format!("latency-{}-{round}", std::process::id()),
            container: image.map(|image| ContainerSpec {
                image: image.into(),
                ..Default::default()
            }),
            services: services.to_vec(),
            workspace: workspace.path().to_path_buf(),
            ..Default::default()
        };
        let step = ExecSpec {
            argv: vec!["true".into()],
            env: host_base_env(),
            ..Default::default()
        };
        let started = Instant::now();
        let env = backend.prepare(&spec, &cancel).await.expect("prepare");
        let prepared = Instant::now();
        let outcome = backend
            .exec(&env, &step, &mut Vec::new(), &cancel)
            .await
            .expect("exec");
        let executed = Instant::now();
        backend.cleanup(&env).await.expect("cleanup");
        let cleaned = Instant::now();
        assert_eq!(outcome, ExecOutcome::Exited(0));
        timings.prepare.push(prepared - started);
        timings.exec.push(executed - prepared);
        timings.cleanup.push(cleaned - executed);
    }
    timings
}

fn report(label: &str, mut timings: Timings) {
    let (p, e, c) = (
        median(&mut timings.prepare),
        median(&mut timings.exec),
        median(&mut timings.cleanup),
    );
    println!(
        "{label:<28} prepare {:>7.1} ms  exec {:>7.2} ms  cleanup {:>7.1} ms  total {:>7.1} ms  (median of {})",
        p.as_secs_f64() * 1e3,
        e.as_secs_f64() * 1e3,
        c.as_secs_f64() * 1e3,
        (p + e + c).as_secs_f64() * 1e3,
        timings.prepare.len()
    );
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let host = HostBackend::new();
    report("host", measure(&host, None, &[], rounds.max(100)).await);
    let Some(docker) = require_docker().await else {
        return;
    };
    let busybox = ensure_busybox_image(&docker).await;
    report(
        "docker busybox",
        measure(&docker, Some(&busybox), &[], rounds).await,
    );
    let web = ServiceSpec {
        name: "web".into(),
        container: ContainerSpec {
            image: busybox.clone(),
            options:
                "--health-cmd 'wget -q -O /dev/null http://localhost/' --health-interval 100ms"
                    .into(),
            ..Default::default()
        },
    };
    report(
        "docker busybox + 1 service",
        measure(&docker, Some(&busybox), &[web], rounds).await,
    );
    let base = "kiln-base:bookworm";
    if image_exists(docker.client(), base).await.unwrap_or(false) {
        report(
            "docker kiln-base:bookworm",
            measure(&docker, Some(base), &[], rounds).await,
        );
    }
}
