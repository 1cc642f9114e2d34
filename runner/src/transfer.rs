//! Files the runner downloads from its scheduler (snapshots, artifacts): one HTTP client
//! setup, and a download that only gets its name once its size and blake3 digest are right.

use std::io::{Read, Write as _};
use std::path::Path;
use std::time::Duration;

/// A blocking HTTP client for the scheduler's endpoints. It never follows redirects: the
/// bearer token must not travel to another host.
pub(crate) fn http_agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_per_read(Some(Duration::from_secs(120)))
        .timeout_per_write(Some(Duration::from_secs(120)))
        .build();
    ureq::Agent::new_with_config(config)
}

/// Streams `body` into `destination` through a temporary file in its folder, and gives it
/// that name only when exactly `size` bytes with blake3 `digest` arrived. `Err` says what
/// arrived instead; no half file is left behind.
pub(crate) fn receive_verified(
    body: impl Read,
    destination: &Path,
    size: u64,
    digest: &str,
) -> Result<(), String> {
    let folder = destination
        .parent()
        .ok_or_else(|| format!("{} has no parent folder", destination.display()))?;
    std::fs::create_dir_all(folder)
        .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    let mut staging = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(folder)
        .map_err(|e| format!("cannot write in {}: {e}", folder.display()))?;
    // One byte more than promised is enough to know the file is not the one announced; the
    // sender cannot make the runner read more.
    let mut body = body.take(size.saturating_add(1));
    let mut hasher = blake3::Hasher::new();
    let mut received = 0u64;
    let mut buffer = vec![0u8; 256 << 10];
    loop {
        let read = body
            .read(&mut buffer)
            .map_err(|e| format!("reading the download failed: {e}"))?;
        if read == 0 {
            break;
        }
        received += read as u64;
        hasher.update(&buffer[..read]);
        staging
            .write_all(&buffer[..read])
            .map_err(|e| format!("cannot write {}: {e}", destination.display()))?;
    }
    let got = hasher.finalize().to_hex().to_string();
    if received != size || !got.eq_ignore_ascii_case(digest) {
        return Err(format!(
            "it arrived damaged ({received} bytes, blake3 {got}; expected {size} bytes, blake3 {digest})"
        ));
    }
    staging
        .persist(destination)
        .map_err(|e| format!("cannot write {}: {}", destination.display(), e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_announced_bytes_take_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub/file");
        let digest = blake3::hash(b"hello").to_hex().to_string();
        receive_verified(&b"hello"[..], &target, 5, &digest).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"hello");
        for (body, size) in [(&b"hellO"[..], 5), (&b"hello!"[..], 5), (&b"hell"[..], 5)] {
            let other = dir.path().join("other");
            let error = receive_verified(body, &other, size, &digest).unwrap_err();
            assert!(error.contains("arrived damaged"), "{error}");
            assert!(!other.exists());
        }
        // Nothing temporary stays behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["file"]);
    }
}
