//! The per-step file commands: a fresh `GITHUB_ENV`, `GITHUB_OUTPUT`, `GITHUB_STATE`,
//! `GITHUB_PATH` and `GITHUB_STEP_SUMMARY` for every step, read after the step ends.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use kiln_workflow::envfile::{parse_env_file, parse_path_file, EnvFileError};

/// A step summary larger than this is refused, as on GitHub.
pub const MAX_SUMMARY_BYTES: u64 = 1024 * 1024;

/// The five files of one step.
#[derive(Debug, Clone)]
pub struct StepFiles {
    pub env: PathBuf,
    pub output: PathBuf,
    pub state: PathBuf,
    pub path: PathBuf,
    pub summary: PathBuf,
}

/// What a step wrote to its files.
#[derive(Debug, Default)]
pub struct FileCommands {
    pub env: Vec<(String, String)>,
    pub outputs: Vec<(String, String)>,
    pub state: Vec<(String, String)>,
    pub path: Vec<String>,
    pub summary: Option<String>,
    /// Errors that fail the step, as the runner words them.
    pub errors: Vec<String>,
    /// Problems reported as error annotations without failing the step.
    pub warnings: Vec<String>,
}

impl StepFiles {
    /// Creates the files empty, named after a per-job counter so steps never share one.
    pub fn create(dir: &Path, sequence: u64) -> io::Result<StepFiles> {
        let name = |kind: &str| dir.join(format!("{kind}_{sequence}"));
        let files = StepFiles {
            env: name("set_env"),
            output: name("set_output"),
            state: name("save_state"),
            path: name("add_path"),
            summary: name("step_summary"),
        };
        for path in files.all() {
            fs::File::create(path)?;
        }
        Ok(files)
    }

    fn all(&self) -> [&PathBuf; 5] {
        [
            &self.env,
            &self.output,
            &self.state,
            &self.path,
            &self.summary,
        ]
    }

    /// `GITHUB_ENV` and friends, as the job sees the paths (same paths in both backends).
    pub fn variables(&self) -> [(&'static str, String); 5] {
        let show = |p: &PathBuf| p.to_string_lossy().into_owned();
        [
            ("GITHUB_ENV", show(&self.env)),
            ("GITHUB_OUTPUT", show(&self.output)),
            ("GITHUB_STATE", show(&self.state)),
            ("GITHUB_PATH", show(&self.path)),
            ("GITHUB_STEP_SUMMARY", show(&self.summary)),
        ]
    }

    /// Reads and removes the files.
    pub fn collect(&self) -> FileCommands {
        let mut out = FileCommands::default();
        out.env = read_pairs(&self.env, "env", &mut out.errors);
        out.outputs = read_pairs(&self.output, "output", &mut out.errors);
        out.state = read_pairs(&self.state, "state", &mut out.errors);
        if let Some(text) = read(&self.path, "path", &mut out.errors) {
            out.path = parse_path_file(&text);
        }
        match fs::metadata(&self.summary) {
            Ok(meta) if meta.len() > MAX_SUMMARY_BYTES => out.warnings.push(format!(
                "$GITHUB_STEP_SUMMARY upload aborted, supports content up to a size of {}k, got {}k.",
                MAX_SUMMARY_BYTES / 1024,
                meta.len() / 1024
            )),
            Ok(meta) if meta.len() > 0 => {
                out.summary = read(&self.summary, "step summary", &mut out.errors)
            }
            _ => {}
        }
        for path in self.all() {
            // Already gone (a step may delete its own files): nothing to clean.
            let _ = fs::remove_file(path);
        }
        out
    }
}

fn read(path: &Path, command: &str, errors: &mut Vec<String>) -> Option<String> {
    match fs::read(path) {
        Ok(bytes) if bytes.is_empty() => None,
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => {
            errors.push(format!(
                "Unable to process file command '{command}' successfully. {error}"
            ));
            None
        }
    }
}

fn read_pairs(path: &Path, command: &str, errors: &mut Vec<String>) -> Vec<(String, String)> {
    let Some(text) = read(path, command, errors) else {
        return Vec::new();
    };
    match parse_env_file(&text) {
        Ok(pairs) => pairs,
        Err(error) => {
            errors.push(describe(command, &error));
            Vec::new()
        }
    }
}

fn describe(command: &str, error: &EnvFileError) -> String {
    format!("Unable to process file command '{command}' successfully. {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_once_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let files = StepFiles::create(dir.path(), 7).unwrap();
        fs::write(&files.env, "A=1\nB<<EOF\nx\ny\nEOF\n").unwrap();
        fs::write(&files.output, "bad line\n").unwrap();
        fs::write(&files.path, "/opt/a\n/opt/b\n").unwrap();
        let got = files.collect();
        assert_eq!(
            got.env,
            [("A".into(), "1".into()), ("B".into(), "x\ny".into())]
        );
        assert_eq!(got.path, ["/opt/a", "/opt/b"]);
        assert_eq!(got.errors.len(), 1);
        assert!(got.errors[0].contains("'output'"), "{:?}", got.errors);
        assert!(!files.env.exists());
    }
}
