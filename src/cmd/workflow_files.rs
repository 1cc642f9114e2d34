//! Finding and reading workflow files the way every command needs them: a file or a
//! directory (top level only, as GitHub reads `.github/workflows/`), parsed with local
//! reusable workflows (`./.github/workflows/x.yml`, `$/.github/workflows/x.yml`) resolved from
//! the repository they live in.

use anyhow::Context as _;
use kiln_scheduler::discover::files::{list_workflow_files, read_callee};
use kiln_workflow::model::Workflow;
use kiln_workflow::{parse_action, parse_workflow_with, Diagnostic, ParseOptions};
use std::path::{Path, PathBuf};

pub use kiln_scheduler::discover::DEFAULT_WORKFLOW_DIR;

/// [`list_workflow_files`] in the repository `path` belongs to (see [`repository_root`]), for
/// `validate` and `plan`.
pub fn workflow_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    list_workflow_files(path, &repository_root(path)).map_err(anyhow::Error::msg)
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
