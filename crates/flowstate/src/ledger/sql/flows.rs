//! SQL both ledgers share for flows and transitions: the row types, the column list, the
//! subtree CTE of deletes, listing filters, and the mapping of constraint violations to domain
//! errors. (`$n` placeholders work in SQLite too.)

use serde_json::{Map, Value};
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::error::Error;
use crate::model::{DeletedFlow, DocKind, Flow, FlowFilter, Transition};

/// A `flows` row as both backends return it.
#[derive(sqlx::FromRow)]
pub(in crate::ledger) struct FlowRow {
    pub(in crate::ledger) seq: i64,
    pub(in crate::ledger) flow_id: String,
    flow_type: String,
    parent_flow_id: Option<String>,
    status: String,
    metadata: Json<Map<String, Value>>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    version: i64,
    sensitive: bool,
}

impl FlowRow {
    pub(in crate::ledger) fn into_flow(self) -> Flow {
        Flow {
            flow_id: self.flow_id,
            flow_type: self.flow_type,
            parent_flow_id: self.parent_flow_id,
            status: self.status,
            metadata: self.metadata.0,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
            sensitive: self.sensitive,
            incarnation: self.seq,
        }
    }
}

/// Groups `(flow_id, kind, name)` rows (kind `snapshot` for snapshots) under the deleted flows
/// they belong to.
pub(in crate::ledger) fn attach_documents(
    flows: Vec<Flow>,
    attached: Vec<(String, String, String)>,
) -> Vec<DeletedFlow> {
    let mut deleted: Vec<DeletedFlow> = flows
        .into_iter()
        .map(|flow| DeletedFlow {
            flow,
            documents: Vec::new(),
            snapshots: Vec::new(),
        })
        .collect();
    for (flow_id, kind, name) in attached {
        let Some(d) = deleted.iter_mut().find(|d| d.flow.flow_id == flow_id) else {
            continue;
        };
        match DocKind::parse(&kind) {
            Some(kind) => d.documents.push((kind, name)),
            None => d.snapshots.push(name),
        }
    }
    deleted
}

/// Columns selected for a [`FlowRow`]; a macro so that queries stay `&'static str` (sqlx only
/// runs SQL it can see is not built from input).
macro_rules! flow_columns {
    () => {
        "seq, flow_id, flow_type, parent_flow_id, status, metadata, created_at, updated_at, version, \
         sensitive"
    };
}
pub(in crate::ledger) use flow_columns;

/// The subtree of `$1` (itself included) as CTE `sub(flow_id)`, for deletes.
macro_rules! subtree {
    (recursive) => {
        "WITH RECURSIVE sub(flow_id) AS (SELECT $1 UNION ALL \
         SELECT f.flow_id FROM flows f JOIN sub ON f.parent_flow_id = sub.flow_id) "
    };
    (single) => {
        "WITH sub(flow_id) AS (SELECT CAST($1 AS TEXT)) "
    };
}
pub(in crate::ledger) use subtree;

/// Statements of a delete, for a subtree or a single flow: list the documents, then delete.
macro_rules! delete_statements {
    ($mode:ident) => {
        (
            concat!(
                subtree!($mode),
                "SELECT flow_id, kind, name FROM flow_documents \
                 WHERE flow_id IN (SELECT flow_id FROM sub) \
                 UNION ALL SELECT flow_id, 'snapshot', snapshot_id FROM flow_snapshots \
                 WHERE flow_id IN (SELECT flow_id FROM sub)"
            ),
            concat!(
                subtree!($mode),
                "DELETE FROM flows WHERE flow_id IN (SELECT flow_id FROM sub) RETURNING ",
                flow_columns!()
            ),
        )
    };
}
pub(in crate::ledger) use delete_statements;

/// A `flow_transitions` row.
#[derive(sqlx::FromRow)]
pub(in crate::ledger) struct TransitionRow {
    seq: i64,
    from_status: String,
    to_status: String,
    metadata: Json<Map<String, Value>>,
    at: OffsetDateTime,
}

impl TransitionRow {
    pub(in crate::ledger) fn into_transition(self) -> Transition {
        Transition {
            id: self.seq,
            from: self.from_status,
            to: self.to_status,
            at: self.at,
            metadata: self.metadata.0,
        }
    }
}

/// Maps constraint violations of an insert into `flows` to domain errors.
pub(in crate::ledger) fn insert_error(err: sqlx::Error, flow: &Flow) -> Error {
    if let sqlx::Error::Database(db) = &err {
        match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation => {
                return Error::FlowExists(flow.flow_id.clone());
            }
            sqlx::error::ErrorKind::ForeignKeyViolation => {
                return Error::ParentNotFound(flow.parent_flow_id.clone().unwrap_or_default());
            }
            _ => {}
        }
    }
    err.into()
}

/// Maps a failed delete: a foreign-key violation means children still point at the flow.
pub(in crate::ledger) fn delete_error(err: sqlx::Error, flow_id: &str) -> Error {
    if let sqlx::Error::Database(db) = &err
        && db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation
    {
        return Error::HasChildren(flow_id.to_string());
    }
    err.into()
}

/// Why a compare-and-set transition matched no row, given the flow's current status.
pub(in crate::ledger) fn cas_failure(current: Option<String>, flow_id: &str, from: &str) -> Error {
    match current {
        Some(current) => Error::StaleTransition {
            expected: from.to_string(),
            current,
        },
        None => Error::FlowNotFound(flow_id.to_string()),
    }
}

/// Appends the optional filters of a flow listing to `qb` (portable SQL).
pub(in crate::ledger) fn push_filters<DB: sqlx::Database>(
    qb: &mut sqlx::QueryBuilder<DB>,
    filter: &FlowFilter,
    after: Option<i64>,
    limit: u32,
) where
    for<'e> String: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
    for<'e> i64: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
{
    qb.push(" WHERE seq > ").push_bind(after.unwrap_or(0));
    for (column, value) in [
        ("status", &filter.status),
        ("flow_type", &filter.flow_type),
        ("parent_flow_id", &filter.parent_flow_id),
    ] {
        if let Some(v) = value {
            qb.push(" AND ")
                .push(column)
                .push(" = ")
                .push_bind(v.clone());
        }
    }
    qb.push(" ORDER BY seq LIMIT ").push_bind(i64::from(limit));
}
