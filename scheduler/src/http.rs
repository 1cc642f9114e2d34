//! The scheduler's HTTP routes beside gRPC on the same port: snapshots for runners
//! (`GET /snapshots/<digest>`, a job-scoped token) and the run-scoped artifact store of
//! docs/scheduler.md ("Artifacts"). The embedded cache's routes are kiln-cache's; the binary
//! merges all of them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt as _;
use serde::Deserialize;

use crate::service::artifacts::{ArtifactError, ManifestFile, RunArtifacts, MAX_ARTIFACT_FILE};
use crate::service::Scheduler;
use crate::store::prelude::*;
use crate::store::JobState;

pub fn router(scheduler: Arc<Scheduler>) -> Router {
    Router::new()
        .route("/snapshots/{digest}", get(snapshot))
        .route("/artifacts", get(list))
        .route("/artifacts/{name}", get(manifest))
        .route("/artifacts/{name}/commit", post(commit))
        .route("/artifacts/{name}/files/{*path}", get(download).put(upload))
        .with_state(scheduler)
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, format!("{}\n", message.into())).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

fn unauthorized() -> Response {
    refuse(
        StatusCode::UNAUTHORIZED,
        "a job token is needed: Authorization: Bearer <token>",
    )
}

async fn file_body(path: std::path::PathBuf, size: u64) -> Response {
    match tokio::fs::File::open(&path).await {
        Ok(file) => {
            let stream = tokio_util::io::ReaderStream::new(file);
            Response::builder()
                .header(header::CONTENT_LENGTH, size)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(Body::from_stream(stream))
                .unwrap_or_else(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "response"))
        }
        Err(_) => refuse(StatusCode::NOT_FOUND, "not stored"),
    }
}

/// A snapshot, for the job its token was minted for while that job is leased.
async fn snapshot(
    State(scheduler): State<Arc<Scheduler>>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return unauthorized();
    };
    let Some(job_id) = scheduler.keys().check_snapshot_token(token, &digest) else {
        return unauthorized();
    };
    let leased = scheduler
        .store()
        .get_job(&job_id)
        .ok()
        .flatten()
        .is_some_and(|job| job.state == JobState::Running);
    if !leased {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("job {job_id} is not running; its snapshot token no longer opens anything"),
        );
    }
    let (Ok(path), Ok(Some(size))) = (
        scheduler.store().data_dir().snapshot_path(&digest),
        scheduler.store().snapshot_size(&digest),
    ) else {
        return refuse(StatusCode::NOT_FOUND, format!("no snapshot {digest}"));
    };
    file_body(path, size).await
}

fn artifact_error(error: ArtifactError) -> Response {
    let status = match &error {
        ArtifactError::Bad(_) => StatusCode::BAD_REQUEST,
        ArtifactError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ArtifactError::Exists(_) => StatusCode::CONFLICT,
        ArtifactError::NotFound(_) => StatusCode::NOT_FOUND,
        ArtifactError::Service(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    refuse(status, error.to_string())
}

/// The run whose artifacts the request's token opens.
fn run_artifacts(
    scheduler: &Scheduler,
    headers: &HeaderMap,
) -> Result<RunArtifacts, Box<Response>> {
    let refused = |response: Response| Box::new(response);
    let token = bearer(headers).ok_or_else(|| refused(unauthorized()))?;
    let run_id = scheduler
        .keys()
        .check_artifacts_token(token)
        .ok_or_else(|| refused(unauthorized()))?;
    RunArtifacts::open(scheduler, &run_id).map_err(|e| refused(artifact_error(e)))
}

async fn list(State(scheduler): State<Arc<Scheduler>>, headers: HeaderMap) -> Response {
    let artifacts = match run_artifacts(&scheduler, &headers) {
        Ok(a) => a,
        Err(refused) => return *refused,
    };
    match artifacts.list() {
        Ok(manifests) => {
            let listed: Vec<serde_json::Value> = manifests
                .into_iter()
                .map(|m| serde_json::json!({"name": m.name, "id": m.id, "size": m.size}))
                .collect();
            Json(serde_json::json!({ "artifacts": listed })).into_response()
        }
        Err(e) => artifact_error(e),
    }
}

async fn manifest(
    State(scheduler): State<Arc<Scheduler>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let artifacts = match run_artifacts(&scheduler, &headers) {
        Ok(a) => a,
        Err(refused) => return *refused,
    };
    match artifacts.manifest(&name) {
        Ok(m) => Json(m).into_response(),
        Err(e) => artifact_error(e),
    }
}

async fn download(
    State(scheduler): State<Arc<Scheduler>>,
    Path((name, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let artifacts = match run_artifacts(&scheduler, &headers) {
        Ok(a) => a,
        Err(refused) => return *refused,
    };
    match artifacts.file(&name, &path) {
        Ok((file, size)) => file_body(file, size).await,
        Err(e) => artifact_error(e),
    }
}

#[derive(Deserialize)]
struct UploadQuery {
    upload: String,
}

async fn upload(
    State(scheduler): State<Arc<Scheduler>>,
    Path((name, path)): Path<(String, String)>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let artifacts = match run_artifacts(&scheduler, &headers) {
        Ok(a) => a,
        Err(refused) => return *refused,
    };
    if let Err(e) = crate::service::artifacts::check_name(&name)
        .and_then(|()| crate::service::artifacts::check_path(&path))
    {
        return artifact_error(e);
    }
    let Some(claimed) = headers
        .get("x-kiln-blake3")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the X-Kiln-Blake3 header with the file's digest is missing",
        );
    };
    let mut file = match artifacts.upload_file(&query.upload) {
        Ok(f) => f,
        Err(e) => return artifact_error(e),
    };
    let mut hasher = blake3::Hasher::new();
    let mut written = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("the upload broke off: {e}"),
                )
            }
        };
        written += chunk.len() as u64;
        if written > MAX_ARTIFACT_FILE {
            return artifact_error(ArtifactError::TooLarge(format!(
                "{path} is larger than the {MAX_ARTIFACT_FILE} bytes an artifact file may hold"
            )));
        }
        hasher.update(&chunk);
        if let Err(e) = std::io::Write::write_all(&mut file, &chunk) {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot store the upload: {e}"),
            );
        }
    }
    let actual = hasher.finalize().to_hex().to_string();
    match artifacts.keep_upload(&query.upload, file, &actual, &claimed) {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(e) => artifact_error(e),
    }
}

#[derive(Deserialize)]
struct CommitBody {
    files: Vec<ManifestFile>,
}

async fn commit(
    State(scheduler): State<Arc<Scheduler>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<CommitBody>,
) -> Response {
    let artifacts = match run_artifacts(&scheduler, &headers) {
        Ok(a) => a,
        Err(refused) => return *refused,
    };
    let upload = query.get("upload").cloned().unwrap_or_default();
    let overwrite = query.get("overwrite").is_some_and(|v| v == "true");
    let result = tokio::task::spawn_blocking(move || {
        artifacts.commit(&scheduler, &name, &upload, overwrite, body.files)
    })
    .await;
    match result {
        Ok(Ok(manifest)) => {
            Json(serde_json::json!({"id": manifest.id, "size": manifest.size})).into_response()
        }
        Ok(Err(e)) => artifact_error(e),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
