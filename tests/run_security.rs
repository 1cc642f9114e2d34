//! Hostile cache entries end to end: a first `kiln run` saves, through `actions/cache/save`, an
//! entry of symlinks (a chain, each link harmless by its text, that climbs to the filesystem
//! root) and an entry holding a file under that chain; a second run restores both, with the
//! host executor and with the Docker executor. Nothing may be written outside the workspace
//! (the file aims at a directory of this test's), the chain is refused with a message saying
//! why, and a chain planted in the workspace by other means is not written through either.

mod run_support;

use run_support::*;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(300);
const IMAGE: &str = "kiln-base:bookworm";
/// Links in the chain: each climbs one directory more than the one before, from the workspace
/// to the filesystem root (workspaces are far less deep; the kernel follows at most 40 links in
/// one path).
const CHAIN: usize = 24;

/// A `run:` step making `d/x/l1 -> ..`, `d/x/lN -> l(N-1)/..` up to `CHAIN` and
/// `d/x/root -> lCHAIN`: each link stays inside `d` by its text alone; together `d/x/root` is `/`.
fn plant_chain() -> String {
    format!(
        r#"      - run: |
          mkdir -p d/x && ln -s .. d/x/l1
          for i in $(seq 2 {CHAIN}); do ln -s "l$((i - 1))/.." "d/x/l$i"; done
          ln -s l{CHAIN} d/x/root
"#
    )
}

/// The first run's workflow: entry `write` (for `path: d/**/pwned`) holds the file
/// `d/x/root/<target>/pwned` as real directories; entry `links` (for `path: d`) holds the chain
/// of [`plant_chain`], so that after it `d/x/root` is `/`.
fn save_workflow(target: &Path) -> String {
    let inside = target.display().to_string();
    let inside = inside.trim_start_matches('/');
    format!(
        r#"
on: push
jobs:
  save:
    runs-on: ubuntu-latest
    steps:
      - run: mkdir -p "d/x/root/{inside}" && echo pwned > "d/x/root/{inside}/pwned"
      - uses: actions/cache/save@v4
        with:
          path: d/**/pwned
          key: write
      - run: rm -rf d
{plant}      - uses: actions/cache/save@v4
        with:
          path: d
          key: links
"#,
        plant = plant_chain()
    )
}

/// The second run's workflow: job `restore` restores `links` then `write`; job `planted` makes
/// the chain itself (as an older kiln's restore would have left it) and restores `write`.
fn restore_workflow() -> String {
    format!(
        r#"
on: push
jobs:
  restore:
    runs-on: ubuntu-latest
    steps:
      - id: links
        uses: actions/cache/restore@v4
        with:
          path: d
          key: links
      - id: write
        uses: actions/cache/restore@v4
        with:
          path: d/**/pwned
          key: write
      - id: look
        run: |
          echo "links=${{{{ steps.links.outputs.cache-hit }}}}" >> "$GITHUB_OUTPUT"
          echo "write=${{{{ steps.write.outputs.cache-hit }}}}" >> "$GITHUB_OUTPUT"
          echo "root=$(test -L d/x/root && echo link || echo none)" >> "$GITHUB_OUTPUT"
    outputs:
      links: ${{{{ steps.look.outputs.links }}}}
      write: ${{{{ steps.look.outputs.write }}}}
      root: ${{{{ steps.look.outputs.root }}}}
  planted:
    runs-on: ubuntu-latest
    steps:
{plant}      - id: write
        uses: actions/cache/restore@v4
        with:
          path: d/**/pwned
          key: write
      - id: look
        run: echo "write=${{{{ steps.write.outputs.cache-hit }}}}" >> "$GITHUB_OUTPUT"
    outputs:
      write: ${{{{ steps.look.outputs.write }}}}
"#,
        plant = plant_chain()
    )
}

/// Saves the two entries with a host run and restores them with `executor`; checks that the
/// target directory stayed empty and that the restore said what it refused.
fn symlink_chain_restore(executor: &str) {
    let target = tempfile::Builder::new()
        .prefix("kiln-escape-target")
        .tempdir()
        .expect("target dir");
    let repo = empty_repo();
    repo.write(".github/workflows/save.yml", &save_workflow(target.path()));
    repo.write(".github/workflows/restore.yml", &restore_workflow());
    repo.commit();
    let cache_home = tempfile::tempdir().expect("cache dir");
    let env = [(
        "XDG_CACHE_HOME",
        cache_home.path().to_str().expect("utf-8 path"),
    )];
    let save = kiln_run_env(
        repo.path(),
        &["--executor", "host", "-W", ".github/workflows/save.yml"],
        &env,
        LIMIT,
    );
    save.assert_success();
    assert_eq!(
        save.all_output().matches("Cache saved with key").count(),
        2,
        "{}",
        save.all_output()
    );

    let run = kiln_run_env(
        repo.path(),
        &[
            "--executor",
            executor,
            "-W",
            ".github/workflows/restore.yml",
        ],
        &env,
        LIMIT,
    );
    run.assert_success();
    let written: Vec<_> = std::fs::read_dir(target.path())
        .expect("list the target")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(
        written.is_empty(),
        "the restore wrote {written:?} outside the workspace\n{}",
        run.all_output()
    );
    let output = run.all_output();
    let restore = run.job("restore");
    // The chain is refused before any of it is made...
    assert_eq!(restore["outputs"]["links"], "", "{output}");
    assert_eq!(restore["outputs"]["root"], "none", "{output}");
    assert!(
        output.contains("Failed to restore") && output.contains("goes back up"),
        "{output}"
    );
    // ...so the file lands inside the workspace, where its path really is.
    assert_eq!(restore["outputs"]["write"], "true", "{output}");
    // A chain already there is not written through.
    assert_eq!(run.job("planted")["outputs"]["write"], "", "{output}");
    assert!(output.contains("goes through the symlink"), "{output}");
}

#[test]
fn host_restore_of_a_symlink_chain_writes_nothing_outside_the_workspace() {
    symlink_chain_restore("host");
}

/// The Docker daemon with the base image present, or `None` when the test is skipped.
fn docker_with_base_image() -> Option<kiln_runner::backend::DockerBackend> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let docker = kiln_runner::testing::require_docker().await?;
        let options = kiln_runner::image::BaseImageOptions {
            tag: IMAGE.to_owned(),
            ..Default::default()
        };
        let result =
            kiln_runner::image::build_base_image(docker.client(), &options, &mut |_| {}).await;
        result.unwrap_or_else(|e| panic!("cannot build {IMAGE}: {e}"));
        Some(docker)
    })
}

/// In a container job the restore runs on the host over the bind-mounted workspace: the same
/// confined writer keeps it inside. (The restore needs no cache server inside the container.)
#[test]
fn docker_restore_of_a_symlink_chain_writes_nothing_outside_the_workspace() {
    if docker_with_base_image().is_none() {
        return;
    }
    symlink_chain_restore("docker");
}
