//! Shared test helpers: an in-process server on an ephemeral loopback port.
#![allow(dead_code)]

use kiln_cache::{CacheService, ServiceConfig, TokenRequest};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub struct TestServer {
    pub url: String,
    pub service: Arc<CacheService>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    pub fn start(data: &Path) -> TestServer {
        Self::start_with(ServiceConfig::new(data))
    }

    pub fn start_with(cfg: ServiceConfig) -> TestServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let service = CacheService::open(cfg).unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let svc = Arc::clone(&service);
        runtime.spawn(async move {
            let _ = kiln_cache::serve(listener, svc, std::future::pending()).await;
        });
        TestServer {
            url,
            service,
            runtime: Some(runtime),
        }
    }

    pub fn token(&self, repo: &str, git_ref: &str, base: Option<&str>, read_only: bool) -> String {
        self.service
            .mint_token(&TokenRequest {
                repo: repo.into(),
                git_ref: git_ref.into(),
                base_ref: base.map(str::to_string),
                read_only,
                ttl: Duration::from_secs(3600),
            })
            .unwrap()
    }

    /// Stops the server abruptly, like a crash: in-flight requests are dropped.
    pub fn kill(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no rand crate.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}
