//! Snapshots in memory, refused once their flow's incarnation ended.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::ops::compute::Op;

use super::{Entry, MemoryHot};
use crate::hot::{HotResult, SnapshotHot};
use crate::model::{Owner, Snapshot};

#[async_trait]
impl SnapshotHot for MemoryHot {
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
}
