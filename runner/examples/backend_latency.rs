//! Latency of one job with one `true` step: prepare, exec, cleanup, per backend; then the
//! wall time of act's Docker benchmark shape (a 3-leg matrix plus one dependant job, two
//! steps each) run straight on the backend, as the engine would.
//!
//! `cargo run -p kiln-runner --release --example backend_latency [ROUNDS]`
//! Docker rounds use the busybox test image and `kiln-base:bookworm` when it exists.

use std::time::{Duration, Instant};

use kiln_runner::backend::{
    host_base_env, Backend, ContainerSpec, DockerBackend, ExecOutcome, ExecSpec, HostBackend,
    JobSpec, ServiceSpec,
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

/// One job of the matrix shape; returns when its result is known. With `cleanup_in_background`
/// the cleanup is spawned instead of awaited, as an engine can do (it is off the critical path).
async fn shape_job(
    docker: &DockerBackend,
    image: &str,
    key: String,
    cleanup_in_background: bool,
) -> Option<tokio::task::JoinHandle<()>> {
    let workspace = tempfile::tempdir().expect("workspace");
    let spec = JobSpec {
        job_key: key,
        container: Some(ContainerSpec {
            image: image.into(),
            ..Default::default()
        }),
        workspace: workspace.path().to_path_buf(),
        ..Default::default()
    };
    let cancel = CancellationToken::new();
    let env = docker.prepare(&spec, &cancel).await.expect("prepare");
    for script in ["echo hello", "echo world"] {
        let step = ExecSpec {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            ..Default::default()
        };
        let outcome = docker.exec(&env, &step, &mut Vec::new(), &cancel).await;
        assert_eq!(outcome.expect("exec"), ExecOutcome::Exited(0));
    }
    if cleanup_in_background {
        let docker = docker.clone();
        Some(tokio::spawn(async move {
            docker.cleanup(&env).await.expect("cleanup")
        }))
    } else {
        docker.cleanup(&env).await.expect("cleanup");
        None
    }
}

async fn matrix_shape(
    docker: &DockerBackend,
    image: &str,
    cleanup_in_background: bool,
) -> Duration {
    let started = Instant::now();
    let pid = std::process::id();
    let legs = (0..3).map(|leg| {
        shape_job(
            docker,
            image,
            format!("shape-{pid}-{cleanup_in_background}-{leg}"),
            cleanup_in_background,
        )
    });
    let mut cleanups = futures_util::future::join_all(legs).await;
    let dependant = format!("shape-{pid}-{cleanup_in_background}-after");
    cleanups.push(shape_job(docker, image, dependant, cleanup_in_background).await);
    let wall = started.elapsed();
    for cleanup in cleanups.into_iter().flatten() {
        cleanup.await.expect("cleanup task");
    }
    wall
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
    let has_base = image_exists(docker.client(), base).await.unwrap_or(false);
    if has_base {
        report(
            "docker kiln-base:bookworm",
            measure(&docker, Some(base), &[], rounds).await,
        );
    }
    let shape_image = if has_base { base } else { busybox.as_str() };
    for cleanup_in_background in [false, true] {
        let wall = matrix_shape(&docker, shape_image, cleanup_in_background).await;
        println!(
            "3-leg matrix + 1 dependant on {shape_image}, cleanup {}: {:.0} ms wall",
            if cleanup_in_background {
                "in background"
            } else {
                "awaited"
            },
            wall.as_secs_f64() * 1e3
        );
    }
}
