//! `kiln run` end to end in host mode: every example, and the command's own features
//! (files, masking, filters, platforms, exit codes), asserting on the report and the logs.

mod run_support;

use run_support::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

fn host(dir: &std::path::Path, extra: &[&str]) -> Outcome {
    let mut args = vec!["--executor", "host"];
    args.extend_from_slice(extra);
    kiln_run(dir, &args, LIMIT)
}

#[test]
fn matrix_example_runs_every_leg_with_include_and_exclude() {
    let repo = example("matrix-build");
    let out = host(repo.path(), &[]);
    out.assert_success();
    let names: Vec<&str> = out.report()["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "test (ubuntu-latest, 3.11, minimal)",
            "test (ubuntu-latest, 3.12, minimal)",
            "test (ubuntu-latest, 3.12, full)",
            "test (ubuntu-latest, 3.13, minimal)",
            "summary"
        ],
        "{:#}",
        out.report()
    );
    let leg = out.job("test (ubuntu-latest, 3.12, full)");
    assert_eq!(leg["matrix"]["experimental"], true);
    assert_eq!(steps(leg).len(), 3);
    assert!(steps(leg)
        .iter()
        .all(|(_, outcome, _)| outcome == "success"));
    assert!(
        out.stdout.contains("python=3.12 variant=full"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("experimental=true"));
    // hashFiles() over the checked-out sources (tests/run_examples.rs checks the value).
    let digest = out
        .stdout
        .lines()
        .find_map(|l| l.split("sources digest ").nth(1))
        .expect("digest line");
    assert_eq!(digest.trim().len(), 64, "{digest}");
    assert!(out.stdout.contains("matrix finished with success"));
}

#[test]
fn needs_outputs_example_passes_outputs_and_env_file_values() {
    let repo = example("needs-outputs");
    let out = host(repo.path(), &[]);
    out.assert_success();
    let version = out.job("version");
    assert_eq!(version["outputs"]["version"], "1.4.5");
    assert_eq!(
        version["outputs"]["notes"],
        "First line of the notes\nSecond line"
    );
    assert_eq!(steps(out.job("build")).len(), 3);
    assert_eq!(out.job("release")["conclusion"], "success");
    assert!(out.stdout.contains("building 1.4.5"));
    assert!(out.stdout.contains("releasing 1.4.5 on stable"));
    assert!(out.stdout.contains("Second line"));
}

#[test]
fn composite_action_example_greets_and_reports_the_length() {
    let repo = example("composite-action");
    let out = host(repo.path(), &[]);
    out.assert_success();
    assert!(out.stdout.contains("Hello, kiln!"), "{}", out.stdout);
    let greet = out.job("greet");
    assert!(
        steps(greet)
            .iter()
            .any(|(id, outcome, _)| id == "hello" && outcome == "success"),
        "{greet:#}"
    );
}

#[test]
fn reusable_workflow_example_passes_inputs_outputs_and_masks_the_secret() {
    let repo = example("reusable-workflow");
    let secret = "s3cr3t-signing-key-value";
    let out = host(repo.path(), &["-s", &format!("SIGNING_KEY={secret}")]);
    out.assert_success();
    assert!(
        out.stdout.contains("building server (optimize=true)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("building client (optimize=false)"));
    assert!(out.stdout.contains("publishing server.tar and client.tar"));
    let report = serde_json::to_string(out.report()).expect("report text");
    for (what, text) in [
        ("stdout", &out.stdout),
        ("stderr", &out.stderr),
        ("report", &report),
    ] {
        assert!(
            !text.contains(secret),
            "the secret leaked into {what}:\n{text}"
        );
    }
}

#[test]
fn missing_secret_fails_the_callee_and_skips_the_dependant() {
    let repo = example("reusable-workflow");
    let out = host(repo.path(), &[]);
    assert_eq!(out.status, 1, "{}", out.all_output());
    assert_eq!(out.report()["conclusion"], "failure");
    assert_eq!(out.job("publish")["conclusion"], "skipped");
}

#[test]
fn artifacts_example_merges_four_shards() {
    let repo = example("artifacts-fan-in");
    let out = host(repo.path(), &[]);
    out.assert_success();
    for shard in 1..=4 {
        assert_eq!(
            out.job(&format!("shard ({shard})"))["conclusion"],
            "success"
        );
        assert!(
            out.stdout.contains(&format!("part-{shard}.txt")),
            "{}",
            out.stdout
        );
    }
    assert_eq!(out.job("merge")["conclusion"], "success");
}

#[test]
fn services_example_needs_docker() {
    let repo = example("services-healthcheck");
    let out = host(repo.path(), &[]);
    assert_eq!(out.status, 1, "{}", out.all_output());
    assert_eq!(out.job("integration")["conclusion"], "failure");
    assert!(
        out.all_output().contains("container"),
        "{}",
        out.all_output()
    );
}

#[test]
fn files_flags_and_masking() {
    let repo = repo_with_workflow(
        "on: push\njobs:\n  show:\n    runs-on: ubuntu-latest\n    env:\n      OVERRIDDEN: from-job\n    steps:\n      - run: |\n          echo \"env=$FROM_ENV_FILE overridden=$OVERRIDDEN\"\n          echo \"var=${{ vars.COLOR }} input=${{ inputs.name }}\"\n          echo \"token is ${{ secrets.API_TOKEN }} and cli ${{ secrets.CLI }}\"\n          echo \"inside:xx${{ secrets.API_TOKEN }}yy\"\n          echo \"::add-mask::masked-at-runtime\"\n          echo \"runtime masked-at-runtime value\"\n",
    );
    repo.write(
        ".env",
        "FROM_ENV_FILE=\"from the env file\"\nOVERRIDDEN=from-env-file\n",
    );
    repo.write("my.secrets", "# secrets\nAPI_TOKEN='tok-12345-abcdef'\n");
    repo.write(".vars", "COLOR=blue\n");
    let out = kiln_run_env(
        repo.path(),
        &[
            "--executor",
            "host",
            "--secret-file",
            "my.secrets",
            "-s",
            "CLI",
            "--input",
            "name=mona",
        ],
        &[("CLI", "cli-secret-from-env")],
        LIMIT,
    );
    out.assert_success();
    assert!(
        out.stdout
            .contains("env=from the env file overridden=from-job"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("var=blue input=mona"));
    assert!(
        out.stdout.contains("token is *** and cli ***"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("inside:xx***yy"));
    assert!(out.stdout.contains("runtime *** value"));
    let report = serde_json::to_string(out.report()).expect("report text");
    for secret in [
        "tok-12345-abcdef",
        "cli-secret-from-env",
        "masked-at-runtime value",
    ] {
        assert!(
            !out.all_output().contains(secret),
            "{secret} leaked:\n{}",
            out.all_output()
        );
        assert!(!report.contains(secret), "{secret} leaked into the report");
    }
}

#[test]
fn failures_set_the_exit_status_and_continue_on_error_does_not() {
    let repo = repo_with_workflow(
        "on: push\njobs:\n  tolerated:\n    runs-on: ubuntu-latest\n    steps:\n      - id: bad\n        continue-on-error: true\n        run: exit 3\n      - run: echo after ${{ steps.bad.outcome }} ${{ steps.bad.conclusion }}\n  broken:\n    runs-on: ubuntu-latest\n    steps:\n      - id: fails\n        run: exit 1\n      - id: never\n        run: echo never\n",
    );
    let out = host(repo.path(), &[]);
    assert_eq!(out.status, 1, "{}", out.all_output());
    assert_eq!(out.report()["conclusion"], "failure");
    let tolerated = out.job("tolerated");
    assert_eq!(tolerated["conclusion"], "success");
    assert_eq!(
        steps(tolerated)[0],
        ("bad".into(), "failure".into(), "success".into())
    );
    assert!(out.stdout.contains("after failure success"));
    let broken = out.job("broken");
    assert_eq!(broken["conclusion"], "failure");
    assert_eq!(
        steps(broken)[1],
        ("never".into(), "skipped".into(), "skipped".into())
    );
    assert!(
        out.stdout.contains("JOB") && out.stdout.contains("RESULT"),
        "summary table missing"
    );
}

#[test]
fn unknown_platform_is_skipped_with_a_notice() {
    let repo = repo_with_workflow(
        "on: push\njobs:\n  win:\n    runs-on: windows-latest\n    steps:\n      - run: echo windows\n  linux:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo linux\n",
    );
    let out = host(repo.path(), &[]);
    out.assert_success();
    assert_eq!(out.job("win")["conclusion"], "skipped");
    assert_eq!(out.job("linux")["conclusion"], "success");
    assert!(
        out.stdout.contains("windows-latest") && out.stdout.contains("-P windows-latest="),
        "{}",
        out.stdout
    );
    let mapped = host(repo.path(), &["-P", "windows-latest=-self-hosted"]);
    mapped.assert_success();
    assert_eq!(mapped.job("win")["conclusion"], "success");
}

#[test]
fn github_context_comes_from_git() {
    let repo = repo_with_workflow(
        "on: [push, pull_request]\njobs:\n  ctx:\n    runs-on: ubuntu-latest\n    steps:\n      - run: |\n          echo \"sha=${{ github.sha }} ref=${{ github.ref }} name=${{ github.ref_name }}\"\n          echo \"repo=${{ github.repository }} owner=${{ github.repository_owner }} event=${{ github.event_name }}\"\n          echo \"head=${{ github.event.head_commit.id }} pr=${{ github.event.pull_request.number }}\"\n",
    );
    let sha = std::process::Command::new("git")
        .arg("-C")
        .arg(repo.path())
        .args(["rev-parse", "HEAD"])
        .output()
        .expect("git");
    let sha = String::from_utf8_lossy(&sha.stdout).trim().to_owned();
    let out = host(repo.path(), &[]);
    out.assert_success();
    assert!(
        out.stdout
            .contains(&format!("sha={sha} ref=refs/heads/main name=main")),
        "{}",
        out.stdout
    );
    assert!(out
        .stdout
        .contains("repo=octo/example owner=octo event=push"));
    assert!(out.stdout.contains(&format!("head={sha}")));
    repo.write(
        "event.json",
        "{\"pull_request\": {\"number\": 42, \"head\": {\"ref\": \"topic\"}}}",
    );
    let pr = host(repo.path(), &["pull_request", "-e", "event.json"]);
    pr.assert_success();
    assert!(
        pr.stdout.contains("ref=refs/pull/42/merge"),
        "{}",
        pr.stdout
    );
    assert!(pr.stdout.contains("event=pull_request") && pr.stdout.contains("pr=42"));
}

#[test]
fn events_jobs_and_matrix_filters_select_what_runs() {
    let repo = empty_repo();
    repo.write(
        ".github/workflows/push.yml",
        "name: on push\non: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo job-a\n  b:\n    needs: a\n    runs-on: ubuntu-latest\n    strategy:\n      matrix:\n        n: [1, 2, 3]\n    steps:\n      - run: echo leg-${{ matrix.n }}\n",
    );
    repo.write(".github/workflows/pr.yml", "name: on pr\non: pull_request\njobs:\n  p:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo pr-job\n");
    repo.commit();
    let push = host(repo.path(), &[]);
    push.assert_success();
    assert!(
        push.stdout.contains("skipping .github/workflows/pr.yml"),
        "{}",
        push.stdout
    );
    assert!(!push.stdout.contains("pr-job"));
    let only_b = host(repo.path(), &["-j", "b", "--matrix", "n:2"]);
    only_b.assert_success();
    assert!(only_b.stdout.contains("leg-2"), "{}", only_b.stdout);
    assert!(
        !only_b.stdout.contains("leg-1")
            && !only_b.stdout.contains("leg-3")
            && !only_b.stdout.contains("job-a")
    );
    let pr = host(repo.path(), &["pull_request"]);
    pr.assert_success();
    assert!(pr.stdout.contains("pr-job"));
    let first_line = push.stdout.lines().next().unwrap_or("");
    assert!(
        first_line.starts_with("kiln: executor: host"),
        "{first_line}"
    );
}

#[test]
fn list_graph_and_dry_run_do_not_execute() {
    let repo = example("needs-outputs");
    let (code, list, _) = kiln(repo.path(), &["run", "-l"]);
    assert_eq!(code, 0);
    let rows: Vec<&str> = list.lines().collect();
    assert!(
        rows[0].starts_with("Stage") && rows[0].contains("Job ID"),
        "{list}"
    );
    assert!(rows[1].starts_with("0") && rows[1].contains("version"));
    assert!(rows[3].starts_with("2") && rows[3].contains("release"));
    let (code, graph, _) = kiln(repo.path(), &["run", "-g"]);
    assert_eq!(code, 0);
    assert!(
        graph.contains("build  ◀ version") && graph.contains("release  ◀ version, build"),
        "{graph}"
    );
    let dry = host(repo.path(), &["-n"]);
    dry.assert_success();
    assert!(
        dry.stdout.contains("▶ Run echo \"building $VERSION\""),
        "{}",
        dry.stdout
    );
    assert!(
        !dry.stdout.contains("building 1.4.5"),
        "a dry run executed a step"
    );
    assert_eq!(dry.job("release")["conclusion"], "success");
}

#[test]
fn bad_flags_and_invalid_workflows_exit_2() {
    let repo = repo_with_workflow("on: push\njobs:\n  a:\n    runs_on: ubuntu-latest\n");
    let (code, _, err) = kiln(repo.path(), &["run", "--executor", "host"]);
    assert_eq!(code, 2);
    assert!(err.contains("test.yml:4"), "{err}");
    let valid = repo_with_workflow(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo\n",
    );
    let (code, _, err) = kiln(
        valid.path(),
        &["run", "--executor", "host", "-P", "nolabel"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("LABEL=IMAGE"), "{err}");
}

#[test]
fn ctrl_c_cancels_the_run_runs_always_steps_and_exits_130() {
    let repo = repo_with_workflow(
        "on: push\njobs:\n  slow:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo started-sleeping; sleep 60\n      - if: always()\n        run: echo always-step-ran\n  later:\n    needs: slow\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo never-runs\n",
    );
    let running = spawn_kiln_run(repo.path(), &["--executor", "host"], &[]);
    running.wait_for_output("started-sleeping", Duration::from_secs(30));
    running.interrupt();
    let started = std::time::Instant::now();
    let out = running.wait(Duration::from_secs(30));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "cancellation took {:?}",
        started.elapsed()
    );
    assert_eq!(out.status, 130, "{}", out.all_output());
    assert_eq!(
        out.report()["conclusion"],
        "cancelled",
        "{:#}",
        out.report()
    );
    assert_eq!(out.job("slow")["conclusion"], "cancelled");
    assert!(out.stdout.contains("always-step-ran"), "{}", out.stdout);
    assert!(!out.stdout.contains("never-runs"));
}

#[test]
fn parallel_limit_serialises_independent_jobs() {
    let repo = repo_with_workflow(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: sleep 0.2\n  b:\n    runs-on: ubuntu-latest\n    steps:\n      - run: sleep 0.2\n  c:\n    runs-on: ubuntu-latest\n    steps:\n      - run: sleep 0.2\n",
    );
    let out = host(repo.path(), &["--parallel", "1"]);
    out.assert_success();
    let mut spans: Vec<(String, String)> = out.report()["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| {
            let start = j["started_at"].as_str().expect("started_at").to_owned();
            let end = j["finished_at"].as_str().expect("finished_at").to_owned();
            (start, end)
        })
        .collect();
    // RFC 3339 UTC strings of one format order like the times they denote.
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "jobs overlapped with --parallel 1: {spans:?}"
        );
    }
}

#[test]
fn without_a_daemon_the_host_executor_is_chosen_and_says_why() {
    let repo = repo_with_workflow("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo on-the-host\n");
    let out = kiln_run_env(
        repo.path(),
        &[],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
        LIMIT,
    );
    out.assert_success();
    let first = out.stdout.lines().next().unwrap_or("");
    assert!(
        first.starts_with("kiln: executor: host (no Docker daemon answered"),
        "{first}"
    );
    assert!(out.stdout.contains("on-the-host"));
}

#[test]
fn fail_fast_cancels_the_running_legs() {
    let repo = repo_with_workflow(
        "on: push\njobs:\n  legs:\n    runs-on: ubuntu-latest\n    strategy:\n      matrix:\n        n: [fast-fail, slow]\n    steps:\n      - run: |\n          if [ \"${{ matrix.n }}\" = fast-fail ]; then sleep 0.3; exit 1; fi\n          echo slow-leg-started; sleep 60; echo slow-leg-finished\n",
    );
    let started = std::time::Instant::now();
    let out = host(repo.path(), &[]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "fail-fast did not stop the slow leg: {:?}",
        started.elapsed()
    );
    assert_eq!(out.status, 1, "{}", out.all_output());
    assert_eq!(out.job("legs (fast-fail)")["conclusion"], "failure");
    assert_eq!(
        out.job("legs (slow)")["conclusion"],
        "cancelled",
        "{:#}",
        out.report()
    );
    assert!(!out.stdout.contains("slow-leg-finished"));
}

#[test]
fn embedded_cache_server_serves_actions_cache_across_runs() {
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
        run: mkdir -p deps && echo "built from $(cat lock.txt)" > deps/out.txt
      - id: show
        run: |
          echo "content=$(cat deps/out.txt)" >> "$GITHUB_OUTPUT"
          echo "hit=${{ steps.deps.outputs.cache-hit }}" >> "$GITHUB_OUTPUT"
          echo "stock-client-env=${ACTIONS_CACHE_URL:+url}${ACTIONS_RUNTIME_TOKEN:+,token}" >> "$GITHUB_OUTPUT"
    outputs:
      content: ${{ steps.show.outputs.content }}
      hit: ${{ steps.show.outputs.hit }}
      stock-client-env: ${{ steps.show.outputs.stock-client-env }}
"#,
    );
    repo.write("lock.txt", "v1");
    repo.commit();
    let cache_home = tempfile::tempdir().expect("cache dir");
    let env = [(
        "XDG_CACHE_HOME",
        cache_home.path().to_str().expect("utf-8 path"),
    )];
    let run = || kiln_run_env(repo.path(), &["--executor", "host"], &env, LIMIT);

    let first = run();
    first.assert_success();
    assert!(
        first
            .all_output()
            .contains("embedded server at http://127.0.0.1:"),
        "{}",
        first.all_output()
    );
    assert_eq!(first.job("build")["outputs"]["content"], "built from v1");
    assert_eq!(first.job("build")["outputs"]["hit"], "");
    assert_eq!(
        first.job("build")["outputs"]["stock-client-env"],
        "url,token"
    );
    assert!(
        first.all_output().contains("Cache saved with key: deps-"),
        "{}",
        first.all_output()
    );

    let second = run();
    second.assert_success();
    assert_eq!(second.job("build")["outputs"]["content"], "built from v1");
    assert_eq!(
        second.job("build")["outputs"]["hit"],
        "true",
        "{}",
        second.all_output()
    );
    assert!(cache_home.path().join("kiln/cache").is_dir());

    let off = kiln_run_env(
        repo.path(),
        &["--executor", "host", "--no-cache"],
        &env,
        LIMIT,
    );
    off.assert_success();
    assert!(
        off.all_output().contains("cache server not configured"),
        "{}",
        off.all_output()
    );
    assert_eq!(off.job("build")["outputs"]["stock-client-env"], "");
}

/// Concurrency groups are repository-wide: two workflows the same push triggers, in one
/// group, take turns (the second waits for the first) instead of running at once.
#[test]
fn workflows_of_one_push_in_one_concurrency_group_take_turns() {
    let repo = empty_repo();
    let scratch = tempfile::tempdir().unwrap();
    let marks = scratch.path().join("marks");
    let workflow = |name: &str| {
        format!(
            "name: {name}\non: push\nconcurrency: deploy-${{{{ github.ref }}}}\njobs:\n  deploy:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo {name}-start >> {m} && sleep 1 && echo {name}-end >> {m}\n",
            m = marks.display()
        )
    };
    repo.write(".github/workflows/a.yml", &workflow("a"));
    repo.write(".github/workflows/b.yml", &workflow("b"));
    repo.commit();
    let out = host(repo.path(), &[]);
    out.assert_success();
    let order = std::fs::read_to_string(&marks).unwrap();
    let order: Vec<&str> = order.lines().collect();
    assert!(
        order == ["a-start", "a-end", "b-start", "b-end"]
            || order == ["b-start", "b-end", "a-start", "a-end"],
        "{order:?}\n{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("waiting for concurrency group `deploy-refs/heads/main`"),
        "{}",
        out.stdout
    );
}
