//! `/v1/locks/{name}`: distributed locks with owner tokens and fencing tokens.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flowstate::Flowstate;
use flowstate::model::locks::{LockGrant, LockRequest, RefreshRequest, ReleaseRequest};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::{ApiJson, ApiPath, ErrorBody};

pub(super) fn routes() -> OpenApiRouter<Flowstate> {
    OpenApiRouter::new()
        .routes(routes!(acquire, release))
        .routes(routes!(refresh))
}

/// `{name}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct LockNameParam {
    /// The lock (1–128 characters of `A-Z a-z 0-9 _ . : -`).
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    name: String,
}

/// Acquire a lock for `ttl_ms`, waiting up to `wait_ms` while someone else holds it. The
/// answer's `fencing_token` strictly increases over the grants of a name: pass it to what the
/// lock protects, which refuses anything below the highest it has seen.
#[utoipa::path(post, path = "/v1/locks/{name}", tag = "locks",
    params(LockNameParam), request_body = LockRequest,
    responses(
        (status = 200, description = "Granted", body = LockGrant),
        (status = 409, description = "Held by someone else (`lock_held`), after waiting `wait_ms`; `Retry-After` says when it may be free", body = ErrorBody),
    ))]
async fn acquire(
    State(fs): State<Flowstate>,
    ApiPath(LockNameParam { name }): ApiPath<LockNameParam>,
    ApiJson(req): ApiJson<LockRequest>,
) -> Result<Json<LockGrant>, ApiError> {
    Ok(Json(fs.acquire_lock(&name, req).await?))
}

/// Extend a held lock to `ttl_ms` from now (compare-and-extend on the owner token).
#[utoipa::path(post, path = "/v1/locks/{name}/refresh", tag = "locks",
    params(LockNameParam), request_body = RefreshRequest,
    responses(
        (status = 200, description = "Extended; the fencing token is the grant's", body = LockGrant),
        (status = 409, description = "Not held under this token: wrong, expired or released, or granted by a Redis that locks have since moved away from (it lapses there at its expiry) (`lock_not_held`)", body = ErrorBody),
    ))]
async fn refresh(
    State(fs): State<Flowstate>,
    ApiPath(LockNameParam { name }): ApiPath<LockNameParam>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Json<LockGrant>, ApiError> {
    Ok(Json(fs.refresh_lock(&name, req).await?))
}

/// Release a held lock (compare-and-delete on the owner token); its waiters are woken.
#[utoipa::path(delete, path = "/v1/locks/{name}", tag = "locks",
    params(LockNameParam), request_body = ReleaseRequest,
    responses(
        (status = 204, description = "Released"),
        (status = 409, description = "Not held under this token: wrong, expired or released (`lock_not_held`)", body = ErrorBody),
    ))]
async fn release(
    State(fs): State<Flowstate>,
    ApiPath(LockNameParam { name }): ApiPath<LockNameParam>,
    ApiJson(req): ApiJson<ReleaseRequest>,
) -> Result<StatusCode, ApiError> {
    fs.release_lock(&name, req).await?;
    Ok(StatusCode::NO_CONTENT)
}
