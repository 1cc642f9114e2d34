//! Benchmark driver for benches/cache-bench.sh: generates the test trees and measures save and
//! restore through kiln's native client and server on loopback (both in this process).
//!
//!   cache_bench gen-tree DIR      50,000 files of 0-8 KiB plus 4 files of 64 MiB (~450 MiB)
//!   cache_bench gen-file DIR      one 256 MiB file
//!   cache_bench run DATA SRC DST  save SRC, restore into DST, change one file, save again

use kiln_cache::client::{
    CacheClient, PathContext, RestoreOutcome, RestoreRequest, SaveOutcome, SaveRequest,
};
use kiln_cache::{CacheService, ServiceConfig, TokenRequest};
use std::path::Path;
use std::time::{Duration, Instant};

/// Deterministic data that zstd -3 compresses about 2:1: half of every 64 bytes is noise.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let text = b"fn main() { let value = compute(input, options); println!(\"{value}\"); }\n";
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(&x.to_le_bytes());
        }
        let at = (x % 40) as usize;
        out.extend_from_slice(&text[at..at + 32]);
    }
    out.truncate(len);
    out
}

fn gen_tree(dir: &Path) {
    for i in 0..50_000u64 {
        let path = dir.join(format!(
            "d{:03}/s{:02}/f{i:05}.dat",
            i % 250,
            (i / 250) % 20
        ));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content(i, ((i * 7919) % 8193) as usize)).unwrap();
    }
    for i in 0..4u64 {
        std::fs::write(
            dir.join(format!("big{i}.bin")),
            content(100_000 + i, 64 << 20),
        )
        .unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("gen-tree") => gen_tree(Path::new(&args[2])),
        Some("gen-file") => {
            std::fs::create_dir_all(&args[2]).unwrap();
            std::fs::write(Path::new(&args[2]).join("one.bin"), content(7, 256 << 20)).unwrap();
        }
        Some("run") => run(
            Path::new(&args[2]),
            Path::new(&args[3]),
            Path::new(&args[4]),
        ),
        _ => {
            eprintln!("usage: cache_bench gen-tree DIR | gen-file DIR | run DATA SRC DST");
            std::process::exit(2);
        }
    }
}

fn run(data: &Path, src: &Path, dst: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let service = CacheService::open(ServiceConfig::new(data)).unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let svc = std::sync::Arc::clone(&service);
    runtime.spawn(async move { kiln_cache::serve(listener, svc, std::future::pending()).await });
    let token = service
        .mint_token(&TokenRequest {
            repo: "bench/repo".into(),
            git_ref: "main".into(),
            base_ref: None,
            read_only: false,
            ttl: Duration::from_secs(3600),
        })
        .unwrap();
    let client = CacheClient::new(&url, &token);
    // The tree lives at SRC; paths are given relative to its parent so DST can mirror it.
    let name = src.file_name().unwrap().to_string_lossy().into_owned();
    let paths = vec![name.clone()];
    let ctx = |ws: &Path| PathContext {
        workspace: ws.to_path_buf(),
        home: None,
    };
    let save = |key: &str| {
        let start = Instant::now();
        let out = client
            .save(&SaveRequest {
                key: key.into(),
                paths: paths.clone(),
                context: ctx(src.parent().unwrap()),
                version: None,
            })
            .unwrap();
        let SaveOutcome::Saved(stats) = out else {
            panic!("{out:?}")
        };
        (start.elapsed(), stats)
    };
    let (t, s) = save("bench-1");
    println!("save_seconds {:.3}", t.as_secs_f64());
    println!("save_bytes {}", s.bytes);
    println!("save_uploaded_bytes {}", s.bytes_uploaded);
    let start = Instant::now();
    let out = client
        .restore(&RestoreRequest {
            key: "bench-1".into(),
            restore_keys: vec![],
            paths: paths.clone(),
            context: ctx(dst),
            version: None,
            lookup_only: false,
        })
        .unwrap();
    let RestoreOutcome::Hit { stats, .. } = out else {
        panic!("{out:?}")
    };
    println!("restore_seconds {:.3}", start.elapsed().as_secs_f64());
    println!("restore_files {}", stats.files_written);
    // Re-save after a one-file change: what fraction of the bytes travels again.
    let victim = walk_first_file(src);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes.extend_from_slice(b"one more line\n");
    std::fs::write(&victim, bytes).unwrap();
    let (t, s2) = save("bench-2");
    println!("resave_seconds {:.3}", t.as_secs_f64());
    println!("resave_uploaded_bytes {}", s2.bytes_uploaded);
    println!(
        "resave_uploaded_percent {:.4}",
        100.0 * s2.bytes_uploaded as f64 / s2.bytes as f64
    );
}

fn walk_first_file(dir: &Path) -> std::path::PathBuf {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for e in entries {
        if e.is_file() {
            return e;
        }
        if e.is_dir() {
            return walk_first_file(&e);
        }
    }
    panic!("no file under {}", dir.display())
}
