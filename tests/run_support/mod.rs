//! Shared helpers of the `kiln run` end-to-end tests: throwaway repositories (copies of the
//! examples, or workflows written inline), and running the built `kiln` binary with a time
//! limit, collecting its output and `--report`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// A temporary git repository; removed when dropped.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, relative: &str, content: &str) {
        let path = self.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent directories");
        }
        std::fs::write(path, content).expect("write file");
    }

    /// Commits everything, so checkout and `github.sha` see a real commit.
    pub fn commit(&self) {
        git(self.path(), &["add", "-A"]);
        git(
            self.path(),
            &[
                "-c",
                "user.name=kiln test",
                "-c",
                "user.email=test@example.com",
                "commit",
                "-qm",
                "test",
            ],
        );
    }
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?} failed in {}", dir.display());
}

/// An empty git repository on branch `main` with an origin remote, so the github context has
/// a repository name.
pub fn empty_repo() -> Repo {
    let dir = tempfile::Builder::new()
        .prefix("kiln-run-test")
        .tempdir()
        .expect("temp dir");
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(
        dir.path(),
        &[
            "remote",
            "add",
            "origin",
            "https://github.com/octo/example.git",
        ],
    );
    Repo { dir }
}

/// A repository holding one workflow file.
pub fn repo_with_workflow(yaml: &str) -> Repo {
    let repo = empty_repo();
    repo.write(".github/workflows/test.yml", yaml);
    repo.commit();
    repo
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("read example directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// A committed copy of `examples/<name>`.
pub fn example(name: &str) -> Repo {
    let repo = empty_repo();
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    copy_tree(&source, repo.path());
    repo.commit();
    repo
}

/// How one `kiln run` ended.
#[derive(Debug)]
pub struct Outcome {
    pub status: i32,
    pub pid: u32,
    pub stdout: String,
    pub stderr: String,
    /// The `--report` document, when kiln wrote one.
    pub report: Option<serde_json::Value>,
}

impl Outcome {
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    pub fn report(&self) -> &serde_json::Value {
        self.report
            .as_ref()
            .unwrap_or_else(|| panic!("no report was written\n{}", self.all_output()))
    }

    /// The report entry of the job leg named `name`.
    pub fn job(&self, name: &str) -> &serde_json::Value {
        let jobs = self.report()["jobs"].as_array().expect("jobs array");
        jobs.iter()
            .find(|j| j["name"] == name)
            .unwrap_or_else(|| panic!("no job named {name} in the report: {:#}", self.report()))
    }

    pub fn assert_success(&self) {
        assert_eq!(self.status, 0, "kiln run failed:\n{}", self.all_output());
    }
}

/// Runs `kiln run ARGS --report FILE` in `dir`, failing the test after `limit`.
pub fn kiln_run(dir: &Path, args: &[&str], limit: Duration) -> Outcome {
    kiln_run_env(dir, args, &[], limit)
}

pub fn kiln_run_env(dir: &Path, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Outcome {
    spawn_kiln_run(dir, args, env).wait(limit)
}

/// A `kiln run` in progress.
pub struct RunningKiln {
    child: std::process::Child,
    args: Vec<String>,
    files: tempfile::TempDir,
}

impl RunningKiln {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What kiln printed so far.
    pub fn stdout_so_far(&self) -> String {
        std::fs::read_to_string(self.files.path().join("stdout")).unwrap_or_default()
    }

    /// Waits (bounded) until stdout contains `text`.
    pub fn wait_for_output(&self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.stdout_so_far().contains(text) {
            assert!(
                Instant::now() < deadline,
                "kiln never printed {text:?}:\n{}",
                self.stdout_so_far()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT, as Ctrl-C in a terminal does.
    pub fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -INT failed");
    }

    pub fn wait(mut self, limit: Duration) -> Outcome {
        let pid = self.child.id();
        let read =
            |name: &str| std::fs::read_to_string(self.files.path().join(name)).unwrap_or_default();
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for kiln") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "kiln run {:?} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    self.args,
                    read("stdout"),
                    read("stderr")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let report = std::fs::read_to_string(self.files.path().join("report.json"))
            .ok()
            .map(|text| serde_json::from_str(&text).expect("the report is JSON"));
        Outcome {
            status: status.code().unwrap_or(-1),
            pid,
            stdout: read("stdout"),
            stderr: read("stderr"),
            report,
        }
    }
}

/// Starts `kiln run ARGS --report FILE` in `dir` without waiting for it.
pub fn spawn_kiln_run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> RunningKiln {
    let files = tempfile::tempdir().expect("temp dir");
    let child = Command::new(KILN)
        .arg("run")
        .args(args)
        .arg("--report")
        .arg(files.path().join("report.json"))
        .current_dir(dir)
        // Each run's embedded cache lives with its other files, never in the user's home;
        // a test that wants a cache shared by two runs passes its own XDG_CACHE_HOME.
        .env("XDG_CACHE_HOME", files.path().join("cache"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(files.path().join("stdout")).expect("stdout file"))
        .stderr(std::fs::File::create(files.path().join("stderr")).expect("stderr file"))
        .spawn()
        .expect("kiln starts");
    RunningKiln {
        child,
        args: args.iter().map(|a| a.to_string()).collect(),
        files,
    }
}

/// Runs `kiln ARGS` (not `run`) without a report, for `-l`, `-g` and flag errors.
pub fn kiln(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(KILN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("kiln starts");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The `(id, outcome, conclusion)` of every step of a report job.
pub fn steps(job: &serde_json::Value) -> Vec<(String, String, String)> {
    job["steps"]
        .as_array()
        .expect("steps array")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or("").to_owned(),
                s["outcome"].as_str().unwrap_or("").to_owned(),
                s["conclusion"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Whether Docker tests can run: the daemon answers (else a `SKIPPED:` line, or a failure
/// under `KILN_REQUIRE_DOCKER=1`) and the base image `ubuntu-latest` maps to is built.
pub fn docker_with_base_image() -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match kiln_runner::testing::require_docker().await {
            Some(docker) => {
                kiln_runner::testing::ensure_base_image(&docker).await;
                true
            }
            None => false,
        }
    })
}
