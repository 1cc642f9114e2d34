//! A run's artifacts on disk (`artifacts/<run>/`), as the HTTP API of docs/scheduler.md
//! ("Artifacts") needs them: files of an upload are stored by digest under the upload's id,
//! then a commit moves them, with the manifest, into the artifact's directory in one rename,
//! so a reader sees all of an artifact or none of it.
//!
//! Layout: `artifacts/<run>/uploads/<upload id>/<blake3>` while uploading;
//! `artifacts/<run>/a-<hex of name>/{manifest.json, <blake3>...}` once committed.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Result, Scheduler, ServiceError};
use crate::store::prelude::*;

/// The largest file of an artifact.
pub const MAX_ARTIFACT_FILE: u64 = 10 << 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
    pub blake3: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub id: String,
    pub size: u64,
    pub files: Vec<ManifestFile>,
}

/// Why an artifact request is refused; the HTTP layer maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{0}")]
    Bad(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |e| ArtifactError::Service(ServiceError::Invalid(format!("{what}: {e}")))
}

/// The names upload-artifact refuses.
pub fn check_name(name: &str) -> Result<(), ArtifactError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 255
        || name.chars().any(|c| {
            matches!(
                c,
                '"' | ':' | '<' | '>' | '|' | '*' | '?' | '\r' | '\n' | '\\' | '/'
            )
        });
    if bad {
        return Err(ArtifactError::Bad(format!(
            "the artifact name {name:?} is not valid: it must not be empty, `.` or `..`, nor hold \" : < > | * ? \\ / CR or LF"
        )));
    }
    Ok(())
}

/// A file path inside an artifact: `/`-separated, no empty, `.` or `..` segment.
pub fn check_path(path: &str) -> Result<(), ArtifactError> {
    let bad = path.is_empty()
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == ".." || s.contains(['\\', '\0']));
    if bad {
        return Err(ArtifactError::Bad(format!(
            "the file path {path:?} is not valid inside an artifact"
        )));
    }
    Ok(())
}

fn check_digest(digest: &str) -> Result<(), ArtifactError> {
    let ok = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(ArtifactError::Bad(format!(
            "{digest:?} is not a blake3 digest (64 hex digits)"
        )));
    }
    Ok(())
}

fn check_upload(upload: &str) -> Result<(), ArtifactError> {
    let ok = !upload.is_empty()
        && upload.len() <= 64
        && upload
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(ArtifactError::Bad(format!(
            "the upload id {upload:?} must be 1 to 64 letters, digits, - or _"
        )));
    }
    Ok(())
}

fn artifact_dir(run_dir: &Path, name: &str) -> PathBuf {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    run_dir.join(format!("a-{hex}"))
}

/// One run's artifacts.
pub struct RunArtifacts {
    dir: PathBuf,
    run_id: String,
}

impl RunArtifacts {
    pub fn open(scheduler: &Scheduler, run_id: &str) -> Result<RunArtifacts, ArtifactError> {
        let dir = scheduler
            .store()
            .data_dir()
            .run_artifacts_dir(run_id)
            .map_err(ServiceError::from)?;
        Ok(RunArtifacts {
            dir,
            run_id: run_id.to_owned(),
        })
    }

    /// A temporary file for one uploaded file; [`RunArtifacts::keep_upload`] checks and keeps
    /// it.
    pub fn upload_file(&self, upload: &str) -> Result<tempfile::NamedTempFile, ArtifactError> {
        check_upload(upload)?;
        let dir = self.dir.join("uploads").join(upload);
        std::fs::create_dir_all(&dir).map_err(io("cannot store the upload"))?;
        tempfile::Builder::new()
            .prefix(".part-")
            .tempfile_in(&dir)
            .map_err(io("cannot store the upload"))
    }

    /// Keeps an uploaded file whose bytes hash to `claimed`.
    pub fn keep_upload(
        &self,
        upload: &str,
        mut file: tempfile::NamedTempFile,
        actual: &str,
        claimed: &str,
    ) -> Result<(), ArtifactError> {
        check_digest(claimed)?;
        if !actual.eq_ignore_ascii_case(claimed) {
            return Err(ArtifactError::Bad(format!(
                "the file's bytes hash to {actual}, not {claimed} as X-Kiln-Blake3 says; upload it again"
            )));
        }
        file.flush().map_err(io("cannot store the upload"))?;
        let target = self
            .dir
            .join("uploads")
            .join(upload)
            .join(claimed.to_ascii_lowercase());
        file.persist(&target)
            .map_err(|e| io("cannot store the upload")(e.error))?;
        Ok(())
    }

    /// Makes artifact `name` exactly the listed files of upload `upload`.
    pub fn commit(
        &self,
        scheduler: &Scheduler,
        name: &str,
        upload: &str,
        overwrite: bool,
        files: Vec<ManifestFile>,
    ) -> Result<Manifest, ArtifactError> {
        check_name(name)?;
        check_upload(upload)?;
        let uploaded = self.dir.join("uploads").join(upload);
        let target = artifact_dir(&self.dir, name);
        if target.exists() && !overwrite {
            return Err(ArtifactError::Exists(format!(
                "an artifact named {name} already exists in this run"
            )));
        }
        let staging = self.dir.join(format!(".commit-{upload}"));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(io("cannot store the artifact"))?;
        let mut size = 0u64;
        let mut seen = std::collections::BTreeSet::new();
        for file in &files {
            check_path(&file.path)?;
            check_digest(&file.blake3)?;
            if !seen.insert(file.path.clone()) {
                return Err(ArtifactError::Bad(format!(
                    "the manifest lists {} twice",
                    file.path
                )));
            }
            let digest = file.blake3.to_ascii_lowercase();
            let source = uploaded.join(&digest);
            let held = std::fs::metadata(&source).map_err(|_| {
                ArtifactError::Bad(format!("{} was not uploaded in upload {upload}", file.path))
            })?;
            if held.len() != file.size {
                return Err(ArtifactError::Bad(format!(
                    "{} was uploaded with {} bytes, not {}",
                    file.path,
                    held.len(),
                    file.size
                )));
            }
            let blob = staging.join(&digest);
            if !blob.exists() {
                std::fs::hard_link(&source, &blob)
                    .or_else(|_| std::fs::copy(&source, &blob).map(|_| ()))
                    .map_err(io("cannot store the artifact"))?;
            }
            size += file.size;
        }
        let manifest_json = serde_json::to_vec(&files).unwrap_or_default();
        let id = blake3::hash(&[name.as_bytes(), &[0], &manifest_json].concat())
            .to_hex()
            .to_string()[..16]
            .to_owned();
        let manifest = Manifest {
            name: name.to_owned(),
            id,
            size,
            files,
        };
        std::fs::write(
            staging.join("manifest.json"),
            serde_json::to_vec(&manifest).unwrap_or_default(),
        )
        .map_err(io("cannot store the artifact"))?;
        if target.exists() {
            let old = self.dir.join(format!(".old-{upload}"));
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(&target, &old).map_err(io("cannot replace the artifact"))?;
            let _ = std::fs::remove_dir_all(&old);
        }
        std::fs::rename(&staging, &target).map_err(io("cannot store the artifact"))?;
        let _ = std::fs::remove_dir_all(&uploaded);
        let now = scheduler.now();
        scheduler
            .store()
            .write(|tx| tx.record_artifact(&self.run_id, name, size, now))
            .map_err(ServiceError::from)?;
        Ok(manifest)
    }

    pub fn manifest(&self, name: &str) -> Result<Manifest, ArtifactError> {
        check_name(name)?;
        let path = artifact_dir(&self.dir, name).join("manifest.json");
        let bytes = std::fs::read(&path)
            .map_err(|_| ArtifactError::NotFound(format!("this run has no artifact {name}")))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ArtifactError::Service(ServiceError::Corrupt(format!(
                "the manifest of artifact {name}: {e}"
            )))
        })
    }

    /// Every committed artifact, by name.
    pub fn list(&self) -> Result<Vec<Manifest>, ArtifactError> {
        let mut found = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(io("cannot list the artifacts"))?;
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(hex) = file_name.to_str().and_then(|n| n.strip_prefix("a-")) else {
                continue;
            };
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect();
            let Some(name) = bytes.and_then(|b| String::from_utf8(b).ok()) else {
                continue;
            };
            if let Ok(manifest) = self.manifest(&name) {
                found.push(manifest);
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// Removes artifact `name` (the retention ran out).
    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_dir_all(artifact_dir(&self.dir, name));
    }

    /// Where the bytes of `path` in artifact `name` are, and their size.
    pub fn file(&self, name: &str, path: &str) -> Result<(PathBuf, u64), ArtifactError> {
        check_path(path)?;
        let manifest = self.manifest(name)?;
        let file = manifest
            .files
            .iter()
            .find(|f| f.path == path)
            .ok_or_else(|| {
                ArtifactError::NotFound(format!("artifact {name} has no file {path}"))
            })?;
        Ok((
            artifact_dir(&self.dir, name).join(file.blake3.to_ascii_lowercase()),
            file.size,
        ))
    }
}
