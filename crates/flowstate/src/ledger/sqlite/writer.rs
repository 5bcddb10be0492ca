//! The SQLite writer: one OS thread that owns the only write connection and **commits requests
//! in groups**. Whatever requests are queued when it becomes free run in one transaction, so a
//! commit (and its WAL pages) is paid once per group instead of once per request, and the
//! statements run on the thread itself (rusqlite, cached statements) instead of each crossing
//! to a driver thread and back: on two cores those hand-offs, not SQLite, were the cost.
//!
//! Every request is a single statement, or a sequence whose later steps cannot fail on the
//! caller's input, so a rejected request (duplicate id, stale transition) rolls back only its
//! own statement and its neighbours commit; an I/O failure rolls back the whole group and every
//! request in it gets a retryable 503. Callers are answered only after the group's COMMIT.
//! Values are stored exactly as sqlx writes them (RFC 3339 text, JSON text), so the sqlx read
//! pool decodes them. Parameters are `$n` and bound by position, so in every statement here they
//! first appear in increasing order (SQLite numbers named parameters by first appearance).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::model::{Flow, Owner};

/// Most requests committed in one group.
const MAX_GROUP: usize = 256;

/// Requests waiting for the writer; beyond this, callers wait to enqueue (backpressure).
const QUEUE: usize = 4096;

/// One write request, run on the writer thread inside its group's transaction.
type Job = Box<dyn FnOnce(&Connection) -> Box<dyn Outcome> + Send>;

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
            Err(Error::Internal(_) | Error::LedgerUnavailable { .. })
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

/// "Not committed, retry": a group failed, or the writer is gone.
pub(super) fn aborted(reason: &str) -> Error {
    Error::LedgerUnavailable {
        reason: format!("write not committed: {reason}"),
        retry_after: Duration::from_secs(1),
    }
}

/// Classifies a SQLite failure: busy, locked, I/O, full disk mean "retry later".
pub(super) fn sql_err(e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::ReadOnly,
        ) => Error::LedgerUnavailable {
            reason: e.to_string(),
            retry_after: Duration::from_secs(1),
        },
        _ => Error::Internal(format!("sqlite: {e}")),
    }
}

/// The extended result code of a constraint violation.
pub(super) fn constraint(e: &rusqlite::Error) -> Option<i32> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => {
            Some(f.extended_code)
        }
        _ => None,
    }
}

pub(super) fn ts(t: OffsetDateTime) -> Result<String> {
    t.format(&Rfc3339)
        .map_err(|e| Error::Internal(format!("timestamp: {e}")))
}

pub(super) fn json(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Internal(format!("json: {e}")))
}

/// A `flows` row (columns of `flow_columns!()`).
pub(super) fn flow_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Flow> {
    let bad = |i: usize, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    let metadata: String = row.get(5)?;
    let created_at: String = row.get(6)?;
    let updated_at: String = row.get(7)?;
    Ok(Flow {
        flow_id: row.get(1)?,
        flow_type: row.get(2)?,
        parent_flow_id: row.get(3)?,
        status: row.get(4)?,
        metadata: serde_json::from_str(&metadata).map_err(|e| bad(5, e.to_string()))?,
        created_at: OffsetDateTime::parse(&created_at, &Rfc3339)
            .map_err(|e| bad(6, e.to_string()))?,
        updated_at: OffsetDateTime::parse(&updated_at, &Rfc3339)
            .map_err(|e| bad(7, e.to_string()))?,
        version: row.get(8)?,
        sensitive: row.get(9)?,
        incarnation: row.get(0)?,
    })
}

/// The queue of the writer thread.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Job>,
}

impl Writer {
    /// Opens the write connection on `path` and starts the writer thread, which checkpoints
    /// the WAL once it holds `checkpoint_kib`.
    ///
    /// The threshold defaults to 16,000 of the 1 KiB pages new databases use; it is set in
    /// bytes so that older files, which keep their 4 KiB pages, checkpoint as often. SQLite's
    /// default (1000 pages) checkpoints a few times a second under load, and each checkpoint
    /// stalls every queued write for a millisecond or two: that was the p99 of writes. Rarer
    /// checkpoints copy hot pages (the flows table, its indexes) once instead of many times,
    /// so throughput rises and the stall, ~15 ms every few seconds at full load, moves to
    /// p999 at 16 clients (p99 at 64). A checkpointer thread would avoid the stall, but
    /// measured, its locks stalled the writer more.
    pub(super) fn start(path: &Path, checkpoint_kib: u32) -> Result<Writer> {
        let conn = Connection::open(path).map_err(sql_err)?;
        let page_size: u32 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(sql_err)?;
        let checkpoint_pages = (checkpoint_kib.saturating_mul(1024) / page_size.max(512)).max(1);
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
             PRAGMA wal_autocheckpoint = {checkpoint_pages};"
        ))
        .map_err(sql_err)?;
        let (queue, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("flowstate-sqlite-writer".into())
            .spawn(move || write_loop(conn, rx))
            .map_err(|e| Error::Internal(format!("cannot start the sqlite writer: {e}")))?;
        Ok(Writer { queue })
    }

    /// Queues `work` and waits until its group committed (or did not).
    pub(super) async fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = work(conn);
            Box::new(Pending { result, reply }) as Box<dyn Outcome>
        });
        let gone = || aborted("the writer stopped or the group failed");
        self.queue.send(job).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

fn write_loop(mut conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("flowstate_ledger_group_size").record(group.len() as f64);
        let timer = std::time::Instant::now();
        commit_group(&mut conn, std::mem::take(&mut group));
        metrics::histogram!("flowstate_ledger_write_seconds", "op" => "group")
            .record(timer.elapsed().as_secs_f64());
    }
}

/// Runs a group in one transaction. Jobs that never ran (the group failed before them) are
/// dropped, which their callers see as "not committed" too.
fn commit_group(conn: &mut Connection, group: Vec<Job>) {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!(error = %e, "cannot begin a ledger write group");
            return;
        }
    };
    let mut outcomes: Vec<Box<dyn Outcome>> = Vec::with_capacity(group.len());
    for job in group {
        let outcome = job(&tx);
        if outcome.is_fatal() {
            drop(tx); // rolls back
            tracing::error!("ledger write group rolled back");
            outcome.deliver();
            outcomes
                .into_iter()
                .for_each(|o| o.fail("the transaction failed"));
            return;
        }
        outcomes.push(outcome);
    }
    if let Err(e) = tx.commit() {
        let reason = e.to_string();
        outcomes.into_iter().for_each(|o| o.fail(&reason));
        return;
    }
    outcomes.into_iter().for_each(|o| o.deliver());
}

/// The flow's status and registration number, or "no such flow".
pub(super) fn owner(conn: &Connection, flow_id: &str) -> Result<Owner> {
    conn.prepare_cached("SELECT status, seq FROM flows WHERE flow_id = $1")
        .map_err(sql_err)?
        .query_row(params![flow_id], |r| {
            Ok(Owner {
                status: r.get(0)?,
                incarnation: r.get(1)?,
            })
        })
        .optional()
        .map_err(sql_err)?
        .ok_or_else(|| Error::FlowNotFound(flow_id.to_string()))
}
