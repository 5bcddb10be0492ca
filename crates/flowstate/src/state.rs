//! The flow state cache (reference §1.2 `flow_state_cache`, §2.1): one JSON object per flow,
//! cached under `cache:flow:state:{id}` with a TTL chosen by the flow's status (active 300 s,
//! completed 3600 s, failed 1800 s by default). Saving a phase invalidates it.

use serde_json::{Map, Value};

use crate::documents::{DocKind, Document};
use crate::error::Result;
use crate::service::Flowstate;

impl Flowstate {
    /// Replaces the flow's state.
    pub async fn put_state(&self, flow_id: &str, state: Map<String, Value>) -> Result<Document> {
        self.put_document(DocKind::State, flow_id, "", state).await
    }

    /// The flow's state.
    pub async fn get_state(&self, flow_id: &str) -> Result<Document> {
        self.get_document(DocKind::State, flow_id, "").await
    }
}
