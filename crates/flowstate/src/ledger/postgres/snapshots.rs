//! Snapshots on PostgreSQL. Take, restore and fork each run in one transaction; every step
//! after the first that can fail on the caller's input is a read, so a rejected request writes
//! nothing. Taking a snapshot locks its flow's row, so concurrent snapshots chain in order.

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::types::Json;
use time::OffsetDateTime;

use super::PostgresLedger;
use crate::error::{Error, Result};
use crate::ledger::SnapshotLedger;
use crate::ledger::sql::documents::PUT_DOCUMENT;
use crate::ledger::sql::flows::{FlowRow, flow_columns, insert_error};
use crate::ledger::sql::snapshots::{GET_SNAPSHOT, NewSnapshot, SnapshotRow};
use crate::model::{DocKind, Document, Flow, Owner, Snapshot, TakenSnapshot};

#[async_trait]
impl SnapshotLedger for PostgresLedger {
    async fn create_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        state: &Map<String, Value>,
        at: OffsetDateTime,
        keep: u32,
    ) -> Result<TakenSnapshot> {
        let mut tx = self.pool.begin().await?;
        let out = create(&mut tx, flow_id, snapshot_id, state, at, keep).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn replace_snapshot_state(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        state: &Map<String, Value>,
    ) -> Result<()> {
        sqlx::query("UPDATE flow_snapshots SET state = $3 WHERE flow_id = $1 AND snapshot_id = $2")
            .bind(flow_id)
            .bind(snapshot_id)
            .bind(Json(state))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
    ) -> Result<Option<(Snapshot, Owner)>> {
        get(&mut *self.pool.acquire().await?, flow_id, snapshot_id).await
    }

    async fn list_snapshots(&self, flow_id: &str) -> Result<Vec<String>> {
        list(&mut *self.pool.acquire().await?, flow_id).await
    }

    async fn restore_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        at: OffsetDateTime,
    ) -> Result<(Flow, Document)> {
        let mut tx = self.pool.begin().await?;
        let out = restore(&mut tx, flow_id, snapshot_id, at).await?;
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
        let out = fork(&mut tx, flow_id, snapshot_id, child).await?;
        tx.commit().await?;
        Ok(out)
    }
}

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
    Ok(Document::written(flow_id, "", state, at, version))
}

/// Takes a snapshot after the flow's head; drops all but the newest `keep`; returns the
/// snapshot and the ids dropped.
async fn create(
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
async fn restore(
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
async fn fork(
    conn: &mut sqlx::PgConnection,
    flow_id: &str,
    snapshot_id: &str,
    child: &Flow,
) -> Result<(Flow, Document)> {
    let state = snapshot_state(conn, flow_id, snapshot_id).await?;
    let row: FlowRow = sqlx::query_as(concat!(
        "INSERT INTO flows (flow_id, flow_type, parent_flow_id, status, metadata, \
         created_at, updated_at, version, head_snapshot_id, sensitive) \
         SELECT $1, CASE WHEN $2 = '' THEN flow_type ELSE $2 END, flow_id, $3, $4, $5, $5, 1, $6, \
         sensitive \
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
async fn get(
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
async fn list(conn: &mut sqlx::PgConnection, flow_id: &str) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT snapshot_id FROM flow_snapshots WHERE flow_id = $1 ORDER BY seq DESC",
    )
    .bind(flow_id)
    .fetch_all(&mut *conn)
    .await?)
}
