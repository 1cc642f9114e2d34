//! kiln's own rounds: a fresh server on loopback (in this process, on its own runtime) and
//! the native client, timed from the first request to the last byte on disk.

use kiln_cache::client::{
    CacheClient, PathContext, RestoreOutcome, RestoreRequest, SaveOutcome, SaveRequest,
};
use kiln_cache::{CacheService, ServiceConfig, TokenRequest};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A kiln cache server listening on 127.0.0.1, alive as long as this value.
pub struct Server {
    pub url: String,
    pub token: String,
    pub service: Arc<CacheService>,
    _runtime: tokio::runtime::Runtime,
}

pub fn start_server(store: &Path) -> Result<Server, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let service = CacheService::open(ServiceConfig::new(store)).map_err(|e| e.to_string())?;
    let service_for_server = Arc::clone(&service);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    runtime.spawn(async move {
        kiln_cache::serve(listener, service_for_server, std::future::pending()).await
    });
    let token = service
        .mint_token(&TokenRequest {
            repo: "bench/repo".into(),
            git_ref: "main".into(),
            base_ref: None,
            read_only: false,
            ttl: Duration::from_secs(3600),
        })
        .map_err(|e| e.to_string())?;
    Ok(Server {
        url: format!("http://{addr}/"),
        token,
        service,
        _runtime: runtime,
    })
}

/// `KILN_BENCH_CONFINE=1`: save and restore as for a container job (see `PathContext::confine`).
fn confined() -> bool {
    std::env::var("KILN_BENCH_CONFINE").is_ok_and(|v| v == "1")
}

/// The path line is SRC's name and the workspace its parent, so a restore into another
/// workspace recreates `WORKSPACE/<name>`.
fn split(src: &Path) -> Result<(String, &Path), String> {
    let name = src
        .file_name()
        .ok_or_else(|| format!("{} has no file name", src.display()))?;
    let parent = src
        .parent()
        .ok_or_else(|| format!("{} has no parent", src.display()))?;
    Ok((name.to_string_lossy().into_owned(), parent))
}

fn save(
    client: &CacheClient,
    key: &str,
    name: &str,
    workspace: &Path,
) -> Result<(f64, u64, u64), String> {
    let start = Instant::now();
    let out = client
        .save(&SaveRequest {
            key: key.into(),
            paths: vec![name.to_string()],
            context: PathContext {
                workspace: workspace.to_path_buf(),
                home: None,
                confine: confined(),
            },
            version: None,
        })
        .map_err(|e| format!("save {key}: {e}"))?;
    let SaveOutcome::Saved(stats) = out else {
        return Err(format!("save {key}: {out:?}"));
    };
    Ok((
        start.elapsed().as_secs_f64(),
        stats.bytes,
        stats.bytes_uploaded,
    ))
}

fn restore(
    client: &CacheClient,
    key: &str,
    name: &str,
    workspace: &Path,
) -> Result<(f64, u64, u64), String> {
    let start = Instant::now();
    let out = client
        .restore(&RestoreRequest {
            key: key.into(),
            restore_keys: vec![],
            paths: vec![name.to_string()],
            context: PathContext {
                workspace: workspace.to_path_buf(),
                home: None,
                confine: confined(),
            },
            version: None,
            lookup_only: false,
        })
        .map_err(|e| format!("restore {key}: {e}"))?;
    let RestoreOutcome::Hit { stats, .. } = out else {
        return Err(format!("restore {key}: {out:?}"));
    };
    Ok((
        start.elapsed().as_secs_f64(),
        stats.files_written,
        stats.files_skipped,
    ))
}

/// User plus system CPU time of this process so far (all threads), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // The kernel reports clock ticks; USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// The client, with the bench's `KILN_BENCH_*` settings.
fn bench_client(server: &Server) -> Result<CacheClient, String> {
    let mut client = CacheClient::new(&server.url, &server.token);
    if let Ok(level) = std::env::var("KILN_BENCH_ZSTD_LEVEL") {
        client.zstd_level = level
            .parse()
            .map_err(|e| format!("KILN_BENCH_ZSTD_LEVEL={level}: {e}"))?;
    }
    if let Ok(n) = std::env::var("KILN_BENCH_CONCURRENCY") {
        client.concurrency = n
            .parse()
            .map_err(|e| format!("KILN_BENCH_CONCURRENCY={n}: {e}"))?;
    }
    Ok(client)
}

/// Saves SRC to a fresh server in WORK and waits for its background sync (untimed): the save
/// alone, for paired runs that change only the save.
pub fn save_only(work: &Path, src: &Path) -> Result<(), String> {
    let server = start_server(&work.join("store"))?;
    let client = bench_client(&server)?;
    let (name, parent) = split(src)?;
    let cpu_before = cpu_seconds();
    let (t, bytes, uploaded) = save(&client, "bench-1", &name, parent)?;
    println!("save_seconds {t:.3}");
    println!("save_cpu_seconds {:.2}", cpu_seconds() - cpu_before);
    println!("save_bytes {bytes}");
    println!("save_uploaded_bytes {uploaded}");
    server.service.store().flush_durability();
    Ok(())
}

pub fn run(work: &Path, src: &Path, resave: bool) -> Result<(), String> {
    let server = start_server(&work.join("store"))?;
    let client = bench_client(&server)?;
    let (name, parent) = split(src)?;
    let out = work.join("out");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let cpu_before = cpu_seconds();
    let (t, bytes, uploaded) = save(&client, "bench-1", &name, parent)?;
    let save_cpu = cpu_seconds() - cpu_before;
    println!("save_seconds {t:.3}");
    // Client and server together (one process): the work a save costs whatever else runs.
    println!("save_cpu_seconds {save_cpu:.2}");
    println!("save_bytes {bytes}");
    println!("save_uploaded_bytes {uploaded}");
    // The entry is visible at once and its chunks are synced in the background; wait for that
    // (untimed), as the script runs `sync` between the reference's steps, so the restore is not
    // timed while the disk is still busy with the save.
    let start = Instant::now();
    server.service.store().flush_durability();
    println!("save_sync_seconds {:.3}", start.elapsed().as_secs_f64());
    let cpu_before = cpu_seconds();
    let (t, written, _) = restore(&client, "bench-1", &name, &out)?;
    let restore_cpu = cpu_seconds() - cpu_before;
    println!("restore_seconds {t:.3}");
    println!("restore_cpu_seconds {restore_cpu:.2}");
    println!("restore_files {written}");
    // Restoring over an identical tree: every file is compared by digest and skipped.
    let (t, _, skipped) = restore(&client, "bench-1", &name, &out)?;
    println!("restore_again_seconds {t:.3}");
    println!("restore_again_skipped {skipped}");
    if resave {
        resave_after_one_change(&client, &name, parent, src)?;
    }
    Ok(())
}

/// Appends a line to the first file, saves under a new key, then puts the file back so the
/// generated data stays as generated.
fn resave_after_one_change(
    client: &CacheClient,
    name: &str,
    parent: &Path,
    src: &Path,
) -> Result<(), String> {
    let files = crate::data::files(src).map_err(|e| e.to_string())?;
    let victim = files
        .first()
        .ok_or_else(|| format!("no file under {}", src.display()))?;
    let original = std::fs::read(victim).map_err(|e| format!("{}: {e}", victim.display()))?;
    let mut changed = original.clone();
    changed.extend_from_slice(b"one more line\n");
    std::fs::write(victim, &changed).map_err(|e| format!("{}: {e}", victim.display()))?;
    let result = save(client, "bench-2", name, parent);
    std::fs::write(victim, &original).map_err(|e| format!("{}: {e}", victim.display()))?;
    let (t, bytes, uploaded) = result?;
    println!("resave_seconds {t:.3}");
    println!("resave_uploaded_bytes {uploaded}");
    println!(
        "resave_uploaded_percent {:.4}",
        100.0 * uploaded as f64 / bytes as f64
    );
    Ok(())
}

/// The v1 client against kiln's own v1 API, for the row that compares servers.
pub fn v1_against_kiln(work: &Path, file: &Path) -> Result<(), String> {
    let server = start_server(&work.join("store"))?;
    let result = crate::v1::roundtrip(&server.url, &server.token, file, &work.join("download"))?;
    print!("{result}");
    Ok(())
}

/// Restores the entry an earlier `kiln` run saved in WORK into OUT, with a fresh server on the
/// same store: a restore alone, for rounds that prepare the filesystem between restores.
pub fn restore_only(work: &Path, src: &Path, out: &Path) -> Result<(), String> {
    let server = start_server(&work.join("store"))?;
    let client = bench_client(&server)?;
    let (name, _) = split(src)?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let cpu_before = cpu_seconds();
    let (t, written, _) = restore(&client, "bench-1", &name, out)?;
    println!("restore_seconds {t:.3}");
    println!("restore_cpu_seconds {:.2}", cpu_seconds() - cpu_before);
    println!("restore_files {written}");
    Ok(())
}
