//! The embedded hot tier: an in-process cache of flow records and documents (moka, TinyLFU with
//! per-entry TTL), so a single `flowstate serve` needs no Redis at all.
//!
//! It holds only what a reader on this instance can use: flow records and documents. Registry,
//! hierarchy, transition history and document listings are served by the ledger, which is local
//! in the embedded setup.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::ops::compute::Op;
use moka::sync::Cache;

use super::{CachedFlow, FlowKeys, HotResult, HotStats, HotTier, TOMBSTONE_TTL};
use crate::documents::{DocKind, Document, Owner};
use crate::flows::Flow;
use crate::keys::Keys;
use crate::ledger::DeletedFlow;
use crate::snapshots::Snapshot;
use crate::transitions::Transition;
use crate::ttl::Ttls;

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
            documents: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(EntryTtl)
                .build(),
            snapshots: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(EntryTtl)
                .build(),
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

    async fn register_flow(&self, flow: &Flow) -> HotResult<()> {
        self.put_flow(flow);
        Ok(())
    }

    async fn cache_flow(&self, flow: &Flow) -> HotResult<()> {
        self.put_flow(flow);
        Ok(())
    }

    async fn get_flow(&self, flow_id: &str) -> HotResult<CachedFlow> {
        Ok(match self.flows.get(flow_id) {
            None => CachedFlow::Missing,
            Some(Entry { value: None, .. }) => CachedFlow::Deleted,
            Some(Entry {
                value: Some(flow), ..
            }) => CachedFlow::Present(Flow::clone(&flow)),
        })
    }

    async fn record_transition(&self, flow: &Flow, _transition: &Transition) -> HotResult<()> {
        self.put_flow(flow);
        Ok(())
    }

    async fn remove_flows(&self, flows: &[DeletedFlow]) -> HotResult<()> {
        for deleted in flows {
            let id = &deleted.flow.flow_id;
            let tombstone = Entry {
                incarnation: deleted.flow.incarnation,
                version: i64::MAX,
                value: None,
                ttl: TOMBSTONE_TTL,
            };
            self.with_flow(id, |current| {
                // Even when the id has been registered again since, these entries may hold the
                // deleted flow's data; dropping the new flow's only costs a ledger read.
                for (kind, name) in &deleted.documents {
                    self.documents
                        .invalidate(&(*kind, id.clone(), name.clone()));
                }
                for snapshot_id in &deleted.snapshots {
                    self.snapshots
                        .invalidate(&(id.clone(), snapshot_id.clone()));
                }
                match current {
                    // Registered again since: the record is the new flow's.
                    Some(cur) if cur.supersedes(&tombstone) => Op::Nop,
                    _ => Op::Put(tombstone),
                }
            });
        }
        Ok(())
    }

    async fn put_document(
        &self,
        kind: DocKind,
        doc: &Document,
        owner: &Owner,
        fresh: bool,
    ) -> HotResult<()> {
        let entry = Entry {
            incarnation: owner.incarnation,
            version: doc.version,
            value: Some(Arc::new(doc.clone())),
            ttl: Duration::from_secs(self.ttls.document(kind, &doc.name, &owner.status)),
        };
        self.with_flow(&doc.flow_id, |flow| {
            if flow.is_some_and(|f| f.ends(owner.incarnation)) {
                return Op::Nop;
            }
            let key = (kind, doc.flow_id.clone(), doc.name.clone());
            put(&self.documents, key, entry);
            if fresh && kind == DocKind::Phase {
                // A marker, not a removal: see `scripts/put_document.lua`.
                let key = (DocKind::State, doc.flow_id.clone(), String::new());
                self.documents
                    .entry(key)
                    .and_compute_with(|current| match current {
                        Some(cur) if cur.value().value.is_some() => Op::Put(Entry {
                            incarnation: cur.value().incarnation,
                            version: cur.value().version - 1,
                            value: None,
                            ttl: TOMBSTONE_TTL,
                        }),
                        _ => Op::Nop,
                    });
            }
            Op::Nop
        });
        Ok(())
    }

    async fn get_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
    ) -> HotResult<Option<Document>> {
        let key = (kind, flow_id.to_string(), name.to_string());
        Ok(self
            .documents
            .get(&key)
            .and_then(|e| e.value)
            .map(|d| Document::clone(&d)))
    }

    async fn put_snapshot(
        &self,
        snapshot: &Snapshot,
        evicted: &[String],
        owner: &Owner,
        _fresh: bool,
    ) -> HotResult<()> {
        // Snapshots never change: a write simply replaces.
        let entry = Entry {
            incarnation: owner.incarnation,
            version: 0,
            value: Some(Arc::new(snapshot.clone())),
            ttl: Duration::from_secs(self.ttls.snapshots()),
        };
        self.with_flow(&snapshot.flow_id, |flow| {
            if flow.is_some_and(|f| f.ends(owner.incarnation)) {
                return Op::Nop;
            }
            let key = (snapshot.flow_id.clone(), snapshot.snapshot_id.clone());
            self.snapshots.insert(key, entry);
            for id in evicted {
                self.snapshots
                    .invalidate(&(snapshot.flow_id.clone(), id.clone()));
            }
            Op::Nop
        });
        Ok(())
    }

    async fn get_snapshot(&self, flow_id: &str, snapshot_id: &str) -> HotResult<Option<Snapshot>> {
        let key = (flow_id.to_string(), snapshot_id.to_string());
        Ok(self
            .snapshots
            .get(&key)
            .and_then(|e| e.value)
            .map(|s| Snapshot::clone(&s)))
    }

    /// The embedded tier keeps no event stream yet: in-process delivery to subscribers comes
    /// with the event bus (DESIGN §4), which will also back events with the ledger outbox.
    async fn append_event(
        &self,
        _flow_id: &str,
        _event_type: &str,
        _payload: &serde_json::Value,
    ) -> HotResult<()> {
        Ok(())
    }

    async fn forget(&self, flow_id: &str, document: Option<(DocKind, &str)>) -> HotResult<()> {
        // A tombstone stays: it still keeps late writes about the deleted flow out.
        self.with_flow(flow_id, |current| match current {
            Some(cur) if cur.value.is_none() => Op::Nop,
            Some(_) => Op::Remove,
            None => Op::Nop,
        });
        if let Some((kind, name)) = document {
            self.documents
                .invalidate(&(kind, flow_id.to_string(), name.to_string()));
        }
        Ok(())
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

/// Bytes of a value's JSON encoding (0 if it cannot be encoded).
fn json_len<T: serde::Serialize>(value: &T) -> u64 {
    serde_json::to_vec(value).map_or(0, |v| v.len() as u64)
}
