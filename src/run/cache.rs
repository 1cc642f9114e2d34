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
use kiln_runner::backend::host_address;
use kiln_runner::platform::DEFAULT_IMAGE;

/// A job token outlives any local run; tokens are scoped to the repository and ref anyway.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

pub struct RunCache {
    /// None when no address containers can reach was found: the description says why.
    pub endpoint: Option<CacheEndpoint>,
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
            endpoint: Some(CacheEndpoint { url, token }),
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

    // Container jobs reach this machine at an address on Docker's bridge; host jobs and the
    // built-in cache step (which runs in this process) reach that address too. Host-only runs
    // listen on loopback alone. Where containers cannot reach it, no job gets the cache: a URL
    // that works for some of a run's jobs only would fail the others in confusing ways.
    let (bind_ip, reached) = match (executor.kind, &executor.docker) {
        (ExecutorKind::Docker, Some(docker)) => {
            match host_address::find(docker.client(), &platform_images(&args.platforms)).await {
                Ok(found) => (found.ip, Some(found.found)),
                Err(why) => return Ok(Some(unreachable_from_containers(&why))),
            }
        }
        _ => (IpAddr::V4(Ipv4Addr::LOCALHOST), None),
    };
    let listener = match (
        tokio::net::TcpListener::bind(SocketAddr::new(bind_ip, 0)).await,
        &reached,
    ) {
        (Ok(listener), _) => listener,
        // A daemon on another machine or in a VM reports a bridge this machine does not have.
        (Err(error), Some(how)) => {
            return Ok(Some(unreachable_from_containers(&format!(
                "{bind_ip}, {how}, is not an address kiln can listen on here: {error}"
            ))))
        }
        (Err(error), None) => {
            return Err(error).with_context(|| {
                format!("cannot listen on {bind_ip} for the embedded cache server")
            })
        }
    };
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
    let reached = reached
        .map(|how| format!("; containers reach it at {bind_ip}, {how}"))
        .unwrap_or_default();
    Ok(Some(RunCache {
        description: format!(
            "cache: embedded server at {url} (data in {}{reached})",
            data_dir.display()
        ),
        endpoint: Some(CacheEndpoint { url, token }),
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

/// The run's cache when container jobs could not reach the embedded server: none, and a
/// first line that says why and what to do.
fn unreachable_from_containers(why: &str) -> RunCache {
    RunCache {
        description: format!(
            "cache: none for this run: no address of this machine that containers can reach was found ({why}); \
             actions/cache steps will warn and miss. Pass --cache-server URL --cache-token TOKEN \
             for a server containers can reach, or --no-cache"
        ),
        endpoint: None,
        server: None,
    }
}

/// The images the run's jobs may use, to ask one of them (when present) for its route.
fn platform_images(platform_flags: &[String]) -> Vec<String> {
    let mut images = vec![DEFAULT_IMAGE.to_owned()];
    for flag in platform_flags {
        if let Some((_, image)) = flag.split_once('=') {
            let image = image.trim();
            if image != "-self-hosted" && !images.iter().any(|i| i == image) {
                images.push(image.to_owned());
            }
        }
    }
    images
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_images_to_ask_are_the_runs_platform_images() {
        let flags = [
            "ubuntu-latest=node:20".to_owned(),
            "self-hosted=-self-hosted".to_owned(),
            "gpu= node:20 ".to_owned(),
            "arm=kiln-base:bookworm".to_owned(),
        ];
        assert_eq!(platform_images(&flags), [DEFAULT_IMAGE, "node:20"]);
    }

    #[test]
    fn an_unreachable_server_gives_jobs_no_url_and_says_why_first() {
        let cache = unreachable_from_containers("the bridge network reports no gateway");
        assert!(cache.endpoint.is_none());
        assert!(cache.server.is_none());
        assert!(
            cache.description.starts_with("cache: none for this run: ")
                && cache
                    .description
                    .contains("(the bridge network reports no gateway)")
                && cache.description.contains("--cache-server URL"),
            "{}",
            cache.description
        );
    }
}
