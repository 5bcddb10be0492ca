//! The embedded ledger: one SQLite file in WAL mode.
//!
//! SQLite allows one writer at a time. Rather than letting concurrent writers spin in SQLite's
//! busy handler (sleeps of up to 100 ms, which wreck tail latency), all writes go through a pool
//! of exactly one connection, where they queue fairly; reads use a separate pool and never wait
//! for writers. `synchronous = NORMAL` is the WAL setting SQLite recommends: a crash of the
//! process loses nothing, a power loss at most the last transactions.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use time::OffsetDateTime;

use super::{
    FlowRow, Ledger, TransitionRow, cas_failure, delete_error, flow_columns, insert_error,
    push_filters, recorded,
};
use crate::config::DatabaseConfig;
use crate::error::{Error, Result};
use crate::flows::{Flow, FlowFilter};
use crate::transitions::Transition;

/// Ledger on a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteLedger {
    /// The single writer connection; writes queue here instead of in SQLite's busy handler.
    writer: SqlitePool,
    /// Readers; WAL lets them run alongside the writer.
    reader: SqlitePool,
}

impl SqliteLedger {
    /// Opens (creating if missing) the database at `cfg.url`.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(&cfg.url)
            .map_err(|e| Error::Config(format!("DATABASE_URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let acquire = Duration::from_millis(cfg.acquire_timeout_ms);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(acquire)
            .connect_with(options.clone())
            .await?;
        // An in-memory database exists once per connection: readers must share the writer.
        let reader = if cfg.url.contains(":memory:") || cfg.url.contains("mode=memory") {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(cfg.max_connections)
                .acquire_timeout(acquire)
                .connect_with(options.read_only(true))
                .await?
        };
        Ok(SqliteLedger { writer, reader })
    }
}

#[async_trait]
impl Ledger for SqliteLedger {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn insert_flow(&self, flow: &Flow) -> Result<()> {
        sqlx::query(
            "INSERT INTO flows (flow_id, flow_type, parent_flow_id, status, metadata, \
             created_at, updated_at, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&flow.flow_id)
        .bind(&flow.flow_type)
        .bind(&flow.parent_flow_id)
        .bind(&flow.status)
        .bind(Json(&flow.metadata))
        .bind(flow.created_at)
        .bind(flow.updated_at)
        .bind(flow.version)
        .execute(&self.writer)
        .await
        .map_err(|e| insert_error(e, flow))?;
        Ok(())
    }

    async fn get_flow(&self, flow_id: &str) -> Result<Option<Flow>> {
        let row: Option<FlowRow> = sqlx::query_as(concat!(
            "SELECT ",
            flow_columns!(),
            " FROM flows WHERE flow_id = ?"
        ))
        .bind(flow_id)
        .fetch_optional(&self.reader)
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
            QueryBuilder::<Sqlite>::new(concat!("SELECT ", flow_columns!(), " FROM flows"));
        push_filters(&mut qb, filter, after, limit);
        let rows: Vec<FlowRow> = qb.build_query_as().fetch_all(&self.reader).await?;
        Ok(rows.into_iter().map(|r| (r.seq, r.into_flow())).collect())
    }

    async fn children(&self, flow_id: &str, recursive: bool) -> Result<Vec<String>> {
        let sql = if recursive {
            "WITH RECURSIVE sub(flow_id, seq, depth) AS ( \
               SELECT flow_id, seq, 1 FROM flows WHERE parent_flow_id = ? \
               UNION ALL \
               SELECT f.flow_id, f.seq, sub.depth + 1 FROM flows f JOIN sub ON f.parent_flow_id = sub.flow_id) \
             SELECT flow_id FROM sub ORDER BY depth, seq"
        } else {
            "SELECT flow_id FROM flows WHERE parent_flow_id = ? ORDER BY seq"
        };
        Ok(sqlx::query_scalar(sql)
            .bind(flow_id)
            .fetch_all(&self.reader)
            .await?)
    }

    async fn delete_flow(&self, flow_id: &str, recursive: bool) -> Result<Vec<Flow>> {
        let sql = if recursive {
            concat!(
                "WITH RECURSIVE sub(flow_id) AS ( \
                   SELECT ? UNION ALL \
                   SELECT f.flow_id FROM flows f JOIN sub ON f.parent_flow_id = sub.flow_id) \
                 DELETE FROM flows WHERE flow_id IN (SELECT flow_id FROM sub) RETURNING ",
                flow_columns!()
            )
        } else {
            concat!(
                "DELETE FROM flows WHERE flow_id = ? RETURNING ",
                flow_columns!()
            )
        };
        let rows: Vec<FlowRow> = sqlx::query_as(sql)
            .bind(flow_id)
            .fetch_all(&self.writer)
            .await
            .map_err(|e| delete_error(e, flow_id))?;
        if rows.is_empty() {
            return Err(Error::FlowNotFound(flow_id.to_string()));
        }
        Ok(rows.into_iter().map(FlowRow::into_flow).collect())
    }

    async fn transition(
        &self,
        flow_id: &str,
        from: &str,
        to: &str,
        metadata: &Map<String, Value>,
        at: OffsetDateTime,
    ) -> Result<(Transition, Flow)> {
        let mut tx = self.writer.begin().await?;
        let updated: Option<FlowRow> = sqlx::query_as(concat!(
            "UPDATE flows SET status = ?, version = version + 1, updated_at = ? \
             WHERE flow_id = ? AND status = ? RETURNING ",
            flow_columns!()
        ))
        .bind(to)
        .bind(at)
        .bind(flow_id)
        .bind(from)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = updated else {
            let current: Option<String> =
                sqlx::query_scalar("SELECT status FROM flows WHERE flow_id = ?")
                    .bind(flow_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            tx.rollback().await?;
            return Err(cas_failure(current, flow_id, from));
        };
        let flow = row.into_flow();
        sqlx::query(
            "INSERT INTO flow_transitions (flow_id, seq, from_status, to_status, metadata, at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(flow_id)
        .bind(flow.version)
        .bind(from)
        .bind(to)
        .bind(Json(metadata))
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((recorded(&flow, from, to, metadata, at), flow))
    }

    async fn transitions(&self, flow_id: &str, after: i64, limit: u32) -> Result<Vec<Transition>> {
        let rows: Vec<TransitionRow> = sqlx::query_as(
            "SELECT seq, from_status, to_status, metadata, at FROM flow_transitions \
             WHERE flow_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(flow_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(TransitionRow::into_transition)
            .collect())
    }
}
