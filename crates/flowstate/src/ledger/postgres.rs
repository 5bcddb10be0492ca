//! The production ledger: PostgreSQL.
//!
//! Every operation is one statement, hence one round trip: a transition is a data-modifying CTE
//! that updates the flow and inserts the history row atomically. Concurrent transitions from the
//! same status serialise on the row lock, and the loser re-checks `status = from` after the
//! winner commits, so exactly one wins (READ COMMITTED is enough). Registrations, transitions
//! and document saves that arrive together share one statement ([`super::postgres_batch`]).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgPool, Postgres, QueryBuilder};
use time::OffsetDateTime;

use super::postgres_batch::{
    Batcher, DocumentReq, Documents, Registrations, TransitionReq, Transitions,
};
use super::{
    DeletedFlow, DocumentRow, FallbackRow, FlowRow, GET_DOCUMENT, Invalidation, LIST_DOCUMENTS,
    LIST_FALLBACKS, Ledger, PENDING_INVALIDATIONS, TakenSnapshot, TransitionRow, attach_documents,
    delete_error, delete_statements, flow_columns, insert_fallback, push_filters, subtree,
};
use crate::config::DatabaseConfig;
use crate::documents::{DocKind, Document, Owner};
use crate::error::{Error, Result};
use crate::fallbacks::FallbackRecord;
use crate::flows::{Flow, FlowFilter};
use crate::snapshots::Snapshot;
use crate::transitions::Transition;

/// Snapshot statements; each runs inside the caller's transaction, and every step after the
/// first that can fail on the caller's input is a read, so a rejected request writes nothing.
mod snapshots {
    use serde_json::{Map, Value};
    use sqlx::types::Json;
    use time::OffsetDateTime;

    use crate::documents::{DocKind, Document, Owner};
    use crate::error::{Error, Result};
    use crate::flows::Flow;
    use crate::ledger::{
        FlowRow, GET_SNAPSHOT, NewSnapshot, PUT_DOCUMENT, SnapshotRow, TakenSnapshot, flow_columns,
        insert_error,
    };
    use crate::snapshots::Snapshot;

    /// "No such snapshot" or "no such flow".
    async fn missing(conn: &mut sqlx::PgConnection, flow_id: &str, snapshot_id: &str) -> Error {
        let exists: std::result::Result<Option<i64>, _> =
            sqlx::query_scalar("SELECT seq FROM flows WHERE flow_id = $1")
                .bind(flow_id)
                .fetch_optional(&mut *conn)
                .await;
        match exists {
            Ok(Some(_)) => Error::SnapshotNotFound {
                flow_id: flow_id.to_string(),
                snapshot_id: snapshot_id.to_string(),
            },
            Ok(None) => Error::FlowNotFound(flow_id.to_string()),
            Err(e) => e.into(),
        }
    }

    /// A snapshot's state, or why there is none.
    async fn snapshot_state(
        conn: &mut sqlx::PgConnection,
        flow_id: &str,
        snapshot_id: &str,
    ) -> Result<Map<String, Value>> {
        let state: Option<Json<Map<String, Value>>> = sqlx::query_scalar(
            "SELECT state FROM flow_snapshots WHERE flow_id = $1 AND snapshot_id = $2",
        )
        .bind(flow_id)
        .bind(snapshot_id)
        .fetch_optional(&mut *conn)
        .await?;
        match state {
            Some(s) => Ok(s.0),
            None => Err(missing(conn, flow_id, snapshot_id).await),
        }
    }

    /// Writes a flow's state document; returns it.
    async fn write_state(
        conn: &mut sqlx::PgConnection,
        flow_id: &str,
        state: &Map<String, Value>,
        at: OffsetDateTime,
    ) -> Result<Document> {
        let version: i64 = sqlx::query_scalar(PUT_DOCUMENT)
            .bind(flow_id)
            .bind(DocKind::State.as_str())
            .bind("")
            .bind(Json(state))
            .bind(at)
            .fetch_one(&mut *conn)
            .await?;
        Ok(crate::ledger::written_document(
            flow_id, "", state, at, version,
        ))
    }

    /// Takes a snapshot after the flow's head; drops all but the newest `keep`; returns the
    /// snapshot and the ids dropped.
    pub(super) async fn create(
        conn: &mut sqlx::PgConnection,
        flow_id: &str,
        snapshot_id: &str,
        state: &Map<String, Value>,
        at: OffsetDateTime,
        keep: u32,
    ) -> Result<TakenSnapshot> {
        let head: Option<(Option<String>, String, i64)> = sqlx::query_as(
            "SELECT head_snapshot_id, status, seq FROM flows WHERE flow_id = $1 FOR UPDATE",
        )
        .bind(flow_id)
        .fetch_optional(&mut *conn)
        .await?;
        let (parent, status, incarnation) =
            head.ok_or_else(|| Error::FlowNotFound(flow_id.to_string()))?;
        sqlx::query(
            "INSERT INTO flow_snapshots (flow_id, snapshot_id, parent_snapshot_id, state, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(flow_id)
        .bind(snapshot_id)
        .bind(&parent)
        .bind(Json(state))
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation => {
                Error::SnapshotExists(snapshot_id.to_string())
            }
            _ => e.into(),
        })?;
        sqlx::query("UPDATE flows SET head_snapshot_id = $2 WHERE flow_id = $1")
            .bind(flow_id)
            .bind(snapshot_id)
            .execute(&mut *conn)
            .await?;
        let evicted: Vec<String> = sqlx::query_scalar(
            "DELETE FROM flow_snapshots WHERE flow_id = $1 AND seq NOT IN \
             (SELECT seq FROM flow_snapshots WHERE flow_id = $1 ORDER BY seq DESC LIMIT $2) \
             RETURNING snapshot_id",
        )
        .bind(flow_id)
        .bind(i64::from(keep))
        .fetch_all(&mut *conn)
        .await?;
        let taken = NewSnapshot {
            flow_id,
            snapshot_id,
            parent,
            state,
            at,
        };
        let owner = Owner {
            status,
            incarnation,
        };
        Ok(taken.taken(evicted, owner))
    }

    /// Replaces the flow's state with the snapshot's and makes it the flow's head.
    pub(super) async fn restore(
        conn: &mut sqlx::PgConnection,
        flow_id: &str,
        snapshot_id: &str,
        at: OffsetDateTime,
    ) -> Result<(Flow, Document)> {
        let state = snapshot_state(conn, flow_id, snapshot_id).await?;
        let flow: FlowRow = sqlx::query_as(concat!(
            "UPDATE flows SET head_snapshot_id = $2 WHERE flow_id = $1 RETURNING ",
            flow_columns!()
        ))
        .bind(flow_id)
        .bind(snapshot_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::FlowNotFound(flow_id.to_string()))?;
        let doc = write_state(conn, flow_id, &state, at).await?;
        Ok((flow.into_flow(), doc))
    }

    /// Registers `child` (a child of the snapshot's flow, of its type unless given) with
    /// the snapshot's state.
    pub(super) async fn fork(
        conn: &mut sqlx::PgConnection,
        flow_id: &str,
        snapshot_id: &str,
        child: &Flow,
    ) -> Result<(Flow, Document)> {
        let state = snapshot_state(conn, flow_id, snapshot_id).await?;
        let row: FlowRow = sqlx::query_as(concat!(
            "INSERT INTO flows (flow_id, flow_type, parent_flow_id, status, metadata, \
             created_at, updated_at, version, head_snapshot_id) \
             SELECT $1, CASE WHEN $2 = '' THEN flow_type ELSE $2 END, flow_id, $3, $4, $5, $5, 1, $6 \
             FROM flows WHERE flow_id = $7 RETURNING ",
            flow_columns!()
        ))
        .bind(&child.flow_id)
        .bind(&child.flow_type)
        .bind(&child.status)
        .bind(Json(&child.metadata))
        .bind(child.created_at)
        .bind(snapshot_id)
        .bind(flow_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| insert_error(e, child))?
        .ok_or_else(|| Error::FlowNotFound(flow_id.to_string()))?;
        let flow = row.into_flow();
        let doc = write_state(conn, &flow.flow_id, &state, flow.created_at).await?;
        Ok((flow, doc))
    }

    /// A snapshot.
    pub(super) async fn get(
        conn: &mut sqlx::PgConnection,
        flow_id: &str,
        snapshot_id: &str,
    ) -> Result<Option<(Snapshot, Owner)>> {
        let row: Option<SnapshotRow> = sqlx::query_as(GET_SNAPSHOT)
            .bind(flow_id)
            .bind(snapshot_id)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(row.map(|r| r.into_snapshot(flow_id)))
    }

    /// A flow's snapshot ids, newest first.
    pub(super) async fn list(conn: &mut sqlx::PgConnection, flow_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT snapshot_id FROM flow_snapshots WHERE flow_id = $1 ORDER BY seq DESC",
        )
        .bind(flow_id)
        .fetch_all(&mut *conn)
        .await?)
    }
}

/// A pooled connection idle this long is pinged before use.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Ledger on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresLedger {
    pool: PgPool,
    registrations: Batcher<Registrations>,
    transitions: Batcher<Transitions>,
    documents: Batcher<Documents>,
}

impl PostgresLedger {
    /// Connects a pool to `cfg.url` and applies migrations.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self> {
        let options = PgConnectOptions::from_str(&cfg.url)
            .map_err(|e| Error::Config(format!("DATABASE_URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms))
            // sqlx pings every connection it hands out: one extra round trip per statement.
            // A connection in steady use has just proven itself, so only one that sat idle
            // (and may have been cut by a restart or a proxy) is pinged first.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        // A lane beyond the first opens only while the others are stuck (see
        // `postgres_batch`); 3 kinds × 4 lanes leave a 16-connection pool 4 for reads.
        let lanes = (cfg.max_connections as usize / 4).clamp(1, 4);
        Ok(PostgresLedger {
            registrations: Batcher::start(pool.clone(), lanes),
            transitions: Batcher::start(pool.clone(), lanes),
            documents: Batcher::start(pool.clone(), lanes),
            pool,
        })
    }
}

impl PostgresLedger {
    /// One attempt at a delete: the database error, or the delete's outcome.
    async fn try_delete(
        &self,
        flow_id: &str,
        recursive: bool,
    ) -> std::result::Result<Result<Vec<DeletedFlow>>, sqlx::Error> {
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
                "SELECT flow_id FROM flows WHERE flow_id IN (SELECT flow_id FROM sub) \
                 ORDER BY flow_id FOR UPDATE"
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
            .await?;
        if rows.is_empty() {
            return Ok(Err(Error::FlowNotFound(flow_id.to_string())));
        }
        // History has no foreign key here (migration 0003), so it goes explicitly. No
        // transition can slip in between: it would need the flow rows this delete has locked.
        let deleted: Vec<&str> = rows.iter().map(|r| r.flow_id.as_str()).collect();
        sqlx::query("DELETE FROM flow_transitions WHERE flow_id = ANY($1)")
            .bind(&deleted)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let flows = rows.into_iter().map(FlowRow::into_flow).collect();
        Ok(Ok(attach_documents(flows, docs)))
    }
}

/// Whether PostgreSQL aborted the statement to break a deadlock (or a serialization conflict).
fn is_deadlock(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
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

    async fn insert_flow(&self, flow: &Flow) -> Result<i64> {
        self.registrations.submit(flow.clone()).await
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
        // A batch of writes can hold a row this delete needs while waiting for one it holds
        // (a document batch's foreign-key check); PostgreSQL then aborts one side. Both lock
        // in flow_id order, which makes that rare, and the delete retries when it is the one.
        let mut attempts = 0;
        loop {
            match self.try_delete(flow_id, recursive).await {
                Err(e) if attempts < 3 && is_deadlock(&e) => attempts += 1,
                Err(e) => return Err(delete_error(e, flow_id)),
                Ok(outcome) => return outcome,
            }
        }
    }

    async fn put_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
        body: &Map<String, Value>,
        at: OffsetDateTime,
    ) -> Result<(Document, Owner)> {
        self.documents
            .submit(DocumentReq {
                kind,
                flow_id: flow_id.to_string(),
                name: name.to_string(),
                body: body.clone(),
                at,
            })
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
        self.transitions
            .submit(TransitionReq {
                flow_id: flow_id.to_string(),
                from: from.to_string(),
                to: to.to_string(),
                metadata: metadata.clone(),
                at,
            })
            .await
    }

    async fn create_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        state: &Map<String, Value>,
        at: OffsetDateTime,
        keep: u32,
    ) -> Result<TakenSnapshot> {
        let mut tx = self.pool.begin().await?;
        let out = snapshots::create(&mut tx, flow_id, snapshot_id, state, at, keep).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn get_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
    ) -> Result<Option<(Snapshot, Owner)>> {
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

    async fn record_invalidations(&self, keys: &[String], at: OffsetDateTime) -> Result<()> {
        sqlx::query(
            "INSERT INTO hot_invalidations (cache_key, recorded_at) \
             SELECT k, $2 FROM unnest($1::text[]) AS k",
        )
        .bind(keys)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn pending_invalidations(&self, after: i64, limit: u32) -> Result<Vec<Invalidation>> {
        Ok(sqlx::query_as(PENDING_INVALIDATIONS)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn clear_invalidations(&self, ids: &[i64]) -> Result<()> {
        sqlx::query("DELETE FROM hot_invalidations WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await?;
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
