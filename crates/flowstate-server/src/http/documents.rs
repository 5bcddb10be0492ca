//! A flow's state, phase states and per-flow agent results:
//! `/v1/flows/{id}/state`, `/v1/flows/{id}/phases[/{phase}]`, `/v1/flows/{id}/agents[/{agent}]`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use flowstate::{Document, Flowstate};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::{ApiJson, ApiPath};

pub(super) fn routes() -> Router<Flowstate> {
    Router::new()
        .route("/v1/flows/{flow_id}/state", get(get_state).put(put_state))
        .route("/v1/flows/{flow_id}/phases", get(list_phases))
        .route(
            "/v1/flows/{flow_id}/phases/{phase}",
            get(get_phase).put(put_phase),
        )
        .route("/v1/flows/{flow_id}/agents", get(list_agents))
        .route(
            "/v1/flows/{flow_id}/agents/{agent}",
            get(get_agent).put(put_agent),
        )
}

/// `{"state": {...}}`: the state must be a JSON object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBody {
    state: Map<String, Value>,
}

/// `{"results": {...}}`: the results must be a JSON object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultsBody {
    results: Map<String, Value>,
}

fn state_json(doc: Document) -> Response {
    Json(json!({"state": doc.body, "saved_at": rfc3339(&doc), "version": doc.version}))
        .into_response()
}

fn phase_json(doc: Document) -> Response {
    Json(json!({"phase": doc.name, "state": doc.body, "saved_at": rfc3339(&doc), "version": doc.version}))
        .into_response()
}

fn agent_json(doc: Document) -> Response {
    Json(json!({"agent": doc.name, "results": doc.body, "cached_at": rfc3339(&doc), "version": doc.version}))
        .into_response()
}

fn rfc3339(doc: &Document) -> String {
    // An RFC 3339 rendering of a UTC timestamp in years 0..=9999 cannot fail.
    doc.saved_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

async fn put_state(
    State(fs): State<Flowstate>,
    ApiPath(flow_id): ApiPath<String>,
    ApiJson(body): ApiJson<StateBody>,
) -> Result<Response, ApiError> {
    Ok(state_json(fs.put_state(&flow_id, body.state).await?))
}

async fn get_state(
    State(fs): State<Flowstate>,
    ApiPath(flow_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(state_json(fs.get_state(&flow_id).await?))
}

async fn put_phase(
    State(fs): State<Flowstate>,
    ApiPath((flow_id, phase)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<StateBody>,
) -> Result<Response, ApiError> {
    Ok(phase_json(
        fs.put_phase(&flow_id, &phase, body.state).await?,
    ))
}

async fn get_phase(
    State(fs): State<Flowstate>,
    ApiPath((flow_id, phase)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(phase_json(fs.get_phase(&flow_id, &phase).await?))
}

async fn list_phases(
    State(fs): State<Flowstate>,
    ApiPath(flow_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(json!({"phases": fs.list_phases(&flow_id).await?})).into_response())
}

async fn put_agent(
    State(fs): State<Flowstate>,
    ApiPath((flow_id, agent)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<ResultsBody>,
) -> Result<Response, ApiError> {
    Ok(agent_json(
        fs.put_agent_results(&flow_id, &agent, body.results).await?,
    ))
}

async fn get_agent(
    State(fs): State<Flowstate>,
    ApiPath((flow_id, agent)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(agent_json(fs.get_agent_results(&flow_id, &agent).await?))
}

async fn list_agents(
    State(fs): State<Flowstate>,
    ApiPath(flow_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(json!({"agents": fs.list_agents(&flow_id).await?})).into_response())
}
