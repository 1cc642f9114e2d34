//! Helpers for tests that need Docker, here and in crates built on this one (enable the
//! `test-support` feature in their dev-dependencies).
//!
//! Every Docker test starts with
//! ```no_run
//! # async fn t() {
//! let Some(docker) = kiln_runner::testing::require_docker().await else { return };
//! let image = kiln_runner::testing::ensure_busybox_image(&docker).await;
//! # }
//! ```
//! Without a daemon the test prints a loud `SKIPPED:` line and passes, unless
//! `KILN_REQUIRE_DOCKER=1` (set in CI), in which case it fails.

use crate::backend::{DockerBackend, DockerConfig};
use crate::image::{
    build_base_image, build_busybox_image, BaseImageOptions, BuildOutcome, ImageError, ImageEvent,
    BUSYBOX_TEST_TAG,
};

pub use crate::image::BUSYBOX_TEST_PAGE;

/// Set to `1` to turn "no Docker daemon" into a test failure instead of a skip.
pub const REQUIRE_DOCKER_VAR: &str = "KILN_REQUIRE_DOCKER";

/// Tests in one binary share the build; a second process building at the same time only
/// re-imports the same tag, which is harmless.
static BUILD_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A connected Docker backend, or `None` (after printing why) when no daemon answers.
///
/// # Panics
/// When no daemon answers and `KILN_REQUIRE_DOCKER=1`: in CI a missing daemon is a failure.
pub async fn require_docker() -> Option<DockerBackend> {
    match DockerBackend::connect(DockerConfig::default()).await {
        Ok(backend) => Some(backend),
        Err(error) => {
            let test = std::thread::current()
                .name()
                .unwrap_or("this test")
                .to_owned();
            if std::env::var(REQUIRE_DOCKER_VAR).as_deref() == Ok("1") {
                panic!("{REQUIRE_DOCKER_VAR}=1 but Docker is not available for {test}: {error}");
            }
            eprintln!(
                "SKIPPED: Docker not available, {test} did not run: {error} \
                 (set {REQUIRE_DOCKER_VAR}=1 to make this a failure)"
            );
            None
        }
    }
}

/// The busybox test image's tag, building it first if the daemon does not have it.
///
/// # Panics
/// When the image cannot be built: a Docker test cannot run without it.
pub async fn ensure_busybox_image(docker: &DockerBackend) -> String {
    let mut ignore_progress = |_: ImageEvent| {};
    let build = build_busybox_image(
        docker.client(),
        BUSYBOX_TEST_TAG,
        false,
        &mut ignore_progress,
    );
    built_or_panic(BUSYBOX_TEST_TAG, build).await
}

/// The Debian base image (`kiln-base:bookworm`, what `ubuntu-latest` maps to), building it
/// with debootstrap first if the daemon does not have it (a few minutes, once per machine).
///
/// # Panics
/// When the image cannot be built.
pub async fn ensure_base_image(docker: &DockerBackend) -> String {
    let options = BaseImageOptions::default();
    let mut ignore_progress = |_: ImageEvent| {};
    let build = build_base_image(docker.client(), &options, &mut ignore_progress);
    built_or_panic(&options.tag, build).await
}

async fn built_or_panic(
    tag: &str,
    build: impl std::future::Future<Output = Result<BuildOutcome, ImageError>>,
) -> String {
    let _guard = BUILD_LOCK.lock().await;
    if let Err(error) = build.await {
        panic!("cannot build the test image {tag}: {error}");
    }
    tag.to_owned()
}

/// Whether process `pid` still runs (a zombie waiting to be reaped does not: it holds
/// nothing), for tests that check that processes ended.
pub fn process_running(pid: i32) -> bool {
    !crate::backend::proctree::living(&[pid]).is_empty()
}

/// Every container and network carrying kiln's job label, as `container KEY` / `network KEY`
/// (KEY is the job key), for checking through the Docker API that nothing was left behind.
pub async fn labelled_objects(docker: &DockerBackend) -> Vec<String> {
    use bollard::query_parameters::ListNetworksOptionsBuilder;
    use std::collections::HashMap;
    let label = crate::backend::JOB_KEY_LABEL;
    let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
    let containers = containers_with_label(docker, label).await;
    let networks = docker
        .client()
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .expect("list networks");
    let key = |labels: Option<&HashMap<String, String>>| {
        labels
            .and_then(|l| l.get(label))
            .cloned()
            .unwrap_or_default()
    };
    let mut found: Vec<String> = containers
        .iter()
        .map(|c| format!("container {}", key(c.labels.as_ref())))
        .collect();
    found.extend(
        networks
            .iter()
            .map(|n| format!("network {}", key(n.labels.as_ref()))),
    );
    found
}

/// The containers, running or not, that match a label filter (`KEY` or `KEY=VALUE`).
pub async fn containers_with_label(
    docker: &DockerBackend,
    filter: &str,
) -> Vec<bollard::models::ContainerSummary> {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let filters = std::collections::HashMap::from([("label".to_owned(), vec![filter.to_owned()])]);
    docker
        .client()
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("list containers")
}
