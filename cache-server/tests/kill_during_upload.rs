//! A server killed (SIGKILL) during an upload leaves no visible partial entry, and after a
//! restart the same key can be uploaded again. A server killed after a commit but before the
//! background sync of the entry's chunks loses that entry (a miss after the restart, the key
//! free again), while an entry whose sync finished survives the kill. The test binary
//! re-executes itself as the server child (KILN_CACHE_CHILD_DATA set), so a real process dies,
//! not a thread.

use kiln_cache::token::{mint, Secret, TokenRequest};
use kiln_cache::{CacheService, ServiceConfig};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn child_server(data: &str) -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut cfg = ServiceConfig::new(data);
        if let Ok(ms) = std::env::var("KILN_CACHE_CHILD_SYNC_DELAY_MS") {
            cfg.store.sync_batch_delay = Duration::from_millis(ms.parse().unwrap());
        }
        let service = CacheService::open(cfg).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("PORT {}", listener.local_addr().unwrap().port());
        std::io::stdout().flush().unwrap();
        let _ = kiln_cache::serve(listener, service, std::future::pending()).await;
    });
    std::process::exit(0)
}

fn spawn(data: &Path) -> (Child, String) {
    spawn_with_sync_delay(data, 0)
}

/// A child server whose background sync waits `delay_ms` after each commit.
fn spawn_with_sync_delay(data: &Path, delay_ms: u64) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("KILN_CACHE_CHILD_DATA", data)
        .env("KILN_CACHE_CHILD_SYNC_DELAY_MS", delay_ms.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .unwrap_or_else(|| panic!("child said {line:?}"))
        .to_string();
    (child, format!("http://127.0.0.1:{port}"))
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build(),
    )
}

fn reserve(base: &str, token: &str) -> (u16, String) {
    let mut r = agent()
        .post(&format!("{base}/_apis/artifactcache/caches"))
        .header("Authorization", &format!("Bearer {token}"))
        .content_type("application/json")
        .send(r#"{"key":"k","version":"v","cacheSize":2000000}"#)
        .unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn patch(base: &str, token: &str, id: u64, start: usize, data: &[u8]) -> u16 {
    agent()
        .patch(&format!("{base}/_apis/artifactcache/caches/{id}"))
        .header("Authorization", &format!("Bearer {token}"))
        .header(
            "Content-Range",
            &format!("bytes {start}-{}/*", start + data.len() - 1),
        )
        .content_type("application/octet-stream")
        .send(data)
        .unwrap()
        .status()
        .as_u16()
}

fn lookup(base: &str, token: &str) -> (u16, String) {
    let mut r = agent()
        .get(&format!(
            "{base}/_apis/artifactcache/cache?keys=k&version=v"
        ))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn commit(base: &str, token: &str, id: u64, size: usize) -> u16 {
    agent()
        .post(&format!("{base}/_apis/artifactcache/caches/{id}"))
        .header("Authorization", &format!("Bearer {token}"))
        .content_type("application/json")
        .send(format!(r#"{{"size":{size}}}"#))
        .unwrap()
        .status()
        .as_u16()
}

/// The value of the `kiln_cache_entries_not_durable` gauge.
fn not_durable(base: &str) -> u64 {
    let text = agent()
        .get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("kiln_cache_entries_not_durable "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no kiln_cache_entries_not_durable in /metrics:\n{text}"))
}

fn download(url: &str) -> Vec<u8> {
    agent()
        .get(url)
        .call()
        .unwrap()
        .body_mut()
        .with_config()
        .limit(10 << 20)
        .read_to_vec()
        .unwrap()
}

fn same_as_upload(got: &[u8], payload: &[u8]) -> Result<(), String> {
    if got == payload {
        Ok(())
    } else {
        Err(format!(
            "downloaded {} bytes that differ from the upload",
            got.len()
        ))
    }
}

fn archive_location(status: u16, body: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["archiveLocation"].as_str().map(str::to_string))
        .filter(|_| status == 200)
}

fn token_for(data: &Path) -> String {
    mint(
        &Secret::load_or_create(data).unwrap(),
        &TokenRequest {
            repo: "o/r".into(),
            git_ref: "main".into(),
            base_ref: None,
            read_only: false,
            ttl: Duration::from_secs(600),
        },
    )
    .unwrap()
}

fn payload() -> Vec<u8> {
    (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Uploads and commits the whole payload under the test key; returns the upload id.
fn save_whole(base: &str, token: &str, payload: &[u8]) -> Result<u64, String> {
    let (status, body) = reserve(base, token);
    if status != 200 {
        return Err(format!("reserve: {status} {body}"));
    }
    let id = cache_id(&body);
    if patch(base, token, id, 0, payload) != 204 {
        return Err("upload failed".into());
    }
    let status = commit(base, token, id, payload.len());
    if status != 204 {
        return Err(format!("commit: {status}"));
    }
    Ok(id)
}

fn killed_after_commit_before_sync() -> Result<(), String> {
    let data = tempfile::tempdir().unwrap();
    let payload = payload();
    // The background sync waits a minute after the commit: the kill lands inside that window.
    let (mut child, base) = spawn_with_sync_delay(data.path(), 60_000);
    let token = token_for(data.path());
    let first = (|| {
        save_whole(&base, &token, &payload)?;
        let (status, body) = lookup(&base, &token);
        if archive_location(status, &body).is_none() {
            return Err(format!(
                "a committed entry is visible before it is durable, lookup gave {status} {body}"
            ));
        }
        match not_durable(&base) {
            1 => Ok(()),
            n => Err(format!(
                "expected 1 entry waiting for its sync, /metrics says {n}"
            )),
        }
    })();
    child.kill().unwrap();
    child.wait().unwrap();
    first?;

    let (mut child, base) = spawn(data.path());
    let second = (|| {
        let (status, body) = lookup(&base, &token);
        if status != 204 {
            return Err(format!(
                "an entry killed before its sync must be dropped at restart, lookup gave {status} {body}"
            ));
        }
        save_whole(&base, &token, &payload)
            .map_err(|e| format!("saving the key again after the restart: {e}"))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while not_durable(&base) != 0 {
            if std::time::Instant::now() > deadline {
                return Err("the background sync did not finish within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    })();
    child.kill().unwrap();
    child.wait().unwrap();
    second?;

    let (mut child, base) = spawn(data.path());
    let third = (|| {
        let (status, body) = lookup(&base, &token);
        let Some(url) = archive_location(status, &body) else {
            return Err(format!(
                "an entry whose sync finished must survive a kill, lookup gave {status} {body}"
            ));
        };
        same_as_upload(&download(&url), &payload)
    })();
    child.kill().unwrap();
    child.wait().unwrap();
    third
}

fn cache_id(body: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(body).unwrap()["cacheId"]
        .as_u64()
        .unwrap()
}

fn scenario() -> Result<(), String> {
    let data = tempfile::tempdir().unwrap();
    let payload = payload();
    let (mut child, base) = spawn(data.path());
    let token = token_for(data.path());
    let (status, body) = reserve(&base, &token);
    if status != 200 {
        return Err(format!("first reserve: {status} {body}"));
    }
    let id = cache_id(&body);
    if patch(&base, &token, id, 0, &payload[..1_000_000]) != 204 {
        return Err("first half upload failed".into());
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, base) = spawn(data.path());
    let result = (|| {
        let (status, _) = lookup(&base, &token);
        if status != 204 {
            return Err(format!(
                "after the kill the half-uploaded entry must be invisible, lookup gave {status}"
            ));
        }
        let (status, body) = reserve(&base, &token);
        if status != 200 {
            return Err(format!(
                "the key must be reservable again after a restart: {status} {body}"
            ));
        }
        let id = cache_id(&body);
        if patch(&base, &token, id, 1_000_000, &payload[1_000_000..]) != 204
            || patch(&base, &token, id, 0, &payload[..1_000_000]) != 204
        {
            return Err("upload after restart failed".into());
        }
        let status = commit(&base, &token, id, payload.len());
        if status != 204 {
            return Err(format!("commit after restart: {status}"));
        }
        let (status, body) = lookup(&base, &token);
        let Some(url) = archive_location(status, &body) else {
            return Err(format!("lookup after commit: {status} {body}"));
        };
        same_as_upload(&download(&url), &payload)
    })();
    child.kill().unwrap();
    child.wait().unwrap();
    result
}

type Scenario = fn() -> Result<(), String>;

fn main() {
    if let Ok(data) = std::env::var("KILN_CACHE_CHILD_DATA") {
        child_server(&data);
    }
    let tests: [(&str, Scenario); 2] = [
        ("killed_during_upload", scenario),
        (
            "killed_after_commit_before_sync",
            killed_after_commit_before_sync,
        ),
    ];
    let mut failed = 0;
    for (name, test) in tests {
        match test() {
            Ok(()) => println!("test {name} ... ok"),
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED\n{e}");
            }
        }
    }
    println!(
        "kill_during_upload: {} passed, {failed} failed",
        tests.len() - failed
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
