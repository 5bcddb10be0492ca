//! What the service journals about the hot tier in the ledger: the fallback log (reference
//! §3.3 `redis_fallback_log`, one aggregated row per service, operation and reason per flush)
//! and the invalidation journal (hot-tier keys a write could not reach, to delete before Redis
//! serves them again).

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

/// One row of `redis_fallback_log`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FallbackRecord {
    /// Row id (absent before it is stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Which part of flowstate fell back (`flows`, `transitions`, `documents`).
    pub service: String,
    /// The operation (`get`, `register`, `put`, ...).
    pub operation: String,
    /// `timeout`, `error` or `unavailable` (circuit breaker open).
    pub reason: String,
    /// Where the request was served from instead.
    pub fallback_source: String,
    /// When the aggregated window ended.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// How many fallbacks this row stands for.
    pub count: i64,
    /// `{first_at, last_at, error}`.
    pub context: Value,
}

/// A hot-tier key recorded as possibly stale.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalidation {
    /// Row id (increasing).
    pub id: i64,
    /// The key.
    pub cache_key: String,
    /// When the write that missed it happened.
    pub recorded_at: OffsetDateTime,
}

/// One cache operation as the audit log records it (`redis_cache_audit`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// The flow (for the agent cache, `agent:<agent>`).
    pub flow_id: String,
    /// The hot-tier key (without `key_prefix`).
    pub cache_key: String,
    /// `GET`, `SET` or `INVALIDATE`.
    pub operation: String,
    /// `HIT` or `MISS` for a `GET`.
    pub hit_miss: Option<String>,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// How long the hot tier took, in ms.
    pub latency_ms: f64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}
