//! `action.yml`: metadata, inputs, outputs and the three kinds of `runs`.

use super::contexts::{self, KeyContext};
use super::reader::Reader;
use super::steps::{read_steps_with, StepContexts};
use super::ParseResult;
use crate::diag::Diagnostic;
use crate::model::{
    Action, ActionInput, ActionOutput, Branding, DockerRuns, NodeRuns, Runs, Spanned,
};
use crate::yaml::{self, Limits, Node};

const COMPOSITE_STEPS: StepContexts = StepContexts {
    condition: contexts::ACTION_STEP_IF,
    string: contexts::ACTION_STEP_STRING,
    boolean: contexts::ACTION_STEP_BOOLEAN,
    number: contexts::ACTION_STEP_STRING,
    env: contexts::ACTION_STEP_ENV,
    with: contexts::ACTION_STEP_WITH,
    name: contexts::ACTION_STEP_STRING,
};

const NODE_VERSIONS: &[&str] = &["node12", "node16", "node20", "node24"];

pub fn parse_action(file_name: &str, content: &str) -> ParseResult<Action> {
    let document = yaml::parse(content, Limits::default());
    let mut r = Reader::with_yaml_errors(file_name, &document);
    let value = match (&document.root, document.errors.is_empty()) {
        (Some(root), true) => read_action(&mut r, root),
        (None, true) => {
            r.diags.push(Diagnostic::error(
                file_name,
                None,
                "The action file is empty",
            ));
            None
        }
        _ => None,
    };
    ParseResult {
        value,
        diagnostics: r.diags,
    }
}

fn read_action(r: &mut Reader, root: &Node) -> Option<Action> {
    let pairs = r.mapping(root)?;
    let mut action = Action {
        name: None,
        description: None,
        author: None,
        inputs: Vec::new(),
        outputs: Vec::new(),
        runs: Runs::Composite { steps: Vec::new() },
        branding: None,
        pos: root.pos,
    };
    let mut has_runs = false;
    let known = r.known_keys(
        pairs,
        &[
            "name",
            "description",
            "author",
            "inputs",
            "outputs",
            "runs",
            "branding",
        ],
    );
    // Outputs map to step outputs only in composite actions, so `runs` is read first.
    let using = known
        .iter()
        .find(|(k, _, _)| *k == "runs")
        .and_then(|(_, _, runs)| runs.get("using")?.as_str());
    let composite = using == Some("composite");
    for (key, _, value) in known {
        match key {
            "name" => action.name = r.literal(value).map(|s| s.value),
            "description" => action.description = r.literal(value).map(|s| s.value),
            "author" => action.author = r.literal(value).map(|s| s.value),
            "inputs" => action.inputs = read_inputs(r, value),
            "outputs" => action.outputs = read_outputs(r, value, composite),
            "runs" => {
                has_runs = true;
                if let Some(runs) = read_runs(r, value) {
                    action.runs = runs;
                }
            }
            _ => action.branding = read_branding(r, value),
        }
    }
    if !has_runs {
        r.error(root.pos, "Required property is missing: runs");
        return None;
    }
    Some(action)
}

fn read_inputs(r: &mut Reader, node: &Node) -> Vec<ActionInput> {
    let Some(pairs) = r.mapping_or_null(node) else {
        return Vec::new();
    };
    let mut inputs = Vec::new();
    for (name, def) in pairs {
        let Some(name) = r.non_empty_literal(name) else {
            continue;
        };
        let mut input = ActionInput {
            name,
            description: None,
            required: false,
            default: None,
            deprecation_message: None,
        };
        let Some(def_pairs) = r.mapping_or_null(def) else {
            continue;
        };
        for (key, _, value) in r.known_keys(
            def_pairs,
            &["description", "required", "default", "deprecationMessage"],
        ) {
            match key {
                "description" => input.description = r.literal(value).map(|s| s.value),
                // Many published actions write `required: 'true'`; the runner reads it as a string.
                "required" => {
                    input.required = value
                        .as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case("true"))
                }
                "default" => input.default = r.template(value, &contexts::ACTION_INPUT_DEFAULT),
                _ => input.deprecation_message = r.literal(value).map(|s| s.value),
            }
        }
        inputs.push(input);
    }
    inputs
}

fn read_outputs(r: &mut Reader, node: &Node, composite: bool) -> Vec<ActionOutput> {
    let Some(pairs) = r.mapping_or_null(node) else {
        return Vec::new();
    };
    let mut outputs = Vec::new();
    for (name, def) in pairs {
        let Some(name) = r.non_empty_literal(name) else {
            continue;
        };
        let mut output = ActionOutput {
            name,
            description: None,
            value: None,
        };
        let Some(def_pairs) = r.mapping_or_null(def) else {
            continue;
        };
        let allowed: &[&str] = if composite {
            &["description", "value"]
        } else {
            &["description"]
        };
        for (key, _, value) in r.known_keys(def_pairs, allowed) {
            match key {
                "description" => output.description = r.literal(value).map(|s| s.value),
                _ => output.value = r.template(value, &contexts::ACTION_OUTPUT_VALUE),
            }
        }
        if composite && output.value.is_none() {
            r.error(def.pos, "Required property is missing: value");
        }
        outputs.push(output);
    }
    outputs
}

fn read_runs(r: &mut Reader, node: &Node) -> Option<Runs> {
    let pairs = r.mapping(node)?;
    let Some(using_node) = node.get("using") else {
        r.error(node.pos, "Required property is missing: using");
        return None;
    };
    let using = r.literal(using_node)?;
    match using.value.as_str() {
        "composite" => {
            let known = r.known_keys(pairs, &["using", "steps"]);
            let steps = known
                .iter()
                .find(|(k, _, _)| *k == "steps")
                .map(|(_, _, v)| *v);
            let Some(steps) = steps else {
                r.error(node.pos, "Required property is missing: steps");
                return None;
            };
            Some(Runs::Composite {
                steps: read_steps_with(r, steps, &COMPOSITE_STEPS),
            })
        }
        "docker" => read_docker(r, node, pairs),
        version if NODE_VERSIONS.contains(&version) => read_node(r, node, pairs, using.clone()),
        _ => {
            r.error_with_hint(
                using.pos,
                format!("Unexpected value '{}'", using.value),
                "`using` must be `composite`, `docker` or one of node12, node16, node20, node24",
            );
            None
        }
    }
}

fn template_key(
    r: &mut Reader,
    value: &Node,
    context: &KeyContext,
) -> Option<crate::model::Template> {
    r.template(value, context)
}

fn read_docker(r: &mut Reader, node: &Node, pairs: &[(Node, Node)]) -> Option<Runs> {
    let allowed = &[
        "using",
        "image",
        "entrypoint",
        "args",
        "env",
        "pre-entrypoint",
        "post-entrypoint",
        "pre-if",
        "post-if",
    ];
    let mut image = None;
    let mut docker = DockerRuns {
        image: Spanned::new(String::new(), node.pos),
        entrypoint: None,
        args: Vec::new(),
        env: Default::default(),
        pre_entrypoint: None,
        post_entrypoint: None,
        pre_if: None,
        post_if: None,
    };
    let context = &contexts::ACTION_CONTAINER;
    for (key, _, value) in r.known_keys(pairs, allowed) {
        match key {
            "image" => image = r.non_empty_literal(value),
            "entrypoint" => docker.entrypoint = template_key(r, value, context),
            "args" => {
                if let Some(items) = r.sequence(value) {
                    docker.args = items
                        .iter()
                        .filter_map(|item| r.template(item, context))
                        .collect();
                }
            }
            "env" => docker.env = r.env_map(value, &contexts::ACTION_CONTAINER_ENV),
            "pre-entrypoint" => docker.pre_entrypoint = template_key(r, value, context),
            "post-entrypoint" => docker.post_entrypoint = template_key(r, value, context),
            "pre-if" => docker.pre_if = run_condition(r, value),
            "post-if" => docker.post_if = run_condition(r, value),
            _ => {}
        }
    }
    match image {
        Some(image) => {
            docker.image = image;
            Some(Runs::Docker(docker))
        }
        None => {
            r.error(node.pos, "Required property is missing: image");
            None
        }
    }
}

fn run_condition(r: &mut Reader, value: &Node) -> Option<String> {
    let condition = r.condition(Some(value), &contexts::ACTION_RUNS_IF, value.pos);
    Some(condition.expression)
}

fn read_node(
    r: &mut Reader,
    node: &Node,
    pairs: &[(Node, Node)],
    using: Spanned<String>,
) -> Option<Runs> {
    let mut runs = NodeRuns {
        using,
        main: Spanned::new(String::new(), node.pos),
        pre: None,
        post: None,
        pre_if: None,
        post_if: None,
    };
    let mut has_main = false;
    for (key, _, value) in r.known_keys(
        pairs,
        &["using", "main", "pre", "post", "pre-if", "post-if"],
    ) {
        match key {
            "main" => {
                if let Some(main) = r.non_empty_literal(value) {
                    runs.main = main;
                    has_main = true;
                }
            }
            "pre" => runs.pre = r.non_empty_literal(value),
            "post" => runs.post = r.non_empty_literal(value),
            "pre-if" => runs.pre_if = run_condition(r, value),
            "post-if" => runs.post_if = run_condition(r, value),
            _ => {}
        }
    }
    if !has_main {
        r.error(node.pos, "Required property is missing: main");
        return None;
    }
    Some(Runs::Node(runs))
}

fn read_branding(r: &mut Reader, node: &Node) -> Option<Branding> {
    let pairs = r.mapping(node)?;
    let mut branding = Branding {
        icon: None,
        color: None,
    };
    for (key, _, value) in r.known_keys(pairs, &["icon", "color"]) {
        let text = r.literal(value).map(|s| s.value);
        match key {
            "icon" => branding.icon = text,
            _ => branding.color = text,
        }
    }
    Some(branding)
}
