//! The Debian base image (`kiln image build`): debootstrap a minimal system and import it.

use std::path::{Path, PathBuf};

use bollard::Docker;

use super::sources::{pick_mirror, read_system_sources};
use super::{image_exists, import_rootfs, run_tool, BuildOutcome, ImageError, ImageEvent};
use crate::backend::{DockerBackend, DockerConfig};

/// The image `ubuntu-latest` maps to by default.
pub const DEFAULT_BASE_TAG: &str = "kiln-base:bookworm";

/// Programs every step image must have: `run:` steps default to bash, and the step executor
/// relies on coreutils.
const REQUIRED_PROGRAMS: &[&str] = &["bin/bash", "bin/ls", "bin/cat", "bin/tail"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImageOptions {
    pub tag: String,
    /// Debian suite to bootstrap.
    pub suite: String,
    /// Extra packages (`debootstrap --include`).
    pub include: Vec<String>,
    /// Mirror URL; `None` reads it from this machine's apt sources.
    pub mirror: Option<String>,
    /// Rebuild even when the tag exists.
    pub force: bool,
}

impl Default for BaseImageOptions {
    fn default() -> Self {
        BaseImageOptions {
            tag: DEFAULT_BASE_TAG.into(),
            suite: "bookworm".into(),
            include: Vec::new(),
            mirror: None,
            force: false,
        }
    }
}

/// Builds the base image: `debootstrap --variant=minbase SUITE DIR MIRROR`, then imports DIR
/// as the tag. Skips the work when the tag exists, unless `force`.
pub async fn build_base_image(
    docker: &Docker,
    options: &BaseImageOptions,
    progress: &mut (dyn FnMut(ImageEvent) + Send),
) -> Result<BuildOutcome, ImageError> {
    if !options.force && image_exists(docker, &options.tag).await? {
        progress(ImageEvent::AlreadyPresent {
            tag: options.tag.clone(),
        });
        return Ok(BuildOutcome::AlreadyPresent);
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(ImageError::NeedsRoot);
    }
    let mirror = match &options.mirror {
        Some(mirror) => mirror.clone(),
        None => pick_mirror(&read_system_sources(Path::new("/")), &options.suite)
            .ok_or(ImageError::NoMirror)?,
    };
    let workdir = scratch_dir("kiln-rootfs-")?;
    let rootfs = workdir.path().join("rootfs");
    progress(ImageEvent::Phase(format!(
        "debootstrap --variant=minbase {} from {mirror}",
        options.suite
    )));
    let mut args = vec!["--variant=minbase".to_owned()];
    if !options.include.is_empty() {
        args.push(format!("--include={}", options.include.join(",")));
    }
    args.extend([
        options.suite.clone(),
        rootfs.to_string_lossy().into_owned(),
        mirror,
    ]);
    run_tool(
        "debootstrap",
        &args,
        None,
        "install it with `apt-get install debootstrap` (building the image also needs root)",
        progress,
    )
    .await?;
    for program in REQUIRED_PROGRAMS {
        if !rootfs.join(program).exists() {
            return Err(ImageError::Incomplete(format!("/{program}")));
        }
    }
    // Package lists and downloaded .debs are dead weight in the image.
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        clear_files(&rootfs.join(dir));
    }
    progress(ImageEvent::Phase(format!("importing as {}", options.tag)));
    let id = import_rootfs(docker, &rootfs, &options.tag, &[r#"CMD ["bash"]"#]).await?;
    progress(ImageEvent::Imported {
        tag: options.tag.clone(),
        id: id.clone(),
    });
    Ok(BuildOutcome::Built { id })
}

/// [`build_base_image`] for synchronous callers (the CLI): connects to Docker and runs the
/// build on a private runtime.
pub fn build_base_image_blocking(
    options: &BaseImageOptions,
    mut progress: impl FnMut(ImageEvent) + Send,
) -> Result<BuildOutcome, ImageError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ImageError::Io {
            action: "starting the async runtime".into(),
            source,
        })?;
    runtime.block_on(async {
        let backend = DockerBackend::connect(DockerConfig::default()).await?;
        build_base_image(backend.client(), options, &mut progress).await
    })
}

/// A scratch directory on disk rather than in a tmpfs `/tmp`: a root filesystem is hundreds of MB.
pub(super) fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir, ImageError> {
    let var_tmp = PathBuf::from("/var/tmp");
    let parent = if var_tmp.is_dir() {
        var_tmp
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&parent)
        .map_err(|source| ImageError::Io {
            action: format!("creating a scratch directory in {}", parent.display()),
            source,
        })
}

/// Removes the regular files directly inside `dir` (best effort: a leftover only costs space).
fn clear_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
