//! `kiln run` against what a job, a signal or a repository can do to the machine: terminating
//! signals stop the jobs and clean up, processes a job leaves behind end with it, and workflow
//! files reached through symbolic links or `..` never bring in files from outside the
//! repository.

mod run_support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_runner::testing::process_running as alive;
use run_support::{kiln, kiln_run, repo_with_workflow, spawn_kiln_run, Repo};

/// Waits (bounded) for a file a step writes, and reads the pid in it.
fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{} was never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until none of `pids` runs; the names say which one survived.
fn assert_all_end(pids: &[(&str, i32)]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let living: Vec<_> = pids.iter().filter(|(_, pid)| alive(*pid)).collect();
        if living.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for (_, pid) in &living {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
            panic!("still running after the run ended: {living:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `kiln-run-*` directories under `tmp`.
fn run_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("kiln-run-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A step that records its pid and the pids of two processes it detaches from its session
/// (`setsid`, and a double fork into a new session), prints `ready`, then runs `last`.
fn detaching_step(pids: &Path, last: &str) -> String {
    let dir = pids.display();
    format!(
        r#"
      - run: |
          echo $$ > {dir}/step
          setsid sh -c 'echo $$ > {dir}/setsid; exec sleep 600' > /dev/null 2>&1 < /dev/null &
          ( setsid sh -c 'echo $$ > {dir}/daemon; exec sleep 601' > /dev/null 2>&1 < /dev/null & ) &
          while [ ! -s {dir}/setsid ] || [ ! -s {dir}/daemon ]; do sleep 0.05; done
          echo ready
          {last}
"#
    )
}

fn pids_of(pids: &Path) -> Vec<(&'static str, i32)> {
    ["step", "setsid", "daemon"]
        .into_iter()
        .map(|name| (name, read_pid(&pids.join(name))))
        .collect()
}

/// Starts a job that sleeps, sends `signal` once it runs, and checks that kiln exits with
/// `status`, every process of the job ended and the run directory is gone.
fn signal_stops_the_run(signal: &str, status: i32) {
    let pids = tempfile::tempdir().expect("temp dir");
    let tmp = tempfile::tempdir().expect("temp dir");
    let yaml = format!(
        "on: push\njobs:\n  sleepy:\n    runs-on: ubuntu-latest\n    steps:{}",
        detaching_step(pids.path(), "sleep 600")
    );
    let repo = repo_with_workflow(&yaml);
    let tmp_dir = tmp.path().to_str().expect("utf-8 path");
    let running = spawn_kiln_run(repo.path(), &["--executor", "host"], &[("TMPDIR", tmp_dir)]);
    running.wait_for_output("ready", Duration::from_secs(60));
    let processes = pids_of(pids.path());
    let dirs = run_dirs(tmp.path());
    assert_eq!(dirs.len(), 1, "the run has its directory");
    // Other users cannot enter it: the jobs' scripts hold secrets.
    let mode = std::fs::metadata(&dirs[0])
        .expect("run dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{:o}", mode);
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &running.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let outcome = running.wait(Duration::from_secs(30));
    assert_eq!(outcome.status, status, "{}", outcome.all_output());
    assert!(
        outcome.stdout.contains(&format!("interrupted ({signal})")),
        "{}",
        outcome.all_output()
    );
    assert_all_end(&processes);
    assert!(
        run_dirs(tmp.path()).is_empty(),
        "left behind: {:?}",
        run_dirs(tmp.path())
    );
}

#[test]
fn sigterm_stops_the_jobs_cleans_up_and_exits_143() {
    signal_stops_the_run("SIGTERM", 143);
}

#[test]
fn sighup_stops_the_jobs_cleans_up_and_exits_129() {
    signal_stops_the_run("SIGHUP", 129);
}

#[test]
fn a_step_that_runs_on_cancellation_is_stopped_after_the_grace_period() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let yaml = "on: push\njobs:\n  stubborn:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ready; sleep 600\n      - if: always()\n        run: echo cleaning; sleep 600\n";
    let repo = repo_with_workflow(yaml);
    let tmp_dir = tmp.path().to_str().expect("utf-8 path");
    let running = spawn_kiln_run(repo.path(), &["--executor", "host"], &[("TMPDIR", tmp_dir)]);
    running.wait_for_output("ready", Duration::from_secs(60));
    let started = Instant::now();
    let sent = Command::new("kill")
        .args(["-TERM", &running.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let outcome = running.wait(Duration::from_secs(40));
    let took = started.elapsed();
    assert_eq!(outcome.status, 143, "{}", outcome.all_output());
    // The always() step started, and was stopped once the grace period (10 s) was over.
    assert!(outcome.stdout.contains("cleaning"), "{}", outcome.stdout);
    assert!(
        outcome.stdout.contains("stopping them now"),
        "{}",
        outcome.stdout
    );
    assert!(took >= Duration::from_secs(9), "stopped after {took:?}");
    assert!(run_dirs(tmp.path()).is_empty());
}

#[test]
fn processes_a_job_detaches_end_with_the_job() {
    let pids = tempfile::tempdir().expect("temp dir");
    let yaml = format!(
        "on: push\njobs:\n  daemons:\n    runs-on: ubuntu-latest\n    steps:{}      - run: echo next step\n",
        detaching_step(pids.path(), "true")
    );
    let repo = repo_with_workflow(&yaml);
    let outcome = kiln_run(
        repo.path(),
        &["--executor", "host"],
        Duration::from_secs(60),
    );
    outcome.assert_success();
    let processes = pids_of(pids.path());
    // The step's own process ended normally; the two it detached must be gone too.
    assert_all_end(&processes);
}

/// A repository whose `.github/workflows/` holds a link to a file outside of it, whose lines
/// must never appear in kiln's output.
fn repo_with_outside_link() -> (Repo, tempfile::TempDir) {
    let outside = tempfile::tempdir().expect("temp dir");
    let target = outside.path().join("private.yml");
    std::fs::write(&target, "top-secret-line: do not print me\n").expect("write");
    let repo = repo_with_workflow(
        "on: push\njobs:\n  ok:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo fine\n",
    );
    std::os::unix::fs::symlink(&target, repo.path().join(".github/workflows/evil.yml"))
        .expect("symlink");
    (repo, outside)
}

#[test]
fn a_workflow_link_leading_outside_the_repository_is_refused_by_every_command() {
    let (repo, _outside) = repo_with_outside_link();
    let run = kiln_run(
        repo.path(),
        &["--executor", "host"],
        Duration::from_secs(60),
    );
    let validate = kiln(repo.path(), &["validate"]);
    let plan = kiln(repo.path(), &["plan"]);
    for (command, status, output) in [
        ("run", run.status, run.all_output()),
        (
            "validate",
            validate.0,
            format!("{}{}", validate.1, validate.2),
        ),
        ("plan", plan.0, format!("{}{}", plan.1, plan.2)),
    ] {
        assert_eq!(status, 2, "kiln {command}: {output}");
        assert!(
            output.contains("evil.yml leads outside the repository"),
            "kiln {command}: {output}"
        );
        assert!(
            !output.contains("top-secret-line"),
            "kiln {command}: {output}"
        );
    }
}

#[test]
fn a_workflow_link_inside_the_repository_is_followed_by_every_command() {
    let repo = repo_with_workflow(
        "on: push\njobs:\n  ok:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo fine\n",
    );
    repo.write(
        "ci/shared.yml",
        "on: push\njobs:\n  linked:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo linked-ran\n",
    );
    std::os::unix::fs::symlink(
        "../../ci/shared.yml",
        repo.path().join(".github/workflows/shared.yml"),
    )
    .expect("symlink");
    let run = kiln_run(
        repo.path(),
        &["--executor", "host"],
        Duration::from_secs(60),
    );
    run.assert_success();
    assert!(run.stdout.contains("linked-ran"), "{}", run.stdout);
    let (status, out, err) = kiln(repo.path(), &["validate"]);
    assert_eq!(status, 0, "{out}{err}");
    let (status, out, err) = kiln(repo.path(), &["plan"]);
    assert_eq!(status, 0, "{out}{err}");
    assert!(out.contains("linked"), "{out}");
}

#[test]
fn a_called_workflow_outside_github_workflows_is_refused_before_it_is_read() {
    for uses in ["./../x.yml", "./.github/workflows/../../x.yml"] {
        let repo = repo_with_workflow(&format!("on: push\njobs:\n  call:\n    uses: {uses}\n"));
        let run = kiln_run(
            repo.path(),
            &["--executor", "host"],
            Duration::from_secs(60),
        );
        let (status, out, err) = kiln(repo.path(), &["validate"]);
        assert_eq!(run.status, 2, "{uses}: {}", run.all_output());
        assert_eq!(status, 1, "{uses}: {out}{err}");
        for output in [run.all_output(), format!("{out}{err}")] {
            assert!(
                output.contains("invalid value workflow reference"),
                "{uses}: {output}"
            );
        }
    }
}
