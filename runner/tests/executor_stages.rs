//! The pre and post stages of actions as GitHub's runner sequences them: every remote
//! action's `pre` runs at job start in step order behind its `pre-if`, post stages run at the
//! end in reverse order of registration (when the pre or the main stage ran), and state saved
//! by one stage reaches the later ones as `STATE_*`.

mod executor_support;

use executor_support::Setup;

const RECORDER: &str = r#"
name: recorder
inputs:
  tag:
    required: true
  log:
    required: true
runs:
  using: node20
  pre: pre.js
  main: main.js
  post: post.js
"#;

const GATED: &str = r#"
name: gated
inputs:
  tag:
    required: true
  log:
    required: true
runs:
  using: node20
  pre: pre.js
  pre-if: github.event_name == 'not-this-event'
  main: main.js
  post: post.js
  post-if: success()
"#;

const PRE_JS: &str = "const fs=require('fs');fs.appendFileSync(process.env.INPUT_LOG,'pre:'+process.env.INPUT_TAG+'\\n');fs.appendFileSync(process.env.GITHUB_STATE,'from_pre='+process.env.INPUT_TAG+'-pre\\n');";
const MAIN_JS: &str = "const fs=require('fs');fs.appendFileSync(process.env.INPUT_LOG,'main:'+process.env.INPUT_TAG+':'+(process.env.STATE_from_pre||'-')+'\\n');fs.appendFileSync(process.env.GITHUB_STATE,'from_main='+process.env.INPUT_TAG+'-main\\n');";
const POST_JS: &str = "const fs=require('fs');fs.appendFileSync(process.env.INPUT_LOG,'post:'+process.env.INPUT_TAG+':'+(process.env.STATE_from_pre||'-')+':'+(process.env.STATE_from_main||'-')+'\\n');";

fn node_available() -> bool {
    let found = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok();
    if !found {
        assert!(
            std::env::var("KILN_REQUIRE_NODE").as_deref() != Ok("1"),
            "KILN_REQUIRE_NODE=1 but node is not on PATH"
        );
        eprintln!("SKIPPED: node is not on PATH (set KILN_REQUIRE_NODE=1 to make this a failure)");
    }
    found
}

fn write_action(setup: &Setup, cache_dir: &str, manifest: &str) {
    setup.write(&format!("cache/{cache_dir}/action.yml"), manifest);
    setup.write(&format!("cache/{cache_dir}/pre.js"), PRE_JS);
    setup.write(&format!("cache/{cache_dir}/main.js"), MAIN_JS);
    setup.write(&format!("cache/{cache_dir}/post.js"), POST_JS);
}

#[tokio::test]
async fn pre_stages_run_at_job_start_and_posts_in_reverse_registration_order() {
    if !node_available() {
        return;
    }
    let mut setup = Setup::new();
    write_action(&setup, "octo/recorder@v1", RECORDER);
    write_action(&setup, "octo/gated@v1", GATED);
    setup.action_cache = Some(setup.root.path().join("repo/cache"));
    let record = setup.root.path().join("record.txt");
    let yaml = format!(
        r#"
on: push
jobs:
  j:
    runs-on: x
    env:
      LOG: {log}
    steps:
      - run: echo run-1 >> "$LOG"
      - id: a
        uses: octo/recorder@v1
        with:
          tag: a
          log: ${{{{ env.LOG }}}}
      - run: echo run-2 >> "$LOG"
      - id: b
        if: false
        uses: octo/recorder@v1
        with:
          tag: b
          log: ${{{{ env.LOG }}}}
      - id: c
        uses: octo/gated@v1
        with:
          tag: c
          log: ${{{{ env.LOG }}}}
      - run: echo run-3 >> "$LOG"
"#,
        log = record.display()
    );
    let ran = setup.run(&yaml, "j").await;
    let recorded = std::fs::read_to_string(&record).unwrap_or_default();
    let lines: Vec<&str> = recorded.lines().collect();
    // b's main is skipped, yet its pre ran at job start and so its post is registered;
    // c's pre-if is false, so its post is registered by its main stage, last, and runs first.
    assert_eq!(
        lines,
        [
            "pre:a",
            "pre:b",
            "run-1",
            "main:a:a-pre",
            "run-2",
            "main:c:-",
            "run-3",
            "post:c:-:c-main",
            "post:b:b-pre:-",
            "post:a:a-pre:a-main",
        ],
        "{}",
        ran.log_text()
    );
    let names: Vec<&str> = ran.result.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names[..3],
        [
            "Pre Run octo/recorder@v1",
            "Pre Run octo/recorder@v1",
            "Pre Run octo/gated@v1"
        ]
    );
    assert_eq!(ran.result.steps[2].conclusion.to_string(), "skipped");
    assert_eq!(
        names[names.len() - 3..],
        [
            "Post Run octo/gated@v1",
            "Post Run octo/recorder@v1",
            "Post Run octo/recorder@v1"
        ]
    );
}

#[tokio::test]
async fn a_failing_pre_stage_fails_the_job_before_its_first_step() {
    if !node_available() {
        return;
    }
    let mut setup = Setup::new();
    setup.write("cache/octo/broken@v1/action.yml", RECORDER);
    setup.write("cache/octo/broken@v1/pre.js", "process.exit(3);");
    setup.write("cache/octo/broken@v1/main.js", MAIN_JS);
    setup.write("cache/octo/broken@v1/post.js", POST_JS);
    setup.action_cache = Some(setup.root.path().join("repo/cache"));
    let record = setup.root.path().join("record.txt");
    let yaml = format!(
        r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - run: echo first-step-ran >> {log}
      - id: broken
        uses: octo/broken@v1
        with:
          tag: x
          log: {log}
      - if: always()
        run: echo always-ran >> {log}
"#,
        log = record.display()
    );
    let ran = setup.run(&yaml, "j").await;
    let recorded = std::fs::read_to_string(&record).unwrap_or_default();
    assert_eq!(ran.result.conclusion.to_string(), "failure");
    // The pre stage ran and failed, so its post still runs (post-if defaults to always()).
    assert_eq!(
        recorded.lines().collect::<Vec<_>>(),
        ["always-ran", "post:x:-:-"],
        "{}",
        ran.log_text()
    );
}
