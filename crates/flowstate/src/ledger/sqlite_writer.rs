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
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{mpsc, oneshot};

use super::{
    DeletedFlow, INSERT_FALLBACK, NewSnapshot, PUT_DOCUMENT, TakenSnapshot, attach_documents,
    cas_failure, delete_statements, flow_columns, recorded, subtree,
};
use crate::documents::{DocKind, Document, Owner};
use crate::error::{Error, Result};
use crate::fallbacks::FallbackRecord;
use crate::flows::Flow;
use crate::transitions::Transition;

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
fn sql_err(e: rusqlite::Error) -> Error {
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
fn constraint(e: &rusqlite::Error) -> Option<i32> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => {
            Some(f.extended_code)
        }
        _ => None,
    }
}

fn ts(t: OffsetDateTime) -> Result<String> {
    t.format(&Rfc3339)
        .map_err(|e| Error::Internal(format!("timestamp: {e}")))
}

fn json(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Internal(format!("json: {e}")))
}

/// A `flows` row (columns of `flow_columns!()`).
fn flow_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Flow> {
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
        commit_group(&mut conn, std::mem::take(&mut group));
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

/// Registers a flow; returns its registration number.
pub(super) fn insert_flow(conn: &Connection, flow: &Flow) -> Result<i64> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO flows (flow_id, flow_type, parent_flow_id, status, metadata, \
             created_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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
pub(super) fn transition(
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
    Ok((recorded(&flow, from, to, metadata, at), flow))
}

/// Deletes a flow (or its subtree), returning what went with it.
pub(super) fn delete_flow(
    conn: &Connection,
    flow_id: &str,
    recursive: bool,
) -> Result<Vec<DeletedFlow>> {
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

/// The flow's status and registration number, or "no such flow".
fn owner(conn: &Connection, flow_id: &str) -> Result<Owner> {
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

/// Creates or replaces a document; returns it and its flow.
pub(super) fn put_document(
    conn: &Connection,
    kind: DocKind,
    flow_id: &str,
    name: &str,
    body: &Map<String, Value>,
    at: OffsetDateTime,
) -> Result<(Document, Owner)> {
    let owner = owner(conn, flow_id)?;
    let version: i64 = conn
        .prepare_cached(PUT_DOCUMENT)
        .map_err(sql_err)?
        .query_row(
            params![flow_id, kind.as_str(), name, json(body)?, ts(at)?],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    let doc = crate::ledger::written_document(flow_id, name, body, at, version);
    Ok((doc, owner))
}

/// Records keys to invalidate.
pub(super) fn record_invalidations(
    conn: &Connection,
    keys: &[String],
    at: OffsetDateTime,
) -> Result<()> {
    let mut stmt = conn
        .prepare_cached("INSERT INTO hot_invalidations (cache_key, recorded_at) VALUES ($1, $2)")
        .map_err(sql_err)?;
    let at = ts(at)?;
    for key in keys {
        stmt.execute(params![key, at]).map_err(sql_err)?;
    }
    Ok(())
}

/// Forgets invalidations carried out.
pub(super) fn clear_invalidations(conn: &Connection, ids: &[i64]) -> Result<()> {
    let mut stmt = conn
        .prepare_cached("DELETE FROM hot_invalidations WHERE id = $1")
        .map_err(sql_err)?;
    for id in ids {
        stmt.execute(params![id]).map_err(sql_err)?;
    }
    Ok(())
}

/// Appends fallback log rows.
pub(super) fn record_fallbacks(conn: &Connection, rows: &[FallbackRecord]) -> Result<()> {
    let mut stmt = conn.prepare_cached(INSERT_FALLBACK).map_err(sql_err)?;
    for r in rows {
        stmt.execute(params![
            r.service,
            r.operation,
            r.reason,
            r.fallback_source,
            ts(r.timestamp)?,
            r.count,
            json(&r.context)?,
        ])
        .map_err(sql_err)?;
    }
    Ok(())
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
    Ok(crate::ledger::written_document(
        flow_id, "", state, at, version,
    ))
}

/// Takes a snapshot after the flow's head; drops all but the newest `keep`.
pub(super) fn create_snapshot(
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
pub(super) fn restore_snapshot(
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
pub(super) fn fork_snapshot(
    conn: &Connection,
    flow_id: &str,
    snapshot_id: &str,
    child: &Flow,
) -> Result<(Flow, Document)> {
    let state = snapshot_state(conn, flow_id, snapshot_id)?;
    let inserted = conn
        .prepare_cached(concat!(
            "INSERT INTO flows (flow_id, flow_type, parent_flow_id, status, metadata, \
             created_at, updated_at, version, head_snapshot_id) \
             SELECT $1, CASE WHEN $2 = '' THEN flow_type ELSE $2 END, flow_id, $3, $4, $5, $5, 1, $6 \
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
