//! Behaviour the shared conformance data does not pin down: robustness limits, laziness,
//! filtered arrays through grouping, and the context plumbing.

use super::*;
use crate::value::Object;

fn context() -> SimpleContext {
    let json = serde_json::json!({
        "github": {"event_name": "push", "ref": "refs/heads/main", "event": {"commits": [{"id": "a"}, {"id": "b"}]}},
        "matrix": {"os": "linux", "include": [[1, 2], [3, 4]]},
    });
    SimpleContext::from_json(&json, JobStatus::Success)
}

fn allowed() -> Allowed {
    Allowed::everything(["github", "matrix"])
}

fn eval(source: &str) -> Result<Value, ExprError> {
    parse(source, &allowed())?.evaluate(&context())
}

fn json_of(source: &str) -> String {
    to_json_string(&eval(source).unwrap_or_else(|e| panic!("{source}: {e}")))
}

#[test]
fn evaluates_a_typical_condition() {
    let v = eval(
        "github.event_name == 'push' && contains(github.ref, 'MAIN') && matrix.os != 'windows'",
    )
    .unwrap();
    assert!(matches!(v, Value::Bool(true)));
}

#[test]
fn short_circuit_never_evaluates_the_skipped_operand() {
    assert!(matches!(
        eval("false && fromJSON('not json')").unwrap(),
        Value::Bool(false)
    ));
    assert!(matches!(eval("'x' || format('{9}')").unwrap(), Value::String(s) if &*s == "x"));
    assert!(eval("true && fromJSON('not json')").is_err());
}

#[test]
fn case_evaluates_only_the_chosen_branch() {
    assert!(
        matches!(eval("case(true, 1, fromJSON('bad'))").unwrap(), Value::Number(n) if n == 1.0)
    );
    assert!(eval("case(false, 1, fromJSON('bad'))").is_err());
}

#[test]
fn filtered_arrays_survive_grouping_and_logical_operators() {
    assert_eq!(
        json_of("github.event.commits.*.id"),
        "[\n  \"a\",\n  \"b\"\n]"
    );
    // Parentheses do not materialise the filtered array: [0] applies to each element.
    assert_eq!(json_of("(github.event.commits.*)[0]"), "[]");
    assert_eq!(json_of("(true && matrix.include.*)[1]"), "[\n  2,\n  4\n]");
    // A function result is an ordinary array again.
    assert_eq!(
        json_of("fromJSON(toJSON(matrix.include.*))[1]"),
        "[\n  3,\n  4\n]"
    );
}

#[test]
fn deep_nesting_is_a_parse_error_not_a_stack_overflow() {
    for source in [
        "(".repeat(20_000),
        format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000)),
        "!".repeat(20_000),
        format!("1{}", " == 1".repeat(4_000)),
        format!("1{}", " < 1".repeat(4_000)),
        format!("github{}", ".a".repeat(10_000)),
        format!("github{}", "[0]".repeat(6_000)),
        "format(".repeat(3_000),
    ] {
        let err = parse(&source, &allowed()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Parsing, "{}", &err.message[..80]);
    }
    let chain = format!("1{}", " == 1".repeat(49));
    assert!(parse(&chain, &allowed()).is_ok());
}

#[test]
fn overlong_expressions_are_rejected() {
    let source = format!("'{}'", "a".repeat(MAX_LENGTH));
    let err = parse(&source, &allowed()).unwrap_err();
    assert_eq!(err.message, "Exceeded max expression length 21000");
    assert!(parse(&format!("'{}'", "a".repeat(MAX_LENGTH - 2)), &allowed()).is_ok());
}

#[test]
fn memory_hungry_results_fail_instead_of_allocating() {
    let big = format!("format('{}', github.ref)", "{0}".repeat(5_000));
    let nested = format!("format('{}', {big})", "{0}".repeat(40));
    let err = eval(&nested).unwrap_err();
    assert_eq!(err.message, "The maximum allowed memory size was exceeded");
    assert_eq!(err.kind, ErrorKind::Evaluation);
    assert!(eval(&big).is_ok());
    let join = format!(
        "join(fromJSON('[{}]'), '{}')",
        vec!["1"; 2_000].join(","),
        "x".repeat(400)
    );
    assert!(eval(&join).is_err());
}

/// Builds `[[[...null...]]]` nested `depth` times.
fn nested_array(depth: usize) -> Value {
    let mut value = Value::Null;
    for _ in 0..depth {
        value = Value::array(vec![value]);
    }
    value
}

/// Dropping a deep value recurses; unwind it iteratively.
fn drop_nested(mut value: Value) {
    while let Value::Array(items) = value {
        value = std::sync::Arc::try_unwrap(items)
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or(Value::Null);
    }
}

#[test]
fn to_json_handles_values_deeper_than_any_stack() {
    let shallow = nested_array(3);
    assert_eq!(
        to_json_string(&shallow),
        "[\n  [\n    [\n      null\n    ]\n  ]\n]"
    );
    // Indentation makes the text quadratic in the depth: through an expression the memory
    // budget stops it long before the end, and the writer never recurses.
    let deep = nested_array(200_000);
    let mut contexts = Object::new();
    contexts.insert("deep", deep.clone());
    let ctx = SimpleContext::new(contexts, JobStatus::Success);
    let expr = parse("toJSON(deep)", &Allowed::everything(["deep"])).unwrap();
    assert_eq!(
        expr.evaluate(&ctx).unwrap_err().message,
        "The maximum allowed memory size was exceeded"
    );
    // The context only drops its reference; the last one is unwound here.
    drop(ctx);
    drop_nested(deep);
}

#[test]
fn to_json_escapes_like_newtonsoft() {
    let mut obj = Object::new();
    obj.insert("k\"ey", Value::string("a\nb\t\u{1}\u{2028}é"));
    obj.insert("n", Value::Number(1.5e20));
    assert_eq!(
        to_json_string(&Value::object(obj)),
        "{\n  \"k\\\"ey\": \"a\\nb\\t\\u0001\\u2028é\",\n  \"n\": 1.5E+20\n}"
    );
}

#[test]
fn error_positions_count_utf16_units_and_keep_the_byte_offset() {
    let err = parse("'é😊' == @", &allowed()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Lexing);
    assert_eq!(err.position, Some(12));
    assert_eq!(
        err.message,
        "Unexpected symbol: '@'. Located at position 10 within expression: 'é😊' == @"
    );
}

#[test]
fn unknown_names_and_arity_are_parse_errors() {
    let err = parse("secrets.x", &allowed()).unwrap_err();
    assert_eq!(
        err.message,
        "Unrecognized named-value: 'secrets'. Located at position 1 within expression: secrets.x"
    );
    let err = parse("hashFiles()", &allowed()).unwrap_err();
    assert!(err
        .message
        .starts_with("Too few parameters supplied: 'hashFiles'"));
    let err = parse("always(1)", &allowed()).unwrap_err();
    assert!(err
        .message
        .starts_with("Too many parameters supplied: 'always'"));
    let none = Allowed::new(vec!["github".into()], vec![]);
    let err = parse("success()", &none).unwrap_err();
    assert!(err.message.starts_with("Unrecognized function: 'success'"));
    assert!(parse("CONTAINS(GitHub.ref, 'x')", &none).is_ok());
}

#[test]
fn status_function_detection_ignores_string_literals() {
    let detect = |s: &str| parse(s, &allowed()).unwrap().calls_status_function();
    assert!(detect("always()"));
    assert!(detect(
        "github.ref == 'x' || contains(toJSON(failure()), 'x')"
    ));
    assert!(detect("matrix[cancelled()]"));
    assert!(!detect("'success()' && contains('always()', 'x')"));
    assert!(!detect("hashFiles('x')"));
}

#[test]
fn simple_context_answers_status_functions_and_hash_files() {
    let json = serde_json::json!({});
    let failed = SimpleContext::from_json(&json, JobStatus::Failure);
    let run = |ctx: &SimpleContext, s: &str| parse(s, &allowed()).and_then(|e| e.evaluate(ctx));
    assert!(matches!(
        run(
            &failed,
            "failure() && !success() && !cancelled() && always()"
        ),
        Ok(Value::Bool(true))
    ));
    assert!(run(&failed, "hashFiles('**/x')")
        .unwrap_err()
        .message
        .contains("not available"));
    let hashing = SimpleContext::from_json(&json, JobStatus::Cancelled).with_hash_files(Box::new(
        |patterns| Ok(format!("hash of {}", patterns.join("+"))),
    ));
    assert!(
        matches!(run(&hashing, "hashFiles('a', 'b')"), Ok(Value::String(s)) if &*s == "hash of a+b")
    );
    assert!(matches!(
        run(&hashing, "cancelled()"),
        Ok(Value::Bool(true))
    ));
}

#[test]
fn schema_entries_become_function_signatures() {
    assert_eq!(
        FunctionSig::from_schema_entry("success(0,MAX)"),
        Some(FunctionSig::new("success", 0, usize::MAX))
    );
    assert_eq!(
        FunctionSig::from_schema_entry("hashFiles(1,255)"),
        Some(FunctionSig::new("hashFiles", 1, 255))
    );
    assert_eq!(FunctionSig::from_schema_entry("github"), None);
}

#[test]
fn empty_expression_is_null() {
    assert!(matches!(eval("").unwrap(), Value::Null));
    assert!(matches!(eval("  \n ").unwrap(), Value::Null));
}

#[test]
fn parsed_expressions_and_errors_can_cross_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Expr>();
    shareable::<ExprError>();
    shareable::<Allowed>();
    shareable::<SimpleContext>();
}

#[test]
fn messages_match_the_workflow_reader_data() {
    let allowed = Allowed::everything(["github"]);
    // reader/errors-unclosed-tokens.yml
    let err = parse("contains('a', 'b'", &allowed).unwrap_err();
    assert_eq!(
        err.message,
        "Unexpected end of expression: ''b''. Located at position 15 within expression: contains('a', 'b'"
    );
    // reader/errors-expressions.yml
    let err = parse("\"0xFZ\"", &allowed).unwrap_err();
    assert_eq!(
        err.message,
        "Unexpected symbol: '\"0xFZ\"'. Located at position 1 within expression: \"0xFZ\""
    );
    let err = parse("withJson()", &allowed).unwrap_err();
    assert_eq!(
        err.message,
        "Unrecognized function: 'withJson'. Located at position 1 within expression: withJson()"
    );
    let err = parse("foo\"", &allowed).unwrap_err();
    assert_eq!(
        err.message,
        "Unexpected symbol: 'foo\"'. Located at position 1 within expression: foo\""
    );
}
