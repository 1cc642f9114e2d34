//! Listing and reading workflow files inside a repository without ever leaving it through a
//! symbolic link: what `kiln run`, `kiln validate`, `kiln plan` and the scheduler's planner
//! all read workflows and local callees with.

use std::path::{Path, PathBuf};

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
