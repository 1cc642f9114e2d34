//! `GET /stats?since_ms=N`: the lookup record of the token's repository (`kiln cache stats
//! --url`). A job token of a repository sees that repository's keys and scopes only.

use super::{blocking, CacheService, JsonError};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<CacheService>> {
    Router::new().route("/stats", get(stats))
}

#[derive(Deserialize)]
struct Since {
    #[serde(default)]
    since_ms: i64,
}

async fn stats(
    State(svc): State<Arc<CacheService>>,
    headers: HeaderMap,
    Query(q): Query<Since>,
) -> Result<Response, JsonError> {
    let access = svc.access(&headers)?;
    let store = Arc::clone(&svc.store);
    let report = blocking(move || store.stats(Some(&access.repo), q.since_ms)).await?;
    Ok(Json(report).into_response())
}
