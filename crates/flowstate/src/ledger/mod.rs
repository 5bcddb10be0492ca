//! The ledger seam: the system of record for flows and their history.
//!
//! [`Ledger`] is deliberately narrow (domain operations, not SQL), so each backend can use its
//! best statement for each operation: PostgreSQL does a transition in one data-modifying CTE,
//! SQLite in one immediate transaction on its single writer connection. The same conformance
//! tests (`flowstate-server`'s API tests) run against both.

mod postgres;
mod postgres_batch;
mod sqlite;
mod sqlite_writer;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::config::DatabaseConfig;
use crate::documents::{DocKind, Document, Owner};
use crate::error::{Error, Result};
use crate::fallbacks::FallbackRecord;
use crate::flows::{Flow, FlowFilter};
use crate::snapshots::Snapshot;
use crate::transitions::Transition;

pub use postgres::PostgresLedger;
pub use sqlite::SqliteLedger;

/// Operations the system of record provides.
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Backend name for health output (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Round trip to check the ledger answers.
    async fn ping(&self) -> Result<()>;

    /// Inserts a new flow and returns its registration number ([`Flow::incarnation`]).
    /// [`Error::FlowExists`] if the id is taken, [`Error::ParentNotFound`] if the parent does
    /// not exist.
    async fn insert_flow(&self, flow: &Flow) -> Result<i64>;

    /// The flow, if it exists.
    async fn get_flow(&self, flow_id: &str) -> Result<Option<Flow>>;

    /// Up to `limit` flows matching `filter` with registration sequence above `after`, in
    /// sequence order, each with its sequence (the paging cursor).
    async fn list_flows(
        &self,
        filter: &FlowFilter,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<(i64, Flow)>>;

    /// Child ids of a flow (direct, or the whole subtree breadth-first when `recursive`).
    async fn children(&self, flow_id: &str, recursive: bool) -> Result<Vec<String>>;

    /// Deletes a flow (and its subtree when `recursive`) with everything attached to it,
    /// returning what was deleted (so the hot tier can forget it). [`Error::HasChildren`] when
    /// it has children and not `recursive`.
    async fn delete_flow(&self, flow_id: &str, recursive: bool) -> Result<Vec<DeletedFlow>>;

    /// Creates or replaces a document; returns it (with its new version) and its flow.
    /// [`Error::FlowNotFound`] when the flow does not exist.
    async fn put_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
        body: &Map<String, Value>,
        at: OffsetDateTime,
    ) -> Result<(Document, Owner)>;

    /// A document and its flow.
    async fn get_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
    ) -> Result<Option<(Document, Owner)>>;

    /// Names of a flow's documents of one kind, sorted.
    async fn list_documents(&self, kind: DocKind, flow_id: &str) -> Result<Vec<String>>;

    /// Takes a snapshot (parent: the flow's head), makes it the head and drops all but the newest
    /// `keep`. [`Error::SnapshotExists`] for a taken id.
    async fn create_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        state: &Map<String, Value>,
        at: OffsetDateTime,
        keep: u32,
    ) -> Result<TakenSnapshot>;

    /// A snapshot and its flow.
    async fn get_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
    ) -> Result<Option<(Snapshot, Owner)>>;

    /// A flow's snapshot ids, newest first.
    async fn list_snapshots(&self, flow_id: &str) -> Result<Vec<String>>;

    /// Rolls the flow's state back to the snapshot (which becomes its head).
    async fn restore_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        at: OffsetDateTime,
    ) -> Result<(Flow, Document)>;

    /// Registers `child` with the snapshot's state.
    async fn fork_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        child: &Flow,
    ) -> Result<(Flow, Document)>;

    /// Appends aggregated rows to `redis_fallback_log`.
    async fn record_fallbacks(&self, rows: &[FallbackRecord]) -> Result<()>;

    /// Records hot-tier keys a write could not reach, to delete before Redis serves them again.
    async fn record_invalidations(&self, keys: &[String], at: OffsetDateTime) -> Result<()>;

    /// Up to `limit` recorded invalidations with ids above `after`, oldest first.
    async fn pending_invalidations(&self, after: i64, limit: u32) -> Result<Vec<Invalidation>>;

    /// Forgets invalidations that have been carried out.
    async fn clear_invalidations(&self, ids: &[i64]) -> Result<()>;

    /// The newest `redis_fallback_log` rows, newest first.
    async fn list_fallbacks(&self, limit: u32) -> Result<Vec<FallbackRecord>>;

    /// Compare-and-set transition: status `from` -> `to`, version + 1, history row; all or
    /// nothing. [`Error::StaleTransition`] or [`Error::FlowNotFound`] otherwise.
    async fn transition(
        &self,
        flow_id: &str,
        from: &str,
        to: &str,
        metadata: &Map<String, Value>,
        at: OffsetDateTime,
    ) -> Result<(Transition, Flow)>;

    /// Transitions with id above `after`, oldest first.
    async fn transitions(&self, flow_id: &str, after: i64, limit: u32) -> Result<Vec<Transition>>;
}

/// Opens the ledger named by `cfg.url`, applying pending migrations.
pub async fn open(cfg: &DatabaseConfig) -> Result<Box<dyn Ledger>> {
    Ok(if cfg.url.starts_with("sqlite:") {
        Box::new(SqliteLedger::connect(cfg).await?)
    } else {
        Box::new(PostgresLedger::connect(cfg).await?)
    })
}

/// A `flows` row as both backends return it.
#[derive(sqlx::FromRow)]
struct FlowRow {
    seq: i64,
    flow_id: String,
    flow_type: String,
    parent_flow_id: Option<String>,
    status: String,
    metadata: Json<Map<String, Value>>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    version: i64,
}

impl FlowRow {
    fn into_flow(self) -> Flow {
        Flow {
            flow_id: self.flow_id,
            flow_type: self.flow_type,
            parent_flow_id: self.parent_flow_id,
            status: self.status,
            metadata: self.metadata.0,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
            incarnation: self.seq,
        }
    }
}

/// A deleted flow and what went with it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeletedFlow {
    /// The flow as it was.
    pub flow: Flow,
    /// Its documents (kind, name).
    pub documents: Vec<(DocKind, String)>,
    /// Its snapshot ids.
    pub snapshots: Vec<String>,
}

/// Groups `(flow_id, kind, name)` rows (kind `snapshot` for snapshots) under the deleted flows
/// they belong to.
fn attach_documents(flows: Vec<Flow>, attached: Vec<(String, String, String)>) -> Vec<DeletedFlow> {
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

/// The document a write just stored (both backends return their writes this way).
fn written_document(
    flow_id: &str,
    name: &str,
    body: &Map<String, Value>,
    at: OffsetDateTime,
    version: i64,
) -> Document {
    Document {
        flow_id: flow_id.to_string(),
        name: name.to_string(),
        body: body.clone(),
        saved_at: at,
        version,
    }
}

/// A snapshot just taken.
#[derive(Debug, Clone, PartialEq)]
pub struct TakenSnapshot {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Ids of the older snapshots dropped to keep the newest few.
    pub evicted: Vec<String>,
    /// Its flow.
    pub owner: Owner,
}

/// SQL of a snapshot read, with its flow (shared: `$n` placeholders work in SQLite too).
const GET_SNAPSHOT: &str = "SELECT s.snapshot_id, s.parent_snapshot_id, s.state, s.created_at, \
     f.status, f.seq AS incarnation FROM flow_snapshots s JOIN flows f ON f.flow_id = s.flow_id \
     WHERE s.flow_id = $1 AND s.snapshot_id = $2";

/// A `flow_snapshots` row joined with its flow's status and registration number.
#[derive(sqlx::FromRow)]
struct SnapshotRow {
    snapshot_id: String,
    parent_snapshot_id: Option<String>,
    state: Json<Map<String, Value>>,
    created_at: OffsetDateTime,
    status: String,
    incarnation: i64,
}

impl SnapshotRow {
    fn into_snapshot(self, flow_id: &str) -> (Snapshot, Owner) {
        (
            Snapshot {
                flow_id: flow_id.to_string(),
                snapshot_id: self.snapshot_id,
                parent_snapshot_id: self.parent_snapshot_id,
                state: self.state.0,
                created_at: self.created_at,
            },
            Owner {
                status: self.status,
                incarnation: self.incarnation,
            },
        )
    }
}

/// The snapshot a write just stored (both backends return their writes this way).
struct NewSnapshot<'a> {
    flow_id: &'a str,
    snapshot_id: &'a str,
    parent: Option<String>,
    state: &'a Map<String, Value>,
    at: OffsetDateTime,
}

impl NewSnapshot<'_> {
    fn taken(self, evicted: Vec<String>, owner: Owner) -> TakenSnapshot {
        TakenSnapshot {
            snapshot: Snapshot {
                flow_id: self.flow_id.to_string(),
                snapshot_id: self.snapshot_id.to_string(),
                parent_snapshot_id: self.parent,
                state: self.state.clone(),
                created_at: self.at,
            },
            evicted,
            owner,
        }
    }
}

/// A `flow_documents` row joined with its flow's status and registration number.
#[derive(sqlx::FromRow)]
struct DocumentRow {
    flow_id: String,
    name: String,
    body: Json<Map<String, Value>>,
    saved_at: OffsetDateTime,
    version: i64,
    status: String,
    incarnation: i64,
}

impl DocumentRow {
    fn into_document(self) -> (Document, Owner) {
        (
            Document {
                flow_id: self.flow_id,
                name: self.name,
                body: self.body.0,
                saved_at: self.saved_at,
                version: self.version,
            },
            Owner {
                status: self.status,
                incarnation: self.incarnation,
            },
        )
    }
}

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
use subtree;

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
use delete_statements;

/// SQL of a document read (shared: `$n` placeholders work in SQLite too).
const GET_DOCUMENT: &str = "SELECT d.flow_id, d.name, d.body, d.saved_at, d.version, f.status, \
     f.seq AS incarnation FROM flow_documents d JOIN flows f ON f.flow_id = d.flow_id \
     WHERE d.flow_id = $1 AND d.kind = $2 AND d.name = $3";

/// SQL of one fallback log row.
const INSERT_FALLBACK: &str = "INSERT INTO redis_fallback_log \
     (service, operation, reason, fallback_source, timestamp, count, context) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// A hot-tier key recorded as possibly stale.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Invalidation {
    /// Row id (increasing).
    pub id: i64,
    /// The key.
    pub cache_key: String,
    /// When the write that missed it happened.
    pub recorded_at: OffsetDateTime,
}

/// SQL of the oldest recorded invalidations.
const PENDING_INVALIDATIONS: &str = "SELECT id, cache_key, recorded_at FROM hot_invalidations \
     WHERE id > $1 ORDER BY id LIMIT $2";

/// SQL of the newest fallback log rows.
const LIST_FALLBACKS: &str = "SELECT id, service, operation, reason, fallback_source, timestamp, \
     count, context FROM redis_fallback_log ORDER BY id DESC LIMIT $1";

/// A `redis_fallback_log` row.
#[derive(sqlx::FromRow)]
struct FallbackRow {
    id: i64,
    service: String,
    operation: String,
    reason: String,
    fallback_source: Option<String>,
    timestamp: OffsetDateTime,
    count: i64,
    context: Option<Json<Value>>,
}

impl FallbackRow {
    fn into_record(self) -> FallbackRecord {
        FallbackRecord {
            id: Some(self.id),
            service: self.service,
            operation: self.operation,
            reason: self.reason,
            fallback_source: self.fallback_source.unwrap_or_default(),
            timestamp: self.timestamp,
            count: self.count,
            context: self.context.map(|j| j.0).unwrap_or(Value::Null),
        }
    }
}

/// Binds one fallback row to [`INSERT_FALLBACK`].
fn insert_fallback<DB: sqlx::Database>(
    r: &FallbackRecord,
) -> sqlx::query::Query<'_, DB, <DB as sqlx::Database>::Arguments>
where
    for<'e> &'e str: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
    for<'e> OffsetDateTime: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
    for<'e> i64: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
    for<'e> Json<&'e Value>: sqlx::Encode<'e, DB> + sqlx::Type<DB>,
    <DB as sqlx::Database>::Arguments: Default,
{
    sqlx::query(INSERT_FALLBACK)
        .bind(r.service.as_str())
        .bind(r.operation.as_str())
        .bind(r.reason.as_str())
        .bind(r.fallback_source.as_str())
        .bind(r.timestamp)
        .bind(r.count)
        .bind(Json(&r.context))
}

/// SQL of a document upsert; the version grows by one per write.
const PUT_DOCUMENT: &str = "INSERT INTO flow_documents (flow_id, kind, name, body, saved_at, version) \
     VALUES ($1, $2, $3, $4, $5, 1) \
     ON CONFLICT (flow_id, kind, name) DO UPDATE \
     SET body = excluded.body, saved_at = excluded.saved_at, version = flow_documents.version + 1 \
     RETURNING version";

/// SQL of a document listing.
const LIST_DOCUMENTS: &str =
    "SELECT name FROM flow_documents WHERE flow_id = $1 AND kind = $2 ORDER BY name";

/// A `flow_transitions` row.
#[derive(sqlx::FromRow)]
struct TransitionRow {
    seq: i64,
    from_status: String,
    to_status: String,
    metadata: Json<Map<String, Value>>,
    at: OffsetDateTime,
}

impl TransitionRow {
    fn into_transition(self) -> Transition {
        Transition {
            id: self.seq,
            from: self.from_status,
            to: self.to_status,
            at: self.at,
            metadata: self.metadata.0,
        }
    }
}

/// Columns selected for a [`FlowRow`]; a macro so that queries stay `&'static str` (sqlx only
/// runs SQL it can see is not built from input).
macro_rules! flow_columns {
    () => {
        "seq, flow_id, flow_type, parent_flow_id, status, metadata, created_at, updated_at, version"
    };
}
use flow_columns;

/// Maps constraint violations of an insert into `flows` to domain errors.
fn insert_error(err: sqlx::Error, flow: &Flow) -> Error {
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
fn delete_error(err: sqlx::Error, flow_id: &str) -> Error {
    if let sqlx::Error::Database(db) = &err
        && db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation
    {
        return Error::HasChildren(flow_id.to_string());
    }
    err.into()
}

/// Why a compare-and-set transition matched no row, given the flow's current status.
fn cas_failure(current: Option<String>, flow_id: &str, from: &str) -> Error {
    match current {
        Some(current) => Error::StaleTransition {
            expected: from.to_string(),
            current,
        },
        None => Error::FlowNotFound(flow_id.to_string()),
    }
}

/// The transition just recorded, as the ledger stored it.
fn recorded(
    flow: &Flow,
    from: &str,
    to: &str,
    metadata: &Map<String, Value>,
    at: OffsetDateTime,
) -> Transition {
    Transition {
        id: flow.version,
        from: from.to_string(),
        to: to.to_string(),
        at,
        metadata: metadata.clone(),
    }
}

/// Appends the optional filters of a flow listing to `qb` (portable SQL).
fn push_filters<DB: sqlx::Database>(
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
