//! Jobs through the Docker backend on the busybox test image: steps run in the job
//! container with the default `sh` fallback, file commands work across the bind mounts,
//! `docker://` steps run, and nothing is left behind.

mod executor_support;

use std::sync::Arc;

use executor_support::Setup;
use kiln_runner::testing::{ensure_busybox_image, require_docker};
use kiln_workflow::Conclusion;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn steps_run_in_the_job_container_and_everything_is_removed() {
    let Some(docker) = require_docker().await else {
        return;
    };
    let image = ensure_busybox_image(&docker).await;
    let client = docker.client().clone();
    let setup = Setup::new();
    let yaml = format!(
        r#"
on: push
jobs:
  j:
    runs-on: x
    steps:
      - run: |
          echo "GREETING=from-container" >> "$GITHUB_ENV"
          echo "v=1" >> "$GITHUB_OUTPUT"
      - id: second
        run: echo "greeting=$GREETING ci=$CI ws=$(basename $GITHUB_WORKSPACE)"
      - id: image
        uses: docker://{image}
        with:
          entrypoint: sh
          args: -c "echo from-docker-step"
"#
    );
    let mut request = setup.request(&yaml, "j");
    request.platform_image = Some(image.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let result =
        kiln_runner::executor::run_job(request, Arc::new(docker), tx, CancellationToken::new())
            .await;
    let mut log = String::new();
    while let Ok(event) = rx.try_recv() {
        match event {
            kiln_runner::executor::JobEvent::Log { line, .. } => log.push_str(&(line + "\n")),
            kiln_runner::executor::JobEvent::Annotation(a) => {
                log.push_str(&(a.annotation.message + "\n"))
            }
            _ => {}
        }
    }
    assert_eq!(result.conclusion, Conclusion::Success, "{log}");
    assert!(
        log.contains("greeting=from-container ci=true ws=repo"),
        "{log}"
    );
    assert!(log.contains("from-docker-step"), "{log}");
    let leftovers = client
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::new()
                .all(true)
                .build(),
        ))
        .await
        .expect("list containers");
    let ours: Vec<_> = leftovers
        .iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .is_some_and(|l| l.get("kiln.job").is_some_and(|v| v == "j"))
        })
        .collect();
    assert!(ours.is_empty(), "containers left behind: {ours:?}");
}
