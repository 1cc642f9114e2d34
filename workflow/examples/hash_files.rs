//! Prints hashFiles() for a workspace, as GitHub's runner would compute it. Used by
//! `benches/hashfiles-vs-sha256sum.sh`; the `kiln hash-files` command wraps the same API.
//!
//! Usage: hash_files [--list] [--threads N] <workspace> <hashFiles arguments>...
//! `--list` prints the matched files (relative to the workspace), one per line, instead.

use kiln_workflow::hashfiles::{hash_files_with, matched_files, HashFilesOptions};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: hash_files [--list] [--threads N] <workspace> <hashFiles arguments>...";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hash_files: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1).peekable();
    let mut list = false;
    let mut options = HashFilesOptions::default();
    loop {
        match args.peek().map(String::as_str) {
            Some("--list") => list = true,
            Some("--threads") => {
                args.next();
                let count = args.peek().ok_or(USAGE)?;
                options.threads = count
                    .parse()
                    .map_err(|_| format!("--threads wants a number, got '{count}'"))?;
            }
            _ => break,
        }
        args.next();
    }
    let workspace = PathBuf::from(args.next().ok_or(USAGE)?);
    let patterns: Vec<String> = args.collect();
    if list {
        let real = std::fs::canonicalize(&workspace)
            .map_err(|e| format!("{}: {e}", workspace.display()))?;
        for file in matched_files(&workspace, &patterns, &options).map_err(|e| e.to_string())? {
            println!("{}", file.strip_prefix(&real).unwrap_or(&file).display());
        }
    } else {
        println!(
            "{}",
            hash_files_with(&workspace, &patterns, &options).map_err(|e| e.to_string())?
        );
    }
    Ok(())
}
