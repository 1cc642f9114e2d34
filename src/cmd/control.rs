//! `kiln runs`, `kiln logs`, `kiln cancel`, `kiln rerun` and `kiln runners`: what a user asks
//! a scheduler about its runs and runners. Tables for people, `--format json` for scripts.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use clap::ValueEnum;
use kiln_proto::v1 as pb;
use serde_json::json;

use crate::remote::convert::{job_status, run_status, time};
use crate::remote::follow::{Ending, Follow};
use crate::remote::{call, request, ConnectFlags, Control};
use crate::run::render::Renderer;
use crate::run::report::rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    #[command(flatten)]
    pub connect: ConnectFlags,
    /// At most this many runs, newest first.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub connect: ConnectFlags,
    /// The run (`kiln runs` lists them).
    pub run: String,
    /// Only this job: its id, its job path or its name (default: every job of the run).
    pub job: Option<String>,
    /// Keep printing lines as they come until the run is done.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub connect: ConnectFlags,
    /// The run to cancel.
    pub run: String,
}

#[derive(Debug, clap::Args)]
pub struct RerunArgs {
    #[command(flatten)]
    pub connect: ConnectFlags,
    /// The finished run to run again.
    pub run: String,
    /// Run again the jobs that failed or were cancelled, and the jobs that need them (the
    /// only kind of rerun there is; the flag says so where it is typed).
    #[arg(long, required = true)]
    pub failed: bool,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct RunnersArgs {
    #[command(flatten)]
    pub connect: ConnectFlags,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let runs = runtime()?.block_on(async {
        let control = Control::connect(&args.connect)?;
        call!(
            &control,
            list_runs,
            pb::ListRunsRequest { limit: args.limit }
        )
        .map_err(|status| control.explain(&status))
    })?;
    let runs = runs.runs;
    match args.format {
        Format::Json => print_json(&json!(runs.iter().map(run_json).collect::<Vec<_>>())),
        Format::Table => {
            let rows = runs
                .iter()
                .map(|run| {
                    vec![
                        run.run_id.clone(),
                        run.workflow_name.clone(),
                        run.event_name.clone(),
                        run.attempt.to_string(),
                        run_status(run),
                        when(run.created_unix_ms),
                        run.sha.get(..12).unwrap_or(&run.sha).to_owned(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "RUN", "WORKFLOW", "EVENT", "ATTEMPT", "STATUS", "CREATED", "SHA",
                ],
                rows,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let control = Control::connect(&args.connect)?;
        let run = get_run(&control, &args.run).await?;
        let only_job = match &args.job {
            None => None,
            Some(wanted) => Some(find_job(&run, wanted)?.job_id.clone()),
        };
        let mut renderer = Renderer::new(args.follow && std::io::stdout().is_terminal());
        let mut follow = Follow::new(std::slice::from_ref(&run), only_job);
        // Without --follow: the lines stored so far, also of a run still running.
        follow.stored_only = !args.follow;
        Ok(match follow.run(&control, &mut renderer).await? {
            Ending::Done | Ending::Shown => ExitCode::SUCCESS,
            Ending::Interrupted => ExitCode::from(130),
        })
    })
}

pub fn cancel(args: CancelArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let control = Control::connect(&args.connect)?;
        call!(
            &control,
            cancel_run,
            pb::CancelRunRequest {
                run_id: args.run.clone(),
            }
        )
        .map_err(|status| control.explain(&status))
    })?;
    println!(
        "cancelling run {}: queued jobs are cancelled, running ones stop within a heartbeat",
        args.run
    );
    Ok(ExitCode::SUCCESS)
}

pub fn rerun(args: RerunArgs) -> anyhow::Result<ExitCode> {
    // Not retried: each call starts an attempt.
    let run = runtime()?.block_on(async {
        let control = Control::connect(&args.connect)?;
        control
            .rpc
            .clone()
            .rerun_failed(request(pb::RerunFailedRequest {
                run_id: args.run.clone(),
            }))
            .await
            .map_err(|status| control.explain(&status))
    })?;
    let run = run.into_inner();
    match args.format {
        Format::Json => print_json(&run_json(&run)),
        Format::Table => {
            println!(
                "run {} attempt {} started; `kiln logs {} --follow` follows it",
                run.run_id, run.attempt, run.run_id
            );
            print_jobs(&run);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn runners(args: RunnersArgs) -> anyhow::Result<ExitCode> {
    let runners = runtime()?.block_on(async {
        let control = Control::connect(&args.connect)?;
        call!(&control, list_runners, pb::ListRunnersRequest {})
            .map_err(|status| control.explain(&status))
    })?;
    let runners = runners.runners;
    match args.format {
        Format::Json => print_json(&json!(runners
            .iter()
            .map(|r| json!({
                "id": r.runner_id,
                "name": r.name,
                "labels": r.labels,
                "online": r.online,
                "last_seen": time(r.last_seen_unix_ms).map(rfc3339),
                "running_jobs": r.running_job_ids,
                "capacity": r.capacity,
                "version": r.version,
            }))
            .collect::<Vec<_>>())),
        Format::Table => {
            let rows = runners
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        r.runner_id.clone(),
                        r.labels.join(","),
                        if r.online { "online" } else { "offline" }.to_owned(),
                        format!("{}/{}", r.running_job_ids.len(), r.capacity),
                        when(r.last_seen_unix_ms),
                        r.version.clone(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME",
                    "ID",
                    "LABELS",
                    "STATUS",
                    "RUNNING",
                    "LAST SEEN",
                    "VERSION",
                ],
                rows,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn get_run(control: &Control, run_id: &str) -> anyhow::Result<pb::RunSummary> {
    call!(
        control,
        get_run,
        pb::GetRunRequest {
            run_id: run_id.to_owned(),
        }
    )
    .map_err(|status| control.explain(&status))
}

/// A job of the run by id, job path or name; an unknown one lists the run's jobs.
fn find_job<'a>(run: &'a pb::RunSummary, wanted: &str) -> anyhow::Result<&'a pb::JobSummary> {
    let by = |f: fn(&pb::JobSummary) -> &str| run.jobs.iter().filter(move |j| f(j) == wanted);
    let mut matches: Vec<&pb::JobSummary> = by(|j| &j.job_id).collect();
    if matches.is_empty() {
        matches = by(|j| &j.job_path).collect();
    }
    if matches.is_empty() {
        matches = by(|j| &j.name).collect();
    }
    match matches.as_slice() {
        [job] => Ok(job),
        [] => Err(anyhow!(
            "run {} has no job `{wanted}`; its jobs: {}",
            run.run_id,
            run.jobs
                .iter()
                .map(|j| format!("{} ({})", j.name, j.job_id))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        several => Err(anyhow!(
            "`{wanted}` names {} jobs of run {} (matrix legs); name one by its id: {}",
            several.len(),
            run.run_id,
            several
                .iter()
                .map(|j| format!("{} ({})", j.name, j.job_id))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn print_jobs(run: &pb::RunSummary) {
    let rows = run
        .jobs
        .iter()
        .map(|j| {
            vec![
                j.job_id.clone(),
                j.name.clone(),
                job_status(j),
                j.runner_name.clone(),
            ]
        })
        .collect();
    print_table(&["JOB", "NAME", "STATUS", "RUNNER"], rows);
}

fn run_json(run: &pb::RunSummary) -> serde_json::Value {
    json!({
        "id": run.run_id,
        "workflow": run.workflow_name,
        "file": run.workflow_path,
        "event": run.event_name,
        "attempt": run.attempt,
        "status": run_status(run),
        "created_at": time(run.created_unix_ms).map(rfc3339),
        "finished_at": time(run.finished_unix_ms).map(rfc3339),
        "sha": run.sha,
        "ref": run.r#ref,
        "jobs": run.jobs.iter().map(|j| json!({
            "id": j.job_id,
            "path": j.job_path,
            "name": j.name,
            "status": job_status(j),
            "runner": j.runner_name,
            "attempt": j.attempt,
            "waiting_reason": j.waiting_reason,
            "message": j.message,
        })).collect::<Vec<_>>(),
    })
}

fn when(unix_ms: i64) -> String {
    time(unix_ms).map(rfc3339).unwrap_or_else(|| "-".to_owned())
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// Columns padded to their widest cell (counted in chars).
fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell}{}", " ".repeat(width - cell.chars().count())))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row);
    }
}
