use std::path::PathBuf;

/// Why a backend could not do what was asked. A step's own failure is never an error: it is
/// an [`super::ExecOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("no Docker daemon at {host}: start it or use --executor host ({detail})")]
    DockerUnavailable { host: String, detail: String },

    #[error("image `{image}` is not available locally and kiln does not pull images: {fix}")]
    ImageMissing { image: String, fix: String },

    #[error("pulling image `{image}` failed: {detail}")]
    PullFailed { image: String, detail: String },

    #[error("this job uses {feature}, which needs --executor docker")]
    NeedsDocker { feature: &'static str },

    #[error("{subject}: bad container option `{option}`: {reason}")]
    InvalidOption {
        subject: String,
        option: String,
        reason: String,
    },

    #[error("service `{service}` became unhealthy; last health check output: {last_log}")]
    ServiceUnhealthy { service: String, last_log: String },

    #[error(
        "service `{service}` was not healthy after {waited_secs} s; last health check output: {last_log}"
    )]
    ServiceTimeout {
        service: String,
        waited_secs: u64,
        last_log: String,
    },

    #[error("service `{service}` stopped during startup (exit code {exit_code}); its last output: {logs}")]
    ServiceExited {
        service: String,
        exit_code: i64,
        logs: String,
    },

    #[error("docker {action} failed: {source}")]
    Docker {
        action: String,
        #[source]
        source: bollard::errors::Error,
    },

    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },

    #[error("working directory {} does not exist", path.display())]
    WorkdirMissing { path: PathBuf },

    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid job: {0}")]
    InvalidSpec(String),

    #[error("job setup was cancelled")]
    Cancelled,
}

impl BackendError {
    pub(crate) fn docker(action: impl Into<String>, source: bollard::errors::Error) -> Self {
        BackendError::Docker {
            action: action.into(),
            source,
        }
    }

    pub(crate) fn option(
        subject: &str,
        option: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        BackendError::InvalidOption {
            subject: subject.to_owned(),
            option: option.into(),
            reason: reason.into(),
        }
    }
}
