//! SQL both ledgers share for LangGraph checkpoints.

use std::collections::HashMap;

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::model::checkpoints::{CheckpointSearch, CheckpointTuple, PendingWrite};

/// The checkpoints `search` asks for, newest first, and the values to bind in order: only the
/// filters it sets are in the statement, so the primary key (thread, namespace, id) serves a
/// thread's lookups (an `$1 IS NULL OR thread_id = $1` form makes SQLite scan every thread's
/// checkpoints). Without a metadata filter the statement stops at `limit` rows itself.
pub(in crate::ledger) fn list_query(
    search: &CheckpointSearch,
    limit: usize,
) -> (String, Vec<&str>) {
    let mut sql = String::from(
        "SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type AS kind, \
         checkpoint, metadata, created_at FROM checkpoints",
    );
    let mut binds = Vec::new();
    let filters = [
        ("thread_id =", &search.thread_id),
        ("checkpoint_ns =", &search.checkpoint_ns),
        ("checkpoint_id =", &search.checkpoint_id),
        ("checkpoint_id <", &search.before),
    ];
    for (condition, value) in filters {
        if let Some(value) = value {
            binds.push(value.as_str());
            let joint = if binds.len() == 1 { "WHERE" } else { "AND" };
            sql.push_str(&format!(" {joint} {condition} ${}", binds.len()));
        }
    }
    sql.push_str(" ORDER BY checkpoint_id DESC, thread_id, checkpoint_ns");
    if search.filter.is_empty() {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    (sql, binds)
}

/// A checkpoint's pending writes, by task path, task id and index.
pub(in crate::ledger) const WRITES: &str = "SELECT task_id, task_path, idx, channel, \
     type AS kind, value FROM checkpoint_writes \
     WHERE thread_id = $1 AND checkpoint_ns = $2 AND checkpoint_id = $3 \
     ORDER BY task_path, task_id, idx";

/// The pending writes of a thread's checkpoints with ids in [$2, $3] ($1 thread), each with
/// its checkpoint: one statement for a whole listing of one thread.
pub(in crate::ledger) const THREAD_WRITES: &str = "SELECT checkpoint_ns, checkpoint_id, \
     task_id, task_path, idx, channel, type AS kind, value FROM checkpoint_writes \
     WHERE thread_id = $1 AND checkpoint_id >= $2 AND checkpoint_id <= $3 \
     ORDER BY task_path, task_id, idx";

/// Stores a checkpoint, replacing one of the same id ($1 thread .. $9 created_at).
pub(in crate::ledger) const PUT: &str = "INSERT INTO checkpoints (thread_id, checkpoint_ns, \
     checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata, run_id, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET \
     parent_checkpoint_id = excluded.parent_checkpoint_id, type = excluded.type, \
     checkpoint = excluded.checkpoint, metadata = excluded.metadata, run_id = excluded.run_id";

/// A pending write at or above index 0: kept if one is there already.
pub(in crate::ledger) const PUT_WRITE: &str = "INSERT INTO checkpoint_writes (thread_id, \
     checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel, type, value) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING";

/// A special (negative index) pending write: replaces one that is there.
pub(in crate::ledger) const PUT_SPECIAL_WRITE: &str = "INSERT INTO checkpoint_writes (thread_id, \
     checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel, type, value) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE SET \
     task_path = excluded.task_path, channel = excluded.channel, type = excluded.type, \
     value = excluded.value";

/// A thread's writes, then its checkpoints ($1 thread).
pub(in crate::ledger) const DELETE_THREAD: [&str; 2] = [
    "DELETE FROM checkpoint_writes WHERE thread_id = $1",
    "DELETE FROM checkpoints WHERE thread_id = $1",
];

/// A run's checkpoints and their writes ($1 run id).
pub(in crate::ledger) const DELETE_RUN: [&str; 2] = [
    "DELETE FROM checkpoint_writes WHERE (thread_id, checkpoint_ns, checkpoint_id) IN \
     (SELECT thread_id, checkpoint_ns, checkpoint_id FROM checkpoints WHERE run_id = $1)",
    "DELETE FROM checkpoints WHERE run_id = $1",
];

/// Copies thread $1's checkpoints and writes to thread $2 under the same ids, replacing those
/// of the same ids there.
pub(in crate::ledger) const COPY_THREAD: [&str; 2] = [
    "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, \
     type, checkpoint, metadata, run_id, created_at) \
     SELECT $2, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata, \
     run_id, created_at FROM checkpoints WHERE thread_id = $1 \
     ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET \
     parent_checkpoint_id = excluded.parent_checkpoint_id, type = excluded.type, \
     checkpoint = excluded.checkpoint, metadata = excluded.metadata, run_id = excluded.run_id",
    "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, \
     task_path, channel, type, value) \
     SELECT $2, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel, type, value \
     FROM checkpoint_writes WHERE thread_id = $1 \
     ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE SET \
     task_path = excluded.task_path, channel = excluded.channel, type = excluded.type, \
     value = excluded.value",
];

/// Keeps only the newest checkpoint of each of thread $1's namespaces, with its writes.
pub(in crate::ledger) const KEEP_LATEST: [&str; 2] = [
    "DELETE FROM checkpoint_writes WHERE thread_id = $1 AND checkpoint_id <> \
     (SELECT max(c.checkpoint_id) FROM checkpoints c \
      WHERE c.thread_id = checkpoint_writes.thread_id \
      AND c.checkpoint_ns = checkpoint_writes.checkpoint_ns)",
    "DELETE FROM checkpoints WHERE thread_id = $1 AND checkpoint_id <> \
     (SELECT max(c.checkpoint_id) FROM checkpoints c \
      WHERE c.thread_id = checkpoints.thread_id AND c.checkpoint_ns = checkpoints.checkpoint_ns)",
];

/// A `checkpoints` row.
#[derive(sqlx::FromRow)]
pub(in crate::ledger) struct CheckpointRow {
    thread_id: String,
    checkpoint_ns: String,
    checkpoint_id: String,
    parent_checkpoint_id: Option<String>,
    kind: String,
    checkpoint: Vec<u8>,
    metadata: String,
    created_at: OffsetDateTime,
}

impl CheckpointRow {
    /// Its metadata.
    pub(in crate::ledger) fn metadata(&self) -> Result<Map<String, Value>> {
        serde_json::from_str(&self.metadata).map_err(|e| {
            Error::Internal(format!(
                "checkpoint {} of thread {}: metadata is not a JSON object: {e}",
                self.checkpoint_id, self.thread_id
            ))
        })
    }

    /// Where its writes are: thread, namespace, checkpoint id.
    pub(in crate::ledger) fn key(&self) -> (&str, &str, &str) {
        (&self.thread_id, &self.checkpoint_ns, &self.checkpoint_id)
    }

    /// The tuple, with its metadata and writes.
    pub(in crate::ledger) fn into_tuple(
        self,
        metadata: Map<String, Value>,
        pending_writes: Vec<PendingWrite>,
    ) -> CheckpointTuple {
        CheckpointTuple {
            thread_id: self.thread_id,
            checkpoint_ns: self.checkpoint_ns,
            checkpoint_id: self.checkpoint_id,
            parent_checkpoint_id: self.parent_checkpoint_id,
            kind: self.kind,
            checkpoint: self.checkpoint,
            metadata,
            created_at: self.created_at,
            pending_writes,
        }
    }
}

/// Checkpoints found by a listing, each with its metadata, newest first.
pub(in crate::ledger) type Found = Vec<(CheckpointRow, Map<String, Value>)>;

/// When every checkpoint found is of `search`'s one thread: the thread and the lowest and
/// highest id, for [`THREAD_WRITES`]; otherwise (other threads, or just one checkpoint) the
/// writes are read per checkpoint with [`WRITES`].
pub(in crate::ledger) fn thread_range<'a>(
    search: &'a CheckpointSearch,
    found: &'a Found,
) -> Option<(&'a str, &'a str, &'a str)> {
    let thread = search.thread_id.as_deref()?;
    if found.len() < 2 {
        return None;
    }
    let ids = found.iter().map(|(row, _)| row.checkpoint_id.as_str());
    let low = ids.clone().min()?;
    let high = ids.max()?;
    Some((thread, low, high))
}

/// The tuples of `found`, given every pending write of their thread's id range.
pub(in crate::ledger) fn with_thread_writes(
    found: Found,
    writes: Vec<ThreadWriteRow>,
) -> Vec<CheckpointTuple> {
    let mut by_checkpoint: HashMap<(String, String), Vec<PendingWrite>> = HashMap::new();
    for w in writes {
        by_checkpoint
            .entry((w.checkpoint_ns, w.checkpoint_id))
            .or_default()
            .push(w.write.into());
    }
    found
        .into_iter()
        .map(|(row, metadata)| {
            let key = (row.checkpoint_ns.clone(), row.checkpoint_id.clone());
            let writes = by_checkpoint.remove(&key).unwrap_or_default();
            row.into_tuple(metadata, writes)
        })
        .collect()
}

/// A `checkpoint_writes` row with the checkpoint it belongs to.
#[derive(sqlx::FromRow)]
pub(in crate::ledger) struct ThreadWriteRow {
    checkpoint_ns: String,
    checkpoint_id: String,
    #[sqlx(flatten)]
    write: WriteRow,
}

/// A `checkpoint_writes` row.
#[derive(sqlx::FromRow)]
pub(in crate::ledger) struct WriteRow {
    task_id: String,
    task_path: String,
    idx: i64,
    channel: String,
    kind: String,
    value: Vec<u8>,
}

impl From<WriteRow> for PendingWrite {
    fn from(r: WriteRow) -> PendingWrite {
        PendingWrite {
            task_id: r.task_id,
            task_path: r.task_path,
            idx: r.idx,
            channel: r.channel,
            kind: r.kind,
            value: r.value,
        }
    }
}

/// Metadata as stored.
pub(in crate::ledger) fn metadata_text(metadata: &Map<String, Value>) -> Result<String> {
    serde_json::to_string(metadata).map_err(|e| Error::Internal(format!("metadata: {e}")))
}

/// The run a checkpoint belongs to (its `metadata.run_id`), kept in a column for deletes.
pub(in crate::ledger) fn run_id(metadata: &Map<String, Value>) -> Option<String> {
    match metadata.get("run_id")? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}
