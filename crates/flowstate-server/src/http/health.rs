//! Liveness, readiness, the health report and the fallback log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flowstate::{FallbackRecord, Flowstate, Health};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiQuery;
use super::error::ApiError;

pub(super) fn routes() -> OpenApiRouter<Flowstate> {
    OpenApiRouter::new()
        .routes(routes!(alive))
        .routes(routes!(ready))
        .routes(routes!(health))
        .routes(routes!(fallbacks))
        .routes(routes!(audit))
}

/// Page size of the fallback log.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Limit {
    /// Rows (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The newest fallback log rows.
#[derive(Serialize, ToSchema)]
struct Fallbacks {
    /// Newest first.
    fallbacks: Vec<FallbackRecord>,
}

/// The fallback log: requests served without the hot tier, aggregated per service, operation
/// and reason about once a second. Newest first.
#[utoipa::path(get, path = "/v1/fallbacks", tag = "health", params(Limit),
    responses((status = 200, description = "Fallback log rows", body = Fallbacks)))]
async fn fallbacks(
    State(fs): State<Flowstate>,
    ApiQuery(q): ApiQuery<Limit>,
) -> Result<Json<Fallbacks>, ApiError> {
    let fallbacks = fs.fallbacks(q.limit.unwrap_or(100)).await?;
    Ok(Json(Fallbacks { fallbacks }))
}

/// Which audit records.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Only this flow's (`agent:<agent>` for the agent cache).
    flow_id: Option<String>,
    /// At most this many (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The newest audit records.
#[derive(Serialize, ToSchema)]
struct AuditRecords {
    /// Newest first.
    records: Vec<flowstate::model::AuditRecord>,
}

/// The audit of cache operations (`redis_cache_audit`): a sample of reads, writes and
/// invalidations (`audit.sample_rate`) and every failed one. Newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "health", params(AuditQuery),
    responses((status = 200, description = "Audit records", body = AuditRecords)))]
async fn audit(
    State(fs): State<Flowstate>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditRecords>, ApiError> {
    let records = fs
        .list_audit(q.flow_id.as_deref(), q.limit.unwrap_or(100))
        .await?;
    Ok(Json(AuditRecords { records }))
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
async fn alive() -> &'static str {
    "ok"
}

/// Readiness: the ledger answers, so requests can be served (degraded or not).
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready", body = String, content_type = "text/plain")))]
async fn ready(State(fs): State<Flowstate>) -> Result<&'static str, ApiError> {
    fs.ready().await?;
    Ok("ready")
}

/// Both tiers, with latencies and counters.
#[utoipa::path(get, path = "/v1/health", tag = "health",
    responses(
        (status = 200, description = "The ledger answers (`status` is `healthy` or `degraded`)", body = Health),
        (status = 503, description = "The ledger does not answer (`status` is `unavailable`)", body = Health),
    ))]
async fn health(State(fs): State<Flowstate>) -> (StatusCode, Json<Health>) {
    let health = fs.health().await;
    let status = if health.ledger.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health))
}
