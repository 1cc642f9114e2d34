//! A tiny image for tests: Debian's `busybox-static` unpacked into an otherwise empty root,
//! with a symlink per applet. About 2 MB, built in about a second.

use std::path::Path;

use bollard::Docker;

use super::base::scratch_dir;
use super::{image_exists, import_rootfs, run_tool, BuildOutcome, ImageError, ImageEvent};

/// The tag tests use. Its default command serves `/var/www` over HTTP on port 80 (the page
/// says [`BUSYBOX_TEST_PAGE`]), so the same image works as a job container and as a service.
pub const BUSYBOX_TEST_TAG: &str = "kiln-test-busybox:latest";
/// The content of `/var/www/index.html` in the test image.
pub const BUSYBOX_TEST_PAGE: &str = "kiln busybox service";

const APT_HINT: &str = "`apt-get download` needs Debian's apt (run `apt-get update` first)";

/// Builds the busybox test image as `tag`, unless it exists and `force` is false.
pub async fn build_busybox_image(
    docker: &Docker,
    tag: &str,
    force: bool,
    progress: &mut (dyn FnMut(ImageEvent) + Send),
) -> Result<BuildOutcome, ImageError> {
    if !force && image_exists(docker, tag).await? {
        progress(ImageEvent::AlreadyPresent { tag: tag.into() });
        return Ok(BuildOutcome::AlreadyPresent);
    }
    let workdir = scratch_dir("kiln-busybox-")?;
    progress(ImageEvent::Phase("apt-get download busybox-static".into()));
    run_tool(
        "apt-get",
        &["download".into(), "busybox-static".into()],
        Some(workdir.path()),
        APT_HINT,
        progress,
    )
    .await?;
    let deb = std::fs::read_dir(workdir.path())
        .map_err(|source| ImageError::Io {
            action: "listing the downloaded package".into(),
            source,
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .ok_or_else(|| {
            ImageError::Incomplete("busybox-static .deb after apt-get download".into())
        })?;
    let root = workdir.path().join("rootfs");
    run_tool(
        "dpkg",
        &[
            "-x".into(),
            deb.to_string_lossy().into_owned(),
            root.to_string_lossy().into_owned(),
        ],
        None,
        "dpkg comes with Debian",
        progress,
    )
    .await?;
    populate_root(&root).await?;
    progress(ImageEvent::Phase(format!("importing as {tag}")));
    let id = import_rootfs(
        docker,
        &root,
        tag,
        &[r#"CMD ["httpd", "-f", "-p", "80", "-h", "/var/www"]"#],
    )
    .await?;
    progress(ImageEvent::Imported {
        tag: tag.into(),
        id: id.clone(),
    });
    Ok(BuildOutcome::Built { id })
}

/// Adds applet symlinks, the directories a container runtime expects, and minimal
/// passwd/group files.
async fn populate_root(root: &Path) -> Result<(), ImageError> {
    let busybox = root.join("bin/busybox");
    let listing = tokio::process::Command::new(&busybox)
        .arg("--list-full")
        .output()
        .await
        .map_err(|source| ImageError::ToolMissing {
            program: busybox.display().to_string(),
            hint: "the busybox-static package should contain it".into(),
            source,
        })?;
    let io = |action: String| move |source| ImageError::Io { action, source };
    for applet in String::from_utf8_lossy(&listing.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet.contains("..") {
            continue;
        }
        let link = root.join(applet);
        if link.exists() {
            continue;
        }
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link)
            .map_err(io(format!("linking {}", link.display())))?;
    }
    for dir in ["tmp", "etc", "proc", "sys", "dev", "root", "var/www"] {
        std::fs::create_dir_all(root.join(dir)).map_err(io(format!("creating /{dir}")))?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .map_err(io("making /tmp world-writable".into()))?;
    let files = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("var/www/index.html", BUSYBOX_TEST_PAGE),
    ];
    for (path, content) in files {
        std::fs::write(root.join(path), content).map_err(io(format!("writing /{path}")))?;
    }
    Ok(())
}
