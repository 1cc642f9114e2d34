//! `kiln run`: execute a repository's workflows locally, in Docker or on the host. The flags
//! follow act's where they mean the same, so act users switch without relearning.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;

use crate::cmd::request::RequestFlags;
use crate::run;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorFlag {
    /// Each job in a container (default when a Docker daemon answers).
    Docker,
    /// Each job directly on this machine, in its own workspace.
    Host,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub request: RequestFlags,

    /// Map a runs-on label to an image, or to the host with `LABEL=-self-hosted` (repeatable).
    #[arg(short = 'P', long = "platform", value_name = "LABEL=IMAGE")]
    pub platforms: Vec<String>,

    /// Use a local directory for a remote action or reusable workflow (repeatable); the
    /// repository may be written as its URL: `https://github.com/OWNER/REPO@REF=PATH`.
    #[arg(long = "local-repository", value_name = "OWNER/REPO@REF=PATH")]
    pub local_repositories: Vec<String>,

    /// List the jobs the event would run, by stage, and exit.
    #[arg(short = 'l', long = "list")]
    pub list: bool,

    /// Draw the job graph the event would run, and exit.
    #[arg(short = 'g', long = "graph")]
    pub graph: bool,

    /// Dry run: decide every job and step as the run would, without executing anything.
    #[arg(short = 'n', long = "dryrun")]
    pub dry_run: bool,

    /// Where jobs run (default: docker when a daemon answers, else host).
    #[arg(long = "executor", value_enum)]
    pub executor: Option<ExecutorFlag>,

    /// Most jobs running at once (default: unlimited on the host, twice the cores with Docker).
    #[arg(long = "parallel", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub parallel: Option<u32>,

    /// Write the run's result as JSON to FILE.
    #[arg(long = "report", value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Also write each job's step summary to DIR/<workflow>/<job>.md.
    #[arg(long = "summary-dir", value_name = "DIR")]
    pub summary_dir: Option<PathBuf>,

    /// Directory of remote actions laid out as `owner/repo@ref/`.
    #[arg(long = "action-cache", value_name = "DIR")]
    pub action_cache: Option<PathBuf>,

    /// Use this cache server (kiln's, or any speaking the GitHub cache API) instead of the
    /// embedded one.
    #[arg(long = "cache-server", value_name = "URL", conflicts_with = "no_cache")]
    pub cache_server: Option<String>,

    /// The job token for --cache-server (from `kiln cache token` on that server).
    #[arg(long = "cache-token", value_name = "TOKEN", requires = "cache_server")]
    pub cache_token: Option<String>,

    /// Where the embedded cache server keeps its data (default: ~/.cache/kiln/cache).
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Run without a cache server: cache steps miss and warn.
    #[arg(long = "no-cache")]
    pub no_cache: bool,

    /// Never fetch remote actions; use only the action cache and local repositories.
    #[arg(long = "action-offline-mode")]
    pub action_offline_mode: bool,

    /// Base URL remote actions are cloned from (`{base}/owner/repo`).
    #[arg(
        long = "action-base-url",
        value_name = "URL",
        default_value = "https://github.com"
    )]
    pub action_base_url: String,

    /// Where artifacts are stored (default: under the run's directory).
    #[arg(long = "artifact-dir", value_name = "DIR")]
    pub artifact_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    run::execute(args)
}
