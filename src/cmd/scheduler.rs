//! `kiln scheduler`: the scheduler service on one port: gRPC (h2c) for runners and users'
//! commands, and HTTP for the embedded cache, snapshots and artifacts. This file reads flags,
//! sets up the tokens, wires the pieces and prints where things are.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use kiln_scheduler::service::planner::DiscoveryPlanner;
use kiln_scheduler::service::{Scheduler, ServiceConfig, SystemClock};
use kiln_scheduler::store::prelude::*;
use kiln_scheduler::store::{SqliteStore, TokenKind};
use tokio::signal::unix::{signal, SignalKind};

use crate::cmd::cache::parse_duration;

#[derive(clap::Args, Debug)]
pub struct SchedulerArgs {
    /// Where to listen: HOST:PORT (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8470")]
    pub listen: SocketAddr,
    /// The data directory: database, snapshots, artifacts, cache, tokens.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// The token runners register with (default: DIR/registration-token, created on first
    /// start).
    #[arg(long, value_name = "T")]
    pub registration_token: Option<String>,
    /// How long a job's lease lasts without renewal (runners renew every third of it).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// How often runners say they are alive.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// The longest a runner's poll for a job waits.
    #[arg(long, value_name = "DURATION", default_value = "25s", value_parser = parse_duration)]
    pub poll_timeout: Duration,
    /// How long a job may wait for a runner with its labels before it fails.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub queue_timeout: Duration,
    /// How long a run's artifacts are kept.
    #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = parse_duration)]
    pub artifact_retention: Duration,
    /// The URL runners reach this scheduler at (default: http://ADDR of --listen).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
}

/// How long a stop waits for open calls (long polls, watch streams) before cutting them.
const STOP_GRACE: Duration = Duration::from_secs(3);

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub fn run(args: SchedulerArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: SchedulerArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("cannot create the data directory {}", args.data.display()))?;
    let store = SqliteStore::open(&args.data, unix_ms())?;
    let now = unix_ms();
    let registration_file = args.data.join("registration-token");
    let registration = match &args.registration_token {
        Some(token) => {
            anyhow::ensure!(
                token.trim().len() >= 16,
                "--registration-token must be at least 16 characters"
            );
            token.trim().to_owned()
        }
        None => {
            store
                .data_dir()
                .load_or_create_token("registration-token")?
                .0
        }
    };
    let (control, _) = store.data_dir().load_or_create_token("control-token")?;
    store.write(|tx| {
        tx.set_token(TokenKind::Registration, &registration, now)?;
        tx.set_token(TokenKind::Control, &control, now)
    })?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr().context("the listening address")?;
    let public_url = match &args.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None if address.ip().is_unspecified() => {
            eprintln!(
                "kiln scheduler: listening on all addresses; runners are told http://127.0.0.1:{}, so give --public-url for runners on other hosts",
                address.port()
            );
            format!("http://127.0.0.1:{}", address.port())
        }
        None => format!("http://{address}"),
    };
    let config = ServiceConfig {
        lease_ttl: args.lease_ttl,
        heartbeat_interval: args.heartbeat_interval,
        poll_timeout: args.poll_timeout,
        queue_timeout: args.queue_timeout,
        public_url: public_url.clone(),
        artifact_retention: args.artifact_retention,
        ..ServiceConfig::default()
    };
    let cache_dir = args.data.join("cache");
    let mut cache_config = kiln_cache::ServiceConfig::new(&cache_dir);
    cache_config.public_url = Some(public_url.clone());
    let cache = kiln_cache::CacheService::open(cache_config).context("cannot open the cache")?;
    let scheduler = Arc::new(Scheduler::open(
        Arc::new(store),
        Arc::new(DiscoveryPlanner),
        config,
        Arc::new(SystemClock),
    )?);

    {
        let scheduler = scheduler.clone();
        cache.add_metrics_source(Arc::new(move || match scheduler.metrics_text() {
            Ok(text) => text,
            Err(error) => {
                eprintln!("kiln scheduler: /metrics without the scheduler's part: {error}");
                String::new()
            }
        }));
    }
    let (runner_service, control_service) = kiln_scheduler::grpc::services(scheduler.clone());
    let app = tonic::service::Routes::new(runner_service)
        .add_service(control_service)
        .into_axum_router()
        .merge(kiln_scheduler::http::router(scheduler.clone()))
        .merge(cache.router());

    let ticker = {
        let scheduler = scheduler.clone();
        let period = (args.lease_ttl / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let scheduler = scheduler.clone();
                match tokio::task::spawn_blocking(move || scheduler.tick()).await {
                    Ok(Err(error)) => eprintln!("kiln scheduler: {error}"),
                    Err(error) => eprintln!("kiln scheduler: the periodic work failed: {error}"),
                    Ok(Ok(())) => {}
                }
            }
        })
    };
    let maintenance = {
        let cache = cache.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tick.tick().await;
                let store = cache.store().clone();
                let _ =
                    tokio::task::spawn_blocking(move || store.maintain(SystemTime::now())).await;
            }
        })
    };

    println!(
        "kiln scheduler listening on {public_url} (data in {})",
        args.data.display()
    );
    match &args.registration_token {
        Some(_) => println!("runners register with the token given by --registration-token"),
        None => println!(
            "runners register with the token in {}",
            registration_file.display()
        ),
    }
    println!(
        "commands (kiln submit, kiln runs...) use the token in {}",
        args.data.join("control-token").display()
    );

    let mut terminate = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;
    let stopping = Arc::new(tokio::sync::Notify::new());
    let shutdown = {
        let stopping = stopping.clone();
        async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            eprintln!("kiln scheduler: stopping");
            stopping.notify_one();
        }
    };
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(app))
        .serve_with_incoming_shutdown(
            // Small replies (a job for a long poll) must not wait for the peer's delayed ACK:
            // with Nagle's algorithm on, each took 40 ms on loopback (benches/dispatch).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        );
    // Long polls and watch streams would hold a graceful stop open; they are cut after a
    // grace (their clients retry or resume), since every accepted call is committed already.
    tokio::select! {
        served = server => served.context("the scheduler's server failed")?,
        () = async {
            stopping.notified().await;
            tokio::time::sleep(STOP_GRACE).await;
        } => eprintln!("kiln scheduler: calls still open after {}s were cut", STOP_GRACE.as_secs()),
    }
    ticker.abort();
    maintenance.abort();
    let store = cache.store().clone();
    let _ = tokio::task::spawn_blocking(move || store.flush_durability()).await;
    Ok(ExitCode::SUCCESS)
}
