use super::workflow_files::{parse_file, workflow_files, DEFAULT_WORKFLOW_DIR};
use kiln_workflow::plan::{plan, satisfies_need, Plan, PlanContext};
use kiln_workflow::Value;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The event whose workflows to plan.
    #[arg(default_value = "push")]
    event: String,
    /// A workflow file or a directory of them.
    #[arg(short = 'W', long = "workflows", default_value = DEFAULT_WORKFLOW_DIR)]
    workflows: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
    Dot,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let files = workflow_files(&args.workflows)?;
    let mut out = std::io::stdout().lock();
    let mut planned = 0;
    let mut failed = false;
    for file in &files {
        let parsed = parse_file(file)?;
        let errors: Vec<_> = parsed.diagnostics.iter().filter(|d| d.is_error()).collect();
        if !errors.is_empty() {
            for d in errors {
                eprintln!("{d}");
            }
            failed = true;
            continue;
        }
        let Some(workflow) = parsed.workflow else {
            continue;
        };
        if !workflow.on.iter().any(|t| t.event.value == args.event) {
            continue;
        }
        let context = PlanContext::before_run(&workflow, &args.event, &parsed.display);
        let job_plan = match plan(&workflow, &context) {
            Ok(p) => p,
            Err(err) => {
                eprintln!("{}: error: {err}", parsed.display);
                failed = true;
                continue;
            }
        };
        planned += 1;
        let title = workflow
            .name
            .as_ref()
            .map(|n| n.value.clone())
            .unwrap_or_else(|| parsed.display.clone());
        let rendered = match args.format {
            Format::Text => render_text(&title, &parsed.display, &args.event, &job_plan),
            Format::Json => render_json(&parsed.display, &job_plan, files.len() > 1),
            Format::Dot => render_dot(&title, &job_plan),
        };
        write!(out, "{rendered}")?;
    }
    if planned == 0 && !failed {
        eprintln!(
            "kiln: no workflow in {} runs on '{}'",
            args.workflows.display(),
            args.event
        );
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn render_text(title: &str, file: &str, event: &str, plan: &Plan) -> String {
    let mut text = format!("{title} ({file}, on {event})\n");
    for (index, _) in plan.stages.iter().enumerate() {
        let _ = writeln!(text, "stage {}", index + 1);
        for job in plan.jobs.iter().filter(|j| j.stage == index) {
            let mut line = format!("  {}", job.name);
            if !job.needs.is_empty() {
                let _ = write!(line, "  needs: {}", job.needs.join(", "));
            }
            if !job.runs_on.is_empty() {
                let _ = write!(line, "  runs-on: {}", job.runs_on.join(", "));
            }
            if job.matrix_deferred {
                line.push_str("  (matrix expanded at run time from needs)");
            }
            let _ = writeln!(text, "{line}");
        }
    }
    text
}

fn render_json(file: &str, plan: &Plan, name_workflow: bool) -> String {
    let jobs: Vec<serde_json::Value> = plan
        .jobs
        .iter()
        .map(|job| {
            let mut entry = serde_json::json!({
                "id": job.id,
                "name": job.name,
                "needs": job.needs,
                "matrix": job.matrix.as_ref().map(|m| Value::object(m.clone()).to_json()),
                "runs_on": job.runs_on,
            });
            if job.matrix_deferred {
                entry["matrix_deferred"] = serde_json::Value::Bool(true);
            }
            entry
        })
        .collect();
    let mut doc = serde_json::json!({ "jobs": jobs, "stages": plan.stages });
    if name_workflow {
        doc["workflow"] = serde_json::Value::String(file.to_string());
    }
    format!("{doc}\n")
}

fn render_dot(title: &str, plan: &Plan) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut text = format!(
        "digraph {} {{\n  rankdir=LR;\n  node [shape=box];\n",
        quote(title)
    );
    for job in &plan.jobs {
        let _ = writeln!(text, "  {};", quote(&job.name));
    }
    for job in &plan.jobs {
        for need in &job.needs {
            for upstream in plan.jobs.iter().filter(|j| satisfies_need(&j.id, need)) {
                let _ = writeln!(text, "  {} -> {};", quote(&upstream.name), quote(&job.name));
            }
        }
    }
    text.push_str("}\n");
    text
}
