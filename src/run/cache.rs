//! The cache server a local run's jobs use: kiln's own server started inside this process
//! (data under the user's cache directory, kept between runs), or another server given with
//! `--cache-server`. Built-in `actions/cache` steps and stock clients inside jobs reach it
//! through the endpoint handed to every job.

use anyhow::Context as _;
use kiln_cache::{CacheService, ServiceConfig, TokenRequest};
use kiln_runner::executor::CacheEndpoint;
use kiln_workflow::{Object, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::platform::ExecutorKind;
use super::setup::ExecutorChoice;
use crate::cmd::run::Args;

/// A job token outlives any local run; tokens are scoped to the repository and ref anyway.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

pub struct RunCache {
    pub endpoint: CacheEndpoint,
    /// Where it is, for the run's first lines.
    pub description: String,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl RunCache {
    /// Stops the embedded server once every job is done.
    pub async fn stop(self) {
        if let Some((shutdown, task)) = self.server {
            let _ = shutdown.send(());
            let _ = task.await;
        }
    }
}

/// The cache for this run, or None with `--no-cache`.
pub async fn start(
    args: &Args,
    executor: &ExecutorChoice,
    github: &Object,
) -> anyhow::Result<Option<RunCache>> {
    if args.no_cache {
        return Ok(None);
    }
    if let Some(url) = &args.cache_server {
        let token = args
            .cache_token
            .clone()
            .or_else(|| std::env::var("KILN_CACHE_TOKEN").ok())
            .context("--cache-server needs a job token: pass --cache-token (or set KILN_CACHE_TOKEN) with one from `kiln cache token` on that server")?;
        let url = if url.ends_with('/') {
            url.clone()
        } else {
            format!("{url}/")
        };
        return Ok(Some(RunCache {
            description: format!("cache: {url}"),
            endpoint: CacheEndpoint { url, token },
            server: None,
        }));
    }

    let data_dir = match &args.cache_dir {
        Some(dir) => dir.clone(),
        None => default_cache_dir().context(
            "cannot find a cache directory: set HOME or XDG_CACHE_HOME, or pass --cache-dir",
        )?,
    };
    // Created (mode 0700) by the store; another kiln process may have it open too, which the
    // store handles (see kiln_cache's `sharing`).
    let service = CacheService::open(ServiceConfig::new(&data_dir))
        .with_context(|| format!("cannot open the cache in {}", data_dir.display()))?;

    // Container jobs reach the host through the Docker bridge's gateway; host jobs and the
    // built-in cache step (which runs in this process) reach that address too. Host-only
    // runs listen on loopback alone.
    let advertised = match (executor.kind, &executor.docker) {
        (ExecutorKind::Docker, Some(docker)) => bridge_gateway(docker.client()).await,
        _ => None,
    };
    let bind_ip = advertised.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(bind_ip, 0))
        .await
        .with_context(|| format!("cannot listen on {bind_ip} for the embedded cache server"))?;
    let address = listener
        .local_addr()
        .context("embedded cache server address")?;

    let field = |name: &str| match github.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.to_string()),
        _ => None,
    };
    let request = TokenRequest {
        repo: field("repository").unwrap_or_else(|| "local/repository".into()),
        git_ref: field("ref").unwrap_or_else(|| "refs/heads/main".into()),
        base_ref: field("base_ref"),
        read_only: false,
        ttl: TOKEN_TTL,
    };
    let token = service
        .mint_token(&request)
        .context("cannot mint a cache token")?;

    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = kiln_cache::serve(listener, service, async {
            let _ = stopped.await;
        })
        .await;
    });
    let url = format!("http://{address}/");
    Ok(Some(RunCache {
        description: format!(
            "cache: embedded server at {url} (data in {})",
            data_dir.display()
        ),
        endpoint: CacheEndpoint { url, token },
        server: Some((shutdown, task)),
    }))
}

/// `$XDG_CACHE_HOME/kiln/cache`, else `$HOME/.cache/kiln/cache`.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("kiln").join("cache"))
}

/// The gateway of Docker's default bridge network: the host as containers see it.
async fn bridge_gateway(docker: &bollard::Docker) -> Option<IpAddr> {
    let network = docker
        .inspect_network(
            "bridge",
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .ok()?;
    network
        .ipam?
        .config?
        .into_iter()
        .filter_map(|c| c.gateway)
        .find_map(|g| g.parse().ok())
}
