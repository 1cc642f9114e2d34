//! End-to-end tests of the language commands through the built `kiln` binary: what a user
//! types, what they see, and the exit status they script against.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("kiln runs")
}

fn kiln_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("kiln finishes")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn examples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
}

#[test]
fn validate_reports_every_problem_with_positions_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yml");
    std::fs::write(
        &file,
        "on: push\njobs:\n  build:\n    runs_on: ubuntu-latest\n    steps:\n      - run: echo\n        uses: actions/checkout@v4\n  test:\n    needs: nope\n    runs-on: x\n    if: ${{ secrets.T }}\n    steps:\n      - run: echo\n",
    )
    .unwrap();
    let out = kiln(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let shown = file.display().to_string();
    assert!(
        text.contains(&format!("{shown}:4:5: error: Unexpected value 'runs_on'")),
        "{text}"
    );
    assert!(text.contains("did you mean `runs-on`?"), "{text}");
    assert!(
        text.contains(&format!("{shown}:6:9: error:")),
        "run+uses: {text}"
    );
    assert!(
        text.contains("Job 'test' depends on unknown job 'nope'"),
        "{text}"
    );
    assert!(
        text.contains("Unrecognized named-value: 'secrets'"),
        "{text}"
    );

    let json = kiln(&["validate", "--format", "json", file.to_str().unwrap()]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["files"], 1);
    assert!(doc["errors"].as_u64().unwrap() >= 5, "{doc}");
    assert_eq!(doc["diagnostics"][0]["line"], 4);
    assert_eq!(doc["diagnostics"][0]["col"], 5);
}

#[test]
fn validate_accepts_every_example_and_checks_pinning_on_request() {
    for example in [
        "matrix-build",
        "needs-outputs",
        "composite-action",
        "reusable-workflow",
        "artifacts-fan-in",
    ] {
        let dir = examples().join(example).join(".github/workflows");
        let out = kiln(&["validate", dir.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{example}: {}", stdout(&out));
    }
    let dir = examples().join("composite-action/.github/workflows");
    let out = kiln(&["validate", "--require-pinned", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("'actions/checkout@v4' is not pinned"),
        "{}",
        stdout(&out)
    );
    let action = examples().join("composite-action/.github/actions/greet/action.yml");
    assert_eq!(
        kiln(&["validate", action.to_str().unwrap()]).status.code(),
        Some(0)
    );
}

#[test]
fn plan_json_lists_each_matrix_leg_with_github_names_and_stages() {
    let file = examples().join("matrix-build/.github/workflows/ci.yml");
    let out = kiln(&["plan", "-W", file.to_str().unwrap(), "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = doc["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "test (ubuntu-latest, 3.11, minimal)",
            "test (ubuntu-latest, 3.12, minimal)",
            "test (ubuntu-latest, 3.12, full)",
            "test (ubuntu-latest, 3.13, minimal)",
            "summary"
        ]
    );
    assert_eq!(doc["jobs"][2]["matrix"]["experimental"], true);
    assert_eq!(doc["jobs"][4]["matrix"], serde_json::Value::Null);
    assert_eq!(doc["jobs"][4]["needs"], serde_json::json!(["test"]));
    assert_eq!(
        doc["jobs"][0]["runs_on"],
        serde_json::json!(["ubuntu-latest"])
    );
    assert_eq!(doc["stages"].as_array().unwrap().len(), 2);
    assert_eq!(doc["stages"][1], serde_json::json!(["summary"]));
}

#[test]
fn plan_follows_local_reusable_workflows_and_renders_dot() {
    let file = examples().join("reusable-workflow/.github/workflows/main.yml");
    let out = kiln(&["plan", "-W", file.to_str().unwrap(), "--format", "dot"]);
    assert_eq!(out.status.code(), Some(0));
    let dot = stdout(&out);
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(dot.contains("\"server / build\" -> \"publish\";"), "{dot}");
    assert!(dot.contains("\"client / build\" -> \"publish\";"), "{dot}");
    // A workflow that does not run on the event is not planned.
    let out = kiln(&["plan", "-W", file.to_str().unwrap(), "pull_request"]);
    assert_eq!(stdout(&out), "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no workflow"));
}

#[test]
fn expr_prints_kind_and_value_or_the_error() {
    let out = kiln(&["expr", "format('{0}-{1}', 'a', 1.5)"]);
    assert_eq!(stdout(&out).trim(), r#"{"kind":"String","value":"a-1.5"}"#);
    assert_eq!(out.status.code(), Some(0));

    let dir = tempfile::tempdir().unwrap();
    let contexts = dir.path().join("ctx.json");
    std::fs::write(
        &contexts,
        r#"{"github":{"ref":"refs/heads/main"},"matrix":{"os":"linux"}}"#,
    )
    .unwrap();
    let out = kiln(&[
        "expr",
        "github.ref == 'REFS/heads/main' && matrix.os",
        "--contexts",
        contexts.to_str().unwrap(),
    ]);
    assert_eq!(stdout(&out).trim(), r#"{"kind":"String","value":"linux"}"#);

    let out = kiln(&["expr", "nosuch.value"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "parsing");
    assert!(doc["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Unrecognized named-value: 'nosuch'"));

    let out = kiln(&["expr", "failure()", "--job-status", "failure"]);
    assert_eq!(stdout(&out).trim(), r#"{"kind":"Boolean","value":true}"#);
}

#[test]
fn expr_batch_answers_each_line_in_order() {
    let lines = concat!(
        r#"{"expr":"1 == '1'"}"#,
        "\n",
        r#"{"expr":"a.b[1]","contexts":{"a":{"b":[10,20]}}}"#,
        "\n",
        r#"{"expr":"toJSON(x)","contexts":{"x":{"k":[1]}}}"#,
        "\n",
        r#"{"expr":"fromJSON('{')"}"#,
        "\n",
        "not json\n",
    );
    let out = kiln_with_stdin(&["expr", "--batch", "-"], lines);
    assert_eq!(out.status.code(), Some(1), "one line failed");
    let results: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 5);
    assert_eq!(
        results[0],
        serde_json::json!({"kind":"Boolean","value":true})
    );
    assert_eq!(results[1], serde_json::json!({"kind":"Number","value":20}));
    assert_eq!(results[2]["value"], "{\n  \"k\": [\n    1\n  ]\n}");
    assert_eq!(results[3]["error"]["kind"], "evaluation");
    assert_eq!(results[4]["error"]["kind"], "input");
}

#[test]
fn hash_files_matches_github_vectors_and_reports_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in [
        ("a.txt", "A"),
        ("b/c.txt", "c"),
        ("b.txt", "b"),
        ("src/x.json", "x"),
    ] {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let ws = dir.path().to_str().unwrap();
    let out = kiln(&["hash-files", "--workspace", ws, "a.txt"]);
    assert_eq!(
        stdout(&out).trim(),
        "1cd6ef71e6e0ff46ad2609d403dc3fee244417089aa4461245a4e4fe23a55e42"
    );
    let out = kiln(&["hash-files", "--workspace", ws, "--list", "**/*.txt"]);
    assert_eq!(stdout(&out), "a.txt\nb/c.txt\nb.txt\n");
    let out = kiln(&["hash-files", "--workspace", ws, "nomatch*"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "\n"));
    let out = kiln(&["hash-files", "--workspace", ws, "../x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hashFiles failed"));
}
