//! Flows and transitions on PostgreSQL. Registrations and transitions that arrive together
//! share one statement ([`super::batch`]); a delete locks its subtree, lists what goes with it
//! and deletes in one transaction, retrying when PostgreSQL picks it as a deadlock victim.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use time::OffsetDateTime;

use super::PostgresLedger;
use super::batch::{BatchOp, by_ord, unavailable};
use crate::error::{Error, Result};
use crate::ledger::FlowLedger;
use crate::ledger::sql::flows::{
    FlowRow, TransitionRow, attach_documents, cas_failure, delete_error, delete_statements,
    flow_columns, insert_error, push_filters, subtree,
};
use crate::model::{DeletedFlow, Flow, FlowFilter, Transition};

#[async_trait]
impl FlowLedger for PostgresLedger {
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

    async fn has_sensitive_flows(&self) -> Result<bool> {
        let any: Option<i32> = sqlx::query_scalar("SELECT 1 FROM flows WHERE sensitive LIMIT 1")
            .fetch_optional(&self.pool)
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

/// Registrations: one `INSERT … SELECT FROM unnest(…)`. A row whose parent is missing is
/// filtered out and a duplicate id is skipped (`ON CONFLICT DO NOTHING`); which of the two it
/// was is looked up afterwards, only when some row was not inserted.
///
/// The parent check is a scalar subquery, not `EXISTS`: beside the `OR`, PostgreSQL may plan an
/// `EXISTS` as a hash of the whole `flows` table, and did on a new database, whose plan each
/// connection then kept while the table grew (registrations 3× slower, measured).
pub(super) struct Registrations;

#[async_trait]
impl BatchOp for Registrations {
    type Req = Flow;
    /// The registration number.
    type Out = i64;

    fn key(flow: &Flow) -> String {
        flow.flow_id.clone()
    }

    fn depends_on(flow: &Flow) -> Option<&str> {
        flow.parent_flow_id.as_deref()
    }

    async fn batch(
        conn: &mut PgConnection,
        flows: &[Flow],
    ) -> std::result::Result<Vec<Result<i64>>, sqlx::Error> {
        let inserted: Vec<(String, i64)> = sqlx::query_as(
            "INSERT INTO flows (flow_id, flow_type, parent_flow_id, status, metadata, \
               created_at, updated_at, version, sensitive) \
             SELECT r.flow_id, r.flow_type, r.parent_flow_id, r.status, r.metadata, \
               r.created_at, r.updated_at, r.version, r.sensitive \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], \
               $6::timestamptz[], $7::timestamptz[], $8::int8[], $9::bool[]) WITH ORDINALITY \
               AS r(flow_id, flow_type, parent_flow_id, status, metadata, created_at, \
                    updated_at, version, sensitive, ord) \
             WHERE r.parent_flow_id IS NULL \
                OR (SELECT true FROM flows p WHERE p.flow_id = r.parent_flow_id) \
             ORDER BY r.ord \
             ON CONFLICT (flow_id) DO NOTHING \
             RETURNING flow_id, seq",
        )
        .bind(flows.iter().map(|f| f.flow_id.as_str()).collect::<Vec<_>>())
        .bind(
            flows
                .iter()
                .map(|f| f.flow_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            flows
                .iter()
                .map(|f| f.parent_flow_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(flows.iter().map(|f| f.status.as_str()).collect::<Vec<_>>())
        .bind(flows.iter().map(|f| Json(&f.metadata)).collect::<Vec<_>>())
        .bind(flows.iter().map(|f| f.created_at).collect::<Vec<_>>())
        .bind(flows.iter().map(|f| f.updated_at).collect::<Vec<_>>())
        .bind(flows.iter().map(|f| f.version).collect::<Vec<_>>())
        .bind(flows.iter().map(|f| f.sensitive).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        let inserted: HashMap<String, i64> = inserted.into_iter().collect();
        let refused: Vec<&str> = flows
            .iter()
            .map(|f| f.flow_id.as_str())
            .filter(|id| !inserted.contains_key(*id))
            .collect();
        // The batch has committed: from here on, a failure may only cost the refused requests
        // the reason for their refusal, never a replay.
        let existing: std::result::Result<HashSet<String>, String> = if refused.is_empty() {
            Ok(HashSet::new())
        } else {
            sqlx::query_scalar("SELECT flow_id FROM flows WHERE flow_id = ANY($1)")
                .bind(&refused)
                .fetch_all(&mut *conn)
                .await
                .map(|ids: Vec<String>| ids.into_iter().collect())
                .map_err(|e| e.to_string())
        };
        Ok(flows
            .iter()
            .map(|f| {
                if let Some(seq) = inserted.get(&f.flow_id) {
                    return Ok(*seq);
                }
                let existing = match &existing {
                    Ok(existing) => existing,
                    Err(reason) => return Err(unavailable(reason)),
                };
                if existing.contains(&f.flow_id) || f.parent_flow_id.is_none() {
                    Err(Error::FlowExists(f.flow_id.clone()))
                } else {
                    Err(Error::ParentNotFound(
                        f.parent_flow_id.clone().unwrap_or_default(),
                    ))
                }
            })
            .collect())
    }

    async fn single(pool: &PgPool, flow: &Flow) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO flows (flow_id, flow_type, parent_flow_id, status, metadata, \
             created_at, updated_at, version, sensitive) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING seq",
        )
        .bind(&flow.flow_id)
        .bind(&flow.flow_type)
        .bind(&flow.parent_flow_id)
        .bind(&flow.status)
        .bind(Json(&flow.metadata))
        .bind(flow.created_at)
        .bind(flow.updated_at)
        .bind(flow.version)
        .bind(flow.sensitive)
        .fetch_one(pool)
        .await
        .map_err(|e| insert_error(e, flow))
    }
}

/// A compare-and-set transition waiting for its batch.
pub(super) struct TransitionReq {
    pub(super) flow_id: String,
    pub(super) from: String,
    pub(super) to: String,
    pub(super) metadata: Map<String, Value>,
    pub(super) at: OffsetDateTime,
}

/// A `flows` row updated by a batch, with the position of its request.
#[derive(sqlx::FromRow)]
struct UpdatedRow {
    ord: i64,
    #[sqlx(flatten)]
    flow: FlowRow,
}

/// Transitions: one `UPDATE … FROM unnest(…)` that moves every flow still in its `from`
/// status, and inserts their history rows in the same statement. The current status of the
/// flows that did not move is read afterwards, only when some did not.
pub(super) struct Transitions;

#[async_trait]
impl BatchOp for Transitions {
    type Req = TransitionReq;
    type Out = (Transition, Flow);

    fn key(req: &TransitionReq) -> String {
        req.flow_id.clone()
    }

    async fn batch(
        conn: &mut PgConnection,
        reqs: &[TransitionReq],
    ) -> std::result::Result<Vec<Result<(Transition, Flow)>>, sqlx::Error> {
        let rows: Vec<UpdatedRow> = sqlx::query_as(
            "WITH r AS ( \
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], \
                 $5::timestamptz[]) WITH ORDINALITY \
                 AS r(flow_id, from_status, to_status, metadata, at, ord)), \
             upd AS ( \
               UPDATE flows f SET status = r.to_status, version = f.version + 1, \
                 updated_at = r.at \
               FROM r WHERE f.flow_id = r.flow_id AND f.status = r.from_status \
               RETURNING r.ord, f.seq, f.flow_id, f.flow_type, f.parent_flow_id, f.status, \
                 f.metadata, f.created_at, f.updated_at, f.version, f.sensitive), \
             ins AS ( \
               INSERT INTO flow_transitions (flow_id, seq, from_status, to_status, metadata, at) \
               SELECT upd.flow_id, upd.version, r.from_status, r.to_status, r.metadata, r.at \
               FROM upd JOIN r ON r.ord = upd.ord) \
             SELECT * FROM upd",
        )
        .bind(reqs.iter().map(|r| r.flow_id.as_str()).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| r.from.as_str()).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| r.to.as_str()).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| Json(&r.metadata)).collect::<Vec<_>>())
        .bind(reqs.iter().map(|r| r.at).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        let moved = by_ord(
            reqs.len(),
            rows.into_iter().map(|r| (r.ord, r.flow.into_flow())),
        );
        let stuck: Vec<&str> = reqs
            .iter()
            .zip(&moved)
            .filter(|(_, m)| m.is_none())
            .map(|(r, _)| r.flow_id.as_str())
            .collect();
        // The batch has committed: from here on, a failure may only cost the stuck requests
        // their current status, never a replay.
        let current: std::result::Result<HashMap<String, String>, String> = if stuck.is_empty() {
            Ok(HashMap::new())
        } else {
            sqlx::query_as("SELECT flow_id, status FROM flows WHERE flow_id = ANY($1)")
                .bind(&stuck)
                .fetch_all(&mut *conn)
                .await
                .map(|rows: Vec<(String, String)>| rows.into_iter().collect())
                .map_err(|e| e.to_string())
        };
        Ok(reqs
            .iter()
            .zip(moved)
            .map(|(r, flow)| match (flow, &current) {
                (Some(flow), _) => Ok((
                    Transition::recorded(&flow, &r.from, &r.to, &r.metadata, r.at),
                    flow,
                )),
                (None, Ok(current)) => Err(cas_failure(
                    current.get(&r.flow_id).cloned(),
                    &r.flow_id,
                    &r.from,
                )),
                (None, Err(reason)) => Err(unavailable(reason)),
            })
            .collect())
    }

    async fn single(pool: &PgPool, r: &TransitionReq) -> Result<(Transition, Flow)> {
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
        .bind(&r.flow_id)
        .bind(&r.from)
        .bind(&r.to)
        .bind(Json(&r.metadata))
        .bind(r.at)
        .fetch_optional(pool)
        .await?;
        let Some(row) = updated else {
            let current: Option<String> =
                sqlx::query_scalar("SELECT status FROM flows WHERE flow_id = $1")
                    .bind(&r.flow_id)
                    .fetch_optional(pool)
                    .await?;
            return Err(cas_failure(current, &r.flow_id, &r.from));
        };
        let flow = row.into_flow();
        Ok((
            Transition::recorded(&flow, &r.from, &r.to, &r.metadata, r.at),
            flow,
        ))
    }
}
