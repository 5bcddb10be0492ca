//! The agent result cache (reference §1.4): look up, store, statistics, invalidation.
//!
//! It is a pure cache: nothing of it is in the ledger. A lookup is one hot-tier command (on
//! Redis a `GETEX` that also slides the TTL); a store one round trip. When the hot tier fails
//! or is bypassed, lookups answer a miss and stores are dropped, both counted and marked
//! degraded; nothing fails. Hit, miss, set and error counts are gathered in process and
//! flushed to the hot tier once a second ([`flush_counts`]), never on the request path; the
//! statistics read the shared totals plus what this instance has not flushed yet.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use time::OffsetDateTime;

use super::{Flowstate, Inner};
use crate::error::{Error, Result};
use crate::model::agent_cache::{
    CacheCounts, CacheLookup, CachePut, CacheStats, CachedResult, entry_hash, validate_pattern,
};
use crate::model::{ids, now};

/// How often gathered counts are flushed to the hot tier.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Counts gathered since the last flush, per agent, with the last store.
#[derive(Default)]
pub(super) struct PendingCounts {
    by_agent: Mutex<HashMap<String, (CacheCounts, Option<OffsetDateTime>)>>,
}

impl PendingCounts {
    fn count(&self, agent: &str, f: impl FnOnce(&mut CacheCounts, &mut Option<OffsetDateTime>)) {
        let mut map = self.by_agent.lock().unwrap_or_else(|p| p.into_inner());
        let (counts, last) = map.entry(agent.to_string()).or_default();
        f(counts, last);
    }

    fn of(&self, agent: &str) -> (CacheCounts, Option<OffsetDateTime>) {
        let map = self.by_agent.lock().unwrap_or_else(|p| p.into_inner());
        map.get(agent).copied().unwrap_or_default()
    }

    fn drain(&self) -> Vec<(String, CacheCounts, Option<OffsetDateTime>)> {
        let mut map = self.by_agent.lock().unwrap_or_else(|p| p.into_inner());
        map.drain().map(|(a, (c, l))| (a, c, l)).collect()
    }

    /// Puts counts a flush could not deliver back, to go with the next one.
    fn restore(&self, rows: Vec<(String, CacheCounts, Option<OffsetDateTime>)>) {
        for (agent, c, l) in rows {
            self.count(&agent, |counts, last| {
                counts.add(&c);
                if last.is_none() || l > *last {
                    *last = l;
                }
            });
        }
    }
}

impl Flowstate {
    /// The cached result of `agent` for this input and context, if any (a hit slides its TTL).
    pub async fn cache_lookup(
        &self,
        agent: &str,
        req: CacheLookup,
    ) -> Result<Option<CachedResult>> {
        ids::validate("agent", agent)?;
        let hash = entry_hash(agent, &req.input, req.context.as_ref())?;
        let ttl = self.ttls().agent_cache(agent);
        let found = self
            .hot_read(
                "agent_cache.lookup",
                self.hot().get_result(agent, &hash, ttl),
            )
            .await;
        let pending = &self.inner.agent_cache;
        match found {
            Some(Some(result)) => {
                pending.count(agent, |c, _| c.hit += 1);
                Ok(Some(result))
            }
            Some(None) => {
                pending.count(agent, |c, _| c.miss += 1);
                Ok(None)
            }
            None => {
                pending.count(agent, |c, _| {
                    c.miss += 1;
                    c.error += 1;
                });
                Ok(None)
            }
        }
    }

    /// Caches `agent`'s result for this input and context; returns the entry's hash and
    /// whether the hot tier took it (a store it could not take is dropped, not an error).
    pub async fn cache_put(&self, agent: &str, req: CachePut) -> Result<(String, bool)> {
        ids::validate("agent", agent)?;
        if req
            .execution_time
            .is_some_and(|t| !t.is_finite() || t < 0.0)
        {
            return Err(Error::InvalidInput(
                "execution_time must be a non-negative number of seconds".into(),
            ));
        }
        let hash = entry_hash(agent, &req.input, req.context.as_ref())?;
        let at = now();
        let result = CachedResult {
            output: req.output,
            cached_at: at,
            execution_time: req.execution_time,
        };
        let ttl = self.ttls().agent_cache(agent);
        let stored = self
            .hot_read(
                "agent_cache.put",
                self.hot().put_result(agent, &hash, &result, ttl),
            )
            .await
            .is_some();
        self.inner.agent_cache.count(agent, |c, last| {
            if stored {
                c.set += 1;
                *last = Some(at);
            } else {
                c.error += 1;
            }
        });
        Ok((hash, stored))
    }

    /// `agent`'s statistics: the totals every instance flushed, plus this one's unflushed
    /// counts. While the hot tier is unreachable, only this instance's unflushed counts.
    pub async fn cache_stats(&self, agent: &str) -> Result<CacheStats> {
        ids::validate("agent", agent)?;
        let mut totals = self
            .hot_read("agent_cache.stats", self.hot().cache_stats(agent))
            .await
            .unwrap_or_default();
        let (pending, pending_last) = self.inner.agent_cache.of(agent);
        totals.counts.add(&pending);
        totals.total_cached += pending.set;
        if pending_last > totals.last_cached {
            totals.last_cached = pending_last;
        }
        Ok(CacheStats::new(
            totals.counts,
            totals.total_cached,
            totals.last_cached,
        ))
    }

    /// Deletes `agent`'s cached results, or those whose hash matches the glob `pattern`;
    /// returns how many. [`Error::HotTierUnavailable`] when the hot tier cannot be reached.
    pub async fn cache_invalidate(&self, agent: &str, pattern: Option<&str>) -> Result<u64> {
        ids::validate("agent", agent)?;
        if let Some(p) = pattern {
            validate_pattern(p)?;
        }
        self.hot()
            .invalidate_results(agent, pattern)
            .await
            .map_err(|e| Error::HotTierUnavailable(e.to_string()))
    }
}

/// Flushes gathered counts to the hot tier every [`FLUSH_EVERY`]; ends with the service.
/// Counts a flush cannot deliver wait for the next one.
pub(super) async fn flush_counts(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let rows = inner.agent_cache.drain();
        if rows.is_empty() {
            continue;
        }
        if let Err(e) = inner.hot.record_counts(&rows).await {
            tracing::debug!(error = %e, agents = rows.len(), "agent cache counts kept for the next flush");
            inner.agent_cache.restore(rows);
        }
    }
}
