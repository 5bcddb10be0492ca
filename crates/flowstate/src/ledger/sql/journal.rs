//! SQL both ledgers share for the journal: the fallback log and the invalidation journal.

use serde_json::Value;
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::model::{FallbackRecord, Invalidation};

/// SQL of one fallback log row.
pub(in crate::ledger) const INSERT_FALLBACK: &str = "INSERT INTO redis_fallback_log \
     (service, operation, reason, fallback_source, timestamp, count, context) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// SQL of the oldest recorded invalidations.
pub(in crate::ledger) const PENDING_INVALIDATIONS: &str = "SELECT id, cache_key, recorded_at FROM hot_invalidations \
     WHERE id > $1 ORDER BY id LIMIT $2";

/// SQL of the newest fallback log rows.
pub(in crate::ledger) const LIST_FALLBACKS: &str = "SELECT id, service, operation, reason, fallback_source, timestamp, \
     count, context FROM redis_fallback_log ORDER BY id DESC LIMIT $1";

/// A `redis_fallback_log` row.
#[derive(sqlx::FromRow)]
pub(in crate::ledger) struct FallbackRow {
    id: i64,
    service: String,
    operation: String,
    reason: String,
    fallback_source: Option<String>,
    timestamp: OffsetDateTime,
    count: i64,
    context: Option<Json<Value>>,
}

impl FallbackRow {
    pub(in crate::ledger) fn into_record(self) -> FallbackRecord {
        FallbackRecord {
            id: Some(self.id),
            service: self.service,
            operation: self.operation,
            reason: self.reason,
            fallback_source: self.fallback_source.unwrap_or_default(),
            timestamp: self.timestamp,
            count: self.count,
            context: self.context.map(|j| j.0).unwrap_or(Value::Null),
        }
    }
}

/// Binds one fallback row to [`INSERT_FALLBACK`].
pub(in crate::ledger) fn insert_fallback<DB: sqlx::Database>(
    r: &FallbackRecord,
) -> sqlx::query::Query<'_, DB, <DB as sqlx::Database>::Arguments>
where
    for<'e> &'e str: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
    for<'e> OffsetDateTime: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
    for<'e> i64: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
    for<'e> Json<&'e Value>: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
    <DB as sqlx::Database>::Arguments: Default,
{
    sqlx::query(INSERT_FALLBACK)
        .bind(r.service.as_str())
        .bind(r.operation.as_str())
        .bind(r.reason.as_str())
        .bind(r.fallback_source.as_str())
        .bind(r.timestamp)
        .bind(r.count)
        .bind(Json(&r.context))
}

/// A `hot_invalidations` row.
#[derive(sqlx::FromRow)]
pub(in crate::ledger) struct InvalidationRow {
    id: i64,
    cache_key: String,
    recorded_at: OffsetDateTime,
}

impl InvalidationRow {
    pub(in crate::ledger) fn into_invalidation(self) -> Invalidation {
        Invalidation {
            id: self.id,
            cache_key: self.cache_key,
            recorded_at: self.recorded_at,
        }
    }
}

/// SQL of one audit row.
pub(in crate::ledger) const INSERT_AUDIT: &str = "INSERT INTO redis_cache_audit \
     (flow_id, cache_key, operation, hit_miss, timestamp, latency_ms, error) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// SQL of the newest audit rows, of one flow when $1 is not NULL.
pub(in crate::ledger) const LIST_AUDIT: &str = "SELECT flow_id, cache_key, operation, hit_miss, \
     timestamp, latency_ms, error FROM redis_cache_audit \
     WHERE (CAST($1 AS TEXT) IS NULL OR flow_id = $1) ORDER BY id DESC LIMIT $2";

/// A `redis_cache_audit` row.
#[derive(sqlx::FromRow)]
pub(in crate::ledger) struct AuditRow {
    flow_id: String,
    cache_key: String,
    operation: String,
    hit_miss: Option<String>,
    timestamp: OffsetDateTime,
    latency_ms: Option<f64>,
    error: Option<String>,
}

impl AuditRow {
    pub(in crate::ledger) fn into_record(self) -> crate::model::AuditRecord {
        crate::model::AuditRecord {
            flow_id: self.flow_id,
            cache_key: self.cache_key,
            operation: self.operation,
            hit_miss: self.hit_miss,
            timestamp: self.timestamp,
            latency_ms: self.latency_ms.unwrap_or_default(),
            error: self.error,
        }
    }
}
