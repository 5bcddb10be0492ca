//! Liveness, readiness and the health report.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flowstate::Flowstate;

use super::error::ApiError;

pub(super) fn routes() -> Router<Flowstate> {
    Router::new()
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
        .route("/v1/health", get(health))
        .route("/v1/fallbacks", get(fallbacks))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    limit: Option<u32>,
}

/// The fallback log, newest first.
async fn fallbacks(
    State(fs): State<Flowstate>,
    super::ApiQuery(q): super::ApiQuery<Limit>,
) -> Result<Response, ApiError> {
    let rows = fs.fallbacks(q.limit.unwrap_or(100)).await?;
    Ok(Json(serde_json::json!({ "fallbacks": rows })).into_response())
}

/// The process is up.
async fn alive() -> &'static str {
    "ok"
}

/// The ledger answers, so requests can be served (degraded or not).
async fn ready(State(fs): State<Flowstate>) -> Result<&'static str, ApiError> {
    fs.ready().await?;
    Ok("ready")
}

/// Both tiers, with latencies and counters; 503 when the ledger is down.
async fn health(State(fs): State<Flowstate>) -> Response {
    let health = fs.health().await;
    let status = if health.ledger.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health)).into_response()
}
