//! `actions/upload-artifact@v4` and `actions/download-artifact@v4`, stored under the run's
//! artifact folder (`<artifacts>/<name>/`), so the jobs of one run share them.

use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use indexmap::IndexMap;
use kiln_workflow::commands::AnnotationLevel;

use super::{input, BuiltinResult};
use crate::executor::job::JobRunner;
use crate::executor::step::StepCtx;

/// Characters the artifact service refuses in names.
const INVALID_NAME_CHARS: &[char] = &['"', ':', '<', '>', '|', '*', '?', '\r', '\n', '\\', '/'];

impl JobRunner {
    pub(super) fn upload_artifact(
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
        let dest = self.req.dirs.artifacts().join(name);
        if dest.exists() {
            if input(inputs, "overwrite") != Some("true") {
                return Err(format!(
                    "Failed to CreateArtifact: an artifact with the name `{name}` already exists in this run (set `overwrite: true` to replace it)"
                ));
            }
            std::fs::remove_dir_all(&dest)
                .map_err(|e| format!("cannot replace artifact {name}: {e}"))?;
        }
        let staging = self
            .req
            .dirs
            .artifacts()
            .join(format!(".upload-{}-{}", self.key, name));
        for file in &files {
            let relative = file.strip_prefix(&root).unwrap_or(file);
            copy_file(file, &staging.join(relative))?;
        }
        std::fs::rename(&staging, &dest)
            .map_err(|e| format!("cannot store artifact {name}: {e}"))?;
        self.emitter.log(
            &self.log,
            &ctx.name,
            &format!(
                "Artifact {name} stored with {} file(s) at {}",
                files.len(),
                dest.display()
            ),
        );
        Ok(vec![
            ("artifact-id".to_owned(), artifact_id(name)),
            (
                "artifact-url".to_owned(),
                format!("file://{}", dest.display()),
            ),
        ])
    }

    pub(super) fn download_artifact(
        &mut self,
        ctx: &StepCtx,
        inputs: &IndexMap<String, String>,
    ) -> BuiltinResult {
        let dest = match input(inputs, "path") {
            Some(path) => self.workspace_path(path)?,
            None => self.paths.workspace.clone(),
        };
        let store = self.req.dirs.artifacts();
        let selected: Vec<(String, bool)> = match input(inputs, "name") {
            Some(name) => {
                if !store.join(name).is_dir() {
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
                let mut names: Vec<String> = std::fs::read_dir(&store)
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
                names
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
            copy_tree(&store.join(name), &target)?;
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
