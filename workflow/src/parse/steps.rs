//! Steps: which kind of step a mapping is, its keys, ids (checked and generated).

use super::contexts::{self, KeyContext};
use super::ids::{check_identifier, IdScope};
use super::reader::Reader;
use crate::model::{Condition, Spanned, Step, StepAction};
use crate::uses::{is_self_repository, self_repository_path};
use crate::yaml::Node;

/// The contexts step keys may use: different in workflows and in composite actions.
pub struct StepContexts {
    pub condition: KeyContext,
    pub string: KeyContext,
    pub boolean: KeyContext,
    pub number: KeyContext,
    pub env: KeyContext,
    pub with: KeyContext,
    pub name: KeyContext,
}

pub const WORKFLOW_STEPS: StepContexts = StepContexts {
    condition: contexts::STEP_IF,
    string: contexts::STRING_STEPS,
    boolean: contexts::STEP_CONTINUE_ON_ERROR,
    number: contexts::STEP_TIMEOUT_MINUTES,
    env: contexts::STEP_ENV,
    with: contexts::STEP_WITH,
    name: contexts::STEP_NAME,
};

const COMMON_KEYS: &[&str] = &[
    "name",
    "id",
    "if",
    "continue-on-error",
    "timeout-minutes",
    "env",
    "background",
];
const RUN_KEYS: &[&str] = &["run", "working-directory", "shell"];
const USES_KEYS: &[&str] = &["uses", "with"];
const CONTROL_KEYS: &[&str] = &["wait", "wait-all", "cancel", "parallel"];
/// The keys that tell one kind of step from another, as GitHub lists them.
const DISTINGUISHING: &str = "parallel, run, shell, uses, with, working-directory";

pub fn read_steps(r: &mut Reader, node: &Node) -> Vec<Step> {
    read_steps_with(r, node, &WORKFLOW_STEPS)
}

pub fn read_steps_with(r: &mut Reader, node: &Node, contexts: &StepContexts) -> Vec<Step> {
    let Some(items) = r.sequence(node) else {
        return Vec::new();
    };
    let mut scope = IdScope::default();
    let steps: Vec<Step> = items
        .iter()
        .filter_map(|item| read_step(r, item, contexts, &mut scope))
        .collect();
    assign_generated_ids(steps, &mut scope)
}

fn read_step(r: &mut Reader, node: &Node, ctx: &StepContexts, scope: &mut IdScope) -> Option<Step> {
    let pairs = r.mapping(node)?;
    let has = |key: &str| pairs.iter().any(|(k, _)| k.as_str() == Some(key));
    let all_keys: Vec<&str> = [COMMON_KEYS, RUN_KEYS, USES_KEYS, CONTROL_KEYS].concat();
    let known = r.known_keys(pairs, &all_keys);
    let mut step = Step {
        id: None,
        effective_id: String::new(),
        name: None,
        condition: Condition {
            raw: String::new(),
            expression: "success()".into(),
            pos: node.pos,
        },
        action: StepAction::WaitAll,
        env: Default::default(),
        continue_on_error: None,
        timeout_minutes: None,
        background: false,
        pos: node.pos,
    };
    let mut run = None;
    let mut shell = None;
    let mut working_directory = None;
    let mut uses = None;
    let mut with = Default::default();
    let mut control = None;
    for (key, key_node, value) in known {
        match key {
            "name" => step.name = r.template(value, &ctx.name),
            "id" => {
                if let Some(id) = r.non_empty_literal(value) {
                    if check_identifier(r, &id) && !scope.claim(&id.value) {
                        r.error(
                            id.pos,
                            format!("The identifier '{}' may not be used more than once within the same scope.", id.value),
                        );
                    }
                    step.id = Some(id);
                }
            }
            "if" => step.condition = r.condition(Some(value), &ctx.condition, value.pos),
            "continue-on-error" => step.continue_on_error = r.bool_or_expr(value, &ctx.boolean),
            "timeout-minutes" => step.timeout_minutes = r.number_or_expr(value, &ctx.number),
            "env" => step.env = r.env_map(value, &ctx.env),
            "background" => step.background = r.literal_bool(value).unwrap_or(false),
            "run" => {
                if has("uses") {
                    r.error_with_hint(
                        key_node.pos,
                        "Unexpected value 'run'",
                        "a step has either `run` or `uses`, not both",
                    );
                }
                run = r.template(value, &ctx.string);
            }
            "shell" => {
                shell = r
                    .non_empty_literal(value)
                    .map(|s| crate::model::Template::literal(s.value, s.pos))
            }
            "working-directory" => working_directory = r.non_empty_template(value, &ctx.string),
            "uses" => uses = r.non_empty_literal(value),
            "with" => with = r.with_map(value, &ctx.with),
            "wait" => {
                let targets = r.literal_list(value);
                for target in &targets {
                    check_step_reference(r, scope, target, step.id.as_ref());
                }
                control = Some(StepAction::Wait(targets));
            }
            "wait-all" => {
                if !value.is_null() && r.literal_bool(value) == Some(false) {
                    r.error(value.pos, "The value of 'wait-all' must be true or omitted");
                }
                control = Some(StepAction::WaitAll);
            }
            "cancel" => {
                if let Some(target) = r.non_empty_literal(value) {
                    check_step_reference(r, scope, &target, step.id.as_ref());
                    control = Some(StepAction::Cancel(target));
                }
            }
            _ => {
                let mut inner = IdScope::default();
                let items = r.sequence(value).unwrap_or_default();
                let steps = items
                    .iter()
                    .filter_map(|item| read_step(r, item, ctx, &mut inner))
                    .collect();
                control = Some(StepAction::Parallel(assign_generated_ids(
                    steps, &mut inner,
                )));
            }
        }
    }
    step.action = if has("run") {
        StepAction::Run {
            run: run?,
            shell,
            working_directory,
        }
    } else if has("uses") {
        let uses = uses?;
        check_uses(r, &uses);
        StepAction::Uses { uses, with }
    } else if let Some(control) = control {
        control
    } else {
        if has("shell") || has("working-directory") {
            r.error(node.pos, "Required property is missing: run");
        } else if has("with") {
            r.error(node.pos, "Required property is missing: uses");
        } else {
            r.error(
                node.pos,
                format!("There's not enough info to determine what you meant. Add one of these properties: {DISTINGUISHING}"),
            );
        }
        return None;
    };
    Some(step)
}

/// `wait` and `cancel` name an earlier step of this job by its id.
fn check_step_reference(
    r: &mut Reader,
    scope: &IdScope,
    target: &Spanned<String>,
    own: Option<&Spanned<String>>,
) {
    let value = target.value.as_str();
    if value.starts_with("__") {
        r.error(
            target.pos,
            format!("The identifier '{value}' is invalid. IDs starting with '__' are reserved."),
        );
    } else if let Some(own) = own.filter(|own| own.value.eq_ignore_ascii_case(value)) {
        r.error(
            target.pos,
            format!("Step '{}' cannot reference itself", own.value),
        );
    } else if !scope.contains(value) {
        r.error(
            target.pos,
            format!("Step references unknown step ID '{value}'"),
        );
    }
}

/// `uses:` must name `{owner}/{repo}[/path]@ref`, a `./local` path, a `$/path` in the
/// same repository or a `docker://` image.
fn check_uses(r: &mut Reader, uses: &Spanned<String>) {
    let value = uses.value.as_str();
    if value.starts_with("./") || value.starts_with(".\\") || value.starts_with("docker://") {
        return;
    }
    match self_repository_path(value) {
        Ok(Some(_)) => return,
        Ok(None) => {}
        Err(message) => {
            r.error(uses.pos, message);
            return;
        }
    }
    let valid = match value.split_once('@') {
        Some((path, git_ref)) => {
            let mut parts = path.split('/');
            let owner = parts.next().unwrap_or_default();
            let repo = parts.next().unwrap_or_default();
            !owner.is_empty()
                && !repo.is_empty()
                && !git_ref.is_empty()
                && parts.all(|p| !p.is_empty())
        }
        None => false,
    };
    if !valid {
        r.error(
            uses.pos,
            format!("Expected format {{org}}/{{repo}}[/path]@ref. Actual '{value}'"),
        );
    }
}

/// Steps without an `id` get one derived from what they run, unique within the job:
/// `__run`, `__actions_checkout`, then `_2`, `_3` on collisions.
fn assign_generated_ids(mut steps: Vec<Step>, scope: &mut IdScope) -> Vec<Step> {
    for step in &mut steps {
        if let Some(id) = &step.id {
            step.effective_id = id.value.clone();
            continue;
        }
        let base = match &step.action {
            StepAction::Run { .. } => "__run".to_string(),
            StepAction::Uses { uses, .. } => generated_uses_id(&uses.value),
            StepAction::Wait(_) => "__wait".to_string(),
            StepAction::WaitAll => "__wait-all".to_string(),
            StepAction::Cancel(_) => "__cancel".to_string(),
            StepAction::Parallel(_) => "__parallel".to_string(),
        };
        step.effective_id = scope.unique(&base);
    }
    steps
}

/// What a `uses:` step's generated id is made of: the image for `docker://`, `self` for a
/// local action, `owner/repo` for a repository action, or nothing when the reference is
/// malformed (the step then counts as a `run`).
fn generated_uses_id(uses: &str) -> String {
    let name = if let Some(image) = uses.strip_prefix("docker://") {
        image.to_string()
    } else if uses.starts_with("./") || uses.starts_with(".\\") {
        "self".to_string()
    } else if is_self_repository(uses) {
        // GitHub's repository type for `$/`.
        "selfRepository".to_string()
    } else {
        match uses.split('@').collect::<Vec<_>>().as_slice() {
            [path, git_ref] if !git_ref.is_empty() => {
                let segments: Vec<&str> =
                    path.split(['/', '\\']).filter(|s| !s.is_empty()).collect();
                match segments.as_slice() {
                    [owner, repo, ..] => format!("{owner}/{repo}"),
                    _ => String::new(),
                }
            }
            _ => String::new(),
        }
    };
    if name.is_empty() {
        return "__run".to_string();
    }
    let sanitized: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("__{sanitized}")
}
