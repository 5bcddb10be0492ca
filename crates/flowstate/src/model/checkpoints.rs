//! LangGraph checkpoints, stored natively: what a checkpoint saver puts, gets, lists, copies
//! and prunes. A thread's checkpoints form a lineage per namespace (each names its parent); the
//! checkpoint itself and each pending write's value are the serializer's opaque `(type, bytes)`,
//! base64 in JSON; metadata is JSON, queried by top-level equality.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// Longest namespace, task id, task path, channel or type tag accepted.
pub const MAX_TEXT_LEN: usize = 1024;

/// Most pending writes in one request.
pub const MAX_WRITES: usize = 10_000;

/// Most checkpoints one list answers.
pub const MAX_LIST: u32 = 10_000;

/// Bytes as base64 (standard alphabet, padded) in JSON.
pub mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes bytes as base64.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    /// Reads base64 into bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
    }
}

/// A checkpoint as a saver puts it (the thread and checkpoint ids come from the path).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutCheckpoint {
    /// The namespace (`""` for the root graph, `"sub:<id>"` for a subgraph).
    #[serde(default)]
    pub checkpoint_ns: String,
    /// The checkpoint this one follows, if any.
    #[serde(default)]
    pub parent_checkpoint_id: Option<String>,
    /// The serializer's type tag.
    #[serde(rename = "type")]
    pub kind: String,
    /// The serialized checkpoint, base64.
    #[serde(with = "b64")]
    #[schema(value_type = String, format = Byte)]
    pub checkpoint: Vec<u8>,
    /// The checkpoint's metadata (JSON object).
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// One pending write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteItem {
    /// Its index within the task: 0, 1, ... or a special negative one (an error, an
    /// interrupt, ...), which replaces an earlier write of that index.
    pub idx: i64,
    /// The channel written.
    pub channel: String,
    /// The serializer's type tag.
    #[serde(rename = "type")]
    pub kind: String,
    /// The serialized value, base64.
    #[serde(with = "b64")]
    #[schema(value_type = String, format = Byte)]
    pub value: Vec<u8>,
}

/// A task's pending writes on a checkpoint.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutWrites {
    /// The checkpoint's namespace.
    #[serde(default)]
    pub checkpoint_ns: String,
    /// The task that wrote.
    pub task_id: String,
    /// The task's path.
    #[serde(default)]
    pub task_path: String,
    /// The writes: an index at or above 0 is kept if already there; a negative one replaces.
    pub writes: Vec<WriteItem>,
}

/// A stored pending write, with its task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PendingWrite {
    /// The task that wrote.
    pub task_id: String,
    /// The task's path.
    pub task_path: String,
    /// Its index within the task.
    pub idx: i64,
    /// The channel written.
    pub channel: String,
    /// The serializer's type tag.
    #[serde(rename = "type")]
    pub kind: String,
    /// The serialized value, base64.
    #[serde(with = "b64")]
    #[schema(value_type = String, format = Byte)]
    pub value: Vec<u8>,
}

/// A stored checkpoint with its pending writes, as a saver reads it back.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CheckpointTuple {
    /// The thread.
    pub thread_id: String,
    /// The namespace.
    pub checkpoint_ns: String,
    /// The checkpoint's id.
    pub checkpoint_id: String,
    /// The checkpoint it follows.
    pub parent_checkpoint_id: Option<String>,
    /// The serializer's type tag.
    #[serde(rename = "type")]
    pub kind: String,
    /// The serialized checkpoint, base64.
    #[serde(with = "b64")]
    #[schema(value_type = String, format = Byte)]
    pub checkpoint: Vec<u8>,
    /// Its metadata.
    pub metadata: Map<String, Value>,
    /// When it was stored.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Its pending writes, by task path, task id and index.
    pub pending_writes: Vec<PendingWrite>,
}

/// A list of checkpoints, newest (greatest id) first.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSearch {
    /// Only this thread's (every thread's when absent).
    #[serde(default)]
    pub thread_id: Option<String>,
    /// Only this namespace's (every namespace's when absent).
    #[serde(default)]
    pub checkpoint_ns: Option<String>,
    /// Only this checkpoint.
    #[serde(default)]
    pub checkpoint_id: Option<String>,
    /// Only checkpoints with an id below this one.
    #[serde(default)]
    pub before: Option<String>,
    /// At most this many (after the filter).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Top-level metadata keys whose values must equal these.
    #[serde(default)]
    pub filter: Map<String, Value>,
}

/// Deletes the checkpoints (and their writes) of these runs (`metadata.run_id`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteRuns {
    /// The runs.
    pub run_ids: Vec<String>,
}

/// Copies a thread's checkpoints and writes, under the same ids, to another thread.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyThread {
    /// The thread copied to.
    pub target_thread_id: String,
}

/// What a prune keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PruneStrategy {
    /// The newest checkpoint of each namespace, with its writes.
    KeepLatest,
    /// Nothing.
    Delete,
}

/// Prunes threads.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Prune {
    /// The threads.
    pub thread_ids: Vec<String>,
    /// What to keep (`keep_latest` by default).
    #[serde(default = "keep_latest")]
    pub strategy: PruneStrategy,
}

fn keep_latest() -> PruneStrategy {
    PruneStrategy::KeepLatest
}

/// Checks a free-form text field's length.
pub fn validate_text(field: &str, value: &str) -> Result<()> {
    if value.len() > MAX_TEXT_LEN {
        return Err(Error::InvalidInput(format!(
            "{field} must be at most {MAX_TEXT_LEN} bytes, got {}",
            value.len()
        )));
    }
    Ok(())
}

/// Whether every key of `filter` has an equal value in `metadata`, a missing key counting
/// as `null` (LangGraph's savers filter this way).
pub fn matches(metadata: &Map<String, Value>, filter: &Map<String, Value>) -> bool {
    filter
        .iter()
        .all(|(k, v)| metadata.get(k).unwrap_or(&Value::Null) == v)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn filters_are_top_level_equalities() {
        let meta = json!({"run_id": "r1", "step": 2, "nested": {"a": 1}});
        let meta = meta.as_object().unwrap();
        let f = |v: Value| v.as_object().unwrap().clone();
        assert!(matches(meta, &f(json!({}))));
        assert!(matches(meta, &f(json!({"run_id": "r1", "step": 2}))));
        assert!(matches(meta, &f(json!({"nested": {"a": 1}}))));
        assert!(!matches(meta, &f(json!({"step": "2"}))));
        assert!(!matches(meta, &f(json!({"nested": {}}))));
        assert!(matches(meta, &f(json!({"missing": null}))));
        assert!(!matches(meta, &f(json!({"run_id": null}))));
    }

    #[test]
    fn bytes_travel_as_base64() {
        let w: WriteItem = serde_json::from_value(
            json!({"idx": -1, "channel": "c", "type": "msgpack", "value": "AAH/"}),
        )
        .unwrap();
        assert_eq!(w.value, vec![0, 1, 255]);
        assert_eq!(serde_json::to_value(&w).unwrap()["value"], "AAH/");
        assert!(
            serde_json::from_value::<WriteItem>(
                json!({"idx": 0, "channel": "c", "type": "t", "value": "%%"})
            )
            .is_err()
        );
    }
}
