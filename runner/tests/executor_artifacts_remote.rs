//! `actions/upload-artifact` and `actions/download-artifact` against a scheduler's artifact
//! store (the HTTP contract of docs/scheduler.md, "Artifacts"), served here by an in-memory
//! store: two jobs with separate run directories, as on two runners, share artifacts only
//! through it.

mod executor_support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use executor_support::Setup;
use kiln_runner::actions::ArtifactServer;
use kiln_workflow::Conclusion;
use serde_json::{json, Value};

const TOKEN: &str = "run-token-123";

#[derive(Default)]
struct Store {
    /// upload id -> path -> (bytes, blake3)
    uploads: HashMap<String, HashMap<String, (Bytes, String)>>,
    /// name -> (id, files)
    artifacts: BTreeMap<String, (String, Vec<(String, Bytes, String)>)>,
    /// Serve different bytes than the manifest promises.
    tamper: bool,
    /// A path the manifest of every artifact also lists.
    extra_path: Option<String>,
}

type Shared = Arc<Mutex<Store>>;

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

async fn put_file(
    State(store): State<Shared>,
    Path((_name, path)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let digest = blake3::hash(&body).to_hex().to_string();
    let claimed = headers.get("x-kiln-blake3").and_then(|v| v.to_str().ok());
    if claimed != Some(digest.as_str()) {
        return (StatusCode::BAD_REQUEST, "digest mismatch").into_response();
    }
    let Some(upload) = query.get("upload") else {
        return (StatusCode::BAD_REQUEST, "no upload id").into_response();
    };
    let mut store = store.lock().unwrap();
    store
        .uploads
        .entry(upload.clone())
        .or_default()
        .insert(path, (body, digest));
    StatusCode::CREATED.into_response()
}

async fn commit(
    State(store): State<Shared>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Json(manifest): Json<Value>,
) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut store = store.lock().unwrap();
    if store.artifacts.contains_key(&name)
        && query.get("overwrite").map(String::as_str) != Some("true")
    {
        return (StatusCode::CONFLICT, "exists").into_response();
    }
    let staged = store
        .uploads
        .remove(query.get("upload").map(String::as_str).unwrap_or(""))
        .unwrap_or_default();
    let mut files = Vec::new();
    for file in manifest["files"].as_array().cloned().unwrap_or_default() {
        let path = file["path"].as_str().unwrap_or_default().to_owned();
        let Some((bytes, digest)) = staged.get(&path) else {
            return (StatusCode::BAD_REQUEST, format!("{path} was not uploaded")).into_response();
        };
        if file["blake3"].as_str() != Some(digest.as_str())
            || file["size"].as_u64() != Some(bytes.len() as u64)
        {
            return (StatusCode::BAD_REQUEST, "manifest mismatch").into_response();
        }
        files.push((path, bytes.clone(), digest.clone()));
    }
    let id = format!("{}", store.artifacts.len() + 1);
    store.artifacts.insert(name, (id.clone(), files));
    Json(json!({"id": id, "size": 0})).into_response()
}

async fn list(State(store): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let store = store.lock().unwrap();
    let artifacts: Vec<Value> = store
        .artifacts
        .iter()
        .map(|(name, (id, _))| json!({"name": name, "id": id, "size": 0}))
        .collect();
    Json(json!({ "artifacts": artifacts })).into_response()
}

async fn manifest(
    State(store): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let store = store.lock().unwrap();
    let Some((id, files)) = store.artifacts.get(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut listed: Vec<Value> = files
        .iter()
        .map(|(path, bytes, digest)| json!({"path": path, "size": bytes.len(), "blake3": digest}))
        .collect();
    if let Some(extra) = &store.extra_path {
        let digest = blake3::hash(b"evil").to_hex().to_string();
        listed.push(json!({"path": extra, "size": 4, "blake3": digest}));
    }
    Json(json!({"name": name, "id": id, "size": 0, "files": listed})).into_response()
}

async fn get_file(
    State(store): State<Shared>,
    Path((name, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let store = store.lock().unwrap();
    if store.extra_path.as_deref() == Some(path.as_str()) {
        return Bytes::from_static(b"evil").into_response();
    }
    let found = store
        .artifacts
        .get(&name)
        .and_then(|(_, files)| files.iter().find(|(p, _, _)| *p == path));
    match found {
        Some((_, bytes, _)) if store.tamper => {
            let mut damaged = bytes.to_vec();
            damaged.push(b'!');
            damaged.into_response()
        }
        Some((_, bytes, _)) => bytes.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Serves the store on 127.0.0.1; the server task ends with the test's runtime.
async fn start_store() -> (String, Shared) {
    let store = Shared::default();
    let app = Router::new()
        .route("/run/artifacts", get(list))
        .route("/run/artifacts/{name}", get(manifest))
        .route("/run/artifacts/{name}/commit", post(commit))
        .route(
            "/run/artifacts/{name}/files/{*path}",
            put(put_file).get(get_file),
        )
        .with_state(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/run"), store)
}

fn runner_with(url: &str, token: &str) -> Setup {
    let mut setup = Setup::new();
    setup.artifacts = Some(ArtifactServer {
        url: url.to_owned(),
        token: token.to_owned(),
    });
    setup
}

const UPLOAD: &str = r#"
on: push
jobs:
  up:
    runs-on: x
    steps:
      - run: |
          mkdir -p out/1/deep "out/2"
          echo one > out/1/f.txt
          echo deep > "out/1/deep/a b é.txt"
          : > out/1/empty
          echo two > out/2/g.txt
      - id: first
        uses: actions/upload-artifact@v4
        with:
          name: shard-1
          path: out/1
      - uses: actions/upload-artifact@v4
        with:
          name: shard-2
          path: out/2/*.txt
      - id: again
        continue-on-error: true
        uses: actions/upload-artifact@v4
        with:
          name: shard-2
          path: out/2
      - uses: actions/upload-artifact@v4
        with:
          name: shard-2
          path: out/2
          overwrite: true
      - run: echo "id=${{ steps.first.outputs.artifact-id }} url=${{ steps.first.outputs.artifact-url }}"
"#;

const DOWNLOAD: &str = r#"
on: push
jobs:
  down:
    runs-on: x
    steps:
      - uses: actions/download-artifact@v4
        with:
          pattern: shard-*
          merge-multiple: true
          path: merged
      - uses: actions/download-artifact@v4
        with:
          path: separate
      - uses: actions/download-artifact@v4
        with:
          name: shard-1
          path: one
      - id: missing
        continue-on-error: true
        uses: actions/download-artifact@v4
        with:
          name: nope
      - run: |
          cat merged/f.txt merged/g.txt "merged/deep/a b é.txt"
          test -f merged/empty && test ! -s merged/empty
          ls separate | tr '\n' ' '
          echo
          cat one/f.txt
"#;

#[tokio::test]
async fn artifacts_travel_between_runners_only_through_the_store() {
    let (url, store) = start_store().await;
    let uploader = runner_with(&url, TOKEN);
    let ran = uploader.run(UPLOAD, "up").await;
    let log = ran.log_text();
    assert_eq!(ran.result.conclusion, Conclusion::Success, "{log}");
    // The second upload of a name without `overwrite` is refused, as GitHub refuses it.
    assert_eq!(ran.step("again").0, "failure", "{log}");
    assert!(log.contains("already exists in this run"), "{log}");
    assert!(
        log.contains(&format!("id=1 url={url}/artifacts/shard-1")),
        "{log}"
    );
    assert!(
        !uploader.run_dir().join("run/artifacts").exists(),
        "artifacts went to the run directory instead of the store"
    );
    {
        let store = store.lock().unwrap();
        let names: Vec<&String> = store.artifacts.keys().collect();
        assert_eq!(names, ["shard-1", "shard-2"]);
        let mut paths: Vec<&str> = store.artifacts["shard-1"]
            .1
            .iter()
            .map(|(p, _, _)| p.as_str())
            .collect();
        paths.sort();
        assert_eq!(paths, ["deep/a b é.txt", "empty", "f.txt"]);
    }

    let downloader = runner_with(&url, TOKEN);
    let ran = downloader.run(DOWNLOAD, "down").await;
    let log = ran.log_text();
    assert_eq!(ran.result.conclusion, Conclusion::Success, "{log}");
    assert!(log.contains("one\ntwo\ndeep"), "{log}");
    assert!(log.contains("shard-1 shard-2"), "{log}");
    assert_eq!(ran.step("missing").0, "failure", "{log}");
    assert!(log.contains("Artifact not found for name: nope"), "{log}");
}

#[tokio::test]
async fn damaged_or_escaping_downloads_write_nothing() {
    let (url, store) = start_store().await;
    let uploader = runner_with(&url, TOKEN);
    let ran = uploader.run(UPLOAD, "up").await;
    assert_eq!(
        ran.result.conclusion,
        Conclusion::Success,
        "{}",
        ran.log_text()
    );

    store.lock().unwrap().tamper = true;
    let yaml = r#"
on: push
jobs:
  down:
    runs-on: x
    steps:
      - uses: actions/download-artifact@v4
        with:
          name: shard-2
          path: got
"#;
    let downloader = runner_with(&url, TOKEN);
    let ran = downloader.run(yaml, "down").await;
    let log = ran.log_text();
    assert_eq!(ran.result.conclusion, Conclusion::Failure, "{log}");
    assert!(log.contains("arrived damaged"), "{log}");
    let workspace_files: Vec<_> = walk(downloader.run_dir())
        .into_iter()
        .filter(|p| p.ends_with("g.txt"))
        .collect();
    assert!(workspace_files.is_empty(), "{workspace_files:?}");

    {
        let mut store = store.lock().unwrap();
        store.tamper = false;
        store.extra_path = Some("../../../../escaped.txt".to_owned());
    }
    let downloader = runner_with(&url, TOKEN);
    let ran = downloader.run(yaml, "down").await;
    let log = ran.log_text();
    assert_eq!(ran.result.conclusion, Conclusion::Failure, "{log}");
    assert!(log.contains("would leave the download folder"), "{log}");
    assert!(
        !walk(downloader.run_dir())
            .iter()
            .any(|p| p.ends_with("escaped.txt")),
        "a manifest path escaped the download folder"
    );
}

#[tokio::test]
async fn a_refused_token_fails_the_step_and_says_so() {
    let (url, _store) = start_store().await;
    let uploader = runner_with(&url, "wrong-token");
    let ran = uploader.run(UPLOAD, "up").await;
    let log = ran.log_text();
    assert_eq!(ran.result.conclusion, Conclusion::Failure, "{log}");
    assert!(
        log.contains("HTTP 401 (the run's artifact token was refused)"),
        "{log}"
    );
    assert!(
        !log.contains("wrong-token"),
        "the token leaked into the log: {log}"
    );
}

fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}
