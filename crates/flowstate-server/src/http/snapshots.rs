//! `/v1/flows/{id}/snapshots`: snapshots with lineage, restore (roll back) and fork (branch).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flowstate::{Document, Flow, Flowstate, ForkRequest, Snapshot};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::{ApiBytes, ApiJson, ApiPath, ErrorBody, FlowIdParam, FlowSnapshotParams};

pub(super) fn routes() -> OpenApiRouter<Flowstate> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show))
        .routes(routes!(restore))
        .routes(routes!(fork))
}

/// A snapshot to take.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewSnapshot {
    /// Its id (a UUIDv7 is generated when absent; `list` is reserved).
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    snapshot_id: Option<String>,
    /// The state to capture.
    #[schema(value_type = Object)]
    state: Map<String, Value>,
}

/// A flow's snapshot ids.
#[derive(Serialize, ToSchema)]
struct SnapshotIds {
    /// Newest first (the newest 10 are kept).
    snapshots: Vec<String>,
}

/// A flow's state after a restore or fork.
#[derive(Serialize, ToSchema)]
struct StateVersion {
    #[schema(value_type = Object)]
    state: Map<String, Value>,
    /// The state document's version.
    version: i64,
}

/// A flow and its state.
#[derive(Serialize, ToSchema)]
struct FlowWithState {
    flow: Flow,
    state: StateVersion,
}

impl FlowWithState {
    fn new(flow: Flow, state: Document) -> Self {
        FlowWithState {
            flow,
            state: StateVersion {
                state: state.body,
                version: state.version,
            },
        }
    }
}

/// Take a snapshot; it descends from the flow's previous one (`parent_snapshot_id`).
#[utoipa::path(post, path = "/v1/flows/{flow_id}/snapshots", tag = "snapshots",
    params(FlowIdParam), request_body = NewSnapshot,
    responses(
        (status = 201, description = "Taken", body = Snapshot),
        (status = 409, description = "The flow has a snapshot with this id (`snapshot_exists`)", body = ErrorBody),
    ))]
async fn create(
    State(fs): State<Flowstate>,
    ApiPath(FlowIdParam { flow_id }): ApiPath<FlowIdParam>,
    ApiJson(body): ApiJson<NewSnapshot>,
) -> Result<(StatusCode, Json<Snapshot>), ApiError> {
    let snapshot = fs
        .create_snapshot(&flow_id, body.snapshot_id, body.state)
        .await?;
    Ok((StatusCode::CREATED, Json(snapshot)))
}

/// A flow's snapshot ids, newest first.
#[utoipa::path(get, path = "/v1/flows/{flow_id}/snapshots", tag = "snapshots",
    params(FlowIdParam),
    responses((status = 200, description = "Snapshot ids", body = SnapshotIds)))]
async fn list(
    State(fs): State<Flowstate>,
    ApiPath(FlowIdParam { flow_id }): ApiPath<FlowIdParam>,
) -> Result<Json<SnapshotIds>, ApiError> {
    Ok(Json(SnapshotIds {
        snapshots: fs.list_snapshots(&flow_id).await?,
    }))
}

/// A snapshot.
#[utoipa::path(get, path = "/v1/flows/{flow_id}/snapshots/{snapshot_id}", tag = "snapshots",
    params(FlowSnapshotParams),
    responses((status = 200, description = "The snapshot", body = Snapshot)))]
async fn show(
    State(fs): State<Flowstate>,
    ApiPath(FlowSnapshotParams {
        flow_id,
        snapshot_id,
    }): ApiPath<FlowSnapshotParams>,
) -> Result<Json<Snapshot>, ApiError> {
    Ok(Json(fs.get_snapshot(&flow_id, &snapshot_id).await?))
}

/// Roll the flow's state back to a snapshot; the flow's next snapshot descends from it.
#[utoipa::path(post, path = "/v1/flows/{flow_id}/snapshots/{snapshot_id}/restore", tag = "snapshots",
    params(FlowSnapshotParams),
    responses((status = 200, description = "Restored", body = FlowWithState)))]
async fn restore(
    State(fs): State<Flowstate>,
    ApiPath(FlowSnapshotParams {
        flow_id,
        snapshot_id,
    }): ApiPath<FlowSnapshotParams>,
) -> Result<Json<FlowWithState>, ApiError> {
    let (flow, state) = fs.restore_snapshot(&flow_id, &snapshot_id).await?;
    Ok(Json(FlowWithState::new(flow, state)))
}

/// Branch a new child flow whose state starts from a snapshot. The body is optional: none,
/// `null` or `{}` forks with a generated id and the source's type.
#[utoipa::path(post, path = "/v1/flows/{flow_id}/snapshots/{snapshot_id}/fork", tag = "snapshots",
    params(FlowSnapshotParams), request_body = Option<ForkRequest>,
    responses(
        (status = 201, description = "Forked", body = FlowWithState),
        (status = 409, description = "A flow with the new id exists (`flow_exists`)", body = ErrorBody),
    ))]
async fn fork(
    State(fs): State<Flowstate>,
    ApiPath(FlowSnapshotParams {
        flow_id,
        snapshot_id,
    }): ApiPath<FlowSnapshotParams>,
    ApiBytes(body): ApiBytes,
) -> Result<(StatusCode, Json<FlowWithState>), ApiError> {
    // No body, `null` and `{}` all fork with the defaults: the body is optional.
    let req: ForkRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ForkRequest::default()
    } else {
        serde_json::from_slice::<Option<ForkRequest>>(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))?
            .unwrap_or_default()
    };
    let (flow, state) = fs.fork_snapshot(&flow_id, &snapshot_id, req).await?;
    Ok((StatusCode::CREATED, Json(FlowWithState::new(flow, state))))
}
