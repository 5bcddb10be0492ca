//! The embedded hot tier: an in-process cache of flow records (moka, TinyLFU with per-entry
//! TTL), so a single `flowstate serve` needs no Redis at all.
//!
//! It holds only what a reader on this instance can use: the flow records. Registry, hierarchy
//! and transition history are served by the ledger, which is local in the embedded setup.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::ops::compute::Op;
use moka::sync::Cache;

use super::{CachedFlow, HotResult, HotStats, HotTier, TOMBSTONE_TTL};
use crate::flows::Flow;
use crate::transitions::Transition;
use crate::ttl::Ttls;

/// Entries kept at most; the least useful are evicted first.
const MAX_ENTRIES: u64 = 100_000;

#[derive(Clone)]
struct Entry {
    version: i64,
    /// `None` is a tombstone.
    flow: Option<Arc<Flow>>,
    ttl: Duration,
}

struct EntryTtl;

impl moka::Expiry<String, Entry> for EntryTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// In-process hot tier.
pub struct MemoryHot {
    flows: Cache<String, Entry>,
    ttls: Ttls,
}

impl MemoryHot {
    /// An empty cache using `ttls` for entry lifetimes.
    pub fn new(ttls: Ttls) -> Self {
        MemoryHot {
            flows: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(EntryTtl)
                .build(),
            ttls,
        }
    }

    /// Stores `entry` unless a newer or equal version is cached (`force` stores regardless).
    fn put(&self, flow_id: &str, entry: Entry, force: bool) {
        self.flows
            .entry(flow_id.to_string())
            .and_compute_with(|current| match current {
                Some(cur) if !force && cur.value().version >= entry.version => Op::Nop,
                _ => Op::Put(entry),
            });
    }

    fn entry_for(&self, flow: &Flow) -> Entry {
        Entry {
            version: flow.version,
            flow: Some(Arc::new(flow.clone())),
            ttl: Duration::from_secs(self.ttls.flow()),
        }
    }
}

#[async_trait]
impl HotTier for MemoryHot {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> HotResult<Duration> {
        Ok(Duration::ZERO)
    }

    fn stats(&self) -> HotStats {
        HotStats::default()
    }

    async fn register_flow(&self, flow: &Flow) -> HotResult<()> {
        self.put(&flow.flow_id, self.entry_for(flow), true);
        Ok(())
    }

    async fn cache_flow(&self, flow: &Flow) -> HotResult<()> {
        self.put(&flow.flow_id, self.entry_for(flow), false);
        Ok(())
    }

    async fn get_flow(&self, flow_id: &str) -> HotResult<CachedFlow> {
        Ok(match self.flows.get(flow_id) {
            None => CachedFlow::Missing,
            Some(Entry { flow: None, .. }) => CachedFlow::Deleted,
            Some(Entry {
                flow: Some(flow), ..
            }) => CachedFlow::Present(Flow::clone(&flow)),
        })
    }

    async fn record_transition(&self, flow: &Flow, _transition: &Transition) -> HotResult<()> {
        self.put(&flow.flow_id, self.entry_for(flow), false);
        Ok(())
    }

    async fn remove_flows(&self, flows: &[Flow]) -> HotResult<()> {
        for flow in flows {
            let tombstone = Entry {
                version: i64::MAX,
                flow: None,
                ttl: TOMBSTONE_TTL,
            };
            self.put(&flow.flow_id, tombstone, true);
        }
        Ok(())
    }
}
