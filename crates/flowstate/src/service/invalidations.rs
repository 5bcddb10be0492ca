//! The invalidation journal's sweep. Keys a hot-tier write could not reach are recorded in the
//! ledger (`hot_invalidations`) before the write is answered ([`Flowstate::hot_write`]); every
//! instance deletes the recorded keys from a shared hot tier at startup and once a second, so
//! neither a crash nor another instance's recovery can let a stale value be read.

use std::sync::Weak;
use std::time::Duration;

#[cfg(doc)]
use super::Flowstate;
use super::Inner;
use crate::hot::HotError;
use crate::model::now;

/// How often the ledger's recorded invalidations are looked for (see [`sweep_invalidations`]).
const INVALIDATION_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Recorded invalidations carried out per round trip.
const INVALIDATION_CHUNK: u32 = 1000;

/// Carries out the ledger's recorded invalidations every [`INVALIDATION_SWEEP_EVERY`] while
/// the hot tier is up; ends with the service. Each instance deletes what the others recorded
/// too: their keys would otherwise be served stale here while their own breakers stay open.
pub(super) async fn sweep_invalidations(inner: Weak<Inner>) {
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
pub(super) async fn sweep_once(inner: &Inner, startup: bool) {
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
        let settled = now() - grace;
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
