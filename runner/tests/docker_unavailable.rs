//! Connecting where no daemon answers. Its own test binary: it changes DOCKER_HOST, which is
//! process-wide.

use kiln_runner::backend::{BackendError, DockerBackend, DockerConfig};
use kiln_runner::testing::{require_docker, REQUIRE_DOCKER_VAR};

const NO_DAEMON: &str = "unix:///nonexistent/kiln-test/docker.sock";

#[tokio::test]
async fn a_missing_daemon_is_a_clear_error_naming_the_socket_and_the_alternative() {
    std::env::set_var("DOCKER_HOST", NO_DAEMON);
    let started = std::time::Instant::now();
    let err = DockerBackend::connect(DockerConfig::default())
        .await
        .expect_err("nothing listens there");
    assert!(started.elapsed() < std::time::Duration::from_secs(6));
    assert!(
        matches!(err, BackendError::DockerUnavailable { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("no Docker daemon at unix:///nonexistent/kiln-test/docker.sock: start it or use --executor host"),
        "{text}"
    );
}

#[tokio::test]
async fn require_docker_skips_without_a_daemon_unless_docker_is_required() {
    std::env::set_var("DOCKER_HOST", NO_DAEMON);
    std::env::remove_var(REQUIRE_DOCKER_VAR);
    assert!(require_docker().await.is_none());
    std::env::set_var(REQUIRE_DOCKER_VAR, "1");
    let required = tokio::spawn(require_docker()).await;
    std::env::remove_var(REQUIRE_DOCKER_VAR);
    let panic = required.expect_err("a required daemon that is missing fails the test");
    assert!(panic.is_panic());
}
