//! Jobs: the keys of a job that runs steps and of one that calls a reusable workflow.

use super::contexts::{self, KeyContext};
use super::reader::Reader;
use super::steps::read_steps;
use super::workflow::{read_concurrency, read_defaults, read_permissions};
use crate::model::{
    CallSecrets, Container, Credentials, DynamicKeys, Environment, Job, JobKind, MapEntry, Matrix,
    ReusableCall, RunsOn, Spanned, Strategy, Template, TemplateMap, Tree, TreeKey,
};
use crate::yaml::{Node, NodeKind};

const STEP_JOB_KEYS: &[&str] = &[
    "needs",
    "if",
    "strategy",
    "name",
    "runs-on",
    "timeout-minutes",
    "cancel-timeout-minutes",
    "continue-on-error",
    "container",
    "services",
    "env",
    "environment",
    "permissions",
    "concurrency",
    "outputs",
    "defaults",
    "steps",
    "snapshot",
];
const CALL_JOB_KEYS: &[&str] = &[
    "name",
    "uses",
    "with",
    "secrets",
    "needs",
    "if",
    "permissions",
    "concurrency",
    "strategy",
];

pub fn read_job(r: &mut Reader, id: Spanned<String>, node: &Node) -> Option<Job> {
    let pairs = r.mapping(node)?;
    let has = |key: &str| pairs.iter().any(|(k, _)| k.as_str() == Some(key));
    let only_step_keys = pairs.iter().any(|(k, _)| {
        k.as_str()
            .is_some_and(|k| STEP_JOB_KEYS.contains(&k) && !CALL_JOB_KEYS.contains(&k))
    });
    let is_call = has("uses") && !only_step_keys;
    let allowed = if is_call {
        CALL_JOB_KEYS
    } else {
        STEP_JOB_KEYS
    };
    let mut job = Job {
        id: id.clone(),
        name: None,
        needs: Vec::new(),
        condition: r.condition(None, &contexts::JOB_IF, node.pos),
        runs_on: None,
        strategy: None,
        env: Default::default(),
        defaults: None,
        outputs: Vec::new(),
        timeout_minutes: None,
        cancel_timeout_minutes: None,
        continue_on_error: None,
        container: None,
        services: Default::default(),
        environment: None,
        concurrency: None,
        permissions: None,
        kind: JobKind::Steps(Vec::new()),
        pos: node.pos,
    };
    let mut call = ReusableCall {
        uses: Spanned::new(String::new(), node.pos),
        with: Vec::new(),
        secrets: CallSecrets::None,
        callee: None,
    };
    for (key, _, value) in r.known_keys(pairs, allowed) {
        match key {
            "needs" => {
                job.needs = r
                    .literal_list(value)
                    .into_iter()
                    .filter(|n| check_non_empty(r, n))
                    .collect()
            }
            "if" => job.condition = r.condition(Some(value), &contexts::JOB_IF, value.pos),
            "strategy" => job.strategy = read_strategy(r, value),
            "name" => job.name = r.template(value, &contexts::STRING_STRATEGY),
            "runs-on" => job.runs_on = read_runs_on(r, value),
            "timeout-minutes" => {
                job.timeout_minutes = r.number_or_expr(value, &contexts::NUMBER_STRATEGY)
            }
            "cancel-timeout-minutes" => {
                job.cancel_timeout_minutes = r.number_or_expr(value, &contexts::NUMBER_STRATEGY);
            }
            "continue-on-error" => {
                job.continue_on_error = r.bool_or_expr(value, &contexts::BOOLEAN_STRATEGY)
            }
            "container" => job.container = read_container(r, value, &contexts::CONTAINER),
            "services" => job.services = read_services(r, value),
            "env" => job.env = r.env_map(value, &contexts::JOB_ENV),
            "environment" => job.environment = read_environment(r, value),
            "permissions" => job.permissions = read_permissions(r, value),
            "concurrency" => {
                job.concurrency = read_concurrency(r, value, &contexts::JOB_CONCURRENCY)
            }
            "outputs" => job.outputs = r.string_pairs(value, &contexts::STRING_RUNNER),
            "defaults" => job.defaults = read_defaults(r, value, &contexts::JOB_DEFAULTS_RUN),
            "steps" => job.kind = JobKind::Steps(read_steps(r, value)),
            "snapshot" => read_snapshot(r, value),
            "uses" => {
                if let Some(uses) = r.non_empty_literal(value) {
                    call.uses = uses;
                }
            }
            "with" => call.with = r.params(value, &contexts::SCALAR_NEEDS),
            "secrets" => call.secrets = read_call_secrets(r, value),
            _ => {}
        }
    }
    if is_call {
        job.kind = JobKind::Call(call);
    } else if !has("runs-on") {
        r.error(node.pos, "Required property is missing: runs-on");
    }
    Some(job)
}

fn check_non_empty(r: &mut Reader, value: &Spanned<String>) -> bool {
    if value.value.is_empty() {
        r.error(value.pos, "Unexpected value ''");
        return false;
    }
    true
}

fn read_call_secrets(r: &mut Reader, node: &Node) -> CallSecrets {
    if let NodeKind::Scalar { .. } = node.kind {
        if node.as_str() == Some("inherit") {
            return CallSecrets::Inherit(node.pos);
        }
        r.unexpected(node);
        return CallSecrets::None;
    }
    CallSecrets::Map(r.string_pairs(node, &contexts::SCALAR_NEEDS_SECRETS))
}

fn read_snapshot(r: &mut Reader, node: &Node) {
    if let NodeKind::Scalar { .. } = node.kind {
        let _ = r.non_empty_literal(node);
        return;
    }
    let Some(pairs) = r.mapping(node) else { return };
    let known = r.known_keys(pairs, &["image-name", "if", "version"]);
    if !known.iter().any(|(k, _, _)| *k == "image-name") {
        r.error(node.pos, "Required property is missing: image-name");
    }
    for (key, _, value) in known {
        match key {
            "if" => {
                let _ = r.condition(Some(value), &contexts::SNAPSHOT_IF, value.pos);
            }
            _ => {
                let _ = r.non_empty_literal(value);
            }
        }
    }
}

fn read_strategy(r: &mut Reader, node: &Node) -> Option<Strategy> {
    let context = &contexts::STRATEGY;
    let mut strategy = Strategy {
        matrix: None,
        fail_fast: None,
        max_parallel: None,
        pos: node.pos,
        dynamic: Vec::new(),
    };
    if let Some(whole) = r.whole_expression(node, context) {
        strategy.dynamic = whole_as_insert(node, whole);
        return Some(strategy);
    }
    let pairs = r.mapping(node)?;
    let (known, dynamic) = r.keys_under(pairs, &["fail-fast", "max-parallel", "matrix"], context);
    strategy.dynamic = dynamic;
    for (key, _, value) in known {
        match key {
            "fail-fast" => strategy.fail_fast = r.bool_or_expr(value, context),
            "max-parallel" => strategy.max_parallel = r.number_or_expr(value, context),
            _ => strategy.matrix = read_matrix(r, value),
        }
    }
    Some(strategy)
}

/// A mapping written as one expression: an insert of what it evaluates to.
pub fn whole_as_insert(node: &Node, whole: Option<Template>) -> DynamicKeys {
    whole
        .map(|template| (TreeKey::Insert(node.pos), Tree::Expr(template)))
        .into_iter()
        .collect()
}

fn read_matrix(r: &mut Reader, node: &Node) -> Option<Matrix> {
    let context = &contexts::STRATEGY;
    if let Some(template) = r.whole_expression(node, context) {
        return template.map(Matrix::Expr);
    }
    let pairs = r.mapping(node)?;
    let mut ok = true;
    for (key, value) in pairs {
        // A key written as an expression (a vector named at run time, `${{ insert }}`) and a
        // value written as one are only known once evaluated.
        let Some(name) = key.as_str().filter(|k| !k.contains("${{")) else {
            continue;
        };
        if r.whole_expression(value, context).is_some() {
            continue;
        }
        ok &= match name {
            "include" | "exclude" => match r.sequence(value) {
                Some(items) => items.iter().all(|item| {
                    r.whole_expression(item, context).is_some() || r.mapping(item).is_some()
                }),
                None => false,
            },
            _ => match r.sequence(value) {
                Some([]) => {
                    r.error(
                        value.pos,
                        format!("Matrix vector '{name}' does not contain any values"),
                    );
                    false
                }
                Some(_) => true,
                None => false,
            },
        };
    }
    // Expressions anywhere inside (keys included) are checked with the strategy contexts.
    let tree = r.tree(node, context)?;
    ok.then_some(Matrix::Mapping(tree))
}

fn read_runs_on(r: &mut Reader, node: &Node) -> Option<RunsOn> {
    let context = &contexts::RUNS_ON;
    match &node.kind {
        NodeKind::Mapping(pairs) => {
            let mut group = None;
            let mut labels = Vec::new();
            let (known, dynamic) = r.keys_under(pairs, &["group", "labels"], context);
            for (key, _, value) in known {
                match key {
                    "group" => {
                        group = r.template(value, context);
                        if let Some(g) = &group {
                            check_runner_group(r, g);
                        }
                    }
                    _ => labels = r.templates(value, context),
                }
            }
            Some(RunsOn::Group {
                group,
                labels,
                dynamic,
            })
        }
        _ => {
            if let Some(template) = r.whole_expression(node, context) {
                return template.map(RunsOn::Expr);
            }
            Some(RunsOn::Labels(r.templates(node, context)))
        }
    }
}

fn check_runner_group(r: &mut Reader, group: &Template) {
    if group.has_expressions() {
        return;
    }
    let Some((prefix, name)) = group.raw.split_once('/') else {
        return;
    };
    if name.is_empty() {
        r.error(
            group.pos,
            format!("Invalid runs-on group name '{}'.", group.raw),
        );
        return;
    }
    let known_prefix = ["org", "organization", "ent", "enterprise"]
        .iter()
        .any(|p| prefix.eq_ignore_ascii_case(p));
    if !known_prefix || name.contains('/') {
        r.error(
            group.pos,
            format!(
                "Invalid runs-on group name '{}'. Please use 'organization/' or 'enterprise/' prefix to target a single runner group.",
                group.raw
            ),
        );
    }
}

pub fn read_container(r: &mut Reader, node: &Node, context: &KeyContext) -> Option<Container> {
    let empty = |image: Template| Container {
        image,
        credentials: None,
        env: Default::default(),
        ports: Vec::new(),
        volumes: Vec::new(),
        options: None,
        pos: node.pos,
        dynamic: Vec::new(),
    };
    if let NodeKind::Scalar { .. } = node.kind {
        let image = r.template(node, context)?;
        if image.raw.is_empty() {
            r.error(node.pos, "Container image cannot be empty");
            return None;
        }
        return Some(empty(image));
    }
    let pairs = r.mapping(node)?;
    let mut container = empty(Template::literal("", node.pos));
    let mut has_image = false;
    let (known, dynamic) = r.keys_under(
        pairs,
        &["image", "options", "env", "ports", "volumes", "credentials"],
        context,
    );
    container.dynamic = dynamic;
    for (key, _, value) in known {
        match key {
            "image" => {
                has_image = true;
                if let Some(image) = r.non_empty_template(value, context) {
                    container.image = image;
                }
            }
            "options" => container.options = r.template(value, context),
            "env" => container.env = r.env_map_under(value, context, &contexts::STRING_RUNNER),
            "ports" => container.ports = non_empty_templates(r, value, context),
            "volumes" => container.volumes = non_empty_templates(r, value, context),
            _ => container.credentials = read_credentials(r, value),
        }
    }
    // With expressions the image may come from elsewhere at run time, as GitHub allows.
    if !has_image && !contains_expression(node) {
        r.error(node.pos, "Container image cannot be empty");
    }
    // An empty or invalid image has been reported; there is no container to run, unless an
    // evaluated key gives the image.
    (!container.image.raw.is_empty() || !container.dynamic.is_empty()).then_some(container)
}

fn contains_expression(node: &Node) -> bool {
    let mut stack = vec![node];
    while let Some(node) = stack.pop() {
        match &node.kind {
            NodeKind::Scalar { value, .. } => {
                if value.contains("${{") {
                    return true;
                }
            }
            NodeKind::Sequence(items) => stack.extend(items),
            NodeKind::Mapping(pairs) => stack.extend(pairs.iter().flat_map(|(k, v)| [k, v])),
        }
    }
    false
}

fn non_empty_templates(r: &mut Reader, node: &Node, context: &KeyContext) -> Vec<Template> {
    let Some(items) = r.sequence(node) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| r.non_empty_template(item, context))
        .collect()
}

fn read_credentials(r: &mut Reader, node: &Node) -> Option<Credentials> {
    let context = &contexts::CONTAINER_CREDENTIALS;
    let mut credentials = Credentials {
        username: None,
        password: None,
        dynamic: Vec::new(),
    };
    if let Some(whole) = r.whole_expression(node, context) {
        credentials.dynamic = whole_as_insert(node, whole);
        return Some(credentials);
    }
    let pairs = r.mapping(node)?;
    let (known, dynamic) = r.keys_under(pairs, &["username", "password"], context);
    credentials.dynamic = dynamic;
    for (key, _, value) in known {
        let template = r.non_empty_template(value, context);
        match key {
            "username" => credentials.username = template,
            _ => credentials.password = template,
        }
    }
    Some(credentials)
}

fn read_services(r: &mut Reader, node: &Node) -> TemplateMap<Container> {
    let context = &contexts::SERVICES;
    let mut services = TemplateMap::default();
    if let Some(whole) = r.whole_expression(node, context) {
        services
            .entries
            .extend(whole.map(|template| MapEntry::Insert(Tree::Expr(template))));
        return services;
    }
    let Some(pairs) = r.mapping(node) else {
        return services;
    };
    for (key, value) in pairs {
        let entry = match r.map_key(key, context) {
            None => continue,
            Some(TreeKey::Literal(name)) => {
                if name.value.is_empty() {
                    r.unexpected(key);
                    continue;
                }
                read_container(r, value, &contexts::SERVICES_CONTAINER)
                    .map(|service| MapEntry::Pair(name, service))
            }
            Some(TreeKey::Expr(name)) => read_container(r, value, &contexts::SERVICES_CONTAINER)
                .map(|service| MapEntry::ComputedKey(name, service)),
            Some(TreeKey::Insert(_)) => r.tree(value, context).map(MapEntry::Insert),
        };
        services.entries.extend(entry);
    }
    services
}

fn read_environment(r: &mut Reader, node: &Node) -> Option<Environment> {
    let context = &contexts::JOB_ENVIRONMENT;
    if let NodeKind::Scalar { .. } = node.kind {
        let name = r.template(node, context)?;
        return Some(Environment {
            name,
            url: None,
            deployment: None,
            dynamic: Vec::new(),
        });
    }
    let pairs = r.mapping(node)?;
    let mut name = None;
    let mut url = None;
    let mut deployment = None;
    let mut has_name = false;
    let (known, dynamic) = r.keys_under(pairs, &["name", "url", "deployment"], context);
    for (key, _, value) in known {
        match key {
            "name" => {
                has_name = true;
                name = r.template(value, &contexts::JOB_ENVIRONMENT_NAME);
            }
            "url" => url = r.template(value, &contexts::STRING_RUNNER_NO_SECRETS),
            // A boolean under `job-environment`, whose contexts it inherits.
            _ => deployment = r.bool_or_expr(value, context),
        }
    }
    // A mapping with a key written as an expression skips the required-property check.
    if !has_name && dynamic.is_empty() {
        r.error(node.pos, "Required property is missing: name");
    }
    let name = match name {
        Some(name) => name,
        None if !dynamic.is_empty() => Template::literal("", node.pos),
        None => return None,
    };
    Some(Environment {
        name,
        url,
        deployment,
        dynamic,
    })
}
