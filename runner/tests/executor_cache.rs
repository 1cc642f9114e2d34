//! The built-in `actions/cache`, `actions/cache/restore` and `actions/cache/save` through the
//! host backend against an in-process kiln cache server.

mod executor_support;

use std::sync::Arc;
use std::time::Duration;

use executor_support::{Ran, Setup};
use kiln_cache::{serve, CacheService, ServiceConfig, TokenRequest};
use kiln_runner::executor::CacheEndpoint;
use kiln_workflow::value::{Object, Value};
use kiln_workflow::Conclusion;
use tokio_util::sync::CancellationToken;

/// A cache server on 127.0.0.1 that stops when dropped.
struct Server {
    _data: tempfile::TempDir,
    endpoint: CacheEndpoint,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start_server() -> Server {
    let data = tempfile::tempdir().expect("cache data dir");
    let service = CacheService::open(ServiceConfig::new(data.path())).expect("open cache service");
    let token = service
        .mint_token(&TokenRequest {
            repo: "octo/repo".to_owned(),
            git_ref: "refs/heads/main".to_owned(),
            base_ref: None,
            read_only: false,
            ttl: Duration::from_secs(3600),
        })
        .expect("mint token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    tokio::spawn(serve(listener, Arc::clone(&service), async move {
        shutdown.cancelled().await
    }));
    Server {
        _data: data,
        endpoint: CacheEndpoint {
            url: format!("http://{addr}/"),
            token,
        },
        stop,
    }
}

fn setup_for(server: &Server) -> Setup {
    let mut setup = Setup::new();
    setup.cache = Some(server.endpoint.clone());
    setup
}

/// `actions/cache` over `deps` (minus `deps/skip.txt`); builds `deps` on anything but an exact
/// hit, then prints what the step reported and what is on disk.
fn cache_job(key: &str, restore_keys: &str, extra_with: &str, after: &str) -> String {
    format!(
        r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - id: cache
        uses: actions/cache@v4
        with:
          path: |
            deps
            ! deps/skip.txt
          key: {key}
          restore-keys: |
            {restore_keys}
          {extra_with}
      - run: |
          echo "hit=[${{{{ steps.cache.outputs.cache-hit }}}}] matched=[${{{{ steps.cache.outputs.cache-matched-key }}}}] primary=[${{{{ steps.cache.outputs.cache-primary-key }}}}]"
          if [ -f deps/lib.txt ]; then echo "lib=[$(cat deps/lib.txt)]"; else echo "lib=[none]"; fi
          if [ -f deps/skip.txt ]; then echo "skip=[present]"; else echo "skip=[none]"; fi
      - if: steps.cache.outputs.cache-hit != 'true'
        run: mkdir -p deps && echo "built for {key}" > deps/lib.txt && echo local > deps/skip.txt
      - run: {after}
"#
    )
}

fn assert_success(ran: &Ran) {
    assert_eq!(
        ran.result.conclusion,
        Conclusion::Success,
        "{}",
        ran.log_text()
    );
}

fn post_step(ran: &Ran) -> (String, String) {
    ran.step("post_cache")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_then_exact_hit_then_restore_key() {
    let server = start_server().await;

    let first = setup_for(&server)
        .run(&cache_job("deps-v1", "unused-", "", "true"), "j")
        .await;
    let log = first.log_text();
    assert_success(&first);
    assert!(log.contains("hit=[] matched=[] primary=[deps-v1]"), "{log}");
    assert!(log.contains("lib=[none]"), "{log}");
    assert!(
        log.contains("Cache not found for input keys: deps-v1, unused-"),
        "{log}"
    );
    assert_eq!(post_step(&first), ("success".into(), "success".into()));
    assert!(log.contains("Cache saved with key: deps-v1"), "{log}");

    // Same key, different case: GitHub matches keys case-insensitively.
    let second = setup_for(&server)
        .run(&cache_job("DEPS-v1", "unused-", "", "true"), "j")
        .await;
    let log = second.log_text();
    assert_success(&second);
    assert!(log.contains("hit=[true] matched=[deps-v1]"), "{log}");
    assert!(log.contains("lib=[built for deps-v1]"), "{log}");
    assert!(log.contains("skip=[none]"), "excluded file restored: {log}");
    assert!(
        log.contains("Cache hit occurred on the primary key DEPS-v1, not saving cache."),
        "{log}"
    );
    assert!(!log.contains("Cache saved with key"), "{log}");

    let third = setup_for(&server)
        .run(&cache_job("deps-v2", "deps-", "", "true"), "j")
        .await;
    let log = third.log_text();
    assert_success(&third);
    assert!(
        log.contains("hit=[false] matched=[deps-v1] primary=[deps-v2]"),
        "{log}"
    );
    assert!(log.contains("Cache restored from key: deps-v1"), "{log}");
    assert!(log.contains("Cache saved with key: deps-v2"), "{log}");

    // The new key is there now; lookup-only reports it without writing files.
    let fourth = setup_for(&server)
        .run(
            &cache_job("deps-v2", "deps-", "lookup-only: true", "true"),
            "j",
        )
        .await;
    let log = fourth.log_text();
    assert_success(&fourth);
    assert!(log.contains("hit=[true] matched=[deps-v2]"), "{log}");
    assert!(log.contains("lib=[none]"), "lookup-only wrote files: {log}");
    assert!(
        log.contains("Cache found and can be restored from key: deps-v2"),
        "{log}"
    );
    assert!(!log.contains("Cache saved with key"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_only_miss_saves_in_the_post_step() {
    let server = start_server().await;
    let ran = setup_for(&server)
        .run(&cache_job("lk-1", "lk-", "lookup-only: true", "true"), "j")
        .await;
    let log = ran.log_text();
    assert_success(&ran);
    assert!(log.contains("hit=[] matched=[]"), "{log}");
    assert!(log.contains("Cache saved with key: lk-1"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_on_cache_miss_fails_the_step() {
    let server = start_server().await;
    let ran = setup_for(&server)
        .run(
            &cache_job("absent-1", "absent-", "fail-on-cache-miss: true", "true"),
            "j",
        )
        .await;
    let log = ran.log_text();
    assert_eq!(ran.result.conclusion, Conclusion::Failure, "{log}");
    assert_eq!(ran.step("cache"), ("failure".into(), "failure".into()));
    assert!(
        log.contains("Failed to restore cache entry. Exiting as fail-on-cache-miss is set. Input key: absent-1"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_does_not_save() {
    let server = start_server().await;
    let failed = setup_for(&server)
        .run(&cache_job("fails-1", "fails-", "", "exit 3"), "j")
        .await;
    let log = failed.log_text();
    assert_eq!(failed.result.conclusion, Conclusion::Failure, "{log}");
    assert_eq!(post_step(&failed), ("skipped".into(), "skipped".into()));
    assert!(!log.contains("Cache saved with key"), "{log}");

    let later = setup_for(&server)
        .run(
            &cache_job("fails-1", "fails-", "lookup-only: true", "true"),
            "j",
        )
        .await;
    let log = later.log_text();
    assert!(log.contains("hit=[] matched=[]"), "{log}");
}

/// `save-always` works as it does on GitHub: not at all on a push (with a deprecation warning),
/// since actions/cache's `post-if` reads `github.event.inputs.save-always`; a workflow_dispatch
/// run with such an input saves even after a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_always_only_matters_to_a_dispatch_with_that_input() {
    let server = start_server().await;
    let pushed = setup_for(&server)
        .run(
            &cache_job("always-1", "always-", "save-always: true", "exit 3"),
            "j",
        )
        .await;
    let log = pushed.log_text();
    assert_eq!(pushed.result.conclusion, Conclusion::Failure, "{log}");
    assert_eq!(post_step(&pushed), ("skipped".into(), "skipped".into()));
    assert!(
        log.contains("ANNOTATION Input 'save-always' is deprecated"),
        "{log}"
    );

    let mut dispatch = setup_for(&server);
    let mut inputs = Object::new();
    inputs.insert("save-always", Value::string("true"));
    let mut event = Object::new();
    event.insert("inputs", Value::object(inputs));
    dispatch.event = ("workflow_dispatch".to_owned(), Value::object(event));
    let dispatched = dispatch
        .run(
            &cache_job("always-2", "always-", "save-always: true", "exit 3"),
            "j",
        )
        .await;
    let log = dispatched.log_text();
    assert_eq!(dispatched.result.conclusion, Conclusion::Failure, "{log}");
    assert_eq!(post_step(&dispatched), ("success".into(), "success".into()));
    assert!(log.contains("Cache saved with key: always-2"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_and_save_halves() {
    let server = start_server().await;
    let yaml = r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - id: restore
        uses: actions/cache/restore@v4
        with:
          path: out
          key: split-${{ runner.os }}
      - run: echo "hit=[${{ steps.restore.outputs.cache-hit }}] matched=[${{ steps.restore.outputs.cache-matched-key }}] primary=[${{ steps.restore.outputs.cache-primary-key }}]"
      - if: steps.restore.outputs.cache-hit != 'true'
        run: mkdir -p out/nested && echo made > out/nested/file.txt
      - id: save
        if: steps.restore.outputs.cache-hit != 'true'
        uses: actions/cache/save@v4
        with:
          path: out
          key: ${{ steps.restore.outputs.cache-primary-key }}
      - run: cat out/nested/file.txt
"#;
    let first = setup_for(&server).run(yaml, "j").await;
    let log = first.log_text();
    assert_success(&first);
    assert!(
        log.contains("hit=[] matched=[] primary=[split-Linux]"),
        "{log}"
    );
    assert!(log.contains("Cache saved with key: split-Linux"), "{log}");
    assert!(
        first
            .result
            .steps
            .iter()
            .all(|s| !s.id.starts_with("post_")),
        "the halves register no post step: {:?}",
        first.result.steps
    );

    let second = setup_for(&server).run(yaml, "j").await;
    let log = second.log_text();
    assert_success(&second);
    assert!(
        log.contains("hit=[true] matched=[split-Linux] primary=[split-Linux]"),
        "{log}"
    );
    assert_eq!(second.step("save"), ("skipped".into(), "skipped".into()));
    assert!(log.contains("made"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_problems_are_warnings() {
    let server = start_server().await;
    let yaml = r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - uses: actions/cache/save@v4
        with:
          path: does-not-exist
          key: nothing-here
      - run: mkdir -p d && echo 1 > d/f
      - uses: actions/cache/save@v4
        with:
          path: d
          key: twice
      - uses: actions/cache/save@v4
        with:
          path: d
          key: twice
"#;
    let ran = setup_for(&server).run(yaml, "j").await;
    let log = ran.log_text();
    assert_success(&ran);
    assert!(
        log.contains("ANNOTATION Path Validation Error: Path(s) specified in the action for caching do(es) not exist"),
        "{log}"
    );
    assert!(log.contains("Cache saved with key: twice"), "{log}");
    assert!(
        log.contains(
            "Unable to reserve cache with key twice, another job may be creating this cache."
        ),
        "{log}"
    );
    assert!(log.contains("ANNOTATION Cache save failed."), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_paths_and_different_path_sets_do_not_collide() {
    let server = start_server().await;
    let setup = setup_for(&server);
    let home = setup.run_dir().join("home");
    let job = |path: &str, create: bool| {
        format!(
            r#"
on: push
jobs:
  j:
    runs-on: x
    env:
      HOME: {home}
    steps:
      - id: cache
        uses: actions/cache@v4
        with:
          path: {path}
          key: same-key
      - run: echo "hit=[${{{{ steps.cache.outputs.cache-hit }}}}]"
      - if: {create}
        run: mkdir -p ~/.tool && echo home-data > ~/.tool/data
"#,
            home = home.display()
        )
    };
    let first = setup.run(&job("~/.tool", true), "j").await;
    assert_success(&first);
    assert!(first.log_text().contains("Cache saved with key: same-key"));
    std::fs::remove_dir_all(&home).expect("clear home");

    let restored = setup.run(&job("~/.tool", false), "j").await;
    let log = restored.log_text();
    assert!(log.contains("hit=[true]"), "{log}");
    assert_eq!(
        std::fs::read_to_string(home.join(".tool/data")).expect("restored into HOME"),
        "home-data\n"
    );

    // Same key, another path set: another cache version, so a miss.
    let other = setup.run(&job("other-dir", false), "j").await;
    let log = other.log_text();
    assert!(log.contains("hit=[]"), "{log}");
    assert!(
        log.contains("Cache not found for input keys: same-key"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_see_the_cache_variables_and_the_token_is_masked() {
    let server = start_server().await;
    let yaml = r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - run: |
          echo "cache=[$ACTIONS_CACHE_URL] results=[$ACTIONS_RESULTS_URL] v2=[$ACTIONS_CACHE_SERVICE_V2]"
          echo "token=[$ACTIONS_RUNTIME_TOKEN]"
"#;
    let ran = setup_for(&server).run(yaml, "j").await;
    let log = ran.log_text();
    assert_success(&ran);
    let url = &server.endpoint.url;
    assert!(
        log.contains(&format!("cache=[{url}] results=[{url}] v2=[true]")),
        "{log}"
    );
    assert!(log.contains("token=[***]"), "{log}");
    assert!(!log.contains(&server.endpoint.token), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_the_cache_warns_and_misses() {
    let yaml = cache_job("k-1", "k-", "fail-on-cache-miss: true", "true");
    let setup = Setup::new();
    let ran = setup.run(&yaml, "j").await;
    let log = ran.log_text();
    assert_success(&ran);
    assert!(
        log.contains("ANNOTATION cache server not configured"),
        "{log}"
    );
    assert!(log.contains("hit=[false]"), "{log}");
    assert!(
        ran.result.steps.iter().all(|s| !s.id.starts_with("post_")),
        "{:?}",
        ran.result.steps
    );
    let env_yaml = r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - run: echo "cache=[${ACTIONS_CACHE_URL:-unset}]"
"#;
    let ran = setup.run(env_yaml, "j").await;
    assert!(
        ran.log_text().contains("cache=[unset]"),
        "{}",
        ran.log_text()
    );
}
