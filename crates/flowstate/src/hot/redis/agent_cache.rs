//! The agent result cache on Redis. An entry is a string at `agent:results:<agent>:<hash>`
//! holding the value envelope (zstd above 256 B); a lookup is one `GETEX … EX ttl`, which
//! slides the TTL on a hit; a store is one `SET … EX ttl`. Counters never touch the request
//! path: the service flushes them in batches, one pipeline of `HINCRBY`s into
//! `metrics:agent_cache:<agent>` and `agent:meta:<agent>` (the reference's keys). Being a pure
//! cache, a store that fails is dropped, not recorded for invalidation.

use std::sync::LazyLock;

use ::redis::Script;
use async_trait::async_trait;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::RedisHot;
use crate::hot::{AgentCacheHot, HotError, HotResult, codec};
use crate::model::agent_cache::{AgentTotals, CacheCounts, CachedResult, LeasedLookup};

const LOOKUP_OR_LEASE_SRC: &str = include_str!("scripts/cache_lookup_or_lease.lua");
const PUT_LEASED_SRC: &str = include_str!("scripts/cache_put_leased.lua");
const RELEASE_LEASE_SRC: &str = include_str!("scripts/cache_release_lease.lua");
/// This capability's scripts, loaded at startup.
pub(super) const SCRIPTS: &[&str] = &[LOOKUP_OR_LEASE_SRC, PUT_LEASED_SRC, RELEASE_LEASE_SRC];
static LOOKUP_OR_LEASE: LazyLock<Script> = LazyLock::new(|| Script::new(LOOKUP_OR_LEASE_SRC));
static PUT_LEASED: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_LEASED_SRC));
static RELEASE_LEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_LEASE_SRC));

/// Keys found by one SCAN step, and unlinked together.
const SCAN_COUNT: usize = 1000;

#[async_trait]
impl AgentCacheHot for RedisHot {
    async fn get_result(&self, agent: &str, hash: &str) -> HotResult<Option<CachedResult>> {
        let ttl_secs = self.ttls.agent_cache(agent);
        let key = self.keys.agent_result(agent, hash);
        let value: Option<Vec<u8>> = self
            .core
            .read(::redis::cmd("GETEX").arg(&key).arg("EX").arg(ttl_secs))
            .await?;
        let Some(value) = value else {
            return Ok(None);
        };
        let (_, result): (i64, CachedResult) = match codec::decode(&self.signer, &key, &value) {
            Ok(decoded) => decoded,
            Err(e) => return Err(self.undecodable(key, e).await),
        };
        Ok(Some(result))
    }

    async fn get_or_lease(
        &self,
        agent: &str,
        hash: &str,
        token: &str,
        lease_ms: u64,
    ) -> HotResult<LeasedLookup> {
        let ttl_secs = self.ttls.agent_cache(agent);
        let key = self.keys.agent_result(agent, hash);
        let mut pipe = ::redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(LOOKUP_OR_LEASE.get_hash())
            .arg(2)
            .arg(&key)
            .arg(self.keys.agent_lease(agent, hash))
            .arg(ttl_secs)
            .arg(token)
            .arg(lease_ms);
        let ((outcome, value),): ((i64, Option<Vec<u8>>),) = self
            .core
            .read_pipeline(&pipe, &[LOOKUP_OR_LEASE_SRC])
            .await?;
        Ok(match (outcome, value) {
            (1, Some(value)) => {
                let (_, result): (i64, CachedResult) =
                    match codec::decode(&self.signer, &key, &value) {
                        Ok(decoded) => decoded,
                        Err(e) => return Err(self.undecodable(key, e).await),
                    };
                LeasedLookup::Hit(result)
            }
            (2, _) => LeasedLookup::Leased,
            _ => LeasedLookup::Held,
        })
    }

    async fn put_leased(
        &self,
        agent: &str,
        hash: &str,
        result: &CachedResult,
        token: &str,
    ) -> HotResult<bool> {
        let ttl_secs = self.ttls.agent_cache(agent);
        let key = self.keys.agent_result(agent, hash);
        let value =
            codec::encode(&self.signer, &key, 0, result).map_err(|reason| HotError::Corrupt {
                key: key.clone(),
                reason,
            })?;
        let mut pipe = ::redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(PUT_LEASED.get_hash())
            .arg(2)
            .arg(&key)
            .arg(self.keys.agent_lease(agent, hash))
            .arg(value)
            .arg(ttl_secs)
            .arg(token);
        let (stored,): (i64,) = self.core.read_pipeline(&pipe, &[PUT_LEASED_SRC]).await?;
        Ok(stored == 1)
    }

    async fn release_lease(&self, agent: &str, hash: &str, token: &str) -> HotResult<bool> {
        let mut pipe = ::redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(RELEASE_LEASE.get_hash())
            .arg(1)
            .arg(self.keys.agent_lease(agent, hash))
            .arg(token);
        let (released,): (i64,) = self.core.read_pipeline(&pipe, &[RELEASE_LEASE_SRC]).await?;
        Ok(released == 1)
    }

    async fn put_result(&self, agent: &str, hash: &str, result: &CachedResult) -> HotResult<()> {
        let ttl_secs = self.ttls.agent_cache(agent);
        let key = self.keys.agent_result(agent, hash);
        // Entries never change in place: the envelope's version is unused.
        let value =
            codec::encode(&self.signer, &key, 0, result).map_err(|reason| HotError::Corrupt {
                key: key.clone(),
                reason,
            })?;
        let mut pipe = ::redis::pipe();
        pipe.set_ex(&key, value, ttl_secs).ignore();
        self.core.fill(&pipe, &[]).await
    }

    async fn record_counts(
        &self,
        counts: &[(String, CacheCounts, Option<OffsetDateTime>)],
    ) -> HotResult<()> {
        let mut pipe = ::redis::pipe();
        let metrics_ttl = self.ttls.metrics() as i64;
        for (agent, c, last_cached) in counts {
            let metrics = self.keys.agent_cache_metrics(agent);
            for (field, n) in [
                ("hit", c.hit),
                ("miss", c.miss),
                ("set", c.set),
                ("error", c.error),
            ] {
                if n > 0 {
                    pipe.hincr(&metrics, field, n).ignore();
                }
            }
            pipe.expire(&metrics, metrics_ttl).ignore();
            if c.set > 0 {
                let meta = self.keys.agent_meta(agent);
                pipe.hincr(&meta, "total_cached", c.set).ignore();
                if let Some(at) = last_cached {
                    pipe.hset(
                        &meta,
                        "last_cached",
                        at.format(&Rfc3339).unwrap_or_default(),
                    )
                    .ignore();
                }
            }
        }
        self.core.fill(&pipe, &[]).await
    }

    async fn cache_stats(&self, agent: &str) -> HotResult<AgentTotals> {
        let mut pipe = ::redis::pipe();
        pipe.hgetall(self.keys.agent_cache_metrics(agent))
            .hgetall(self.keys.agent_meta(agent));
        let (metrics, meta): (
            std::collections::HashMap<String, u64>,
            std::collections::HashMap<String, String>,
        ) = self.core.read_pipeline(&pipe, &[]).await?;
        let get = |f: &str| metrics.get(f).copied().unwrap_or(0);
        let counts = CacheCounts {
            hit: get("hit"),
            miss: get("miss"),
            set: get("set"),
            error: get("error"),
        };
        let total = meta
            .get("total_cached")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let last = meta
            .get("last_cached")
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
        Ok(AgentTotals {
            counts,
            total_cached: total,
            last_cached: last,
        })
    }

    async fn invalidate_results(&self, agent: &str, pattern: Option<&str>) -> HotResult<u64> {
        let pattern = self.keys.agent_results_glob(agent, pattern.unwrap_or("*"));
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .core
                .read(
                    ::redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT),
                )
                .await?;
            if !keys.is_empty() {
                let unlinked: u64 = self.core.read(::redis::cmd("UNLINK").arg(&keys)).await?;
                deleted += unlinked;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}
