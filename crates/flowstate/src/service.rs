//! [`Flowstate`]: the two tiers wired together, and the rules for using them.
//!
//! The ledger is authoritative; the hot tier is an accelerator whose failures are logged and
//! counted but never fail a request (writes already landed in the ledger, reads fall through).
//! Keys a write could not reach are recorded in the ledger too (`hot_invalidations`), and every
//! instance sweeps them out of Redis, so that neither a crash nor another instance's recovery
//! can let a stale value be read.

use std::cell::Cell;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::error::Result;
use crate::fallbacks::{FallbackLog, FallbackRecord};
use crate::hot::{HotError, HotResult, HotStats, HotTier, MemoryHot, RedisHot};
use crate::keys::Keys;
use crate::ledger::{self, Ledger};
use crate::ttl::Ttls;

/// The flowstate service: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Flowstate {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    ledger: Box<dyn Ledger>,
    hot: Box<dyn HotTier>,
    fallbacks: FallbackLog,
}

/// How often counted fallbacks are written to the ledger.
const FALLBACK_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How often the ledger's recorded invalidations are looked for (see [`sweep_invalidations`]).
const INVALIDATION_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Recorded invalidations carried out per round trip.
const INVALIDATION_CHUNK: u32 = 1000;

tokio::task_local! {
    /// Set when the request running in this task was served without the hot tier.
    static DEGRADED: Cell<bool>;
}

/// Runs `fut` (one request) and tells whether any part of it fell back to the ledger.
pub async fn track_degraded<F: Future>(fut: F) -> (F::Output, bool) {
    DEGRADED
        .scope(Cell::new(false), async {
            let out = fut.await;
            (out, DEGRADED.with(Cell::get))
        })
        .await
}

/// Health of both tiers.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `healthy`, `degraded` (hot tier unreachable) or `unavailable` (ledger unreachable).
    pub status: &'static str,
    /// The hot tier (named `redis` as in DESIGN §5; its `backend` says `memory` when embedded).
    pub redis: TierHealth,
    /// The ledger.
    pub ledger: TierHealth,
}

/// Health of one tier.
#[derive(Debug, Clone, Serialize)]
pub struct TierHealth {
    /// Backend name.
    pub backend: &'static str,
    /// Whether it answered.
    pub ok: bool,
    /// Round-trip latency of the check, in milliseconds.
    pub latency_ms: f64,
    /// Why it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Counters (hot tier only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<HotStats>,
}

impl Flowstate {
    /// Opens both tiers as configured and applies ledger migrations.
    pub async fn open(config: Config) -> Result<Self> {
        config.validate()?;
        let ledger = ledger::open(&config.database).await?;
        let ttls = Ttls::new(config.ttl.clone());
        let hot: Box<dyn HotTier> = if config.redis.is_enabled() {
            let keys = Keys::new(config.key_prefix.clone());
            Box::new(RedisHot::connect(&config.redis, keys, ttls)?)
        } else {
            Box::new(MemoryHot::new(ttls))
        };
        let service = Flowstate {
            inner: Arc::new(Inner {
                config,
                ledger,
                hot,
                fallbacks: FallbackLog::default(),
            }),
        };
        if let Err(e) = service.hot().prepare().await {
            tracing::warn!(error = %e, "hot tier not reachable at startup; serving from the ledger until it is");
        }
        // Keys an earlier run (or another instance) could not write go before the first read.
        sweep_once(&service.inner, true).await;
        tokio::spawn(flush_fallbacks(Arc::downgrade(&service.inner)));
        tokio::spawn(sweep_invalidations(Arc::downgrade(&service.inner)));
        Ok(service)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Checks both tiers.
    pub async fn health(&self) -> Health {
        let started = Instant::now();
        let ledger = self.ledger().ping().await;
        let ledger = TierHealth {
            backend: self.ledger().backend(),
            ok: ledger.is_ok(),
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            error: ledger.err().map(|e| e.to_string()),
            stats: None,
        };
        let hot = self.hot().ping().await;
        let redis = TierHealth {
            backend: self.hot().backend(),
            ok: hot.is_ok(),
            latency_ms: hot.as_ref().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0),
            error: hot.err().map(|e| e.to_string()),
            stats: Some(self.hot().stats()),
        };
        let status = match (ledger.ok, redis.ok) {
            (false, _) => "unavailable",
            (true, false) => "degraded",
            (true, true) => "healthy",
        };
        Health {
            status,
            redis,
            ledger,
        }
    }

    /// Whether the hot tier is being bypassed right now (circuit breaker open).
    pub fn is_degraded(&self) -> bool {
        self.hot().stats().breaker_open
    }

    /// The newest fallback log rows (flushed to the ledger about once a second).
    pub async fn fallbacks(&self, limit: u32) -> Result<Vec<FallbackRecord>> {
        if limit == 0 || limit > 1000 {
            return Err(crate::Error::InvalidInput(
                "limit must be within 1..=1000".into(),
            ));
        }
        self.ledger().list_fallbacks(limit).await
    }

    /// Bytes each of a flow's hot-tier keys uses (Redis `MEMORY USAGE`), and their total.
    pub async fn memory(
        &self,
        flow_id: &str,
    ) -> Result<(std::collections::BTreeMap<String, u64>, u64)> {
        crate::ids::validate("flow_id", flow_id)?;
        if self.ledger().get_flow(flow_id).await?.is_none() {
            return Err(crate::Error::FlowNotFound(flow_id.to_string()));
        }
        let keys = crate::hot::FlowKeys {
            flow_id: flow_id.to_string(),
            phases: self.list_phases(flow_id).await?,
            agents: self.list_agents(flow_id).await?,
            snapshots: self.list_snapshots(flow_id).await?,
        };
        let sizes = self
            .hot_read("flows.memory", self.hot().memory(&keys))
            .await
            .unwrap_or_default();
        let total = sizes.values().sum();
        Ok((sizes, total))
    }

    /// Whether the ledger answers (readiness).
    pub async fn ready(&self) -> Result<()> {
        self.ledger().ping().await
    }

    pub(crate) fn ledger(&self) -> &dyn Ledger {
        self.inner.ledger.as_ref()
    }

    pub(crate) fn hot(&self) -> &dyn HotTier {
        self.inner.hot.as_ref()
    }

    /// Runs a hot-tier write whose ledger counterpart already succeeded; a failure is logged
    /// and counted, never returned. The keys it could not reach are recorded in the ledger
    /// before the caller answers, so that they are deleted before Redis serves them again even
    /// if this process dies first, or another instance's breaker closes first.
    pub(crate) async fn hot_write(
        &self,
        op: &'static str,
        fut: impl Future<Output = HotResult<()>>,
    ) {
        let Err(e) = fut.await else { return };
        self.hot_failure(op, &e);
        if let HotError::Unwritten { keys, .. } = &e
            && !keys.is_empty()
        {
            match self
                .ledger()
                .record_invalidations(keys, crate::flows::now())
                .await
            {
                Ok(()) => metrics::counter!("flowstate_hot_invalidations_recorded_total")
                    .increment(keys.len() as u64),
                // The tier still holds them in memory; only a crash could lose them now.
                Err(e) => {
                    tracing::warn!(error = %e, keys = keys.len(), "cannot record keys to invalidate")
                }
            }
        }
    }

    /// Runs a write to completion on a task of its own. An HTTP client that disconnects drops
    /// its request future; a ledger commit must never be parted from the hot-tier write that
    /// follows it, or Redis would keep the old value.
    pub(crate) async fn detached<T, F>(&self, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let (result, degraded) = tokio::spawn(track_degraded(fut))
            .await
            .map_err(|e| crate::Error::Internal(format!("write task failed: {e}")))?;
        if degraded {
            let _ = DEGRADED.try_with(|d| d.set(true));
        }
        result
    }

    /// Passes a ledger write's result through. When its outcome is unknown (the ledger became
    /// unreachable mid-write: the commit may or may not have happened), the cached flow record
    /// and `document` are dropped, so readers go to the ledger instead of trusting a value the
    /// write may have replaced; until the ledger answers, reads of that flow get 503 rather
    /// than a possibly stale answer.
    pub(crate) async fn unless_unknown<T>(
        &self,
        written: Result<T>,
        flow_id: &str,
        document: Option<(crate::documents::DocKind, &str)>,
    ) -> Result<T> {
        if let Err(
            crate::Error::LedgerUnavailable { .. }
            | crate::Error::Ledger(_)
            | crate::Error::Internal(_),
        ) = &written
        {
            self.hot_write(
                "ledger.unknown_outcome",
                self.hot().forget(flow_id, document),
            )
            .await;
        }
        written
    }

    /// Runs a hot-tier repopulation after a miss, unless the hot tier went through an outage
    /// since `epoch` (taken before the ledger read): the value read may predate writes that the
    /// recovery already invalidated. Failures are counted in metrics only (the read that missed
    /// already counted its fallback).
    pub(crate) async fn hot_fill(
        &self,
        epoch: u64,
        op: &'static str,
        fut: impl Future<Output = HotResult<()>>,
    ) {
        if self.hot().epoch() != epoch {
            return;
        }
        if let Err(e) = fut.await {
            metrics::counter!("flowstate_hot_fill_failures_total", "operation" => op, "reason" => e.reason())
                .increment(1);
        }
    }

    /// Runs a hot-tier read; `None` means "ask the ledger".
    pub(crate) async fn hot_read<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = HotResult<T>>,
    ) -> Option<T> {
        match fut.await {
            Ok(v) => Some(v),
            Err(e) => {
                self.hot_failure(op, &e);
                None
            }
        }
    }

    /// Counts a fallback (metrics, fallback log) and marks the request degraded.
    fn hot_failure(&self, op: &'static str, e: &HotError) {
        let reason = e.reason();
        metrics::counter!("flowstate_fallbacks_total", "operation" => op, "reason" => reason)
            .increment(1);
        self.inner.fallbacks.record(op, reason, e);
        let _ = DEGRADED.try_with(|d| d.set(true));
        if matches!(e, HotError::Unavailable)
            || matches!(e, HotError::Unwritten { source, .. } if matches!(**source, HotError::Unavailable))
        {
            tracing::debug!(operation = op, "hot tier bypassed (breaker open)");
        } else {
            tracing::warn!(operation = op, reason, error = %e, "hot tier call failed; ledger serves");
        }
    }
}

/// Carries out the ledger's recorded invalidations every [`INVALIDATION_SWEEP_EVERY`] while
/// the hot tier is up; ends with the service. Each instance deletes what the others recorded
/// too: their keys would otherwise be served stale here while their own breakers stay open.
async fn sweep_invalidations(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(INVALIDATION_SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        sweep_once(&inner, false).await;
    }
}

/// Deletes every recorded key from a shared hot tier that is up, a chunk at a time, and
/// forgets the rows recorded more than a grace period ago: until then each sweep deletes the
/// key again, in case a write sent before Redis became unreachable lands late.
///
/// While the tier is down, the process that recorded a key holds it as dirty itself, and its
/// recovery deletes it before serving. At `startup` (a process that recorded keys may have
/// died) a tier that is down is handed every recorded key as dirty instead; later sweeps skip
/// a tier that is down, so as not to keep its recovery from ever finishing.
async fn sweep_once(inner: &Inner, startup: bool) {
    if !inner.hot.shared() {
        return;
    }
    let grace = (inner.config.redis.command_timeout() * 2).max(Duration::from_secs(1));
    let mut after = 0;
    loop {
        if inner.hot.stats().breaker_open && !startup {
            return;
        }
        let pending = match inner
            .ledger
            .pending_invalidations(after, INVALIDATION_CHUNK)
            .await
        {
            Ok(pending) if pending.is_empty() => return,
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the keys to invalidate");
                return;
            }
        };
        after = pending.last().map_or(after, |p| p.id);
        let mut keys: Vec<String> = pending.iter().map(|p| p.cache_key.clone()).collect();
        keys.sort_unstable();
        keys.dedup();
        match inner.hot.invalidate(&keys).await {
            Ok(()) => {}
            // Now dirty in the tier, deleted by its recovery; the rows stay for a later sweep.
            Err(HotError::Unwritten { .. }) if startup => {
                if pending.len() < INVALIDATION_CHUNK as usize {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, keys = keys.len(), "cannot invalidate recorded keys yet");
                return;
            }
        }
        let settled = crate::flows::now() - grace;
        let done: Vec<i64> = pending
            .iter()
            .filter(|p| p.recorded_at < settled)
            .map(|p| p.id)
            .collect();
        if !done.is_empty() {
            if let Err(e) = inner.ledger.clear_invalidations(&done).await {
                tracing::warn!(error = %e, "cannot forget carried-out invalidations");
                return;
            }
            metrics::counter!("flowstate_hot_invalidations_done_total")
                .increment(done.len() as u64);
            tracing::info!(
                rows = done.len(),
                "carried out invalidations recorded in the ledger"
            );
        }
        if pending.len() < INVALIDATION_CHUNK as usize {
            return;
        }
    }
}

/// Writes counted fallbacks to the ledger every [`FALLBACK_FLUSH_EVERY`]; ends with the service.
async fn flush_fallbacks(inner: Weak<Inner>) {
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
