//! `/v1/agent-cache/{agent}`: the agent result cache (look up, store, give up a lease,
//! statistics, invalidation).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flowstate::Flowstate;
use flowstate::model::agent_cache::{CacheLookup, CachePut, CacheStats, LeaseRelease, Lookup};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::{ApiJson, ApiPath, ApiQuery};

pub(super) fn routes() -> OpenApiRouter<Flowstate> {
    OpenApiRouter::new()
        .routes(routes!(lookup))
        .routes(routes!(release))
        .routes(routes!(put, invalidate))
        .routes(routes!(stats))
}

/// `{agent}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct AgentParam {
    /// The agent (1–128 characters of `A-Z a-z 0-9 _ . : -`).
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    agent: String,
}

/// A lookup's answer: the cached result on a hit.
#[derive(Serialize, ToSchema)]
struct LookupAnswer {
    /// Whether a result was cached.
    hit: bool,
    /// The result (hits only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    output: Option<Value>,
    /// When it was cached (hits only).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    cached_at: Option<OffsetDateTime>,
    /// How long computing it took, in seconds (hits whose store gave it).
    #[serde(skip_serializing_if = "Option::is_none")]
    execution_time: Option<f64>,
    /// On a miss with `lease_ms`: this caller holds the lease; store the result with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_token: Option<String>,
}

/// A store's answer.
#[derive(Serialize, ToSchema)]
struct Stored {
    /// The entry's key: SHA-256 of the canonical `{agent, input, context}`.
    hash: String,
    /// Whether the hot tier took it (false while Redis is unreachable: the store is dropped).
    stored: bool,
}

/// `?pattern=`: a glob over entry hashes.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Pattern {
    /// Only entries whose hash matches (hex digits, `*`, `?`); all of the agent's without.
    #[param(pattern = r"^[0-9a-f*?]{1,64}$")]
    pattern: Option<String>,
}

/// How many entries an invalidation deleted.
#[derive(Serialize, ToSchema)]
struct Deleted {
    deleted: u64,
}

/// Look up a cached result: the same input and context (in any key order) hit. A hit slides
/// the entry's TTL forward. With `lease_ms`, a miss takes the lease unless another caller holds
/// it (then, with `wait_ms`, waits for that caller's result). With Redis unreachable every
/// lookup misses (`Flowstate-Degraded`).
#[utoipa::path(post, path = "/v1/agent-cache/{agent}/lookup", tag = "agent-cache",
    params(AgentParam), request_body = CacheLookup,
    responses((status = 200, description = "Hit or miss", body = LookupAnswer)))]
async fn lookup(
    State(fs): State<Flowstate>,
    ApiPath(AgentParam { agent }): ApiPath<AgentParam>,
    ApiJson(req): ApiJson<CacheLookup>,
) -> Result<Json<LookupAnswer>, ApiError> {
    let answer = match fs.cache_lookup(&agent, req).await? {
        Lookup::Hit(r) => LookupAnswer {
            hit: true,
            output: Some(r.output),
            cached_at: Some(r.cached_at),
            execution_time: r.execution_time,
            lease_token: None,
        },
        Lookup::Miss(lease_token) => LookupAnswer {
            hit: false,
            output: None,
            cached_at: None,
            execution_time: None,
            lease_token,
        },
    };
    Ok(Json(answer))
}

/// Give up a lease without a result (the computation failed), so a waiting caller takes it
/// at once instead of after `lease_ms`.
#[utoipa::path(post, path = "/v1/agent-cache/{agent}/release", tag = "agent-cache",
    params(AgentParam), request_body = LeaseRelease,
    responses(
        (status = 204, description = "Released"),
        (status = 409, description = "`lease_token` no longer holds the lease (`stale_lease`)", body = super::ErrorBody),
    ))]
async fn release(
    State(fs): State<Flowstate>,
    ApiPath(AgentParam { agent }): ApiPath<AgentParam>,
    ApiJson(req): ApiJson<LeaseRelease>,
) -> Result<StatusCode, ApiError> {
    fs.cache_release(&agent, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Cache a result for the agent's TTL (configurable per agent).
#[utoipa::path(put, path = "/v1/agent-cache/{agent}", tag = "agent-cache",
    params(AgentParam), request_body = CachePut,
    responses(
        (status = 201, description = "Stored (or dropped, while Redis is unreachable)", body = Stored),
        (status = 409, description = "`lease_token` no longer holds the lease (`stale_lease`); nothing stored", body = super::ErrorBody),
    ))]
async fn put(
    State(fs): State<Flowstate>,
    ApiPath(AgentParam { agent }): ApiPath<AgentParam>,
    ApiJson(req): ApiJson<CachePut>,
) -> Result<(StatusCode, Json<Stored>), ApiError> {
    let (hash, stored) = fs.cache_put(&agent, req).await?;
    Ok((StatusCode::CREATED, Json(Stored { hash, stored })))
}

/// Delete the agent's cached results, or those whose hash matches `pattern` (SCAN + UNLINK in
/// batches, never KEYS).
#[utoipa::path(delete, path = "/v1/agent-cache/{agent}", tag = "agent-cache",
    params(AgentParam, Pattern),
    responses((status = 200, description = "Entries deleted", body = Deleted)))]
async fn invalidate(
    State(fs): State<Flowstate>,
    ApiPath(AgentParam { agent }): ApiPath<AgentParam>,
    ApiQuery(q): ApiQuery<Pattern>,
) -> Result<Json<Deleted>, ApiError> {
    let deleted = fs.cache_invalidate(&agent, q.pattern.as_deref()).await?;
    Ok(Json(Deleted { deleted }))
}

/// The agent's hit, miss, set and error counts and hit rate, over every instance sharing the
/// Redis (flushed about once a second; this instance's own counts are always current).
#[utoipa::path(get, path = "/v1/agent-cache/{agent}/stats", tag = "agent-cache",
    params(AgentParam),
    responses((status = 200, description = "Statistics", body = CacheStats)))]
async fn stats(
    State(fs): State<Flowstate>,
    ApiPath(AgentParam { agent }): ApiPath<AgentParam>,
) -> Result<Json<CacheStats>, ApiError> {
    Ok(Json(fs.cache_stats(&agent).await?))
}
