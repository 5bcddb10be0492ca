//! Each flow's event stream on Redis (`flow:events:{id}`): XADD trimmed to about
//! `transitions_maxlen` entries, with the stream's TTL, in one round trip.

use async_trait::async_trait;

use super::{RedisHot, rfc3339};
use crate::hot::{EventHot, HotResult};
use crate::model::now;

#[async_trait]
impl EventHot for RedisHot {
    async fn append_event(
        &self,
        flow_id: &str,
        event_type: &str,
        payload: &serde_json::Value,
    ) -> HotResult<()> {
        let key = self.keys.events(flow_id);
        let mut pipe = ::redis::pipe();
        pipe.cmd("XADD")
            .arg(&key)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.ttls.config().transitions_maxlen)
            .arg("*")
            .arg("event_type")
            .arg(event_type)
            .arg("payload")
            .arg(payload.to_string())
            .arg("timestamp")
            .arg(rfc3339(now()))
            .ignore();
        pipe.expire(&key, self.ttls.events() as i64).ignore();
        self.core.write(&pipe, &[], vec![key]).await
    }
}
