use anyhow::Context as _;
use kiln_workflow::expr::{self, Allowed, ExprError, JobStatus, SimpleContext};
use kiln_workflow::{Object, Value};
use std::io::{BufRead as _, BufWriter, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The expression, without `${{ }}`.
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    expression: Option<String>,
    /// A JSON object whose keys are the contexts the expression may use (github, matrix, ...).
    #[arg(long, value_name = "FILE")]
    contexts: Option<PathBuf>,
    /// Evaluate JSON lines `{"expr": ..., "contexts": {...}}` from FILE (`-` for stdin), one
    /// result line each.
    #[arg(long, value_name = "FILE")]
    batch: Option<PathBuf>,
    /// What success(), failure() and cancelled() see.
    #[arg(long, value_enum, default_value = "success")]
    job_status: StatusArg,
    /// The workspace hashFiles() reads.
    #[arg(long, default_value = ".")]
    workspace: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StatusArg {
    Success,
    Failure,
    Cancelled,
}

impl From<StatusArg> for JobStatus {
    fn from(arg: StatusArg) -> Self {
        match arg {
            StatusArg::Success => JobStatus::Success,
            StatusArg::Failure => JobStatus::Failure,
            StatusArg::Cancelled => JobStatus::Cancelled,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let status = JobStatus::from(args.job_status);
    let workspace = args.workspace.clone();
    let out = std::io::stdout().lock();
    let mut out = BufWriter::new(out);
    if let Some(batch) = &args.batch {
        let reader: Box<dyn std::io::BufRead> = if batch.as_os_str() == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            let file = std::fs::File::open(batch)
                .with_context(|| format!("cannot open batch file {}", batch.display()))?;
            Box::new(std::io::BufReader::new(file))
        };
        let mut all_ok = true;
        for (index, line) in reader.lines().enumerate() {
            let line = line.with_context(|| format!("reading batch line {}", index + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let result = match parse_batch_line(&line) {
                Ok((source, contexts)) => evaluate(&source, contexts, status, &workspace),
                Err(message) => Err(input_error(format!("line {}: {message}", index + 1))),
            };
            all_ok &= result.is_ok();
            writeln!(out, "{}", render(&result))?;
        }
        out.flush()?;
        return Ok(if all_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }

    let contexts = match &args.contexts {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read contexts file {}", path.display()))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("contexts file {} is not valid JSON", path.display()))?;
            contexts_object(&json).with_context(|| format!("in {}", path.display()))?
        }
        None => Object::new(),
    };
    let source = args.expression.unwrap_or_default();
    let result = evaluate(&source, contexts, status, &workspace);
    writeln!(out, "{}", render(&result))?;
    out.flush()?;
    Ok(if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Errors in the batch input itself (not in an expression) are reported in the same JSON
/// shape so one bad line does not stop the batch.
struct InputError(String);

type Outcome = Result<Value, Failure>;

enum Failure {
    Expr(ExprError),
    Input(InputError),
}

fn input_error(message: String) -> Failure {
    Failure::Input(InputError(message))
}

fn parse_batch_line(line: &str) -> Result<(String, Object), String> {
    let json: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let source = json
        .get("expr")
        .and_then(|v| v.as_str())
        .ok_or_else(|| "missing string field \"expr\"".to_string())?
        .to_string();
    let contexts = match json.get("contexts") {
        Some(c) => contexts_object(c).map_err(|e| e.to_string())?,
        None => Object::new(),
    };
    Ok((source, contexts))
}

fn contexts_object(json: &serde_json::Value) -> anyhow::Result<Object> {
    match Value::from_json(json) {
        Value::Object(obj) => Ok((*obj).clone()),
        _ => anyhow::bail!("contexts must be a JSON object mapping context names to values"),
    }
}

fn evaluate(
    source: &str,
    contexts: Object,
    status: JobStatus,
    workspace: &std::path::Path,
) -> Outcome {
    let names: Vec<String> = contexts.iter().map(|(k, _)| k.clone()).collect();
    let allowed = Allowed::everything(names);
    let parsed = expr::parse(source, &allowed).map_err(Failure::Expr)?;
    let workspace = workspace.to_path_buf();
    let context =
        SimpleContext::new(contexts, status).with_hash_files(Box::new(move |args: &[String]| {
            kiln_workflow::hashfiles::hash_files(&workspace, args).map_err(|e| e.to_string())
        }));
    parsed.evaluate(&context).map_err(Failure::Expr)
}

fn render(outcome: &Outcome) -> String {
    let json = match outcome {
        Ok(value) => serde_json::json!({ "kind": value.kind().name(), "value": value.to_json() }),
        Err(Failure::Expr(err)) => {
            serde_json::json!({ "error": { "kind": err.kind.name(), "message": err.message } })
        }
        Err(Failure::Input(InputError(message))) => {
            serde_json::json!({ "error": { "kind": "input", "message": message } })
        }
    };
    json.to_string()
}
