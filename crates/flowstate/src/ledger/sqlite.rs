//! The embedded ledger: one SQLite file in WAL mode.
//!
//! SQLite allows one writer at a time. Rather than letting concurrent writers spin in SQLite's
//! busy handler (sleeps of up to 100 ms, which wreck tail latency), all writes go to one writer
//! task that owns the only write connection and **commits them in groups**: whatever requests
//! are waiting when it becomes free run in one transaction, so a commit (and its WAL pages) is
//! paid once per group instead of once per request. Every write is a single statement, or a
//! statement sequence whose later steps cannot fail on the caller's input, so a rejected request
//! (duplicate id, stale transition) rolls back only its own statement and its neighbours commit;
//! an I/O failure rolls back the whole group and every request in it gets a retryable 503.
//! Each caller is answered only after the group's COMMIT. Reads use a separate pool and never
//! wait for the writer. `synchronous = NORMAL` is the WAL setting SQLite recommends: a crash of
//! the process loses nothing, a power loss at most the last transactions.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::types::Json;
use sqlx::{ConnectOptions, QueryBuilder, Sqlite, SqlitePool};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::{
    DeletedFlow, DocumentRow, FallbackRow, FlowRow, GET_DOCUMENT, LIST_DOCUMENTS, LIST_FALLBACKS,
    Ledger, PUT_DOCUMENT, TransitionRow, attach_documents, cas_failure, delete_error,
    delete_statements, flow_columns, insert_error, insert_fallback, push_filters, recorded,
    subtree,
};
use crate::config::DatabaseConfig;
use crate::documents::{DocKind, Document};
use crate::error::{Error, Result};
use crate::fallbacks::FallbackRecord;
use crate::flows::{Flow, FlowFilter};
use crate::snapshots::Snapshot;
use crate::transitions::Transition;

/// Most requests committed in one group.
const MAX_GROUP: usize = 256;

/// Requests waiting for the writer; beyond this, callers wait to enqueue (backpressure).
const QUEUE: usize = 4096;

mod snapshots {
    super::super::snapshot_sql::snapshot_statements!(sqlx::SqliteConnection, "");
}

/// Ledger on a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteLedger {
    /// Queue of the writer task, which owns the only write connection.
    writer: mpsc::Sender<Job>,
    /// Readers; WAL lets them run alongside the writer.
    reader: SqlitePool,
}

/// One write request: runs its statements on the writer connection inside the group's
/// transaction and hands back its outcome, delivered to the caller after COMMIT.
type Job =
    Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Box<dyn Outcome>> + Send>;

/// A job's result waiting for its group to commit.
trait Outcome: Send {
    /// Whether the failure poisons the group (I/O, corruption) rather than just this request.
    fn is_fatal(&self) -> bool;
    /// Answers the caller: the group committed.
    fn deliver(self: Box<Self>);
    /// Answers the caller: the group did not commit.
    fn fail(self: Box<Self>, reason: &str);
}

struct Pending<T> {
    result: Result<T>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T: Send> Outcome for Pending<T> {
    fn is_fatal(&self) -> bool {
        matches!(
            self.result,
            Err(Error::Ledger(_) | Error::LedgerUnavailable { .. })
        )
    }

    fn deliver(self: Box<Self>) {
        // A caller that went away no longer needs its answer; its write stands.
        let _ = self.reply.send(self.result);
    }

    fn fail(self: Box<Self>, reason: &str) {
        let _ = self.reply.send(Err(aborted(reason)));
    }
}

fn aborted(reason: &str) -> Error {
    Error::LedgerUnavailable {
        reason: format!("write not committed: {reason}"),
        retry_after: Duration::from_secs(1),
    }
}

/// The writer task: takes whatever is queued (up to [`MAX_GROUP`]) and commits it as one group.
async fn write_loop(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Job>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        metrics::histogram!("flowstate_ledger_group_size").record(group.len() as f64);
        commit_group(&mut conn, std::mem::take(&mut group)).await;
    }
}

/// Runs a group in one transaction. Jobs that never ran (the group failed before them) are
/// dropped, which their callers see as "not committed" too.
async fn commit_group(conn: &mut SqliteConnection, group: Vec<Job>) {
    if let Err(e) = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
        tracing::error!(error = %e, "cannot begin a ledger write group");
        return;
    }
    let mut outcomes: Vec<Box<dyn Outcome>> = Vec::with_capacity(group.len());
    for job in group {
        let outcome = job(conn).await;
        if outcome.is_fatal() {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            tracing::error!("ledger write group rolled back");
            outcome.deliver();
            outcomes
                .into_iter()
                .for_each(|o| o.fail("the transaction failed"));
            return;
        }
        outcomes.push(outcome);
    }
    if let Err(e) = sqlx::query("COMMIT").execute(&mut *conn).await {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        let reason = e.to_string();
        outcomes.into_iter().for_each(|o| o.fail(&reason));
        return;
    }
    outcomes.into_iter().for_each(|o| o.deliver());
}

/// A transition's inputs, moved into its job.
struct TransitionJob {
    flow_id: String,
    from: String,
    to: String,
    metadata: Map<String, Value>,
    at: OffsetDateTime,
}

/// A document write's inputs, moved into its job.
struct DocumentJob {
    kind: DocKind,
    flow_id: String,
    name: String,
    body: Map<String, Value>,
    at: OffsetDateTime,
}

async fn insert(conn: &mut SqliteConnection, flow: &Flow) -> Result<()> {
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
    .execute(conn)
    .await
    .map_err(|e| insert_error(e, flow))?;
    Ok(())
}

/// UPDATE-if-status then INSERT history: the INSERT cannot conflict (its key is the version the
/// UPDATE just produced), so the pair is atomic within the group without a savepoint.
async fn transition(conn: &mut SqliteConnection, t: &TransitionJob) -> Result<(Transition, Flow)> {
    let updated: Option<FlowRow> = sqlx::query_as(concat!(
        "UPDATE flows SET status = ?, version = version + 1, updated_at = ? \
         WHERE flow_id = ? AND status = ? RETURNING ",
        flow_columns!()
    ))
    .bind(&t.to)
    .bind(t.at)
    .bind(&t.flow_id)
    .bind(&t.from)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = updated else {
        let current: Option<String> =
            sqlx::query_scalar("SELECT status FROM flows WHERE flow_id = ?")
                .bind(&t.flow_id)
                .fetch_optional(&mut *conn)
                .await?;
        return Err(cas_failure(current, &t.flow_id, &t.from));
    };
    let flow = row.into_flow();
    sqlx::query(
        "INSERT INTO flow_transitions (flow_id, seq, from_status, to_status, metadata, at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&t.flow_id)
    .bind(flow.version)
    .bind(&t.from)
    .bind(&t.to)
    .bind(Json(&t.metadata))
    .bind(t.at)
    .execute(&mut *conn)
    .await?;
    Ok((recorded(&flow, &t.from, &t.to, &t.metadata, t.at), flow))
}

async fn delete(
    conn: &mut SqliteConnection,
    flow_id: &str,
    recursive: bool,
) -> Result<Vec<DeletedFlow>> {
    let (list_docs, delete) = if recursive {
        delete_statements!(recursive)
    } else {
        delete_statements!(single)
    };
    let docs: Vec<(String, String, String)> = sqlx::query_as(list_docs)
        .bind(flow_id)
        .fetch_all(&mut *conn)
        .await?;
    let rows: Vec<FlowRow> = sqlx::query_as(delete)
        .bind(flow_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| delete_error(e, flow_id))?;
    if rows.is_empty() {
        return Err(Error::FlowNotFound(flow_id.to_string()));
    }
    let flows = rows.into_iter().map(FlowRow::into_flow).collect();
    Ok(attach_documents(flows, docs))
}

async fn put_document(conn: &mut SqliteConnection, d: &DocumentJob) -> Result<(Document, String)> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM flows WHERE flow_id = $1")
        .bind(&d.flow_id)
        .fetch_optional(&mut *conn)
        .await?;
    let status = status.ok_or_else(|| Error::FlowNotFound(d.flow_id.clone()))?;
    let version: i64 = sqlx::query_scalar(PUT_DOCUMENT)
        .bind(&d.flow_id)
        .bind(d.kind.as_str())
        .bind(&d.name)
        .bind(Json(&d.body))
        .bind(d.at)
        .fetch_one(&mut *conn)
        .await?;
    let doc = Document {
        flow_id: d.flow_id.clone(),
        name: d.name.clone(),
        body: d.body.clone(),
        saved_at: d.at,
        version,
    };
    Ok((doc, status))
}

async fn record_fallbacks(conn: &mut SqliteConnection, rows: &[FallbackRecord]) -> Result<()> {
    for r in rows {
        insert_fallback::<Sqlite>(r).execute(&mut *conn).await?;
    }
    Ok(())
}

impl SqliteLedger {
    /// Opens (creating if missing) the database at `cfg.url`, applies migrations and starts the
    /// writer task.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(&cfg.url)
            .map_err(|e| Error::Config(format!("DATABASE_URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let mut conn = options.connect().await?;
        sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;

        let in_memory = cfg.url.contains(":memory:") || cfg.url.contains("mode=memory");
        if in_memory {
            return Err(Error::Config(
                "DATABASE_URL: an in-memory SQLite database cannot be shared by the writer and \
                 the readers; use a file"
                    .into(),
            ));
        }
        let reader = SqlitePoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms))
            .connect_with(options.read_only(true))
            .await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(conn, rx));
        Ok(SqliteLedger { writer: tx, reader })
    }

    /// Queues `work` for the writer and waits until its group committed (or did not).
    async fn submit<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let result = work(conn).await;
                Box::new(Pending { result, reply }) as Box<dyn Outcome>
            })
        });
        let gone = || aborted("the writer stopped or the group failed");
        self.writer.send(job).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
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

    async fn insert_flow(&self, flow: &Flow) -> Result<()> {
        let flow = flow.clone();
        self.submit(move |c| Box::pin(async move { insert(c, &flow).await }))
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
        self.submit(move |c| Box::pin(async move { delete(c, &flow_id, recursive).await }))
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
        let job = TransitionJob {
            flow_id: flow_id.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            metadata: metadata.clone(),
            at,
        };
        self.submit(move |c| Box::pin(async move { transition(c, &job).await }))
            .await
    }

    async fn put_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
        body: &Map<String, Value>,
        at: OffsetDateTime,
    ) -> Result<(Document, String)> {
        let job = DocumentJob {
            kind,
            flow_id: flow_id.to_string(),
            name: name.to_string(),
            body: body.clone(),
            at,
        };
        self.submit(move |c| Box::pin(async move { put_document(c, &job).await }))
            .await
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
    ) -> Result<(Snapshot, Vec<String>)> {
        let (flow_id, snapshot_id, state) =
            (flow_id.to_string(), snapshot_id.to_string(), state.clone());
        self.submit(move |c| {
            Box::pin(
                async move { snapshots::create(c, &flow_id, &snapshot_id, &state, at, keep).await },
            )
        })
        .await
    }

    async fn get_snapshot(&self, flow_id: &str, snapshot_id: &str) -> Result<Option<Snapshot>> {
        snapshots::get(&mut *self.reader.acquire().await?, flow_id, snapshot_id).await
    }

    async fn list_snapshots(&self, flow_id: &str) -> Result<Vec<String>> {
        snapshots::list(&mut *self.reader.acquire().await?, flow_id).await
    }

    async fn restore_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        at: OffsetDateTime,
    ) -> Result<(Flow, Document)> {
        let (flow_id, snapshot_id) = (flow_id.to_string(), snapshot_id.to_string());
        self.submit(move |c| {
            Box::pin(async move { snapshots::restore(c, &flow_id, &snapshot_id, at).await })
        })
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
        self.submit(move |c| {
            Box::pin(async move { snapshots::fork(c, &flow_id, &snapshot_id, &child).await })
        })
        .await
    }

    async fn record_fallbacks(&self, rows: &[FallbackRecord]) -> Result<()> {
        let rows = rows.to_vec();
        self.submit(move |c| Box::pin(async move { record_fallbacks(c, &rows).await }))
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
