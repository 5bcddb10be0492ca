//! `/v1/flows/{id}/transitions`: compare-and-set status changes and their history.

use axum::Json;
use axum::extract::State;
use flowstate::{Flow, Flowstate, Transition, TransitionRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::{ApiJson, ApiPath, ApiQuery, FlowIdParam};

pub(super) fn routes() -> OpenApiRouter<Flowstate> {
    OpenApiRouter::new().routes(routes!(transition, history))
}

/// A transition and the flow after it.
#[derive(Serialize, ToSchema)]
struct Transitioned {
    transition: Transition,
    flow: Flow,
}

/// Move a flow from `from` to `to` if it is still in `from` (compare-and-set).
#[utoipa::path(post, path = "/v1/flows/{flow_id}/transitions", tag = "transitions",
    params(FlowIdParam), request_body = TransitionRequest,
    responses(
        (status = 200, description = "Moved", body = Transitioned),
        (status = 409, description = "The flow is not in `from` (`stale_transition`); `current` has its status", body = super::ErrorBody),
    ))]
async fn transition(
    State(fs): State<Flowstate>,
    ApiPath(FlowIdParam { flow_id }): ApiPath<FlowIdParam>,
    ApiJson(req): ApiJson<TransitionRequest>,
) -> Result<Json<Transitioned>, ApiError> {
    let (transition, flow) = fs.transition(&flow_id, req).await?;
    Ok(Json(Transitioned { transition, flow }))
}

/// Paging of the history.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only transitions with a greater id (for paging).
    after: Option<i64>,
}

/// A page of a flow's history.
#[derive(Serialize, ToSchema)]
struct History {
    /// Oldest first.
    transitions: Vec<Transition>,
}

/// A flow's transitions, oldest first.
#[utoipa::path(get, path = "/v1/flows/{flow_id}/transitions", tag = "transitions",
    params(FlowIdParam, HistoryQuery),
    responses((status = 200, description = "Transitions with id above `after`", body = History)))]
async fn history(
    State(fs): State<Flowstate>,
    ApiPath(FlowIdParam { flow_id }): ApiPath<FlowIdParam>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    let transitions = fs
        .transitions(&flow_id, q.after, q.limit.unwrap_or(100))
        .await?;
    Ok(Json(History { transitions }))
}
