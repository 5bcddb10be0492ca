//! The embedded ledger: one SQLite file in WAL mode.
//!
//! Writes go to the writer thread ([`super::sqlite_writer`]), which owns the only write
//! connection and commits queued requests in groups; reads use a separate sqlx pool and never
//! wait for the writer (WAL). `synchronous = NORMAL` is the WAL setting SQLite recommends: a
//! crash of the process loses nothing, a power loss at most the last transactions. New
//! databases use 1 KiB pages: every commit writes each page it dirtied to the WAL whole, and
//! with flows' rows spread over five B-trees, 4 KiB pages made the WAL, not SQLite, the limit
//! (measured: half the bytes written, transitions 2x faster).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, QueryBuilder, Sqlite, SqlitePool};
use time::OffsetDateTime;

use super::sqlite_writer::{self as write, Writer};
use super::{
    DeletedFlow, DocumentRow, FallbackRow, FlowRow, GET_DOCUMENT, GET_SNAPSHOT, Invalidation,
    LIST_DOCUMENTS, LIST_FALLBACKS, Ledger, PENDING_INVALIDATIONS, SnapshotRow, TakenSnapshot,
    TransitionRow, flow_columns, push_filters,
};
use crate::config::DatabaseConfig;
use crate::documents::{DocKind, Document, Owner};
use crate::error::{Error, Result};
use crate::fallbacks::FallbackRecord;
use crate::flows::{Flow, FlowFilter};
use crate::snapshots::Snapshot;
use crate::transitions::Transition;

/// Ledger on a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteLedger {
    /// The writer thread, which owns the only write connection.
    writer: Writer,
    /// Readers; WAL lets them run alongside the writer.
    reader: SqlitePool,
}

/// A `flow_snapshots` row.
impl SqliteLedger {
    /// Opens (creating if missing) the database at `cfg.url`, applies migrations and starts the
    /// writer thread.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self> {
        if cfg.url.contains(":memory:") || cfg.url.contains("mode=memory") {
            return Err(Error::Config(
                "DATABASE_URL: an in-memory SQLite database cannot be shared by the writer and \
                 the readers; use a file"
                    .into(),
            ));
        }
        let options = SqliteConnectOptions::from_str(&cfg.url)
            .map_err(|e| Error::Config(format!("DATABASE_URL: {e}")))?
            .create_if_missing(true)
            .page_size(1024)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let mut conn = options.connect().await?;
        sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;
        let writer = Writer::start(options.get_filename(), cfg.sqlite_checkpoint_kib)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms))
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteLedger { writer, reader })
    }
}

#[async_trait]
impl Ledger for SqliteLedger {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn insert_flow(&self, flow: &Flow) -> Result<i64> {
        let flow = flow.clone();
        self.writer
            .submit(move |c| write::insert_flow(c, &flow))
            .await
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

    async fn delete_flow(&self, flow_id: &str, recursive: bool) -> Result<Vec<DeletedFlow>> {
        let flow_id = flow_id.to_string();
        self.writer
            .submit(move |c| write::delete_flow(c, &flow_id, recursive))
            .await
    }

    async fn transition(
        &self,
        flow_id: &str,
        from: &str,
        to: &str,
        metadata: &Map<String, Value>,
        at: OffsetDateTime,
    ) -> Result<(Transition, Flow)> {
        let (flow_id, from, to, metadata) = (
            flow_id.to_string(),
            from.to_string(),
            to.to_string(),
            metadata.clone(),
        );
        self.writer
            .submit(move |c| write::transition(c, &flow_id, &from, &to, &metadata, at))
            .await
    }

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
            .submit(move |c| write::put_document(c, kind, &flow_id, &name, &body, at))
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

    async fn create_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        state: &Map<String, Value>,
        at: OffsetDateTime,
        keep: u32,
    ) -> Result<TakenSnapshot> {
        let (flow_id, snapshot_id, state) =
            (flow_id.to_string(), snapshot_id.to_string(), state.clone());
        self.writer
            .submit(move |c| write::create_snapshot(c, &flow_id, &snapshot_id, &state, at, keep))
            .await
    }

    async fn get_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
    ) -> Result<Option<(Snapshot, Owner)>> {
        let row: Option<SnapshotRow> = sqlx::query_as(GET_SNAPSHOT)
            .bind(flow_id)
            .bind(snapshot_id)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| r.into_snapshot(flow_id)))
    }

    async fn list_snapshots(&self, flow_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT snapshot_id FROM flow_snapshots WHERE flow_id = $1 ORDER BY seq DESC",
        )
        .bind(flow_id)
        .fetch_all(&self.reader)
        .await?)
    }

    async fn restore_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        at: OffsetDateTime,
    ) -> Result<(Flow, Document)> {
        let (flow_id, snapshot_id) = (flow_id.to_string(), snapshot_id.to_string());
        self.writer
            .submit(move |c| write::restore_snapshot(c, &flow_id, &snapshot_id, at))
            .await
    }

    async fn fork_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        child: &Flow,
    ) -> Result<(Flow, Document)> {
        let (flow_id, snapshot_id, child) =
            (flow_id.to_string(), snapshot_id.to_string(), child.clone());
        self.writer
            .submit(move |c| write::fork_snapshot(c, &flow_id, &snapshot_id, &child))
            .await
    }

    async fn record_fallbacks(&self, rows: &[FallbackRecord]) -> Result<()> {
        let rows = rows.to_vec();
        self.writer
            .submit(move |c| write::record_fallbacks(c, &rows))
            .await
    }

    async fn record_invalidations(&self, keys: &[String], at: OffsetDateTime) -> Result<()> {
        let keys = keys.to_vec();
        self.writer
            .submit(move |c| write::record_invalidations(c, &keys, at))
            .await
    }

    async fn pending_invalidations(&self, after: i64, limit: u32) -> Result<Vec<Invalidation>> {
        Ok(sqlx::query_as(PENDING_INVALIDATIONS)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?)
    }

    async fn clear_invalidations(&self, ids: &[i64]) -> Result<()> {
        let ids = ids.to_vec();
        self.writer
            .submit(move |c| write::clear_invalidations(c, &ids))
            .await
    }

    async fn list_fallbacks(&self, limit: u32) -> Result<Vec<FallbackRecord>> {
        let rows: Vec<FallbackRow> = sqlx::query_as(LIST_FALLBACKS)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.into_iter().map(FallbackRow::into_record).collect())
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
