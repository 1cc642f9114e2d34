//! The per-step file commands: a fresh `GITHUB_ENV`, `GITHUB_OUTPUT`, `GITHUB_STATE`,
//! `GITHUB_PATH` and `GITHUB_STEP_SUMMARY` for every step, read after the step ends.
//!
//! Most steps write none of them. Creating and deleting five files per step cost more than
//! a `run: echo` itself on ext4 (inode allocation skips recently deleted inodes, a scan that
//! grows with every delete), so a file left empty is renamed to the next step's name
//! instead: every step still gets paths of its own, as on GitHub, and a late writer that
//! reopens an earlier step's path creates a file nobody reads, as before.

use std::fs;
use std::io::{self, Read as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kiln_workflow::envfile::{parse_env_file, parse_path_file, EnvFileError};

/// A step summary larger than this is refused, as on GitHub.
pub const MAX_SUMMARY_BYTES: u64 = 1024 * 1024;
/// The most one output, state or environment value may hold: GitHub caps an output at 1 MB.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// The most all the outputs, state, environment values and PATH entries a job's steps hand on
/// may hold together (GitHub's 50 MB for the outputs of a run): what a job keeps in memory.
pub const MAX_JOB_VALUE_BYTES: usize = 50 * 1024 * 1024;
/// A file command file larger than this is not read.
pub const MAX_FILE_BYTES: u64 = MAX_JOB_VALUE_BYTES as u64;

/// `1048576` as `1,048,576`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// What the job's steps may still hand on ([`MAX_JOB_VALUE_BYTES`]); every value a step sets
/// through a file or a command goes through [`ValueBudget::admit`].
#[derive(Debug)]
pub struct ValueBudget {
    left: usize,
}

impl Default for ValueBudget {
    fn default() -> Self {
        ValueBudget {
            left: MAX_JOB_VALUE_BYTES,
        }
    }
}

impl ValueBudget {
    /// Takes in the value `name` is set to, or says why it is refused: larger than
    /// [`MAX_VALUE_BYTES`], or more than the job has left.
    pub fn admit(&mut self, name: &str, value: &str) -> Result<(), String> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "The value of '{name}' is {} bytes; a value can be at most {} bytes (1 MiB).",
                thousands(value.len()),
                thousands(MAX_VALUE_BYTES)
            ));
        }
        let size = name.len() + value.len();
        if size > self.left {
            return Err(format!(
                "The outputs, state, environment variables and PATH entries of the job would exceed {} bytes (50 MiB); '{name}' was not set.",
                thousands(MAX_JOB_VALUE_BYTES)
            ));
        }
        self.left -= size;
        Ok(())
    }
}

/// Where [`event_file`] puts the payload: `github.event_path` before any step wrote it.
pub fn event_file_path(temp: &Path) -> PathBuf {
    temp.join("_github_workflow").join("event.json")
}

/// `GITHUB_EVENT_PATH`: the event payload as a JSON file under the job's temp folder, where
/// GitHub's runner keeps it (`_github_workflow/event.json`). Written by the first step that
/// needs it; a step may edit it, and later steps then see the edit, as on GitHub.
pub fn event_file(temp: &Path, event: &serde_json::Value) -> io::Result<PathBuf> {
    let path = event_file_path(temp);
    // Whatever a step left there, a link included, is its own to keep: never written through.
    if fs::symlink_metadata(&path).is_err() {
        fs::create_dir_all(path.parent().unwrap_or(temp))?;
        let text = serde_json::to_string_pretty(event).map_err(io::Error::other)?;
        create_fresh(&path, text.as_bytes())?;
    }
    Ok(path)
}

/// Writes a new file at `path`, replacing whatever is there without following it: in a
/// container, a step can put a symbolic link where kiln writes next (the next script, the
/// next step's file commands), which kiln, on the host, would otherwise write through.
pub fn create_fresh(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.write_all(contents)
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
                create_fresh(path, b"")?;
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

    /// Reads the files and removes them, except the empty ones, which go to `spare`. Every
    /// value is admitted by `budget`; refused ones are errors.
    pub fn collect(&self, spare: &mut SpareFiles, budget: &mut ValueBudget) -> FileCommands {
        let mut out = FileCommands::default();
        let mut written = [false; 5];
        for (slot, path) in self.all().into_iter().enumerate() {
            written[slot] = !spare.keep_if_empty(slot, path);
        }
        let [env, output, state, path, summary] = written;
        if env {
            out.env = read_pairs(&self.env, "env", budget, &mut out.errors);
        }
        if output {
            out.outputs = read_pairs(&self.output, "output", budget, &mut out.errors);
        }
        if state {
            out.state = read_pairs(&self.state, "state", budget, &mut out.errors);
        }
        if path {
            if let Some(text) = read_command(&self.path, "path", &mut out.errors) {
                out.path = parse_path_file(&text)
                    .into_iter()
                    .filter(|entry| admit(budget, "path", "PATH", entry, &mut out.errors))
                    .collect();
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
        match read(&self.summary, MAX_SUMMARY_BYTES) {
            Ok(text) => out.summary = text,
            // Too large is no step failure on GitHub: the summary is dropped with an error.
            Err(Unreadable::TooLarge(size)) => out.warnings.push(format!(
                "$GITHUB_STEP_SUMMARY upload aborted, supports content up to a size of {}k, got {}k.",
                MAX_SUMMARY_BYTES / 1024,
                size / 1024
            )),
            Err(unreadable) => out.errors.push(unreadable.describe("step summary", MAX_SUMMARY_BYTES)),
        }
    }
}

/// Why a file command file was not read.
enum Unreadable {
    TooLarge(u64),
    Other(String),
}

impl Unreadable {
    /// The step's error, as the runner words file command failures.
    fn describe(&self, command: &str, limit: u64) -> String {
        let reason = match self {
            Unreadable::TooLarge(size) => format!(
                "The file is {} bytes; a step's file commands can hold at most {} bytes ({} MiB).",
                thousands(*size as usize),
                thousands(limit as usize),
                limit / (1024 * 1024)
            ),
            Unreadable::Other(reason) => reason.clone(),
        };
        format!("Unable to process file command '{command}' successfully. {reason}")
    }
}

/// Reads a file command file the step left, at most `limit` bytes of it: only a regular file
/// at that very path (a symbolic link put there by the step, which in a container could point
/// at any file of the host, or a pipe that would never end, is refused). `None` when the file
/// is missing or empty.
fn read(path: &Path, limit: u64) -> Result<Option<String>, Unreadable> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match file {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) if error.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Unreadable::Other(format!(
                "{} was replaced by a symbolic link; the runner reads only the file it created.",
                path.display()
            )))
        }
        Err(error) => return Err(Unreadable::Other(error.to_string())),
    };
    let meta = file
        .metadata()
        .map_err(|error| Unreadable::Other(error.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(Unreadable::Other(format!(
            "{} is not a regular file.",
            path.display()
        )));
    }
    if meta.len() > limit {
        return Err(Unreadable::TooLarge(meta.len()));
    }
    let mut bytes = Vec::new();
    // The step's processes may still be writing: never read more than the limit.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| Unreadable::Other(error.to_string()))?;
    if bytes.len() as u64 > limit {
        return Err(Unreadable::TooLarge(bytes.len() as u64));
    }
    if bytes.is_empty() {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// [`read`] for a file command: a failure becomes the step's error.
fn read_command(path: &Path, command: &str, errors: &mut Vec<String>) -> Option<String> {
    read(path, MAX_FILE_BYTES).unwrap_or_else(|unreadable| {
        errors.push(unreadable.describe(command, MAX_FILE_BYTES));
        None
    })
}

fn read_pairs(
    path: &Path,
    command: &str,
    budget: &mut ValueBudget,
    errors: &mut Vec<String>,
) -> Vec<(String, String)> {
    let Some(text) = read_command(path, command, errors) else {
        return Vec::new();
    };
    match parse_env_file(&text) {
        Ok(pairs) => pairs
            .into_iter()
            .filter(|(name, value)| admit(budget, command, name, value, errors))
            .collect(),
        Err(error) => {
            errors.push(describe(command, &error));
            Vec::new()
        }
    }
}

/// [`ValueBudget::admit`] for a file command: a refusal becomes the step's error.
fn admit(
    budget: &mut ValueBudget,
    command: &str,
    name: &str,
    value: &str,
    errors: &mut Vec<String>,
) -> bool {
    match budget.admit(name, value) {
        Ok(()) => true,
        Err(reason) => {
            errors.push(format!(
                "Unable to process file command '{command}' successfully. {reason}"
            ));
            false
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
        let got = files.collect(&mut spare, &mut ValueBudget::default());
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
        let got = first.collect(&mut spare, &mut ValueBudget::default());
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
        let got = second.collect(&mut spare, &mut ValueBudget::default());
        assert!(got.env.is_empty() && got.errors.is_empty());
        let third = StepFiles::create(dir.path(), 3, &mut spare).unwrap();
        assert_eq!(fs::metadata(&third.env).unwrap().nlink(), 1);
        assert!(dir.path().join("kept").exists());
    }

    #[test]
    fn a_link_or_a_pipe_in_place_of_a_file_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("host-secret");
        fs::write(&outside, "ROOT_PASSWORD=hunter2\n").unwrap();
        let mut spare = SpareFiles::default();
        let files = StepFiles::create(dir.path(), 1, &mut spare).unwrap();
        fs::remove_file(&files.env).unwrap();
        std::os::unix::fs::symlink(&outside, &files.env).unwrap();
        fs::remove_file(&files.output).unwrap();
        let fifo = std::ffi::CString::new(files.output.to_str().unwrap()).unwrap();
        // SAFETY: a valid path and mode.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let got = files.collect(&mut spare, &mut ValueBudget::default());
        assert!(got.env.is_empty() && got.outputs.is_empty());
        let errors = got.errors.join("\n");
        assert!(
            errors.contains("'env'") && errors.contains("symbolic link"),
            "{errors}"
        );
        assert!(
            errors.contains("'output'") && errors.contains("not a regular file"),
            "{errors}"
        );
        assert!(!errors.contains("hunter2"), "{errors}");
    }

    #[test]
    fn oversized_values_files_and_jobs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut spare = SpareFiles::default();
        let mut budget = ValueBudget::default();
        let files = StepFiles::create(dir.path(), 1, &mut spare).unwrap();
        let big = "x".repeat(MAX_VALUE_BYTES + 1);
        fs::write(&files.output, format!("small=1\nbig={big}\n")).unwrap();
        let got = files.collect(&mut spare, &mut budget);
        assert_eq!(got.outputs, [("small".into(), "1".into())]);
        assert_eq!(
            got.errors,
            ["Unable to process file command 'output' successfully. The value of 'big' is 1,048,577 bytes; a value can be at most 1,048,576 bytes (1 MiB)."]
        );
        // A file over the limit is not read at all.
        let files = StepFiles::create(dir.path(), 2, &mut spare).unwrap();
        fs::File::create(&files.env)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        let got = files.collect(&mut spare, &mut budget);
        assert!(got.env.is_empty());
        assert_eq!(
            got.errors,
            ["Unable to process file command 'env' successfully. The file is 52,428,801 bytes; a step's file commands can hold at most 52,428,800 bytes (50 MiB)."]
        );
        // What the job's steps hand on in all is bounded too.
        let value = "y".repeat(MAX_VALUE_BYTES - 10);
        let mut admitted = 0;
        while budget.admit("v", &value).is_ok() {
            admitted += 1;
        }
        // "small=1" took 6 bytes, each of these 1 + its value.
        assert_eq!(admitted, (MAX_JOB_VALUE_BYTES - 6) / (value.len() + 1));
        assert!(budget.admit("v", &value).unwrap_err().contains("50 MiB"));
    }

    #[test]
    fn files_kiln_writes_replace_a_planted_link_instead_of_writing_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("host-file");
        fs::write(&target, "original").unwrap();
        let planted = dir.path().join("set_env_4");
        std::os::unix::fs::symlink(&target, &planted).unwrap();
        let files = StepFiles::create(dir.path(), 4, &mut SpareFiles::default()).unwrap();
        assert_eq!(files.env, planted);
        assert!(!fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink());
        create_fresh(&dir.path().join("script.sh"), b"echo").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("next.sh")).unwrap();
        create_fresh(&dir.path().join("next.sh"), b"echo next").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "original");
        assert_eq!(
            fs::read_to_string(dir.path().join("next.sh")).unwrap(),
            "echo next"
        );
    }
}
