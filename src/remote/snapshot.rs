//! The working copy as `kiln submit` sends it: a commit of every file git would add (tracked,
//! modified and untracked, ignored ones left out), made without touching the user's index,
//! HEAD or refs, bundled with its history, named by its blake3 digest, and uploaded in 1 MiB
//! chunks.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context as _};
use kiln_proto::v1 as pb;
use tokio::io::AsyncReadExt as _;
use tonic::Status;

use super::Control;

/// Bytes per UploadSnapshot message (the protocol's limit).
pub const CHUNK: usize = 1 << 20;

/// A bundle of the working copy, ready to upload; removed when dropped.
pub struct Snapshot {
    /// The commit the run is for: HEAD when the working copy matches it, else a new commit
    /// whose parent is HEAD.
    pub sha: String,
    /// Whether the working copy differed from HEAD.
    pub dirty: bool,
    pub bundle: PathBuf,
    /// blake3 of the bundle, hex.
    pub digest: String,
    pub size: u64,
    _scratch: tempfile::TempDir,
}

/// Makes the snapshot of the repository whose top level is `dir`.
pub fn create(dir: &Path) -> anyhow::Result<Snapshot> {
    let top = git(dir, &["rev-parse", "--show-toplevel"], &[]).map_err(|e| {
        anyhow!("kiln submit sends a git repository, and {} is not in one ({e}); run `git init` there or use -C", dir.display())
    })?;
    let (top, here) = (canonical(Path::new(top.trim())), canonical(dir));
    if top != here {
        bail!(
            "kiln submit runs from the repository's top level, {} (it sends the whole repository, and runs it from there); cd there or use -C",
            top.display()
        );
    }
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let head = git(dir, &["rev-parse", "--verify", "-q", "HEAD^{commit}"], &[])
        .ok()
        .map(|s| s.trim().to_owned());
    // A copy of the user's index keeps git's cached file stats, so `add -A` only reads
    // changed files; the user's own index is never written.
    let index = scratch.path().join("index");
    let user_index = PathBuf::from(
        git(
            dir,
            &["rev-parse", "--path-format=absolute", "--git-path", "index"],
            &[],
        )?
        .trim(),
    );
    if user_index.exists() {
        std::fs::copy(&user_index, &index)
            .with_context(|| format!("cannot copy {}", user_index.display()))?;
    }
    let index_env = [("GIT_INDEX_FILE", index.as_os_str())];
    git(dir, &["add", "-A", "--", "."], &index_env)?;
    let tree = git(dir, &["write-tree"], &index_env)?.trim().to_owned();
    let head_tree = match &head {
        Some(head) => Some(git(dir, &["rev-parse", &format!("{head}^{{tree}}")], &[])?),
        None => None,
    };
    let (sha, dirty) = match (&head, head_tree) {
        (Some(head), Some(head_tree)) if head_tree.trim() == tree => (head.clone(), false),
        _ => (commit_tree(dir, &tree, head.as_deref())?, true),
    };
    let bundle = scratch.path().join("snapshot.bundle");
    write_bundle(dir, scratch.path(), &sha, &bundle)?;
    let (digest, size) = digest_of(&bundle)?;
    Ok(Snapshot {
        sha,
        dirty,
        bundle,
        digest,
        size,
        _scratch: scratch,
    })
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn commit_tree(dir: &Path, tree: &str, parent: Option<&str>) -> anyhow::Result<String> {
    let mut args = vec![
        "commit-tree",
        "--no-gpg-sign",
        tree,
        "-m",
        "kiln submit: the working copy",
    ];
    if let Some(parent) = parent {
        args.extend(["-p", parent]);
    }
    // A repository without user.name/user.email still gets its snapshot.
    let configured = |key: &str| git(dir, &["config", key], &[]).is_ok();
    let mut env = Vec::new();
    if !configured("user.name") || !configured("user.email") {
        for key in ["GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"] {
            env.push((key, "kiln submit".as_ref()));
        }
        for key in ["GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"] {
            env.push((key, "kiln@localhost".as_ref()));
        }
    }
    Ok(git(dir, &args, &env)?.trim().to_owned())
}

/// `git bundle` wants a ref, and the user's refs stay untouched: a scratch repository that
/// borrows the user's objects (alternates) holds the one ref the bundle carries.
fn write_bundle(dir: &Path, scratch: &Path, sha: &str, bundle: &Path) -> anyhow::Result<()> {
    let objects = git(
        dir,
        &[
            "rev-parse",
            "--path-format=absolute",
            "--git-path",
            "objects",
        ],
        &[],
    )?;
    let repo = scratch.join("repo.git");
    let repo_arg = repo.to_string_lossy().into_owned();
    git(scratch, &["init", "-q", "--bare", &repo_arg], &[])?;
    std::fs::write(
        repo.join("objects/info/alternates"),
        format!("{}\n", objects.trim()),
    )
    .context("cannot set up the scratch repository for the bundle")?;
    git(&repo, &["update-ref", "refs/heads/snapshot", sha], &[])?;
    git(&repo, &["symbolic-ref", "HEAD", "refs/heads/snapshot"], &[])?;
    let bundle_arg = bundle.to_string_lossy().into_owned();
    git(
        &repo,
        &[
            "bundle",
            "create",
            "-q",
            &bundle_arg,
            "HEAD",
            "refs/heads/snapshot",
        ],
        &[],
    )?;
    Ok(())
}

/// blake3 (hex) and size of a file.
pub fn digest_of(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let size = std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok((hasher.finalize().to_hex().to_string(), size))
}

fn git(dir: &Path, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> anyhow::Result<String> {
    let mut command = Command::new("git");
    command.arg("-C").arg(dir).args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command
        .output()
        .map_err(|e| anyhow!("cannot run git ({e}); kiln submit needs git on the PATH"))?;
    if !output.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Sends the bundle (the scheduler keeps it by digest). Returns whether the scheduler already
/// held it. Repeated on transient failures: the upload is content-addressed.
pub async fn upload(control: &Control, snapshot: &Snapshot) -> anyhow::Result<bool> {
    let reply = control
        .retrying(|| send(control, snapshot))
        .await
        .map_err(|status| {
            control
                .explain(&status)
                .context("cannot upload the snapshot")
        })?;
    if reply.digest != snapshot.digest {
        bail!(
            "the scheduler stored the snapshot as {} but it is {}; is it a kiln scheduler?",
            reply.digest,
            snapshot.digest
        );
    }
    Ok(reply.already_stored)
}

async fn send(
    control: &Control,
    snapshot: &Snapshot,
) -> Result<pb::UploadSnapshotResponse, Status> {
    let first = pb::SnapshotChunk {
        digest: snapshot.digest.clone(),
        size: snapshot.size,
        data: Vec::new(),
    };
    let file = tokio::fs::File::open(&snapshot.bundle).await.map_err(|e| {
        Status::data_loss(format!("cannot read {}: {e}", snapshot.bundle.display()))
    })?;
    // The bundle is read as the call sends it: memory stays at one chunk whatever its size.
    // A read error ends the stream short, which the scheduler refuses (size and digest).
    let rest = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut data = Vec::with_capacity(CHUNK);
        match (&mut file).take(CHUNK as u64).read_to_end(&mut data).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some((
                pb::SnapshotChunk {
                    data,
                    ..Default::default()
                },
                Some(file),
            )),
        }
    });
    let chunks = futures_util::StreamExt::chain(futures_util::stream::iter([first]), rest);
    Ok(control
        .rpc
        .clone()
        .upload_snapshot(chunks)
        .await?
        .into_inner())
}
