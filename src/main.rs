//! The `kiln` command line. Thin by design: every command parses its flags, calls a library
//! crate, and renders the result. Behaviour lives in the crates so tests and other front ends
//! share it.

mod cmd;
mod html;
mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Run GitHub Actions workflows on your own machines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the workflows an event triggers, locally: in Docker or on the host.
    Run(Box<cmd::run::Args>),
    /// Check workflow files and report every problem as file:line:col.
    Validate(cmd::validate::Args),
    /// Show the job graph a workflow would run: stages, matrix legs, needs.
    Plan(cmd::plan::Args),
    /// Evaluate one expression (or a batch) the way GitHub does.
    Expr(cmd::expr::Args),
    /// Print what hashFiles() gives for the patterns.
    HashFiles(cmd::hash_files::Args),
    /// Run the content-addressed cache server, or mint tokens for it.
    Cache(cmd::cache::CacheArgs),
    /// Build the local images Docker jobs run in.
    Image(cmd::image::ImageArgs),
    /// Benchmark: replay a repository's history through the cache.
    Bench(cmd::bench::BenchArgs),
    /// Register this machine as a runner of a kiln scheduler, and run its jobs.
    Runner(cmd::runner::RunnerArgs),
    /// Run the scheduler: registered runners take the jobs of submitted runs from it.
    Scheduler(cmd::scheduler::SchedulerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cmd::run::run(*args),
        Command::Validate(args) => cmd::validate::run(args),
        Command::Plan(args) => cmd::plan::run(args),
        Command::Expr(args) => cmd::expr::run(args),
        Command::HashFiles(args) => cmd::hash_files::run(args),
        Command::Cache(args) => cmd::cache::run(args),
        Command::Image(args) => cmd::image::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Runner(args) => cmd::runner::run(args),
        Command::Scheduler(args) => cmd::scheduler::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kiln: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
