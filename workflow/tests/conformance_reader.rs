//! GitHub's workflow-parser reader cases: every file whose expected output has errors must
//! yield an error on each expected line (and column), or with the expected text when GitHub
//! gives no position; every other file must parse without errors, with the job ids (and their
//! positions where given), names and conditions, and the step ids, conditions, names, `run`
//! text (or the expression it makes) and `uses` that GitHub's parsed template shows.

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;

use kiln_workflow::expr::template::to_expression_source;
use kiln_workflow::model::{
    EnvMap, JobKind, MapEntry, Segment, StepAction, Template, Tree, Workflow,
};
use kiln_workflow::yaml::{self, Limits, Node};
use kiln_workflow::{parse_workflow_with, Diagnostic, ParseOptions, PermissionsPolicy};

/// The pass count reached; fewer is a regression.
const BAR: usize = 195;

/// Cases whose expected error GitHub no longer gives: the snapshot predates the change. Each
/// must now parse without errors, as GitHub reads it today.
const SUPERSEDED: &[(&str, &str)] = &[(
    "errors-anchor-tag.yml",
    "GitHub reads YAML anchors and aliases since 2025-09-18",
)];

struct Case {
    options: Option<Node>,
    workflow: String,
    callees: HashMap<String, String>,
    expected: serde_json::Value,
}

fn split_case(text: &str) -> Result<Case, String> {
    let docs: Vec<&str> = text.split("\n---\n").collect();
    if docs.len() < 3 {
        return Err(format!(
            "expected at least 3 documents, found {}",
            docs.len()
        ));
    }
    let expected = serde_json::from_str(docs[docs.len() - 1].trim())
        .map_err(|e| format!("expected JSON: {e}"))?;
    let mut callees = HashMap::new();
    for pair in docs[2..docs.len() - 1].chunks(2) {
        if let [reference, content] = pair {
            callees.insert(reference.trim().to_string(), content.to_string());
        }
    }
    Ok(Case {
        options: yaml::parse(docs[0], Limits::default()).root,
        workflow: docs[1].to_string(),
        callees,
        expected,
    })
}

fn option_number(options: &Option<Node>, key: &str) -> Option<usize> {
    options.as_ref()?.get(key)?.as_str()?.parse().ok()
}

/// `(Line: L, Col: C)` in a message, when there is one.
fn position(message: &str) -> Option<(u32, u32)> {
    let start = message.find("(Line: ")? + "(Line: ".len();
    let rest = &message[start..];
    let (line, rest) = rest.split_once(", Col: ")?;
    let (col, _) = rest.split_once(')')?;
    Some((line.trim().parse().ok()?, col.trim().parse().ok()?))
}

fn run_case(name: &str, text: &str) -> Result<(), String> {
    let case = split_case(text)?;
    let file = format!(".github/workflows/{name}");
    if let Some((_, why)) = SUPERSEDED.iter().find(|(case_name, _)| *case_name == name) {
        let result = parse_workflow_with(&file, &case.workflow, &ParseOptions::default());
        let errors: Vec<String> = result.errors().map(ToString::to_string).collect();
        return match (errors.is_empty(), result.value.is_some()) {
            (true, true) => Ok(()),
            _ => Err(format!("{why}, but it was rejected: {errors:?}")),
        };
    }
    let resolver = |reference: &str| {
        case.callees
            .get(reference)
            .map(|content| (reference.to_string(), content.clone()))
    };
    let defaults = ParseOptions::default();
    let options = ParseOptions {
        resolver: Some(&resolver),
        max_jobs: option_number(&case.options, "max-job-limit").unwrap_or(defaults.max_jobs),
        max_depth: option_number(&case.options, "max-depth").unwrap_or(defaults.max_depth),
        max_file_size: option_number(&case.options, "max-file-size")
            .unwrap_or(defaults.max_file_size),
        max_result_size: option_number(&case.options, "max-result-size")
            .unwrap_or(defaults.max_result_size),
        max_nested_reusable_depth: option_number(
            &case.options,
            "max-nested-reusable-workflows-depth",
        )
        .unwrap_or(defaults.max_nested_reusable_depth),
        permissions_policy: match case
            .options
            .as_ref()
            .and_then(|o| o.get("permissions-policy")?.as_str())
        {
            Some("Write") => PermissionsPolicy::Write,
            _ => PermissionsPolicy::LimitedRead,
        },
    };
    let result = parse_workflow_with(&file, &case.workflow, &options);
    let errors: Vec<&Diagnostic> = result.errors().collect();
    let show = |errors: &[&Diagnostic]| {
        errors
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let Some(expected) = case.expected.get("errors").and_then(|e| e.as_array()) else {
        if !errors.is_empty() {
            return Err(format!("unexpected errors: {}", show(&errors)));
        }
        let workflow = result
            .value
            .as_ref()
            .ok_or("no workflow despite no errors")?;
        return compare_jobs(workflow, &case.expected);
    };
    let mut missing = Vec::new();
    for entry in expected {
        let message = entry
            .get("Message")
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        let found = match position(message) {
            Some((line, col)) => errors.iter().any(|d| d.line == line && d.col == col),
            None => {
                let text = message
                    .strip_prefix(&format!("{file}: "))
                    .unwrap_or(message);
                errors
                    .iter()
                    .any(|d| d.message.contains(text) || text.contains(&d.message))
            }
        };
        if !found {
            missing.push(message.to_string());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing {missing:?}; got: {}", show(&errors)))
    }
}

/// For files GitHub parses, the jobs' ids, names and conditions and their steps' ids and
/// conditions must be the ones GitHub's parsed template shows.
fn compare_jobs(workflow: &Workflow, expected: &serde_json::Value) -> Result<(), String> {
    compare_env(&workflow.env, &expected["env"]).map_err(|e| format!("env: {e}"))?;
    let Some(jobs) = expected.get("jobs").and_then(|j| j.as_array()) else {
        return Ok(());
    };
    let ours: Vec<&str> = workflow.jobs.iter().map(|j| j.id.value.as_str()).collect();
    let theirs: Vec<&str> = jobs.iter().filter_map(|j| literal(&j["id"])).collect();
    if ours != theirs {
        return Err(format!("job ids {ours:?}, expected {theirs:?}"));
    }
    for (job, want) in workflow.jobs.iter().zip(jobs) {
        let id = &job.id.value;
        if let Some((line, col)) = source_position(&want["id"]) {
            if (job.id.pos.line, job.id.pos.col) != (line, col) {
                return Err(format!(
                    "job {id}: at {}, expected {line}:{col}",
                    job.id.pos
                ));
            }
        }
        if let Some(name) = literal(&want["name"]) {
            let display = job.display_name();
            if display.raw != name && !display.has_expressions() {
                return Err(format!(
                    "job {id}: name {:?}, expected {name:?}",
                    display.raw
                ));
            }
        }
        if let Some(condition) = want["if"]["expr"].as_str() {
            if job.condition.expression != condition {
                return Err(format!(
                    "job {id}: if {:?}, expected {condition:?}",
                    job.condition.expression
                ));
            }
        }
        compare_env(&job.env, &want["env"]).map_err(|e| format!("job {id}: env {e}"))?;
        let (JobKind::Steps(steps), Some(want_steps)) = (&job.kind, want["steps"].as_array())
        else {
            continue;
        };
        let ours: Vec<&str> = steps.iter().map(|s| s.effective_id.as_str()).collect();
        let theirs: Vec<&str> = want_steps.iter().filter_map(|s| s["id"].as_str()).collect();
        if ours != theirs {
            return Err(format!("job {id}: step ids {ours:?}, expected {theirs:?}"));
        }
        for (step, want_step) in steps.iter().zip(want_steps) {
            match &step.action {
                StepAction::Run { run, .. } => {
                    if let Some(problem) = compare_template(run, &want_step["run"]) {
                        return Err(format!(
                            "job {id} step {}: run {problem}",
                            step.effective_id
                        ));
                    }
                }
                StepAction::Uses { uses, .. }
                    if literal(&want_step["uses"]) != Some(uses.value.as_str()) =>
                {
                    return Err(format!(
                        "job {id} step {}: uses {:?}, expected {}",
                        step.effective_id, uses.value, want_step["uses"]
                    ));
                }
                _ => {}
            }
            compare_env(&step.env, &want_step["env"])
                .map_err(|e| format!("job {id} step {}: env {e}", step.effective_id))?;
            if let Some(name) = &step.name {
                if let Some(problem) = compare_template(name, &want_step["name"]) {
                    return Err(format!(
                        "job {id} step {}: name {problem}",
                        step.effective_id
                    ));
                }
            }
        }
        for (step, want_step) in steps.iter().zip(want_steps) {
            if let Some(condition) = want_step["if"]["expr"].as_str() {
                if step.condition.expression != condition {
                    return Err(format!(
                        "job {id} step {}: if {:?}, expected {condition:?}",
                        step.effective_id, step.condition.expression
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A scalar of GitHub's template JSON against our template: literal text, or the expression
/// the text and `${{ }}` parts make together.
fn compare_template(ours: &Template, theirs: &serde_json::Value) -> Option<String> {
    if let Some(text) = literal(theirs) {
        let value: String = ours
            .segments
            .iter()
            .map(|segment| match segment {
                Segment::Literal(text) => text.as_str(),
                Segment::Expression { .. } => "\u{0}",
            })
            .collect();
        return (value != text).then(|| format!("{value:?}, expected {text:?}"));
    }
    let expected = theirs.get("expr")?.as_str()?;
    let source = to_expression_source(&ours.segments);
    (source.as_deref() != Some(expected)).then(|| format!("{source:?}, expected {expected:?}"))
}

/// An `env:` map against GitHub's `{type: 2, map: [{Key, Value}]}`: the same entries in the
/// same order, an `${{ insert }}` key (`{type: 4, directive: insert}`) kept as an insert of
/// its expression rather than dropped or read as a variable name.
fn compare_env(ours: &EnvMap, theirs: &serde_json::Value) -> Result<(), String> {
    let Some(pairs) = theirs.get("map").and_then(|m| m.as_array()) else {
        return Ok(());
    };
    if ours.entries.len() != pairs.len() {
        return Err(format!(
            "{} entries, expected {}",
            ours.entries.len(),
            pairs.len()
        ));
    }
    for (entry, pair) in ours.entries.iter().zip(pairs) {
        let (key, value) = (&pair["Key"], &pair["Value"]);
        let problem = match entry {
            MapEntry::Pair(name, template) if literal(key) == Some(name.value.as_str()) => {
                compare_template(template, value)
            }
            MapEntry::Insert(Tree::Expr(template)) if key["directive"] == "insert" => {
                compare_template(template, value)
            }
            MapEntry::ComputedKey(name, template) => {
                compare_template(name, key).or_else(|| compare_template(template, value))
            }
            other => Some(format!("{other:?}, expected key {key}")),
        };
        if let Some(problem) = problem {
            return Err(problem);
        }
    }
    Ok(())
}

/// A literal in GitHub's template JSON: a plain string, or `{lit, line, col}` with source info.
fn literal(value: &serde_json::Value) -> Option<&str> {
    value.as_str().or_else(|| value.get("lit")?.as_str())
}

fn source_position(value: &serde_json::Value) -> Option<(u32, u32)> {
    let number = |key: &str| value.get(key)?.as_u64().and_then(|n| u32::try_from(n).ok());
    Some((number("line")?, number("col")?))
}

fn main() {
    let Some(data) = support::conformance_dir("reader") else {
        return;
    };
    let dir = data.join("languageservices/workflow-parser/testdata/reader");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    entries.sort();
    let mut tally = support::Tally::new("reader");
    for path in &entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let outcome = match std::fs::read_to_string(path) {
            Ok(text) => run_case(&name, &text),
            Err(e) => Err(format!("unreadable: {e}")),
        };
        tally.record(name, outcome);
    }
    tally.report();
    if tally.passed < BAR {
        eprintln!("reader: {} passed, below the bar of {BAR}", tally.passed);
        std::process::exit(1);
    }
}
