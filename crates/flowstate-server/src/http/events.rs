//! `/v1/flows/{id}/events`: a flow's live events over SSE (resuming from `Last-Event-ID`),
//! custom events, and the flow's open SSE connections.
//!
//! Each event is one SSE frame: `id:` its stream id, `event:` its type, `data:` the JSON event.
//! A frame is rendered once per event, however many connections receive it. A `reset` frame
//! (no `id:`) says the history asked for is gone; heartbeat comments keep proxies open.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flowstate::model::events::{Event, EventId, NewEvent, SseConnection};
use flowstate::{Delivery, Flowstate, Subscription};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::{ApiJson, ApiPath, ApiQuery, FlowIdParam};

pub(super) fn routes() -> OpenApiRouter<Flowstate> {
    OpenApiRouter::new()
        .routes(routes!(stream, post))
        .routes(routes!(connections))
}

/// Where to resume.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// The last event id received, for clients that cannot send the `Last-Event-ID` header;
    /// the header wins when both are given.
    #[param(pattern = r"^[0-9]{1,20}(-[0-9]{1,20})?$", example = "1732990000000-0")]
    last_event_id: Option<String>,
}

/// Stream a flow's events (`text/event-stream`). Without `Last-Event-ID` the stream starts
/// with the next event; with it, it first sends every event after that id, then live ones:
/// no duplicate, no gap, in order. If that history is gone (trimmed, expired, Redis restarted
/// empty) a `reset` event carrying the stream's epoch comes first, followed by every event
/// still kept: reload the flow's state. A heartbeat comment comes every `events.heartbeat_s`;
/// the stream ends after `FLOW_DELETED`.
#[utoipa::path(get, path = "/v1/flows/{flow_id}/events", tag = "events",
    params(FlowIdParam, StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The last event id received (`<ms>-<seq>`)")),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = String,
            headers(("X-Flowstate-Connection" = String, description = "This connection's id in the registry"))),
    ))]
async fn stream(
    State(fs): State<Flowstate>,
    ApiPath(FlowIdParam { flow_id }): ApiPath<FlowIdParam>,
    ApiQuery(q): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let after = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| {
                    flowstate::Error::InvalidInput("Last-Event-ID is not visible ASCII".into())
                })?
                .trim()
                .to_string(),
        ),
        None => q.last_event_id,
    };
    let after: Option<EventId> = after.map(|a| a.parse()).transpose()?;
    let sub = fs.subscribe(&flow_id, after).await?;
    let connection = HeaderValue::from_str(sub.connection_id())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let heartbeat = fs.config().events.heartbeat();
    let body = Body::from_stream(frames(sub, heartbeat));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // Proxies such as nginx would otherwise buffer the stream.
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
            (
                header::HeaderName::from_static("x-flowstate-connection"),
                connection,
            ),
        ],
        body,
    )
        .into_response())
}

/// The SSE frames of a subscription: a first comment (so the client sees the stream open at
/// once), then its deliveries, with a heartbeat comment whenever the stream is idle that long.
fn frames(
    sub: Subscription,
    heartbeat: Duration,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send {
    let opened = Bytes::from(format!(": connected {}\n\n", sub.connection_id()));
    let first = futures::stream::once(async move { Ok(opened) });
    let rest = futures::stream::unfold(sub, move |mut sub| async move {
        let frame = tokio::select! {
            delivery = sub.next() => match delivery? {
                Delivery::Event(live) => live.frame(render),
                Delivery::Reset { epoch } => reset_frame(sub.flow_id(), &epoch),
            },
            () = tokio::time::sleep(heartbeat) => Bytes::from_static(b": heartbeat\n\n"),
        };
        Some((Ok(frame), sub))
    });
    first.chain(rest)
}

/// An event's SSE frame.
fn render(event: &Event) -> Bytes {
    // Serialising a JSON value cannot fail; ids and types hold no line breaks (id rules).
    let data = serde_json::to_string(event).unwrap_or_default();
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        event.id, event.event_type
    ))
}

/// A reset's SSE frame: no `id:`, so the client's last id stays until the next event.
fn reset_frame(flow_id: &str, epoch: &str) -> Bytes {
    let data = serde_json::json!({"flow_id": flow_id, "epoch": epoch});
    Bytes::from(format!("event: reset\ndata: {data}\n\n"))
}

/// The id a posted event got.
#[derive(Serialize, ToSchema)]
struct Posted {
    /// The event's id in the flow's stream.
    #[schema(example = "1732990000000-0")]
    id: String,
}

/// Publish a custom event on a flow; subscribers on every instance receive it.
#[utoipa::path(post, path = "/v1/flows/{flow_id}/events", tag = "events",
    params(FlowIdParam), request_body = NewEvent,
    responses(
        (status = 202, description = "Published (or, while Redis is down, kept in the ledger outbox and delivered to this instance's subscribers)", body = Posted),
        (status = 413, description = "`event_type` and payload exceed `events.max_event_bytes` (`payload_too_large`)", body = super::ErrorBody),
    ))]
async fn post(
    State(fs): State<Flowstate>,
    ApiPath(FlowIdParam { flow_id }): ApiPath<FlowIdParam>,
    ApiJson(new): ApiJson<NewEvent>,
) -> Result<(StatusCode, Json<Posted>), ApiError> {
    let id = fs.post_event(&flow_id, new).await?;
    Ok((StatusCode::ACCEPTED, Json(Posted { id: id.to_string() })))
}

/// A flow's open SSE connections.
#[derive(Serialize, ToSchema)]
struct Connections {
    /// Oldest first on one instance; across instances, in registry order.
    connections: Vec<SseConnection>,
}

/// The flow's open SSE connections on every instance.
#[utoipa::path(get, path = "/v1/flows/{flow_id}/connections", tag = "events",
    params(FlowIdParam),
    responses((status = 200, description = "Open connections", body = Connections)))]
async fn connections(
    State(fs): State<Flowstate>,
    ApiPath(FlowIdParam { flow_id }): ApiPath<FlowIdParam>,
) -> Result<Json<Connections>, ApiError> {
    let connections = fs.connections(&flow_id).await?;
    Ok(Json(Connections { connections }))
}
