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
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
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

/// The id to resume after, as browsers' `EventSource` sends it on a reconnect.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
struct LastEventIdHeader {
    /// The last event id received (`<ms>-<seq>`).
    #[param(rename = "Last-Event-ID", pattern = r"^[0-9]{1,20}(-[0-9]{1,20})?$")]
    last_event_id: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for LastEventIdHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let last_event_id = match parts.headers.get("last-event-id") {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| {
                        flowstate::Error::InvalidInput("Last-Event-ID is not visible ASCII".into())
                    })?
                    .trim()
                    .to_string(),
            ),
        };
        Ok(LastEventIdHeader { last_event_id })
    }
}

/// One server-sent event of the stream, as a client parses it.
#[derive(ToSchema)]
struct SseEvent {
    /// The event's id (`<ms>-<seq>`); absent on `reset`.
    id: Option<String>,
    /// The event's type (`FLOW_REGISTERED`, `STATE_TRANSITION`, ..., or `reset`).
    event: String,
    /// The event as JSON (an `Event`); for `reset`, `{"flow_id", "epoch"}`.
    data: String,
}

/// Stream a flow's events (`text/event-stream`). Without `Last-Event-ID` the stream starts
/// with the next event; with it, it first sends every event after that id, then live ones:
/// no duplicate, no gap, in order. If that history is gone (trimmed, expired, Redis restarted
/// empty) a `reset` event carrying the stream's epoch comes first, followed by every event
/// still kept: reload the flow's state. A heartbeat comment comes every `events.heartbeat_s`;
/// the stream ends after `FLOW_DELETED`.
#[utoipa::path(get, path = "/v1/flows/{flow_id}/events", tag = "events",
    params(FlowIdParam, StreamQuery, LastEventIdHeader),
    responses(
        (status = 200, description = "The event stream: one `SseEvent` per event", content_type = "text/event-stream", body = SseEvent,
            headers(("X-Flowstate-Connection" = String, description = "This connection's id in the registry"))),
    ))]
async fn stream(
    State(fs): State<Flowstate>,
    ApiPath(FlowIdParam { flow_id }): ApiPath<FlowIdParam>,
    ApiQuery(q): ApiQuery<StreamQuery>,
    header: LastEventIdHeader,
) -> Result<Response, ApiError> {
    let after = header.last_event_id.or(q.last_event_id);
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

impl SseEvent {
    /// The event's frame. Ids, types (id rules) and compact JSON hold no line breaks.
    fn frame(&self) -> Bytes {
        let mut out = String::with_capacity(self.data.len() + 64);
        if let Some(id) = &self.id {
            out.push_str("id: ");
            out.push_str(id);
            out.push('\n');
        }
        out.push_str("event: ");
        out.push_str(&self.event);
        out.push_str("\ndata: ");
        out.push_str(&self.data);
        out.push_str("\n\n");
        Bytes::from(out)
    }
}

/// An event's SSE frame.
fn render(event: &Event) -> Bytes {
    SseEvent {
        id: Some(event.id.to_string()),
        event: event.event_type.clone(),
        // Serialising an event (plain strings and a JSON value) cannot fail.
        data: serde_json::to_string(event).unwrap_or_default(),
    }
    .frame()
}

/// A reset's SSE frame: no `id:`, so the client's last id stays until the next event.
fn reset_frame(flow_id: &str, epoch: &str) -> Bytes {
    SseEvent {
        id: None,
        event: "reset".into(),
        data: serde_json::json!({"flow_id": flow_id, "epoch": epoch}).to_string(),
    }
    .frame()
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
