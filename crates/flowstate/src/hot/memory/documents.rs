//! Documents in memory: version-guarded, refused once their flow's incarnation ended; a phase
//! write leaves an invalidation marker on the flow's cached state.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::ops::compute::Op;

use super::{Entry, MemoryHot, put};
use crate::hot::{DocumentHot, HotResult, TOMBSTONE_TTL};
use crate::model::events::Event;
use crate::model::{DocKind, Document, Owner};

#[async_trait]
impl DocumentHot for MemoryHot {
    async fn put_document(
        &self,
        kind: DocKind,
        doc: &Document,
        owner: &Owner,
        fresh: bool,
        events: &[Event],
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
                // A marker, not a removal: see `hot/redis/scripts/put_document.lua`.
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
        if fresh {
            self.publish(events);
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
}
