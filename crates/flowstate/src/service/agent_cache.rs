//! The agent result cache (reference §1.4): look up, store, statistics, invalidation, and
//! stampede protection.
//!
//! It is a pure cache: nothing of it is in the ledger. A lookup is one hot-tier command (on
//! Redis a `GETEX` that also slides the TTL); a store one round trip. When the hot tier fails
//! or is bypassed, lookups answer a miss and stores are dropped, both counted and marked
//! degraded; nothing fails. Hit, miss, set and error counts are gathered in process and
//! flushed to the hot tier once a second ([`flush_counts`]), never on the request path; the
//! statistics read the shared totals plus what this instance has not flushed yet.
//!
//! The optional L1 (`agent_cache.l1`, with Redis only) keeps hits in process memory for
//! `l1_ttl_ms`: this instance's own stores and invalidations update it at once, another
//! instance's reach it when the entry's L1 time is up, so that is the staleness bound. While
//! an entry is hot, Redis is still asked once per `l1_ttl_ms`, which keeps sliding its TTL.
//!
//! Stampedes: a lookup with `lease_ms` that misses takes a lease in the same round trip, so of
//! many concurrent callers exactly one gets a `lease_token` and computes. The others, with
//! `wait_ms`, wait for its store: a store on this instance wakes them at once; otherwise they
//! look again with capped backoff (10 ms doubling to 200 ms), never in a tight loop. A lease
//! that expires lets the next lookup take it over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use time::OffsetDateTime;

use super::audit::Audited;
use super::{Flowstate, Inner};
use crate::config::AgentCacheConfig;
use crate::error::{Error, Result};
use crate::hot::keys::Keys;
use crate::model::agent_cache::{
    CacheCounts, CacheLookup, CachePut, CacheStats, CachedResult, LeaseRelease, LeasedLookup,
    Lookup, MAX_LEASE_MS, entry_hash, hash_matches, validate_pattern,
};
use crate::model::{ids, now};

/// How often gathered counts are flushed to the hot tier.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// First and longest pause between two looks of a lookup waiting for another caller's result.
const WAIT_FIRST: Duration = Duration::from_millis(10);
const WAIT_MAX: Duration = Duration::from_millis(200);

/// The optional in-process L1 in front of Redis: (agent, hash) -> result, for `l1_ttl_ms`.
pub(super) struct L1 {
    entries: moka::sync::Cache<(String, String), Arc<CachedResult>>,
}

impl L1 {
    /// The L1 the configuration asks for, if any (never in front of the in-process tier).
    pub(super) fn new(cfg: &AgentCacheConfig, shared_tier: bool) -> Option<L1> {
        (cfg.l1 && shared_tier).then(|| L1 {
            entries: moka::sync::Cache::builder()
                .max_capacity(cfg.l1_max_bytes)
                .weigher(|(a, h): &(String, String), r: &Arc<CachedResult>| r.weight(a, h))
                .time_to_live(Duration::from_millis(cfg.l1_ttl_ms))
                .build(),
        })
    }

    fn get(&self, agent: &str, hash: &str) -> Option<CachedResult> {
        self.entries
            .get(&(agent.to_string(), hash.to_string()))
            .map(|r| CachedResult::clone(&r))
    }

    fn put(&self, agent: &str, hash: &str, result: &CachedResult) {
        self.entries.insert(
            (agent.to_string(), hash.to_string()),
            Arc::new(result.clone()),
        );
    }

    fn invalidate(&self, agent: &str, pattern: Option<&str>) {
        let pattern = pattern.unwrap_or("*");
        let doomed: Vec<(String, String)> = self
            .entries
            .iter()
            .filter(|(k, _)| k.0 == agent && hash_matches(pattern, &k.1))
            .map(|(k, _)| (*k).clone())
            .collect();
        for key in doomed {
            self.entries.invalidate(&key);
        }
    }
}

/// Lookups on this instance waiting for a result, by (agent, hash): a store wakes them.
#[derive(Default)]
pub(super) struct Waiters {
    by_key: Mutex<HashMap<(String, String), Arc<Notify>>>,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<Notify>>> {
        self.by_key.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subscribe(&self, agent: &str, hash: &str) -> Arc<Notify> {
        self.lock()
            .entry((agent.to_string(), hash.to_string()))
            .or_default()
            .clone()
    }

    /// Forgets the key once nobody waits on it any more.
    fn unsubscribe(&self, agent: &str, hash: &str, notify: Arc<Notify>) {
        drop(notify);
        let mut map = self.lock();
        let key = (agent.to_string(), hash.to_string());
        if map.get(&key).is_some_and(|n| Arc::strong_count(n) == 1) {
            map.remove(&key);
        }
    }

    fn wake(&self, agent: &str, hash: &str) {
        if let Some(n) = self.lock().get(&(agent.to_string(), hash.to_string())) {
            n.notify_waiters();
        }
    }
}

/// Counts gathered since the last flush, per agent, with the last store.
#[derive(Default)]
pub(super) struct PendingCounts {
    by_agent: Mutex<HashMap<String, (CacheCounts, Option<OffsetDateTime>)>>,
}

impl PendingCounts {
    fn count(&self, agent: &str, f: impl FnOnce(&mut CacheCounts, &mut Option<OffsetDateTime>)) {
        let mut map = self.by_agent.lock().unwrap_or_else(|p| p.into_inner());
        // The agent is usually counted already: no key to allocate then.
        let (counts, last) = match map.get_mut(agent) {
            Some(entry) => entry,
            None => map.entry(agent.to_string()).or_default(),
        };
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
    /// With `lease_ms`, a miss takes the lease when nobody holds it (the answer carries its
    /// token), and with `wait_ms` waits for the holder's result.
    pub async fn cache_lookup(&self, agent: &str, req: CacheLookup) -> Result<Lookup> {
        ids::validate("agent", agent)?;
        if req.lease_ms.is_some_and(|l| l == 0 || l > MAX_LEASE_MS) {
            return Err(Error::InvalidInput(format!(
                "lease_ms must be within 1..={MAX_LEASE_MS}"
            )));
        }
        let max_wait = self.config().agent_cache.max_wait_ms;
        if req.wait_ms.is_some_and(|w| w > max_wait) {
            return Err(Error::InvalidInput(format!(
                "wait_ms must be within 0..={max_wait} (agent_cache.max_wait_ms)"
            )));
        }
        if req.wait_ms.is_some() && req.lease_ms.is_none() {
            return Err(Error::InvalidInput("wait_ms needs lease_ms".into()));
        }
        let hash = entry_hash(agent, &req.input, req.context.as_ref())?;
        let started = std::time::Instant::now();
        let l1 = self.inner.agent_cache_l1.as_ref();
        if let Some(hit) = l1.and_then(|l1| l1.get(agent, &hash)) {
            return Ok(self.count_lookup(agent, &hash, started, Some(Lookup::Hit(hit))));
        }
        let Some(lease_ms) = req.lease_ms else {
            let found = self
                .hot_read("agent_cache.lookup", self.hot().get_result(agent, &hash))
                .await;
            if let (Some(l1), Some(Some(hit))) = (l1, &found) {
                l1.put(agent, &hash, hit);
            }
            return Ok(self.count_lookup(
                agent,
                &hash,
                started,
                found.map(|f| f.map_or(Lookup::Miss(None), Lookup::Hit)),
            ));
        };
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(req.wait_ms.unwrap_or(0));
        let waiters = &self.inner.agent_cache_waiters;
        let notify = waiters.subscribe(agent, &hash);
        let mut pause = WAIT_FIRST;
        let outcome = loop {
            // Registered before looking, so a store between the look and the wait still wakes.
            let stored = notify.notified();
            tokio::pin!(stored);
            stored.as_mut().enable();
            let token = uuid::Uuid::now_v7().simple().to_string();
            let found = self
                .hot_read(
                    "agent_cache.lookup",
                    self.hot().get_or_lease(agent, &hash, &token, lease_ms),
                )
                .await;
            match found {
                Some(LeasedLookup::Hit(result)) => {
                    if let Some(l1) = l1 {
                        l1.put(agent, &hash, &result);
                    }
                    break Some(Lookup::Hit(result));
                }
                Some(LeasedLookup::Leased) => break Some(Lookup::Miss(Some(token))),
                None => break None,
                Some(LeasedLookup::Held) => {}
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break Some(Lookup::Miss(None));
            }
            let _ = tokio::time::timeout((deadline - now).min(pause), stored).await;
            pause = (pause * 2).min(WAIT_MAX);
        };
        waiters.unsubscribe(agent, &hash, notify);
        Ok(self.count_lookup(agent, &hash, started, outcome))
    }

    /// Counts (and audits) a lookup's outcome (`None`: the hot tier failed, a miss) and
    /// passes it on.
    fn count_lookup(
        &self,
        agent: &str,
        hash: &str,
        started: std::time::Instant,
        outcome: Option<Lookup>,
    ) -> Lookup {
        let audited = match &outcome {
            Some(Lookup::Hit(_)) => Audited::Hit,
            Some(_) => Audited::Miss,
            None => Audited::Failed("hot tier unavailable"),
        };
        let key = Keys::default().agent_result(agent, hash);
        self.audit(&format!("agent:{agent}"), &key, "GET", started, audited);
        let pending = &self.inner.agent_cache;
        // Per outcome only: agent names are the caller's, too many to label with.
        let result = match &outcome {
            Some(Lookup::Hit(_)) => "hit",
            Some(_) => "miss",
            None => "error",
        };
        metrics::counter!("flowstate_agent_cache_lookups_total", "result" => result).increment(1);
        match outcome {
            Some(Lookup::Hit(result)) => {
                pending.count(agent, |c, _| c.hit += 1);
                Lookup::Hit(result)
            }
            Some(miss) => {
                pending.count(agent, |c, _| c.miss += 1);
                miss
            }
            None => {
                pending.count(agent, |c, _| {
                    c.miss += 1;
                    c.error += 1;
                });
                Lookup::Miss(None)
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
        let started = std::time::Instant::now();
        let stored = match &req.lease_token {
            None => self
                .hot_read(
                    "agent_cache.put",
                    self.hot().put_result(agent, &hash, &result),
                )
                .await
                .is_some(),
            Some(token) => match self
                .hot_read(
                    "agent_cache.put",
                    self.hot().put_leased(agent, &hash, &result, token),
                )
                .await
            {
                Some(true) => true,
                Some(false) => return Err(Error::StaleLease),
                None => false,
            },
        };
        let audited = if stored {
            Audited::Done
        } else {
            Audited::Failed("hot tier unavailable")
        };
        let key = Keys::default().agent_result(agent, &hash);
        self.audit(&format!("agent:{agent}"), &key, "SET", started, audited);
        if let Some(l1) = &self.inner.agent_cache_l1 {
            if stored {
                l1.put(agent, &hash, &result);
            } else {
                // Not in Redis: this instance must not keep serving what it replaced.
                l1.invalidate(agent, Some(&hash));
            }
        }
        if stored {
            self.inner.agent_cache_waiters.wake(agent, &hash);
        }
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

    /// Gives up the lease `req.lease_token` holds on this input, without a result, and wakes
    /// this instance's waiters (others look again within their backoff), so one of them takes
    /// the lease at once instead of after `lease_ms`. [`Error::StaleLease`] if the token no
    /// longer holds it.
    pub async fn cache_release(&self, agent: &str, req: LeaseRelease) -> Result<()> {
        ids::validate("agent", agent)?;
        let hash = entry_hash(agent, &req.input, req.context.as_ref())?;
        let released = self
            .hot_read(
                "agent_cache.release",
                self.hot().release_lease(agent, &hash, &req.lease_token),
            )
            .await;
        match released {
            Some(true) => {
                self.inner.agent_cache_waiters.wake(agent, &hash);
                Ok(())
            }
            Some(false) => Err(Error::StaleLease),
            None => Err(Error::HotTierUnavailable(
                "the lease could not be released; it lapses after its lease_ms".into(),
            )),
        }
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
        if let Some(l1) = &self.inner.agent_cache_l1 {
            l1.invalidate(agent, pattern);
        }
        let started = std::time::Instant::now();
        let deleted = self.hot().invalidate_results(agent, pattern).await;
        let audited = match &deleted {
            Ok(_) => Audited::Done,
            Err(_) => Audited::Failed("hot tier unavailable"),
        };
        let key = Keys::default().agent_results_glob(agent, pattern.unwrap_or("*"));
        self.audit(
            &format!("agent:{agent}"),
            &key,
            "INVALIDATE",
            started,
            audited,
        );
        deleted.map_err(|e| Error::HotTierUnavailable(e.to_string()))
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
