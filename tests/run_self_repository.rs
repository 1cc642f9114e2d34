//! `kiln run` with self-repository references (`uses: $/path`): the run's own repository at
//! the commit being run (read from git's objects, not the working tree), `--local-repository`
//! for the `owner/repo@sha` they stand for, a repository without commits, and `$/` inside
//! actions and reusable workflows of other repositories, which means those repositories.

mod run_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use run_support::*;

const LIMIT: Duration = Duration::from_secs(120);

fn say_action(words: &str) -> String {
    format!(
        "name: say\nruns:\n  using: composite\n  steps:\n    - shell: sh\n      run: echo \"{words} from ${{{{ github.action_repository }}}}@${{{{ github.action_ref }}}}\"\n"
    )
}

const WORKFLOW: &str = r#"
on: push
jobs:
  steps:
    runs-on: ubuntu-latest
    steps:
      - uses: $/actions/say
  call:
    uses: $/.github/workflows/callee.yml
"#;

const CALLEE: &str = "on:\n  workflow_call:\njobs:\n  inner:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo 'callee as committed'\n";

/// `kiln run --executor host EXTRA...` in `dir`, which must succeed.
fn run_ok(dir: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec!["--executor", "host"];
    args.extend_from_slice(extra);
    let out = kiln_run(dir, &args, LIMIT);
    out.assert_success();
    out
}

fn assert_printed(out: &Outcome, text: &str) {
    assert!(
        out.stdout.contains(text),
        "{text} missing:\n{}",
        out.all_output()
    );
}

/// Writes `files` (path, content) below `root`.
fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=kiln test",
            "-c",
            "user.email=t@example.com",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?} failed in {}",
        dir.display()
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A repository whose workflow uses `actions/say` saying `words` and calls `callee.yml`,
/// both with `$/`; committed when `commit` is set, with the commit returned.
fn self_using_repo(words: &str, commit: bool) -> (Repo, String) {
    let repo = empty_repo();
    repo.write(".github/workflows/test.yml", WORKFLOW);
    repo.write(".github/workflows/callee.yml", CALLEE);
    repo.write("actions/say/action.yml", &say_action(words));
    if !commit {
        return (repo, String::new());
    }
    repo.commit();
    let sha = git(repo.path(), &["rev-parse", "HEAD"]);
    (repo, sha)
}

#[test]
fn uncommitted_edits_do_not_leak_into_self_references() {
    let (repo, sha) = self_using_repo("committed", true);
    repo.write("actions/say/action.yml", &say_action("uncommitted"));
    repo.write(
        ".github/workflows/callee.yml",
        &CALLEE.replace("as committed", "as edited"),
    );
    let out = run_ok(repo.path(), &[]);
    assert_printed(&out, &format!("committed from octo/example@{sha}"));
    assert_printed(&out, "callee as committed");
    assert!(!out.stdout.contains("uncommitted"), "{}", out.stdout);
    assert!(!out.stdout.contains("as edited"), "{}", out.stdout);
}

#[test]
fn a_repository_without_commits_uses_its_working_tree_with_a_warning() {
    let (repo, _) = self_using_repo("working tree", false);
    let out = run_ok(repo.path(), &[]);
    assert_printed(&out, "working tree from octo/example@");
    assert_printed(&out, "callee as committed");
    let all = out.all_output();
    assert!(all.contains("has no commit"), "{all}");
}

#[test]
fn local_repository_overrides_the_owner_repo_at_sha_a_self_reference_stands_for() {
    let (repo, sha) = self_using_repo("committed", true);
    let other = tempfile::tempdir().expect("temp dir");
    let callee = CALLEE.replace("as committed", "overridden too");
    write_files(
        other.path(),
        &[
            ("actions/say/action.yml", &say_action("overridden")),
            (".github/workflows/callee.yml", &callee),
        ],
    );
    let flag = format!("octo/example@{sha}={}", other.path().display());
    let out = run_ok(repo.path(), &["--local-repository", &flag]);
    assert_printed(&out, "overridden from octo/example@");
    assert_printed(&out, "callee overridden too");
}

/// A bare repository at `BASE/octo/tools` with tag `v1`: a composite action at `wrapper/`
/// that uses its sibling `say/` with `$/`.
fn action_server() -> tempfile::TempDir {
    let base = tempfile::tempdir().expect("temp dir");
    let bare = base.path().join("octo/tools");
    std::fs::create_dir_all(&bare).expect("mkdir");
    git(&bare, &["init", "-q", "--bare"]);
    let work = base.path().join("work");
    std::fs::create_dir_all(work.join("say")).expect("mkdir");
    std::fs::create_dir_all(work.join("wrapper")).expect("mkdir");
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("say/action.yml"), say_action("sibling")).expect("write");
    std::fs::write(
        work.join("wrapper/action.yml"),
        "name: wrapper\nruns:\n  using: composite\n  steps:\n    - uses: $/say\n",
    )
    .expect("write");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "v1"]);
    git(&work, &["tag", "v1"]);
    let url = format!("file://{}", bare.display());
    git(&work, &["push", "-q", &url, "main", "v1"]);
    base
}

#[test]
fn inside_a_remote_action_a_self_reference_is_that_actions_repository_and_ref() {
    let server = action_server();
    let base_url = format!("file://{}", server.path().display());
    let repo = repo_with_workflow(
        "on: push\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: octo/tools/wrapper@v1\n",
    );
    let out = run_ok(repo.path(), &["--action-base-url", &base_url]);
    assert_printed(&out, "sibling from octo/tools@v1");
}

#[test]
fn inside_a_remote_reusable_workflow_a_self_reference_is_that_workflows_repository() {
    let lib = tempfile::tempdir().expect("temp dir");
    write_files(
        lib.path(),
        &[
            (
                ".github/workflows/outer.yml",
                "on:\n  workflow_call:\njobs:\n  deeper:\n    uses: $/.github/workflows/inner.yml\n",
            ),
            (
                ".github/workflows/inner.yml",
                "on:\n  workflow_call:\njobs:\n  inner:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: $/actions/say\n",
            ),
            ("actions/say/action.yml", &say_action("library")),
        ],
    );
    let repo = repo_with_workflow(
        "on: push\njobs:\n  call:\n    uses: octo/lib/.github/workflows/outer.yml@v1\n",
    );
    let flag = format!("octo/lib@v1={}", lib.path().display());
    let out = run_ok(repo.path(), &["--local-repository", &flag]);
    assert_printed(&out, "library from octo/lib@v1");
}
