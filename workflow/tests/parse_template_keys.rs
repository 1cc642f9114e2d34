//! GitHub's template rules in the parser: a mapping key may be an expression (or
//! `${{ insert }}`) wherever the key's definition, or one of its parents, allows a context,
//! and nowhere else; `${{ insert }}` is a key only.

use kiln_workflow::model::{MapEntry, Matrix, MaybeExpr, Tree, TreeKey};
use kiln_workflow::{parse_workflow, Diagnostic};

const NOT_ALLOWED: &str = "A template expression is not allowed in this context";

fn errors(yaml: &str) -> Vec<Diagnostic> {
    parse_workflow("w.yml", yaml).errors().cloned().collect()
}

fn valid(yaml: &str) -> kiln_workflow::model::Workflow {
    let parsed = parse_workflow("w.yml", yaml);
    let errors: Vec<String> = parsed.errors().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{errors:?}");
    parsed.value.expect("workflow")
}

#[test]
fn a_matrix_dimension_may_be_named_by_needs() {
    let workflow = valid(
        "on: push
jobs:
  prepare:
    runs-on: x
    outputs: {axis: '${{ steps.a.outputs.axis }}'}
    steps: [{id: a, run: echo}]
  test:
    needs: prepare
    runs-on: x
    strategy:
      matrix:
        ${{ needs.prepare.outputs.axis }}: [a, b]
        include:
          - ${{ needs.prepare.outputs.axis }}: c
            ${{ insert }}: ${{ fromJSON('{}') }}
        ${{ insert }}: ${{ fromJSON('{}') }}
    steps: [run: echo]
",
    );
    let strategy = workflow.job("test").and_then(|j| j.strategy.clone());
    let Some(Matrix::Mapping(Tree::Mapping(pairs, _))) = strategy.and_then(|s| s.matrix) else {
        panic!("matrix mapping");
    };
    assert!(
        matches!(&pairs[0].0, TreeKey::Expr(t) if t.single_expression() == Some("needs.prepare.outputs.axis"))
    );
    assert!(matches!(&pairs[2].0, TreeKey::Insert(_)));
}

#[test]
fn keys_may_be_expressions_in_env_with_and_container_env() {
    let workflow = valid(
        "on: push
env:
  ${{ github.event_name }}_WF: yes
  ${{ insert }}: ${{ fromJSON(vars.EXTRA) }}
jobs:
  t:
    runs-on: x
    strategy: {matrix: {k: [A]}}
    env:
      ${{ matrix.k }}_JOB: ${{ secrets.TOKEN }}
    container:
      image: alpine
      env:
        ${{ matrix.k }}: ${{ runner.temp }}
    steps:
      - uses: ./act
        env: '${{ fromJSON(''{\"A\": \"1\"}'') }}'
        with:
          ${{ matrix.k }}: value
          ${{ insert }}: {b: '${{ steps.x.outputs.y }}'}
",
    );
    assert!(matches!(
        workflow.env.entries.as_slice(),
        [MapEntry::ComputedKey(..), MapEntry::Insert(Tree::Expr(_))]
    ));
    let job = workflow.job("t").expect("job");
    assert!(matches!(
        job.env.entries.as_slice(),
        [MapEntry::ComputedKey(..)]
    ));
    let container = job.container.as_ref().expect("container");
    assert!(container.env.has_computed_keys());
}

#[test]
fn keys_may_not_be_expressions_where_no_context_is_allowed() {
    for (what, yaml) in [
        (
            "outputs",
            "on: push\njobs:\n  t:\n    runs-on: x\n    outputs:\n      ${{ github.sha }}: x\n    steps: [run: echo]\n",
        ),
        (
            "reusable with",
            "on: push\njobs:\n  t:\n    uses: ./.github/workflows/c.yml\n    with:\n      ${{ github.sha }}: x\n",
        ),
        (
            "workflow defaults",
            "on: push\ndefaults:\n  run:\n    ${{ github.sha }}: bash\njobs:\n  t:\n    runs-on: x\n    steps: [run: echo]\n",
        ),
        (
            "whole outputs",
            "on: push\njobs:\n  t:\n    runs-on: x\n    outputs: ${{ fromJSON('{}') }}\n    steps: [run: echo]\n",
        ),
    ] {
        let found = errors(yaml);
        assert!(
            found.iter().any(|d| d.message == NOT_ALLOWED),
            "{what}: {found:?}"
        );
    }
}

#[test]
fn expression_keys_are_checked_against_the_contexts_they_inherit() {
    let found = errors(
        "on: push
jobs:
  t:
    runs-on: x
    strategy:
      matrix:
        ${{ matrix.x }}: [a]
    steps: [run: echo]
",
    );
    assert!(
        found
            .iter()
            .any(|d| d.message.starts_with("Unrecognized named-value: 'matrix'")),
        "{found:?}"
    );
}

#[test]
fn insert_is_only_a_key() {
    let found = errors(
        "on: push\njobs:\n  t:\n    runs-on: x\n    env:\n      A: ${{ insert }}\n    steps: [run: echo]\n",
    );
    assert!(
        found.iter().any(|d| d
            .message
            .starts_with("The directive 'insert' is not allowed in this context")),
        "{found:?}"
    );
}

#[test]
fn environment_deployment_may_be_an_expression_with_the_environment_contexts() {
    let workflow = valid(
        "on: push
jobs:
  t:
    runs-on: x
    environment:
      name: prod
      deployment: ${{ github.ref == 'refs/heads/main' }}
    steps: [run: echo]
",
    );
    let environment = workflow
        .job("t")
        .and_then(|j| j.environment.clone())
        .expect("environment");
    assert!(matches!(environment.deployment, Some(MaybeExpr::Expr(_))));
    let found = errors(
        "on: push\njobs:\n  t:\n    runs-on: x\n    environment:\n      name: prod\n      deployment: ${{ secrets.X }}\n    steps: [run: echo]\n",
    );
    assert!(
        found
            .iter()
            .any(|d| d.message.starts_with("Unrecognized named-value: 'secrets'")),
        "{found:?}"
    );
}
