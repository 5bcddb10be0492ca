//! The fallback log (reference §3.3 `redis_fallback_log`): every time a request is served
//! without the hot tier, it is counted here and written to the ledger in aggregate — one row per
//! (service, operation, reason) per flush interval with the count, first and last time and a
//! sample error — so an outage of hours writes a few rows a second at most, not one per request.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use super::{Flowstate, Inner};
use crate::error::{Error, Result};
use crate::model::{FallbackRecord, now};

/// How often counted fallbacks are written to the ledger.
const FALLBACK_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Largest page of fallback rows.
const MAX_FALLBACKS: u32 = 1000;

impl Flowstate {
    /// The newest fallback log rows (flushed to the ledger about once a second).
    pub async fn fallbacks(&self, limit: u32) -> Result<Vec<FallbackRecord>> {
        if limit == 0 || limit > MAX_FALLBACKS {
            return Err(Error::InvalidInput(format!(
                "limit must be within 1..={MAX_FALLBACKS}"
            )));
        }
        self.ledger().list_fallbacks(limit).await
    }
}

struct Pending {
    count: i64,
    first_at: OffsetDateTime,
    last_at: OffsetDateTime,
    error: String,
}

/// Fallbacks counted since the last flush.
#[derive(Default)]
pub(super) struct FallbackLog {
    pending: Mutex<HashMap<(&'static str, &'static str), Pending>>,
}

impl FallbackLog {
    /// Counts one fallback of `op` (`service.operation`) for `reason`.
    pub(super) fn record(
        &self,
        op: &'static str,
        reason: &'static str,
        error: &dyn std::fmt::Display,
    ) {
        let now = now();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .entry((op, reason))
            .and_modify(|p| {
                p.count += 1;
                p.last_at = now;
            })
            .or_insert_with(|| Pending {
                count: 1,
                first_at: now,
                last_at: now,
                error: error.to_string(),
            });
    }

    /// Takes everything counted so far as rows.
    pub(super) fn drain(&self) -> Vec<FallbackRecord> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let now = now();
        pending
            .into_iter()
            .map(|((op, reason), p)| {
                let (service, operation) = op.split_once('.').unwrap_or(("flowstate", op));
                FallbackRecord {
                    id: None,
                    service: service.to_string(),
                    operation: operation.to_string(),
                    reason: reason.to_string(),
                    fallback_source: "ledger".to_string(),
                    timestamp: now,
                    count: p.count,
                    context: json!({
                        "first_at": rfc3339(p.first_at),
                        "last_at": rfc3339(p.last_at),
                        "error": p.error,
                    }),
                }
            })
            .collect()
    }
}

/// Writes counted fallbacks to the ledger every [`FALLBACK_FLUSH_EVERY`]; ends with the service.
pub(super) async fn flush_fallbacks(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(FALLBACK_FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let rows = inner.fallbacks.drain();
        if rows.is_empty() {
            continue;
        }
        if let Err(e) = inner.ledger.record_fallbacks(&rows).await {
            tracing::warn!(error = %e, rows = rows.len(), "cannot write the fallback log");
        }
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    // RFC 3339 of a UTC timestamp in years 0..=9999 cannot fail.
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_becomes_one_row_per_operation_and_reason() {
        let log = FallbackLog::default();
        for _ in 0..1000 {
            log.record("flows.get", "unavailable", &"breaker open");
        }
        log.record("flows.get", "timeout", &"timed out");
        log.record("documents.put", "unavailable", &"breaker open");
        let mut rows = log.drain();
        rows.sort_by(|a, b| {
            (&a.service, &a.operation, &a.reason).cmp(&(&b.service, &b.operation, &b.reason))
        });
        let summary: Vec<(&str, &str, &str, i64)> = rows
            .iter()
            .map(|r| {
                (
                    r.service.as_str(),
                    r.operation.as_str(),
                    r.reason.as_str(),
                    r.count,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("documents", "put", "unavailable", 1),
                ("flows", "get", "timeout", 1),
                ("flows", "get", "unavailable", 1000)
            ]
        );
        assert!(log.drain().is_empty());
    }
}
