//! What every request passes before a handler sees it: authentication and roles, the
//! per-token rate limit, the JSON shape limits and the request timeout.
//!
//! - **Roles** are decided here from the method and the route template alone ([`required`]),
//!   so that one table says who may call what: `read` for GETs (event streams included) and
//!   read-only queries; `admin` for backups and restores, cache invalidation, the fallback log
//!   and the audit, and deletes of whole subtrees; `write` for everything else. `/healthz`,
//!   `/readyz` and `/openapi.json` are always open, `/metrics` when `security.open_metrics`.
//!   With no token configured everything is open (the server then only binds loopback, see
//!   `Application::build`).
//! - A token is looked up by its SHA-256 digest in constant time
//!   ([`flowstate::security::TokenSet`]); it is never logged, and the rate limiter keys on a
//!   digest prefix. Without tokens (loopback only) nothing is rate limited.
//! - The timeout bounds producing a response's head: an event stream's body flows on.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flowstate::Flowstate;
use flowstate::security::json_limits;
use flowstate::security::{Role, TokenSet};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::ApiError;

/// The access a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Open,
    /// A token of at least this role.
    Role(Role),
}

/// The access `method` on the route `template` needs (`recursive`: a `?recursive=true` delete).
pub fn required(method: &Method, template: &str, recursive: bool, open_metrics: bool) -> Access {
    match template {
        "/healthz" | "/readyz" | "/openapi.json" => return Access::Open,
        "/metrics" if open_metrics => return Access::Open,
        _ => {}
    }
    let admin = template.starts_with("/v1/backups")
        || matches!(template, "/v1/audit" | "/v1/fallbacks")
        || (*method == Method::DELETE && template == "/v1/agent-cache/{agent}")
        || (*method == Method::DELETE && template == "/v1/flows/{flow_id}" && recursive);
    if admin {
        return Access::Role(Role::Admin);
    }
    let reads = matches!(*method, Method::GET | Method::HEAD)
        || (*method == Method::POST && template == "/v1/checkpoints/search");
    Access::Role(if reads { Role::Read } else { Role::Write })
}

/// Shared by the guard's middleware.
#[derive(Clone)]
pub struct Guard {
    service: Flowstate,
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
}

impl Guard {
    /// The guard of `service`'s configuration.
    pub fn new(service: Flowstate) -> Guard {
        let limits = &service.config().limits;
        let limiter = NonZeroU32::new(limits.rate_per_s).map(|rate| {
            let burst = NonZeroU32::new(limits.rate_burst).unwrap_or(rate);
            Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            ))
        });
        if let Some(limiter) = &limiter {
            // Keys of clients gone quiet are dropped now and then, so the table stays small.
            let weak = Arc::downgrade(limiter);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(60));
                loop {
                    every.tick().await;
                    let Some(limiter) = weak.upgrade() else {
                        return;
                    };
                    limiter.retain_recent();
                }
            });
        }
        Guard { service, limiter }
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Authentication, roles and the rate limit (runs after routing: it needs the route template).
pub async fn authorize(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let tokens: &TokenSet = guard.service.api_tokens();
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("", |p| p.as_str());
    // Read as the handler reads it (percent-decoding included); a query it cannot read counts
    // as recursive, to be safe (the handler then refuses it anyway).
    let recursive = axum::extract::Query::<super::flows::Recursive>::try_from_uri(req.uri())
        .map_or(true, |q| q.0.recursive);
    let access = required(
        req.method(),
        template,
        recursive,
        guard.service.config().security.open_metrics,
    );
    let mut rate_key = None;
    if let (Access::Role(needed), false) = (access, tokens.is_empty()) {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(presented) = presented else {
            return unauthorized("an `Authorization: Bearer <token>` header is required");
        };
        let Some(role) = tokens.role_of(presented) else {
            metrics::counter!("flowstate_auth_failures_total", "reason" => "unknown_token")
                .increment(1);
            return unauthorized("the token is not valid");
        };
        if role < needed {
            metrics::counter!("flowstate_auth_failures_total", "reason" => "role").increment(1);
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this route needs a `{}` token; this one is `{}`",
                    needed.as_str(),
                    role.as_str()
                ),
            )
            .into_response();
        }
        rate_key = Some(TokenSet::label(presented));
    }
    // Per token: without tokens (loopback only) nothing is limited.
    if let (Some(limiter), Some(key)) = (&guard.limiter, rate_key)
        && let Err(not_until) = limiter.check_key(&key)
    {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        metrics::counter!("flowstate_rate_limited_total").increment(1);
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests for this token: slow down",
        )
        .retry_after(wait.as_secs_f64().ceil().max(1.0) as u64)
        .into_response();
    }
    next.run(req).await
}

/// Refuses bodies nested too deep or holding too many keys and elements, before any handler
/// parses them. Every body of this API is JSON, and some handlers read an optional body
/// whatever its content type, so every non-empty body is checked.
pub async fn json_shape(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    use axum::body::HttpBody;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let config = guard.service.config();
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, config.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("body larger than {} bytes", config.max_body_bytes),
            )
            .into_response();
        }
    };
    let limits = &config.limits;
    if let Err(e) = json_limits::check(&bytes, limits.max_json_depth, limits.max_json_items) {
        let code = match e {
            json_limits::ShapeError::TooDeep(_) => "json_too_deep",
            json_limits::ShapeError::TooManyItems(_) => "json_too_large",
        };
        return ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string()).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Answers 503 `request_timeout` when a response's head takes longer than
/// `limits.request_timeout_ms`. Backups and restores are not bounded: they take as long as
/// the data does (100,000 keys: seconds; a large Redis over a slow link: minutes), run on to
/// the end even if the caller hangs up, and a 503 would only tell the caller nothing.
pub async fn timeout(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    if unbounded(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let limit = Duration::from_millis(guard.service.config().limits.request_timeout_ms);
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("flowstate_request_timeouts_total").increment(1);
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "request_timeout",
                format!("no answer within {} ms", limit.as_millis()),
            )
            .retry_after(1)
            .into_response()
        }
    }
}

/// Whether a request may take longer than the request timeout: creating a backup and
/// restoring one (see [`timeout`]).
fn unbounded(method: &Method, path: &str) -> bool {
    *method == Method::POST
        && path
            .strip_prefix("/v1/backups")
            .is_some_and(|rest| rest.is_empty() || rest.ends_with("/restore"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_table() {
        let role = |m: Method, t: &str, recursive: bool| required(&m, t, recursive, false);
        use Access::{Open, Role as R};
        assert_eq!(role(Method::GET, "/healthz", false), Open);
        assert_eq!(role(Method::GET, "/metrics", false), R(Role::Read));
        assert_eq!(required(&Method::GET, "/metrics", false, true), Open);
        assert_eq!(
            role(Method::GET, "/v1/flows/{flow_id}/events", false),
            R(Role::Read)
        );
        assert_eq!(
            role(Method::POST, "/v1/checkpoints/search", false),
            R(Role::Read)
        );
        assert_eq!(
            role(Method::PUT, "/v1/flows/{flow_id}/state", false),
            R(Role::Write)
        );
        assert_eq!(
            role(Method::DELETE, "/v1/flows/{flow_id}", false),
            R(Role::Write)
        );
        assert_eq!(
            role(Method::DELETE, "/v1/flows/{flow_id}", true),
            R(Role::Admin)
        );
        assert_eq!(role(Method::GET, "/v1/backups", false), R(Role::Admin));
        assert_eq!(
            role(Method::POST, "/v1/backups/{backup_id}/restore", false),
            R(Role::Admin)
        );
        assert_eq!(
            role(Method::DELETE, "/v1/agent-cache/{agent}", false),
            R(Role::Admin)
        );
        assert_eq!(role(Method::GET, "/v1/fallbacks", false), R(Role::Admin));
        assert_eq!(role(Method::GET, "/v1/audit", false), R(Role::Admin));
    }

    #[tokio::test]
    async fn a_slow_answer_is_503_request_timeout_except_backups() {
        use tower::ServiceExt;
        let dir = tempfile::tempdir().unwrap();
        let mut config = flowstate::Config::default();
        config.database.url = format!("sqlite://{}", dir.path().join("t.db").display());
        config.health.interval_s = 0;
        config.locks.max_wait_ms = 0;
        config.agent_cache.max_wait_ms = 0;
        config.limits.request_timeout_ms = 1000;
        let guard = Guard::new(Flowstate::open(config).await.unwrap());
        // A bare service under the middleware: a slow answer on /slow, a quick one elsewhere.
        let handler = tower::service_fn(|req: Request| async move {
            if req.uri().path() != "/quick" {
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            Ok::<_, std::convert::Infallible>(Response::new(Body::from("done")))
        });
        let app = tower::Layer::layer(
            &axum::middleware::from_fn_with_state(guard, timeout),
            handler,
        );
        let get = |path: &str| Request::builder().uri(path).body(Body::empty()).unwrap();
        let quick = app.clone().oneshot(get("/quick")).await.unwrap();
        assert_eq!(quick.status(), StatusCode::OK);
        let slow = app.clone().oneshot(get("/slow")).await.unwrap();
        assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(slow.headers()[header::RETRY_AFTER], "1");
        let body = axum::body::to_bytes(slow.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "request_timeout");
        // Backups and restores take as long as they take.
        for path in ["/v1/backups", "/v1/backups/7/restore"] {
            let post = Request::post(path).body(Body::empty()).unwrap();
            let slow = app.clone().oneshot(post).await.unwrap();
            assert_eq!(slow.status(), StatusCode::OK, "{path}");
        }
        let listing = app.oneshot(get("/v1/backups/7")).await.unwrap();
        assert_eq!(listing.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
