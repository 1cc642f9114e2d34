//! `hashFiles()`, byte-identical to GitHub's runner: the runner's argument handling
//! (`HashFilesFunction.cs`), `@actions/glob` 0.4 with minimatch 3 for matching and order,
//! and `hashFiles.ts` for what is hashed: SHA-256 over the raw SHA-256 of each file.
//!
//! Linux and macOS only. On Windows GitHub matches case-insensitively, lists directories in
//! NTFS order and splits patterns on `\r\n`; none of that is reproduced here.
//!
//! Deliberate differences: a matched named pipe, socket or device is an error (GitHub blocks
//! on a pipe until its 120 s timeout, fails on a socket, and reads a device, which can be
//! endless); a pattern segment with more than 32 nested unclosed `[` is refused instead of
//! being re-parsed in quadratic time; `~` is `$HOME` only (Node falls back to the password
//! database when it is unset).

mod digest;
mod glob;
mod pattern;
mod source;
mod walk;

pub use source::{DirEntry, EntryKind, FileSource, LocalFiles};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The runner kills its hashFiles helper after this long.
const GITHUB_TIMEOUT: Duration = Duration::from_secs(120);

/// The one option hashFiles() accepts, as its first argument (case-insensitive).
pub const FOLLOW_SYMBOLIC_LINKS_OPTION: &str = "--follow-symbolic-links";

#[derive(Debug, thiserror::Error)]
pub enum HashFilesError {
    #[error(
        "invalid glob option '{option}': the only option hashFiles() accepts is '--follow-symbolic-links', as its \
         first argument"
    )]
    InvalidGlobOption { option: String },
    #[error("invalid hashFiles() pattern '{pattern}': {reason}")]
    InvalidPattern { pattern: String, reason: String },
    #[error("hashFiles() cannot use the workspace '{}': {source}", path.display())]
    Workspace {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("hashFiles() could not {action} '{}': {source}; fix its permissions or exclude it with a '!' pattern", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "hashFiles() matched '{}', a broken symbolic link, and fails on it as GitHub's runner does: fix or remove \
         the link, exclude it with a '!' pattern, or pass '--follow-symbolic-links' to skip broken links",
        path.display()
    )]
    BrokenSymlink { path: PathBuf },
    #[error(
        "hashFiles() matched '{}', whose name is not valid UTF-8; GitHub's runner cannot open such files either: \
         rename it or narrow the pattern",
        path.display()
    )]
    InvalidFileName { path: PathBuf },
    #[error(
        "hashFiles() matched '{}', which is {kind}, not a regular file (GitHub's runner would block or fail on \
         it): exclude it with a '!' pattern",
        path.display()
    )]
    NotRegularFile { path: PathBuf, kind: &'static str },
    #[error(
        "hashFiles() took longer than {seconds} s, the limit of GitHub's runner: narrow the patterns to fewer or \
         smaller files"
    )]
    TimedOut { seconds: u64 },
}

#[derive(Debug, Clone, Default)]
pub struct HashFilesOptions {
    /// Follow symbolic links while walking (also enabled by a leading
    /// `--follow-symbolic-links` argument).
    pub follow_symbolic_links: bool,
    /// Threads hashing file contents; 0 means `available_parallelism`.
    pub threads: usize,
}

/// `hashFiles(args...)` evaluated in `workspace` with default options: lowercase hex, or ""
/// when no file matched.
pub fn hash_files(workspace: &Path, args: &[String]) -> Result<String, HashFilesError> {
    hash_files_with(workspace, args, &HashFilesOptions::default())
}

/// [`hash_files`] with explicit options.
pub fn hash_files_with(
    workspace: &Path,
    args: &[String],
    options: &HashFilesOptions,
) -> Result<String, HashFilesError> {
    let cwd = real_workspace(workspace)?;
    hash_files_in(&LocalFiles, &cwd, args, options)
}

/// `hashFiles(args...)` over any [`FileSource`]: `cwd` is the workspace as the source names it
/// (an absolute path with links resolved, as the runner's `process.cwd()`). `~` patterns root
/// at `$HOME` as on the local file system.
pub fn hash_files_in(
    source: &dyn FileSource,
    cwd: &str,
    args: &[String],
    options: &HashFilesOptions,
) -> Result<String, HashFilesError> {
    let deadline = Instant::now() + GITHUB_TIMEOUT;
    let prepared = Prepared::new(cwd, args, options)?;
    let outcome = prepared.walk(source, deadline);
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        threads => threads,
    };
    let digests = digest::digest_files(source, &outcome.files, threads, deadline)?;
    if let Some(error) = outcome.error {
        return Err(error);
    }
    Ok(digest::combine(&digests))
}

/// hashFiles()'s result from the digests of the matched files, in order: SHA-256 over the
/// raw per-file digests, lowercase hex, "" for none (for callers that keep per-file digests).
pub fn combine_digests(digests: &[[u8; 32]]) -> String {
    digest::combine(digests)
}

/// The files hashFiles() would hash, in GitHub's order, as absolute paths under the
/// workspace's real path (useful for `kiln hash-files --list` and for tests).
pub fn matched_files(
    workspace: &Path,
    args: &[String],
    options: &HashFilesOptions,
) -> Result<Vec<PathBuf>, HashFilesError> {
    let cwd = real_workspace(workspace)?;
    matched_files_in(&LocalFiles, &cwd, args, options)
        .map(|files| files.into_iter().map(PathBuf::from).collect())
}

/// [`matched_files`] over any [`FileSource`], as the source names the paths.
pub fn matched_files_in(
    source: &dyn FileSource,
    cwd: &str,
    args: &[String],
    options: &HashFilesOptions,
) -> Result<Vec<String>, HashFilesError> {
    let prepared = Prepared::new(cwd, args, options)?;
    let outcome = prepared.walk(source, Instant::now() + GITHUB_TIMEOUT);
    match outcome.error {
        Some(error) => Err(error),
        None => Ok(outcome.files),
    }
}

/// Arguments and workspace turned into rooted patterns.
struct Prepared {
    cwd: String,
    patterns: Vec<pattern::Pattern>,
    follow_symbolic_links: bool,
}

impl Prepared {
    fn new(
        cwd: &str,
        args: &[String],
        options: &HashFilesOptions,
    ) -> Result<Prepared, HashFilesError> {
        let (follow_option, lines) = split_arguments(args)?;
        let cwd = cwd.to_string();
        let home = std::env::var("HOME").ok().filter(|home| !home.is_empty());
        let roots = pattern::Roots {
            cwd: &cwd,
            home: home.as_deref(),
        };
        let patterns = pattern::parse_patterns(&lines, &roots)?;
        Ok(Prepared {
            cwd,
            patterns,
            follow_symbolic_links: follow_option || options.follow_symbolic_links,
        })
    }

    fn walk(&self, source: &dyn FileSource, deadline: Instant) -> walk::WalkOutcome {
        walk::walk(&walk::WalkSettings {
            source,
            patterns: &self.patterns,
            cwd: &self.cwd,
            follow_symbolic_links: self.follow_symbolic_links,
            deadline,
        })
    }
}

/// The runner's argument handling: a first argument starting with `--` must be the
/// follow option; the rest are joined with newlines into the pattern text.
fn split_arguments(args: &[String]) -> Result<(bool, String), HashFilesError> {
    let mut follow = false;
    let mut patterns: Vec<&str> = Vec::with_capacity(args.len());
    for (index, argument) in args.iter().enumerate() {
        if index == 0 && argument.starts_with("--") {
            if crate::value::eq_ignore_case(argument, FOLLOW_SYMBOLIC_LINKS_OPTION) {
                follow = true;
                continue;
            }
            return Err(HashFilesError::InvalidGlobOption {
                option: argument.clone(),
            });
        }
        patterns.push(argument);
    }
    Ok((follow, patterns.join("\n")))
}

/// The workspace as the runner's node process sees it (`process.cwd()`): symlinks resolved.
fn real_workspace(workspace: &Path) -> Result<String, HashFilesError> {
    let failed = |source| HashFilesError::Workspace {
        path: workspace.to_path_buf(),
        source,
    };
    let real = std::fs::canonicalize(workspace).map_err(failed)?;
    if !real.is_dir() {
        return Err(failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is not a directory",
        )));
    }
    real.into_os_string().into_string().map_err(|_| {
        failed(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "its real path is not valid UTF-8",
        ))
    })
}
