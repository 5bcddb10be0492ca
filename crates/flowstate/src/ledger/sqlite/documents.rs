//! A flow's documents on SQLite: reads on the pool, the upsert on the writer thread.

use async_trait::async_trait;
use rusqlite::{Connection, params};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::SqliteLedger;
use super::writer::{json, owner, sql_err, ts};
use crate::error::Result;
use crate::ledger::DocumentLedger;
use crate::ledger::sql::documents::{DocumentRow, GET_DOCUMENT, LIST_DOCUMENTS, PUT_DOCUMENT};
use crate::model::{DocKind, Document, Owner};

#[async_trait]
impl DocumentLedger for SqliteLedger {
    async fn put_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
        body: &Map<String, Value>,
        at: OffsetDateTime,
    ) -> Result<(Document, Owner)> {
        let (flow_id, name, body) = (flow_id.to_string(), name.to_string(), body.clone());
        self.writer
            .submit(move |c| put_document(c, kind, &flow_id, &name, &body, at))
            .await
    }

    async fn get_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
    ) -> Result<Option<(Document, Owner)>> {
        let row: Option<DocumentRow> = sqlx::query_as(GET_DOCUMENT)
            .bind(flow_id)
            .bind(kind.as_str())
            .bind(name)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(DocumentRow::into_document))
    }

    async fn list_documents(&self, kind: DocKind, flow_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(LIST_DOCUMENTS)
            .bind(flow_id)
            .bind(kind.as_str())
            .fetch_all(&self.reader)
            .await?)
    }
}

/// Creates or replaces a document; returns it and its flow.
fn put_document(
    conn: &Connection,
    kind: DocKind,
    flow_id: &str,
    name: &str,
    body: &Map<String, Value>,
    at: OffsetDateTime,
) -> Result<(Document, Owner)> {
    let owner = owner(conn, flow_id)?;
    let version: i64 = conn
        .prepare_cached(PUT_DOCUMENT)
        .map_err(sql_err)?
        .query_row(
            params![flow_id, kind.as_str(), name, json(body)?, ts(at)?],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    let doc = Document::written(flow_id, name, body, at, version);
    Ok((doc, owner))
}
