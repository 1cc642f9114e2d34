//! GitHub's template evaluation of data with expressions anywhere: a key written as an
//! expression becomes its result as a string, `${{ insert }}` merges the mapping its value
//! evaluates to into the enclosing mapping, and a sequence item that is an expression
//! evaluating to a sequence is replaced by that sequence's items. Keys are unique per mapping,
//! compared without case, also after evaluation.

use std::collections::HashSet;

use super::evaluate_template;
use crate::expr::{EvalContext, ExprError};
use crate::model::{DynamicKeys, MapEntry, Template, TemplateMap, Tree, TreeKey};
use crate::value::{Object, Value};

/// What one evaluation of a template may produce, in bytes (strings counted as UTF-16, as
/// GitHub does): its limit on a workflow's evaluated templates.
pub const MAX_RESULT_BYTES: usize = 10 * 1024 * 1024;

/// Counts what an evaluation produced, so that expressions repeated in a template (each
/// inserting or splicing a large value) cannot build an unbounded result.
struct Budget {
    used: usize,
}

impl Budget {
    fn new() -> Budget {
        Budget { used: 0 }
    }

    fn charge(&mut self, value: &Value) -> Result<(), ExprError> {
        self.used = self.used.saturating_add(size_of_value(value));
        if self.used > MAX_RESULT_BYTES {
            return Err(ExprError::evaluation(
                "Maximum object size exceeded: the evaluated template is larger than 10 MiB",
            ));
        }
        Ok(())
    }
}

fn size_of_value(value: &Value) -> usize {
    const NODE: usize = 24;
    match value {
        Value::String(s) => NODE + 2 * s.len(),
        Value::Array(items) => items
            .iter()
            .map(size_of_value)
            .fold(NODE, usize::saturating_add),
        Value::Object(object) => object
            .iter()
            .map(|(k, v)| NODE + 2 * k.len() + size_of_value(v))
            .fold(NODE, usize::saturating_add),
        _ => NODE,
    }
}

/// Evaluates a tree to its value.
pub fn evaluate_tree(tree: &Tree, ctx: &dyn EvalContext) -> Result<Value, ExprError> {
    evaluate_in(tree, ctx, &mut Budget::new())
}

fn evaluate_in(
    tree: &Tree,
    ctx: &dyn EvalContext,
    budget: &mut Budget,
) -> Result<Value, ExprError> {
    match tree {
        Tree::Literal(value, _) => Ok(value.clone()),
        Tree::Expr(template) => {
            let value = evaluate_template(template, ctx)?;
            budget.charge(&value)?;
            Ok(value)
        }
        Tree::Sequence(items, _) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let value = evaluate_in(item, ctx, budget)?;
                match (item, value) {
                    // Only an item written as an expression is spliced; a literal nested
                    // sequence stays one item.
                    (Tree::Expr(_), Value::Array(spliced)) => out.extend(spliced.iter().cloned()),
                    (_, value) => out.push(value),
                }
            }
            Ok(Value::array(out))
        }
        Tree::Mapping(pairs, _) => Ok(Value::object(evaluate_pairs(pairs, ctx, budget)?)),
    }
}

fn evaluate_pairs(
    pairs: &[(TreeKey, Tree)],
    ctx: &dyn EvalContext,
    budget: &mut Budget,
) -> Result<Object, ExprError> {
    let mut object = MappingBuilder::new();
    for (key, value) in pairs {
        match key {
            TreeKey::Literal(name) => {
                let value = evaluate_in(value, ctx, budget)?;
                object.insert(&name.value, value)?;
            }
            TreeKey::Expr(template) => {
                let name = evaluate_key(template, ctx)?;
                let value = evaluate_in(value, ctx, budget)?;
                object.insert(&name, value)?;
            }
            TreeKey::Insert(_) => {
                let inserted = evaluate_in(value, ctx, budget)?;
                object.insert_all(inserted)?;
            }
        }
    }
    Ok(object.object)
}

/// The keys of a mapping with well-known properties that are only known once evaluated
/// (written as expressions, `${{ insert }}`), as one mapping. `written` are the keys written
/// literally beside them: an evaluated key may not repeat one.
pub fn evaluate_dynamic_keys(
    keys: &DynamicKeys,
    written: &[&str],
    ctx: &dyn EvalContext,
) -> Result<Object, ExprError> {
    let object = evaluate_pairs(keys, ctx, &mut Budget::new())?;
    if let Some((key, _)) = object
        .iter()
        .find(|(key, _)| written.iter().any(|w| w.eq_ignore_ascii_case(key)))
    {
        return Err(ExprError::evaluation(format!("'{key}' is already defined")));
    }
    Ok(object)
}

/// A key written as an expression: its result as a string (null is the empty string).
pub fn evaluate_key(template: &Template, ctx: &dyn EvalContext) -> Result<String, ExprError> {
    match evaluate_template(template, ctx)? {
        Value::Null => Ok(String::new()),
        value if value.is_primitive() => Ok(value.to_display_string()),
        value => Err(ExprError::evaluation(format!(
            "the mapping key `{}` evaluated to {} {}; a key must be a string",
            template.raw.trim(),
            article(value.kind().name()),
            value.kind().name()
        ))),
    }
}

fn article(kind: &str) -> &'static str {
    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// A mapping being built: keys stay unique without regard to case, as in GitHub's reader.
struct MappingBuilder {
    object: Object,
    seen: HashSet<String>,
}

impl MappingBuilder {
    fn new() -> MappingBuilder {
        MappingBuilder {
            object: Object::new(),
            seen: HashSet::new(),
        }
    }

    fn insert(&mut self, key: &str, value: Value) -> Result<(), ExprError> {
        if !self.seen.insert(key.to_lowercase()) {
            return Err(ExprError::evaluation(format!("'{key}' is already defined")));
        }
        self.object.insert(key.to_string(), value);
        Ok(())
    }

    /// The pairs of an `${{ insert }}` value, which must be a mapping.
    fn insert_all(&mut self, inserted: Value) -> Result<(), ExprError> {
        match inserted {
            Value::Object(pairs) => {
                for (key, value) in pairs.iter() {
                    self.insert(key, value.clone())?;
                }
                Ok(())
            }
            // An empty result inserts nothing, as an empty mapping would.
            Value::Null => Ok(()),
            other => Err(ExprError::evaluation(format!(
                "`${{{{ insert }}}}` needs a mapping to merge, but its value is {} {}",
                article(other.kind().name()),
                other.kind().name()
            ))),
        }
    }
}

/// A map's entry that failed to evaluate: the key as written and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {error}")]
pub struct MapError {
    pub key: String,
    pub error: ExprError,
}

/// Evaluates an `env:`-style map to `(name, value)` pairs in order, every value a string
/// (numbers and booleans formatted as GitHub formats them, null as empty). A name may appear
/// only once.
pub fn evaluate_string_map<V>(
    map: &TemplateMap<V>,
    ctx: &dyn EvalContext,
    value_of: impl Fn(&V, &dyn EvalContext) -> Result<Value, ExprError>,
) -> Result<Vec<(String, String)>, MapError> {
    let mut out = Vec::with_capacity(map.entries.len());
    let mut seen = HashSet::new();
    let mut push = |name: String, value: Value, written: &str| -> Result<(), MapError> {
        let fail = |message: String| MapError {
            key: written.to_string(),
            error: ExprError::evaluation(message),
        };
        if !seen.insert(name.to_lowercase()) {
            return Err(fail(format!("'{name}' is already defined")));
        }
        if !value.is_primitive() {
            return Err(fail(format!(
                "the value of '{name}' is {} {}; it must be a string",
                article(value.kind().name()),
                value.kind().name()
            )));
        }
        out.push((name, value.to_display_string()));
        Ok(())
    };
    let mut budget = Budget::new();
    for entry in &map.entries {
        match entry {
            MapEntry::Pair(name, value) => {
                let value = value_of(value, ctx).map_err(|error| MapError {
                    key: name.value.clone(),
                    error,
                })?;
                push(name.value.clone(), value, &name.value)?;
            }
            MapEntry::ComputedKey(key, value) => {
                let written = key.raw.trim().to_string();
                let at = |error| MapError {
                    key: written.clone(),
                    error,
                };
                let name = evaluate_key(key, ctx).map_err(at)?;
                let value = value_of(value, ctx).map_err(at)?;
                push(name, value, &written)?;
            }
            MapEntry::Insert(tree) => {
                let written = match tree {
                    Tree::Expr(template) => template.raw.trim().to_string(),
                    _ => "${{ insert }}".to_string(),
                };
                let at = |error| MapError {
                    key: written.clone(),
                    error,
                };
                let inserted = evaluate_in(tree, ctx, &mut budget).map_err(at)?;
                match inserted {
                    Value::Object(pairs) => {
                        for (name, value) in pairs.iter() {
                            push(name.clone(), value.clone(), &written)?;
                        }
                    }
                    Value::Null => {}
                    other => {
                        return Err(at(ExprError::evaluation(format!(
                            "a mapping was expected, but the value is {} {}",
                            article(other.kind().name()),
                            other.kind().name()
                        ))))
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{JobStatus, SimpleContext};
    use crate::model::{JobKind, Matrix, StepAction};

    fn ctx() -> SimpleContext {
        SimpleContext::from_json(
            &serde_json::json!({
                "needs": {"prepare": {"outputs": {
                    "axis": "python",
                    "extra": "{\"LEVEL\": \"3\", \"DEBUG\": true}",
                    "versions": "[\"3.11\", \"3.12\"]",
                    "objects": "{\"a\": 1}"
                }}},
                "matrix": {"name": "alpha"}
            }),
            JobStatus::Success,
        )
    }

    /// The matrix of job `t` in a workflow whose job `t` is given as YAML lines.
    fn matrix_of(job_yaml: &str) -> Tree {
        let yaml = format!(
            "on: push\njobs:\n  prepare:\n    runs-on: x\n    steps: [run: echo]\n  t:\n    needs: prepare\n    runs-on: x\n{job_yaml}    steps: [run: echo]\n"
        );
        let parsed = crate::parse_workflow("w.yml", &yaml);
        assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
        let workflow = parsed.value.expect("workflow");
        let job = workflow.job("t").expect("job t");
        match job.strategy.as_ref().and_then(|s| s.matrix.clone()) {
            Some(Matrix::Mapping(tree)) => tree,
            other => panic!("matrix mapping expected, got {other:?}"),
        }
    }

    #[test]
    fn a_key_written_as_an_expression_is_its_result() {
        let tree = matrix_of(
            "    strategy:\n      matrix:\n        ${{ needs.prepare.outputs.axis }}: ['3.11', '3.12']\n        os: [linux]\n",
        );
        let value = evaluate_tree(&tree, &ctx()).expect("evaluates");
        assert_eq!(
            value.to_json(),
            serde_json::json!({"python": ["3.11", "3.12"], "os": ["linux"]})
        );
    }

    #[test]
    fn insert_merges_the_mapping_in_place() {
        let tree = matrix_of(
            "    strategy:\n      matrix:\n        os: [linux]\n        ${{ insert }}: '${{ fromJSON(''{\"node\": [18, 20]}'') }}'\n        include:\n          - ${{ insert }}: {shell: bash}\n            os: linux\n",
        );
        let value = evaluate_tree(&tree, &ctx()).expect("evaluates");
        assert_eq!(
            value.to_json(),
            serde_json::json!({
                "os": ["linux"],
                "node": [18, 20],
                "include": [{"shell": "bash", "os": "linux"}]
            })
        );
    }

    #[test]
    fn an_expression_item_evaluating_to_a_sequence_is_spliced_and_literal_ones_stay_nested() {
        let tree = matrix_of(
            "    strategy:\n      matrix:\n        python: ['3.10', '${{ fromJSON(needs.prepare.outputs.versions) }}', [nested]]\n",
        );
        let value = evaluate_tree(&tree, &ctx()).expect("evaluates");
        assert_eq!(
            value.to_json(),
            serde_json::json!({"python": ["3.10", "3.11", "3.12", ["nested"]]})
        );
    }

    #[test]
    fn keys_stay_unique_after_evaluation() {
        let tree = matrix_of(
            "    strategy:\n      matrix:\n        python: [a]\n        ${{ needs.prepare.outputs.axis }}: [b]\n",
        );
        let error = evaluate_tree(&tree, &ctx()).expect_err("duplicate key");
        assert_eq!(error.message, "'python' is already defined");
        let tree = matrix_of(
            "    strategy:\n      matrix:\n        A: [a]\n        ${{ insert }}: '${{ fromJSON(''{\"a\": [1]}'') }}'\n",
        );
        let error = evaluate_tree(&tree, &ctx()).expect_err("duplicate key");
        assert_eq!(error.message, "'a' is already defined");
    }

    #[test]
    fn insert_of_something_else_than_a_mapping_and_non_string_keys_are_errors() {
        let tree = matrix_of(
            "    strategy:\n      matrix:\n        ${{ insert }}: ${{ fromJSON(needs.prepare.outputs.versions) }}\n",
        );
        let error = evaluate_tree(&tree, &ctx()).expect_err("not a mapping");
        assert!(
            error.message.contains("needs a mapping"),
            "{}",
            error.message
        );
        let tree = matrix_of(
            "    strategy:\n      matrix:\n        ${{ fromJSON(needs.prepare.outputs.objects) }}: [1]\n",
        );
        let error = evaluate_tree(&tree, &ctx()).expect_err("object key");
        assert!(
            error.message.contains("a key must be a string"),
            "{}",
            error.message
        );
    }

    #[test]
    fn repeated_large_insertions_hit_the_size_limit() {
        let items: String = (0..40)
            .map(|_| "'${{ fromJSON(format(''[\"{0}\"]'', join(needs.*.outputs.big, ''''))) }}', ")
            .collect();
        let tree = matrix_of(&format!(
            "    strategy:\n      matrix:\n        v: [{items}]\n"
        ));
        let big = "x".repeat(200_000);
        let ctx = SimpleContext::from_json(
            &serde_json::json!({"needs": {"prepare": {"outputs": {"big": big}}}}),
            JobStatus::Success,
        );
        let error = evaluate_tree(&tree, &ctx).expect_err("too large");
        assert!(
            error.message.contains("Maximum object size exceeded"),
            "{}",
            error.message
        );
    }

    fn step_maps(yaml_steps: &str) -> (crate::model::EnvMap, crate::model::WithMap) {
        let yaml = format!(
            "on: push\njobs:\n  prepare:\n    runs-on: x\n    steps: [run: echo]\n  t:\n    needs: prepare\n    runs-on: x\n    steps:\n{yaml_steps}"
        );
        let parsed = crate::parse_workflow("w.yml", &yaml);
        assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
        let workflow = parsed.value.expect("workflow");
        let JobKind::Steps(steps) = &workflow.job("t").expect("t").kind else {
            panic!("steps")
        };
        let StepAction::Uses { with, .. } = &steps[0].action else {
            panic!("uses")
        };
        (steps[0].env.clone(), with.clone())
    }

    #[test]
    fn env_and_with_take_expression_keys_inserts_and_whole_expressions() {
        let (env, with) = step_maps(
            "      - uses: ./act\n        env:\n          FIXED: one\n          ${{ matrix.name }}_VAR: two\n          ${{ insert }}: ${{ fromJSON(needs.prepare.outputs.extra) }}\n        with: ${{ fromJSON(needs.prepare.outputs.extra) }}\n",
        );
        assert_eq!(
            super::super::evaluate_env(&env, &ctx()).expect("env"),
            [
                ("FIXED".to_string(), "one".to_string()),
                ("alpha_VAR".to_string(), "two".to_string()),
                ("LEVEL".to_string(), "3".to_string()),
                ("DEBUG".to_string(), "true".to_string()),
            ]
        );
        assert_eq!(
            super::super::evaluate_with(&with, &ctx()).expect("with"),
            [
                ("LEVEL".to_string(), "3".to_string()),
                ("DEBUG".to_string(), "true".to_string()),
            ]
        );
    }

    #[test]
    fn an_env_name_defined_twice_or_a_non_string_value_is_an_error() {
        let (env, _) = step_maps(
            "      - uses: ./act\n        env:\n          LEVEL: one\n          ${{ insert }}: ${{ fromJSON(needs.prepare.outputs.extra) }}\n",
        );
        let error = super::super::evaluate_env(&env, &ctx()).expect_err("duplicate");
        assert_eq!(error.error.message, "'LEVEL' is already defined");
        let (env, _) = step_maps(
            "      - uses: ./act\n        env:\n          ${{ insert }}: '${{ fromJSON(''{\"A\": [1]}'') }}'\n",
        );
        let error = super::super::evaluate_env(&env, &ctx()).expect_err("array value");
        assert!(error.error.message.contains("must be a string"), "{error}");
    }
}
