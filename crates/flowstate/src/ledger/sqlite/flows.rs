//! Flows and transitions on SQLite: reads on the pool, writes as jobs of the writer thread
//! ([`super::writer`]), each a single statement or a sequence whose later steps cannot fail on
//! the caller's input.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};
use sqlx::{QueryBuilder, Sqlite};
use time::OffsetDateTime;

use super::SqliteLedger;
use super::writer::{constraint, flow_row, json, sql_err, ts};
use crate::error::{Error, Result};
use crate::ledger::FlowLedger;
use crate::ledger::sql::flows::{
    FlowRow, TransitionRow, attach_documents, cas_failure, delete_statements, flow_columns,
    push_filters, subtree,
};
use crate::model::{DeletedFlow, Flow, FlowFilter, Transition};

#[async_trait]
impl FlowLedger for SqliteLedger {
    async fn insert_flow(&self, flow: &Flow) -> Result<i64> {
        let flow = flow.clone();
        self.writer.submit(move |c| insert_flow(c, &flow)).await
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

    async fn has_sensitive_flows(&self) -> Result<bool> {
        let any: Option<i32> = sqlx::query_scalar("SELECT 1 FROM flows WHERE sensitive LIMIT 1")
            .fetch_optional(&self.reader)
            .await?;
        Ok(any.is_some())
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
            .submit(move |c| delete_flow(c, &flow_id, recursive))
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
            .submit(move |c| transition(c, &flow_id, &from, &to, &metadata, at))
            .await
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

/// Registers a flow; returns its registration number.
fn insert_flow(conn: &Connection, flow: &Flow) -> Result<i64> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO flows (flow_id, flow_type, parent_flow_id, status, metadata, \
             created_at, updated_at, version, sensitive) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .map_err(sql_err)?;
    let result = stmt.execute(params![
        flow.flow_id,
        flow.flow_type,
        flow.parent_flow_id,
        flow.status,
        json(&flow.metadata)?,
        ts(flow.created_at)?,
        ts(flow.updated_at)?,
        flow.version,
        flow.sensitive,
    ]);
    match result {
        // `seq` is the rowid (INTEGER PRIMARY KEY); AUTOINCREMENT never hands one out twice.
        Ok(_) => Ok(conn.last_insert_rowid()),
        Err(e) => Err(match constraint(&e) {
            Some(
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY,
            ) => Error::FlowExists(flow.flow_id.clone()),
            Some(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => {
                Error::ParentNotFound(flow.parent_flow_id.clone().unwrap_or_default())
            }
            _ => sql_err(e),
        }),
    }
}

/// Compare-and-set transition: UPDATE-if-status, then the history row (whose key is the version
/// the UPDATE just produced, so it cannot conflict).
fn transition(
    conn: &Connection,
    flow_id: &str,
    from: &str,
    to: &str,
    metadata: &Map<String, Value>,
    at: OffsetDateTime,
) -> Result<(Transition, Flow)> {
    let at_text = ts(at)?;
    let updated = conn
        .prepare_cached(concat!(
            "UPDATE flows SET status = $1, version = version + 1, updated_at = $2 \
             WHERE flow_id = $3 AND status = $4 RETURNING ",
            flow_columns!()
        ))
        .map_err(sql_err)?
        .query_row(params![to, at_text, flow_id, from], flow_row)
        .optional()
        .map_err(sql_err)?;
    let Some(flow) = updated else {
        let current: Option<String> = conn
            .prepare_cached("SELECT status FROM flows WHERE flow_id = $1")
            .map_err(sql_err)?
            .query_row(params![flow_id], |r| r.get(0))
            .optional()
            .map_err(sql_err)?;
        return Err(cas_failure(current, flow_id, from));
    };
    conn.prepare_cached(
        "INSERT INTO flow_transitions (flow_id, seq, from_status, to_status, metadata, at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .map_err(sql_err)?
    .execute(params![
        flow_id,
        flow.version,
        from,
        to,
        json(metadata)?,
        at_text
    ])
    .map_err(sql_err)?;
    Ok((Transition::recorded(&flow, from, to, metadata, at), flow))
}

/// Deletes a flow (or its subtree), returning what went with it.
fn delete_flow(conn: &Connection, flow_id: &str, recursive: bool) -> Result<Vec<DeletedFlow>> {
    let (list_attached, delete) = if recursive {
        delete_statements!(recursive)
    } else {
        delete_statements!(single)
    };
    let attached = conn
        .prepare_cached(list_attached)
        .map_err(sql_err)?
        .query_map(params![flow_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(sql_err)?
        .collect::<rusqlite::Result<Vec<(String, String, String)>>>()
        .map_err(sql_err)?;
    let flows = conn
        .prepare_cached(delete)
        .map_err(sql_err)?
        .query_map(params![flow_id], flow_row)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<Flow>>>());
    let flows = match flows {
        Ok(flows) => flows,
        Err(e) if constraint(&e) == Some(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => {
            return Err(Error::HasChildren(flow_id.to_string()));
        }
        Err(e) => return Err(sql_err(e)),
    };
    if flows.is_empty() {
        return Err(Error::FlowNotFound(flow_id.to_string()));
    }
    Ok(attach_documents(flows, attached))
}
