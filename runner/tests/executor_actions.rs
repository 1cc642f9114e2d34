//! Actions through the host backend: composite nesting, node pre/post, checkout, artifacts,
//! remote actions from the cache, and the offline error.

mod executor_support;

use executor_support::Setup;
use kiln_workflow::Conclusion;

const COMPOSITE_OUTER: &str = r#"
name: outer
inputs:
  who:
    default: world
outputs:
  greeting:
    value: ${{ steps.inner.outputs.said }}
runs:
  using: composite
  steps:
    - id: inner
      uses: ./actions/inner
      with:
        text: hello ${{ inputs.who }}
    - if: failure()
      shell: bash
      run: echo outer-saw-failure
"#;

const COMPOSITE_INNER: &str = r#"
name: inner
inputs:
  text:
    required: true
outputs:
  said:
    value: ${{ steps.say.outputs.said }}
runs:
  using: composite
  steps:
    - id: say
      shell: bash
      run: |
        echo "inner says ${{ inputs.text }} from $(basename ${{ github.action_path }})"
        echo "said=${{ inputs.text }}" >> "$GITHUB_OUTPUT"
"#;

#[tokio::test]
async fn nested_composite_actions_pass_inputs_and_outputs() {
    let setup = Setup::new();
    setup.write("actions/outer/action.yml", COMPOSITE_OUTER);
    setup.write("actions/inner/action.yml", COMPOSITE_INNER);
    let yaml = r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - uses: actions/checkout@v4
      - id: outer
        uses: ./actions/outer
        with:
          who: kiln
      - run: echo "result=${{ steps.outer.outputs.greeting }}"
"#;
    init_git(&setup);
    let ran = setup.run(yaml, "j").await;
    let log = ran.log_text();
    assert_eq!(ran.result.conclusion, Conclusion::Success, "{log}");
    assert!(log.contains("inner says hello kiln from inner"), "{log}");
    assert!(log.contains("result=hello kiln"), "{log}");
    assert!(!log.contains("outer-saw-failure"), "{log}");
}

fn init_git(setup: &Setup) {
    let git = |args: &[&str]| {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(&setup.repo)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@e")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@e")
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "init"]);
}

#[tokio::test]
async fn checkout_honours_path_and_artifacts_round_trip() {
    let setup = Setup::new();
    setup.write("src/a.txt", "alpha");
    setup.write("README.md", "readme");
    init_git(&setup);
    let yaml = r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - uses: actions/checkout@v4
        with:
          path: sub
      - run: |
          test -f sub/src/a.txt && test -d sub/.git
          mkdir -p out/1 out/2
          echo one > out/1/f.txt
          echo two > out/2/g.txt
      - uses: actions/upload-artifact@v4
        with:
          name: shard-1
          path: out/1
      - uses: actions/upload-artifact@v4
        with:
          name: shard-2
          path: out/2/*.txt
      - id: none
        continue-on-error: true
        uses: actions/upload-artifact@v4
        with:
          name: empty
          path: nothing/*
          if-no-files-found: error
      - uses: actions/download-artifact@v4
        with:
          pattern: shard-*
          merge-multiple: true
          path: merged
      - uses: actions/download-artifact@v4
        with:
          path: separate
      - run: |
          cat merged/f.txt merged/g.txt
          ls separate | tr '\n' ' '
"#;
    let ran = setup.run(yaml, "j").await;
    let log = ran.log_text();
    assert_eq!(ran.result.conclusion, Conclusion::Success, "{log}");
    assert!(log.contains("one") && log.contains("two"), "{log}");
    assert!(log.contains("shard-1 shard-2"), "{log}");
    assert_eq!(ran.step("none").0, "failure");
    assert!(setup
        .run_dir()
        .join("run/artifacts/shard-1/f.txt")
        .is_file());
}

const NODE_ACTION: &str = r#"
name: node
inputs:
  greeting:
    default: hi
runs:
  using: node20
  pre: pre.js
  main: main.js
  post: post.js
"#;

#[tokio::test]
async fn local_node_action_skips_pre_with_a_warning_and_runs_main_and_post() {
    let has_node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok();
    if !has_node {
        assert!(
            std::env::var("KILN_REQUIRE_NODE").as_deref() != Ok("1"),
            "KILN_REQUIRE_NODE=1 but node is not on PATH"
        );
        eprintln!("SKIPPED: node is not on PATH, local_node_action_skips_pre_with_a_warning_and_runs_main_and_post did not run (set KILN_REQUIRE_NODE=1 to make this a failure)");
        return;
    }
    let setup = Setup::new();
    setup.write("act/action.yml", NODE_ACTION);
    setup.write("act/pre.js", "const fs=require('fs');console.log('pre', process.env.INPUT_GREETING);fs.appendFileSync(process.env.GITHUB_STATE,'phase=from-pre\\n');");
    setup.write("act/main.js", "const fs=require('fs');console.log('main', process.env.INPUT_GREETING, process.env.STATE_phase);fs.appendFileSync(process.env.GITHUB_OUTPUT,'out=42\\n');fs.appendFileSync(process.env.GITHUB_STATE,'done=yes\\n');");
    setup.write(
        "act/post.js",
        "console.log('post', process.env.STATE_phase, process.env.STATE_done);",
    );
    init_git(&setup);
    let yaml = r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - uses: actions/checkout@v4
      - id: n
        uses: ./act
        with:
          greeting: hello
      - run: echo "out=${{ steps.n.outputs.out }}"
"#;
    let ran = setup.run(yaml, "j").await;
    let log = ran.logs();
    let position = |needle: &str| {
        log.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} missing from {log:?}"))
    };
    // GitHub cannot run a local action's `pre` (the repository is not checked out when the
    // job starts): it warns and runs `main` and `post` only.
    assert!(
        position("`pre` execution is not supported for local action from './act'")
            < position("main hello undefined")
    );
    assert!(!log.iter().any(|l| l.contains("pre hello")), "{log:?}");
    assert!(position("out=42") < position("post undefined yes"));
    assert_eq!(
        ran.result.steps.last().map(|s| s.name.as_str()),
        Some("Post Run ./act")
    );
}

#[tokio::test]
async fn remote_actions_come_from_the_cache_or_fail_clearly_offline() {
    let mut setup = Setup::new();
    let cache = setup.run_dir().join("cache");
    let action_dir = cache.join("octo/greet@v1");
    std::fs::create_dir_all(&action_dir).unwrap();
    std::fs::write(
        action_dir.join("action.yml"),
        "name: greet\nruns:\n  using: composite\n  steps:\n    - shell: sh\n      run: echo greeted-from-cache\n",
    )
    .unwrap();
    setup.action_cache = Some(cache);
    let cached = "on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - uses: octo/greet@v1\n";
    let ran = setup.run(cached, "j").await;
    assert!(
        ran.log_text().contains("greeted-from-cache"),
        "{}",
        ran.log_text()
    );
    assert_eq!(ran.result.conclusion, Conclusion::Success);

    // Every action is fetched at set-up, as on GitHub: one missing fails the job before the
    // available one's step runs.
    let yaml = "on: push\njobs:\n  j:\n    runs-on: x\n    steps:\n      - uses: octo/greet@v1\n      - id: missing\n        uses: octo/absent@v2\n";
    let ran = setup.run(yaml, "j").await;
    let log = ran.log_text();
    assert!(!log.contains("greeted-from-cache"), "{log}");
    assert_eq!(ran.result.conclusion, Conclusion::Failure);
    assert!(ran.result.steps.is_empty(), "{:?}", ran.result.steps);
    assert!(
        log.contains("the action `octo/absent@v2` is not available offline"),
        "{log}"
    );
    assert!(
        log.contains("--local-repository octo/absent@v2=PATH"),
        "{log}"
    );
}

/// `kiln run -C dir` on a directory inside a larger repository (as the examples are): checkout
/// writes that directory's files at the commit, executable bits kept, without the rest of the
/// repository, and touches neither the repository's index nor its work tree.
#[tokio::test]
async fn checkout_of_a_directory_inside_a_repository_gives_its_files_at_the_commit() {
    let mut setup = Setup::new();
    setup.write("outer.txt", "outside the directory");
    setup.write("nested/src/a.txt", "committed");
    setup.write("nested/tool.sh", "#!/bin/sh\necho tool ran\n");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(
        setup.repo.join("nested/tool.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    init_git(&setup);
    setup.write("nested/src/a.txt", "changed after the commit");
    setup.write("nested/untracked.txt", "never committed");
    let outer = setup.repo.clone();
    setup.repo = outer.join("nested");
    let yaml = r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - id: co
        uses: actions/checkout@v4
      - run: |
          test "$(cat src/a.txt)" = committed
          test ! -e outer.txt && test ! -e nested && test ! -e untracked.txt
          ./tool.sh
          echo "commit ${{ steps.co.outputs.commit }}"
"#;
    let ran = setup.run(yaml, "j").await;
    let log = ran.log_text();
    assert_eq!(ran.result.conclusion, Conclusion::Success, "{log}");
    assert!(log.contains("tool ran"), "{log}");
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(&outer)
        .output()
        .expect("git runs");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    assert!(log.contains(&format!("commit {head}")), "{log}");
    let status = std::process::Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(&outer)
        .output()
        .expect("git runs");
    assert_eq!(
        String::from_utf8_lossy(&status.stdout),
        " M nested/src/a.txt\n?? nested/untracked.txt\n"
    );
}
