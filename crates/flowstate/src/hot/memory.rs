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
use crate::documents::{DocKind, Document};
use crate::flows::Flow;
use crate::keys::Keys;
use crate::ledger::DeletedFlow;
use crate::snapshots::Snapshot;
use crate::transitions::Transition;
use crate::ttl::Ttls;

/// Entries kept at most; the least useful are evicted first.
const MAX_ENTRIES: u64 = 100_000;

struct Entry<T> {
    version: i64,
    /// `None` is a tombstone.
    value: Option<Arc<T>>,
    ttl: Duration,
}

// Not derived: cloning shares the `Arc`, so `T` itself need not be `Clone`.
impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
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

/// Stores `entry` under `key` unless a newer or equal version is cached; `force` also replaces a
/// tombstone (and only a tombstone).
fn put<K, T>(cache: &Cache<K, Entry<T>>, key: K, entry: Entry<T>, force: bool)
where
    K: std::hash::Hash + Eq + Send + Sync + Clone + 'static,
    T: Send + Sync + 'static,
{
    cache.entry(key).and_compute_with(|current| match current {
        Some(cur)
            if !(force && cur.value().value.is_none()) && cur.value().version >= entry.version =>
        {
            Op::Nop
        }
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

    fn put_flow(&self, flow: &Flow, force: bool) {
        let entry = Entry {
            version: flow.version,
            value: Some(Arc::new(flow.clone())),
            ttl: Duration::from_secs(self.ttls.flow()),
        };
        put(&self.flows, flow.flow_id.clone(), entry, force);
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
        self.put_flow(flow, true);
        Ok(())
    }

    async fn cache_flow(&self, flow: &Flow) -> HotResult<()> {
        self.put_flow(flow, false);
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
        self.put_flow(flow, false);
        Ok(())
    }

    async fn remove_flows(&self, flows: &[DeletedFlow]) -> HotResult<()> {
        for deleted in flows {
            let id = &deleted.flow.flow_id;
            let tombstone = Entry {
                version: i64::MAX,
                value: None,
                ttl: TOMBSTONE_TTL,
            };
            put(&self.flows, id.clone(), tombstone, true);
            for (kind, name) in &deleted.documents {
                self.documents
                    .invalidate(&(*kind, id.clone(), name.clone()));
            }
            for snapshot_id in &deleted.snapshots {
                self.snapshots
                    .invalidate(&(id.clone(), snapshot_id.clone()));
            }
        }
        Ok(())
    }

    async fn put_document(
        &self,
        kind: DocKind,
        doc: &Document,
        flow_status: &str,
        fresh: bool,
    ) -> HotResult<()> {
        let entry = Entry {
            version: doc.version,
            value: Some(Arc::new(doc.clone())),
            ttl: Duration::from_secs(self.ttls.document(kind, &doc.name, flow_status)),
        };
        let key = (kind, doc.flow_id.clone(), doc.name.clone());
        put(&self.documents, key, entry, false);
        if fresh && kind == DocKind::Phase {
            // A marker, not a removal: see `scripts/put_document.lua`.
            let key = (DocKind::State, doc.flow_id.clone(), String::new());
            self.documents
                .entry(key)
                .and_compute_with(|current| match current {
                    Some(cur) if cur.value().value.is_some() => Op::Put(Entry {
                        version: cur.value().version - 1,
                        value: None,
                        ttl: TOMBSTONE_TTL,
                    }),
                    _ => Op::Nop,
                });
        }
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
        _fresh: bool,
    ) -> HotResult<()> {
        let entry = Entry {
            version: 0,
            value: Some(Arc::new(snapshot.clone())),
            ttl: Duration::from_secs(self.ttls.snapshots()),
        };
        let key = (snapshot.flow_id.clone(), snapshot.snapshot_id.clone());
        put(&self.snapshots, key, entry, true);
        for id in evicted {
            self.snapshots
                .invalidate(&(snapshot.flow_id.clone(), id.clone()));
        }
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
        self.flows.invalidate(flow_id);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TtlConfig;

    fn flow(version: i64, status: &str) -> Flow {
        let at = crate::flows::now();
        Flow {
            flow_id: "f".into(),
            flow_type: "t".into(),
            parent_flow_id: None,
            status: status.into(),
            metadata: Default::default(),
            created_at: at,
            updated_at: at,
            version,
        }
    }

    fn deleted(f: &Flow) -> DeletedFlow {
        DeletedFlow {
            flow: f.clone(),
            documents: Vec::new(),
            snapshots: Vec::new(),
        }
    }

    async fn cached_status(hot: &MemoryHot) -> Option<String> {
        match hot.get_flow("f").await.unwrap() {
            CachedFlow::Present(f) => Some(f.status),
            CachedFlow::Deleted => Some("<deleted>".into()),
            CachedFlow::Missing => None,
        }
    }

    #[tokio::test]
    async fn older_versions_never_replace_newer_ones_and_tombstones_hold() {
        let hot = MemoryHot::new(Ttls::new(TtlConfig::default()));
        hot.register_flow(&flow(1, "initializing")).await.unwrap();
        hot.record_transition(&flow(3, "done"), &recorded())
            .await
            .unwrap();
        // A slow fill or a late transition write carrying an older version loses.
        hot.cache_flow(&flow(2, "running")).await.unwrap();
        hot.record_transition(&flow(2, "running"), &recorded())
            .await
            .unwrap();
        assert_eq!(cached_status(&hot).await.as_deref(), Some("done"));
        // A slow registration of the same flow cannot roll it back either.
        hot.register_flow(&flow(1, "initializing")).await.unwrap();
        assert_eq!(cached_status(&hot).await.as_deref(), Some("done"));

        hot.remove_flows(&[deleted(&flow(3, "done"))])
            .await
            .unwrap();
        hot.cache_flow(&flow(3, "done")).await.unwrap();
        assert_eq!(
            cached_status(&hot).await.as_deref(),
            Some("<deleted>"),
            "a fill cannot revive it"
        );
        hot.register_flow(&flow(1, "initializing")).await.unwrap();
        assert_eq!(
            cached_status(&hot).await.as_deref(),
            Some("initializing"),
            "a new registration can"
        );
    }

    #[tokio::test]
    async fn a_phase_save_invalidates_the_state_without_letting_an_older_fill_in() {
        let hot = MemoryHot::new(Ttls::new(TtlConfig::default()));
        let doc = |kind_name: &str, version: i64| Document {
            flow_id: "f".into(),
            name: kind_name.into(),
            body: Default::default(),
            saved_at: crate::flows::now(),
            version,
        };
        hot.put_document(DocKind::State, &doc("", 5), "running", true)
            .await
            .unwrap();
        hot.put_document(DocKind::Phase, &doc("analysis", 1), "running", true)
            .await
            .unwrap();
        assert_eq!(
            hot.get_document(DocKind::State, "f", "").await.unwrap(),
            None,
            "invalidated"
        );
        hot.put_document(DocKind::State, &doc("", 4), "running", false)
            .await
            .unwrap();
        assert_eq!(
            hot.get_document(DocKind::State, "f", "").await.unwrap(),
            None,
            "older fill refused"
        );
        hot.put_document(DocKind::State, &doc("", 5), "running", false)
            .await
            .unwrap();
        let back = hot.get_document(DocKind::State, "f", "").await.unwrap();
        assert_eq!(
            back.map(|d| d.version),
            Some(5),
            "the current version fills again"
        );
    }

    fn recorded() -> Transition {
        Transition {
            id: 0,
            from: "a".into(),
            to: "b".into(),
            at: crate::flows::now(),
            metadata: Default::default(),
        }
    }
}
