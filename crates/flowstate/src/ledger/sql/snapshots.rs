//! SQL both ledgers share for snapshots.

use serde_json::{Map, Value};
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::model::{Owner, Snapshot, TakenSnapshot};

/// SQL of a snapshot read, with its flow (shared: `$n` placeholders work in SQLite too).
pub(in crate::ledger) const GET_SNAPSHOT: &str = "SELECT s.snapshot_id, s.parent_snapshot_id, s.state, s.created_at, \
     f.status, f.seq AS incarnation FROM flow_snapshots s JOIN flows f ON f.flow_id = s.flow_id \
     WHERE s.flow_id = $1 AND s.snapshot_id = $2";

/// A `flow_snapshots` row joined with its flow's status and registration number.
#[derive(sqlx::FromRow)]
pub(in crate::ledger) struct SnapshotRow {
    snapshot_id: String,
    parent_snapshot_id: Option<String>,
    state: Json<Map<String, Value>>,
    created_at: OffsetDateTime,
    status: String,
    incarnation: i64,
}

impl SnapshotRow {
    pub(in crate::ledger) fn into_snapshot(self, flow_id: &str) -> (Snapshot, Owner) {
        (
            Snapshot {
                flow_id: flow_id.to_string(),
                snapshot_id: self.snapshot_id,
                parent_snapshot_id: self.parent_snapshot_id,
                state: self.state.0,
                created_at: self.created_at,
            },
            Owner {
                status: self.status,
                incarnation: self.incarnation,
            },
        )
    }
}

/// The snapshot a write just stored (both backends return their writes this way).
pub(in crate::ledger) struct NewSnapshot<'a> {
    pub(in crate::ledger) flow_id: &'a str,
    pub(in crate::ledger) snapshot_id: &'a str,
    pub(in crate::ledger) parent: Option<String>,
    pub(in crate::ledger) state: &'a Map<String, Value>,
    pub(in crate::ledger) at: OffsetDateTime,
}

impl NewSnapshot<'_> {
    pub(in crate::ledger) fn taken(self, evicted: Vec<String>, owner: Owner) -> TakenSnapshot {
        TakenSnapshot {
            snapshot: Snapshot {
                flow_id: self.flow_id.to_string(),
                snapshot_id: self.snapshot_id.to_string(),
                parent_snapshot_id: self.parent,
                state: self.state.clone(),
                created_at: self.at,
            },
            evicted,
            owner,
        }
    }
}
