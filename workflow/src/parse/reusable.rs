//! Reusable workflows: loading callees through the resolver, checking the caller's `with` and
//! `secrets` against the callee's `on.workflow_call`, nesting depth and token permissions.

use super::{read_workflow_file, ParseOptions};
use crate::diag::Diagnostic;
use crate::model::{CallSecrets, InputType, Job, JobKind, PermissionLevel, Permissions, Workflow};
use crate::uses::{
    is_self_repository, self_repository_path, RepositoryRef, SELF_REPOSITORY_PREFIX,
};
use crate::value::Value;
use crate::yaml::{Node, NodeKind, Pos, Resolved};

/// The repository's default `GITHUB_TOKEN` permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionsPolicy {
    /// `contents: read` and `packages: read`, nothing else.
    LimitedRead,
    /// Write on every scope.
    Write,
}

/// The scopes `read-all` and `write-all` expand to, in the order GitHub lists them.
const SHORTHAND_SCOPES: &[&str] = &[
    "actions",
    "checks",
    "contents",
    "deployments",
    "discussions",
    "issues",
    "packages",
    "pages",
    "pull-requests",
    "repository-projects",
    "statuses",
    "security-events",
    "id-token",
];

/// Effective levels per scope; scopes not listed are `none`.
#[derive(Debug, Clone)]
struct Grant(Vec<(String, PermissionLevel)>);

impl Grant {
    fn level(&self, scope: &str) -> PermissionLevel {
        self.0
            .iter()
            .find(|(s, _)| s == scope)
            .map_or(PermissionLevel::None, |(_, l)| *l)
    }

    fn from_permissions(permissions: &Permissions) -> Grant {
        let all = |level| {
            Grant(
                SHORTHAND_SCOPES
                    .iter()
                    .map(|s| (s.to_string(), level))
                    .collect(),
            )
        };
        match permissions {
            Permissions::ReadAll(_) => all(PermissionLevel::Read),
            Permissions::WriteAll(_) => all(PermissionLevel::Write),
            Permissions::Scopes(scopes, _) => {
                Grant(scopes.iter().map(|(s, l)| (s.value.clone(), *l)).collect())
            }
        }
    }

    fn from_policy(policy: PermissionsPolicy) -> Grant {
        match policy {
            PermissionsPolicy::LimitedRead => Grant(vec![
                ("contents".into(), PermissionLevel::Read),
                ("packages".into(), PermissionLevel::Read),
            ]),
            PermissionsPolicy::Write => Grant(
                SHORTHAND_SCOPES
                    .iter()
                    .map(|s| (s.to_string(), PermissionLevel::Write))
                    .collect(),
            ),
        }
    }

    /// The scopes `request` asks more of than `self` allows: "requested" and "allowed" lists.
    fn excess(&self, request: &Grant) -> Option<(String, String)> {
        let mut order: Vec<&str> = SHORTHAND_SCOPES.to_vec();
        let mut extra: Vec<&str> = request
            .0
            .iter()
            .map(|(s, _)| s.as_str())
            .filter(|s| !SHORTHAND_SCOPES.contains(s))
            .collect();
        extra.sort_unstable();
        order.extend(extra);
        let exceeded: Vec<&str> = order
            .into_iter()
            .filter(|s| request.level(s) > self.level(s))
            .collect();
        if exceeded.is_empty() {
            return None;
        }
        let list = |grant: &Grant| {
            exceeded
                .iter()
                .map(|s| format!("{s}: {}", grant.level(s).name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Some((list(request), list(self)))
    }
}

const MAX_NESTING: usize = 64;
const MAX_LOADS: usize = 10_000;

struct CallContext<'o, 'a> {
    options: &'o ParseOptions<'a>,
    size: usize,
    loads: usize,
}

/// Loads every called workflow (recursively) and checks each call.
pub fn resolve_calls(
    file: &str,
    workflow: &mut Workflow,
    caller_size: usize,
    options: &ParseOptions,
    diags: &mut Vec<Diagnostic>,
) {
    let allowed_default = workflow.permissions.as_ref().map_or_else(
        || Grant::from_policy(options.permissions_policy),
        Grant::from_permissions,
    );
    let mut ctx = CallContext {
        options,
        size: caller_size,
        loads: 0,
    };
    resolve_level(file, workflow, &allowed_default, 0, &mut ctx, diags);
}

fn resolve_level(
    file: &str,
    workflow: &mut Workflow,
    workflow_grant: &Grant,
    depth: usize,
    ctx: &mut CallContext,
    diags: &mut Vec<Diagnostic>,
) {
    let origin = workflow.origin.clone();
    for job in &mut workflow.jobs {
        let job_id_pos = job.id.pos;
        let grant = job
            .permissions
            .as_ref()
            .map_or_else(|| workflow_grant.clone(), Grant::from_permissions);
        let JobKind::Call(call) = &mut job.kind else {
            continue;
        };
        if call.uses.value.is_empty() {
            continue;
        }
        // Recursion is bounded even if a caller asks for no limit and a workflow calls itself.
        let max_depth = ctx.options.max_nested_reusable_depth.min(MAX_NESTING);
        if depth + 1 > max_depth {
            diags.push(Diagnostic::error(
                file,
                Some(call.uses.pos),
                format!("Nested reusable workflow depth exceeded {max_depth}."),
            ));
            return;
        }
        // Every load adds at least one job, so more loads than jobs allowed already fails the
        // job limit; stopping here keeps workflows that call each other from fanning out.
        ctx.loads += 1;
        if ctx.loads > ctx.options.max_jobs.min(MAX_LOADS) {
            return;
        }
        let Some(resolver) = ctx.options.resolver else {
            return;
        };
        let uses = match self_reference(&call.uses.value, origin.as_ref()) {
            Ok(uses) => uses,
            Err(message) => {
                diags.push(Diagnostic::error(file, Some(call.uses.pos), message));
                continue;
            }
        };
        if let Some(problem) = reference_problem(&uses) {
            diags.push(Diagnostic::error(file, Some(call.uses.pos), problem));
            continue;
        }
        let Some((callee_file, content)) = resolver(&uses) else {
            // GitHub fetches `owner/repo/path@ref` from another repository; offline we cannot
            // tell a missing one from one we were not given, so only a local `./` file that is
            // not in the repository is an error. Running such a call still needs the workflow
            // (the engine refuses a call whose callee was not loaded).
            if !uses.starts_with("./") && !is_self_repository(&uses) {
                continue;
            }
            diags.push(Diagnostic::error(
                file,
                Some(call.uses.pos),
                format!("Unable to find reusable workflow '{uses}'"),
            ));
            continue;
        };
        let (callee, callee_diags, size) = read_workflow_file(&callee_file, &content, ctx.options);
        ctx.size = ctx.size.saturating_add(size);
        if ctx.size > ctx.options.max_result_size {
            diags.push(Diagnostic::error(
                file,
                Some(call.uses.pos),
                format!("Error from called workflow {uses}: Maximum object size exceeded"),
            ));
            return;
        }
        let failed = callee_diags.iter().any(Diagnostic::is_error);
        for d in callee_diags {
            if d.line == 0 {
                // Whole-file problems of the callee are reported at the call.
                diags.push(Diagnostic::error(
                    file,
                    Some(call.uses.pos),
                    format!("Error from called workflow {uses}: {}", d.message),
                ));
            } else {
                diags.push(d);
            }
        }
        let Some(mut callee) = callee else { continue };
        callee.origin = RepositoryRef::of_remote(&uses).or_else(|| origin.clone());
        if failed {
            continue;
        }
        check_inputs(file, call, &callee, diags);
        let callee_grant = check_permissions(file, job_id_pos, &uses, &grant, &callee, diags);
        resolve_level(
            &callee_file,
            &mut callee,
            &callee_grant,
            depth + 1,
            ctx,
            diags,
        );
        call.callee = Some(Box::new(callee));
    }
}

/// GitHub's rule for where a called workflow lives: directly in `.github/workflows/` of the
/// same repository (`./.github/workflows/x.yml`) or of another one
/// (`owner/repo/.github/workflows/x.yml@ref`), `$/` references of the same repository too. Anything else, a `..` step out or a
/// subfolder included, is refused with GitHub's message before any file is read.
fn reference_problem(uses: &str) -> Option<&'static str> {
    let local = uses
        .strip_prefix("./")
        .or_else(|| uses.strip_prefix(SELF_REPOSITORY_PREFIX));
    let path = match local {
        Some(local) => local,
        None => {
            // `owner/repo/path@ref`; a reference without `@` is not a workflow path to check.
            let (target, _) = uses.rsplit_once('@')?;
            let mut segments = target.splitn(3, '/');
            let (_, _, path) = (segments.next()?, segments.next()?, segments.next()?);
            path
        }
    };
    let Some(file) = path.strip_prefix(".github/workflows/") else {
        return Some("invalid value workflow reference: references to workflows must be rooted in '.github/workflows'");
    };
    if file.is_empty() || file == "." || file == ".." || file.contains(['/', '\\']) {
        return Some("invalid value workflow reference: workflows must be defined at the top level of the .github/workflows/ directory");
    }
    None
}

/// The reference to load for a call's `uses:`: a `$/path` in a workflow read from another
/// repository is that repository's `owner/repo/path@ref`; in the run's own files it stays
/// `$/path`, for the resolver to read from the commit being run.
fn self_reference(uses: &str, origin: Option<&RepositoryRef>) -> Result<String, String> {
    match (self_repository_path(uses)?, origin) {
        (Some(path), Some(origin)) => Ok(origin.reference(path)),
        (Some(path), None) => Ok(format!("{SELF_REPOSITORY_PREFIX}{path}")),
        (None, _) => Ok(uses.to_string()),
    }
}

fn check_permissions(
    file: &str,
    pos: Pos,
    uses: &str,
    allowed: &Grant,
    callee: &Workflow,
    diags: &mut Vec<Diagnostic>,
) -> Grant {
    let prefix = format!("Error calling workflow '{uses}'.");
    let callee_grant = match &callee.permissions {
        Some(permissions) => {
            let requested = Grant::from_permissions(permissions);
            if let Some((wanted, only)) = allowed.excess(&requested) {
                diags.push(Diagnostic::error(
                    file,
                    Some(pos),
                    format!("{prefix} The workflow '{uses}' is requesting '{wanted}', but is only allowed '{only}'."),
                ));
            }
            requested
        }
        None => allowed.clone(),
    };
    for job in &callee.jobs {
        let Some(permissions) = &job.permissions else {
            continue;
        };
        let requested = Grant::from_permissions(permissions);
        if let Some((wanted, only)) = allowed.excess(&requested) {
            let name = job
                .name
                .as_ref()
                .map_or(job.id.value.as_str(), |n| n.raw.as_str());
            diags.push(Diagnostic::error(
                file,
                Some(pos),
                format!("{prefix} The nested job '{name}' is requesting '{wanted}', but is only allowed '{only}'."),
            ));
        }
    }
    callee_grant
}

fn check_inputs(
    file: &str,
    call: &crate::model::ReusableCall,
    callee: &Workflow,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(trigger) = callee.workflow_call() else {
        diags.push(Diagnostic::error(
            file,
            Some(call.uses.pos),
            format!(
                "The workflow '{}' is not callable: it has no `on: workflow_call`",
                call.uses.value
            ),
        ));
        return;
    };
    let input_names: Vec<&str> = trigger
        .inputs
        .iter()
        .map(|i| i.name.value.as_str())
        .collect();
    let with: Vec<(&str, Pos)> = call
        .with
        .iter()
        .map(|(n, p)| (n.value.as_str(), p.pos))
        .collect();
    report_undefined(file, "input", &with, &input_names, diags);
    for (name, param) in &call.with {
        let Some(input) = trigger
            .inputs
            .iter()
            .find(|i| i.name.value.eq_ignore_ascii_case(&name.value))
        else {
            continue;
        };
        let fits = param.template.is_some()
            || match input.input_type {
                InputType::Boolean => matches!(param.value, Value::Bool(_)),
                InputType::Number => matches!(param.value, Value::Number(_)),
                _ => true,
            };
        if !fits {
            diags.push(Diagnostic::error(
                file,
                Some(param.pos),
                format!("Unexpected value '{}'", param.value.to_display_string()),
            ));
        }
    }
    let required: Vec<&str> = trigger
        .inputs
        .iter()
        .filter(|i| i.required && i.default.is_none())
        .map(|i| i.name.value.as_str())
        .collect();
    report_missing(file, "Input", &required, &with, call.uses.pos, diags);
    let secrets: Vec<(&str, Pos)> = match &call.secrets {
        CallSecrets::Inherit(_) => return,
        CallSecrets::None => Vec::new(),
        CallSecrets::Map(pairs) => pairs
            .iter()
            .map(|(n, t)| (n.value.as_str(), t.pos))
            .collect(),
    };
    let secret_names: Vec<&str> = trigger
        .secrets
        .iter()
        .map(|s| s.name.value.as_str())
        .collect();
    report_undefined(file, "secret", &secrets, &secret_names, diags);
    let required: Vec<&str> = trigger
        .secrets
        .iter()
        .filter(|s| s.required)
        .map(|s| s.name.value.as_str())
        .collect();
    report_missing(file, "Secret", &required, &secrets, call.uses.pos, diags);
}

/// Values passed (`with:` or `secrets:`) that the callee does not declare.
fn report_undefined(
    file: &str,
    kind: &str,
    provided: &[(&str, Pos)],
    declared: &[&str],
    diags: &mut Vec<Diagnostic>,
) {
    for (name, pos) in provided {
        if !declared.iter().any(|d| d.eq_ignore_ascii_case(name)) {
            diags.push(Diagnostic::error(
                file,
                Some(*pos),
                format!("Invalid {kind}, {name} is not defined in the referenced workflow."),
            ));
        }
    }
}

/// Required inputs or secrets of the callee that the call does not pass.
fn report_missing(
    file: &str,
    kind: &str,
    required: &[&str],
    provided: &[(&str, Pos)],
    call: Pos,
    diags: &mut Vec<Diagnostic>,
) {
    for name in required {
        if !provided.iter().any(|(p, _)| p.eq_ignore_ascii_case(name)) {
            diags.push(Diagnostic::error(
                file,
                Some(call),
                format!("{kind} {name} is required, but not provided while calling."),
            ));
        }
    }
}

/// Jobs in the run: a call job counts itself and the jobs of its callee.
pub fn count_jobs(workflow: &Workflow) -> usize {
    workflow.jobs.iter().map(job_count).sum()
}

fn job_count(job: &Job) -> usize {
    match &job.kind {
        JobKind::Call(call) => 1 + call.callee.as_deref().map_or(0, count_jobs),
        JobKind::Steps(_) => 1,
    }
}

/// The memory GitHub accounts for a parsed file, which its size limit bounds: a fixed
/// object size per node, plus string storage (UTF-16) for strings and the file name.
pub fn result_size(root: &Node, file_name: &str) -> usize {
    const OBJECT: usize = 24;
    const STRING_OVERHEAD: usize = 26;
    let utf16_len = |s: &str| {
        if s.is_ascii() {
            s.len()
        } else {
            s.encode_utf16().count()
        }
    };
    let string_bytes = |s: &str| STRING_OVERHEAD + 2 * utf16_len(s);
    let mut size = string_bytes(file_name);
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        size = size.saturating_add(match &node.kind {
            NodeKind::Scalar {
                value,
                resolved: Resolved::String,
                ..
            } => OBJECT + string_bytes(value),
            NodeKind::Scalar { .. } => OBJECT,
            NodeKind::Sequence(items) => {
                stack.extend(items.iter());
                OBJECT
            }
            NodeKind::Mapping(pairs) => {
                for (k, v) in pairs {
                    stack.push(k);
                    stack.push(v);
                }
                OBJECT
            }
        });
    }
    size
}

#[cfg(test)]
mod tests {
    use crate::parse::{parse_workflow_with, ParseOptions};

    fn call_errors(uses: &str) -> (Vec<String>, Vec<String>) {
        let asked = std::cell::RefCell::new(Vec::new());
        let resolver = |reference: &str| {
            asked.borrow_mut().push(reference.to_owned());
            let callee = "on:\n  workflow_call:\njobs:\n  inner:\n    runs-on: x\n    steps:\n      - run: echo\n";
            Some((reference.to_owned(), callee.to_owned()))
        };
        let options = ParseOptions {
            resolver: Some(&resolver),
            ..ParseOptions::default()
        };
        let yaml = format!("on: push\njobs:\n  call:\n    uses: {uses}\n");
        let parsed = parse_workflow_with("ci.yml", &yaml, &options);
        let errors = parsed.errors().map(|d| d.message.clone()).collect();
        let asked = asked.borrow().clone();
        (errors, asked)
    }

    #[test]
    fn called_workflows_must_be_directly_in_github_workflows() {
        for uses in [
            "./.github/workflows/x.yml",
            "octo/lib/.github/workflows/x.yaml@v1",
        ] {
            let (errors, asked) = call_errors(uses);
            assert!(errors.is_empty(), "{uses}: {errors:?}");
            assert_eq!(asked, [uses]);
        }
        let rooted = "invalid value workflow reference: references to workflows must be rooted in '.github/workflows'";
        let top = "invalid value workflow reference: workflows must be defined at the top level of the .github/workflows/ directory";
        for (uses, message) in [
            ("./../x.yml", rooted),
            ("./x.yml", rooted),
            ("./ci/.github/workflows/x.yml", rooted),
            ("./.github/workflows/../../x.yml", top),
            ("./.github/workflows/sub/x.yml", top),
            ("./.github/workflows/..", top),
            ("octo/lib/../../x.yml@v1", rooted),
            ("octo/lib/.github/workflows/../x.yml@v1", top),
        ] {
            let (errors, asked) = call_errors(uses);
            assert_eq!(errors, [message], "{uses}");
            assert!(asked.is_empty(), "{uses} was read: {asked:?}");
        }
    }
}
