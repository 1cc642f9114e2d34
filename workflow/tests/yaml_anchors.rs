//! YAML spellings found in real workflows: anchors and aliases (GitHub reads them since
//! 2025-09-18, without merge keys), and flow collections closed under their key.

use kiln_workflow::model::JobKind;
use kiln_workflow::yaml::{self, Limits, NodeKind};
use kiln_workflow::{parse_workflow_with, ParseOptions};

fn errors_of(source: &str) -> Vec<String> {
    let result = parse_workflow_with(".github/workflows/t.yml", source, &ParseOptions::default());
    result.errors().map(ToString::to_string).collect()
}

#[test]
fn aliased_steps_are_copies_of_the_anchored_ones() {
    let source = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    env: &env\n      MODE: fast\n    steps:\n      - &checkout\n        name: Checkout\n        uses: actions/checkout@v4\n      - run: echo a\n  b:\n    runs-on: ubuntu-latest\n    env: *env\n    steps:\n      - *checkout\n      - run: echo b\n";
    let result = parse_workflow_with(".github/workflows/t.yml", source, &ParseOptions::default());
    assert!(!result.has_errors(), "{:?}", result.diagnostics);
    let workflow = result.value.expect("workflow");
    let b = workflow
        .jobs
        .iter()
        .find(|j| j.id.value == "b")
        .expect("job b");
    let JobKind::Steps(steps) = &b.kind else {
        panic!("b runs steps")
    };
    assert_eq!(steps.len(), 2);
    assert_eq!(
        steps[0].name.as_ref().map(|n| n.raw.as_str()),
        Some("Checkout")
    );
    assert_eq!(steps[0].effective_id, "__actions_checkout");
}

#[test]
fn merge_keys_stay_plain_keys_as_on_github() {
    let source = "on: push\njobs:\n  a: &base\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo\n  b:\n    <<: *base\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo\n";
    let errors = errors_of(source);
    assert!(
        errors.iter().any(|e| e.contains("Unexpected value '<<'")),
        "{errors:?}"
    );
}

#[test]
fn alias_bombs_stop_at_the_size_limit_instead_of_exhausting_memory() {
    let mut source = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    let mut previous = 'a';
    for name in 'b'..='k' {
        source.push_str(&format!(
            "{name}: &{name} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"
        ));
        previous = name;
    }
    let document = yaml::parse(&source, Limits::default());
    assert!(document.root.is_none());
    assert!(
        document
            .errors
            .iter()
            .any(|e| e.message.contains("aliases expand")),
        "{:?}",
        document.errors
    );
}

#[test]
fn an_alias_deeper_than_the_depth_limit_is_refused() {
    let limits = Limits {
        max_depth: 4,
        ..Limits::default()
    };
    let source = "a: &deep [[[1]]]\nb: [[*deep]]\n";
    let document = yaml::parse(source, limits);
    assert!(
        document
            .errors
            .iter()
            .any(|e| e.message == "Maximum object depth exceeded"),
        "{:?}",
        document.errors
    );
}

#[test]
fn a_flow_sequence_closed_under_its_key_is_read() {
    let source = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    strategy:\n      matrix:\n        target: [\n          { \"os\": \"ubuntu-latest\", \"name\": \"Linux\" },\n          { \"os\": \"macos-latest\", \"name\": \"macOS\" },\n        ]\n    steps:\n      - run: echo\n";
    assert_eq!(errors_of(source), Vec::<String>::new());
    let document = yaml::parse("k: [\n  \"a\"\n]\n", Limits::default());
    let root = document.root.expect("parsed");
    let NodeKind::Sequence(items) = &root.get("k").expect("k").kind else {
        panic!("k is a sequence")
    };
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].as_str(), Some("a"));
}
