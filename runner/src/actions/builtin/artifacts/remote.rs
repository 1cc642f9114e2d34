//! The artifact store of a distributed run, over HTTP: the scheduler keeps a run's artifacts,
//! so `actions/upload-artifact` on one runner and `actions/download-artifact` on another meet
//! there. The contract (paths, methods, status codes) is in docs/scheduler.md, section
//! "Artifacts"; every request carries the run's token as `Authorization: Bearer`.
//!
//! Blocking (ureq): call it from a blocking thread.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a run's artifacts live, and the token that opens them (the scheduler's
/// `JobSpec.artifacts`). Jobs with one store artifacts there instead of the run directory.
#[derive(Clone, PartialEq, Eq)]
pub struct ArtifactServer {
    /// Base URL; requests go to `{url}/artifacts/...`.
    pub url: String,
    pub token: String,
}

impl std::fmt::Debug for ArtifactServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token opens every artifact of the run: never print it.
        f.debug_struct("ArtifactServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Longest JSON answer read (a listing or a manifest).
const MAX_JSON: u64 = 16 << 20;

/// One file of an artifact, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative to the artifact's root, `/`-separated.
    pub path: String,
    pub size: u64,
    /// blake3 of the contents, hex.
    pub blake3: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct CommitRequest {
    files: Vec<ManifestFile>,
}

#[derive(Debug, Deserialize)]
struct CommitResponse {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Listing {
    artifacts: Vec<ListedArtifact>,
}

#[derive(Debug, Deserialize)]
struct ListedArtifact {
    name: String,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    files: Vec<ManifestFile>,
}

/// What an upload returns: the artifact's id and where it can be fetched.
pub struct Stored {
    pub id: String,
    pub url: String,
}

/// Why a request failed, worded for the step's log.
type Result<T> = std::result::Result<T, String>;

impl ArtifactServer {
    fn agent() -> ureq::Agent {
        crate::transfer::http_agent()
    }

    fn artifact_url(&self, name: &str) -> String {
        format!(
            "{}/artifacts/{}",
            self.url.trim_end_matches('/'),
            encode_segment(name)
        )
    }

    fn file_url(&self, name: &str, path: &str) -> String {
        let encoded: Vec<String> = path.split('/').map(encode_segment).collect();
        format!("{}/files/{}", self.artifact_url(name), encoded.join("/"))
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Uploads `files` (paths under `root`) as artifact `name`, then commits them in one step,
    /// so a reader sees all of the artifact or none of it.
    pub fn upload(
        &self,
        name: &str,
        root: &Path,
        files: &[PathBuf],
        overwrite: bool,
    ) -> Result<Stored> {
        let agent = Self::agent();
        let upload = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let mut manifest = Vec::with_capacity(files.len());
        for file in files {
            let relative = relative_path(root, file)?;
            let (size, digest) = hash_file(file)?;
            let url = format!("{}?upload={upload}", self.file_url(name, &relative));
            let body = std::fs::File::open(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let response = agent
                .put(&url)
                .header("Authorization", &self.bearer())
                .header("X-Kiln-Blake3", &digest)
                .send(body)
                .map_err(|e| format!("uploading {relative} of artifact {name} failed: {e}"))?;
            expect_success(
                response,
                &format!("uploading {relative} of artifact {name}"),
            )?;
            manifest.push(ManifestFile {
                path: relative,
                size,
                blake3: digest,
            });
        }
        let url = format!(
            "{}/commit?upload={upload}&overwrite={overwrite}",
            self.artifact_url(name)
        );
        let body = serde_json::to_vec(&CommitRequest { files: manifest })
            .map_err(|e| format!("cannot encode the manifest of artifact {name}: {e}"))?;
        let response = agent
            .post(&url)
            .header("Authorization", &self.bearer())
            .content_type("application/json")
            .send(&body[..])
            .map_err(|e| format!("storing artifact {name} failed: {e}"))?;
        if response.status().as_u16() == 409 {
            return Err(format!(
                "Failed to CreateArtifact: an artifact with the name `{name}` already exists in this run (set `overwrite: true` to replace it)"
            ));
        }
        let committed: CommitResponse = read_json(response, &format!("storing artifact {name}"))?;
        Ok(Stored {
            id: committed.id,
            url: self.artifact_url(name),
        })
    }

    /// The names of the run's artifacts, sorted.
    pub fn names(&self) -> Result<Vec<String>> {
        let url = format!("{}/artifacts", self.url.trim_end_matches('/'));
        let response = Self::agent()
            .get(&url)
            .header("Authorization", &self.bearer())
            .call()
            .map_err(|e| format!("listing the run's artifacts failed: {e}"))?;
        let listing: Listing = read_json(response, "listing the run's artifacts")?;
        let mut names: Vec<String> = listing.artifacts.into_iter().map(|a| a.name).collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Whether artifact `name` exists.
    pub fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.manifest(name)?.is_some())
    }

    fn manifest(&self, name: &str) -> Result<Option<Manifest>> {
        let response = Self::agent()
            .get(&self.artifact_url(name))
            .header("Authorization", &self.bearer())
            .call()
            .map_err(|e| format!("looking up artifact {name} failed: {e}"))?;
        if response.status().as_u16() == 404 {
            return Ok(None);
        }
        read_json(response, &format!("looking up artifact {name}")).map(Some)
    }

    /// Downloads artifact `name` into `target`, checking every file's size and digest. A
    /// file is written through a temporary name, so a failed download leaves no half file.
    pub fn download(&self, name: &str, target: &Path) -> Result<()> {
        let manifest = self.manifest(name)?.ok_or_else(|| {
            format!("Unable to download artifact(s): Artifact not found for name: {name}")
        })?;
        let agent = Self::agent();
        for file in &manifest.files {
            let destination = target.join(safe_relative(&file.path).ok_or_else(|| {
                format!(
                    "artifact {name} lists the path `{}`, which would leave the download folder",
                    file.path
                )
            })?);
            let response = agent
                .get(&self.file_url(name, &file.path))
                .header("Authorization", &self.bearer())
                .call()
                .map_err(|e| format!("downloading {} of artifact {name} failed: {e}", file.path))?;
            let what = format!("downloading {} of artifact {name}", file.path);
            let status = response.status().as_u16();
            if status != 200 {
                return Err(status_error(response, &what, status));
            }
            crate::transfer::receive_verified(
                response.into_body().into_reader(),
                &destination,
                file.size,
                &file.blake3,
            )
            .map_err(|e| format!("{what}: {e}"))?;
        }
        Ok(())
    }
}

/// `file` relative to `root`, `/`-separated; names must be UTF-8 to travel in URLs.
fn relative_path(root: &Path, file: &Path) -> Result<String> {
    let relative = file.strip_prefix(root).unwrap_or(file);
    let mut parts = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => parts.push(
                part.to_str()
                    .ok_or_else(|| format!("{} has a name that is not UTF-8", file.display()))?
                    .to_owned(),
            ),
            _ => {
                return Err(format!(
                    "{} is not inside {}",
                    file.display(),
                    root.display()
                ))
            }
        }
    }
    Ok(parts.join("/"))
}

/// A manifest path as a relative path that stays inside its folder, or `None`.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let mut relative = PathBuf::new();
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains(['\\', '\0']) {
            return None;
        }
        relative.push(part);
    }
    (!relative.as_os_str().is_empty()).then_some(relative)
}

fn hash_file(file: &Path) -> Result<(u64, String)> {
    let mut hasher = blake3::Hasher::new();
    let size = hasher
        .update_reader(
            std::fs::File::open(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?,
        )
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?
        .count();
    Ok((size, hasher.finalize().to_hex().to_string()))
}

/// Percent-encodes one path segment: everything but RFC 3986's unreserved characters.
fn encode_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn expect_success(response: ureq::http::Response<ureq::Body>, what: &str) -> Result<()> {
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(status_error(response, what, status))
    }
}

fn read_json<T: serde::de::DeserializeOwned>(
    response: ureq::http::Response<ureq::Body>,
    what: &str,
) -> Result<T> {
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(status_error(response, what, status));
    }
    let mut text = String::new();
    response
        .into_body()
        .into_with_config()
        .limit(MAX_JSON)
        .reader()
        .read_to_string(&mut text)
        .map_err(|e| format!("{what}: reading the answer failed: {e}"))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{what}: the server's answer is not valid: {e}"))
}

/// The error for a refused request, with the start of the server's explanation.
fn status_error(response: ureq::http::Response<ureq::Body>, what: &str, status: u16) -> String {
    let mut text = String::new();
    let _ = response
        .into_body()
        .into_with_config()
        .limit(4096)
        .reader()
        .read_to_string(&mut text);
    let hint = match status {
        401 | 403 => " (the run's artifact token was refused)",
        413 => " (the artifact store refused the size)",
        _ => "",
    };
    let text = text.trim();
    if text.is_empty() {
        format!("{what} failed: HTTP {status}{hint}")
    } else {
        format!("{what} failed: HTTP {status}{hint}: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("a b/c%?#é"), "a%20b%2Fc%25%3F%23%C3%A9");
        assert_eq!(encode_segment("keep-._~09AZaz"), "keep-._~09AZaz");
    }

    #[test]
    fn manifest_paths_never_leave_their_folder() {
        assert_eq!(safe_relative("a/b.txt"), Some(PathBuf::from("a/b.txt")));
        for bad in [
            "",
            "/etc/passwd",
            "a/../../x",
            "..",
            "./a",
            "a//b",
            "a\\b",
            "a/",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn relative_paths_use_slashes() {
        let root = Path::new("/w/out");
        assert_eq!(
            relative_path(root, Path::new("/w/out/a/b.txt")).unwrap(),
            "a/b.txt"
        );
    }
}
