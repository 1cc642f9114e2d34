//! Behaviour parity of `kiln run` with GitHub's runner: each folder of `tests/parity/` is a
//! tiny repository whose workflow checks one area of behaviour and fails (a step exits
//! non-zero) when kiln diverges. The cases run in parallel threads so the file stays fast.

mod run_support;

use run_support::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);

/// One parity case: its folder, how kiln must end, and lines its output must (not) hold.
struct Case {
    name: &'static str,
    /// `true` when every job must succeed; `false` when the case checks a failing job's
    /// effects and kiln must exit 1.
    succeeds: bool,
    /// Extra `kiln run` arguments (secrets, variables).
    args: &'static [&'static str],
    present: &'static [&'static str],
    absent: &'static [&'static str],
}

const fn case(name: &'static str, present: &'static [&'static str]) -> Case {
    Case {
        name,
        succeeds: true,
        args: &[],
        present,
        absent: &[],
    }
}

/// Host-mode cases.
const HOST_CASES: &[Case] = &[
    case("env-precedence", &["env precedence ok"]),
    case("env-multiline", &["multiline env ok"]),
    case("github-path", &["github path ok", "from-second"]),
    Case {
        succeeds: false,
        absent: &["SHOULD-NOT-RUN"],
        ..case(
            "if-forms",
            &[
                "case-insensitive compare ran",
                "the string false is truthy",
                "success after tolerated failure",
                "failure branch ran",
                "always branch ran",
                "job status failure",
            ],
        )
    },
    case(
        "outputs-needs",
        &[
            "consumed outputs ok",
            "fan-out leg a",
            "fan-out leg b",
            "transitive ok",
        ],
    ),
    Case {
        succeeds: false,
        absent: &["SHOULD-NOT-RUN"],
        ..case(
            "needs-failure",
            &["failure job ran", "always job saw failure skipped skipped"],
        )
    },
    case(
        "job-continue-on-error",
        &["ran after a continue-on-error job"],
    ),
    case(
        "matrix",
        &[
            "leg=alpha-1 extra=added-to-existing",
            "leg=gamma-9 extra= index=3 total=4",
            "config one true",
            "config two false",
        ],
    ),
    Case {
        absent: &["SHOULD-NOT-PRINT"],
        ..case(
            "shells",
            &[
                "default bash ignored the pipe failure",
                "sh ran",
                "python ran 3",
                "perl ran",
                "shell outcomes ok",
                "job default shell sh",
                "step shell bash",
            ],
        )
    },
    case(
        "working-directory",
        &[
            "workflow marker",
            "job marker",
            "step beats job default",
            "absolute working directory",
            "expression working directory",
        ],
    ),
    Case {
        args: &[
            "--secret",
            "PARITY_TOKEN=s3cr3t-parity-value",
            "--secret",
            "PARITY_BLOCK=line-one-secret\nline-two-secret",
        ],
        absent: &[
            "value is hunter2-dynamic",
            "step hunter2-dynamic",
            "secret is s3cr3t",
            "first line: line-one",
        ],
        ..case(
            "masks-secrets",
            &[
                "dynamic value is ***",
                "still masked in a later step ***",
                "secret is ***",
                "first line: ***",
            ],
        )
    },
    case("expressions", &["expression functions ok", "hashFiles ok"]),
    case(
        "default-env",
        &[
            "default env ok",
            "generated id __run\n",
            "generated id __run_2",
            "GITHUB_JOB kept",
            "event payload ok",
        ],
    ),
    case("step-timeout", &["step timed out after three seconds"]),
    case(
        "workflow-commands",
        &[
            "set-output still works",
            "set-env is disabled",
            "visible notmasked-while-stopped",
            "escapes decoded",
        ],
    ),
    Case {
        absent: &["SHOULD-NOT-RUN"],
        ..case(
            "composite-action",
            &[
                "helper script ran from the action folder",
                "composite outputs ok",
                "nested composite ok",
                "composite failure() step ran",
                "composite failure seen",
            ],
        )
    },
    case(
        "node-action",
        &[
            "`pre` execution is not supported for local action",
            "main ran for First Action",
            "node outputs ok",
            // Post steps run in reverse order, each with its own action's state.
            "post ran with second-state",
            "post ran with First Action-state",
        ],
    ),
    case(
        "step-summary",
        &[
            "each step gets a fresh summary file",
            "file command files exist",
            "### First summary",
        ],
    ),
    case(
        "file-command-errors",
        &[
            "Matching delimiter not found 'END'",
            "Invalid format 'just words'",
            "Can't store NODE_OPTIONS output parameter",
            "file command errors ok",
        ],
    ),
    Case {
        args: &["--var", "PARITY_VAR=from-var"],
        absent: &["SHOULD-NOT-RUN"],
        ..case(
            "job-conditions",
            &[
                "job if on needs output ran",
                "idiom job ran after a skipped need",
                "vars ok flaky=true",
                "vars ok flaky=false",
            ],
        )
    },
    case(
        "template-keys",
        &[
            "leg python=3.10 os=linux total=3",
            "leg python=3.11 os=linux total=3",
            "leg python=3.12 os=linux total=3",
            "job env workspace ok",
            "inputs fixed=one computed=two level=3",
            "strategy leg x of 2 fail-fast=false",
            "strategy leg y of 2 fail-fast=false",
            "defaults shell from an insert",
        ],
    ),
    case(
        "self-repository",
        &[
            "nothing checked out",
            "greet parity via shout from octo/example",
            "self composite outputs ok",
            "self pre ran for octo/example",
            "self main ran with state yes",
            "self post ran with state yes",
            "greet caller via shout from octo/example",
            "called workflow greeted",
        ],
    ),
    Case {
        args: &["create"],
        ..case(
            "filterless-event",
            &[
                "The event 'create' takes no filters: 'tags' is ignored",
                "create ran for create",
            ],
        )
    },
];

/// act users' habits that must keep working under `kiln run` (host mode).
const ACT_HABIT_CASES: &[Case] = &[
    Case {
        args: &[
            "workflow_dispatch",
            "-e",
            "event.json",
            "--input",
            "count=5",
        ],
        ..case(
            "act-dispatch-payload-inputs",
            &["dispatch payload inputs ok"],
        )
    },
    Case {
        args: &[
            "--action-offline-mode",
            "--local-repository",
            "https://github.com/octo/greeter@v1=greeter",
            "--local-repository",
            "https://github.com/octo/shared.git@v2=shared",
        ],
        ..case(
            "act-local-repository-url",
            &[
                "remote action from the url form ok",
                "reusable workflow from the url form ok",
            ],
        )
    },
    Case {
        absent: &["SHOULD-NOT-RUN"],
        ..case(
            "act-env",
            &["local-only step ran", "ACT is true in local runs"],
        )
    },
];

/// Cases that need containers (job container, services, Docker actions).
const DOCKER_CASES: &[Case] = &[case(
    "docker-container-services",
    &[
        "container step ok",
        "service web answered",
        "job context ok",
        "container GITHUB_ENV ok",
        "docker action ran with parity-word",
        "docker action outputs ok",
        "docker uses ran with from-env",
        "self action read from-the-commit",
        "self docker action ok",
        "container from a matrix mapping ok",
    ],
)];

fn parity_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("parity")
        .join(name)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("read case directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Runs one case and returns what went wrong, if anything.
fn run_case(case: &Case, executor: &str) -> Option<String> {
    let repo = empty_repo();
    copy_tree(&parity_dir(case.name), repo.path());
    repo.commit();
    let mut args = vec!["--executor", executor];
    args.extend_from_slice(case.args);
    let out = kiln_run(repo.path(), &args, LIMIT);
    let mut problems = Vec::new();
    let expected_status = if case.succeeds { 0 } else { 1 };
    if out.status != expected_status {
        problems.push(format!(
            "exit status {} instead of {expected_status}",
            out.status
        ));
    }
    for line in case.present {
        if !out.stdout.contains(line) {
            problems.push(format!("missing output {line:?}"));
        }
    }
    for line in case.absent {
        if out.stdout.contains(line) {
            problems.push(format!("unexpected output {line:?}"));
        }
    }
    (!problems.is_empty()).then(|| {
        format!(
            "case {} ({executor}): {}\n{}",
            case.name,
            problems.join("; "),
            out.all_output()
        )
    })
}

/// Runs the cases on a few worker threads (the machine is small) and fails with every
/// divergence at once.
fn run_all(cases: &[Case], executor: &str) {
    const WORKERS: usize = 4;
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                while let Some(case) = cases.get(next.fetch_add(1, Ordering::SeqCst)) {
                    if let Some(failure) = run_case(case, executor) {
                        failures.lock().expect("failures lock").push(failure);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("failures lock");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_case_folder_is_listed() {
    let listed: Vec<&str> = HOST_CASES
        .iter()
        .chain(DOCKER_CASES)
        .chain(ACT_HABIT_CASES)
        .map(|c| c.name)
        .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/parity");
    for entry in std::fs::read_dir(root).expect("tests/parity exists") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8");
        assert!(listed.contains(&name.as_str()), "case {name} is not run");
    }
}

#[test]
fn host_cases_match_github() {
    run_all(HOST_CASES, "host");
}

#[test]
fn act_habit_cases_keep_working() {
    run_all(ACT_HABIT_CASES, "host");
}

#[test]
fn docker_cases_match_github() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let Some(docker) = runtime.block_on(kiln_runner::testing::require_docker()) else {
        return;
    };
    runtime.block_on(async {
        kiln_runner::testing::ensure_busybox_image(&docker).await;
        // `ubuntu-latest` maps to the base image in Docker mode.
        kiln_runner::testing::ensure_base_image(&docker).await;
    });
    run_all(DOCKER_CASES, "docker");
}
