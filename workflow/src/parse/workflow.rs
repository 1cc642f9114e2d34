//! The workflow root and the keys shared by workflows and jobs (concurrency, defaults,
//! permissions).

use super::contexts::{self, KeyContext};
use super::ids::{check_identifier, check_job_graph};
use super::job::read_job;
use super::on::read_on;
use super::reader::Reader;
use crate::model::{
    Concurrency, PermissionLevel, Permissions, RunDefaults, Spanned, Template, Workflow,
};
use crate::yaml::{Node, NodeKind};

const ROOT_KEYS: &[&str] = &[
    "on",
    "name",
    "description",
    "run-name",
    "defaults",
    "env",
    "permissions",
    "concurrency",
    "jobs",
];

pub fn read_workflow(r: &mut Reader, root: &Node) -> Option<Workflow> {
    let pairs = r.mapping(root)?;
    let mut workflow = Workflow {
        name: None,
        run_name: None,
        on: Vec::new(),
        env: Default::default(),
        defaults: None,
        concurrency: None,
        permissions: None,
        jobs: Vec::new(),
        pos: root.pos,
        origin: None,
    };
    let mut has_jobs = false;
    for (key, _, value) in r.known_keys(pairs, ROOT_KEYS) {
        match key {
            "on" => workflow.on = read_on(r, value),
            "name" => workflow.name = r.literal(value),
            "description" => {
                let _ = r.literal(value);
            }
            "run-name" => workflow.run_name = r.template(value, &contexts::RUN_NAME),
            "defaults" => workflow.defaults = read_defaults(r, value, &contexts::NONE),
            "env" => workflow.env = r.env_map(value, &contexts::WORKFLOW_ENV),
            "permissions" => workflow.permissions = read_permissions(r, value),
            "concurrency" => {
                workflow.concurrency = read_concurrency(r, value, &contexts::WORKFLOW_CONCURRENCY)
            }
            _ => {
                has_jobs = true;
                read_jobs(r, value, &mut workflow);
            }
        }
    }
    if !has_jobs {
        r.error(root.pos, "Required property is missing: jobs");
    }
    Some(workflow)
}

fn read_jobs(r: &mut Reader, node: &Node, workflow: &mut Workflow) {
    let Some(pairs) = r.mapping(node) else { return };
    for (key, value) in pairs {
        let Some(id) = r.key(key) else { continue };
        let id = Spanned::new(id.to_string(), key.pos);
        if id.value.is_empty() {
            r.error(id.pos, "Unexpected value ''");
            continue;
        }
        check_identifier(r, &id);
        if let Some(job) = read_job(r, id, value) {
            workflow.jobs.push(job);
        }
    }
    check_job_graph(r, &workflow.jobs, node.pos);
}

pub fn read_concurrency(r: &mut Reader, node: &Node, context: &KeyContext) -> Option<Concurrency> {
    if let NodeKind::Scalar { .. } = node.kind {
        return r.template(node, context).map(Concurrency::Group);
    }
    let pairs = r.mapping(node)?;
    let mut group = None;
    let mut cancel_in_progress = None;
    let mut has_group = false;
    let (known, dynamic) = r.keys_under(pairs, &["group", "cancel-in-progress", "queue"], context);
    for (key, _, value) in known {
        match key {
            "group" => {
                has_group = true;
                group = r.non_empty_template(value, context);
            }
            "cancel-in-progress" => cancel_in_progress = r.bool_or_expr(value, context),
            _ => {
                if let Some(queue) = r.literal(value) {
                    if !matches!(queue.value.as_str(), "single" | "max") {
                        r.unexpected(value);
                    }
                }
            }
        }
    }
    // A mapping with a key written as an expression skips the required-property check.
    if !has_group && dynamic.is_empty() {
        r.error(node.pos, "Required property is missing: group");
    }
    let group = match group {
        Some(group) => group,
        None if !dynamic.is_empty() => Template::literal("", node.pos),
        None => return None,
    };
    Some(Concurrency::Mapping {
        group,
        cancel_in_progress,
        dynamic,
    })
}

pub fn read_defaults(r: &mut Reader, node: &Node, context: &KeyContext) -> Option<RunDefaults> {
    let pairs = r.mapping(node)?;
    let mut defaults = RunDefaults::default();
    for (_, _, run) in r.known_keys(pairs, &["run"]) {
        if let Some(whole) = r.whole_expression(run, context) {
            defaults.dynamic = super::job::whole_as_insert(run, whole);
            continue;
        }
        let Some(run_pairs) = r.mapping(run) else {
            continue;
        };
        let (known, dynamic) = r.keys_under(run_pairs, &["shell", "working-directory"], context);
        defaults.dynamic = dynamic;
        for (key, _, value) in known {
            let template = r.non_empty_template(value, context);
            match key {
                "shell" => defaults.shell = template,
                _ => defaults.working_directory = template,
            }
        }
    }
    Some(defaults)
}

/// Token scopes and the levels each accepts (most take read, write or none).
const SCOPES: &[(&str, &[&str])] = &[
    ("actions", ANY_LEVEL),
    ("artifact-metadata", ANY_LEVEL),
    ("attestations", ANY_LEVEL),
    ("checks", ANY_LEVEL),
    ("code-quality", ANY_LEVEL),
    ("contents", ANY_LEVEL),
    ("copilot-requests", &["write", "none"]),
    ("deployments", ANY_LEVEL),
    ("discussions", ANY_LEVEL),
    ("drives", ANY_LEVEL),
    ("id-token", &["write", "none"]),
    ("issues", ANY_LEVEL),
    ("models", &["read", "none"]),
    ("packages", ANY_LEVEL),
    ("pages", ANY_LEVEL),
    ("pull-requests", ANY_LEVEL),
    ("repository-projects", ANY_LEVEL),
    ("security-events", ANY_LEVEL),
    ("statuses", ANY_LEVEL),
    ("vulnerability-alerts", &["read", "none"]),
];
const ANY_LEVEL: &[&str] = &["read", "write", "none"];

pub fn scope_names() -> impl Iterator<Item = &'static str> {
    SCOPES.iter().map(|(name, _)| *name)
}

pub fn read_permissions(r: &mut Reader, node: &Node) -> Option<Permissions> {
    if let NodeKind::Scalar { .. } = node.kind {
        return match node.as_str() {
            Some("read-all") => Some(Permissions::ReadAll(node.pos)),
            Some("write-all") => Some(Permissions::WriteAll(node.pos)),
            _ => {
                r.unexpected(node);
                None
            }
        };
    }
    let pairs = r.mapping(node)?;
    let names: Vec<&str> = scope_names().collect();
    let mut scopes = Vec::new();
    for (scope, key, value) in r.known_keys(pairs, &names) {
        let allowed = SCOPES
            .iter()
            .find(|(name, _)| *name == scope)
            .map_or(ANY_LEVEL, |(_, levels)| *levels);
        let level = match value.as_str() {
            Some(level) if allowed.contains(&level) => level,
            _ => {
                r.unexpected(value);
                continue;
            }
        };
        let level = match level {
            "read" => PermissionLevel::Read,
            "write" => PermissionLevel::Write,
            _ => PermissionLevel::None,
        };
        scopes.push((Spanned::new(scope.to_string(), key.pos), level));
    }
    Some(Permissions::Scopes(scopes, node.pos))
}
