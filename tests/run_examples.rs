//! Every example under `examples/` runs clean as its header comment says to run it: kiln
//! succeeds, no line looks like an error or a warning, and the lines that show what the
//! example is about are there with the right values. README's own command runs as written,
//! on the example inside this repository.

mod run_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use run_support::*;

const LIMIT: Duration = Duration::from_secs(180);

/// One example: how to run it and the lines its output must hold.
struct Example {
    name: &'static str,
    args: &'static [&'static str],
    /// Needs Docker (services, job containers).
    docker: bool,
    shows: &'static [&'static str],
}

const EXAMPLES: &[Example] = &[
    Example {
        name: "matrix-build",
        args: &[],
        docker: false,
        shows: &[
            "python=3.11 variant=minimal",
            "python=3.12 variant=full",
            "experimental=true",
            "python=3.13 variant=minimal",
            "sources: a.txt b.txt",
            "matrix finished with success",
        ],
    },
    Example {
        name: "needs-outputs",
        args: &[],
        docker: false,
        shows: &[
            "building 1.4.5",
            "releasing 1.4.5 on stable",
            "First line of the notes",
            "Second line",
        ],
    },
    Example {
        name: "composite-action",
        args: &[],
        docker: false,
        shows: &["Hello, kiln!", "the greeting has 12 characters"],
    },
    Example {
        name: "reusable-workflow",
        args: &["-s", "SIGNING_KEY=any-value"],
        docker: false,
        shows: &[
            "building server (optimize=true)",
            "building client (optimize=false)",
            "publishing server.tar and client.tar",
        ],
    },
    Example {
        name: "artifacts-fan-in",
        args: &[],
        docker: false,
        shows: &["merged 40 lines from 4 shards"],
    },
    Example {
        name: "services-healthcheck",
        args: &[],
        docker: true,
        shows: &[" web"],
    },
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Lines that no clean run prints: errors and warnings from kiln or the steps, failed steps,
/// and a shell's or tool's complaints.
fn trouble(output: &str) -> Vec<&str> {
    const SIGNS: &[&str] = &[
        "error",
        "warning",
        "no such file",
        "not found",
        "cannot ",
        "can't ",
        "denied",
        "fatal",
        "panicked",
        "traceback",
        "✘",
    ];
    output
        .lines()
        .filter(|line| {
            let lower = line.to_lowercase();
            SIGNS.iter().any(|sign| lower.contains(sign))
        })
        .collect()
}

#[test]
fn trouble_is_spotted_in_any_form() {
    let output = "[m/t]   cat: 'src/*.txt': No such file or directory\n\
                  [m/t] ✘ Run x: failure (1ms)\n\
                  [m/t] ::warning::old\n\
                  [m/t]   sources: a.txt b.txt\n\
                  kiln: executor: host (--executor host)\n";
    assert_eq!(trouble(output).len(), 3, "{:?}", trouble(output));
}

/// The checks every example's run must pass; returns the problems found.
fn check(example: &Example, out: &Outcome) -> Vec<String> {
    let mut problems = Vec::new();
    if out.status != 0 {
        problems.push(format!("exit status {}", out.status));
    }
    for line in trouble(&out.all_output()) {
        problems.push(format!("trouble: {line}"));
    }
    for line in example.shows {
        if !out.stdout.contains(line) {
            problems.push(format!("missing output {line:?}"));
        }
    }
    if let Some(report) = &out.report {
        for job in report["jobs"].as_array().into_iter().flatten() {
            if job["conclusion"] != "success" {
                problems.push(format!("job {} ended {}", job["name"], job["conclusion"]));
            }
        }
    }
    problems
}

/// The digest every leg of matrix-build printed, which must be the one `hashFiles('src/**')`
/// gives for the example's sources (not the digest of nothing).
fn check_digest(out: &Outcome, sources: &Path) -> Vec<String> {
    let (status, expected, stderr) = kiln(sources, &["hash-files", "--workspace", ".", "src/**"]);
    assert_eq!(status, 0, "kiln hash-files: {stderr}");
    let expected = expected.trim();
    let printed: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|line| line.split("sources digest ").nth(1))
        .map(str::trim)
        .collect();
    let mut problems = Vec::new();
    if expected.len() != 64 {
        problems.push(format!(
            "hash-files gave {expected:?} for the example's sources"
        ));
    }
    if printed.len() != 4 || printed.iter().any(|d| *d != expected) {
        problems.push(format!(
            "every leg must print `sources digest {expected}`, got {printed:?}"
        ));
    }
    problems
}

/// Runs a committed copy of the example in a repository of its own; `Some(report)` when it
/// did not run clean.
fn run_example(case: &Example, executor: &str) -> Option<String> {
    let repo = example(case.name);
    let mut args = vec!["--executor", executor];
    args.extend_from_slice(case.args);
    let out = kiln_run(repo.path(), &args, LIMIT);
    let mut problems = check(case, &out);
    if case.name == "matrix-build" {
        problems.extend(check_digest(&out, repo.path()));
    }
    (!problems.is_empty()).then(|| {
        format!(
            "{} ({executor}): {}\n--- output:\n{}",
            case.name,
            problems.join("\n"),
            out.all_output()
        )
    })
}

#[test]
fn every_example_folder_is_listed() {
    for entry in std::fs::read_dir(root().join("examples")).expect("examples/") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            EXAMPLES.iter().any(|e| e.name == name),
            "example {name} is not run by this test"
        );
    }
}

#[test]
fn host_examples_run_clean() {
    let problems: Vec<String> = EXAMPLES
        .iter()
        .filter(|e| !e.docker)
        .filter_map(|e| run_example(e, "host"))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn docker_examples_run_clean() {
    if !docker_with_base_image() {
        return;
    }
    let problems: Vec<String> = EXAMPLES
        .iter()
        .filter(|e| e.docker)
        .filter_map(|e| run_example(e, "docker"))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// README's example command, as written there, from this repository's root: the example is
/// a directory of this repository, not a repository of its own.
#[test]
fn readmes_example_command_runs_clean() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let command = readme
        .lines()
        .find(|line| line.starts_with("cargo run --release -- run "))
        .expect("README shows `cargo run --release -- run ...`");
    let args: Vec<&str> = command
        .trim_start_matches("cargo run --release -- run ")
        .split_whitespace()
        .collect();
    let directory = args
        .windows(2)
        .find(|pair| pair[0] == "-C")
        .map(|pair| pair[1])
        .expect("README's command names the example with -C");
    let name = directory.trim_start_matches("examples/");
    let example = EXAMPLES
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("README runs {directory}, which this test does not know"));
    let out = kiln_run(&root(), &args, LIMIT);
    let mut problems = check(example, &out);
    let sources = root().join(directory);
    let digest_problems = check_digest(&out, &sources);
    if !digest_problems.is_empty() {
        problems.extend(digest_problems);
        problems.push(format!(
            "(checkout writes the committed files: uncommitted changes under {directory} \
             make the digests differ)"
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\n--- output:\n{}",
        problems.join("\n"),
        out.all_output()
    );
}
