//! `/v1/flows`: the flow registry.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowstate::{Flow, FlowFilter, FlowPage, Flowstate, NewFlow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::{ApiJson, ApiPath, ApiQuery, FlowIdParam};

pub(super) fn routes() -> OpenApiRouter<Flowstate> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
        .routes(routes!(show, delete))
        .routes(routes!(children))
        .routes(routes!(memory))
}

/// Register a flow: status `initializing`, version 1. The parent, when given, must exist.
#[utoipa::path(post, path = "/v1/flows", tag = "flows", request_body = NewFlow,
    responses(
        (status = 201, description = "Registered", body = Flow,
         headers(("location" = String, description = "The flow's URL"))),
        (status = 404, description = "The parent flow does not exist (`parent_not_found`)", body = super::ErrorBody),
        (status = 409, description = "A flow with this id exists (`flow_exists`)", body = super::ErrorBody),
    ))]
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

/// A flow.
#[utoipa::path(get, path = "/v1/flows/{flow_id}", tag = "flows",
    params(FlowIdParam),
    responses((status = 200, description = "The flow", body = Flow)))]
async fn show(
    State(fs): State<Flowstate>,
    ApiPath(FlowIdParam { flow_id }): ApiPath<FlowIdParam>,
) -> Result<Json<Flow>, ApiError> {
    Ok(Json(fs.get_flow(&flow_id).await?))
}

/// Flows matching the filters, oldest registration first, one page at a time.
#[utoipa::path(get, path = "/v1/flows", tag = "flows", params(FlowFilter),
    responses((status = 200, description = "One page of flows", body = FlowPage)))]
async fn list(
    State(fs): State<Flowstate>,
    ApiQuery(filter): ApiQuery<FlowFilter>,
) -> Result<Json<FlowPage>, ApiError> {
    Ok(Json(fs.list_flows(&filter).await?))
}

/// `?recursive=`: the whole subtree rather than direct children only.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct Recursive {
    /// The whole subtree (children, then grandchildren, ...) rather than direct children.
    #[serde(default)]
    pub(super) recursive: bool,
}

/// The ids of a flow's children.
#[derive(Serialize, ToSchema)]
struct Children {
    /// Direct children in registration order, or the whole subtree breadth-first.
    children: Vec<String>,
}

/// The children of a flow: direct ones, or the whole subtree breadth-first.
#[utoipa::path(get, path = "/v1/flows/{flow_id}/children", tag = "flows",
    params(FlowIdParam, Recursive),
    responses((status = 200, description = "Child ids", body = Children)))]
async fn children(
    State(fs): State<Flowstate>,
    ApiPath(FlowIdParam { flow_id }): ApiPath<FlowIdParam>,
    ApiQuery(q): ApiQuery<Recursive>,
) -> Result<Json<Children>, ApiError> {
    let children = fs.children(&flow_id, q.recursive).await?;
    Ok(Json(Children { children }))
}

/// Delete a flow with its transitions, documents and snapshots; with `recursive=true`, its
/// whole subtree.
#[utoipa::path(delete, path = "/v1/flows/{flow_id}", tag = "flows",
    params(FlowIdParam, Recursive),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "The flow has children and `recursive` is not set (`flow_has_children`)", body = super::ErrorBody),
    ))]
async fn delete(
    State(fs): State<Flowstate>,
    ApiPath(FlowIdParam { flow_id }): ApiPath<FlowIdParam>,
    ApiQuery(q): ApiQuery<Recursive>,
) -> Result<StatusCode, ApiError> {
    fs.delete_flow(&flow_id, q.recursive).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a flow's keys take in the hot tier.
#[derive(Serialize, ToSchema)]
struct Memory {
    /// Bytes per key (Redis `MEMORY USAGE`; in memory, the size of the cached JSON).
    keys: BTreeMap<String, u64>,
    /// Their sum.
    total_bytes: u64,
}

/// The memory a flow's keys use in the hot tier.
#[utoipa::path(get, path = "/v1/flows/{flow_id}/memory", tag = "flows",
    params(FlowIdParam),
    responses((status = 200, description = "Bytes per key", body = Memory)))]
async fn memory(
    State(fs): State<Flowstate>,
    ApiPath(FlowIdParam { flow_id }): ApiPath<FlowIdParam>,
) -> Result<Json<Memory>, ApiError> {
    let (keys, total_bytes) = fs.memory(&flow_id).await?;
    Ok(Json(Memory { keys, total_bytes }))
}
