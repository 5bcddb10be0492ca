//! SQL both ledgers share for the event outbox.

use crate::error::{Error, Result};
use crate::model::events::Event;

/// SQL of the oldest events in the outbox.
pub(in crate::ledger) const PENDING_EVENTS: &str = "SELECT seq, flow_id, event_id, event_type, payload \
     FROM event_outbox ORDER BY seq LIMIT $1";

/// An `event_outbox` row.
#[derive(sqlx::FromRow)]
pub(in crate::ledger) struct OutboxRow {
    seq: i64,
    flow_id: String,
    event_id: String,
    event_type: String,
    payload: String,
}

impl OutboxRow {
    /// The row's sequence number and event.
    pub(in crate::ledger) fn into_event(self) -> Result<(i64, Event)> {
        let corrupt =
            |what: &str| Error::Internal(format!("event_outbox row {}: {what}", self.seq));
        let id = self.event_id.parse().map_err(|_| corrupt("bad event id"))?;
        let payload = serde_json::from_str(&self.payload).map_err(|_| corrupt("bad payload"))?;
        Ok((
            self.seq,
            Event::new(id, &self.flow_id, &self.event_type, payload),
        ))
    }
}

/// The columns of an event: id and payload as text.
pub(in crate::ledger) fn columns(event: &Event) -> Result<(String, String)> {
    let payload = serde_json::to_string(&event.payload)
        .map_err(|e| Error::Internal(format!("event payload: {e}")))?;
    Ok((event.id.to_string(), payload))
}
