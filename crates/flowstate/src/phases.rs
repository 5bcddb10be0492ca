//! Phase states (reference §1.2 `save_phase_state`): one JSON object per phase of a flow, under
//! `discovery:phase:{id}:<phase>` with a per-phase TTL, listed in `discovery:state:{id}:phases`.
//! Saving a phase invalidates the flow's cached state, as the reference does.

use serde_json::{Map, Value};

use crate::documents::{DocKind, Document};
use crate::error::Result;
use crate::service::Flowstate;

impl Flowstate {
    /// Saves a phase's state.
    pub async fn put_phase(
        &self,
        flow_id: &str,
        phase: &str,
        state: Map<String, Value>,
    ) -> Result<Document> {
        self.put_document(DocKind::Phase, flow_id, phase, state)
            .await
    }

    /// A phase's state.
    pub async fn get_phase(&self, flow_id: &str, phase: &str) -> Result<Document> {
        self.get_document(DocKind::Phase, flow_id, phase).await
    }

    /// The phases saved for a flow.
    pub async fn list_phases(&self, flow_id: &str) -> Result<Vec<String>> {
        self.list_documents(DocKind::Phase, flow_id).await
    }
}
