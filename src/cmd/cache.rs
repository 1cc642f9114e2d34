//! `kiln cache serve` and `kiln cache token`: run the content-addressed cache server alone, and
//! mint job tokens for scripts, tests and other CI systems.

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
    #[arg(long, default_value = "20GiB", value_parser = parse_size)]
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
    }
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
    let secret = kiln_cache::Secret::load_or_create(&data)
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

/// `20GiB`, `512MiB`, `10GB`, `1048576`.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 20GiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use KiB, MiB, GiB, TiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `90s`, `30m`, `6h`, `2d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
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

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        assert!(parse_size("5 parsecs").is_err());
        assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(21_600)));
        assert!(parse_duration("6y").is_err());
    }
}
