//! `/v1/flows/{id}/snapshots`: snapshots with lineage, restore (roll back) and fork (branch).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flowstate::{Document, Flowstate, ForkRequest};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::{ApiBytes, ApiJson, ApiPath};

pub(super) fn routes() -> Router<Flowstate> {
    Router::new()
        .route("/v1/flows/{flow_id}/snapshots", post(create).get(list))
        .route("/v1/flows/{flow_id}/snapshots/{snapshot_id}", get(show))
        .route(
            "/v1/flows/{flow_id}/snapshots/{snapshot_id}/restore",
            post(restore),
        )
        .route(
            "/v1/flows/{flow_id}/snapshots/{snapshot_id}/fork",
            post(fork),
        )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSnapshot {
    snapshot_id: Option<String>,
    state: Map<String, Value>,
}

fn state_json(doc: &Document) -> Value {
    json!({"state": doc.body, "version": doc.version})
}

async fn create(
    State(fs): State<Flowstate>,
    ApiPath(flow_id): ApiPath<String>,
    ApiJson(body): ApiJson<NewSnapshot>,
) -> Result<Response, ApiError> {
    let snapshot = fs
        .create_snapshot(&flow_id, body.snapshot_id, body.state)
        .await?;
    Ok((StatusCode::CREATED, Json(snapshot)).into_response())
}

async fn list(
    State(fs): State<Flowstate>,
    ApiPath(flow_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(json!({"snapshots": fs.list_snapshots(&flow_id).await?})).into_response())
}

async fn show(
    State(fs): State<Flowstate>,
    ApiPath((flow_id, snapshot_id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(Json(fs.get_snapshot(&flow_id, &snapshot_id).await?).into_response())
}

async fn restore(
    State(fs): State<Flowstate>,
    ApiPath((flow_id, snapshot_id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let (flow, state) = fs.restore_snapshot(&flow_id, &snapshot_id).await?;
    Ok(Json(json!({"flow": flow, "state": state_json(&state)})).into_response())
}

/// The body is optional: no body (or `{}`) forks with a generated id and the source's type.
async fn fork(
    State(fs): State<Flowstate>,
    ApiPath((flow_id, snapshot_id)): ApiPath<(String, String)>,
    ApiBytes(body): ApiBytes,
) -> Result<Response, ApiError> {
    let req: ForkRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ForkRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()))?
    };
    let (flow, state) = fs.fork_snapshot(&flow_id, &snapshot_id, req).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"flow": flow, "state": state_json(&state)})),
    )
        .into_response())
}
