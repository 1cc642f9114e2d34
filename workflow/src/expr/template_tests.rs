use super::*;

fn expr(source: &str, offset: usize) -> Segment {
    Segment::Expression {
        source: source.to_string(),
        offset,
    }
}

fn lit(text: &str) -> Segment {
    Segment::Literal(text.to_string())
}

/// Job-level `if:` allows these (workflow-v1.0.json `job-if`).
fn job_if() -> Allowed {
    let mut allowed = Allowed::from_schema_context(&[
        "github",
        "inputs",
        "vars",
        "needs",
        "always(0,0)",
        "failure(0,MAX)",
        "cancelled(0,0)",
        "success(0,MAX)",
    ]);
    allowed.named_values.sort();
    allowed
}

/// Step-level `if:` (workflow-v1.0.json `step-if`).
fn step_if() -> Allowed {
    Allowed::from_schema_context(&[
        "github",
        "inputs",
        "vars",
        "needs",
        "strategy",
        "matrix",
        "steps",
        "job",
        "runner",
        "env",
        "always(0,0)",
        "failure(0,0)",
        "cancelled(0,0)",
        "success(0,0)",
        "hashFiles(1,255)",
    ])
}

/// Each `(if: scalar, condition GitHub stored)` pair.
fn assert_conditions(allowed: &Allowed, cases: &[(&str, &str)]) {
    for (scalar, expected) in cases {
        let source = condition_source(scalar).expect("template splits");
        let rewritten = rewrite_condition(&source, allowed).expect("condition parses");
        assert_eq!(rewritten, *expected, "if: {scalar}");
    }
}

#[test]
fn scalars_without_expressions_are_one_literal() {
    assert_eq!(split("echo hi").unwrap(), vec![lit("echo hi")]);
    assert_eq!(split("").unwrap(), vec![lit("")]);
    assert_eq!(split("a {{ b }} $ {").unwrap(), vec![lit("a {{ b }} $ {")]);
}

#[test]
fn splits_literals_and_expressions_with_offsets() {
    let scalar = "echo ${{ github.sha }} and ${{matrix.os}}!";
    assert_eq!(
        split(scalar).unwrap(),
        vec![
            lit("echo "),
            expr("github.sha", 9),
            lit(" and "),
            expr("matrix.os", 30),
            lit("!")
        ]
    );
    assert_eq!(&scalar[9..19], "github.sha");
    assert_eq!(
        split("${{ a }}${{ b }}").unwrap(),
        vec![expr("a", 4), expr("b", 12)]
    );
}

#[test]
fn closing_braces_inside_strings_do_not_end_the_expression() {
    assert_eq!(split("${{ '}}' }}").unwrap(), vec![lit("}}")]);
    assert_eq!(
        split("x ${{ format('}}{0}', 'a') }} y").unwrap(),
        vec![lit("x "), expr("format('}}{0}', 'a')", 6), lit(" y")]
    );
}

#[test]
fn a_lone_string_literal_expression_is_a_literal() {
    assert_eq!(
        split("${{ '{{ this is a literal }}' }}").unwrap(),
        vec![lit("{{ this is a literal }}")]
    );
    assert_eq!(split("${{ 'it''s' }}").unwrap(), vec![lit("it's")]);
    // Not a lone literal: stays an expression.
    assert_eq!(
        split("${{ 'a' == 'b' }}").unwrap(),
        vec![expr("'a' == 'b'", 4)]
    );
    assert_eq!(
        split("x ${{ 'a' }}").unwrap(),
        vec![lit("x "), expr("'a'", 6)]
    );
}

#[test]
fn reports_unclosed_and_empty_expressions_with_githubs_text() {
    let err = split("echo ${{ github.event_name").unwrap_err();
    assert_eq!(err, TemplateError::NotClosed { offset: 5 });
    assert_eq!(
        err.to_string(),
        "The expression is not closed. An unescaped ${{ sequence was found, but the closing }} sequence was not found."
    );
    let err = split("echo ${{ }}").unwrap_err();
    assert_eq!(err, TemplateError::Empty { offset: 5 });
    assert_eq!(err.to_string(), "An expression was expected");
    assert_eq!(
        split("${{}}").unwrap_err(),
        TemplateError::Empty { offset: 0 }
    );
    assert!(matches!(
        split("${{ 'unterminated }}"),
        Err(TemplateError::NotClosed { .. })
    ));
}

#[test]
fn several_segments_become_a_format_call() {
    let segments = split("echo ${{ matrix.sha }}").unwrap();
    assert_eq!(
        to_expression_source(&segments).unwrap(),
        "format('echo {0}', matrix.sha)"
    );
    let segments = split("it's {a} ${{ x }}-${{ y }}}").unwrap();
    assert_eq!(
        to_expression_source(&segments).unwrap(),
        "format('it''s {{a}} {0}-{1}}}', x, y)"
    );
    assert_eq!(
        to_expression_source(&split("${{ x }}").unwrap()).unwrap(),
        "x"
    );
    assert_eq!(to_expression_source(&split("plain").unwrap()), None);
}

#[test]
fn insert_directive_is_recognised() {
    assert!(split("${{ insert }}").unwrap()[0].is_insert_directive());
    assert!(!split("${{ inserts }}").unwrap()[0].is_insert_directive());
    // reader/errors-insert.yml
    let err = split("This is a bad ${{ insert }}").unwrap_err();
    assert_eq!(err, TemplateError::EmbeddedDirective { offset: 14 });
    assert!(err
        .to_string()
        .starts_with("The directive 'insert' is not allowed in this context."));
    assert!(matches!(
        split("${{ insert }} are bad"),
        Err(TemplateError::EmbeddedDirective { .. })
    ));
    assert_eq!(
        split("${{ insert x }}").unwrap_err(),
        TemplateError::DirectiveParameters {
            offset: 0,
            count: 1
        }
    );
}

/// The `if:` values of reader/job-if.yml and the conditions GitHub's parser produced.
#[test]
fn rewrites_job_conditions_like_job_if_yml() {
    let allowed = job_if();
    let cases = [
        ("true", "success() && (true)"),
        ("", "success()"),
        (
            "${{ github.foo == 'bar' }}",
            "success() && (github.foo == 'bar')",
        ),
        (
            "${{ success('build', 'build2') }}",
            "success('build', 'build2')",
        ),
        ("github.foo == 'bar'", "success() && (github.foo == 'bar')"),
        ("false || (always() && true)", "false || (always() && true)"),
        (
            "false || (true && true)",
            "success() && (false || (true && true))",
        ),
        ("false && success()", "false && success()"),
        (
            "${{ toJSON( github.actor) }}",
            "success() && (toJSON( github.actor))",
        ),
        ("fromJson(toJSON(success()))", "fromJson(toJSON(success()))"),
        // reader/escape-html-values.yml
        (
            "false || ${{ true && true }}",
            "success() && (format('false || {0}', true && true))",
        ),
        ("false", "success() && (false)"),
    ];
    assert_conditions(&allowed, &cases);
}

/// The `if:` values of reader/step-if.yml.
#[test]
fn rewrites_step_conditions_like_step_if_yml() {
    let allowed = step_if();
    let cases = [
        ("", "success()"),
        ("always()", "always()"),
        ("123", "success() && (123)"),
        ("0 || 1", "success() && (0 || 1)"),
        ("123 || failure()", "123 || failure()"),
        ("${{ 0 || 1 }}", "success() && (0 || 1)"),
        ("${{ 123 || failure() }}", "123 || failure()"),
        (
            "${{ github.ref == 'refs/heads/main' }}",
            "success() && (github.ref == 'refs/heads/main')",
        ),
        (
            "${{ vars.foo == 'bar' }}",
            "success() && (vars.foo == 'bar')",
        ),
        ("${{ vars.foo || success() }}", "vars.foo || success()"),
        (
            "${{ true || 'success()' }}",
            "success() && (true || 'success()')",
        ),
        (
            "${{ env.super_secret != '' }}",
            "success() && (env.super_secret != '')",
        ),
        (
            "${{  needs.build.outputs.run-js-tests && success() }}",
            "needs.build.outputs.run-js-tests && success()",
        ),
        // reader/job-if.yml, build11's step
        (
            "${{always() && fromJSON(env.time) == 5 }}",
            "always() && fromJSON(env.time) == 5",
        ),
    ];
    assert_conditions(&allowed, &cases);
}

#[test]
fn condition_errors_use_githubs_messages() {
    // reader/errors-expressions.yml: env is not allowed in a job `if`.
    let err = rewrite_condition("env.foo == 'x'", &job_if()).unwrap_err();
    assert_eq!(
        err.message,
        "Unrecognized named-value: 'env'. Located at position 1 within expression: env.foo == 'x'"
    );
    // reader/errors-step-if.yml
    let source = "(steps.publish-pdf.outcome != 'Skipped' || steps.publish-json.outcome != 'Skipped) && success()";
    let err = rewrite_condition(source, &step_if()).unwrap_err();
    assert_eq!(
        err.message,
        format!("Unexpected symbol: ''Skipped) && success()'. Located at position 74 within expression: {source}")
    );
    // Status functions with arguments are job-level only.
    let err = rewrite_condition("success('build')", &step_if()).unwrap_err();
    assert!(
        err.message
            .starts_with("Too many parameters supplied: 'success'"),
        "{}",
        err.message
    );
}
