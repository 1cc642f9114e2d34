//! `kiln run`: the flags become a kiln-scheduler `RunRequest`, the library discovers and
//! selects the workflows and builds their engines, and its driver runs them here on the
//! kiln-runner executor adapter (`local`) or the dry run; this module chooses the executor,
//! starts the embedded cache, wires the signals and renders what happens.

mod cache;
pub mod dry;
pub mod listing;
mod local;
mod observer;
pub mod platform;
pub mod render;
pub mod report;
pub mod setup;
pub mod signals;
pub mod summary;

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use kiln_scheduler::discover::{discover, select, WorkflowFile};
use kiln_scheduler::drive::{drive, DriveOptions, Ending, Executor, SharedGroups, WorkflowRun};
use kiln_scheduler::engine::{Engine, EngineOptions};
use kiln_scheduler::github::{github_context, new_run_id, GithubInputs, RepoState};
use kiln_scheduler::request::values::parse_local_repositories;
use kiln_workflow::value::Value;
use kiln_workflow::Conclusion;

use crate::cmd::run::Args;
use render::Renderer;
use report::{JobReport, RunReport, StepReport};
use signals::Signals;

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let dir = args.request.dir()?;
    let repo = RepoState::read(&dir);
    let local_repositories = parse_local_repositories(&dir, &args.local_repositories)?;
    let target = args.request.target().workflows_in(&dir);
    let files = discover(&target, &repo, &local_repositories)?.files;

    if args.list || args.graph {
        let selected: Vec<&WorkflowFile> = files
            .iter()
            .filter(|f| f.triggers_on(&args.request.event))
            .collect();
        let text = if args.list {
            listing::list(&selected, args.request.job.as_deref())
        } else {
            listing::graph(&selected)
        };
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }

    let live = std::io::stdout().is_terminal();
    let mut renderer = Renderer::new(live);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Starting a job makes blocking calls (fork/exec, creating its directories and script
    // files) on the worker that runs it; with one worker per core, 64 matrix legs start one
    // pair at a time. More workers overlap those calls (measured: 64 legs on 2 busy cores
    // 2.2 s with 2 workers, 0.9 s with 16). TOKIO_WORKER_THREADS still overrides.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        builder.worker_threads((4 * cores).max(16));
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // From here on a signal cancels the run and the run still cleans up after itself.
        let mut signals = Signals::listen();
        // The first line says where jobs run and why, before anything else happens.
        let executor = setup::choose_executor(args.executor).await?;
        renderer.notice(&executor.describe());
        let selected = select_workflows(&files, &args, &mut renderer)?;
        if selected.is_empty() {
            renderer.notice(&format!(
                "no workflow in {} runs on `{}`",
                target.display(),
                args.request.event
            ));
            renderer.flush();
            return Ok(ExitCode::SUCCESS);
        }
        let request = args.request.read(&dir)?;
        let run_id = new_run_id();
        // The cache is scoped to the repository and ref, which every workflow of the run shares.
        let run_cache = if args.dry_run {
            None
        } else {
            let first = selected[0];
            let github = github_context(
                &repo,
                &GithubInputs {
                    event_name: &request.target.event_name,
                    event: request.event.clone(),
                    workflow_name: &first.name(),
                    workflow_path: &first.display_path,
                    token: request.token(),
                    run_id,
                },
            );
            cache::start(&args, &executor, &github).await?
        };
        if let Some(cache) = &run_cache {
            renderer.notice(&cache.description);
        }
        let endpoint = run_cache.as_ref().and_then(|c| c.endpoint.clone());
        let prepared = setup::prepare(
            &args,
            executor,
            &repo,
            &request.values,
            &local_repositories,
            run_id,
            endpoint,
        )?;
        let prefixes = workflow_prefixes(
            &selected
                .iter()
                .map(|f| (f.name(), f.display_path.clone()))
                .collect::<Vec<_>>(),
        );
        let mut runs = Vec::new();
        let mut failure = None;
        let options = EngineOptions {
            defer_matrices_from_needs: args.dry_run,
        };
        // Concurrency groups are repository-wide: the workflows of the run share them.
        let groups = SharedGroups::default();
        for (index, (file, prefix)) in selected.iter().zip(prefixes).enumerate() {
            match WorkflowRun::start(
                &request, file, &repo, run_id, prefix, options, &groups, index,
            ) {
                Ok(run) => runs.push(run),
                Err(error) => {
                    failure = Some(anyhow::Error::from(error));
                    break;
                }
            }
        }
        let mut interrupted = false;
        let mut reports = Vec::new();
        // A signal during set-up: no job starts, and what set-up made is removed below.
        if failure.is_none() && signals.arrived() {
            renderer.notice("interrupted before any job started; cleaning up");
            interrupted = true;
        } else if failure.is_none() {
            let executor: Arc<dyn Executor> = prepared.runner.clone();
            let options = DriveOptions {
                limit: prepared.parallel,
                tick: live.then_some(std::time::Duration::from_millis(120)),
            };
            // Every workflow the event triggers runs at once, as on GitHub, sharing --parallel.
            let ending = drive(&mut runs, executor, &mut renderer, &mut signals, options).await;
            if ending == Ending::Abandoned {
                renderer.flush();
                std::process::exit(i32::from(signals.exit_status().unwrap_or(130)));
            }
            interrupted = ending == Ending::Interrupted;
            reports = runs
                .iter()
                .zip(&selected)
                .map(|(run, file)| convert_report(&run.engine, file, &args.request.event))
                .collect();
        }
        // Cleanup runs whatever happened above: errors are reported after it. Signals that
        // arrive meanwhile are counted: the third in all still exits at once.
        let cleanup = async {
            prepared.finish(&mut renderer).await;
            if let Some(cache) = run_cache {
                cache.stop().await;
            }
        };
        tokio::select! {
            () = cleanup => {}
            () = signals.until_count(3) => {
                eprintln!("kiln: exiting without cleanup");
                std::process::exit(i32::from(signals.exit_status().unwrap_or(130)));
            }
        }
        if signals.arrived() {
            interrupted = true;
        }
        if let Some(error) = failure {
            renderer.flush();
            return Err(error);
        }
        // The table and the printed summaries name workflows by their prefix, which is
        // unambiguous also when two workflows share a name.
        let shown: Vec<RunReport> = reports
            .iter()
            .zip(&runs)
            .map(|(report, run)| RunReport {
                workflow: run.prefix.clone(),
                ..report.clone()
            })
            .collect();
        renderer.summary(&shown);
        summary::print_caches(&shown);
        summary::print(&shown);
        if let Some(summary_dir) = &args.summary_dir {
            summary::write(&dir.join(summary_dir), &reports)?;
        }
        if let Some(path) = &args.report {
            report::write(&dir.join(path), &reports)?;
        }
        let succeeded = reports.iter().all(|r| r.conclusion == Conclusion::Success);
        Ok(
            if let (true, Some(status)) = (interrupted, signals.exit_status()) {
                ExitCode::from(status)
            } else if succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            },
        )
    })
}

/// The `[workflow/job]` prefix of each workflow, given as (name, file): its name, or its file
/// when two workflows running together share a name, so every line says where it came from.
pub fn workflow_prefixes(workflows: &[(String, String)]) -> Vec<String> {
    workflows
        .iter()
        .map(|(name, file)| {
            if workflows.iter().filter(|other| other.0 == *name).count() > 1 {
                file.clone()
            } else {
                name.clone()
            }
        })
        .collect()
}

/// The workflows triggered by the event (and, with `-j`, holding that job), rendering why
/// each other one is left out (see [`select`]).
fn select_workflows<'a>(
    files: &'a [WorkflowFile],
    args: &Args,
    renderer: &mut Renderer,
) -> anyhow::Result<Vec<&'a WorkflowFile>> {
    let (selected, notices) = select(files, &args.request.event, args.request.job.as_deref())?;
    for notice in notices {
        renderer.notice(&notice);
    }
    Ok(selected)
}

/// The engine's account of the run in the report's shape.
fn convert_report(engine: &Engine, file: &WorkflowFile, event: &str) -> RunReport {
    let report = engine.report();
    RunReport {
        workflow: file.name(),
        file: file.display_path.clone(),
        event: event.to_owned(),
        conclusion: report.conclusion,
        jobs: report
            .jobs
            .into_iter()
            .map(|job| JobReport {
                id: job.id,
                name: job.name,
                matrix: job.matrix.map(|m| Value::object(m).to_json()),
                conclusion: job.conclusion,
                outputs: job.outputs,
                started_at: job.started_at,
                finished_at: job.finished_at,
                summary: (!job.summary.is_empty()).then_some(job.summary),
                steps: job
                    .steps
                    .into_iter()
                    .map(|s| StepReport {
                        id: s.id,
                        name: s.name,
                        outcome: s.outcome,
                        conclusion: s.conclusion,
                        cache: s.cache,
                    })
                    .collect(),
            })
            .collect(),
    }
}
