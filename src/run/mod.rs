//! The local driver behind `kiln run`: finds the workflows an event triggers, builds their
//! contexts from the repository, and drives the engine (kiln-scheduler) and the executor
//! (kiln-runner) in one process.

mod cache;
pub mod config;
mod deferred;
pub mod discover;
pub mod dotenv;
pub mod driver;
pub mod dry;
pub mod github;
pub mod listing;
mod local;
pub mod planner;
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
use kiln_scheduler::engine::{Engine, EngineOptions, RunSpec};
use kiln_workflow::value::Value;
use kiln_workflow::Conclusion;

use crate::cmd::run::Args;
use config::{check_call_secrets, inputs_for, object_of};
use discover::{load_workflows, workflow_paths, CalleeSource, WorkflowFile};
use driver::{drive, Ending, LegRunner, WorkflowRun};
use github::{github_context, GithubInputs, RepoState};
use render::Renderer;
use report::{JobReport, RunReport, StepReport};
use signals::Signals;

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let dir = args.request.dir()?;
    let repo = RepoState::read(&dir);
    let local_repositories = config::parse_local_repositories(&dir, &args.local_repositories)?;
    let target = dir.join(
        args.request
            .workflows
            .as_deref()
            .unwrap_or(".github/workflows".as_ref()),
    );
    let callees = CalleeSource {
        repo_root: &repo.root,
        local_repositories: &local_repositories,
        repository: &repo.repository,
        sha: &repo.sha,
        warnings: Default::default(),
        loaded: Default::default(),
    };
    let files = load_workflows(&workflow_paths(&target, &repo.root)?, &callees)?;

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
        let event = args.request.read_event(&dir)?;
        let values = setup::read_values(&dir, &args.request, event.as_ref())?;
        let matrix_filter = config::parse_matrix_filters(&args.request.matrix)?;
        let run_id = github::new_run_id();
        let token = config::github_token(&values.secrets);
        // The cache is scoped to the repository and ref, which every workflow of the run shares.
        let run_cache = if args.dry_run {
            None
        } else {
            let first = selected[0];
            let github = github_context(
                &repo,
                &GithubInputs {
                    event_name: &args.request.event,
                    event: event.clone(),
                    workflow_name: &first.name(),
                    workflow_path: &first.display_path,
                    token,
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
            &values,
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
        let shared = RunInputs {
            args: &args,
            repo: &repo,
            event: &event,
            values: &values,
            matrix_filter: &matrix_filter,
            token,
            run_id,
        };
        for (file, prefix) in selected.iter().zip(prefixes) {
            match shared.workflow_run(file, prefix) {
                Ok(run) => runs.push(run),
                Err(error) => {
                    failure = Some(error);
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
            let runner: Arc<dyn LegRunner> = prepared.runner.clone();
            // Every workflow the event triggers runs at once, as on GitHub, sharing --parallel.
            let ending = drive(
                &mut runs,
                runner,
                &mut renderer,
                prepared.parallel,
                live,
                &mut signals,
            )
            .await;
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

/// What every workflow of the run is started from.
struct RunInputs<'a> {
    args: &'a Args,
    repo: &'a RepoState,
    event: &'a Option<serde_json::Value>,
    values: &'a config::RunValues,
    matrix_filter: &'a [(String, String)],
    token: Option<&'a str>,
    run_id: u64,
}

impl RunInputs<'_> {
    /// The engine of one workflow, with its contexts.
    fn workflow_run(&self, file: &WorkflowFile, prefix: String) -> anyhow::Result<WorkflowRun> {
        let (github, inputs) = workflow_contexts(
            file,
            self.repo,
            &GithubInputs {
                event_name: &self.args.request.event,
                event: self.event.clone(),
                workflow_name: &file.name(),
                workflow_path: &file.display_path,
                token: self.token,
                run_id: self.run_id,
            },
            self.values,
            self.args.request.job.as_deref(),
        )?;
        let spec = RunSpec {
            workflow: file.workflow.clone(),
            workflow_file: file.display_path.clone(),
            github,
            inputs,
            vars: object_of(&self.values.vars),
            secrets: object_of(&self.values.secrets),
            job_filter: self.args.request.job.clone(),
            matrix_filter: self.matrix_filter.to_vec(),
        };
        let options = EngineOptions {
            defer_matrices_from_needs: self.args.dry_run,
        };
        let engine = Engine::with_options(spec, options)
            .with_context(|| format!("cannot run {}", file.display_path))?;
        Ok(WorkflowRun {
            engine,
            prefix,
            workflow: file.workflow.clone(),
        })
    }
}

/// The `github` and `inputs` contexts of one workflow of a run, after the checks GitHub makes
/// before it starts one (reusable workflows loaded, required inputs and secrets given).
/// `kiln run` and the scheduler's planner build them alike.
pub fn workflow_contexts(
    file: &WorkflowFile,
    repo: &RepoState,
    github: &GithubInputs,
    values: &config::RunValues,
    job: Option<&str>,
) -> anyhow::Result<(kiln_workflow::Object, kiln_workflow::Object)> {
    discover::require_loaded_calls(file, job)?;
    let name = file.name();
    let context = github_context(repo, github);
    let inputs = inputs_for(&file.workflow, &name, github.event_name, &values.inputs)?;
    check_call_secrets(&file.workflow, &name, github.event_name, &values.secrets)?;
    Ok((context, inputs))
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

/// The workflows triggered by `event` (and, with `-j`, holding that job), and a notice for
/// every workflow left out (with the reason, so a typo in the event is visible) and every
/// warning of the selected files. `kiln run` and the scheduler's planner select alike.
pub fn select<'a>(
    files: &'a [WorkflowFile],
    event: &str,
    job: Option<&str>,
) -> anyhow::Result<(Vec<&'a WorkflowFile>, Vec<String>)> {
    let mut selected = Vec::new();
    let mut notices = Vec::new();
    for file in files {
        if !file.triggers_on(event) {
            let events = file.events().join(", ");
            notices.push(format!(
                "skipping {}: runs on {events}, not on {event}",
                file.display_path
            ));
            continue;
        }
        if let Some(job) = job {
            if file.workflow.job(job).is_none() {
                continue;
            }
        }
        notices.extend(file.warnings.iter().map(ToString::to_string));
        selected.push(file);
    }
    if let Some(job) = job {
        anyhow::ensure!(
            !selected.is_empty(),
            "no workflow triggered by `{event}` has a job `{job}`; list the jobs with `kiln run {event} -l`"
        );
    }
    Ok((selected, notices))
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
