//! The event outbox on SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::SqliteLedger;
use super::writer::sql_err;
use crate::error::Result;
use crate::ledger::EventLedger;
use crate::ledger::sql::events::{OutboxRow, PENDING_EVENTS, columns};
use crate::model::events::Event;

#[async_trait]
impl EventLedger for SqliteLedger {
    async fn enqueue_events(&self, events: &[Event]) -> Result<()> {
        let events = events.to_vec();
        self.writer.submit(move |c| enqueue(c, &events)).await
    }

    async fn pending_events(&self, limit: u32) -> Result<Vec<(i64, Event)>> {
        let rows: Vec<OutboxRow> = sqlx::query_as(PENDING_EVENTS)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        rows.into_iter().map(OutboxRow::into_event).collect()
    }

    async fn clear_events(&self, seqs: &[i64]) -> Result<()> {
        let seqs = seqs.to_vec();
        self.writer.submit(move |c| clear(c, &seqs)).await
    }
}

fn enqueue(conn: &Connection, events: &[Event]) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO event_outbox (flow_id, event_id, event_type, payload) \
             VALUES ($1, $2, $3, $4)",
        )
        .map_err(sql_err)?;
    for event in events {
        let (id, payload) = columns(event)?;
        stmt.execute(params![event.flow_id, id, event.event_type, payload])
            .map_err(sql_err)?;
    }
    Ok(())
}

fn clear(conn: &Connection, seqs: &[i64]) -> Result<()> {
    let mut stmt = conn
        .prepare_cached("DELETE FROM event_outbox WHERE seq = $1")
        .map_err(sql_err)?;
    for seq in seqs {
        stmt.execute(params![seq]).map_err(sql_err)?;
    }
    Ok(())
}
