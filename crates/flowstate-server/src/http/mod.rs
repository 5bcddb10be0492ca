//! The HTTP API: routes, shared extractors and middleware, and the OpenAPI document built from
//! the handlers themselves (utoipa): each handler's `#[utoipa::path]` describes its route,
//! parameters, body and responses, and the error responses every route shares are added once
//! ([`openapi`]). The handlers are thin: parse, call [`Flowstate`], map errors (`error`).

mod agent_cache;
mod backups;
mod checkpoints;
mod documents;
pub mod error;
mod events;
mod flows;
pub mod guard;
mod health;
mod locks;
mod snapshots;
mod transitions;

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use flowstate::Flowstate;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// Every documented route, with the document built from the same handlers. Routes are added
/// only here and only through `routes!` (a test checks both), so none can be served without
/// its description in `/openapi.json`.
fn api() -> OpenApiRouter<Flowstate> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(flows::routes())
        .merge(transitions::routes())
        .merge(documents::routes())
        .merge(snapshots::routes())
        .merge(checkpoints::routes())
        .merge(backups::routes())
        .merge(events::routes())
        .merge(locks::routes())
        .merge(agent_cache::routes())
        .merge(health::routes())
        .routes(routes!(render_metrics))
        .routes(routes!(openapi_json))
}

/// The OpenAPI 3.1 document of the API, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    let mut doc = api().into_openapi();
    add_error_responses(&mut doc);
    // Bearer tokens when the server has any configured (docs/security.md); none otherwise.
    if let Some(components) = doc.components.as_mut() {
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
    doc.security = Some(vec![
        SecurityRequirement::new("bearer", Vec::<String>::new()),
        SecurityRequirement::default(),
    ]);
    doc
}

/// The complete router for `service`.
pub fn router(service: Flowstate) -> Router {
    let max_body = service.config().max_body_bytes;
    let guard = guard::Guard::new(service.clone());
    let (routes, _) = api().split_for_parts();
    routes
        // Route layers run after routing (roles depend on the route), the last added first.
        .route_layer(middleware::from_fn_with_state(
            guard.clone(),
            guard::json_shape,
        ))
        .route_layer(middleware::from_fn_with_state(
            guard.clone(),
            guard::authorize,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            service.clone(),
            mark_degraded,
        ))
        .layer(middleware::from_fn_with_state(guard, guard::timeout))
        .layer(middleware::from_fn(track_metrics))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal().into_response()
        }))
        .layer(TraceLayer::new_for_http())
        .with_state(service)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "flowstate",
        description = "State, cache and event layer for multi-agent AI flows. Errors are \
                       `{\"error\": {\"code\", \"message\"}}` with a stable snake_case code.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "flows", description = "The flow registry"),
        (name = "transitions", description = "Compare-and-set status transitions and their history"),
        (name = "documents", description = "A flow's state, phase states and per-flow agent results"),
        (name = "snapshots", description = "Snapshots with lineage, restore and fork"),
        (name = "checkpoints", description = "LangGraph checkpoints stored natively: what a checkpoint saver needs"),
        (name = "events", description = "Live flow events over SSE, custom events, open connections"),
        (name = "locks", description = "Distributed locks with owner and fencing tokens"),
        (name = "agent-cache", description = "The agent result cache"),
        (name = "health", description = "Health, readiness, the fallback log"),
        (name = "operations", description = "Metrics and this document"),
    )
)]
struct ApiDoc;

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub(crate) error: ErrorDetail,
    /// The flow's actual status, on `stale_transition`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) current: Option<String>,
}

/// A stable code and a human-readable message.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code (`invalid_id`, `flow_not_found`, `stale_transition`, ...).
    pub(crate) code: &'static str,
    /// What happened, for people.
    pub(crate) message: String,
}

/// `{flow_id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct FlowIdParam {
    /// The flow (1–128 characters of `A-Z a-z 0-9 _ . : -`).
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub(crate) flow_id: String,
}

/// `{flow_id}/…/{phase}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct FlowPhaseParams {
    /// The flow.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub(crate) flow_id: String,
    /// The phase.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub(crate) phase: String,
}

/// `{flow_id}/…/{agent}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct FlowAgentParams {
    /// The flow.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub(crate) flow_id: String,
    /// The agent.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub(crate) agent: String,
}

/// `{flow_id}/…/{snapshot_id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct FlowSnapshotParams {
    /// The flow.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub(crate) flow_id: String,
    /// The snapshot.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub(crate) snapshot_id: String,
}

/// Adds the error responses every operation shares, so each status a route can answer is
/// described with its body: 400 for bad ids, queries and bodies; 401, 403 and 429 (with
/// `Retry-After`) on the API's routes; 404 on a flow's routes; 413 and 415 where a JSON body is
/// read; 500; 503 (with `Retry-After`) where the ledger is asked.
fn add_error_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::{Ref, RefOr, Required, ResponseBuilder, content::ContentBuilder};
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        )
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            let responses = &mut op.responses.responses;
            let mut add = |status: &str, r: RefOr<utoipa::openapi::Response>| {
                responses.entry(status.to_string()).or_insert(r);
            };
            let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let body = op.request_body.as_ref();
            if has_params || body.is_some() {
                add(
                    "400",
                    error(
                        "Invalid id, query or body (`invalid_id`, `invalid_input`, `invalid_path`, `invalid_query`, `malformed_json`, `invalid_body`, `json_too_deep`, `json_too_large`)",
                    ),
                );
            }
            if path.contains("{flow_id}") {
                add(
                    "404",
                    error("No such flow (`flow_not_found`), or no such document or snapshot of it"),
                );
            }
            if let Some(body) = body {
                add(
                    "413",
                    error("Body larger than `max_body_bytes` (`payload_too_large`)"),
                );
                if matches!(body, RefOr::T(b) if matches!(b.required, Some(Required::True))) {
                    add(
                        "415",
                        error("Body not sent as `application/json` (`unsupported_media_type`)"),
                    );
                }
            }
            if path.starts_with("/v1/") || path == "/metrics" {
                add(
                    "401",
                    error(
                        "No token, or not a configured one, while API tokens are configured (`unauthorized`)",
                    ),
                );
                add(
                    "403",
                    error("The token's role is too low for this route (`forbidden`)"),
                );
                let limited = ResponseBuilder::new()
                    .description("Over the token's rate limit (`rate_limited`)")
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .header(
                        "retry-after",
                        HeaderBuilder::new()
                            .description(Some("Seconds to wait before retrying"))
                            .build(),
                    )
                    .build();
                add("429", RefOr::T(limited));
            }
            if path.starts_with("/v1/") && path != "/v1/health" || path == "/readyz" {
                let unavailable = ResponseBuilder::new()
                    .description(
                        "The ledger is unreachable (`ledger_unavailable`), or Redis for a cache invalidation (`hot_tier_unavailable`), or no answer within `limits.request_timeout_ms` (`request_timeout`)",
                    )
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .header(
                        "retry-after",
                        HeaderBuilder::new()
                            .description(Some("Seconds to wait before retrying"))
                            .build(),
                    )
                    .build();
                add("503", RefOr::T(unavailable));
                add(
                    "500",
                    error("A bug or a broken backend (`internal`); logged, never detailed"),
                );
            }
        }
    }
}

/// The OpenAPI document, built once.
fn openapi_value() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| serde_json::to_value(openapi()).unwrap_or_default())
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
async fn openapi_json() -> Json<&'static serde_json::Value> {
    Json(openapi_value())
}

/// The process-wide Prometheus recorder: installed once, however many servers a process runs.
fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Histograms as buckets (a scraper can aggregate them across instances, unlike
        // quantiles): latencies in seconds, sizes in powers of two.
        let builder = PrometheusBuilder::new()
            .set_buckets(&[
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ])
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ],
                )
            });
        let recorder = match builder {
            Ok(b) => b.build_recorder(),
            // Only empty bucket lists are refused, and these are not empty.
            Err(_) => PrometheusBuilder::new().build_recorder(),
        };
        let handle = recorder.handle();
        // Another recorder may already be installed by an embedding program; then its metrics
        // go there and ours render empty, which is the embedder's choice.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Prometheus metrics of this process.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn render_metrics(State(service): State<Flowstate>) -> String {
    // The tier's state as of this scrape.
    let stats = service.hot_stats();
    metrics::gauge!("flowstate_redis_breaker_open").set(u8::from(stats.breaker_open));
    metrics::gauge!("flowstate_redis_dirty_keys").set(stats.dirty_keys as f64);
    metrics::counter!("flowstate_redis_round_trips_total").absolute(stats.round_trips);
    metrics::counter!("flowstate_redis_breaker_opened_total").absolute(stats.breaker_opened_total);
    metrics::gauge!("flowstate_redis_pool_size").set(service.config().redis.pool_size as f64);
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
