//! `/v1/threads/…` and `/v1/checkpoints/…`: LangGraph checkpoints stored natively, what a
//! checkpoint saver needs, about one call per checkpoint and one per batch of writes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flowstate::Flowstate;
use flowstate::model::checkpoints::{
    CheckpointSearch, CheckpointTuple, CopyThread, DeleteRuns, Prune, PutCheckpoint, PutWrites,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::{ApiJson, ApiPath, ApiQuery};

pub(super) fn routes() -> OpenApiRouter<Flowstate> {
    OpenApiRouter::new()
        .routes(routes!(put_checkpoint, get_checkpoint))
        .routes(routes!(put_writes))
        .routes(routes!(delete_thread))
        .routes(routes!(copy_thread))
        .routes(routes!(search))
        .routes(routes!(delete_runs))
        .routes(routes!(prune))
}

/// `{thread_id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct ThreadParam {
    /// The thread (1–128 characters of `A-Z a-z 0-9 _ . : -`).
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    thread_id: String,
}

/// `{thread_id}/checkpoints/{checkpoint_id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct CheckpointParams {
    /// The thread.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    thread_id: String,
    /// The checkpoint.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    checkpoint_id: String,
}

/// Which namespace.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct NamespaceQuery {
    /// The namespace (`""`, the root graph's, when absent).
    #[serde(default)]
    checkpoint_ns: String,
}

/// Checkpoints found.
#[derive(Serialize, ToSchema)]
struct Checkpoints {
    /// Newest (greatest id) first.
    checkpoints: Vec<CheckpointTuple>,
}

/// Store a checkpoint (replacing one of the same id in the thread's namespace).
#[utoipa::path(put, path = "/v1/threads/{thread_id}/checkpoints/{checkpoint_id}",
    tag = "checkpoints", params(CheckpointParams), request_body = PutCheckpoint,
    responses((status = 204, description = "Stored")))]
async fn put_checkpoint(
    State(fs): State<Flowstate>,
    ApiPath(CheckpointParams {
        thread_id,
        checkpoint_id,
    }): ApiPath<CheckpointParams>,
    ApiJson(put): ApiJson<PutCheckpoint>,
) -> Result<StatusCode, ApiError> {
    fs.put_checkpoint(&thread_id, &checkpoint_id, put).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A checkpoint with its pending writes.
#[utoipa::path(get, path = "/v1/threads/{thread_id}/checkpoints/{checkpoint_id}",
    tag = "checkpoints", params(CheckpointParams, NamespaceQuery),
    responses(
        (status = 200, description = "The checkpoint", body = CheckpointTuple),
        (status = 404, description = "No such checkpoint (`checkpoint_not_found`)", body = super::ErrorBody),
    ))]
async fn get_checkpoint(
    State(fs): State<Flowstate>,
    ApiPath(CheckpointParams {
        thread_id,
        checkpoint_id,
    }): ApiPath<CheckpointParams>,
    ApiQuery(NamespaceQuery { checkpoint_ns }): ApiQuery<NamespaceQuery>,
) -> Result<Json<CheckpointTuple>, ApiError> {
    Ok(Json(
        fs.get_checkpoint(&thread_id, &checkpoint_ns, Some(&checkpoint_id))
            .await?,
    ))
}

/// Store a task's pending writes on a checkpoint: an index at or above 0 is kept if already
/// there, a negative (special) one replaces; all or nothing.
#[utoipa::path(put, path = "/v1/threads/{thread_id}/checkpoints/{checkpoint_id}/writes",
    tag = "checkpoints", params(CheckpointParams), request_body = PutWrites,
    responses((status = 204, description = "Stored")))]
async fn put_writes(
    State(fs): State<Flowstate>,
    ApiPath(CheckpointParams {
        thread_id,
        checkpoint_id,
    }): ApiPath<CheckpointParams>,
    ApiJson(writes): ApiJson<PutWrites>,
) -> Result<StatusCode, ApiError> {
    fs.put_checkpoint_writes(&thread_id, &checkpoint_id, writes)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a thread's checkpoints and writes, in every namespace.
#[utoipa::path(delete, path = "/v1/threads/{thread_id}", tag = "checkpoints",
    params(ThreadParam), responses((status = 204, description = "Deleted (or there was nothing)")))]
async fn delete_thread(
    State(fs): State<Flowstate>,
    ApiPath(ThreadParam { thread_id }): ApiPath<ThreadParam>,
) -> Result<StatusCode, ApiError> {
    fs.delete_checkpoint_thread(&thread_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Copy a thread's checkpoints and writes to another thread, under the same ids.
#[utoipa::path(post, path = "/v1/threads/{thread_id}/copy", tag = "checkpoints",
    params(ThreadParam), request_body = CopyThread,
    responses((status = 204, description = "Copied")))]
async fn copy_thread(
    State(fs): State<Flowstate>,
    ApiPath(ThreadParam { thread_id }): ApiPath<ThreadParam>,
    ApiJson(copy): ApiJson<CopyThread>,
) -> Result<StatusCode, ApiError> {
    fs.copy_checkpoint_thread(&thread_id, &copy.target_thread_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Checkpoints, newest first: of a thread (or all), a namespace (or all), before an id,
/// matching metadata (top-level equality, a missing key counting as `null`), up to `limit`.
#[utoipa::path(post, path = "/v1/checkpoints/search", tag = "checkpoints",
    request_body = CheckpointSearch,
    responses((status = 200, description = "Found", body = Checkpoints)))]
async fn search(
    State(fs): State<Flowstate>,
    ApiJson(search): ApiJson<CheckpointSearch>,
) -> Result<Json<Checkpoints>, ApiError> {
    Ok(Json(Checkpoints {
        checkpoints: fs.list_checkpoints(search).await?,
    }))
}

/// Delete the checkpoints (and writes) whose `metadata.run_id` is one of `run_ids`.
#[utoipa::path(post, path = "/v1/checkpoints/delete-runs", tag = "checkpoints",
    request_body = DeleteRuns, responses((status = 204, description = "Deleted")))]
async fn delete_runs(
    State(fs): State<Flowstate>,
    ApiJson(runs): ApiJson<DeleteRuns>,
) -> Result<StatusCode, ApiError> {
    fs.delete_checkpoint_runs(runs.run_ids).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Prune threads: keep each namespace's newest checkpoint with its writes (`keep_latest`), or
/// nothing (`delete`).
#[utoipa::path(post, path = "/v1/checkpoints/prune", tag = "checkpoints",
    request_body = Prune, responses((status = 204, description = "Pruned")))]
async fn prune(
    State(fs): State<Flowstate>,
    ApiJson(prune): ApiJson<Prune>,
) -> Result<StatusCode, ApiError> {
    fs.prune_checkpoint_threads(prune.thread_ids, prune.strategy)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
