//! A Docker socket of one job's own. Steps reach the daemon through it (host steps through
//! `DOCKER_HOST`, containers through the socket mounted in place of the daemon's), and every
//! container, network and volume they create through it carries the job's labels (its key,
//! and on a registered runner the runner's identity), so the job's end, the runner's guard
//! and the runner's next start find and remove them (a `docker run -d` from a step included).
//!
//! Requests go to the daemon unchanged but for the bodies of `POST /containers/create`,
//! `/networks/create` and `/volumes/create`, whose `Labels` get the job's labels (replacing
//! values a step gave them, so no step can label its containers as another job's or another
//! runner's). Answers
//! come back untouched; after a request that upgrades the connection (`docker attach`,
//! `docker exec -it`, BuildKit sessions) both directions are copied as they are.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// Longest request head (request line and headers) a step may send.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest creation request body the proxy reads to label (the daemon's own JSON is a few KiB).
const MAX_CREATE_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A running proxy; dropping it stops it and removes its socket.
#[derive(Debug)]
pub struct SocketProxy {
    path: PathBuf,
    task: JoinHandle<()>,
    created: Arc<AtomicUsize>,
}

impl SocketProxy {
    /// Serves a new socket at `path` (mode 0600) that forwards to the daemon at `daemon`,
    /// labelling what is created with `labels`.
    pub fn start(
        path: PathBuf,
        daemon: PathBuf,
        labels: Vec<(String, String)>,
    ) -> io::Result<Self> {
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let created = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            daemon,
            labels,
            created: created.clone(),
        });
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    // A connection that breaks only ends itself.
                    let _ = serve(client, &shared).await;
                });
            }
        });
        Ok(SocketProxy {
            path,
            task,
            created,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many objects were created through the proxy so far.
    pub fn created(&self) -> usize {
        self.created.load(Ordering::SeqCst)
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The daemon's socket when it is a local Unix socket that exists (`DOCKER_HOST`, else
/// Docker's default).
pub fn local_daemon_socket() -> Option<PathBuf> {
    let socket = match std::env::var("DOCKER_HOST") {
        Ok(host) => PathBuf::from(host.strip_prefix("unix://")?),
        Err(_) => PathBuf::from("/var/run/docker.sock"),
    };
    socket.exists().then_some(socket)
}

struct Shared {
    daemon: PathBuf,
    labels: Vec<(String, String)>,
    created: Arc<AtomicUsize>,
}

/// What the proxy needs to know of a request.
struct Head {
    text: String,
    labels_body: bool,
    content_length: Option<usize>,
    chunked: bool,
    upgrade: bool,
}

async fn serve(client: UnixStream, shared: &Shared) -> io::Result<()> {
    let upstream = UnixStream::connect(&shared.daemon).await?;
    let (client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let answers =
        tokio::spawn(async move { tokio::io::copy(&mut upstream_read, &mut client_write).await });
    let mut requests = BufReader::new(client_read);
    while let Some(head) = read_head(&mut requests).await? {
        if head.labels_body {
            let body = read_body(&mut requests, &head).await?;
            let body = with_labels(&body, &shared.labels);
            upstream_write
                .write_all(rewrite_length(&head.text, body.len()).as_bytes())
                .await?;
            upstream_write.write_all(&body).await?;
            shared.created.fetch_add(1, Ordering::SeqCst);
        } else {
            upstream_write.write_all(head.text.as_bytes()).await?;
            forward_body(&mut requests, &mut upstream_write, &head).await?;
        }
        if head.upgrade {
            tokio::io::copy(&mut requests, &mut upstream_write).await?;
            break;
        }
    }
    upstream_write.shutdown().await?;
    let _ = answers.await;
    Ok(())
}

/// The next request's head, or `None` at the end of the connection.
async fn read_head(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
) -> io::Result<Option<Head>> {
    let mut text = String::new();
    loop {
        let before = text.len();
        let read = (&mut *reader)
            .take((MAX_HEAD_BYTES + 1 - before) as u64)
            .read_line(&mut text)
            .await?;
        if read == 0 {
            if text.is_empty() {
                return Ok(None);
            }
            return Err(invalid("the connection ended inside a request head"));
        }
        if text.len() > MAX_HEAD_BYTES {
            return Err(invalid("request head too long"));
        }
        if text[before..] == *"\r\n" || text[before..] == *"\n" {
            break;
        }
    }
    Ok(Some(parse_head(text)))
}

fn parse_head(text: String) -> Head {
    let mut lines = text.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    let mut content_length = None;
    let mut chunked = false;
    let mut upgrade = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => content_length = value.parse().ok(),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "upgrade" => upgrade = true,
            "connection" => upgrade |= value.to_ascii_lowercase().contains("upgrade"),
            _ => {}
        }
    }
    Head {
        labels_body: method == "POST" && creates_labelled_object(path),
        text,
        content_length,
        chunked,
        upgrade,
    }
}

/// `/containers/create`, `/networks/create` or `/volumes/create`, with or without the API
/// version prefix (`/v1.41/...`).
fn creates_labelled_object(path: &str) -> bool {
    let path = match path.strip_prefix("/v") {
        Some(rest) => match rest.split_once('/') {
            Some((version, rest)) if version.chars().all(|c| c.is_ascii_digit() || c == '.') => {
                rest
            }
            _ => path.trim_start_matches('/'),
        },
        None => path.trim_start_matches('/'),
    };
    matches!(
        path.trim_end_matches('/'),
        "containers/create" | "networks/create" | "volumes/create"
    )
}

/// The whole body of a request to relabel, decoded from its framing.
async fn read_body(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    head: &Head,
) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if head.chunked {
        loop {
            let size = read_chunk_size(reader).await?;
            if body.len() + size > MAX_CREATE_BODY_BYTES {
                return Err(invalid("creation request too large"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).await?;
            let mut crlf = String::new();
            reader.read_line(&mut crlf).await?;
            if size == 0 {
                skip_trailers(reader, crlf).await?;
                return Ok(body);
            }
        }
    }
    let length = head.content_length.unwrap_or(0);
    if length > MAX_CREATE_BODY_BYTES {
        return Err(invalid("creation request too large"));
    }
    body.resize(length, 0);
    reader.read_exact(&mut body).await?;
    Ok(body)
}

/// Passes a request's body on as it comes, following its framing to find where it ends.
async fn forward_body(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    upstream: &mut OwnedWriteHalf,
    head: &Head,
) -> io::Result<()> {
    if head.chunked {
        loop {
            let mut line = String::new();
            (&mut *reader)
                .take(MAX_HEAD_BYTES as u64)
                .read_line(&mut line)
                .await?;
            upstream.write_all(line.as_bytes()).await?;
            let size = chunk_size(&line)?;
            // The chunk's data and its CRLF.
            let mut data = (&mut *reader).take(size as u64 + 2);
            tokio::io::copy(&mut data, upstream).await?;
            if size == 0 {
                // The CRLF read above was the end of the trailers when there were none.
                return Ok(());
            }
        }
    }
    if let Some(length) = head.content_length {
        let mut data = (&mut *reader).take(length as u64);
        tokio::io::copy(&mut data, upstream).await?;
    }
    Ok(())
}

async fn read_chunk_size(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
) -> io::Result<usize> {
    let mut line = String::new();
    (&mut *reader)
        .take(MAX_HEAD_BYTES as u64)
        .read_line(&mut line)
        .await?;
    chunk_size(&line)
}

fn chunk_size(line: &str) -> io::Result<usize> {
    let digits = line.split(';').next().unwrap_or_default().trim();
    usize::from_str_radix(digits, 16).map_err(|_| invalid("bad chunk size"))
}

/// Reads the trailers after the last chunk (the first line already read is `first`).
async fn skip_trailers(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    first: String,
) -> io::Result<()> {
    let mut line = first;
    let mut total = 0;
    while line != "\r\n" && line != "\n" && !line.is_empty() {
        total += line.len();
        if total > MAX_HEAD_BYTES {
            return Err(invalid("trailers too long"));
        }
        line.clear();
        reader.read_line(&mut line).await?;
    }
    Ok(())
}

/// The creation body with the job's labels in its `Labels` (a body that is not a JSON object
/// goes on as it is: the daemon refuses it).
fn with_labels(body: &[u8], job_labels: &[(String, String)]) -> Vec<u8> {
    let mut json: serde_json::Value = match serde_json::from_slice(body) {
        Ok(json @ serde_json::Value::Object(_)) => json,
        _ => return body.to_vec(),
    };
    let labels = &mut json["Labels"];
    if !labels.is_object() {
        *labels = serde_json::Value::Object(serde_json::Map::new());
    }
    for (name, value) in job_labels {
        labels[name.as_str()] = serde_json::Value::String(value.clone());
    }
    serde_json::to_vec(&json).unwrap_or_else(|_| body.to_vec())
}

/// `head` with its body now `length` bytes long and not chunked.
fn rewrite_length(head: &str, length: usize) -> String {
    let mut out = String::with_capacity(head.len() + 24);
    for line in head.split_inclusive('\n') {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        if line == "\r\n" || line == "\n" {
            out.push_str(&format!("Content-Length: {length}\r\n"));
        }
        out.push_str(line);
    }
    out
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake daemon: answers every request with `200 OK` and an empty body, and returns the
    /// raw bytes it received once the client is done.
    async fn fake_daemon(path: PathBuf) -> JoinHandle<Vec<u8>> {
        let listener = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut received = Vec::new();
            stream.read_to_end(&mut received).await.expect("read");
            received
        })
    }

    async fn through_proxy(requests: &[u8]) -> String {
        let dir = tempfile::tempdir().expect("temp dir");
        let daemon = fake_daemon(dir.path().join("daemon.sock")).await;
        let proxy = SocketProxy::start(
            dir.path().join("job.sock"),
            dir.path().join("daemon.sock"),
            vec![
                ("dev.kiln.job-key".into(), "job-1".into()),
                ("dev.kiln.runner".into(), "r-1".into()),
            ],
        )
        .expect("proxy");
        let mut client = UnixStream::connect(proxy.path()).await.expect("connect");
        client.write_all(requests).await.expect("write");
        client.shutdown().await.expect("shutdown");
        let received = daemon.await.expect("daemon");
        String::from_utf8(received).expect("utf-8")
    }

    #[tokio::test]
    async fn creation_bodies_get_the_jobs_label_and_the_rest_passes_unchanged() {
        let create = r#"{"Image":"busybox","Labels":{"mine":"1","dev.kiln.job-key":"other-job","dev.kiln.runner":"r-2"}}"#;
        let chunked_network = "{\"Name\":\"n\"}";
        let requests = format!(
            "GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n\
             POST /v1.41/containers/create?name=x HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{create}\
             POST /networks/create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunked_network}\r\n0\r\n\r\n\
             POST /v1.41/build HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
             POST /v1.41/containers/x/start HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            create.len(),
            chunked_network.len()
        );
        let received = through_proxy(requests.as_bytes()).await;
        let labelled = r#"{"Image":"busybox","Labels":{"mine":"1","dev.kiln.job-key":"job-1","dev.kiln.runner":"r-1"}}"#;
        let network =
            r#"{"Name":"n","Labels":{"dev.kiln.job-key":"job-1","dev.kiln.runner":"r-1"}}"#;
        let expected = format!(
            "GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n\
             POST /v1.41/containers/create?name=x HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{labelled}\
             POST /networks/create HTTP/1.1\r\nContent-Length: {}\r\n\r\n{network}\
             POST /v1.41/build HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
             POST /v1.41/containers/x/start HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            labelled.len(),
            network.len()
        );
        assert_eq!(received, expected);
    }

    #[tokio::test]
    async fn after_an_upgrade_the_connection_is_copied_as_it_is() {
        let requests = "POST /v1.41/containers/x/attach?stream=1 HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n\
             POST /containers/create HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        let received = through_proxy(requests.as_bytes()).await;
        assert_eq!(
            received, requests,
            "the stream after the upgrade was changed"
        );
    }

    #[test]
    fn only_creation_paths_are_relabelled() {
        for path in [
            "/containers/create",
            "/v1.41/containers/create",
            "/v1.24/networks/create",
            "/volumes/create/",
        ] {
            assert!(creates_labelled_object(path), "{path}");
        }
        for path in [
            "/containers/x/start",
            "/v1.41/containers/json",
            "/vx/containers/create/x",
        ] {
            assert!(!creates_labelled_object(path), "{path}");
        }
    }
}
