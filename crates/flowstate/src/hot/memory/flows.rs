//! Flow records in memory, ordered by (incarnation, version), with tombstones of deleted flows.
//! (Registry, hierarchy and history are the ledger's, local in the embedded setup.)

use async_trait::async_trait;
use moka::ops::compute::Op;

use super::{Entry, MemoryHot};
use crate::hot::{CachedFlow, FlowHot, HotResult, TOMBSTONE_TTL};
use crate::model::events::Event;
use crate::model::{DeletedFlow, DocKind, Flow, Transition};

#[async_trait]
impl FlowHot for MemoryHot {
    async fn register_flow(&self, flow: &Flow, events: &[Event]) -> HotResult<()> {
        self.put_flow(flow);
        self.publish(events);
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

    async fn record_transition(
        &self,
        flow: &Flow,
        _transition: &Transition,
        events: &[Event],
    ) -> HotResult<()> {
        self.put_flow(flow);
        self.publish(events);
        Ok(())
    }

    async fn remove_flows(&self, flows: &[DeletedFlow], events: &[Event]) -> HotResult<()> {
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
        // FLOW_DELETED keeps the event streams as long as the tombstones.
        self.publish(events);
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
}
