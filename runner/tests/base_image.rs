//! The Debian base image `kiln image build` makes: built once per machine (debootstrap takes
//! minutes), then reused; the checks run against whatever image is there.

use kiln_runner::backend::{Backend, ContainerSpec, ExecOutcome, ExecSpec, JobSpec, OutputStream};
use kiln_runner::testing::{ensure_base_image, require_docker};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn base_image_has_bash_and_coreutils() {
    let Some(backend) = require_docker().await else {
        return;
    };
    let image = ensure_base_image(&backend).await;
    let workspace = tempfile::tempdir().expect("workspace");
    let spec = JobSpec {
        job_key: format!("test-base-image-{}", std::process::id()),
        container: Some(ContainerSpec {
            image,
            ..Default::default()
        }),
        workspace: workspace.path().to_path_buf(),
        ..Default::default()
    };
    let env = backend
        .prepare(&spec, &CancellationToken::new())
        .await
        .expect("prepare on the base image");
    let step = ExecSpec {
        argv: vec![
            "bash".into(),
            "--noprofile".into(),
            "--norc".into(),
            "-eo".into(),
            "pipefail".into(),
            "-c".into(),
            "echo \"$BASH_VERSION\" | cut -d. -f1; ls --version | head -n1; cat /etc/debian_version | cut -d. -f1".into(),
        ],
        env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())],
        ..Default::default()
    };
    let mut lines = Vec::new();
    let outcome = backend
        .exec(&env, &step, &mut lines, &CancellationToken::new())
        .await
        .expect("exec");
    backend.cleanup(&env).await.expect("cleanup");
    assert_eq!(outcome, ExecOutcome::Exited(0), "{lines:?}");
    let out: Vec<&str> = lines
        .iter()
        .filter(|(s, _)| *s == OutputStream::Stdout)
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(out, ["5", "ls (GNU coreutils) 9.1", "12"]);
}
