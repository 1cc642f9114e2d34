use anyhow::Context as _;
use kiln_workflow::hashfiles::{self, HashFilesOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The workspace the patterns are relative to (GITHUB_WORKSPACE).
    #[arg(long, default_value = ".")]
    workspace: PathBuf,
    /// List the matched files in hashing order instead of printing the digest.
    #[arg(long)]
    list: bool,
    /// Patterns exactly as hashFiles() takes them; the first may be --follow-symbolic-links.
    #[arg(required = true, allow_hyphen_values = true)]
    patterns: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let workspace = std::fs::canonicalize(&args.workspace)
        .with_context(|| format!("workspace {} is not readable", args.workspace.display()))?;
    let options = HashFilesOptions::default();
    let mut out = std::io::stdout().lock();
    if args.list {
        match hashfiles::matched_files(&workspace, &args.patterns, &options) {
            Ok(files) => {
                for file in files {
                    let shown = file.strip_prefix(&workspace).unwrap_or(&file);
                    writeln!(out, "{}", shown.display())?;
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => {
                eprintln!("kiln: hashFiles failed: {err}");
                Ok(ExitCode::FAILURE)
            }
        }
    } else {
        match hashfiles::hash_files_with(&workspace, &args.patterns, &options) {
            Ok(digest) => {
                writeln!(out, "{digest}")?;
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => {
                eprintln!("kiln: hashFiles failed: {err}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}
