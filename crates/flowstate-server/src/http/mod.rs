//! The HTTP API (DESIGN §5): routes, shared extractors and middleware.

mod documents;
pub mod error;
mod flows;
mod health;
mod snapshots;
mod transitions;

use std::sync::OnceLock;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flowstate::Flowstate;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use self::error::ApiError;

/// JSON body extractor whose rejections use the API's error format.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Path extractor whose rejections use the API's error format.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Raw body extractor (for optional JSON bodies) whose rejections, such as 413, use the API's
/// error format.
pub struct ApiBytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(ApiBytes)
            .map_err(ApiError::from)
    }
}

/// Query-string extractor whose rejections use the API's error format.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The complete router for `service`.
pub fn router(service: Flowstate) -> Router {
    let max_body = service.config().max_body_bytes;
    Router::new()
        .merge(flows::routes())
        .merge(transitions::routes())
        .merge(documents::routes())
        .merge(snapshots::routes())
        .merge(health::routes())
        .route("/metrics", get(render_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            service.clone(),
            mark_degraded,
        ))
        .layer(middleware::from_fn(track_metrics))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal().into_response()
        }))
        .layer(TraceLayer::new_for_http())
        .with_state(service)
}

/// The process-wide Prometheus recorder: installed once, however many servers a process runs.
fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed by an embedding program; then its metrics
        // go there and ours render empty, which is the embedder's choice.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

async fn render_metrics() -> String {
    prometheus().render()
}

async fn track_metrics(req: Request, next: Next) -> Response {
    prometheus();
    let started = Instant::now();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("flowstate_http_requests_total", "method" => method.clone(), "path" => path.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("flowstate_http_request_duration_seconds", "method" => method, "path" => path)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Header on every response served (in part) without the hot tier.
pub const DEGRADED_HEADER: &str = "flowstate-degraded";

async fn mark_degraded(State(service): State<Flowstate>, req: Request, next: Next) -> Response {
    let (mut response, fell_back) = flowstate::track_degraded(next.run(req)).await;
    if fell_back || service.is_degraded() {
        response
            .headers_mut()
            .insert(DEGRADED_HEADER, HeaderValue::from_static("hot-tier"));
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "route_not_found",
        "no such route",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
