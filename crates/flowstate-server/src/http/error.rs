//! The one mapping from errors to HTTP: `{"error": {"code", "message"}}` with the right status.
//!
//! Library errors keep their stable codes; unexpected ones are logged here once and answered
//! with a generic 500 that leaks nothing.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ErrorBody, ErrorDetail};

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The flow's actual status, on a stale transition.
    current: Option<String>,
    /// Seconds, for 503.
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            current: None,
            retry_after: None,
        }
    }

    /// This error with a `Retry-After` of `secs` seconds.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// A 500 that says nothing about why.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl From<flowstate::Error> for ApiError {
    fn from(err: flowstate::Error) -> Self {
        use flowstate::Error as E;
        let status = match &err {
            E::InvalidId { .. } | E::InvalidInput(_) => StatusCode::BAD_REQUEST,
            E::FlowNotFound(_)
            | E::ParentNotFound(_)
            | E::DocumentNotFound { .. }
            | E::SnapshotNotFound { .. }
            | E::CheckpointNotFound(_)
            | E::BackupNotFound(_) => StatusCode::NOT_FOUND,
            E::Unsupported(_) => StatusCode::CONFLICT,
            E::FlowExists(_)
            | E::HasChildren(_)
            | E::StaleTransition { .. }
            | E::SnapshotExists(_)
            | E::BackupExists(_)
            | E::StaleLease
            | E::LockHeld { .. }
            | E::LockNotHeld(_) => StatusCode::CONFLICT,
            E::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            E::LedgerUnavailable { .. } | E::HotTierUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            E::Config(_) | E::Ledger(_) | E::Migrate(_) | E::Internal(_) => {
                tracing::error!(error = %err, "request failed unexpectedly");
                return ApiError::internal();
            }
        };
        let mut api = ApiError::new(status, err.code(), err.to_string());
        match err {
            E::StaleTransition { current, .. } => api.current = Some(current),
            E::LedgerUnavailable { retry_after, .. } => {
                tracing::warn!(message = %api.message, "ledger unavailable");
                api.retry_after = Some(retry_after.as_secs().max(1));
            }
            E::HotTierUnavailable(_) => {
                tracing::warn!(message = %api.message, "hot tier unavailable");
                api.retry_after = Some(1);
            }
            E::LockHeld { retry_after, .. } => {
                api.retry_after = Some(retry_after.as_secs_f64().ceil().max(1.0) as u64);
            }
            _ => {}
        }
        api
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let (status, code) = match &rejection {
            JsonRejection::JsonDataError(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            JsonRejection::MissingJsonContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            _ => (StatusCode::BAD_REQUEST, "invalid_body"),
        };
        ApiError::new(status, code, rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                rejection.body_text(),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                rejection.body_text(),
            )
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            rejection.body_text(),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            rejection.body_text(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
            current: self.current,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
