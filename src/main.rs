//! The `kiln` command line. Thin by design: every command parses its flags, calls a library
//! crate, and renders the result. Behaviour lives in the crates so tests and other front ends
//! share it.

mod cmd;
mod html;
mod remote;
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
    /// Run the workflows an event triggers on a kiln scheduler, from this repository's
    /// working copy, and follow them.
    Submit(Box<cmd::submit::Args>),
    /// List a scheduler's recent runs.
    Runs(cmd::control::RunsArgs),
    /// Print a run's log lines, or follow them.
    Logs(cmd::control::LogsArgs),
    /// Cancel a run on a scheduler.
    Cancel(cmd::control::CancelArgs),
    /// Run a finished run's failed jobs again.
    Rerun(cmd::control::RerunArgs),
    /// List a scheduler's registered runners.
    Runners(cmd::control::RunnersArgs),
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
        Command::Submit(args) => cmd::submit::run(*args),
        Command::Runs(args) => cmd::control::runs(args),
        Command::Logs(args) => cmd::control::logs(args),
        Command::Cancel(args) => cmd::control::cancel(args),
        Command::Rerun(args) => cmd::control::rerun(args),
        Command::Runners(args) => cmd::control::runners(args),
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
