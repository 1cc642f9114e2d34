//! `kiln cache serve` and `kiln cache token`: run the content-addressed cache server alone, and
//! mint job tokens for scripts, tests and other CI systems.

use crate::cmd::output::{emit, Format};
use anyhow::{bail, Context};
use kiln_cache::{CacheService, ServiceConfig, TokenRequest};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum CacheCommand {
    /// Serve the cache (GitHub cache API v1 and v2, kiln's native API, /metrics).
    Serve(ServeArgs),
    /// Print a job token for this server (set it as ACTIONS_RUNTIME_TOKEN).
    Token(TokenArgs),
    /// What the server saw: lookups, hits and misses, bytes, per repository, key family and scope.
    Stats(StatsArgs),
}

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// A running server; needs a job token of the repository (--token, else $KILN_CACHE_TOKEN).
    #[arg(long, conflicts_with = "data", required_unless_present = "data")]
    pub url: Option<String>,
    /// A server's data directory, read directly (read-only; every repository).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Job token for --url (see `kiln cache token`).
    #[arg(long)]
    pub token: Option<String>,
    /// Only this repository (owner/name).
    #[arg(long)]
    pub repo: Option<String>,
    /// Only events of this recent period, e.g. 30d, 12h (default: everything kept).
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Write DIR/cache-stats.{txt,json,html} instead of printing.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on. Use 0.0.0.0:PORT so job containers can reach it.
    #[arg(long, default_value = "127.0.0.1:8473")]
    pub listen: String,
    /// Data directory (chunks, index, signing key). Default: the user's cache directory.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Budget for stored bytes; least recently used entries are evicted above it (e.g. 20GiB).
    #[arg(long, default_value = "20GiB", value_parser = kiln_cache::units::parse_size)]
    pub max_size: u64,
    /// Entries not used for this many days are removed.
    #[arg(long, default_value_t = 7)]
    pub max_unused_days: u64,
    /// A repository's default branch, as REPO=BRANCH (repeatable); others use --default-branch-name.
    #[arg(long = "default-branch", value_name = "REPO=BRANCH")]
    pub default_branches: Vec<String>,
    /// Default branch of repositories not named by --default-branch.
    #[arg(long, default_value = "main")]
    pub default_branch_name: String,
    /// Base URL put into download/upload URLs (default: the Host the client used).
    #[arg(long)]
    pub public_url: Option<String>,
    /// How long the lookup record behind `kiln cache stats` keeps its events (e.g. 90d, 12h).
    #[arg(long, default_value = "90d", value_parser = parse_duration)]
    pub stats_retention: Duration,
}

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// Repository the token is for, e.g. octo/app.
    #[arg(long)]
    pub repo: String,
    /// The job's ref (its write scope), e.g. refs/heads/feature or refs/pull/5/merge.
    #[arg(long = "ref")]
    pub git_ref: String,
    /// A pull request's base branch, readable by the job.
    #[arg(long)]
    pub base_ref: Option<String>,
    /// Read access only, no saves.
    #[arg(long)]
    pub read_only: bool,
    /// Lifetime, e.g. 90m, 6h, 2d.
    #[arg(long, default_value = "6h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// The server's data directory (its signing key is read from there).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

pub fn run(args: CacheArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        CacheCommand::Serve(a) => serve(a),
        CacheCommand::Token(a) => token(a),
        CacheCommand::Stats(a) => stats(a),
    }
}

fn stats(a: StatsArgs) -> anyhow::Result<ExitCode> {
    let since_ms = match a.since {
        Some(d) => kiln_cache::store::now_ms() - d.as_millis() as i64,
        None => 0,
    };
    let mut report = match (&a.url, &a.data) {
        (Some(url), _) => {
            let from_env = std::env::var("KILN_CACHE_TOKEN")
                .ok()
                .filter(|t| !t.is_empty());
            let Some(token) = a.token.as_ref().or(from_env.as_ref()) else {
                bail!("--url needs a job token of the repository: --token TOKEN or KILN_CACHE_TOKEN (kiln cache token mints one)");
            };
            kiln_cache::client::CacheClient::new(url, token)
                .stats(since_ms)
                .with_context(|| format!("asking {url} for its statistics"))?
        }
        (None, Some(data)) => kiln_cache::stats::read(data, a.repo.as_deref(), since_ms)
            .with_context(|| format!("reading the statistics in {}", data.display()))?,
        (None, None) => bail!("name a server with --url URL or a data directory with --data DIR"),
    };
    if let Some(repo) = &a.repo {
        // A token's report covers its own repository; --repo must agree with it.
        report.groups.retain(|g| &g.repository == repo);
        report.days.retain(|d| &d.repository == repo);
    }
    let text = match a.format {
        Format::Table => crate::cmd::stats::table(&report),
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Html => crate::cmd::stats::html(&report),
    };
    emit(&text, a.out.as_deref(), "cache-stats", a.format)?;
    Ok(ExitCode::SUCCESS)
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("kiln/cache-server"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --data DIR")?;
    Ok(PathBuf::from(home).join(".cache/kiln/cache-server"))
}

fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let data = match a.data {
        Some(d) => d,
        None => default_data_dir()?,
    };
    let mut cfg = ServiceConfig::new(&data);
    cfg.store.max_size = a.max_size;
    cfg.store.max_unused = Duration::from_secs(a.max_unused_days.saturating_mul(86_400));
    cfg.store.stats_retention = a.stats_retention;
    cfg.default_branch = a.default_branch_name;
    cfg.public_url = a.public_url;
    for pair in &a.default_branches {
        let Some((repo, branch)) = pair.split_once('=') else {
            bail!("--default-branch {pair:?} must be REPO=BRANCH");
        };
        cfg.default_branches
            .insert(repo.to_string(), branch.to_string());
    }
    let service = CacheService::open(cfg)
        .with_context(|| format!("opening the cache in {}", data.display()))?;
    let shown = data.display().to_string();
    kiln_cache::serve_until_interrupted(service, &a.listen, |addr| {
        eprintln!("kiln cache server on http://{addr}/ (data in {shown})");
        eprintln!(
            "jobs: ACTIONS_CACHE_URL=http://{addr}/ ACTIONS_RESULTS_URL=http://{addr}/ \
             ACTIONS_RUNTIME_TOKEN=$(kiln cache token --data {shown} --repo R --ref REF)"
        );
    })?;
    Ok(ExitCode::SUCCESS)
}

fn token(a: TokenArgs) -> anyhow::Result<ExitCode> {
    let data = match a.data {
        Some(d) => d,
        None => default_data_dir()?,
    };
    // Only an existing cache: a mistyped --data must not mint a key no server uses.
    let secret = kiln_cache::Secret::load(&data)
        .with_context(|| format!("reading the signing key in {}", data.display()))?;
    let token = kiln_cache::token::mint(
        &secret,
        &TokenRequest {
            repo: a.repo,
            git_ref: a.git_ref,
            base_ref: a.base_ref,
            read_only: a.read_only,
            ttl: a.ttl,
        },
    )?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// `90s`, `30m`, `6h`, `2d`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 6h"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown duration unit {other:?} (use s, m, h, d)")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_args(data: PathBuf) -> TokenArgs {
        TokenArgs {
            repo: "o/r".into(),
            git_ref: "main".into(),
            base_ref: None,
            read_only: false,
            ttl: Duration::from_secs(60),
            data: Some(data),
        }
    }

    #[test]
    fn token_refuses_a_directory_without_a_cache() {
        let dir = tempfile::tempdir().unwrap();
        let typo = dir.path().join("cahce");
        let err = token(token_args(typo.clone())).unwrap_err();
        assert!(
            format!("{err:#}").contains("holds no kiln cache"),
            "{err:#}"
        );
        assert!(!typo.exists(), "a mistyped --data was created");
        // A directory that holds a cache works.
        let data = dir.path().join("cache");
        kiln_cache::Secret::load_or_create(&data).unwrap();
        assert!(token(token_args(data)).is_ok());
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(kiln_cache::units::parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(kiln_cache::units::parse_size("10GB"), Ok(10_000_000_000));
        assert!(kiln_cache::units::parse_size("5 parsecs").is_err());
        assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(21_600)));
        assert!(parse_duration("6y").is_err());
    }
}
