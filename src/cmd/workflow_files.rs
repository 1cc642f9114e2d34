//! Finding and reading workflow files the way every command needs them: a file or a
//! directory (top level only, as GitHub reads `.github/workflows/`), parsed with local
//! reusable workflows (`./.github/workflows/x.yml`, `$/.github/workflows/x.yml`) resolved from
//! the repository they live in.

use anyhow::Context as _;
use kiln_workflow::model::Workflow;
use kiln_workflow::{parse_action, parse_workflow_with, Diagnostic, ParseOptions};
use std::path::{Path, PathBuf};

pub const DEFAULT_WORKFLOW_DIR: &str = ".github/workflows";

/// The files a path names: itself, or the `*.yml`/`*.yaml` files directly inside it, sorted.
/// Every command lists them this way (`kiln run`, `validate`, `plan`): a symbolic link inside
/// the repository `root` is followed only to a file inside it, anything else is an error that
/// names the link, so no command reads or quotes a file outside the repository through one.
/// A path outside the repository given explicitly is read as given.
pub fn list_workflow_files(path: &Path, root: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        refuse_links_leaving(path, root)
            .err()
            .unwrap_or_else(|| format!("cannot read {}: {e}", path.display()))
    })?;
    refuse_links_leaving(path, root)?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let list_error = |e: std::io::Error| format!("cannot list {}: {e}", path.display());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        let p = entry.path();
        let is_yaml = matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"));
        if !is_yaml {
            continue;
        }
        let file_type = entry.file_type().map_err(list_error)?;
        if file_type.is_symlink() {
            refuse_links_leaving(&p, root)?;
            if std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
                files.push(p);
            }
        } else if file_type.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// [`list_workflow_files`] in the repository `path` belongs to (see [`repository_root`]), for
/// `validate` and `plan`.
pub fn workflow_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    list_workflow_files(path, &repository_root(path)).map_err(anyhow::Error::msg)
}

/// `Err` naming the link when `path`, a path inside `root` as written, leads through a
/// symbolic link to something outside `root` or to nothing at all. Paths written outside
/// `root` are the caller's explicit choice and pass.
pub fn refuse_links_leaving(path: &Path, root: &Path) -> Result<(), String> {
    let written = lexical_absolute(path);
    let root_written = lexical_absolute(root);
    if !written.starts_with(&root_written) {
        return Ok(());
    }
    let real_root = std::fs::canonicalize(root).unwrap_or(root_written);
    let shown = path.display();
    match std::fs::canonicalize(path) {
        Ok(real) if real.starts_with(&real_root) => Ok(()),
        Ok(real) => Err(format!(
            "{shown} leads outside the repository (to {}) through a symbolic link: kiln reads workflow files only from inside the repository ({})",
            real.display(),
            real_root.display()
        )),
        // Only a link can make a listed path lead nowhere.
        Err(e) if std::fs::symlink_metadata(path).is_ok() => Err(format!(
            "{shown} is a symbolic link that leads nowhere ({e})"
        )),
        Err(_) => Ok(()),
    }
}

/// `path` made absolute with `.` and `..` resolved by name, without following links.
fn lexical_absolute(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Reads a workflow that a `uses:` names inside `root` (a local reusable workflow, or one of
/// a `--local-repository`): `None` when it is missing or a link leads outside `root`.
pub fn read_callee(root: &Path, relative: &str) -> Option<String> {
    let file = root.join(relative);
    refuse_links_leaving(&file, root).ok()?;
    if !lexical_absolute(&file).starts_with(lexical_absolute(root)) {
        return None;
    }
    std::fs::read_to_string(&file).ok()
}

pub fn is_action_file(path: &Path) -> bool {
    matches!(
        path.file_name().and_then(|n| n.to_str()),
        Some("action.yml" | "action.yaml")
    )
}

/// The repository a workflow file belongs to: the folder holding its `.github`, else the
/// current directory. Local `uses: ./...` references are relative to it.
pub fn repository_root(file: &Path) -> PathBuf {
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    for ancestor in absolute.ancestors() {
        if ancestor.file_name().is_some_and(|n| n == ".github") {
            if let Some(root) = ancestor.parent() {
                return root.to_path_buf();
            }
        }
    }
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

pub struct ParsedFile {
    pub display: String,
    pub workflow: Option<Workflow>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads and parses one workflow (or action) file, collecting every diagnostic.
pub fn parse_file(path: &Path) -> anyhow::Result<ParsedFile> {
    let display = path.display().to_string();
    let content = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {display}: is it a readable UTF-8 text file?"))?;
    if is_action_file(path) {
        let parsed = parse_action(&display, &content);
        return Ok(ParsedFile {
            display,
            workflow: None,
            diagnostics: parsed.diagnostics,
        });
    }
    let root = repository_root(path);
    // `./` and `$/` (the same repository; validated as the files are now, uncommitted
    // edits included) resolve in the repository the file belongs to.
    let resolver = move |reference: &str| -> Option<(String, String)> {
        let relative = match kiln_workflow::uses::self_repository_path(reference) {
            Ok(Some(path)) => path,
            _ => reference.strip_prefix("./")?,
        };
        let content = read_callee(&root, relative)?;
        Some((relative.to_string(), content))
    };
    let options = ParseOptions {
        resolver: Some(&resolver),
        ..ParseOptions::default()
    };
    let parsed = parse_workflow_with(&display, &content, &options);
    Ok(ParsedFile {
        display,
        workflow: parsed.value,
        diagnostics: parsed.diagnostics,
    })
}
