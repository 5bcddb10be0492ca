//! Flows (the reference's "orchestrator", §1.1): what a registered flow is, what a caller
//! supplies to register or list flows, and what a delete takes with it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::documents::DocKind;

/// Status every flow starts in.
pub const INITIAL_STATUS: &str = "initializing";

/// Largest page a flow listing returns.
pub const MAX_PAGE: u32 = 1000;

/// A registered flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Flow {
    /// Unique id (given at registration, or a generated UUIDv7).
    pub flow_id: String,
    /// Kind of flow (`discovery`, `assessment`, ...).
    pub flow_type: String,
    /// The flow this one was started from, if any.
    pub parent_flow_id: Option<String>,
    /// Current status; changed only by transitions.
    pub status: String,
    /// Free-form JSON object given at registration.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// When the flow was registered.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the flow last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Starts at 1 and grows by one with every transition; newer versions win in the hot tier.
    pub version: i64,
    /// Whether its state, phase states, agent results, snapshots and custom event payloads are
    /// stored encrypted (set at registration; a fork inherits it).
    #[serde(default)]
    pub sensitive: bool,
    /// Which registration of `flow_id` this is: the ledger's registration number, which only
    /// grows, so a flow deleted and registered again has a higher one. The hot tier orders
    /// writes by (incarnation, version), so a late write about the deleted flow cannot replace
    /// the new one. Not part of the API.
    #[serde(skip)]
    #[schema(ignore)]
    pub incarnation: i64,
}

/// What a caller supplies to register a flow.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFlow {
    /// Id to use; a UUIDv7 is generated when absent.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub flow_id: Option<String>,
    /// Kind of flow.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub flow_type: String,
    /// Parent flow, which must exist.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub parent_flow_id: Option<String>,
    /// Free-form JSON object.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Store its state, phase states, agent results, snapshots and custom event payloads
    /// encrypted, in Redis and in the ledger (needs `FLOWSTATE_ENCRYPTION_KEYS`).
    #[serde(default)]
    pub sensitive: bool,
}

/// Filters and paging of a flow listing.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FlowFilter {
    /// Only flows in this status.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub status: Option<String>,
    /// Only flows of this type.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub flow_type: Option<String>,
    /// Only direct children of this flow.
    #[param(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub parent_flow_id: Option<String>,
    /// Page size (default 100, at most [`MAX_PAGE`]).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Opaque cursor from a previous page's `next_cursor`.
    #[param(pattern = r"^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
}

/// One page of flows, in registration order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FlowPage {
    /// The flows of this page.
    pub flows: Vec<Flow>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A deleted flow and what went with it, so the hot tier can forget all of it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletedFlow {
    /// The flow as it was.
    pub flow: Flow,
    /// Its documents (kind, name).
    pub documents: Vec<(DocKind, String)>,
    /// Its snapshot ids.
    pub snapshots: Vec<String>,
}
