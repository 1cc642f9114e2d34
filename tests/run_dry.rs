//! `kiln run` on shapes real workflows have: reusable workflows from other repositories
//! (provided with `--local-repository`, or a clear error naming it), matrices computed from
//! other jobs' outputs in a dry run, and `workflow_call`-only files run directly.

mod run_support;

use run_support::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

const REMOTE_CALLER: &str = "on: push
jobs:
  prepare:
    runs-on: ubuntu-latest
    steps:
      - run: echo prepared
  shared:
    needs: prepare
    uses: octo/shared/.github/workflows/build.yml@v2
    with:
      flavour: spicy
  report:
    needs: shared
    runs-on: ubuntu-latest
    steps:
      - run: |
          echo \"digest from the call: ${{ needs.shared.outputs.digest }}\"
";

const REMOTE_CALLEE: &str = "on:
  workflow_call:
    inputs:
      flavour:
        type: string
        required: true
    outputs:
      digest:
        value: ${{ jobs.inner.outputs.digest }}
jobs:
  inner:
    runs-on: ubuntu-latest
    outputs:
      digest: ${{ steps.d.outputs.digest }}
    steps:
      - id: d
        run: |
          echo \"building the ${{ inputs.flavour }} flavour\"
          echo \"digest=d-${{ inputs.flavour }}-42\" >> \"$GITHUB_OUTPUT\"
";

#[test]
fn a_remote_reusable_workflow_kiln_does_not_have_is_an_error_naming_the_fix() {
    let repo = repo_with_workflow(REMOTE_CALLER);
    for dry in [true, false] {
        let mut args = vec!["--executor", "host"];
        if dry {
            args.push("-n");
        }
        let out = kiln_run(repo.path(), &args, LIMIT);
        assert_ne!(out.status, 0, "{}", out.all_output());
        let text = out.all_output();
        assert!(
            text.contains("job `shared` uses `octo/shared/.github/workflows/build.yml@v2`"),
            "{text}"
        );
        assert!(
            text.contains("--local-repository octo/shared@v2=DIR"),
            "{text}"
        );
        // Nothing runs: the error comes before the first job, not after half the graph.
        assert!(!text.contains("prepared"), "{text}");
    }
}

#[test]
fn local_repository_provides_a_remote_reusable_workflow_end_to_end() {
    let repo = repo_with_workflow(REMOTE_CALLER);
    let shared = tempfile::tempdir().expect("temp dir");
    let workflows = shared.path().join(".github/workflows");
    std::fs::create_dir_all(&workflows).expect("mkdir");
    std::fs::write(workflows.join("build.yml"), REMOTE_CALLEE).expect("write callee");
    let mapping = format!("octo/shared@v2={}", shared.path().display());
    let out = kiln_run(
        repo.path(),
        &["--executor", "host", "--local-repository", &mapping],
        LIMIT,
    );
    out.assert_success();
    assert!(
        out.stdout.contains("building the spicy flavour"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("digest from the call: d-spicy-42"),
        "{}",
        out.stdout
    );
    assert_eq!(out.job("shared / inner")["conclusion"], "success");
}

const DYNAMIC_MATRIX: &str = "on: push
jobs:
  discover:
    runs-on: ubuntu-latest
    outputs:
      targets: ${{ steps.list.outputs.targets }}
    steps:
      - id: list
        run: echo 'targets=[\"alpha\",\"beta\"]' >> \"$GITHUB_OUTPUT\"
  build:
    needs: discover
    runs-on: ubuntu-latest
    strategy:
      matrix:
        target: ${{ fromJSON(needs.discover.outputs.targets) }}
    steps:
      - run: echo \"building ${{ matrix.target }}\"
  publish:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - run: echo publishing
";

#[test]
fn a_dry_run_shows_a_matrix_from_needs_outputs_as_deferred() {
    let repo = repo_with_workflow(DYNAMIC_MATRIX);
    let out = kiln_run(repo.path(), &["--executor", "host", "-n"], LIMIT);
    out.assert_success();
    assert!(
        out.stdout.contains(
            "deferred: the matrix is computed from the outputs of needed jobs (`${{ fromJSON(needs.discover.outputs.targets) }}`)"
        ),
        "{}",
        out.stdout
    );
    assert!(
        !out.all_output().contains("fromJson"),
        "{}",
        out.all_output()
    );
    assert_eq!(out.job("build")["conclusion"], "success");
    assert_eq!(out.job("publish")["conclusion"], "success");
}

#[test]
fn a_real_run_expands_the_same_matrix_from_the_outputs() {
    let repo = repo_with_workflow(DYNAMIC_MATRIX);
    let out = kiln_run(repo.path(), &["--executor", "host"], LIMIT);
    out.assert_success();
    assert!(out.stdout.contains("building alpha"), "{}", out.stdout);
    assert!(out.stdout.contains("building beta"), "{}", out.stdout);
    assert!(!out.stdout.contains("deferred"), "{}", out.stdout);
}

const CALLABLE: &str = "on:
  workflow_call:
    inputs:
      artifact:
        type: string
        required: true
      count:
        type: number
        default: 2
      strict:
        type: boolean
        default: false
      label:
        type: string
jobs:
  show:
    runs-on: ubuntu-latest
    steps:
      - run: |
          echo 'artifact=${{ inputs.artifact }} count=${{ toJSON(inputs.count) }}'
          echo 'strict=${{ toJSON(inputs.strict) }} label=${{ toJSON(inputs.label) }}'
";

#[test]
fn a_workflow_call_file_run_directly_demands_its_required_inputs() {
    let repo = repo_with_workflow(CALLABLE);
    let missing = kiln_run(
        repo.path(),
        &["workflow_call", "--executor", "host", "-n"],
        LIMIT,
    );
    assert_ne!(missing.status, 0);
    assert!(
        missing
            .stderr
            .contains("required input `artifact` of .github/workflows/test.yml has no value: pass `--input artifact=VALUE`"),
        "{}",
        missing.all_output()
    );
}

const CALLABLE_WITH_SECRET: &str = "on:
  workflow_call:
    secrets:
      deploy-key:
        required: true
jobs:
  show:
    runs-on: ubuntu-latest
    steps:
      - run: test -n '${{ secrets.deploy-key }}' && echo key given
";

#[test]
fn a_workflow_call_file_run_directly_demands_its_required_secrets() {
    let repo = repo_with_workflow(CALLABLE_WITH_SECRET);
    let missing = kiln_run(repo.path(), &["workflow_call", "--executor", "host"], LIMIT);
    assert_ne!(missing.status, 0);
    assert!(
        missing.stderr.contains(
            "secret `deploy-key` of .github/workflows/test.yml is required, but not provided: pass `-s deploy-key=VALUE`"
        ),
        "{}",
        missing.all_output()
    );
    let given = kiln_run(
        repo.path(),
        &[
            "workflow_call",
            "--executor",
            "host",
            "-s",
            "deploy-key=s3cr3t-value",
        ],
        LIMIT,
    );
    assert_eq!(given.status, 0, "{}", given.all_output());
    assert!(given.stdout.contains("key given"), "{}", given.all_output());
}

#[test]
fn a_workflow_call_file_run_directly_checks_input_types() {
    let repo = repo_with_workflow(CALLABLE);
    for (given, expected) in [
        ("count=many", "takes a number"),
        ("strict=yes", "takes `true` or `false`"),
    ] {
        let out = kiln_run(
            repo.path(),
            &[
                "workflow_call",
                "--executor",
                "host",
                "--input",
                "artifact=app",
                "--input",
                given,
            ],
            LIMIT,
        );
        assert_ne!(out.status, 0, "{given}: {}", out.all_output());
        assert!(out.stderr.contains(expected), "{given}: {}", out.stderr);
    }
}

#[test]
fn a_workflow_call_file_run_directly_gets_typed_inputs_and_defaults() {
    let repo = repo_with_workflow(CALLABLE);
    let out = kiln_run(
        repo.path(),
        &[
            "workflow_call",
            "--executor",
            "host",
            "--input",
            "artifact=app",
            "--input",
            "strict=TRUE",
        ],
        LIMIT,
    );
    out.assert_success();
    assert!(
        out.stdout.contains("artifact=app count=2\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("strict=true label=\"\""),
        "{}",
        out.stdout
    );
}
