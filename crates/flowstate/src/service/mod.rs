//! [`Flowstate`]: the two tiers wired together, and the rules for using them.
//!
//! The ledger is authoritative; the hot tier is an accelerator whose failures are logged and
//! counted but never fail a request (writes already landed in the ledger, reads fall through).
//! Keys a write could not reach are recorded in the ledger too (`hot_invalidations`), and every
//! instance sweeps them out of Redis, so that neither a crash nor another instance's recovery
//! can let a stale value be read.

mod agent_cache;
mod audit;
mod backups;
mod checkpoints;
mod connections;
mod documents;
mod events;
mod fallbacks;
mod flows;
mod health;
mod invalidations;
mod locks;
mod monitor;
mod outbox;
mod sealing;
mod snapshots;
mod transitions;

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;

use crate::config::Config;
use crate::error::Result;
use crate::hot::keys::Keys;
use crate::hot::ttl::Ttls;
use crate::hot::{HotError, HotResult, HotTier, MemoryHot, RedisHot};
use crate::ledger::{self, Ledger};
use crate::model::events::EventIds;
use crate::model::{DocKind, now};
use crate::security::{Keyring, Signer, TokenSet};

pub use self::events::{Delivery, Subscription};
use self::fallbacks::FallbackLog;
pub use self::health::{Health, TierHealth};
pub use crate::hot::LiveEvent;

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
    /// Agent cache counts not flushed to the hot tier yet.
    agent_cache: agent_cache::PendingCounts,
    /// Agent cache lookups waiting for another caller's result.
    agent_cache_waiters: agent_cache::Waiters,
    /// The agent cache's optional in-process L1.
    agent_cache_l1: Option<agent_cache::L1>,
    /// Ids of the events this instance publishes.
    event_ids: EventIds,
    /// Whether events wait in the ledger outbox.
    outbox: outbox::Outbox,
    /// This instance's open SSE connections.
    connections: connections::Local,
    /// This instance's name in the connection registry.
    instance_id: String,
    /// The lock authority as last read, and lock waiters' turns.
    locks: locks::LockState,
    /// The health monitor's alerts and latest figures.
    monitor: monitor::MonitorState,
    /// Where audit records go (written by [`audit::write`]).
    audit: tokio::sync::mpsc::Sender<crate::model::AuditRecord>,
    /// Failed operations audited this second.
    audit_failures: audit::FailureBudget,
    /// Encryption keys and what is known of flows' sensitivity.
    sealing: sealing::Sealing,
    /// The API tokens the server accepts.
    tokens: TokenSet,
    /// LangGraph threads known to be registered as flows.
    threads: checkpoints::KnownThreads,
}

/// Locks `m`, also after a panic in another holder: the service's mutexes only ever hold
/// values changed by complete assignments, so a poisoned one is still consistent.
pub(super) fn unpoisoned<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

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

impl Flowstate {
    /// Opens both tiers as configured and applies ledger migrations.
    pub async fn open(config: Config) -> Result<Self> {
        config.validate()?;
        crate::model::backup::validate_patterns(&config.backup.patterns).map_err(|e| {
            crate::Error::Config(format!("backup.patterns (FLOWSTATE_BACKUP__PATTERNS): {e}"))
        })?;
        let security = &config.security;
        let signer = Signer::new(security.secret_key.as_ref().map(|k| k.0.as_bytes()))
            .map_err(|e| crate::Error::Config(e.to_string()))?;
        let keyring = Keyring::parse(security.encryption_keys.0.iter().map(String::as_str))
            .map_err(|e| crate::Error::Config(format!("FLOWSTATE_ENCRYPTION_KEYS: {e}")))?;
        let tokens = TokenSet::parse(security.api_tokens.0.iter().map(String::as_str))
            .map_err(|e| crate::Error::Config(format!("FLOWSTATE_API_TOKENS: {e}")))?;
        let ledger = ledger::open(&config.database).await?;
        if keyring.is_empty() && ledger.has_sensitive_flows().await? {
            return Err(crate::Error::Config(
                "sensitive flows are registered but FLOWSTATE_ENCRYPTION_KEYS is empty: their data could not be read, and new writes would be stored in the clear".into(),
            ));
        }
        let ttls = Ttls::new(config.ttl.clone());
        let hot: Box<dyn HotTier> = if config.redis.is_enabled() {
            let keys = Keys::new(config.key_prefix.clone());
            Box::new(RedisHot::connect(
                &config.redis,
                &config.events,
                keys,
                ttls,
                signer,
            )?)
        } else {
            Box::new(MemoryHot::new(ttls, &config.events))
        };
        let agent_cache_l1 = agent_cache::L1::new(&config.agent_cache, hot.shared());
        let (audit_tx, audit_rx) = audit::queue();
        let service = Flowstate {
            inner: Arc::new(Inner {
                config,
                ledger,
                hot,
                fallbacks: FallbackLog::default(),
                agent_cache: agent_cache::PendingCounts::default(),
                agent_cache_waiters: agent_cache::Waiters::default(),
                agent_cache_l1,
                event_ids: EventIds::default(),
                outbox: outbox::Outbox::default(),
                connections: connections::Local::default(),
                instance_id: uuid::Uuid::now_v7().to_string(),
                locks: locks::LockState::default(),
                monitor: monitor::MonitorState::default(),
                audit: audit_tx,
                audit_failures: audit::FailureBudget::default(),
                sealing: sealing::Sealing::new(keyring),
                tokens,
                threads: checkpoints::KnownThreads::default(),
            }),
        };
        if let Err(e) = service.hot().prepare().await {
            tracing::warn!(error = %e, "hot tier not reachable at startup; serving from the ledger until it is");
        }
        // Keys an earlier run (or another instance) could not write go before the first read.
        invalidations::sweep_once(&service.inner, true).await;
        // Events a process that died mid-outage left behind go out before any new one.
        outbox::replay_once(&service.inner).await;
        tokio::spawn(fallbacks::flush_fallbacks(Arc::downgrade(&service.inner)));
        tokio::spawn(agent_cache::flush_counts(Arc::downgrade(&service.inner)));
        tokio::spawn(invalidations::sweep_invalidations(Arc::downgrade(
            &service.inner,
        )));
        tokio::spawn(outbox::replay_outbox(Arc::downgrade(&service.inner)));
        tokio::spawn(connections::heartbeat(Arc::downgrade(&service.inner)));
        let webhook = monitor::webhook(service.config().health.alert_webhook.as_deref());
        tokio::spawn(monitor::run(Arc::downgrade(&service.inner), webhook));
        tokio::spawn(backups::schedule(Arc::downgrade(&service.inner)));
        tokio::spawn(monitor::recycle(Arc::downgrade(&service.inner)));
        tokio::spawn(audit::write(Arc::downgrade(&service.inner), audit_rx));
        Ok(service)
    }

    /// The API tokens and their roles (empty: the server runs open, on loopback only).
    pub fn api_tokens(&self) -> &TokenSet {
        &self.inner.tokens
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
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
    /// if this process dies first, or another instance's breaker closes first. Returns
    /// whether the write succeeded.
    pub(crate) async fn hot_write(
        &self,
        op: &'static str,
        fut: impl Future<Output = HotResult<()>>,
    ) -> bool {
        let Err(e) = fut.await else { return true };
        self.hot_failure(op, &e);
        if let HotError::Unwritten { keys, .. } = &e
            && !keys.is_empty()
        {
            match self.ledger().record_invalidations(keys, now()).await {
                Ok(()) => metrics::counter!("flowstate_hot_invalidations_recorded_total")
                    .increment(keys.len() as u64),
                // The tier still holds them in memory; only a crash could lose them now.
                Err(e) => {
                    tracing::warn!(error = %e, keys = keys.len(), "cannot record keys to invalidate")
                }
            }
        }
        false
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
        document: Option<(DocKind, &str)>,
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
