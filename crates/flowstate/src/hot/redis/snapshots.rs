//! Snapshots on Redis: one script per write (`scripts/put_snapshot.lua`: refused once the
//! flow's incarnation ended; a new snapshot is pushed on the flow's list, trimmed to the newest
//! ten), one GET per read.

use std::sync::LazyLock;

use ::redis::Script;
use async_trait::async_trait;

use super::{RedisHot, lua};
use crate::hot::{HotError, HotResult, SnapshotHot, codec};
use crate::model::snapshots::KEEP_SNAPSHOTS;
use crate::model::{Owner, Snapshot};

const PUT_SNAPSHOT_SRC: &str = lua!("put_snapshot.lua");
/// This capability's scripts, loaded at startup.
pub(super) const SCRIPTS: &[&str] = &[PUT_SNAPSHOT_SRC];
static PUT_SNAPSHOT: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_SNAPSHOT_SRC));

#[async_trait]
impl SnapshotHot for RedisHot {
    async fn put_snapshot(
        &self,
        snapshot: &Snapshot,
        evicted: &[String],
        owner: &Owner,
        fresh: bool,
    ) -> HotResult<()> {
        let id = &snapshot.flow_id;
        let key = self.keys.snapshot(id, &snapshot.snapshot_id);
        // Snapshots never change: the envelope's version is unused.
        let value =
            codec::encode(&self.signer, &key, 0, snapshot).map_err(|reason| HotError::Corrupt {
                key: key.clone(),
                reason,
            })?;
        let list = self.keys.snapshot_list(id);
        let gone: Vec<String> = evicted
            .iter()
            .filter(|_| fresh)
            .map(|sid| self.keys.snapshot(id, sid))
            .collect();
        let mut pipe = ::redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(PUT_SNAPSHOT.get_hash())
            .arg(3 + gone.len())
            .arg(self.keys.flow(id))
            .arg(&key)
            .arg(if fresh { &list } else { &key })
            .arg(&gone)
            .arg(owner.incarnation)
            .arg(value)
            .arg(self.ttls.snapshots())
            .arg(if fresh {
                snapshot.snapshot_id.as_str()
            } else {
                ""
            })
            .arg(KEEP_SNAPSHOTS)
            .ignore();
        if !fresh {
            return self.core.fill(&pipe, &[PUT_SNAPSHOT_SRC]).await;
        }
        let mut dirty = vec![key, list];
        dirty.extend(gone);
        self.core.write(&pipe, &[PUT_SNAPSHOT_SRC], dirty).await
    }

    async fn get_snapshot(&self, flow_id: &str, snapshot_id: &str) -> HotResult<Option<Snapshot>> {
        let key = self.keys.snapshot(flow_id, snapshot_id);
        let value: Option<Vec<u8>> = self.core.read(::redis::cmd("GET").arg(&key)).await?;
        let Some(value) = value else {
            return Ok(None);
        };
        let (_, snapshot): (i64, Snapshot) = match codec::decode(&self.signer, &key, &value) {
            Ok(decoded) => decoded,
            Err(e) => return Err(self.undecodable(key, e).await),
        };
        Ok(Some(snapshot))
    }
}
