//! Status transitions (the reference's state manager, §1.3): one recorded change of a flow's
//! status, and what a caller supplies to make one.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::flows::Flow;

/// Largest history page.
pub const MAX_HISTORY: u32 = 1000;

/// One recorded transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Transition {
    /// Position in the flow's history: the flow's version right after this transition.
    pub id: i64,
    /// Status before.
    pub from: String,
    /// Status after.
    pub to: String,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Free-form JSON object supplied by the caller.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

impl Transition {
    /// The transition that just moved `flow` (already at its new version) from `from` to `to`.
    pub fn recorded(
        flow: &Flow,
        from: &str,
        to: &str,
        metadata: &Map<String, Value>,
        at: OffsetDateTime,
    ) -> Self {
        Transition {
            id: flow.version,
            from: from.to_string(),
            to: to.to_string(),
            at,
            metadata: metadata.clone(),
        }
    }
}

/// What a caller supplies to transition a flow.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    /// The status the caller believes the flow is in.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub from: String,
    /// The status to move to.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub to: String,
    /// Free-form JSON object recorded with the transition.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}
