//! Events in memory: none kept yet.

use async_trait::async_trait;

use super::MemoryHot;
use crate::hot::{EventHot, HotResult};

#[async_trait]
impl EventHot for MemoryHot {
    /// The embedded tier keeps no event stream yet: in-process delivery to subscribers comes
    /// with the events capability, which will also back events with a ledger outbox.
    async fn append_event(
        &self,
        _flow_id: &str,
        _event_type: &str,
        _payload: &serde_json::Value,
    ) -> HotResult<()> {
        Ok(())
    }
}
