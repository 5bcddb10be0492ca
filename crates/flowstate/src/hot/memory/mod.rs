//! The embedded hot tier: an in-process cache of flow records and documents (moka, TinyLFU with
//! per-entry TTL), event streams and the SSE connection registry, so a single
//! `flowstate serve` needs no Redis at all.
//!
//! It holds only what a reader on this instance can use: flow records, documents, events.
//! Registry, hierarchy, transition history and document listings are served by the ledger,
//! which is local in the embedded setup.

mod agent_cache;
mod connections;
mod documents;
mod events;
mod flows;
mod locks;
mod monitor;
mod snapshots;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::ops::compute::Op;
use moka::sync::Cache;

use super::fanout::{Hub, LockHub};
use super::keys::Keys;
use super::ttl::Ttls;
use super::{FlowKeys, HotResult, HotStats, HotTier};
use crate::config::EventsConfig;
use crate::model::{DocKind, Document, Flow, Snapshot};

/// Entries kept at most; the least useful are evicted first.
const MAX_ENTRIES: u64 = 100_000;

struct Entry<T> {
    /// The flow's incarnation (see [`Flow::incarnation`]); entries are ordered by
    /// (incarnation, version).
    incarnation: i64,
    version: i64,
    /// `None` is a tombstone (or, for a state, an invalidation marker).
    value: Option<Arc<T>>,
    ttl: Duration,
}

impl<T> Entry<T> {
    /// Whether this entry is `other` or a later write.
    fn supersedes(&self, other: &Entry<T>) -> bool {
        (self.incarnation, self.version) >= (other.incarnation, other.version)
    }

    /// Whether this flow entry says that the flow's incarnation `incarnation` has ended:
    /// deleted, or registered again since.
    fn ends(&self, incarnation: i64) -> bool {
        self.incarnation > incarnation || (self.value.is_none() && self.incarnation >= incarnation)
    }
}

// Not derived: cloning shares the `Arc`, so `T` itself need not be `Clone`.
impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
            incarnation: self.incarnation,
            version: self.version,
            value: self.value.clone(),
            ttl: self.ttl,
        }
    }
}

struct EntryTtl;

impl<K, T> moka::Expiry<K, Entry<T>> for EntryTtl {
    fn expire_after_create(&self, _: &K, entry: &Entry<T>, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _: &K,
        entry: &Entry<T>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

type DocKey = (DocKind, String, String);

/// Stores `entry` under `key` unless the cache holds it or a later write.
fn put<K, T>(cache: &Cache<K, Entry<T>>, key: K, entry: Entry<T>)
where
    K: std::hash::Hash + Eq + Send + Sync + Clone + 'static,
    T: Send + Sync + 'static,
{
    cache.entry(key).and_compute_with(|current| match current {
        Some(cur) if cur.value().supersedes(&entry) => Op::Nop,
        _ => Op::Put(entry),
    });
}

/// In-process hot tier.
pub struct MemoryHot {
    flows: Cache<String, Entry<Flow>>,
    documents: Cache<DocKey, Entry<Document>>,
    snapshots: Cache<(String, String), Entry<Snapshot>>,
    agent_results: agent_cache::AgentResults,
    streams: events::Streams,
    hub: Arc<Hub>,
    lock_hub: Arc<LockHub>,
    connections: connections::Registry,
    ttls: Ttls,
}

impl MemoryHot {
    /// An empty cache using `ttls` for entry lifetimes.
    pub fn new(ttls: Ttls, events: &EventsConfig) -> Self {
        MemoryHot {
            flows: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(EntryTtl)
                .build(),
            documents: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(EntryTtl)
                .build(),
            snapshots: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(EntryTtl)
                .build(),
            agent_results: agent_cache::AgentResults::new(),
            streams: events::Streams::new(events.maxlen, Duration::from_secs(ttls.events())),
            hub: Hub::new(events.buffer, None),
            lock_hub: LockHub::new(None),
            connections: connections::Registry::default(),
            ttls,
        }
    }

    fn put_flow(&self, flow: &Flow) {
        let entry = Entry {
            incarnation: flow.incarnation,
            version: flow.version,
            value: Some(Arc::new(flow.clone())),
            ttl: Duration::from_secs(self.ttls.flow()),
        };
        put(&self.flows, flow.flow_id.clone(), entry);
    }

    /// Runs `f` while no other write of `flow_id`'s record can run, with the record as cached.
    /// Deletes and document writes both go through here, so a document write cannot land
    /// between a delete's tombstone and its removal of the documents.
    fn with_flow(&self, flow_id: &str, f: impl FnOnce(Option<&Entry<Flow>>) -> Op<Entry<Flow>>) {
        self.flows
            .entry(flow_id.to_string())
            .and_compute_with(|current| f(current.as_ref().map(|c| c.value())));
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

    /// Approximates each cached value by the size of its JSON (there are no Redis keys here;
    /// the names follow the Redis layout so the answer reads the same on both tiers).
    async fn memory(&self, flow: &FlowKeys) -> HotResult<BTreeMap<String, u64>> {
        let keys = Keys::default();
        let id = &flow.flow_id;
        let mut out = BTreeMap::new();
        if let Some(Entry { value: Some(f), .. }) = self.flows.get(id) {
            out.insert(keys.flow(id), json_len(&*f));
        }
        let docs = std::iter::once((DocKind::State, String::new()))
            .chain(flow.phases.iter().map(|p| (DocKind::Phase, p.clone())))
            .chain(flow.agents.iter().map(|a| (DocKind::Agent, a.clone())));
        for (kind, name) in docs {
            if let Some(Entry { value: Some(d), .. }) =
                self.documents.get(&(kind, id.clone(), name.clone()))
            {
                out.insert(keys.document(kind, id, &name), json_len(&*d));
            }
        }
        if let Some(bytes) = self.streams.bytes(id) {
            out.insert(keys.events(id), bytes);
        }
        for sid in &flow.snapshots {
            if let Some(Entry { value: Some(s), .. }) =
                self.snapshots.get(&(id.clone(), sid.clone()))
            {
                out.insert(keys.snapshot(id, sid), json_len(&*s));
            }
        }
        Ok(out)
    }
}

impl MemoryHot {
    /// Cached entries, and the bytes of the cached agent results (the one cache bounded by
    /// size; the others are bounded by count).
    fn footprint(&self) -> (u64, u64) {
        // moka counts lag writes until its pending bookkeeping runs: run it first (once a
        // health check, not on any request path).
        self.flows.run_pending_tasks();
        self.documents.run_pending_tasks();
        self.snapshots.run_pending_tasks();
        let entries = self.flows.entry_count()
            + self.documents.entry_count()
            + self.snapshots.entry_count()
            + self.agent_results.entry_count();
        (entries, self.agent_results.weighted_size())
    }
}

/// Bytes of a value's JSON encoding (0 if it cannot be encoded).
fn json_len<T: serde::Serialize>(value: &T) -> u64 {
    serde_json::to_vec(value).map_or(0, |v| v.len() as u64)
}
