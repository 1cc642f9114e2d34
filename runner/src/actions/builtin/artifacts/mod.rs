//! `actions/upload-artifact@v4` and `actions/download-artifact@v4`, stored under the run's
//! artifact folder (`<artifacts>/<name>/`) so the jobs of one run share them, or, for a job a
//! runner got from a scheduler, in the scheduler's artifact store ([`ArtifactServer`]), where
//! the jobs of the run meet whichever runner ran them.

use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use indexmap::IndexMap;
use kiln_workflow::commands::AnnotationLevel;

use super::{input, BuiltinResult};
use crate::executor::job::JobRunner;
use crate::executor::step::StepCtx;

/// Characters the artifact service refuses in names.
const INVALID_NAME_CHARS: &[char] = &['"', ':', '<', '>', '|', '*', '?', '\r', '\n', '\\', '/'];

mod remote;

pub use remote::ArtifactServer;

/// Where the run's artifacts are: the run directory (`kiln run`), or the scheduler's store
/// (a job a runner got from a scheduler).
enum Store {
    Local(PathBuf),
    Remote(ArtifactServer),
}

impl Store {
    /// Runs a blocking request of the remote store on a blocking thread.
    async fn remote<T: Send + 'static>(
        server: &ArtifactServer,
        call: impl FnOnce(ArtifactServer) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        let server = server.clone();
        tokio::task::spawn_blocking(move || call(server))
            .await
            .map_err(|e| format!("the artifact request stopped: {e}"))?
    }

    /// Stores `files` (under `root`) as artifact `name`: (artifact id, artifact url).
    async fn put(
        &self,
        name: &str,
        root: PathBuf,
        files: Vec<PathBuf>,
        overwrite: bool,
        staging_key: &str,
    ) -> Result<(String, String), String> {
        match self {
            Store::Local(store) => {
                let dest = store.join(name);
                if dest.exists() {
                    if !overwrite {
                        return Err(format!(
                            "Failed to CreateArtifact: an artifact with the name `{name}` already exists in this run (set `overwrite: true` to replace it)"
                        ));
                    }
                    std::fs::remove_dir_all(&dest)
                        .map_err(|e| format!("cannot replace artifact {name}: {e}"))?;
                }
                let staging = store.join(format!(".upload-{staging_key}-{name}"));
                for file in &files {
                    let relative = file.strip_prefix(&root).unwrap_or(file);
                    copy_file(file, &staging.join(relative))?;
                }
                std::fs::rename(&staging, &dest)
                    .map_err(|e| format!("cannot store artifact {name}: {e}"))?;
                Ok((artifact_id(name), format!("file://{}", dest.display())))
            }
            Store::Remote(server) => {
                let name = name.to_owned();
                let stored = Self::remote(server, move |server| {
                    server.upload(&name, &root, &files, overwrite)
                })
                .await?;
                Ok((stored.id, stored.url))
            }
        }
    }

    async fn exists(&self, name: &str) -> Result<bool, String> {
        match self {
            Store::Local(store) => Ok(store.join(name).is_dir()),
            Store::Remote(server) => {
                let name = name.to_owned();
                Self::remote(server, move |server| server.exists(&name)).await
            }
        }
    }

    /// Every artifact of the run, sorted by name.
    async fn names(&self) -> Result<Vec<String>, String> {
        match self {
            Store::Local(store) => {
                let mut names: Vec<String> = std::fs::read_dir(store)
                    .map(|entries| {
                        entries
                            .flatten()
                            .filter(|e| e.path().is_dir())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .filter(|n| !n.starts_with('.'))
                            .collect()
                    })
                    .unwrap_or_default();
                names.sort();
                Ok(names)
            }
            Store::Remote(server) => Self::remote(server, |server| server.names()).await,
        }
    }

    async fn fetch(&self, name: &str, target: PathBuf) -> Result<(), String> {
        match self {
            Store::Local(store) => copy_tree(&store.join(name), &target),
            Store::Remote(server) => {
                let name = name.to_owned();
                Self::remote(server, move |server| server.download(&name, &target)).await
            }
        }
    }

    /// Where a log line says the artifact went.
    fn describe(&self, name: &str) -> String {
        match self {
            Store::Local(store) => store.join(name).display().to_string(),
            Store::Remote(server) => format!("{}/artifacts", server.url.trim_end_matches('/')),
        }
    }
}

impl JobRunner {
    fn artifact_store(&self) -> Store {
        match &self.req.artifacts {
            Some(server) => Store::Remote(server.clone()),
            None => Store::Local(self.req.dirs.artifacts()),
        }
    }

    pub(super) async fn upload_artifact(
        &mut self,
        ctx: &StepCtx,
        inputs: &IndexMap<String, String>,
    ) -> BuiltinResult {
        let name = input(inputs, "name").unwrap_or("artifact");
        if name.contains(INVALID_NAME_CHARS) || name == "." || name == ".." {
            return Err(format!(
                "The artifact name is not valid: {name}. Contains the following character: one of \" : < > | * ? \\r \\n \\ /"
            ));
        }
        let patterns = input(inputs, "path").ok_or("Input required and not supplied: path")?;
        let hidden = input(inputs, "include-hidden-files") == Some("true");
        let (root, files) = collect_files(&self.paths.workspace, patterns, hidden)?;
        if files.is_empty() {
            let message = format!("No files were found with the provided path: {patterns}. No artifacts will be uploaded.");
            return match input(inputs, "if-no-files-found").unwrap_or("warn") {
                "error" => Err(message),
                "ignore" => Ok(Vec::new()),
                _ => {
                    self.emitter
                        .annotate(&self.log, &ctx.name, AnnotationLevel::Warning, &message);
                    Ok(Vec::new())
                }
            };
        }
        let store = self.artifact_store();
        let count = files.len();
        let overwrite = input(inputs, "overwrite") == Some("true");
        let (id, url) = store.put(name, root, files, overwrite, &self.key).await?;
        self.emitter.log(
            &self.log,
            &ctx.name,
            &format!(
                "Artifact {name} stored with {count} file(s) at {}",
                store.describe(name)
            ),
        );
        Ok(vec![
            ("artifact-id".to_owned(), id),
            ("artifact-url".to_owned(), url),
        ])
    }

    pub(super) async fn download_artifact(
        &mut self,
        ctx: &StepCtx,
        inputs: &IndexMap<String, String>,
    ) -> BuiltinResult {
        let dest = match input(inputs, "path") {
            Some(path) => self.workspace_path(path)?,
            None => self.paths.workspace.clone(),
        };
        let store = self.artifact_store();
        let selected: Vec<(String, bool)> = match input(inputs, "name") {
            Some(name) => {
                if !store.exists(name).await? {
                    return Err(format!(
                        "Unable to download artifact(s): Artifact not found for name: {name}"
                    ));
                }
                vec![(name.to_owned(), true)]
            }
            None => {
                let pattern = match input(inputs, "pattern") {
                    Some(p) => Some(glob(p)?),
                    None => None,
                };
                let merge = input(inputs, "merge-multiple") == Some("true");
                store
                    .names()
                    .await?
                    .into_iter()
                    .filter(|n| pattern.as_ref().is_none_or(|p| p.is_match(n)))
                    .map(|n| (n, merge))
                    .collect()
            }
        };
        for (name, directly) in &selected {
            let target = if *directly {
                dest.clone()
            } else {
                dest.join(name)
            };
            store.fetch(name, target).await?;
        }
        self.emitter.log(
            &self.log,
            &ctx.name,
            &format!(
                "Downloaded {} artifact(s) to {}",
                selected.len(),
                dest.display()
            ),
        );
        Ok(vec![(
            "download-path".to_owned(),
            dest.to_string_lossy().into_owned(),
        )])
    }
}

/// A stable id per name, for the `artifact-id` output.
fn artifact_id(name: &str) -> String {
    let hash = name
        .bytes()
        .fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b));
    (hash % 1_000_000_000).to_string()
}

fn glob(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("invalid pattern `{pattern}`: {e}"))
}

fn has_glob(text: &str) -> bool {
    text.contains(['*', '?', '[', '{'])
}

fn is_hidden(path: &Path, root: &Path) -> bool {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .any(|c| matches!(c, Component::Normal(n) if n.to_string_lossy().starts_with('.')))
}

/// Files matched by upload-artifact's `path` lines (`!` excludes), and the folder their
/// paths are kept relative to: the common ancestor of every search root.
fn collect_files(
    workspace: &Path,
    patterns: &str,
    hidden: bool,
) -> Result<(PathBuf, Vec<PathBuf>), String> {
    let mut includes = Vec::new();
    let mut excludes = Vec::new();
    for line in patterns
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        match line.strip_prefix('!') {
            Some(rest) => excludes.push(glob(&absolute(workspace, rest.trim()))?),
            None => includes.push(absolute(workspace, line)),
        }
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    let mut files = Vec::new();
    for pattern in &includes {
        let literal: PathBuf = Path::new(pattern)
            .components()
            .take_while(|c| !has_glob(&c.as_os_str().to_string_lossy()))
            .collect();
        if !has_glob(pattern) {
            let path = PathBuf::from(pattern);
            if path.is_file() {
                roots.push(path.parent().map(Path::to_path_buf).unwrap_or_default());
                files.push(path);
            } else if path.is_dir() {
                files.extend(walk_files(&path, hidden));
                roots.push(path);
            }
            continue;
        }
        let matcher = glob(pattern)?;
        roots.push(literal.clone());
        for entry in walkdir::WalkDir::new(&literal)
            .follow_links(true)
            .into_iter()
            .flatten()
        {
            let path = entry.path();
            if !matcher.is_match(path) || (!hidden && is_hidden(path, &literal)) {
                continue;
            }
            if path.is_dir() {
                files.extend(walk_files(path, hidden));
            } else {
                files.push(path.to_path_buf());
            }
        }
    }
    files.retain(|f| !excludes.iter().any(|e| e.is_match(f)));
    files.sort();
    files.dedup();
    let root = common_ancestor(&roots).unwrap_or_else(|| workspace.to_path_buf());
    Ok((root, files))
}

fn absolute(workspace: &Path, pattern: &str) -> String {
    let trimmed = pattern.strip_prefix("./").unwrap_or(pattern);
    if Path::new(trimmed).is_absolute() {
        trimmed.to_owned()
    } else {
        workspace.join(trimmed).to_string_lossy().into_owned()
    }
}

fn walk_files(dir: &Path, hidden: bool) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .follow_links(true)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| hidden || !is_hidden(p, dir))
        .collect()
}

fn common_ancestor(paths: &[PathBuf]) -> Option<PathBuf> {
    let mut iter = paths.iter();
    let mut common = iter.next()?.clone();
    for path in iter {
        while !path.starts_with(&common) {
            if !common.pop() {
                return None;
            }
        }
    }
    Some(common)
}

fn copy_file(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("cannot copy {} to {}: {e}", from.display(), to.display()))
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    for entry in walkdir::WalkDir::new(from).into_iter().flatten() {
        if entry.file_type().is_file() {
            let relative = entry.path().strip_prefix(from).unwrap_or(entry.path());
            copy_file(entry.path(), &to.join(relative))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_keep_paths_relative_to_the_common_root() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        std::fs::create_dir_all(ws.join("out/a")).unwrap();
        std::fs::write(ws.join("out/a/1.txt"), "1").unwrap();
        std::fs::write(ws.join("out/2.log"), "2").unwrap();
        std::fs::write(ws.join("out/.hidden"), "h").unwrap();
        let (root, files) = collect_files(ws, "out/**/*.txt\nout/*.log\n!**/2.log", false).unwrap();
        assert_eq!(root, ws.join("out"));
        assert_eq!(files, [ws.join("out/a/1.txt")]);
        let (_, all) = collect_files(ws, "out", false).unwrap();
        assert_eq!(all.len(), 2);
    }
}
