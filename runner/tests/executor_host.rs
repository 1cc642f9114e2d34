//! Real jobs through the host backend: shells, env, file commands, outputs, conditions,
//! masking, timeouts.

mod executor_support;

use executor_support::Setup;
use kiln_workflow::Conclusion;

#[tokio::test]
async fn default_shell_has_no_pipefail_but_explicit_bash_does() {
    let setup = Setup::new();
    let yaml = r#"
on: push
jobs:
  j:
    runs-on: ubuntu-latest
    steps:
      - id: default
        run: false | true
      - id: bash
        continue-on-error: true
        shell: bash
        run: false | true
      - id: custom
        shell: bash -c "echo custom:$0" {0}
        run: echo unused
"#;
    let ran = setup.run(yaml, "j").await;
    assert_eq!(ran.step("default"), ("success".into(), "success".into()));
    assert_eq!(ran.step("bash"), ("failure".into(), "success".into()));
    assert!(ran.log_text().contains("custom:"), "{}", ran.log_text());
    assert_eq!(ran.result.conclusion, Conclusion::Success);
}

#[tokio::test]
async fn invalid_custom_shell_fails_with_githubs_message() {
    let setup = Setup::new();
    let yaml = "on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - id: s\n        shell: perl -w\n        run: print 1\n";
    let ran = setup.run(yaml, "j").await;
    assert_eq!(ran.result.conclusion, Conclusion::Failure);
    assert!(ran
        .log_text()
        .contains(kiln_runner::executor::INVALID_SHELL));
}

#[tokio::test]
async fn env_precedence_and_env_files() {
    let setup = Setup::new();
    let yaml = r#"
on: push
env:
  A: workflow
  B: workflow
  C: workflow
jobs:
  j:
    runs-on: x
    env:
      B: job
      C: job
    steps:
      - run: |
          echo "C=from-env-file" >> "$GITHUB_ENV"
          echo "D=from-env-file" >> "$GITHUB_ENV"
          printf 'MULTI<<EOF\nline1\nline2\nEOF\n' >> "$GITHUB_ENV"
          echo "NODE_OPTIONS=--require x" >> "$GITHUB_ENV"
          echo "GITHUB_SHA=spoofed" >> "$GITHUB_ENV"
          mkdir -p "$RUNNER_TEMP/bin" && echo "$RUNNER_TEMP/bin" >> "$GITHUB_PATH"
      - env:
          D: step
        run: |
          echo "values:$A,$B,$C,$D,${{ env.C }}"
          echo "multi:$(echo "$MULTI" | tr '\n' '+')"
          echo "node:${NODE_OPTIONS:-unset} sha:$GITHUB_SHA ci:$CI actions:$GITHUB_ACTIONS"
          echo "path-first:${PATH%%:*}" | sed "s#$RUNNER_TEMP#TEMP#"
      - id: broken
        continue-on-error: true
        run: printf 'X<<EOF\nno end\n' >> "$GITHUB_ENV"
"#;
    let ran = setup.run(yaml, "j").await;
    let log = ran.log_text();
    assert!(
        log.contains("values:workflow,job,from-env-file,step,from-env-file"),
        "{log}"
    );
    assert!(log.contains("multi:line1+line2+"), "{log}");
    assert!(
        log.contains("node:unset sha: ci:true actions:true"),
        "{log}"
    );
    assert!(log.contains("path-first:TEMP/bin"), "{log}");
    assert!(log.contains("Can't store NODE_OPTIONS"), "{log}");
    assert!(log.contains("Matching delimiter not found 'EOF'"), "{log}");
    assert_eq!(ran.step("broken"), ("failure".into(), "success".into()));
}

#[tokio::test]
async fn outputs_conditions_and_job_outputs() {
    let setup = Setup::new();
    let yaml = r#"
on: push
jobs:
  j:
    runs-on: x
    outputs:
      value: ${{ steps.make.outputs.value }}
      legacy: ${{ steps.make.outputs.legacy }}
    steps:
      - id: make
        run: |
          echo "value=hello" >> "$GITHUB_OUTPUT"
          echo "::set-output name=legacy::old"
      - id: fails
        run: exit 3
      - id: skipped
        run: echo never
      - id: always
        if: always()
        run: echo "outcome=${{ steps.fails.outcome }} skipped=${{ steps.skipped.conclusion }}"
      - id: on-failure
        if: failure()
        run: echo ran-on-failure
"#;
    let ran = setup.run(yaml, "j").await;
    let log = ran.log_text();
    assert_eq!(ran.result.conclusion, Conclusion::Failure);
    assert_eq!(ran.step("fails"), ("failure".into(), "failure".into()));
    assert_eq!(ran.step("skipped"), ("skipped".into(), "skipped".into()));
    assert!(log.contains("outcome=failure skipped=skipped"), "{log}");
    assert!(log.contains("ran-on-failure"), "{log}");
    assert!(log.contains("Process completed with exit code 3."), "{log}");
    assert!(log.contains("set-output` command is deprecated"), "{log}");
    assert_eq!(ran.result.outputs["value"], "hello");
    assert_eq!(ran.result.outputs["legacy"], "old");
}

#[tokio::test]
async fn condition_errors_fail_the_step() {
    let setup = Setup::new();
    let yaml = "on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - id: bad\n        if: fromJSON('not json')\n        run: echo never\n";
    let ran = setup.run(yaml, "j").await;
    assert_eq!(ran.step("bad"), ("failure".into(), "failure".into()));
    assert!(!ran.log_text().contains("never"));
}

#[tokio::test]
async fn secrets_and_masks_never_reach_logs_or_outputs() {
    let mut setup = Setup::new();
    setup.secrets.push(("TOKEN".into(), "s3cr3t-value".into()));
    setup
        .secrets
        .push(("KEY".into(), "first-line\nsecond-line".into()));
    let yaml = r#"
on: push
jobs:
  j:
    runs-on: x
    outputs:
      leaked: ${{ steps.s.outputs.leak }}
      fine: ${{ steps.s.outputs.fine }}
    steps:
      - id: s
        run: |
          echo "token=${{ secrets.TOKEN }} inside"
          echo "::add-mask::dynamic-value"
          echo "later dynamic-value here"
          echo "second-line alone"
          echo "aws AKIAIOSFODNN7EXAMPLE"
          echo "-----BEGIN RSA PRIVATE KEY-----"
          echo "MIIEowIBAAKCAQEA"
          echo "-----END RSA PRIVATE KEY-----"
          echo "leak=x${{ secrets.TOKEN }}" >> "$GITHUB_OUTPUT"
          echo "fine=ok" >> "$GITHUB_OUTPUT"
          echo "summary ${{ secrets.TOKEN }}" >> "$GITHUB_STEP_SUMMARY"
"#;
    let ran = setup.run(yaml, "j").await;
    let log = ran.log_text();
    for secret in [
        "s3cr3t-value",
        "dynamic-value",
        "second-line",
        "AKIAIOSFODNN7EXAMPLE",
        "MIIEowIBAAKCAQEA",
    ] {
        assert!(!log.contains(secret), "{secret} leaked: {log}");
    }
    assert!(log.contains("token=*** inside"), "{log}");
    assert_eq!(ran.result.outputs["leaked"], "");
    assert_eq!(ran.result.outputs["fine"], "ok");
    assert!(log.contains("Skip output 'leaked'"), "{log}");
    assert_eq!(ran.result.summaries, ["summary ***\n"]);
}

#[tokio::test]
async fn step_timeout_fails_with_githubs_message_and_job_timeout_fails_the_job() {
    let setup = Setup::new();
    let yaml = r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - id: slow
        timeout-minutes: 0.005
        continue-on-error: true
        run: sleep 5
      - id: next
        run: echo next
"#;
    let ran = setup.run(yaml, "j").await;
    assert_eq!(ran.step("slow"), ("failure".into(), "success".into()));
    assert!(
        ran.log_text().contains("has timed out after 0.005 minutes"),
        "{}",
        ran.log_text()
    );
    assert_eq!(ran.result.conclusion, Conclusion::Success);

    let mut setup = Setup::new();
    setup.timeout = std::time::Duration::from_millis(300);
    let yaml = "on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - id: a\n        run: sleep 5\n      - id: b\n        run: echo skipped\n      - id: c\n        if: always()\n        run: echo cleanup-ran\n";
    let ran = setup.run(yaml, "j").await;
    assert_eq!(ran.result.conclusion, Conclusion::Failure);
    assert_eq!(ran.step("a").0, "cancelled");
    assert_eq!(ran.step("b").0, "skipped");
    assert!(ran.log_text().contains("cleanup-ran"), "{}", ran.log_text());
}

#[tokio::test]
async fn cancellation_runs_only_always_steps() {
    let setup = Setup::new();
    let yaml = "on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - id: a\n        run: sleep 5\n      - id: b\n        if: cancelled()\n        run: echo saw-cancel\n";
    let cancel = tokio_util::sync::CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        trigger.cancel();
    });
    let ran = setup
        .run_on(
            std::sync::Arc::new(kiln_runner::backend::HostBackend::new()),
            yaml,
            "j",
            cancel,
        )
        .await;
    assert_eq!(ran.result.conclusion, Conclusion::Cancelled);
    assert!(ran.log_text().contains("saw-cancel"), "{}", ran.log_text());
}

#[tokio::test]
async fn hash_files_reads_the_job_workspace() {
    let setup = Setup::new();
    let yaml = r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - run: printf A > a.txt
      - run: |
          echo "hash=${{ hashFiles('a.txt') }}"
          echo "none=${{ hashFiles('nomatch*') }}."
      - id: outside
        continue-on-error: true
        run: echo "${{ hashFiles('../x') }}"
"#;
    let ran = setup.run(yaml, "j").await;
    let log = ran.log_text();
    assert!(
        log.contains("hash=1cd6ef71e6e0ff46ad2609d403dc3fee244417089aa4461245a4e4fe23a55e42"),
        "{log}"
    );
    assert!(log.contains("none=."), "{log}");
    assert_eq!(ran.step("outside"), ("failure".into(), "success".into()));
    assert!(log.contains("Fail to hash files under directory"), "{log}");
}

#[tokio::test]
async fn job_env_sees_the_job_workspace_as_its_steps_do() {
    let setup = Setup::new();
    let yaml = r#"
on: push
env:
  WF_DIR: ${{ github.workspace }}/wf
jobs:
  j:
    runs-on: x
    env:
      BUILD_DIR: ${{ github.workspace }}/build
      ${{ github.job }}_KEY: from-a-computed-key
      ${{ insert }}: '${{ fromJSON(''{"INSERTED": "yes"}'') }}'
    steps:
      - env:
          STEP_DIR: ${{ github.workspace }}/build
        run: |
          test "$BUILD_DIR" = "$STEP_DIR"
          test "$BUILD_DIR" = "$GITHUB_WORKSPACE/build"
          test "$WF_DIR" = "$GITHUB_WORKSPACE/wf"
          echo "keys $j_KEY $INSERTED"
"#;
    let ran = setup.run(yaml, "j").await;
    assert_eq!(
        ran.result.conclusion,
        Conclusion::Success,
        "{}",
        ran.log_text()
    );
    assert!(
        ran.log_text().contains("keys from-a-computed-key yes"),
        "{}",
        ran.log_text()
    );
}

#[tokio::test]
async fn a_job_env_that_fails_to_evaluate_fails_the_job_at_set_up() {
    let setup = Setup::new();
    let yaml = "on: push\njobs:\n  j:\n    runs-on: x\n    env:\n      A: ${{ fromJSON('not json') }}\n    steps:\n      - run: echo SHOULD-NOT-RUN\n";
    let ran = setup.run(yaml, "j").await;
    assert_eq!(ran.result.conclusion, Conclusion::Failure);
    let error = ran.result.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("Error evaluating 'jobs.j.env.A'"),
        "{error}"
    );
    assert!(!ran.log_text().contains("SHOULD-NOT-RUN"));
}
