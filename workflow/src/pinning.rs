//! The pinning rule: a remote action or reusable workflow should be referenced by a full
//! commit SHA, because tags and branches can be moved to point at other code.

use crate::diag::Diagnostic;
use crate::model::{JobKind, Spanned, Step, StepAction, Workflow};

/// One warning per remote `uses:` (steps and reusable jobs; not `./local`, not `$/` in the
/// same repository at the running commit, not `docker://`) whose ref is not a 40-hex-digit
/// commit SHA.
pub fn unpinned_uses(workflow: &Workflow, file: &str) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    for job in &workflow.jobs {
        match &job.kind {
            JobKind::Call(call) => check(&call.uses, file, &mut found),
            JobKind::Steps(steps) => check_steps(steps, file, &mut found),
        }
    }
    found
}

fn check_steps(steps: &[Step], file: &str, found: &mut Vec<Diagnostic>) {
    for step in steps {
        match &step.action {
            StepAction::Uses { uses, .. } => check(uses, file, found),
            StepAction::Parallel(inner) => check_steps(inner, file, found),
            _ => {}
        }
    }
}

fn check(uses: &Spanned<String>, file: &str, found: &mut Vec<Diagnostic>) {
    let value = uses.value.as_str();
    if value.is_empty()
        || value.starts_with("./")
        || value.starts_with(".\\")
        || crate::uses::is_self_repository(value)
        || value.starts_with("docker://")
    {
        return;
    }
    let git_ref = value.rsplit_once('@').map_or("", |(_, r)| r);
    if is_commit_sha(git_ref) {
        return;
    }
    found.push(
        Diagnostic::warning(file, Some(uses.pos), format!("'{value}' is not pinned to a full commit SHA"))
            .with_hint("pin it to the 40-character commit SHA the tag points to, and keep the tag in a comment"),
    );
}

fn is_commit_sha(git_ref: &str) -> bool {
    git_ref.len() == 40 && git_ref.chars().all(|c| c.is_ascii_hexdigit())
}
