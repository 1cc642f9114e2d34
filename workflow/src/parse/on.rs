//! `on:`: the events that trigger a workflow, in string, sequence and mapping forms.

use super::contexts;
use super::cron::{is_valid_cron, INVALID_CRON};
use super::reader::Reader;
use crate::model::{CallOutput, CallSecret, InputDef, InputType, Spanned, Trigger};
use crate::yaml::{Node, NodeKind};

const PULL_REQUEST_FILTERS: &[&str] = &[
    "types",
    "branches",
    "branches-ignore",
    "paths",
    "paths-ignore",
];

/// The configuration keys each known event accepts (events not listed take none).
const EVENTS: &[(&str, &[&str])] = &[
    ("branch_protection_rule", &["types"]),
    ("check_run", &["types"]),
    ("check_suite", &["types"]),
    ("create", &[]),
    ("delete", &[]),
    ("deployment", &[]),
    ("deployment_status", &[]),
    ("discussion", &["types"]),
    ("discussion_comment", &["types"]),
    ("fork", &[]),
    ("gollum", &[]),
    ("image_version", &["types", "names", "versions"]),
    ("issue_comment", &["types"]),
    ("issues", &["types"]),
    ("label", &["types"]),
    ("merge_group", &["types", "branches", "branches-ignore"]),
    ("milestone", &["types"]),
    ("page_build", &[]),
    ("project", &["types"]),
    ("project_card", &["types"]),
    ("project_column", &["types"]),
    ("public", &[]),
    ("pull_request", PULL_REQUEST_FILTERS),
    ("pull_request_comment", &["types"]),
    ("pull_request_review", &["types"]),
    ("pull_request_review_comment", &["types"]),
    ("pull_request_target", PULL_REQUEST_FILTERS),
    (
        "push",
        &[
            "branches",
            "branches-ignore",
            "tags",
            "tags-ignore",
            "paths",
            "paths-ignore",
        ],
    ),
    ("registry_package", &["types"]),
    ("release", &["types"]),
    ("repository_dispatch", &["types"]),
    ("status", &[]),
    ("watch", &["types"]),
    (
        "workflow_run",
        &["types", "workflows", "branches", "branches-ignore"],
    ),
];

pub fn read_on(r: &mut Reader, node: &Node) -> Vec<Trigger> {
    match &node.kind {
        NodeKind::Scalar { .. } => r
            .literal(node)
            .map(|event| vec![plain_trigger(event)])
            .unwrap_or_default(),
        NodeKind::Sequence(items) => items
            .iter()
            .filter_map(|item| r.literal(item))
            .map(plain_trigger)
            .collect(),
        NodeKind::Mapping(pairs) => {
            let mut triggers = Vec::new();
            for (key, value) in pairs {
                let Some(event) = r.key(key) else { continue };
                let event = Spanned::new(event.to_string(), key.pos);
                if let Some(trigger) = read_event(r, event, value) {
                    triggers.push(trigger);
                }
            }
            triggers
        }
    }
}

fn plain_trigger(event: Spanned<String>) -> Trigger {
    Trigger {
        event,
        ..Trigger::default()
    }
}

fn read_event(r: &mut Reader, event: Spanned<String>, value: &Node) -> Option<Trigger> {
    let mut trigger = plain_trigger(event);
    match trigger.event.value.as_str() {
        "schedule" => {
            trigger.crons = read_schedule(r, value);
            return Some(trigger);
        }
        "workflow_dispatch" => {
            read_dispatch(r, value, &mut trigger);
            return Some(trigger);
        }
        "workflow_call" => {
            read_call(r, value, &mut trigger);
            return Some(trigger);
        }
        _ => {}
    }
    let Some((_, allowed)) = EVENTS.iter().find(|(name, _)| *name == trigger.event.value) else {
        // GitHub accepts events it does not know yet with any configuration.
        return Some(trigger);
    };
    if allowed.is_empty() {
        if let Some(pairs) = value.as_mapping() {
            // GitHub runs the workflow for every such event, whatever filters are given.
            for (key, _) in pairs {
                r.warning(
                    key.pos,
                    format!(
                        "The event '{event}' takes no filters: '{filter}' is ignored and the workflow runs for every {event} event",
                        event = trigger.event.value,
                        filter = key.as_str().unwrap_or_default(),
                    ),
                );
            }
            return Some(trigger);
        }
    }
    let pairs = r.mapping_or_null(value)?;
    for (key, _, node) in r.known_keys(pairs, allowed) {
        let values = non_empty_list(r, node);
        match key {
            "types" => trigger.types = values,
            "branches" => trigger.branches = Some(values),
            "branches-ignore" => trigger.branches_ignore = Some(values),
            "tags" => trigger.tags = Some(values),
            "tags-ignore" => trigger.tags_ignore = Some(values),
            "paths" => trigger.paths = Some(values),
            "paths-ignore" => trigger.paths_ignore = Some(values),
            "workflows" => trigger.workflows = values,
            "names" => trigger.names = values,
            _ => trigger.versions = values,
        }
    }
    Some(trigger)
}

/// A string or sequence of non-empty strings.
fn non_empty_list(r: &mut Reader, node: &Node) -> Vec<Spanned<String>> {
    match &node.kind {
        NodeKind::Sequence(items) => items
            .iter()
            .filter_map(|item| r.non_empty_literal(item))
            .collect(),
        _ => r.non_empty_literal(node).into_iter().collect(),
    }
}

fn read_schedule(r: &mut Reader, node: &Node) -> Vec<Spanned<String>> {
    let Some(items) = r.sequence(node) else {
        return Vec::new();
    };
    let mut crons = Vec::new();
    for item in items {
        let Some(pairs) = r.mapping(item) else {
            continue;
        };
        let known = r.known_keys(pairs, &["cron", "timezone"]);
        match known.iter().find(|(k, _, _)| *k == "cron") {
            Some((_, _, value)) => {
                if let Some(cron) = r.non_empty_literal(value) {
                    if !is_valid_cron(&cron.value) {
                        r.error(cron.pos, INVALID_CRON);
                    }
                    crons.push(cron);
                }
            }
            None => r.error(item.pos, "Required property is missing: cron"),
        }
        if let Some((_, _, tz)) = known.iter().find(|(k, _, _)| *k == "timezone") {
            let _ = r.non_empty_literal(tz);
        }
    }
    crons
}

fn read_dispatch(r: &mut Reader, node: &Node, trigger: &mut Trigger) {
    let Some(pairs) = r.mapping_or_null(node) else {
        return;
    };
    // GitHub ignores unknown keys here unless the inputs are declared, when the whole
    // mapping is validated strictly.
    let inputs = pairs
        .iter()
        .find(|(k, _)| k.as_str() == Some("inputs"))
        .map(|(_, v)| v);
    let Some(inputs) = inputs else { return };
    let _ = r.known_keys(pairs, &["inputs"]);
    let Some(inputs) = r.mapping_or_null(inputs) else {
        return;
    };
    for (name, def) in inputs {
        let Some(name) = r.non_empty_literal(name) else {
            continue;
        };
        let mut input = InputDef::new(name);
        let Some(def_pairs) = r.mapping_or_null(def) else {
            continue;
        };
        for (key, _, value) in r.known_keys(
            def_pairs,
            &["description", "type", "required", "default", "options"],
        ) {
            match key {
                "description" => input.description = r.literal(value).map(|s| s.value),
                "type" => {
                    let allowed = &["string", "boolean", "number", "choice", "environment"];
                    if let Some(t) = input_type(r, value, allowed) {
                        input.input_type = t;
                    }
                }
                "required" => input.required = r.literal_bool(value).unwrap_or(false),
                "default" => input.default = r.param(value, &contexts::NONE),
                _ => {
                    if let Some(items) = r.sequence(value) {
                        input.options = items
                            .iter()
                            .filter_map(|i| r.literal(i))
                            .map(|s| s.value)
                            .collect();
                    }
                }
            }
        }
        check_dispatch_input(r, &input, def, def_pairs);
        trigger.inputs.push(input);
    }
}

/// `choice` inputs need options and only they may have them; a boolean's default is a boolean.
fn check_dispatch_input(r: &mut Reader, input: &InputDef, def: &Node, pairs: &[(Node, Node)]) {
    let has_options = pairs.iter().any(|(k, _)| k.as_str() == Some("options"));
    if input.input_type == InputType::Choice && input.options.is_empty() {
        r.error(def.pos, "Missing 'options' for choice input");
    } else if input.input_type != InputType::Choice && has_options {
        r.error(
            def.pos,
            "Input type is not 'choice', but 'options' is defined",
        );
    }
    if let Some(default) = &input.default {
        if input.input_type == InputType::Boolean
            && !matches!(default.value, crate::value::Value::Bool(_))
        {
            r.error(
                default.pos,
                format!("Unexpected value '{}'", default.value.to_display_string()),
            );
        }
    }
}

fn input_type(r: &mut Reader, node: &Node, allowed: &[&str]) -> Option<InputType> {
    let text = r.literal(node)?;
    let found = match text.value.as_str() {
        t if !allowed.contains(&t) => None,
        "string" => Some(InputType::String),
        "boolean" => Some(InputType::Boolean),
        "number" => Some(InputType::Number),
        "choice" => Some(InputType::Choice),
        "environment" => Some(InputType::Environment),
        _ => None,
    };
    if found.is_none() {
        r.unexpected(node);
    }
    found
}

fn read_call(r: &mut Reader, node: &Node, trigger: &mut Trigger) {
    let Some(pairs) = r.mapping_or_null(node) else {
        return;
    };
    for (key, _, value) in r.known_keys(pairs, &["inputs", "secrets", "outputs"]) {
        let Some(entries) = r.mapping_or_null(value) else {
            continue;
        };
        for (name, def) in entries {
            let Some(name) = r.non_empty_literal(name) else {
                continue;
            };
            match key {
                "inputs" => trigger.inputs.extend(read_call_input(r, name, def)),
                "secrets" => trigger.secrets.extend(read_call_secret(r, name, def)),
                _ => trigger.outputs.extend(read_call_output(r, name, def)),
            }
        }
    }
}

fn read_call_input(r: &mut Reader, name: Spanned<String>, def: &Node) -> Option<InputDef> {
    let pairs = r.mapping(def)?;
    let mut input = InputDef::new(name);
    let mut has_type = false;
    for (key, _, value) in r.known_keys(pairs, &["description", "type", "required", "default"]) {
        match key {
            "description" => input.description = r.literal(value).map(|s| s.value),
            "type" => {
                has_type = true;
                if let Some(t) = input_type(r, value, &["string", "boolean", "number"]) {
                    input.input_type = t;
                }
            }
            "required" => input.required = r.literal_bool(value).unwrap_or(false),
            _ => input.default = r.param(value, &contexts::CALL_INPUT_DEFAULT),
        }
    }
    if !has_type {
        r.error(def.pos, "Required property is missing: type");
    }
    Some(input)
}

fn read_call_secret(r: &mut Reader, name: Spanned<String>, def: &Node) -> Option<CallSecret> {
    let pairs = r.mapping_or_null(def)?;
    let mut secret = CallSecret {
        name,
        description: None,
        required: false,
    };
    for (key, _, value) in r.known_keys(pairs, &["description", "required"]) {
        match key {
            "description" => secret.description = r.literal(value).map(|s| s.value),
            _ => secret.required = r.literal_bool(value).unwrap_or(false),
        }
    }
    Some(secret)
}

fn read_call_output(r: &mut Reader, name: Spanned<String>, def: &Node) -> Option<CallOutput> {
    let pairs = r.mapping(def)?;
    let mut description = None;
    let mut value = None;
    for (key, _, node) in r.known_keys(pairs, &["description", "value"]) {
        match key {
            "description" => description = r.literal(node).map(|s| s.value),
            _ => value = Some(r.template(node, &contexts::CALL_OUTPUT_VALUE)),
        }
    }
    match value {
        Some(value) => value.map(|value| CallOutput {
            name,
            description,
            value,
        }),
        None => {
            r.error(def.pos, "Required property is missing: value");
            None
        }
    }
}
