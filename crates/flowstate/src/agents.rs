//! Per-flow agent results (reference §1.2 `cache_agent_results`): one JSON object per agent of a
//! flow, under `discovery:agents:{id}:<agent>` (TTL 3600 s for agents named `*analyzer*`, else
//! 1800 s), listed in `discovery:state:{id}:cached_agents`. (The cross-flow agent result cache,
//! keyed by a hash of the input, is a separate capability.)

use serde_json::{Map, Value};

use crate::documents::{DocKind, Document};
use crate::error::Result;
use crate::service::Flowstate;

impl Flowstate {
    /// Stores an agent's results for a flow.
    pub async fn put_agent_results(
        &self,
        flow_id: &str,
        agent: &str,
        results: Map<String, Value>,
    ) -> Result<Document> {
        self.put_document(DocKind::Agent, flow_id, agent, results)
            .await
    }

    /// An agent's results for a flow.
    pub async fn get_agent_results(&self, flow_id: &str, agent: &str) -> Result<Document> {
        self.get_document(DocKind::Agent, flow_id, agent).await
    }

    /// The agents with results for a flow.
    pub async fn list_agents(&self, flow_id: &str) -> Result<Vec<String>> {
        self.list_documents(DocKind::Agent, flow_id).await
    }
}
