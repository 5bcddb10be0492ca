//! The event outbox on PostgreSQL.

use async_trait::async_trait;

use super::PostgresLedger;
use crate::error::Result;
use crate::ledger::EventLedger;
use crate::ledger::sql::events::{OutboxRow, PENDING_EVENTS, columns};
use crate::model::events::Event;

#[async_trait]
impl EventLedger for PostgresLedger {
    async fn enqueue_events(&self, events: &[Event]) -> Result<()> {
        let (mut flows, mut ids, mut types, mut payloads) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for event in events {
            let (id, payload) = columns(event)?;
            flows.push(event.flow_id.as_str());
            ids.push(id);
            types.push(event.event_type.as_str());
            payloads.push(payload);
        }
        // One statement; unnest keeps the rows in order, so seq follows publication order.
        sqlx::query(
            "INSERT INTO event_outbox (flow_id, event_id, event_type, payload) \
             SELECT f, i, t, p FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
             WITH ORDINALITY AS e(f, i, t, p, n) ORDER BY n",
        )
        .bind(&flows)
        .bind(&ids)
        .bind(&types)
        .bind(&payloads)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn pending_events(&self, limit: u32) -> Result<Vec<(i64, Event)>> {
        let rows: Vec<OutboxRow> = sqlx::query_as(PENDING_EVENTS)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(OutboxRow::into_event).collect()
    }

    async fn clear_events(&self, seqs: &[i64]) -> Result<()> {
        sqlx::query("DELETE FROM event_outbox WHERE seq = ANY($1)")
            .bind(seqs)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
