//! The `env_file`, `output_file` and `workflow_commands` sections of runner-extra.json,
//! transcribed from the runner's own L0 tests. The other sections (status functions, step
//! sequences) belong to the step executor's suite and are ignored here.

#[path = "support/mod.rs"]
mod support;

use kiln_workflow::commands::parse_command_line_with;
use kiln_workflow::envfile::{check_env_name, parse_env_file_with, LineEndings};
use serde_json::Value as Json;

/// Case counts per section; a section with fewer cases means the data was damaged.
const SECTIONS: &[(&str, usize)] = &[
    ("env_file", 14),
    ("output_file", 12),
    ("workflow_commands", 13),
];

fn main() {
    let Some(data) =
        support::conformance_dir("runner_extra (env_file, output_file, workflow_commands)")
    else {
        return;
    };
    let path = data.join("runner-extra.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let data: Json = serde_json::from_str(&text).expect("runner-extra.json is valid JSON");

    let mut all_passed = true;
    for (section, minimum) in SECTIONS {
        let cases = data[section]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut tally = support::Tally::new(section);
        for (index, case) in cases.iter().enumerate() {
            let name = case["name"].as_str().map_or_else(
                || format!("#{index} {}", case["line"].as_str().unwrap_or("")),
                str::to_string,
            );
            let outcome = match *section {
                "workflow_commands" => run_command_case(case),
                "env_file" => run_file_case(case, true),
                _ => run_file_case(case, false),
            };
            tally.record(name, outcome);
        }
        tally.report();
        all_passed &= cases.len() >= *minimum && tally.failed() == 0;
    }
    if !all_passed {
        std::process::exit(1);
    }
}

/// Parses the file as the runner does on Linux and applies the pairs in order (a later pair
/// overwrites an earlier one); `GITHUB_ENV` also refuses blocked names, each refusal being
/// one issue.
fn run_file_case(case: &Json, is_env: bool) -> Result<(), String> {
    let content = case["content"].as_str().ok_or("case has no `content`")?;
    let parsed = parse_env_file_with(content, LineEndings::Lf);
    if let Some(wanted) = case["error_contains"].as_str() {
        return match parsed {
            Err(error) if error.to_string().contains(wanted) => Ok(()),
            Err(error) => Err(format!(
                "expected error containing `{wanted}`, got `{error}`"
            )),
            Ok(pairs) => Err(format!(
                "expected error containing `{wanted}`, got {pairs:?}"
            )),
        };
    }
    let pairs = parsed.map_err(|e| format!("unexpected error `{e}`"))?;
    let mut applied = serde_json::Map::new();
    let mut issues = 0;
    for (name, value) in pairs {
        if is_env && check_env_name(&name).is_err() {
            issues += 1;
            continue;
        }
        applied.insert(name, Json::String(value));
    }
    let expected = case["expected"]
        .as_object()
        .ok_or("case has no `expected` mapping")?;
    if &applied != expected {
        return Err(format!("got {applied:?}, want {expected:?}"));
    }
    let expected_issues = case["issues"].as_u64().unwrap_or(0);
    if issues != expected_issues {
        return Err(format!("got {issues} issues, want {expected_issues}"));
    }
    Ok(())
}

/// The runner's L0 tests register `do-something` as the only command; so does this.
fn run_command_case(case: &Json) -> Result<(), String> {
    let line = case["line"].as_str().ok_or("case has no `line`")?;
    let parsed = parse_command_line_with(line, |name| name.eq_ignore_ascii_case("do-something"));
    let should_parse = case["parsed"].as_bool().ok_or("case has no `parsed`")?;
    let Some(command) = parsed else {
        return if should_parse {
            Err("not parsed".into())
        } else {
            Ok(())
        };
    };
    if !should_parse {
        return Err(format!("parsed as {command:?}, expected no command"));
    }
    let want_properties: Vec<(String, String)> = case["properties"]
        .as_object()
        .map(|props| {
            props
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    let got_properties: Vec<(String, String)> = command
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let want_name = case["command"].as_str().unwrap_or("");
    let want_data = case["data"].as_str().unwrap_or("");
    if command.name != want_name || got_properties != want_properties || command.data != want_data {
        return Err(format!(
            "got {:?} {got_properties:?} {:?}, want {want_name:?} {want_properties:?} {want_data:?}",
            command.name, command.data
        ));
    }
    Ok(())
}
