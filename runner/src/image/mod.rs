//! Local images, made without a registry: the Debian base image `ubuntu-latest` maps to
//! ([`build_base_image`], behind `kiln image build`) and a tiny busybox image for tests
//! ([`build_busybox_image`]). Both are root filesystems built on this machine and imported
//! with Docker's import API (`docker import`).
//!
//! The library never prints: progress is reported as [`ImageEvent`]s.

mod base;
mod busybox;
mod checks;
pub mod sources;

use std::path::Path;
use std::process::Stdio;

use bollard::body_try_stream;
use bollard::errors::Error as ApiError;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

pub use base::{build_base_image, build_base_image_blocking, BaseImageOptions, DEFAULT_BASE_TAG};
pub use busybox::{build_busybox_image, BUSYBOX_TEST_PAGE, BUSYBOX_TEST_TAG};
pub use checks::{missing_image, ImageChecks};

use crate::backend::BackendError;

/// Progress of an image build, for the CLI to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageEvent {
    /// The tag exists and `force` was not given: nothing to do.
    AlreadyPresent { tag: String },
    /// A phase begins ("debootstrap bookworm from http://...", "importing as kiln-base:bookworm").
    Phase(String),
    /// A line of output from a tool doing the work (debootstrap, apt-get).
    Output(String),
    /// The image is ready.
    Imported { tag: String, id: String },
}

/// What a build did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildOutcome {
    AlreadyPresent,
    Built { id: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Backend(#[from] BackendError),

    #[error("docker {action} failed: {source}")]
    Docker {
        action: String,
        #[source]
        source: ApiError,
    },

    #[error("`{program}` is needed to build the image but could not be run: {source}; {hint}")]
    ToolMissing {
        program: String,
        hint: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` failed ({status}); its last output: {last_output}")]
    ToolFailed {
        command: String,
        status: String,
        last_output: String,
    },

    #[error("building the base image needs root (debootstrap creates device nodes and sets file owners): run it as root or with sudo")]
    NeedsRoot,

    #[error("no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/: pass --mirror URL")]
    NoMirror,

    #[error("the built root filesystem has no {0}; the image would not run steps")]
    Incomplete(String),

    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let action = action.into();
    move |source| ImageError::Io { action, source }
}

/// Whether `tag` exists in the daemon's image store.
pub async fn image_exists(docker: &Docker, tag: &str) -> Result<bool, ImageError> {
    match docker.inspect_image(tag).await {
        Ok(_) => Ok(true),
        Err(ApiError::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(source) => Err(ImageError::Docker {
            action: format!("inspecting image {tag}"),
            source,
        }),
    }
}

/// Splits `name[:tag]` at the tag's colon, which is after the last `/` (a registry port is not a tag).
fn split_tag(reference: &str) -> (&str, &str) {
    match reference.rfind(':') {
        Some(colon) if !reference[colon..].contains('/') => {
            (&reference[..colon], &reference[colon + 1..])
        }
        _ => (reference, "latest"),
    }
}

/// Imports the directory `root` as image `tag` (`tar -C root -c . | docker import - tag`),
/// with Dockerfile-style `changes` (for example `CMD ["sh"]`). Returns the image id.
pub async fn import_rootfs(
    docker: &Docker,
    root: &Path,
    tag: &str,
    changes: &[&str],
) -> Result<String, ImageError> {
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(root)
        .args(["--numeric-owner", "-c", "."])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ImageError::ToolMissing {
            program: "tar".into(),
            hint: "install tar".into(),
            source,
        })?;
    let stdout = tar.stdout.take().ok_or_else(|| ImageError::Io {
        action: "reading tar's output".into(),
        source: std::io::Error::other("tar has no stdout pipe"),
    })?;
    let body = tokio_util::io::ReaderStream::new(stdout);
    let (repo, version) = split_tag(tag);
    let mut options = CreateImageOptionsBuilder::new()
        .from_src("-")
        .repo(repo)
        .tag(version);
    if !changes.is_empty() {
        options = options.changes(changes.iter().map(|c| c.to_string()).collect());
    }
    let progress: Vec<_> = docker
        .create_image(Some(options.build()), Some(body_try_stream(body)), None)
        .try_collect()
        .await
        .map_err(|source| ImageError::Docker {
            action: format!("importing {tag}"),
            source,
        })?;
    let tar_output = tar
        .wait_with_output()
        .await
        .map_err(io_error("waiting for tar"))?;
    if !tar_output.status.success() {
        return Err(ImageError::ToolFailed {
            command: format!("tar -C {} -c .", root.display()),
            status: tar_output.status.to_string(),
            last_output: String::from_utf8_lossy(&tar_output.stderr)
                .trim()
                .to_owned(),
        });
    }
    // The import answers with the new image id in its last status message.
    let id = progress
        .iter()
        .rev()
        .find_map(|info| info.status.clone())
        .unwrap_or_default();
    Ok(id.trim().to_owned())
}

/// Runs a tool to completion, reporting each output line (stdout and stderr) as it comes.
async fn run_tool(
    program: &str,
    args: &[String],
    workdir: Option<&Path>,
    hint: &str,
    progress: &mut (dyn FnMut(ImageEvent) + Send),
) -> Result<(), ImageError> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = workdir {
        command.current_dir(dir);
    }
    let mut child = command.spawn().map_err(|source| ImageError::ToolMissing {
        program: program.into(),
        hint: hint.into(),
        source,
    })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(ImageError::Io {
            action: format!("reading {program}'s output"),
            source: std::io::Error::other("no output pipes"),
        });
    };
    let lines = futures_util::stream::select(
        stream_lines(BufReader::new(stdout).lines()),
        stream_lines(BufReader::new(stderr).lines()),
    );
    let mut lines = Box::pin(lines);
    let mut recent: Vec<String> = Vec::new();
    while let Some(line) = lines.next().await {
        if recent.len() == 10 {
            recent.remove(0);
        }
        recent.push(line.clone());
        progress(ImageEvent::Output(line));
    }
    let status = child
        .wait()
        .await
        .map_err(io_error(format!("waiting for {program}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(ImageError::ToolFailed {
            command: format!("{program} {}", args.join(" ")),
            status: status.to_string(),
            last_output: recent.join("\n"),
        })
    }
}

/// A line reader as a stream; ends at EOF or on a read error.
fn stream_lines<R>(lines: tokio::io::Lines<R>) -> impl futures_util::Stream<Item = String> + Send
where
    R: tokio::io::AsyncBufRead + Unpin + Send,
{
    futures_util::stream::unfold(lines, |mut lines| async move {
        let line = lines.next_line().await.ok().flatten()?;
        Some((line, lines))
    })
}

#[cfg(test)]
mod tests {
    use super::split_tag;

    #[test]
    fn tags_split_after_the_last_slash_only() {
        assert_eq!(split_tag("kiln-base:bookworm"), ("kiln-base", "bookworm"));
        assert_eq!(split_tag("kiln-base"), ("kiln-base", "latest"));
        assert_eq!(
            split_tag("localhost:5000/x"),
            ("localhost:5000/x", "latest")
        );
        assert_eq!(split_tag("localhost:5000/x:1"), ("localhost:5000/x", "1"));
    }
}
