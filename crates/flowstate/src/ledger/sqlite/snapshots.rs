//! Snapshots on SQLite: reads on the pool; take, restore and fork on the writer thread, where
//! every step after the first that can fail on the caller's input is a read, so a rejected
//! request writes nothing.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::SqliteLedger;
use super::writer::{constraint, flow_row, json, owner, sql_err, ts};
use crate::error::{Error, Result};
use crate::ledger::SnapshotLedger;
use crate::ledger::sql::documents::PUT_DOCUMENT;
use crate::ledger::sql::flows::flow_columns;
use crate::ledger::sql::snapshots::{GET_SNAPSHOT, NewSnapshot, SnapshotRow};
use crate::model::{DocKind, Document, Flow, Owner, Snapshot, TakenSnapshot};

#[async_trait]
impl SnapshotLedger for SqliteLedger {
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
            .submit(move |c| create_snapshot(c, &flow_id, &snapshot_id, &state, at, keep))
            .await
    }

    async fn replace_snapshot_state(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        state: &Map<String, Value>,
    ) -> Result<()> {
        let (flow_id, snapshot_id, state) =
            (flow_id.to_string(), snapshot_id.to_string(), json(state)?);
        self.writer
            .submit(move |c| {
                c.prepare_cached(
                    // `?n`: rusqlite numbers `$n` by first appearance, not by n.
                    "UPDATE flow_snapshots SET state = ?3 WHERE flow_id = ?1 AND snapshot_id = ?2",
                )
                .and_then(|mut stmt| stmt.execute(params![flow_id, snapshot_id, state]))
                .map(|_| ())
                .map_err(sql_err)
            })
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
            .submit(move |c| restore_snapshot(c, &flow_id, &snapshot_id, at))
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
            .submit(move |c| fork_snapshot(c, &flow_id, &snapshot_id, &child))
            .await
    }
}

/// A snapshot's state, or why there is none.
fn snapshot_state(
    conn: &Connection,
    flow_id: &str,
    snapshot_id: &str,
) -> Result<Map<String, Value>> {
    let state: Option<String> = conn
        .prepare_cached("SELECT state FROM flow_snapshots WHERE flow_id = $1 AND snapshot_id = $2")
        .map_err(sql_err)?
        .query_row(params![flow_id, snapshot_id], |r| r.get(0))
        .optional()
        .map_err(sql_err)?;
    match state {
        Some(s) => {
            serde_json::from_str(&s).map_err(|e| Error::Internal(format!("snapshot json: {e}")))
        }
        None => {
            owner(conn, flow_id)?;
            Err(Error::SnapshotNotFound {
                flow_id: flow_id.to_string(),
                snapshot_id: snapshot_id.to_string(),
            })
        }
    }
}

/// Writes a flow's state document.
fn write_state(
    conn: &Connection,
    flow_id: &str,
    state: &Map<String, Value>,
    at: OffsetDateTime,
) -> Result<Document> {
    let version: i64 = conn
        .prepare_cached(PUT_DOCUMENT)
        .map_err(sql_err)?
        .query_row(
            params![flow_id, DocKind::State.as_str(), "", json(state)?, ts(at)?],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    Ok(Document::written(flow_id, "", state, at, version))
}

/// Takes a snapshot after the flow's head; drops all but the newest `keep`.
fn create_snapshot(
    conn: &Connection,
    flow_id: &str,
    snapshot_id: &str,
    state: &Map<String, Value>,
    at: OffsetDateTime,
    keep: u32,
) -> Result<TakenSnapshot> {
    let (parent, owner): (Option<String>, Owner) = conn
        .prepare_cached("SELECT head_snapshot_id, status, seq FROM flows WHERE flow_id = $1")
        .map_err(sql_err)?
        .query_row(params![flow_id], |r| {
            let owner = Owner {
                status: r.get(1)?,
                incarnation: r.get(2)?,
            };
            Ok((r.get(0)?, owner))
        })
        .optional()
        .map_err(sql_err)?
        .ok_or_else(|| Error::FlowNotFound(flow_id.to_string()))?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO flow_snapshots (flow_id, snapshot_id, parent_snapshot_id, state, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .map_err(sql_err)?
        .execute(params![flow_id, snapshot_id, parent, json(state)?, ts(at)?]);
    match inserted {
        Ok(_) => {}
        Err(e) if constraint(&e) == Some(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE) => {
            return Err(Error::SnapshotExists(snapshot_id.to_string()));
        }
        Err(e) => return Err(sql_err(e)),
    }
    conn.prepare_cached("UPDATE flows SET head_snapshot_id = $1 WHERE flow_id = $2")
        .map_err(sql_err)?
        .execute(params![snapshot_id, flow_id])
        .map_err(sql_err)?;
    let evicted = conn
        .prepare_cached(
            "DELETE FROM flow_snapshots WHERE flow_id = $1 AND seq NOT IN \
             (SELECT seq FROM flow_snapshots WHERE flow_id = $1 ORDER BY seq DESC LIMIT $2) \
             RETURNING snapshot_id",
        )
        .map_err(sql_err)?
        .query_map(params![flow_id, i64::from(keep)], |r| r.get(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
        .map_err(sql_err)?;
    let taken = NewSnapshot {
        flow_id,
        snapshot_id,
        parent,
        state,
        at,
    };
    Ok(taken.taken(evicted, owner))
}

/// Rolls the flow's state back to a snapshot, which becomes the flow's head.
fn restore_snapshot(
    conn: &Connection,
    flow_id: &str,
    snapshot_id: &str,
    at: OffsetDateTime,
) -> Result<(Flow, Document)> {
    let state = snapshot_state(conn, flow_id, snapshot_id)?;
    let flow = conn
        .prepare_cached(concat!(
            "UPDATE flows SET head_snapshot_id = $1 WHERE flow_id = $2 RETURNING ",
            flow_columns!()
        ))
        .map_err(sql_err)?
        .query_row(params![snapshot_id, flow_id], flow_row)
        .optional()
        .map_err(sql_err)?
        .ok_or_else(|| Error::FlowNotFound(flow_id.to_string()))?;
    let doc = write_state(conn, flow_id, &state, at)?;
    Ok((flow, doc))
}

/// Registers `child` with the snapshot's state.
fn fork_snapshot(
    conn: &Connection,
    flow_id: &str,
    snapshot_id: &str,
    child: &Flow,
) -> Result<(Flow, Document)> {
    let state = snapshot_state(conn, flow_id, snapshot_id)?;
    let inserted = conn
        .prepare_cached(concat!(
            "INSERT INTO flows (flow_id, flow_type, parent_flow_id, status, metadata, \
             created_at, updated_at, version, head_snapshot_id, sensitive) \
             SELECT $1, CASE WHEN $2 = '' THEN flow_type ELSE $2 END, flow_id, $3, $4, $5, $5, 1, $6, \
             sensitive \
             FROM flows WHERE flow_id = $7 RETURNING ",
            flow_columns!()
        ))
        .map_err(sql_err)?
        .query_row(
            params![child.flow_id, child.flow_type, child.status, json(&child.metadata)?, ts(child.created_at)?, snapshot_id, flow_id],
            flow_row,
        )
        .optional();
    let flow = match inserted {
        Ok(Some(flow)) => flow,
        Ok(None) => return Err(Error::FlowNotFound(flow_id.to_string())),
        Err(e)
            if matches!(
                constraint(&e),
                Some(
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                )
            ) =>
        {
            return Err(Error::FlowExists(child.flow_id.clone()));
        }
        Err(e) => return Err(sql_err(e)),
    };
    let doc = write_state(conn, &flow.flow_id, &state, flow.created_at)?;
    Ok((flow, doc))
}
