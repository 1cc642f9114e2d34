//! A v1 cache client shaped like `@actions/cache` (v1): reserve, PATCH 32 MiB ranges with 4
//! uploads in flight, commit, then look up and download the archive to a file. The same code
//! drives kiln's v1 API and act's built-in server, so their rows compare servers only.

use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const PART: u64 = 32 << 20;
const UPLOADS_IN_FLIGHT: usize = 4;
const ACCEPT: &str = "application/json;api-version=6.0-preview.1";

struct Api {
    agent: ureq::Agent,
    base: String,
    auth: String,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}_apis/artifactcache/{path}", self.base)
    }

    fn check(what: &str, mut resp: ureq::http::Response<ureq::Body>) -> Result<String, String> {
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(format!("{what}: HTTP {status}: {body}"))
        }
    }

    fn post_json(
        &self,
        what: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<String, String> {
        let resp = self
            .agent
            .post(&self.url(path))
            .header("Accept", ACCEPT)
            .header("Authorization", &self.auth)
            .content_type("application/json")
            .send(body.to_string().as_bytes())
            .map_err(|e| format!("{what}: {e}"))?;
        Self::check(what, resp)
    }
}

fn field<'a>(body: &'a serde_json::Value, name: &str) -> Result<&'a serde_json::Value, String> {
    body.get(name)
        .ok_or_else(|| format!("response has no `{name}`: {body}"))
}

fn parse(body: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(body).map_err(|e| format!("not JSON ({e}): {body}"))
}

fn file_blake3(path: &Path) -> Result<blake3::Hash, String> {
    let mut hasher = blake3::Hasher::new();
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

/// Uploads FILE under a fresh key and downloads it into DOWNLOAD; returns `name value` lines.
pub fn roundtrip(base: &str, token: &str, file: &Path, download: &Path) -> Result<String, String> {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections_per_host(UPLOADS_IN_FLIGHT)
        .build();
    let api = Api {
        agent: ureq::Agent::new_with_config(config),
        base: format!("{}/", base.trim_end_matches('/')),
        auth: format!("Bearer {token}"),
    };
    let source = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let size = source.metadata().map_err(|e| e.to_string())?.len();
    let key = format!("bench-v1-{}", std::process::id());
    let version = "0000000000000000000000000000000000000000000000000000000000000001";

    let start = Instant::now();
    let reserved = parse(&api.post_json(
        "reserve",
        "caches",
        &serde_json::json!({"key": key, "version": version, "cacheSize": size}),
    )?)?;
    let id = field(&reserved, "cacheId")?
        .as_u64()
        .ok_or_else(|| format!("cacheId is not a number: {reserved}"))?;
    let next_part = AtomicU64::new(0);
    std::thread::scope(|scope| -> Result<(), String> {
        let workers: Vec<_> = (0..UPLOADS_IN_FLIGHT)
            .map(|_| scope.spawn(|| upload_parts(&api, id, &source, size, &next_part)))
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| "an upload thread panicked".to_string())??;
        }
        Ok(())
    })?;
    let commit_start = Instant::now();
    api.post_json(
        "commit",
        &format!("caches/{id}"),
        &serde_json::json!({"size": size}),
    )?;
    let commit = commit_start.elapsed().as_secs_f64();
    let save = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let resp = api
        .agent
        .get(&api.url(&format!("cache?keys={key}&version={version}")))
        .header("Accept", ACCEPT)
        .header("Authorization", &api.auth)
        .call()
        .map_err(|e| format!("lookup: {e}"))?;
    let found = parse(&Api::check("lookup", resp)?)?;
    let location = field(&found, "archiveLocation")?
        .as_str()
        .ok_or_else(|| format!("archiveLocation is not a string: {found}"))?
        .to_string();
    let mut resp = api
        .agent
        .get(&location)
        .call()
        .map_err(|e| format!("download: {e}"))?;
    if resp.status() != 200 {
        return Err(format!("download: HTTP {}", resp.status()));
    }
    let mut out =
        std::fs::File::create(download).map_err(|e| format!("{}: {e}", download.display()))?;
    let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
    std::io::copy(&mut reader, &mut out).map_err(|e| format!("download: {e}"))?;
    let restore = start.elapsed().as_secs_f64();

    if file_blake3(file)? != file_blake3(download)? {
        return Err("the downloaded archive differs from the uploaded one".into());
    }
    let mut report = String::new();
    let _ = writeln!(report, "v1_bytes {size}");
    let _ = writeln!(report, "v1_save_seconds {save:.3}");
    // The commit request alone: what a server still does after the last byte arrived.
    let _ = writeln!(report, "v1_commit_seconds {commit:.3}");
    let _ = writeln!(report, "v1_restore_seconds {restore:.3}");
    Ok(report)
}

fn upload_parts(
    api: &Api,
    id: u64,
    source: &std::fs::File,
    size: u64,
    next: &AtomicU64,
) -> Result<(), String> {
    let mut buf = vec![0u8; PART as usize];
    loop {
        let start = next.fetch_add(1, Ordering::Relaxed) * PART;
        if start >= size {
            return Ok(());
        }
        let len = PART.min(size - start) as usize;
        source
            .read_exact_at(&mut buf[..len], start)
            .map_err(|e| format!("read archive: {e}"))?;
        let resp = api
            .agent
            .patch(&api.url(&format!("caches/{id}")))
            .header("Accept", ACCEPT)
            .header("Authorization", &api.auth)
            .header(
                "Content-Range",
                &format!("bytes {start}-{}/*", start + len as u64 - 1),
            )
            .content_type("application/octet-stream")
            .send(&buf[..len])
            .map_err(|e| format!("upload at {start}: {e}"))?;
        Api::check(&format!("upload at {start}"), resp)?;
    }
}

/// Run from a workflow step under act: act exports its cache server's URL and a token.
pub fn against_env(file: &Path, out: &Path) -> Result<(), String> {
    let url = std::env::var("ACTIONS_CACHE_URL")
        .map_err(|_| "ACTIONS_CACHE_URL is not set (run this from a workflow step)".to_string())?;
    let token = std::env::var("ACTIONS_RUNTIME_TOKEN").unwrap_or_default();
    let download = out.with_extension("download");
    let result = roundtrip(&url, &token, file, &download);
    let _ = std::fs::remove_file(&download);
    std::fs::write(out, result?).map_err(|e| format!("{}: {e}", out.display()))
}
