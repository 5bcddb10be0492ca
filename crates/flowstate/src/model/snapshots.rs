//! Snapshots of a flow's state (reference §1.3 `save_state_snapshot`), with lineage: each
//! records the snapshot the flow's state descended from, so a flow's history is a chain that
//! can be restored or forked. The newest [`KEEP_SNAPSHOTS`] per flow are kept.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::documents::Owner;

/// The snapshot id that would collide with the list key `flow:snapshots:{id}:list`.
pub const RESERVED_SNAPSHOT_ID: &str = "list";

/// Snapshots kept per flow (the reference's `LTRIM 0 9`).
pub const KEEP_SNAPSHOTS: u32 = 10;

/// A stored snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Snapshot {
    /// The flow it belongs to.
    pub flow_id: String,
    /// Its id (given, or a generated UUIDv7).
    pub snapshot_id: String,
    /// The snapshot the flow's state descended from when this one was taken.
    pub parent_snapshot_id: Option<String>,
    /// The state captured.
    #[schema(value_type = Object)]
    pub state: Map<String, Value>,
    /// When it was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What a caller supplies to fork a flow from a snapshot.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    /// Id of the new flow (generated when absent).
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub flow_id: Option<String>,
    /// Type of the new flow (the source flow's when absent).
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub flow_type: Option<String>,
}

/// A snapshot just taken.
#[derive(Debug, Clone, PartialEq)]
pub struct TakenSnapshot {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Ids of the older snapshots dropped to keep the newest few.
    pub evicted: Vec<String>,
    /// Its flow.
    pub owner: Owner,
}
