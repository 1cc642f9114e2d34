use super::workflow_files::{parse_file, workflow_files, DEFAULT_WORKFLOW_DIR};
use kiln_workflow::{unpinned_uses, Diagnostic, Severity};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Workflow files or directories (default: .github/workflows/).
    paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Also report every remote `uses:` not pinned to a full commit SHA, as an error.
    #[arg(long)]
    require_pinned: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(DEFAULT_WORKFLOW_DIR)]
    } else {
        args.paths
    };
    let mut files = Vec::new();
    for path in &paths {
        files.extend(workflow_files(path)?);
    }
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    for file in &files {
        let parsed = parse_file(file)?;
        diagnostics.extend(parsed.diagnostics);
        if args.require_pinned {
            if let Some(workflow) = &parsed.workflow {
                diagnostics.extend(unpinned_uses(workflow, &parsed.display).into_iter().map(
                    |mut d| {
                        d.severity = Severity::Error;
                        d
                    },
                ));
            }
        }
    }
    // Files in the order given, then by position, so output is stable and reads top-down.
    let order = |d: &Diagnostic| files.iter().position(|f| f.display().to_string() == d.file);
    diagnostics.sort_by_key(|d| (order(d), d.line, d.col));
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;

    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let json = serde_json::json!({
                "files": files.len(),
                "errors": errors,
                "warnings": warnings,
                "diagnostics": diagnostics,
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        }
        Format::Text => {
            for d in &diagnostics {
                writeln!(out, "{d}")?;
            }
            let summary = format!(
                "{} file{} checked: {errors} error{}, {warnings} warning{}",
                files.len(),
                plural(files.len()),
                plural(errors),
                plural(warnings)
            );
            eprintln!("{summary}");
        }
    }
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
