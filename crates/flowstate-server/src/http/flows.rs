//! `/v1/flows`: the flow registry.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, extract::State};
use flowstate::{FlowFilter, Flowstate, NewFlow};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::{ApiJson, ApiPath, ApiQuery};

pub(super) fn routes() -> Router<Flowstate> {
    Router::new()
        .route("/v1/flows", post(register).get(list))
        .route("/v1/flows/{flow_id}", get(show).delete(delete))
        .route("/v1/flows/{flow_id}/children", get(children))
        .route("/v1/flows/{flow_id}/memory", get(memory))
}

async fn register(
    State(fs): State<Flowstate>,
    ApiJson(new): ApiJson<NewFlow>,
) -> Result<Response, ApiError> {
    let flow = fs.register_flow(new).await?;
    let location = format!("/v1/flows/{}", flow.flow_id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(flow),
    )
        .into_response())
}

async fn show(
    State(fs): State<Flowstate>,
    ApiPath(flow_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(fs.get_flow(&flow_id).await?).into_response())
}

async fn list(
    State(fs): State<Flowstate>,
    ApiQuery(filter): ApiQuery<FlowFilter>,
) -> Result<Response, ApiError> {
    Ok(Json(fs.list_flows(&filter).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Recursive {
    #[serde(default)]
    recursive: bool,
}

async fn children(
    State(fs): State<Flowstate>,
    ApiPath(flow_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<Recursive>,
) -> Result<Response, ApiError> {
    let children = fs.children(&flow_id, q.recursive).await?;
    Ok(Json(json!({ "children": children })).into_response())
}

async fn delete(
    State(fs): State<Flowstate>,
    ApiPath(flow_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<Recursive>,
) -> Result<StatusCode, ApiError> {
    fs.delete_flow(&flow_id, q.recursive).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn memory(
    State(fs): State<Flowstate>,
    ApiPath(flow_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let (keys, total) = fs.memory(&flow_id).await?;
    Ok(Json(json!({ "keys": keys, "total_bytes": total })).into_response())
}
