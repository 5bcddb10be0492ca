//! A flow's state, phase states and per-flow agent results:
//! `/v1/flows/{id}/state`, `/v1/flows/{id}/phases[/{phase}]`, `/v1/flows/{id}/agents[/{agent}]`.

use axum::Json;
use axum::extract::State;
use flowstate::{Document, Flowstate};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::{ApiJson, ApiPath, FlowAgentParams, FlowIdParam, FlowPhaseParams};

pub(super) fn routes() -> OpenApiRouter<Flowstate> {
    OpenApiRouter::new()
        .routes(routes!(get_state, put_state))
        .routes(routes!(list_phases))
        .routes(routes!(get_phase, put_phase))
        .routes(routes!(list_agents))
        .routes(routes!(get_agent, put_agent))
}

/// `{"state": {...}}`: the state must be a JSON object.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StateBody {
    #[schema(value_type = Object)]
    state: Map<String, Value>,
}

/// `{"results": {...}}`: the results must be a JSON object.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ResultsBody {
    #[schema(value_type = Object)]
    results: Map<String, Value>,
}

/// A flow's state.
#[derive(Serialize, ToSchema)]
struct StateDoc {
    #[schema(value_type = Object)]
    state: Map<String, Value>,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    saved_at: OffsetDateTime,
    /// Grows with every write.
    version: i64,
}

impl From<Document> for StateDoc {
    fn from(doc: Document) -> Self {
        StateDoc {
            state: doc.body,
            saved_at: doc.saved_at,
            version: doc.version,
        }
    }
}

/// A phase's state.
#[derive(Serialize, ToSchema)]
struct PhaseDoc {
    /// The phase.
    phase: String,
    #[schema(value_type = Object)]
    state: Map<String, Value>,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    saved_at: OffsetDateTime,
    /// Grows with every write.
    version: i64,
}

impl From<Document> for PhaseDoc {
    fn from(doc: Document) -> Self {
        PhaseDoc {
            phase: doc.name,
            state: doc.body,
            saved_at: doc.saved_at,
            version: doc.version,
        }
    }
}

/// An agent's results for a flow.
#[derive(Serialize, ToSchema)]
struct AgentDoc {
    /// The agent.
    agent: String,
    #[schema(value_type = Object)]
    results: Map<String, Value>,
    /// When they were written.
    #[serde(with = "time::serde::rfc3339")]
    cached_at: OffsetDateTime,
    /// Grows with every write.
    version: i64,
}

impl From<Document> for AgentDoc {
    fn from(doc: Document) -> Self {
        AgentDoc {
            agent: doc.name,
            results: doc.body,
            cached_at: doc.saved_at,
            version: doc.version,
        }
    }
}

/// The phases saved for a flow.
#[derive(Serialize, ToSchema)]
struct Phases {
    /// Sorted by name.
    phases: Vec<String>,
}

/// The agents with results for a flow.
#[derive(Serialize, ToSchema)]
struct Agents {
    /// Sorted by name.
    agents: Vec<String>,
}

/// Replace the flow's state.
#[utoipa::path(put, path = "/v1/flows/{flow_id}/state", tag = "documents",
    params(FlowIdParam), request_body = StateBody,
    responses((status = 200, description = "Saved", body = StateDoc)))]
async fn put_state(
    State(fs): State<Flowstate>,
    ApiPath(FlowIdParam { flow_id }): ApiPath<FlowIdParam>,
    ApiJson(body): ApiJson<StateBody>,
) -> Result<Json<StateDoc>, ApiError> {
    Ok(Json(fs.put_state(&flow_id, body.state).await?.into()))
}

/// The flow's state (`state_not_found` until one is saved).
#[utoipa::path(get, path = "/v1/flows/{flow_id}/state", tag = "documents",
    params(FlowIdParam),
    responses((status = 200, description = "The state", body = StateDoc)))]
async fn get_state(
    State(fs): State<Flowstate>,
    ApiPath(FlowIdParam { flow_id }): ApiPath<FlowIdParam>,
) -> Result<Json<StateDoc>, ApiError> {
    Ok(Json(fs.get_state(&flow_id).await?.into()))
}

/// Save a phase's state (invalidates the flow's cached state).
#[utoipa::path(put, path = "/v1/flows/{flow_id}/phases/{phase}", tag = "documents",
    params(FlowPhaseParams), request_body = StateBody,
    responses((status = 200, description = "Saved", body = PhaseDoc)))]
async fn put_phase(
    State(fs): State<Flowstate>,
    ApiPath(FlowPhaseParams { flow_id, phase }): ApiPath<FlowPhaseParams>,
    ApiJson(body): ApiJson<StateBody>,
) -> Result<Json<PhaseDoc>, ApiError> {
    Ok(Json(
        fs.put_phase(&flow_id, &phase, body.state).await?.into(),
    ))
}

/// A phase's state (`phase_not_found` until one is saved).
#[utoipa::path(get, path = "/v1/flows/{flow_id}/phases/{phase}", tag = "documents",
    params(FlowPhaseParams),
    responses((status = 200, description = "The phase's state", body = PhaseDoc)))]
async fn get_phase(
    State(fs): State<Flowstate>,
    ApiPath(FlowPhaseParams { flow_id, phase }): ApiPath<FlowPhaseParams>,
) -> Result<Json<PhaseDoc>, ApiError> {
    Ok(Json(fs.get_phase(&flow_id, &phase).await?.into()))
}

/// The phases saved for a flow.
#[utoipa::path(get, path = "/v1/flows/{flow_id}/phases", tag = "documents",
    params(FlowIdParam),
    responses((status = 200, description = "Phase names", body = Phases)))]
async fn list_phases(
    State(fs): State<Flowstate>,
    ApiPath(FlowIdParam { flow_id }): ApiPath<FlowIdParam>,
) -> Result<Json<Phases>, ApiError> {
    Ok(Json(Phases {
        phases: fs.list_phases(&flow_id).await?,
    }))
}

/// Store an agent's results for a flow.
#[utoipa::path(put, path = "/v1/flows/{flow_id}/agents/{agent}", tag = "documents",
    params(FlowAgentParams), request_body = ResultsBody,
    responses((status = 200, description = "Saved", body = AgentDoc)))]
async fn put_agent(
    State(fs): State<Flowstate>,
    ApiPath(FlowAgentParams { flow_id, agent }): ApiPath<FlowAgentParams>,
    ApiJson(body): ApiJson<ResultsBody>,
) -> Result<Json<AgentDoc>, ApiError> {
    Ok(Json(
        fs.put_agent_results(&flow_id, &agent, body.results)
            .await?
            .into(),
    ))
}

/// An agent's results for a flow (`agent_results_not_found` until some are stored).
#[utoipa::path(get, path = "/v1/flows/{flow_id}/agents/{agent}", tag = "documents",
    params(FlowAgentParams),
    responses((status = 200, description = "The results", body = AgentDoc)))]
async fn get_agent(
    State(fs): State<Flowstate>,
    ApiPath(FlowAgentParams { flow_id, agent }): ApiPath<FlowAgentParams>,
) -> Result<Json<AgentDoc>, ApiError> {
    Ok(Json(fs.get_agent_results(&flow_id, &agent).await?.into()))
}

/// The agents with results for a flow.
#[utoipa::path(get, path = "/v1/flows/{flow_id}/agents", tag = "documents",
    params(FlowIdParam),
    responses((status = 200, description = "Agent names", body = Agents)))]
async fn list_agents(
    State(fs): State<Flowstate>,
    ApiPath(FlowIdParam { flow_id }): ApiPath<FlowIdParam>,
) -> Result<Json<Agents>, ApiError> {
    Ok(Json(Agents {
        agents: fs.list_agents(&flow_id).await?,
    }))
}
