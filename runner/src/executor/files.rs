//! The per-step file commands: a fresh `GITHUB_ENV`, `GITHUB_OUTPUT`, `GITHUB_STATE`,
//! `GITHUB_PATH` and `GITHUB_STEP_SUMMARY` for every step, read after the step ends.
//!
//! Most steps write none of them. Creating and deleting five files per step cost more than
//! a `run: echo` itself on ext4 (inode allocation skips recently deleted inodes, a scan that
//! grows with every delete), so a file left empty is renamed to the next step's name
//! instead: every step still gets paths of its own, as on GitHub, and a late writer that
//! reopens an earlier step's path creates a file nobody reads, as before.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_workflow::envfile::{parse_env_file, parse_path_file, EnvFileError};

/// A step summary larger than this is refused, as on GitHub.
pub const MAX_SUMMARY_BYTES: u64 = 1024 * 1024;

/// Where [`event_file`] puts the payload: `github.event_path` before any step wrote it.
pub fn event_file_path(temp: &Path) -> PathBuf {
    temp.join("_github_workflow").join("event.json")
}

/// `GITHUB_EVENT_PATH`: the event payload as a JSON file under the job's temp folder, where
/// GitHub's runner keeps it (`_github_workflow/event.json`). Written by the first step that
/// needs it; a step may edit it, and later steps then see the edit, as on GitHub.
pub fn event_file(temp: &Path, event: &serde_json::Value) -> io::Result<PathBuf> {
    let path = event_file_path(temp);
    if !path.exists() {
        fs::create_dir_all(path.parent().unwrap_or(temp))?;
        let text = serde_json::to_string_pretty(event).map_err(io::Error::other)?;
        fs::write(&path, text)?;
    }
    Ok(path)
}

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

/// Files an earlier step of the job left empty, one slot per kind (in [`StepFiles::all`]
/// order), to be renamed for the next step.
#[derive(Debug, Default)]
pub struct SpareFiles {
    slots: [Option<PathBuf>; 5],
}

impl SpareFiles {
    /// Keeps `path` for reuse when it is still the plain empty file kiln made: a regular
    /// file, not linked elsewhere, still writable. Returns whether it was kept.
    fn keep_if_empty(&mut self, slot: usize, path: &Path) -> bool {
        let untouched = fs::symlink_metadata(path).is_ok_and(|meta| {
            meta.file_type().is_file()
                && meta.len() == 0
                && meta.nlink() == 1
                && meta.permissions().mode() & 0o200 != 0
        });
        if untouched {
            self.slots[slot] = Some(path.to_path_buf());
        }
        untouched
    }
}

impl StepFiles {
    /// Makes the files empty, named after a per-job counter so steps never share one; spare
    /// empty files of earlier steps are renamed rather than new ones created.
    pub fn create(dir: &Path, sequence: u64, spare: &mut SpareFiles) -> io::Result<StepFiles> {
        let name = |kind: &str| dir.join(format!("{kind}_{sequence}"));
        let files = StepFiles {
            env: name("set_env"),
            output: name("set_output"),
            state: name("save_state"),
            path: name("add_path"),
            summary: name("step_summary"),
        };
        for (slot, path) in files.all().into_iter().enumerate() {
            let renamed = spare.slots[slot]
                .take()
                .is_some_and(|old| fs::rename(old, path).is_ok());
            if !renamed {
                fs::File::create(path)?;
            }
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

    /// Reads the files and removes them, except the empty ones, which go to `spare`.
    pub fn collect(&self, spare: &mut SpareFiles) -> FileCommands {
        let mut out = FileCommands::default();
        let mut written = [false; 5];
        for (slot, path) in self.all().into_iter().enumerate() {
            written[slot] = !spare.keep_if_empty(slot, path);
        }
        let [env, output, state, path, summary] = written;
        if env {
            out.env = read_pairs(&self.env, "env", &mut out.errors);
        }
        if output {
            out.outputs = read_pairs(&self.output, "output", &mut out.errors);
        }
        if state {
            out.state = read_pairs(&self.state, "state", &mut out.errors);
        }
        if path {
            if let Some(text) = read(&self.path, "path", &mut out.errors) {
                out.path = parse_path_file(&text);
            }
        }
        if summary {
            self.collect_summary(&mut out);
        }
        for (path, written) in self.all().into_iter().zip(written) {
            if written {
                // Already gone (a step may delete its own files): nothing to clean.
                let _ = fs::remove_file(path);
            }
        }
        out
    }

    fn collect_summary(&self, out: &mut FileCommands) {
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
        let mut spare = SpareFiles::default();
        let files = StepFiles::create(dir.path(), 7, &mut spare).unwrap();
        fs::write(&files.env, "A=1\nB<<EOF\nx\ny\nEOF\n").unwrap();
        fs::write(&files.output, "bad line\n").unwrap();
        fs::write(&files.path, "/opt/a\n/opt/b\n").unwrap();
        let got = files.collect(&mut spare);
        assert_eq!(
            got.env,
            [("A".into(), "1".into()), ("B".into(), "x\ny".into())]
        );
        assert_eq!(got.path, ["/opt/a", "/opt/b"]);
        assert_eq!(got.errors.len(), 1);
        assert!(got.errors[0].contains("'output'"), "{:?}", got.errors);
        assert!(!files.env.exists());
    }

    #[test]
    fn empty_files_are_renamed_for_the_next_step_and_written_ones_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let mut spare = SpareFiles::default();
        let first = StepFiles::create(dir.path(), 1, &mut spare).unwrap();
        fs::write(&first.output, "x=1\n").unwrap();
        fs::remove_file(&first.state).unwrap();
        let got = first.collect(&mut spare);
        assert_eq!(got.outputs, [("x".into(), "1".into())]);
        let second = StepFiles::create(dir.path(), 2, &mut spare).unwrap();
        for path in second.all() {
            assert_eq!(fs::metadata(path).unwrap().len(), 0, "{path:?}");
        }
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "add_path_2",
                "save_state_2",
                "set_env_2",
                "set_output_2",
                "step_summary_2"
            ]
        );
        // A file that is no longer kiln's plain empty file is never handed on.
        fs::hard_link(&second.env, dir.path().join("kept")).unwrap();
        let got = second.collect(&mut spare);
        assert!(got.env.is_empty() && got.errors.is_empty());
        let third = StepFiles::create(dir.path(), 3, &mut spare).unwrap();
        assert_eq!(fs::metadata(&third.env).unwrap().nlink(), 1);
        assert!(dir.path().join("kept").exists());
    }
}
