//! Our per-key context tables, cross-checked against the `context` arrays of GitHub's schemas
//! (read from the conformance data at test time, never copied into the project).

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;

use kiln_workflow::parse::contexts::{self, KeyContext};

fn schema(data: &Path, name: &str) -> serde_json::Value {
    let path = data.join("languageservices/workflow-parser/src").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn ours(context: &KeyContext) -> BTreeSet<String> {
    let mut entries: BTreeSet<String> =
        context.named_values.iter().map(|n| n.to_string()).collect();
    for f in context.functions {
        let max = if f.max_args == usize::MAX {
            "MAX".to_string()
        } else {
            f.max_args.to_string()
        };
        entries.insert(format!("{}({},{max})", f.name, f.min_args));
    }
    entries
}

fn schema_contexts(schema: &serde_json::Value) -> Vec<(String, BTreeSet<String>)> {
    let definitions = schema["definitions"].as_object().expect("definitions");
    definitions
        .iter()
        .filter_map(|(name, def)| {
            let entries = def.get("context")?.as_array()?;
            Some((
                name.clone(),
                entries
                    .iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect(),
            ))
        })
        .collect()
}

fn cross_check(file: &str, table: &[KeyContext]) {
    let Some(data) = support::conformance_dir("schema contexts") else {
        return;
    };
    let authority = schema_contexts(&schema(&data, file));
    assert!(!authority.is_empty(), "{file} lists no contexts");
    for (definition, expected) in &authority {
        let context = table
            .iter()
            .find(|c| c.definition == definition)
            .unwrap_or_else(|| panic!("{file}: no table for definition '{definition}'"));
        assert_eq!(
            &ours(context),
            expected,
            "{file}: contexts of '{definition}' differ"
        );
    }
    for context in table {
        assert!(
            authority.iter().any(|(name, _)| name == context.definition),
            "{file}: our table '{}' names no schema definition with a context",
            context.definition
        );
    }
}

#[test]
fn workflow_contexts_match_the_schema() {
    cross_check("workflow-v1.0.json", contexts::ALL);
}

#[test]
fn action_contexts_match_the_schema() {
    cross_check("action-v1.0.json", contexts::ALL_ACTION);
}
