//! `kiln run` end to end in Docker mode on the locally built base image: every example, the
//! missing-image error, and cleanup (no container or network of the run is left behind,
//! checked through the Docker API). Without a daemon these tests print SKIPPED and pass,
//! unless KILN_REQUIRE_DOCKER=1.

mod run_support;

use kiln_runner::backend::DockerBackend;
use kiln_runner::image::{build_base_image, BaseImageOptions};
use kiln_runner::testing::labelled_objects;
use run_support::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(300);
const IMAGE: &str = "kiln-base:bookworm";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The daemon with the base image present (built with debootstrap when missing), or `None`
/// when the test is skipped.
fn docker() -> Option<DockerBackend> {
    runtime().block_on(async {
        let docker = kiln_runner::testing::require_docker().await?;
        let options = BaseImageOptions {
            tag: IMAGE.to_owned(),
            ..BaseImageOptions::default()
        };
        let mut ignore = |_| {};
        if let Err(error) = build_base_image(docker.client(), &options, &mut ignore).await {
            panic!("cannot build {IMAGE} for the Docker tests: {error}");
        }
        Some(docker)
    })
}

/// Containers and networks whose job key was made by the kiln process `pid`.
fn leftovers(docker: &DockerBackend, pid: u32) -> Vec<String> {
    let marker = format!("-{pid}-");
    runtime()
        .block_on(labelled_objects(docker))
        .into_iter()
        .filter(|object| object.contains(&marker))
        .collect()
}

fn run_docker(docker: &DockerBackend, dir: &std::path::Path, extra: &[&str]) -> Outcome {
    let mut args = vec!["--executor", "docker"];
    args.extend_from_slice(extra);
    let out = kiln_run(dir, &args, LIMIT);
    let left = leftovers(docker, out.pid);
    assert!(
        left.is_empty(),
        "kiln left {left:?} behind\n{}",
        out.all_output()
    );
    out
}

#[test]
fn examples_run_in_docker_and_clean_up() {
    let Some(docker) = docker() else { return };
    for name in [
        "matrix-build",
        "needs-outputs",
        "composite-action",
        "artifacts-fan-in",
    ] {
        let repo = example(name);
        let out = run_docker(&docker, repo.path(), &[]);
        out.assert_success();
        assert!(
            out.stdout.starts_with("kiln: executor: docker"),
            "{name}: {}",
            out.stdout
        );
    }
    let repo = example("needs-outputs");
    let out = run_docker(&docker, repo.path(), &[]);
    assert_eq!(out.job("version")["outputs"]["version"], "1.4.5");
    assert!(out.stdout.contains("releasing 1.4.5 on stable"));
}

#[test]
fn reusable_workflow_in_docker_masks_the_secret() {
    let Some(docker) = docker() else { return };
    let repo = example("reusable-workflow");
    let secret = "docker-signing-key-0042";
    let out = run_docker(
        &docker,
        repo.path(),
        &["-s", &format!("SIGNING_KEY={secret}")],
    );
    out.assert_success();
    assert!(
        out.stdout.contains("publishing server.tar and client.tar"),
        "{}",
        out.stdout
    );
    assert!(!out.all_output().contains(secret));
    assert!(!serde_json::to_string(out.report())
        .expect("report")
        .contains(secret));
}

#[test]
fn service_with_health_check_is_reachable_and_removed() {
    let Some(docker) = docker() else { return };
    let repo = example("services-healthcheck");
    let out = run_docker(&docker, repo.path(), &[]);
    out.assert_success();
    let job = out.job("integration");
    assert_eq!(
        steps(job).last().map(|s| s.1.as_str()),
        Some("success"),
        "{job:#}"
    );
    assert!(
        out.stdout.contains(" web"),
        "getent printed no address for web:\n{}",
        out.stdout
    );
}

#[test]
fn failing_job_still_cleans_up_and_missing_image_names_the_fix() {
    let Some(docker) = docker() else { return };
    let repo = repo_with_workflow(
        "on: push\njobs:\n  fails:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo in-container && exit 7\n  other:\n    runs-on: special\n    steps:\n      - run: echo never\n",
    );
    let out = run_docker(&docker, repo.path(), &[]);
    assert_eq!(out.status, 1, "{}", out.all_output());
    assert_eq!(out.job("fails")["conclusion"], "failure");
    assert_eq!(out.job("other")["conclusion"], "skipped");
    assert!(out.stdout.contains("in-container"));
    let missing = run_docker(
        &docker,
        repo.path(),
        &["-P", "ubuntu-latest=kiln-base:no-such-tag", "-j", "fails"],
    );
    assert_eq!(missing.status, 1);
    assert!(
        missing.all_output().contains("kiln image build"),
        "{}",
        missing.all_output()
    );
    let self_hosted = run_docker(
        &docker,
        repo.path(),
        &["-P", "special=-self-hosted", "-j", "other"],
    );
    self_hosted.assert_success();
}

#[test]
fn ctrl_c_in_docker_mode_removes_the_containers() {
    let Some(docker) = docker() else { return };
    let repo = example("services-healthcheck");
    repo.write(
        ".github/workflows/integration.yml",
        &std::fs::read_to_string(repo.path().join(".github/workflows/integration.yml"))
            .expect("workflow")
            .replace("run: getent hosts web", "run: echo service-is-up; sleep 60"),
    );
    repo.commit();
    let running = spawn_kiln_run(repo.path(), &["--executor", "docker"], &[]);
    running.wait_for_output("service-is-up", LIMIT);
    running.interrupt();
    let out = running.wait(Duration::from_secs(60));
    assert_eq!(out.status, 130, "{}", out.all_output());
    assert_eq!(out.job("integration")["conclusion"], "cancelled");
    let left = leftovers(&docker, out.pid);
    assert!(
        left.is_empty(),
        "kiln left {left:?} behind after Ctrl-C\n{}",
        out.all_output()
    );
}

/// The embedded cache server must be reachable from inside job containers: the built-in
/// `actions/cache` saves in the first run and hits in the second, and a stock client's
/// `ACTIONS_CACHE_URL` answers from the container (bash's /dev/tcp stands in for an HTTP client,
/// since the base image has no curl).
#[test]
fn actions_cache_works_from_containers_across_runs() {
    let Some(docker) = docker() else { return };
    let repo = repo_with_workflow(
        r#"
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - id: deps
        uses: actions/cache@v4
        with:
          path: deps
          key: deps-${{ hashFiles('lock.txt') }}
      - if: steps.deps.outputs.cache-hit != 'true'
        run: mkdir -p deps && echo "built from $(cat lock.txt) in $(hostname)" > deps/out.txt
      - id: probe
        shell: bash
        run: |
          url="${ACTIONS_CACHE_URL#http://}"
          hostport="${url%%/*}"
          exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}"
          printf 'GET /%s_apis/artifactcache/cache?keys=none&version=0 HTTP/1.0\r\nAuthorization: Bearer %s\r\n\r\n' \
            "${url#*/}" "$ACTIONS_RUNTIME_TOKEN" >&3
          status=$(head -n 1 <&3 | cut -d ' ' -f 2)
          echo "status=$status" >> "$GITHUB_OUTPUT"
      - id: show
        run: |
          echo "content=$(cat deps/out.txt)" >> "$GITHUB_OUTPUT"
          echo "hit=${{ steps.deps.outputs.cache-hit }}" >> "$GITHUB_OUTPUT"
    outputs:
      content: ${{ steps.show.outputs.content }}
      hit: ${{ steps.show.outputs.hit }}
      status: ${{ steps.probe.outputs.status }}
"#,
    );
    repo.write("lock.txt", "v1");
    repo.commit();
    let cache_home = tempfile::tempdir().expect("cache dir");
    let env = [(
        "XDG_CACHE_HOME",
        cache_home.path().to_str().expect("utf-8 path"),
    )];
    let run = || {
        let out = kiln_run_env(repo.path(), &["--executor", "docker"], &env, LIMIT);
        let left = leftovers(&docker, out.pid);
        assert!(left.is_empty(), "kiln left {left:?} behind");
        out
    };

    let first = run();
    first.assert_success();
    let built = first.job("build")["outputs"]["content"]
        .as_str()
        .expect("content output")
        .to_owned();
    assert!(built.starts_with("built from v1 in "), "{built}");
    assert_eq!(first.job("build")["outputs"]["hit"], "");
    // A miss on v1's lookup is 204; anything else means the URL or token is wrong in containers.
    assert_eq!(
        first.job("build")["outputs"]["status"],
        "204",
        "{}",
        first.all_output()
    );

    let second = run();
    second.assert_success();
    assert_eq!(
        second.job("build")["outputs"]["hit"],
        "true",
        "{}",
        second.all_output()
    );
    // The restored file is the first container's, not rebuilt by the second.
    assert_eq!(second.job("build")["outputs"]["content"], built.as_str());
}
