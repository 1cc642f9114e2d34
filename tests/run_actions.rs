//! `kiln run` end to end with actions: Docker actions (`docker://` and Dockerfile) on the
//! job's network, built once per run and cleaned up, and remote actions cloned with git from
//! `--action-base-url` (tags, branches, sub-paths, reuse, missing refs, offline mode).
//! The Docker tests print SKIPPED and pass without a daemon, unless KILN_REQUIRE_DOCKER=1.

mod run_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kiln_runner::actions::ACTION_IMAGE_LABEL;
use kiln_runner::backend::DockerBackend;
use kiln_runner::testing::{ensure_busybox_image, labelled_objects};
use run_support::*;

const LIMIT: Duration = Duration::from_secs(300);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn docker() -> Option<(DockerBackend, String)> {
    runtime().block_on(async {
        let docker = kiln_runner::testing::require_docker().await?;
        let image = ensure_busybox_image(&docker).await;
        Some((docker, image))
    })
}

/// Containers, networks and action images left by the kiln process `pid`.
fn leftovers(docker: &DockerBackend, pid: u32) -> Vec<String> {
    let marker = format!("-{pid}-");
    let mut left: Vec<String> = runtime()
        .block_on(labelled_objects(docker))
        .into_iter()
        .filter(|object| object.contains(&marker))
        .collect();
    let images = runtime()
        .block_on(
            docker.client().list_images(Some(
                bollard::query_parameters::ListImagesOptionsBuilder::new()
                    .filters(&std::collections::HashMap::from([(
                        "label",
                        vec![ACTION_IMAGE_LABEL],
                    )]))
                    .build(),
            )),
        )
        .expect("list images");
    let run_suffix = format!("-{pid}");
    for image in images {
        let run_dir = image
            .labels
            .get(ACTION_IMAGE_LABEL)
            .cloned()
            .unwrap_or_default();
        if run_dir.ends_with(&run_suffix) {
            left.push(format!("image {} of {run_dir}", image.id));
        }
    }
    left
}

fn run_docker(docker: &DockerBackend, dir: &Path, image: &str) -> Outcome {
    let platform = format!("ubuntu-latest={image}");
    let out = kiln_run(dir, &["--executor", "docker", "-P", &platform], LIMIT);
    let left = leftovers(docker, out.pid);
    assert!(
        left.is_empty(),
        "kiln left {left:?} behind\n{}",
        out.all_output()
    );
    out
}

#[test]
fn docker_steps_reach_the_job_services_by_name() {
    let Some((docker, image)) = docker() else {
        return;
    };
    let repo = repo_with_workflow(&format!(
        r#"
on: push
jobs:
  net:
    runs-on: ubuntu-latest
    services:
      web:
        image: {image}
    steps:
      - id: fetch
        uses: docker://{image}
        with:
          entrypoint: sh
          args: -c "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://web/index.html && break; sleep 0.3; done | sed 's/^/served=/'; echo page=$(wget -q -O - http://web/index.html) >> $GITHUB_OUTPUT"
      - run: echo "output=${{{{ steps.fetch.outputs.page }}}}"
"#
    ));
    let out = run_docker(&docker, repo.path(), &image);
    out.assert_success();
    assert!(
        out.stdout.contains("served=kiln busybox service"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("output=kiln busybox service"),
        "{}",
        out.stdout
    );
}

const DOCKERFILE_ACTION: &str = r#"
name: greeter
inputs:
  who:
    required: true
  count:
    default: "2"
outputs:
  greeting:
    description: what was said
runs:
  using: docker
  image: Dockerfile
  pre-entrypoint: /pre.sh
  post-entrypoint: /post.sh
  args:
    - hello ${{ inputs.who }}
    - ${{ inputs.count }}
  env:
    ACTION_ENV: from-action-${{ inputs.who }}
"#;

const DOCKERFILE: &str = r#"FROM kiln-test-busybox
COPY entrypoint.sh pre.sh post.sh /
RUN chmod +x /entrypoint.sh /pre.sh /post.sh
ENTRYPOINT ["/entrypoint.sh"]
"#;

const ENTRYPOINT: &str = r#"#!/bin/sh
echo "arg1=[$1] arg2=[$2] input=[$INPUT_WHO] count=[$INPUT_COUNT] env=[$ACTION_ENV] pwd=[$(pwd)]"
echo "marker=[$(cat /github/workspace/marker.txt)]"
echo "greeting=$1" >> "$GITHUB_OUTPUT"
echo "said=$1" >> "$GITHUB_STATE"
"#;

#[test]
fn dockerfile_actions_build_once_and_run_with_args_inputs_outputs_and_post() {
    let Some((docker, image)) = docker() else {
        return;
    };
    let repo = repo_with_workflow(
        r#"
on: push
jobs:
  first:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - id: greet
        uses: ./greeter
        with:
          who: ${{ github.event_name }}-world
      - run: echo "got=${{ steps.greet.outputs.greeting }}"
  second:
    needs: first
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: ./greeter
        with:
          who: again
          count: 7
"#,
    );
    repo.write("greeter/action.yml", DOCKERFILE_ACTION);
    repo.write("greeter/Dockerfile", DOCKERFILE);
    repo.write("greeter/entrypoint.sh", ENTRYPOINT);
    repo.write("greeter/pre.sh", "#!/bin/sh\necho pre-entrypoint-ran\n");
    repo.write(
        "greeter/post.sh",
        "#!/bin/sh\necho \"post-entrypoint arg1=[$1] state=[$STATE_said]\"\n",
    );
    repo.write("marker.txt", "in-the-workspace");
    repo.commit();
    let out = run_docker(&docker, repo.path(), &image);
    out.assert_success();
    let stdout = &out.stdout;
    assert!(
        stdout.contains("arg1=[hello push-world] arg2=[2] input=[push-world] count=[2] env=[from-action-push-world] pwd=[/github/workspace]"),
        "{stdout}"
    );
    assert!(stdout.contains("marker=[in-the-workspace]"), "{stdout}");
    assert!(stdout.contains("got=hello push-world"), "{stdout}");
    assert!(
        stdout.contains("arg1=[hello again] arg2=[7] input=[again] count=[7]"),
        "{stdout}"
    );
    // A local action's pre stage cannot run on GitHub either; its post stage does, with the
    // state its main stage saved.
    assert!(!stdout.contains("pre-entrypoint-ran"), "{stdout}");
    assert!(
        stdout.contains("`pre` execution is not supported for local action from './greeter'"),
        "{stdout}"
    );
    assert!(
        stdout.contains("post-entrypoint arg1=[hello push-world] state=[hello push-world]"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("Build container for action use").count(),
        1,
        "the image is built once per run: {stdout}"
    );
}

#[test]
fn a_remote_dockerfile_action_runs_its_pre_entrypoint_at_job_start() {
    let Some((docker, image)) = docker() else {
        return;
    };
    let repo = repo_with_workflow(
        r#"
on: push
jobs:
  j:
    runs-on: ubuntu-latest
    steps:
      - run: echo first-step
      - uses: octo/greeter@v1
        with:
          who: remote
      - run: echo last-step
"#,
    );
    let action = "actions/octo/greeter@v1";
    repo.write(&format!("{action}/action.yml"), DOCKERFILE_ACTION);
    repo.write(&format!("{action}/Dockerfile"), DOCKERFILE);
    repo.write(&format!("{action}/entrypoint.sh"), ENTRYPOINT);
    repo.write(
        &format!("{action}/pre.sh"),
        "#!/bin/sh\necho \"pre-entrypoint-ran arg1=[$1] input=[$INPUT_WHO]\"\necho said=pre >> \"$GITHUB_STATE\"\n",
    );
    repo.write(
        &format!("{action}/post.sh"),
        "#!/bin/sh\necho \"post-entrypoint state=[$STATE_said]\"\n",
    );
    repo.write("marker.txt", "in-the-workspace");
    repo.commit();
    let platform = format!("ubuntu-latest={image}");
    let out = kiln_run(
        repo.path(),
        &[
            "--executor",
            "docker",
            "-P",
            &platform,
            "--action-cache",
            "actions",
        ],
        LIMIT,
    );
    let left = leftovers(&docker, out.pid);
    assert!(left.is_empty(), "kiln left {left:?} behind");
    out.assert_success();
    let stdout = &out.stdout;
    let position = |needle: &str| {
        stdout
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} missing:\n{stdout}"))
    };
    assert!(
        position("▶ Pre Run octo/greeter@v1")
            < position("pre-entrypoint-ran arg1=[hello remote] input=[remote]")
    );
    assert!(position("pre-entrypoint-ran") < position("first-step"));
    assert!(position("first-step") < position("arg1=[hello remote] arg2=[2]"));
    assert!(position("last-step") < position("▶ Post Run octo/greeter@v1"));
    // The main stage saved `said` after the pre stage did: the later value wins.
    assert!(
        stdout.contains("post-entrypoint state=[hello remote]"),
        "{stdout}"
    );
}

/// A Go-style action: an image `FROM scratch` holding one static binary (busybox) and a
/// script, so it has neither `tail` nor a shell on PATH; only running the action's own
/// entrypoint as the container's process can work.
const SCRATCH_ACTION: &str = r#"
name: scratchy
inputs:
  secret:
    required: true
runs:
  using: docker
  image: Dockerfile
  args:
    - ${{ inputs.secret }}
"#;

const SCRATCH_DOCKERFILE: &str = r#"FROM kiln-test-busybox AS src
FROM scratch
COPY --from=src /bin/busybox /busybox
COPY entrypoint.sh /entrypoint.sh
ENTRYPOINT ["/busybox", "sh", "/entrypoint.sh"]
"#;

const SCRATCH_ENTRYPOINT: &str = r#"echo "first-line-of-the-action"
echo "::add-mask::$1"
echo "secret=[$1]"
echo "::warning title=scratchy::written from scratch"
echo "ws=[$GITHUB_WORKSPACE] home=[$HOME] pwd=[$PWD] marker=[$(/busybox cat marker.txt)]"
case "$GITHUB_OUTPUT" in /github/file_commands/*) echo "output-file-is-under-github";; esac
for i in 1 2 3 4 5 6 7 8 9 10; do
  page=$(/busybox wget -q -O - http://web/index.html) && break
  /busybox sleep 0.3
done
echo "page=$page" >> "$GITHUB_OUTPUT"
echo "FROM_ACTION=set-by-scratch" >> "$GITHUB_ENV"
"#;

#[test]
fn a_from_scratch_action_runs_its_entrypoint_reaches_services_and_is_removed() {
    let Some((docker, image)) = docker() else {
        return;
    };
    let repo = repo_with_workflow(&format!(
        r#"
on: push
jobs:
  scratch:
    runs-on: ubuntu-latest
    services:
      web:
        image: {image}
    steps:
      - uses: actions/checkout@v4
      - id: act
        uses: ./scratchy
        with:
          secret: hush-hush-value
      - run: echo "page=${{{{ steps.act.outputs.page }}}} env=$FROM_ACTION"
"#
    ));
    repo.write("scratchy/action.yml", SCRATCH_ACTION);
    repo.write("scratchy/Dockerfile", SCRATCH_DOCKERFILE);
    repo.write("scratchy/entrypoint.sh", SCRATCH_ENTRYPOINT);
    repo.write("marker.txt", "in-the-workspace");
    repo.commit();
    let out = run_docker(&docker, repo.path(), &image);
    out.assert_success();
    let stdout = &out.stdout;
    for line in [
        "first-line-of-the-action",
        "secret=[***]",
        "warning scratchy: written from scratch",
        "ws=[/github/workspace] home=[/github/home] pwd=[/github/workspace] marker=[in-the-workspace]",
        "output-file-is-under-github",
        "page=kiln busybox service env=set-by-scratch",
    ] {
        assert!(stdout.contains(line), "{line} missing:\n{stdout}");
    }
    assert!(!stdout.contains("hush-hush-value"), "{stdout}");
    assert!(!stdout.contains("::warning"), "{stdout}");
}

#[test]
fn a_failing_action_fails_the_step_and_a_timed_out_one_is_stopped() {
    let Some((docker, image)) = docker() else {
        return;
    };
    let repo = repo_with_workflow(&format!(
        r#"
on: push
jobs:
  failing:
    runs-on: ubuntu-latest
    steps:
      - uses: docker://{image}
        with:
          entrypoint: sh
          args: -c "echo about-to-fail; exit 3"
      - run: echo should-not-run
      - if: failure()
        uses: docker://{image}
        timeout-minutes: 0.05
        with:
          entrypoint: sh
          args: -c "echo sleeping-past-the-timeout; sleep 60"
"#
    ));
    let started = std::time::Instant::now();
    let out = run_docker(&docker, repo.path(), &image);
    assert_eq!(out.status, 1, "{}", out.all_output());
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the timed-out action was not stopped: {:?}",
        started.elapsed()
    );
    let stdout = &out.stdout;
    for line in [
        "about-to-fail",
        "Process completed with exit code 3.",
        "sleeping-past-the-timeout",
        "has timed out after 0.05 minutes",
    ] {
        assert!(stdout.contains(line), "{line} missing:\n{stdout}");
    }
    let steps = &out.job("failing")["steps"];
    let conclusions: Vec<&str> = (0..3)
        .map(|i| steps[i]["conclusion"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(conclusions, ["failure", "skipped", "failure"], "{steps:#}");
}

/// Names of the running containers of the kiln process `pid` that run an action.
fn action_containers(docker: &DockerBackend, pid: u32) -> Vec<String> {
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![kiln_runner::backend::JOB_KEY_LABEL.to_owned()],
    )]);
    let containers = runtime()
        .block_on(
            docker.client().list_containers(Some(
                bollard::query_parameters::ListContainersOptionsBuilder::new()
                    .filters(&filters)
                    .build(),
            )),
        )
        .expect("list containers");
    let marker = format!("-{pid}-");
    containers
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .filter(|name| name.contains(&marker) && name.contains("-action-"))
        .collect()
}

#[test]
fn ctrl_c_removes_the_running_action_container() {
    let Some((docker, image)) = docker() else {
        return;
    };
    let repo = repo_with_workflow(&format!(
        r#"
on: push
jobs:
  long:
    runs-on: ubuntu-latest
    steps:
      - uses: docker://{image}
        with:
          entrypoint: sh
          args: -c "echo action-is-running; sleep 120"
"#
    ));
    let platform = format!("ubuntu-latest={image}");
    let running = spawn_kiln_run(repo.path(), &["--executor", "docker", "-P", &platform], &[]);
    running.wait_for_output("action-is-running", LIMIT);
    let pid = running.pid();
    assert_eq!(
        action_containers(&docker, pid).len(),
        1,
        "the action runs in a container of its own"
    );
    running.interrupt();
    let out = running.wait(Duration::from_secs(60));
    assert_eq!(out.status, 130, "{}", out.all_output());
    assert_eq!(out.job("long")["conclusion"], "cancelled");
    let left = leftovers(&docker, pid);
    assert!(
        left.is_empty(),
        "kiln left {left:?} behind after Ctrl-C\n{}",
        out.all_output()
    );
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=kiln test",
            "-c",
            "user.email=test@example.com",
        ])
        .args(args)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?} failed in {}", dir.display());
}

const COMPOSITE: &str = r#"
name: tool
inputs:
  who:
    default: nobody
runs:
  using: composite
  steps:
    - shell: sh
      run: echo "WORDS from ${{ github.action_repository }}@${{ github.action_ref }} for ${{ inputs.who }}"
"#;

/// A bare repository at `BASE/octo/tools` with tag `v1` (a composite action at the root
/// and one at `sub/`) and branch `feature` (the root action says something else).
fn action_server() -> tempfile::TempDir {
    let base = tempfile::tempdir().expect("temp dir");
    let bare = base.path().join("octo/tools");
    std::fs::create_dir_all(&bare).expect("mkdir");
    git(&bare, &["init", "-q", "--bare"]);
    let work = base.path().join("work");
    std::fs::create_dir_all(work.join("sub")).expect("mkdir");
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("action.yml"), COMPOSITE.replace("WORDS", "root")).unwrap();
    std::fs::write(
        work.join("sub/action.yml"),
        COMPOSITE.replace("WORDS", "sub"),
    )
    .unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "v1"]);
    git(&work, &["tag", "v1"]);
    git(&work, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(
        work.join("action.yml"),
        COMPOSITE.replace("WORDS", "feature"),
    )
    .unwrap();
    git(&work, &["commit", "-qam", "feature"]);
    let url = format!("file://{}", bare.display());
    git(&work, &["push", "-q", &url, "main", "feature", "v1"]);
    base
}

#[test]
fn remote_actions_are_cloned_from_the_base_url_and_reused_within_the_run() {
    let server = action_server();
    let base_url = format!("file://{}", server.path().display());
    let bare = server.path().join("octo/tools");
    let repo = repo_with_workflow(&format!(
        r#"
on: push
jobs:
  first:
    runs-on: ubuntu-latest
    steps:
      - uses: octo/tools@v1
        with:
          who: first
      - uses: octo/tools/sub@v1
      - uses: octo/tools@feature
      # Later fetches from the server would now fail: the next job must reuse the clone.
      - run: mv "{bare}" "{bare}.gone"
  second:
    needs: first
    runs-on: ubuntu-latest
    steps:
      - uses: octo/tools@v1
        with:
          who: second
      - uses: octo/tools/sub@v1
"#,
        bare = bare.display()
    ));
    let out = kiln_run(
        repo.path(),
        &["--executor", "host", "--action-base-url", &base_url],
        LIMIT,
    );
    out.assert_success();
    for line in [
        "root from octo/tools@v1 for first",
        "sub from octo/tools@v1 for nobody",
        "feature from octo/tools@feature for nobody",
        "root from octo/tools@v1 for second",
    ] {
        assert!(out.stdout.contains(line), "{line} missing:\n{}", out.stdout);
    }
    assert!(!bare.exists(), "the server was moved away during the run");
}

#[test]
fn a_missing_ref_and_offline_mode_fail_the_job_at_setup_with_the_fix() {
    let server = action_server();
    let base_url = format!("file://{}", server.path().display());
    // As GitHub's "Set up job": every action is fetched before the first step, also one whose
    // step would be skipped, so nothing runs when one is missing.
    let repo = repo_with_workflow(
        r#"
on: push
jobs:
  j:
    runs-on: ubuntu-latest
    steps:
      - run: echo first-step-ran
      - id: missing
        if: false
        uses: octo/tools@no-such-ref
"#,
    );
    let out = kiln_run(
        repo.path(),
        &["--executor", "host", "--action-base-url", &base_url],
        LIMIT,
    );
    assert_eq!(out.status, 1, "{}", out.all_output());
    let expected =
        format!("cannot fetch the action `octo/tools@no-such-ref` from {base_url}/octo/tools");
    assert!(out.stdout.contains(&expected), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("--local-repository octo/tools@no-such-ref=PATH"),
        "{}",
        out.stdout
    );
    assert_eq!(out.job("j")["conclusion"], "failure");
    assert_eq!(
        out.job("j")["steps"],
        serde_json::json!([]),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("first-step-ran"), "{}", out.stdout);

    let offline = kiln_run(
        repo.path(),
        &[
            "--executor",
            "host",
            "--action-base-url",
            &base_url,
            "--action-offline-mode",
        ],
        LIMIT,
    );
    assert_eq!(offline.status, 1, "{}", offline.all_output());
    assert!(
        offline
            .stdout
            .contains("the action `octo/tools@no-such-ref` is not available offline"),
        "{}",
        offline.stdout
    );
}
