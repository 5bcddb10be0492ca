//! `/v1/flows/{id}/transitions`: compare-and-set status changes and their history.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use flowstate::{Flowstate, TransitionRequest};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::{ApiJson, ApiPath, ApiQuery};

pub(super) fn routes() -> Router<Flowstate> {
    Router::new().route(
        "/v1/flows/{flow_id}/transitions",
        post(transition).get(history),
    )
}

async fn transition(
    State(fs): State<Flowstate>,
    ApiPath(flow_id): ApiPath<String>,
    ApiJson(req): ApiJson<TransitionRequest>,
) -> Result<Response, ApiError> {
    let (transition, flow) = fs.transition(&flow_id, req).await?;
    Ok(Json(json!({ "transition": transition, "flow": flow })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    limit: Option<u32>,
    /// Only transitions with a greater id (for paging).
    after: Option<i64>,
}

async fn history(
    State(fs): State<Flowstate>,
    ApiPath(flow_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    let transitions = fs
        .transitions(&flow_id, q.after, q.limit.unwrap_or(100))
        .await?;
    Ok(Json(json!({ "transitions": transitions })).into_response())
}
