//! Evaluating the values a parsed workflow keeps as templates: `${{ }}` strings, `if:`
//! conditions, typed values (`MaybeExpr`, `Param`) and data with templates nested inside
//! (matrices, `with:`). The parser has already checked which contexts each key may use, so
//! evaluation accepts every context name and lets the caller's [`EvalContext`] decide what
//! each one holds.

mod job;
mod tree;

pub use job::{
    evaluate_concurrency, evaluate_container, evaluate_environment, evaluate_job_containers,
    evaluate_job_env, evaluate_run_defaults, evaluate_strategy, ContainerValues, EnvironmentValues,
    StrategyValues,
};
pub use tree::{
    evaluate_dynamic_keys, evaluate_key, evaluate_string_map, evaluate_tree, MapError,
    MAX_RESULT_BYTES,
};

use crate::expr::{self, template, Allowed, EvalContext, ExprError};
use crate::model::{
    Condition, EnvMap, Matrix, MaybeExpr, Param, Strategy, Template, Tree, TreeKey, WithMap,
};
use crate::value::{Object, Value};
use std::sync::{Arc, OnceLock};

/// Every context name GitHub defines; keys that allow fewer were rejected at parse time.
pub const ALL_CONTEXTS: [&str; 12] = [
    "github", "inputs", "vars", "needs", "strategy", "matrix", "secrets", "steps", "job", "runner",
    "env", "jobs",
];

fn allowed() -> &'static Allowed {
    static ALLOWED: OnceLock<Allowed> = OnceLock::new();
    ALLOWED.get_or_init(|| Allowed::everything(ALL_CONTEXTS))
}

/// Evaluates one expression source (the text inside `${{ }}`).
pub fn evaluate_expression(source: &str, ctx: &dyn EvalContext) -> Result<Value, ExprError> {
    expr::parse(source, allowed())?.evaluate(ctx)
}

/// A template's value: a literal string as is; a single `${{ expr }}` keeps the expression's
/// type; text mixed with expressions becomes a string, as GitHub's `format()` rewrite does.
pub fn evaluate_template(t: &Template, ctx: &dyn EvalContext) -> Result<Value, ExprError> {
    match template::to_expression_source(&t.segments) {
        // Text without expressions, or `${{ 'text' }}` (a lone string literal is its text).
        None => Ok(Value::string(t.literal_text().unwrap_or_default())),
        Some(source) => evaluate_expression(&source, ctx),
    }
}

/// A template's value as the string GitHub would put in an env var or a `with:` input.
pub fn evaluate_to_string(t: &Template, ctx: &dyn EvalContext) -> Result<String, ExprError> {
    Ok(evaluate_template(t, ctx)?.to_display_string())
}

/// An `if:` condition (already rewritten with the implicit `success() &&`), as a boolean.
pub fn evaluate_condition(c: &Condition, ctx: &dyn EvalContext) -> Result<bool, ExprError> {
    Ok(evaluate_expression(&c.expression, ctx)?.is_truthy())
}

/// `continue-on-error`, `fail-fast` and the like: a literal boolean, or an expression whose
/// result is taken by truthiness.
pub fn evaluate_bool(v: &MaybeExpr<bool>, ctx: &dyn EvalContext) -> Result<bool, ExprError> {
    match v {
        MaybeExpr::Literal(b) => Ok(b.value),
        MaybeExpr::Expr(t) => Ok(evaluate_template(t, ctx)?.is_truthy()),
    }
}

/// `timeout-minutes`, `max-parallel`: a literal number, or an expression converted with
/// GitHub's number coercion (NaN when it does not convert; the caller decides what that means).
pub fn evaluate_number(v: &MaybeExpr<f64>, ctx: &dyn EvalContext) -> Result<f64, ExprError> {
    match v {
        MaybeExpr::Literal(n) => Ok(n.value),
        MaybeExpr::Expr(t) => Ok(evaluate_template(t, ctx)?.to_number()),
    }
}

/// A typed parameter (`with:` value, input default): its template when it has one, else its
/// YAML value with any templates nested in it evaluated.
pub fn evaluate_param(p: &Param, ctx: &dyn EvalContext) -> Result<Value, ExprError> {
    match &p.template {
        Some(t) => evaluate_template(t, ctx),
        None => evaluate_nested(&p.value, ctx),
    }
}

/// An `env:` map's pairs, evaluated (see [`evaluate_string_map`]).
pub fn evaluate_env(
    map: &EnvMap,
    ctx: &dyn EvalContext,
) -> Result<Vec<(String, String)>, MapError> {
    evaluate_string_map(map, ctx, |template, ctx| evaluate_template(template, ctx))
}

/// A step's `with:` inputs, evaluated to the strings the action receives.
pub fn evaluate_with(
    map: &WithMap,
    ctx: &dyn EvalContext,
) -> Result<Vec<(String, String)>, MapError> {
    evaluate_string_map(map, ctx, |param, ctx| evaluate_param(param, ctx))
}

/// True if any expression in the template reads the context `name`. An expression that does
/// not parse counts as reading nothing: evaluating it reports the error.
pub fn template_reads(t: &Template, name: &str) -> bool {
    t.segments.iter().any(|segment| match segment {
        template::Segment::Expression { source, .. } => source_reads(source, name),
        template::Segment::Literal(_) => false,
    })
}

/// The expressions of a job's `strategy.matrix` that read the context `name`, as written
/// (`needs`: such a matrix is known only once the needed jobs have run).
pub fn matrix_texts_reading(m: &Matrix, name: &str) -> Vec<String> {
    match m {
        Matrix::Expr(t) if template_reads(t, name) => vec![t.raw.trim().to_owned()],
        Matrix::Expr(_) => Vec::new(),
        Matrix::Mapping(tree) => tree_texts_reading(tree, name),
    }
}

/// The expressions of a job's strategy that decide its legs (the matrix, and keys only known
/// once evaluated) that read the context `name`, as written.
pub fn strategy_texts_reading(strategy: &Strategy, name: &str) -> Vec<String> {
    let mut found: Vec<String> = strategy
        .matrix
        .as_ref()
        .map(|m| matrix_texts_reading(m, name))
        .unwrap_or_default();
    for (key, value) in &strategy.dynamic {
        if let TreeKey::Expr(t) = key {
            if template_reads(t, name) {
                found.push(t.raw.trim().to_owned());
            }
        }
        found.extend(tree_texts_reading(value, name));
    }
    found
}

/// The expressions of a tree (keys included) that read the context `name`, as written.
pub fn tree_texts_reading(tree: &Tree, name: &str) -> Vec<String> {
    tree.templates()
        .into_iter()
        .filter(|t| template_reads(t, name))
        .map(|t| t.raw.trim().to_owned())
        .collect()
}

fn source_reads(source: &str, name: &str) -> bool {
    expr::parse(source, allowed()).is_ok_and(|e| e.reads_named_value(name))
}

/// True if a value holds `${{` anywhere (a matrix that must wait for its inputs).
pub fn contains_template(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("${{"),
        Value::Array(items) => items.iter().any(contains_template),
        Value::Object(obj) => obj
            .iter()
            .any(|(k, v)| k.contains("${{") || contains_template(v)),
        _ => false,
    }
}

/// Evaluates every string with `${{ }}` inside a value (matrix vectors, nested `with:` data).
/// A string that is exactly one expression takes that expression's value and type, so
/// `${{ fromJSON(needs.a.outputs.list) }}` becomes an array.
pub fn evaluate_nested(v: &Value, ctx: &dyn EvalContext) -> Result<Value, ExprError> {
    match v {
        Value::String(s) if s.contains("${{") => {
            let segments = template::split(s).map_err(|e| ExprError {
                kind: expr::ErrorKind::Parsing,
                message: e.to_string(),
                position: Some(e.offset()),
            })?;
            match template::to_expression_source(&segments) {
                None => Ok(v.clone()),
                Some(source) => evaluate_expression(&source, ctx),
            }
        }
        Value::Array(items) => {
            if !items.iter().any(contains_template) {
                return Ok(v.clone());
            }
            let evaluated: Result<Vec<Value>, ExprError> = items
                .iter()
                .map(|item| evaluate_nested(item, ctx))
                .collect();
            Ok(Value::Array(Arc::new(evaluated?)))
        }
        Value::Object(obj) => {
            if !contains_template(v) {
                return Ok(v.clone());
            }
            let mut out = Object {
                entries: Default::default(),
                case_sensitive: obj.case_sensitive,
            };
            for (key, item) in obj.iter() {
                out.insert(key.clone(), evaluate_nested(item, ctx)?);
            }
            Ok(Value::object(out))
        }
        _ => Ok(v.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{JobStatus, SimpleContext};
    use crate::yaml::Pos;

    #[test]
    fn matrix_texts_reading_finds_contexts_in_expressions_only() {
        let parsed = crate::parse_workflow(
            "w.yml",
            "on: push\njobs:\n  a:\n    runs-on: x\n    steps: [{run: echo}]\n  b:\n    needs: a\n    runs-on: x\n    strategy:\n      matrix:\n        os: [linux, 'needs.a']\n        n: ${{ fromJSON(NEEDS.a.outputs.list) }}\n        include: ${{ fromJSON(format('[{0}]', needs['a'].outputs.extra)) }}\n    steps: [{run: echo}]\n  c:\n    needs: a\n    runs-on: x\n    strategy:\n      matrix: ${{ fromJSON(inputs.m) }}\n    steps: [{run: echo}]\n",
        );
        let workflow = parsed.value.expect("valid workflow");
        let matrix_of = |id: &str| {
            let job = workflow
                .jobs
                .iter()
                .find(|j| j.id.value == id)
                .expect("job");
            job.strategy
                .as_ref()
                .and_then(|s| s.matrix.clone())
                .expect("matrix")
        };
        assert_eq!(
            matrix_texts_reading(&matrix_of("b"), "needs"),
            [
                "${{ fromJSON(NEEDS.a.outputs.list) }}",
                "${{ fromJSON(format('[{0}]', needs['a'].outputs.extra)) }}"
            ]
        );
        assert!(matrix_texts_reading(&matrix_of("c"), "needs").is_empty());
        assert_eq!(matrix_texts_reading(&matrix_of("c"), "inputs").len(), 1);
    }

    fn ctx() -> SimpleContext {
        SimpleContext::from_json(
            &serde_json::json!({"matrix": {"os": "linux", "n": 3}, "needs": {"a": {"outputs": {"list": "[1,2]"}}}}),
            JobStatus::Success,
        )
    }

    fn template(raw: &str) -> Template {
        Template {
            raw: raw.to_string(),
            pos: Pos::default(),
            segments: template::split(raw).unwrap(),
        }
    }

    #[test]
    fn single_expression_keeps_its_type() {
        let v = evaluate_template(&template("${{ matrix.n }}"), &ctx()).unwrap();
        assert_eq!(v.kind(), crate::Kind::Number);
        let v =
            evaluate_template(&template("os-${{ matrix.os }}-${{ matrix.n }}"), &ctx()).unwrap();
        assert_eq!(v.to_display_string(), "os-linux-3");
        let v = evaluate_template(&template("plain"), &ctx()).unwrap();
        assert_eq!(v.to_display_string(), "plain");
        // A lone string literal is its text, not the `${{ }}` around it.
        let v = evaluate_template(&template("${{ 'it''s' }}"), &ctx()).unwrap();
        assert_eq!(v.to_display_string(), "it's");
    }

    #[test]
    fn nested_templates_are_evaluated_in_place() {
        let data = Value::from_json(&serde_json::json!({
            "n": "${{ fromJSON(needs.a.outputs.list) }}",
            "fixed": [1, "two"]
        }));
        assert!(contains_template(&data));
        let out = evaluate_nested(&data, &ctx()).unwrap();
        assert_eq!(
            out.to_json(),
            serde_json::json!({"n": [1, 2], "fixed": [1, "two"]})
        );
    }
}
