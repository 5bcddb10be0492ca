//! `/v1/backups`: back Redis data up into the ledger, list backups, restore one.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flowstate::Flowstate;
use flowstate::model::backup::{BackupInfo, BackupRequest, RestoreReport, RestoreRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::{ApiBytes, ApiPath, ErrorBody};

pub(super) fn routes() -> OpenApiRouter<Flowstate> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show))
        .routes(routes!(restore))
}

/// `{backup_id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct BackupParam {
    /// The backup (1–128 characters of `A-Z a-z 0-9 _ . : -`).
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    backup_id: String,
}

/// Backups, newest first.
#[derive(Serialize, ToSchema)]
struct Backups {
    backups: Vec<BackupInfo>,
}

/// An optional JSON body: none, `null` and `{}` mean the defaults.
fn body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    Ok(serde_json::from_slice::<Option<T>>(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))?
        .unwrap_or_default())
}

/// Back up the keys matching `patterns` (the configured critical patterns by default): every
/// key's type, value and remaining time to live, streams with every entry id. Answers when
/// done; pass a `backup_id` to follow its progress (`GET /v1/backups/{id}`) meanwhile.
#[utoipa::path(post, path = "/v1/backups", tag = "operations",
    request_body(content = Option<BackupRequest>, description = "Optional; `{}` or none for the defaults"),
    responses(
        (status = 201, description = "Done (`status` complete, or failed with `error`)", body = BackupInfo),
        (status = 409, description = "A backup with this id exists (`backup_exists`), or the hot tier is in process: nothing to back up (`unsupported`)", body = ErrorBody),
    ))]
async fn create(
    State(fs): State<Flowstate>,
    ApiBytes(bytes): ApiBytes,
) -> Result<(StatusCode, Json<BackupInfo>), ApiError> {
    let req: BackupRequest = body(&bytes)?;
    Ok((StatusCode::CREATED, Json(fs.create_backup(req).await?)))
}

/// Every backup, newest first.
#[utoipa::path(get, path = "/v1/backups", tag = "operations",
    responses((status = 200, description = "Backups", body = Backups)))]
async fn list(State(fs): State<Flowstate>) -> Result<Json<Backups>, ApiError> {
    Ok(Json(Backups {
        backups: fs.list_backups().await?,
    }))
}

/// One backup, with its progress while it runs.
#[utoipa::path(get, path = "/v1/backups/{backup_id}", tag = "operations",
    params(BackupParam),
    responses(
        (status = 200, description = "The backup", body = BackupInfo),
        (status = 404, description = "No such backup (`backup_not_found`)", body = ErrorBody),
    ))]
async fn show(
    State(fs): State<Flowstate>,
    ApiPath(BackupParam { backup_id }): ApiPath<BackupParam>,
) -> Result<Json<BackupInfo>, ApiError> {
    Ok(Json(fs.get_backup(&backup_id).await?))
}

/// Write a backup's keys back to Redis (all, or those matching `patterns`), replacing what is
/// there: the same types, values, stream entry ids and remaining times to live.
#[utoipa::path(post, path = "/v1/backups/{backup_id}/restore", tag = "operations",
    params(BackupParam),
    request_body(content = Option<RestoreRequest>, description = "Optional; `{}` or none restores every key"),
    responses(
        (status = 200, description = "Restored", body = RestoreReport),
        (status = 404, description = "No such backup (`backup_not_found`)", body = ErrorBody),
        (status = 409, description = "The hot tier is in process (`unsupported`)", body = ErrorBody),
    ))]
async fn restore(
    State(fs): State<Flowstate>,
    ApiPath(BackupParam { backup_id }): ApiPath<BackupParam>,
    ApiBytes(bytes): ApiBytes,
) -> Result<Json<RestoreReport>, ApiError> {
    let req: RestoreRequest = body(&bytes)?;
    Ok(Json(fs.restore_backup(&backup_id, req.patterns).await?))
}
