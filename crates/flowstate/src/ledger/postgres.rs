//! The production ledger: PostgreSQL.
//!
//! Every operation is one statement, hence one round trip: a transition is a data-modifying CTE
//! that updates the flow and inserts the history row atomically. Concurrent transitions from the
//! same status serialise on the row lock, and the loser re-checks `status = from` after the
//! winner commits, so exactly one wins (READ COMMITTED is enough).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder};
use time::OffsetDateTime;

use super::{
    DeletedFlow, DocumentRow, FallbackRow, FlowRow, GET_DOCUMENT, LIST_DOCUMENTS, LIST_FALLBACKS,
    Ledger, TransitionRow, attach_documents, cas_failure, delete_error, delete_statements,
    flow_columns, insert_error, insert_fallback, push_filters, recorded, subtree,
};
use crate::config::DatabaseConfig;
use crate::documents::{DocKind, Document};
use crate::error::{Error, Result};
use crate::fallbacks::FallbackRecord;
use crate::flows::{Flow, FlowFilter};
use crate::snapshots::Snapshot;
use crate::transitions::Transition;

mod snapshots {
    super::super::snapshot_sql::snapshot_statements!(sqlx::PgConnection, " FOR UPDATE");
}

/// Ledger on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresLedger {
    pool: PgPool,
}

impl PostgresLedger {
    /// Connects a pool to `cfg.url` and applies migrations.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self> {
        let options = PgConnectOptions::from_str(&cfg.url)
            .map_err(|e| Error::Config(format!("DATABASE_URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresLedger { pool })
    }
}

#[async_trait]
impl Ledger for PostgresLedger {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_flow(&self, flow: &Flow) -> Result<()> {
        sqlx::query(
            "INSERT INTO flows (flow_id, flow_type, parent_flow_id, status, metadata, \
             created_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&flow.flow_id)
        .bind(&flow.flow_type)
        .bind(&flow.parent_flow_id)
        .bind(&flow.status)
        .bind(Json(&flow.metadata))
        .bind(flow.created_at)
        .bind(flow.updated_at)
        .bind(flow.version)
        .execute(&self.pool)
        .await
        .map_err(|e| insert_error(e, flow))?;
        Ok(())
    }

    async fn get_flow(&self, flow_id: &str) -> Result<Option<Flow>> {
        let row: Option<FlowRow> = sqlx::query_as(concat!(
            "SELECT ",
            flow_columns!(),
            " FROM flows WHERE flow_id = $1"
        ))
        .bind(flow_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(FlowRow::into_flow))
    }

    async fn list_flows(
        &self,
        filter: &FlowFilter,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<(i64, Flow)>> {
        let mut qb =
            QueryBuilder::<Postgres>::new(concat!("SELECT ", flow_columns!(), " FROM flows"));
        push_filters(&mut qb, filter, after, limit);
        let rows: Vec<FlowRow> = qb.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|r| (r.seq, r.into_flow())).collect())
    }

    async fn children(&self, flow_id: &str, recursive: bool) -> Result<Vec<String>> {
        let sql = if recursive {
            "WITH RECURSIVE sub(flow_id, seq, depth) AS ( \
               SELECT flow_id, seq, 1 FROM flows WHERE parent_flow_id = $1 \
               UNION ALL \
               SELECT f.flow_id, f.seq, sub.depth + 1 FROM flows f JOIN sub ON f.parent_flow_id = sub.flow_id) \
             SELECT flow_id FROM sub ORDER BY depth, seq"
        } else {
            "SELECT flow_id FROM flows WHERE parent_flow_id = $1 ORDER BY seq"
        };
        Ok(sqlx::query_scalar(sql)
            .bind(flow_id)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn delete_flow(&self, flow_id: &str, recursive: bool) -> Result<Vec<DeletedFlow>> {
        let (list_docs, delete) = if recursive {
            delete_statements!(recursive)
        } else {
            delete_statements!(single)
        };
        let mut tx = self.pool.begin().await?;
        // Lock the rows first: a document written concurrently waits for this delete (its
        // foreign-key check needs the row) instead of slipping in unlisted and being cascaded
        // away in Postgres while its Redis key lives on.
        let lock = if recursive {
            concat!(
                subtree!(recursive),
                "SELECT flow_id FROM flows WHERE flow_id IN (SELECT flow_id FROM sub) FOR UPDATE"
            )
        } else {
            "SELECT flow_id FROM flows WHERE flow_id = $1 FOR UPDATE"
        };
        sqlx::query(lock).bind(flow_id).execute(&mut *tx).await?;
        let docs: Vec<(String, String, String)> = sqlx::query_as(list_docs)
            .bind(flow_id)
            .fetch_all(&mut *tx)
            .await?;
        let rows: Vec<FlowRow> = sqlx::query_as(delete)
            .bind(flow_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| delete_error(e, flow_id))?;
        if rows.is_empty() {
            return Err(Error::FlowNotFound(flow_id.to_string()));
        }
        tx.commit().await?;
        let flows = rows.into_iter().map(FlowRow::into_flow).collect();
        Ok(attach_documents(flows, docs))
    }

    async fn put_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
        body: &Map<String, Value>,
        at: OffsetDateTime,
    ) -> Result<(Document, String)> {
        // One statement: the upsert, and the flow's status read in the same snapshot.
        let row: Option<(i64, String)> = sqlx::query_as(
            "WITH up AS (INSERT INTO flow_documents (flow_id, kind, name, body, saved_at, version) \
               SELECT flow_id, $2, $3, $4, $5, 1 FROM flows WHERE flow_id = $1 \
               ON CONFLICT (flow_id, kind, name) DO UPDATE \
               SET body = excluded.body, saved_at = excluded.saved_at, \
                   version = flow_documents.version + 1 \
               RETURNING version) \
             SELECT up.version, f.status FROM up, flows f WHERE f.flow_id = $1",
        )
        .bind(flow_id)
        .bind(kind.as_str())
        .bind(name)
        .bind(Json(body))
        .bind(at)
        .fetch_optional(&self.pool)
        .await?;
        let (version, status) = row.ok_or_else(|| Error::FlowNotFound(flow_id.to_string()))?;
        let doc = Document {
            flow_id: flow_id.to_string(),
            name: name.to_string(),
            body: body.clone(),
            saved_at: at,
            version,
        };
        Ok((doc, status))
    }

    async fn get_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
    ) -> Result<Option<(Document, String)>> {
        let row: Option<DocumentRow> = sqlx::query_as(GET_DOCUMENT)
            .bind(flow_id)
            .bind(kind.as_str())
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(DocumentRow::into_document))
    }

    async fn list_documents(&self, kind: DocKind, flow_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(LIST_DOCUMENTS)
            .bind(flow_id)
            .bind(kind.as_str())
            .fetch_all(&self.pool)
            .await?)
    }

    async fn transition(
        &self,
        flow_id: &str,
        from: &str,
        to: &str,
        metadata: &Map<String, Value>,
        at: OffsetDateTime,
    ) -> Result<(Transition, Flow)> {
        let updated: Option<FlowRow> = sqlx::query_as(concat!(
            "WITH upd AS ( \
               UPDATE flows SET status = $3, version = version + 1, updated_at = $5 \
               WHERE flow_id = $1 AND status = $2 RETURNING ",
            flow_columns!(),
            "), \
             ins AS ( \
               INSERT INTO flow_transitions (flow_id, seq, from_status, to_status, metadata, at) \
               SELECT flow_id, version, $2, $3, $4, $5 FROM upd) \
             SELECT ",
            flow_columns!(),
            " FROM upd"
        ))
        .bind(flow_id)
        .bind(from)
        .bind(to)
        .bind(Json(metadata))
        .bind(at)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = updated else {
            let current: Option<String> =
                sqlx::query_scalar("SELECT status FROM flows WHERE flow_id = $1")
                    .bind(flow_id)
                    .fetch_optional(&self.pool)
                    .await?;
            return Err(cas_failure(current, flow_id, from));
        };
        let flow = row.into_flow();
        Ok((recorded(&flow, from, to, metadata, at), flow))
    }

    async fn create_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        state: &Map<String, Value>,
        at: OffsetDateTime,
        keep: u32,
    ) -> Result<(Snapshot, Vec<String>)> {
        let mut tx = self.pool.begin().await?;
        let out = snapshots::create(&mut tx, flow_id, snapshot_id, state, at, keep).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn get_snapshot(&self, flow_id: &str, snapshot_id: &str) -> Result<Option<Snapshot>> {
        snapshots::get(&mut *self.pool.acquire().await?, flow_id, snapshot_id).await
    }

    async fn list_snapshots(&self, flow_id: &str) -> Result<Vec<String>> {
        snapshots::list(&mut *self.pool.acquire().await?, flow_id).await
    }

    async fn restore_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        at: OffsetDateTime,
    ) -> Result<(Flow, Document)> {
        let mut tx = self.pool.begin().await?;
        let out = snapshots::restore(&mut tx, flow_id, snapshot_id, at).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn fork_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        child: &Flow,
    ) -> Result<(Flow, Document)> {
        let mut tx = self.pool.begin().await?;
        let out = snapshots::fork(&mut tx, flow_id, snapshot_id, child).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn record_fallbacks(&self, rows: &[FallbackRecord]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for r in rows {
            insert_fallback::<Postgres>(r).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_fallbacks(&self, limit: u32) -> Result<Vec<FallbackRecord>> {
        let rows: Vec<FallbackRow> = sqlx::query_as(LIST_FALLBACKS)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(FallbackRow::into_record).collect())
    }

    async fn transitions(&self, flow_id: &str, after: i64, limit: u32) -> Result<Vec<Transition>> {
        let rows: Vec<TransitionRow> = sqlx::query_as(
            "SELECT seq, from_status, to_status, metadata, at FROM flow_transitions \
             WHERE flow_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(flow_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(TransitionRow::into_transition)
            .collect())
    }
}
