//! The audit of cache operations (reference §3.2, `redis_cache_audit`): flow and document
//! reads and writes, agent-cache lookups, stores and invalidations, each with its key, hit or
//! miss, the hot tier's latency and error. Sampled at `audit.sample_rate` (failed ones kept,
//! up to 100 a second), queued without waiting (a full queue drops the record and counts it) and written to
//! the ledger in batches by a task of its own: a request never waits for its audit.

use std::sync::Weak;
use std::time::Instant;

use tokio::sync::mpsc;

use super::{Flowstate, Inner, unpoisoned};
use crate::error::{Error, Result};
use crate::model::checkpoints::validate_text;
use crate::model::{AuditRecord, now};

/// Records waiting to be written.
const QUEUE: usize = 10_000;

/// Records written per ledger call at most.
const BATCH: usize = 500;

/// Records one listing answers at most.
const MAX_LIST: u32 = 1000;

/// Failed operations recorded per second at most: during an outage every operation fails,
/// and the audit must not become a write per request on the ledger that is serving them all.
const MAX_FAILURES_PER_S: u32 = 100;

/// Failures recorded in the current second.
#[derive(Default)]
pub(super) struct FailureBudget(std::sync::Mutex<(i64, u32)>);

impl FailureBudget {
    /// Whether one more failure may be recorded now.
    fn take(&self) -> bool {
        let mut slot = unpoisoned(&self.0);
        let second = now().unix_timestamp();
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += 1;
        slot.1 <= MAX_FAILURES_PER_S
    }
}

/// What a cache operation found, for its audit record.
pub(crate) enum Audited {
    /// A read that found the value.
    Hit,
    /// A read that did not.
    Miss,
    /// A write or an invalidation that went through.
    Done,
    /// The hot tier failed (or was bypassed).
    Failed(&'static str),
}

impl Flowstate {
    /// Queues an audit record of one cache operation, if sampled.
    pub(crate) fn audit(
        &self,
        flow_id: &str,
        cache_key: &str,
        operation: &'static str,
        started: Instant,
        found: Audited,
    ) {
        let error = match &found {
            Audited::Failed(why) => Some((*why).to_string()),
            _ => None,
        };
        let sampled = match error {
            Some(_) => self.inner.audit_failures.take(),
            None => rand::random::<f64>() < self.config().audit.sample_rate,
        };
        if !sampled {
            if error.is_some() {
                metrics::counter!("flowstate_audit_dropped_total").increment(1);
            }
            return;
        }
        let hit_miss = match found {
            Audited::Hit => Some("HIT".to_string()),
            Audited::Miss => Some("MISS".to_string()),
            Audited::Done | Audited::Failed(_) => None,
        };
        let record = AuditRecord {
            flow_id: flow_id.to_string(),
            cache_key: cache_key.to_string(),
            operation: operation.to_string(),
            hit_miss,
            timestamp: now(),
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            error,
        };
        if self.inner.audit.try_send(record).is_err() {
            metrics::counter!("flowstate_audit_dropped_total").increment(1);
        }
    }

    /// The newest audit records (of one flow, if given), newest first; `limit` 1–1000.
    pub async fn list_audit(&self, flow_id: Option<&str>, limit: u32) -> Result<Vec<AuditRecord>> {
        if limit == 0 || limit > MAX_LIST {
            return Err(Error::InvalidInput(format!(
                "limit must be within 1..={MAX_LIST}"
            )));
        }
        if let Some(id) = flow_id {
            validate_text("flow_id", id)?;
        }
        self.ledger().list_audit(flow_id, limit).await
    }
}

/// The audit queue: records go in without waiting.
pub(super) fn queue() -> (mpsc::Sender<AuditRecord>, mpsc::Receiver<AuditRecord>) {
    mpsc::channel(QUEUE)
}

/// Writes queued records in batches while the service lives.
pub(super) async fn write(inner: Weak<Inner>, mut rx: mpsc::Receiver<AuditRecord>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if let Err(e) = strong.ledger.record_audit(&batch).await {
            metrics::counter!("flowstate_audit_write_failures_total").increment(batch.len() as u64);
            tracing::debug!(error = %e, records = batch.len(), "audit records not written");
        }
    }
}
