//! action.yml of each `runs` kind.

use kiln_workflow::model::{Runs, StepAction};
use kiln_workflow::parse_action;

#[test]
fn composite_action() {
    let content = r#"name: Setup
description: Sets things up
inputs:
  version:
    description: Which version
    required: true
    default: ${{ github.ref }}
outputs:
  path:
    description: Where
    value: ${{ steps.install.outputs.path }}
runs:
  using: composite
  steps:
    - id: install
      run: ./install.sh ${{ inputs.version }}
      shell: bash
    - uses: actions/cache@v4
      with:
        path: ~/.cache
"#;
    let result = parse_action("action.yml", content);
    assert!(!result.has_errors(), "{:?}", result.diagnostics);
    let action = result.value.expect("action");
    assert_eq!(action.inputs[0].name.value, "version");
    assert!(action.inputs[0].required);
    assert!(action.outputs[0]
        .value
        .as_ref()
        .is_some_and(|v| v.has_expressions()));
    let Runs::Composite { steps } = &action.runs else {
        panic!("composite")
    };
    assert_eq!(steps[0].effective_id, "install");
    assert_eq!(steps[1].effective_id, "__actions_cache");
    assert!(matches!(steps[0].action, StepAction::Run { .. }));
}

#[test]
fn composite_steps_may_not_use_secrets() {
    let content = "name: x\ndescription: y\nruns:\n  using: composite\n  steps:\n    - run: echo ${{ secrets.token }}\n      shell: bash\n";
    let result = parse_action("action.yml", content);
    let error = result.errors().next().expect("an error");
    assert_eq!((error.line, error.col), (6, 12));
    assert!(
        error
            .message
            .starts_with("Unrecognized named-value: 'secrets'"),
        "{}",
        error.message
    );
}

#[test]
fn docker_action() {
    let content = "name: d\ndescription: d\nruns:\n  using: docker\n  image: Dockerfile\n  entrypoint: /entry.sh\n  args:\n    - ${{ inputs.who }}\n  env:\n    WHO: ${{ inputs.who }}\n  post-entrypoint: /cleanup.sh\n  post-if: always()\n";
    let result = parse_action("action.yml", content);
    assert!(!result.has_errors(), "{:?}", result.diagnostics);
    let Some(Runs::Docker(docker)) = result.value.map(|a| a.runs) else {
        panic!("docker")
    };
    assert_eq!(docker.image.value, "Dockerfile");
    assert_eq!(docker.args.len(), 1);
    assert_eq!(docker.env.pairs().next().expect("env").0.value, "WHO");
    assert_eq!(docker.post_if.as_deref(), Some("always()"));
}

#[test]
fn node_actions() {
    for version in ["node12", "node16", "node20", "node24"] {
        let content = format!(
            "name: n\ndescription: n\nruns:\n  using: {version}\n  main: dist/index.js\n  post: dist/post.js\n  post-if: success()\nbranding:\n  icon: box\n  color: blue\n"
        );
        let result = parse_action("action.yml", &content);
        assert!(!result.has_errors(), "{version}: {:?}", result.diagnostics);
        let action = result.value.expect("action");
        let Runs::Node(node) = &action.runs else {
            panic!("node")
        };
        assert_eq!(node.using.value, version);
        assert_eq!(node.main.value, "dist/index.js");
        assert_eq!(
            node.post.as_ref().map(|p| p.value.as_str()),
            Some("dist/post.js")
        );
        assert_eq!(
            action.branding.as_ref().and_then(|b| b.icon.as_deref()),
            Some("box")
        );
    }
}

#[test]
fn missing_and_unknown_runs() {
    let missing = parse_action("action.yml", "name: n\ndescription: n\n");
    assert_eq!(
        missing.errors().next().map(|d| d.message.as_str()),
        Some("Required property is missing: runs")
    );
    let unknown = parse_action(
        "action.yml",
        "name: n\nruns:\n  using: node8\n  main: a.js\n",
    );
    let error = unknown.errors().next().expect("an error");
    assert_eq!(
        (error.line, error.message.as_str()),
        (3, "Unexpected value 'node8'")
    );
    let no_main = parse_action("action.yml", "name: n\nruns:\n  using: node20\n");
    assert_eq!(
        no_main.errors().next().map(|d| d.message.as_str()),
        Some("Required property is missing: main")
    );
}
