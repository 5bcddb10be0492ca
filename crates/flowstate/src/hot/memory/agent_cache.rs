//! The agent result cache in process: entries in a moka cache bounded by their size (the JSON
//! of their output), each with its own TTL that a hit slides forward, as `GETEX` does on
//! Redis; the counters the service flushes are summed here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::sync::Cache;
use time::OffsetDateTime;

use super::MemoryHot;
use crate::hot::{AgentCacheHot, HotResult};
use crate::model::agent_cache::{
    AgentTotals, CacheCounts, CachedResult, LeasedLookup, hash_matches,
};

/// Bytes of cached results kept at most; the least useful are evicted first.
const MAX_BYTES: u64 = 256 * 1024 * 1024;

/// One cached result with its TTL.
#[derive(Clone)]
struct Entry {
    result: Arc<CachedResult>,
    ttl: Duration,
}

struct SlidingTtl;

impl moka::Expiry<(String, String), Entry> for SlidingTtl {
    fn expire_after_create(&self, _: &(String, String), e: &Entry, _: Instant) -> Option<Duration> {
        Some(e.ttl)
    }

    fn expire_after_update(
        &self,
        _: &(String, String),
        e: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(e.ttl)
    }

    /// A hit slides the TTL forward.
    fn expire_after_read(
        &self,
        _: &(String, String),
        e: &Entry,
        _: Instant,
        _: Option<Duration>,
        _: Instant,
    ) -> Option<Duration> {
        Some(e.ttl)
    }
}

/// The agent result cache of the in-process tier.
pub(super) struct AgentResults {
    entries: Cache<(String, String), Entry>,
    /// Per agent: what has been recorded.
    stats: Mutex<HashMap<String, AgentTotals>>,
    /// Leases on missing results: token and expiry.
    leases: Mutex<HashMap<(String, String), (String, Instant)>>,
}

/// The leases, locked.
type LeasesGuard<'a> = MutexGuard<'a, HashMap<(String, String), (String, Instant)>>;

impl AgentResults {
    /// Removes the lease on `key` if `token` holds it and it has not lapsed; then the leases,
    /// still locked, so the caller can finish what taking it was for.
    fn take_lease(&self, key: &(String, String), token: &str) -> Option<LeasesGuard<'_>> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        match leases.get(key) {
            Some((held, until)) if held == token && *until > Instant::now() => {
                leases.remove(key);
                Some(leases)
            }
            _ => None,
        }
    }

    /// Entries cached (after the cache's pending bookkeeping: its counts lag writes).
    pub(super) fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Their weighted size (bytes).
    pub(super) fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    pub(super) fn new() -> Self {
        AgentResults {
            entries: Cache::builder()
                .max_capacity(MAX_BYTES)
                .weigher(|(agent, hash): &(String, String), e: &Entry| e.result.weight(agent, hash))
                .expire_after(SlidingTtl)
                .build(),
            stats: Mutex::default(),
            leases: Mutex::default(),
        }
    }
}

impl MemoryHot {
    /// A cached result with its agent's TTL.
    fn agent_entry(&self, agent: &str, result: &CachedResult) -> Entry {
        Entry {
            result: Arc::new(result.clone()),
            ttl: Duration::from_secs(self.ttls.agent_cache(agent)),
        }
    }
}

#[async_trait]
impl AgentCacheHot for MemoryHot {
    async fn get_result(&self, agent: &str, hash: &str) -> HotResult<Option<CachedResult>> {
        // Reading slides the entry's TTL (`SlidingTtl::expire_after_read`), as GETEX does.
        let key = (agent.to_string(), hash.to_string());
        Ok(self
            .agent_results
            .entries
            .get(&key)
            .map(|e| CachedResult::clone(&e.result)))
    }

    async fn get_or_lease(
        &self,
        agent: &str,
        hash: &str,
        token: &str,
        lease_ms: u64,
    ) -> HotResult<LeasedLookup> {
        if let Some(hit) = self.get_result(agent, hash).await? {
            return Ok(LeasedLookup::Hit(hit));
        }
        let key = (agent.to_string(), hash.to_string());
        let now = Instant::now();
        let mut leases = self
            .agent_results
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        leases.retain(|_, (_, until)| *until > now);
        if leases.contains_key(&key) {
            return Ok(LeasedLookup::Held);
        }
        // A store may have landed between the lookup and the lock: it released no lease, so
        // check once more under it.
        if let Some(e) = self.agent_results.entries.get(&key) {
            return Ok(LeasedLookup::Hit(CachedResult::clone(&e.result)));
        }
        leases.insert(
            key,
            (token.to_string(), now + Duration::from_millis(lease_ms)),
        );
        Ok(LeasedLookup::Leased)
    }

    async fn put_leased(
        &self,
        agent: &str,
        hash: &str,
        result: &CachedResult,
        token: &str,
    ) -> HotResult<bool> {
        let key = (agent.to_string(), hash.to_string());
        // The entry goes in before the leases' lock is let go: a lookup never finds neither.
        let Some(_leases) = self.agent_results.take_lease(&key, token) else {
            return Ok(false);
        };
        self.agent_results
            .entries
            .insert(key, self.agent_entry(agent, result));
        Ok(true)
    }

    async fn release_lease(&self, agent: &str, hash: &str, token: &str) -> HotResult<bool> {
        let key = (agent.to_string(), hash.to_string());
        Ok(self.agent_results.take_lease(&key, token).is_some())
    }

    async fn put_result(&self, agent: &str, hash: &str, result: &CachedResult) -> HotResult<()> {
        self.agent_results.entries.insert(
            (agent.to_string(), hash.to_string()),
            self.agent_entry(agent, result),
        );
        Ok(())
    }

    async fn record_counts(
        &self,
        counts: &[(String, CacheCounts, Option<OffsetDateTime>)],
    ) -> HotResult<()> {
        let mut stats = self
            .agent_results
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (agent, c, last) in counts {
            let totals = stats.entry(agent.clone()).or_default();
            totals.counts.add(c);
            totals.total_cached += c.set;
            if last.is_some() {
                totals.last_cached = *last;
            }
        }
        Ok(())
    }

    async fn cache_stats(&self, agent: &str) -> HotResult<AgentTotals> {
        let stats = self
            .agent_results
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Ok(stats.get(agent).copied().unwrap_or_default())
    }

    async fn invalidate_results(&self, agent: &str, pattern: Option<&str>) -> HotResult<u64> {
        let pattern = pattern.unwrap_or("*");
        let doomed: Vec<(String, String)> = self
            .agent_results
            .entries
            .iter()
            .filter(|(k, _)| k.0 == agent && hash_matches(pattern, &k.1))
            .map(|(k, _)| (*k).clone())
            .collect();
        let mut deleted = 0;
        for key in doomed {
            if self.agent_results.entries.remove(&key).is_some() {
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}
