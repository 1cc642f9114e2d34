//! `kiln submit`: run the current repository on a kiln scheduler. It reads the same flags and
//! files as `kiln run`, sends the working copy (uncommitted changes included) as a snapshot,
//! and follows the runs with `kiln run`'s display, summary, `--report` and exit status.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use kiln_proto::v1 as pb;
use kiln_workflow::Conclusion;

use crate::cmd::request::RequestFlags;
use crate::remote::follow::{final_summaries, Ending, Follow};
use crate::remote::{call, convert, snapshot, ConnectFlags, Control};
use crate::run::render::Renderer;
use crate::run::report::{self, RunReport};
use crate::run::{summary, workflow_prefixes};
use kiln_scheduler::github::RepoState;

/// Exit status after the user stopped following, as shells report SIGINT.
const INTERRUPTED: u8 = 130;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub request: RequestFlags,

    #[command(flatten)]
    pub connect: ConnectFlags,

    /// Write the runs' result as JSON to FILE (the shape of `kiln run --report`).
    #[arg(long = "report", value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Print the ids of the runs started and exit without following them.
    #[arg(long, conflicts_with = "report")]
    pub detach: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = args.request.dir()?;
    let repo = RepoState::read(&dir);
    let request = args.request.read(&dir)?;
    let workflows_path = workflows_path(&dir, args.request.workflows.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Inside the runtime: the channel's connection task needs one.
        let control = Control::connect(&args.connect)?;
        let snapshot = snapshot::create(&dir)?;
        snapshot::upload(&control, &snapshot).await?;
        let pairs = |pairs: &[(String, String)]| -> Vec<pb::KeyValue> {
            pairs
                .iter()
                .map(|(key, value)| pb::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect()
        };
        let run_request = pb::RunRequest {
            event_name: request.target.event_name.clone(),
            event_json: request
                .event
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_default(),
            source: Some(pb::Source {
                sha: snapshot.sha.clone(),
                origin: Some(pb::source::Origin::Snapshot(pb::Snapshot {
                    digest: snapshot.digest.clone(),
                    size: snapshot.size,
                    ..Default::default()
                })),
            }),
            repository: repo.repository.clone(),
            r#ref: repo.head_ref.clone().unwrap_or_default(),
            actor: repo.actor.clone(),
            workflows_path,
            job: request.target.job.clone().unwrap_or_default(),
            matrix: pairs(&request.matrix_filter),
            inputs: pairs(&request.values.inputs),
            vars: pairs(&request.values.vars),
            secrets: pairs(&request.values.secrets),
            env: pairs(&request.values.env),
        };
        // One key for this submission: a retry after a lost reply gets the runs the first
        // call created instead of starting them twice.
        let submission = pb::SubmitRunRequest {
            request: Some(run_request),
            idempotency_key: crate::remote::random_id(),
        };
        let submitted = call!(&control, submit_run, submission)
            .map_err(|status| control.explain(&status).context("cannot submit the run"))?;
        let run_ids: Vec<String> = submitted.runs.iter().map(|r| r.run_id.clone()).collect();
        if args.detach {
            for notice in &submitted.notices {
                eprintln!("kiln: {notice}");
            }
            for id in &run_ids {
                println!("{id}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        let live = std::io::stdout().is_terminal();
        let mut renderer = Renderer::new(live);
        for notice in &submitted.notices {
            renderer.notice(notice);
        }
        if run_ids.is_empty() {
            renderer.notice(&format!("no workflow runs on `{}`", args.request.event));
            renderer.flush();
            return Ok(ExitCode::SUCCESS);
        }
        let state = if snapshot.dirty {
            "the working copy with its uncommitted changes"
        } else {
            "HEAD"
        };
        renderer.notice(&format!(
            "submitted {state} ({}) to {}: {}",
            short(&snapshot.sha),
            control.url,
            run_ids.join(", ")
        ));
        let mut follow = Follow::new(&submitted.runs, None);
        if follow.run(&control, &mut renderer).await? == Ending::Interrupted {
            eprintln!(
                "kiln: stopped following; the runs go on (`kiln logs RUN --follow` follows one, `kiln cancel RUN` stops it): {}",
                run_ids.join(" ")
            );
            return Ok(ExitCode::from(INTERRUPTED));
        }
        let runs = final_summaries(&control, &run_ids).await?;
        let reports: Vec<RunReport> = runs.iter().map(convert::run_report).collect();
        finish(&dir, &reports, args.report.as_deref(), &mut renderer)
    })
}

/// The end of a followed run, as `kiln run` ends: the table, the summaries, the report and
/// the exit status (0 only when every run succeeded).
fn finish(
    dir: &Path,
    reports: &[RunReport],
    report_path: Option<&Path>,
    renderer: &mut Renderer,
) -> anyhow::Result<ExitCode> {
    let prefixes = workflow_prefixes(
        &reports
            .iter()
            .map(|r| (r.workflow.clone(), r.file.clone()))
            .collect::<Vec<_>>(),
    );
    let shown: Vec<RunReport> = reports
        .iter()
        .zip(prefixes)
        .map(|(report, workflow)| RunReport {
            workflow,
            ..report.clone()
        })
        .collect();
    renderer.summary(&shown);
    summary::print_caches(&shown);
    summary::print(&shown);
    if let Some(path) = report_path {
        report::write(&dir.join(path), reports)?;
    }
    let succeeded = reports.iter().all(|r| r.conclusion == Conclusion::Success);
    Ok(if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `-W` as the scheduler reads it: relative to the repository, with `/` separators.
fn workflows_path(dir: &Path, flag: Option<&Path>) -> anyhow::Result<String> {
    let Some(path) = flag else {
        return Ok(String::new());
    };
    let relative = if path.is_absolute() {
        let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        path.strip_prefix(&root)
            .map(Path::to_path_buf)
            .map_err(|_| {
                anyhow!(
                    "-W {}: the scheduler only sees the repository, and this is outside {}",
                    path.display(),
                    root.display()
                )
            })?
    } else {
        path.to_path_buf()
    };
    let text = relative
        .to_str()
        .ok_or_else(|| anyhow!("-W {}: not valid UTF-8", relative.display()))?;
    if relative
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(anyhow!(
            "-W {text}: the scheduler only sees the repository; name a path inside it"
        ));
    }
    Ok(text.trim_start_matches("./").to_owned())
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}
