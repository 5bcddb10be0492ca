//! Backups of Redis data into the ledger: what a backup holds (every key matching its
//! patterns, with its type, value and remaining time to live; streams with every entry and its
//! id), and the rules for patterns.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::model::agent_cache::glob_match;
use crate::model::checkpoints::b64;

/// Longest pattern accepted.
pub const MAX_PATTERN_LEN: usize = 256;

/// Most wildcards in one pattern (matching stays cheap).
pub const MAX_WILDCARDS: usize = 8;

/// Most patterns in one request.
pub const MAX_PATTERNS: usize = 32;

/// Bytes, as base64 in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bytes(#[serde(with = "b64")] pub Vec<u8>);

/// A key's value, by Redis type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum KeyValue {
    /// A string.
    String(Bytes),
    /// A hash: field, value.
    Hash(Vec<(Bytes, Bytes)>),
    /// A list, head first.
    List(Vec<Bytes>),
    /// A set.
    Set(Vec<Bytes>),
    /// A sorted set: member, score (as Redis writes it: `1.5`, `inf`, `-inf`).
    Zset(Vec<(Bytes, String)>),
    /// A stream: every entry with its id, and the stream's last generated id (kept even when
    /// the newest entries were deleted, so new ids stay above it).
    Stream {
        /// Entries, oldest first: id, fields.
        entries: Vec<(String, Vec<(Bytes, Bytes)>)>,
        /// `last-generated-id`.
        last_id: String,
    },
}

impl KeyValue {
    /// The Redis type's name.
    pub fn kind(&self) -> &'static str {
        match self {
            KeyValue::String(_) => "string",
            KeyValue::Hash(_) => "hash",
            KeyValue::List(_) => "list",
            KeyValue::Set(_) => "set",
            KeyValue::Zset(_) => "zset",
            KeyValue::Stream { .. } => "stream",
        }
    }
}

/// One key of a backup: its name (without the deployment's key prefix), remaining time to
/// live, and value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyDump {
    /// The key, without `key_prefix`.
    pub key: Bytes,
    /// Milliseconds it had left, if it expires.
    pub ttl_ms: Option<i64>,
    /// Its value.
    #[serde(flatten)]
    pub value: KeyValue,
}

/// A backup as listed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BackupInfo {
    /// Its id.
    pub backup_id: String,
    /// The patterns it covers (relative to `key_prefix`).
    pub patterns: Vec<String>,
    /// `running`, `complete` or `failed`.
    pub status: String,
    /// Keys stored so far.
    pub keys: u64,
    /// Bytes of values stored so far.
    pub bytes: u64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

/// Asks for a backup.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// Its id (a UUIDv7 when absent): pass one to follow its progress while it runs.
    #[serde(default)]
    pub backup_id: Option<String>,
    /// Key patterns (`*` and `?` wildcards), relative to `key_prefix`; the server's
    /// `backup.patterns` when absent (by default the reference's four critical patterns).
    #[serde(default)]
    pub patterns: Option<Vec<String>>,
}

/// Asks for a restore.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// Restore only the keys matching these (all the backup holds when absent).
    #[serde(default)]
    pub patterns: Option<Vec<String>>,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RestoreReport {
    /// The backup.
    pub backup_id: String,
    /// Keys written back.
    pub keys: u64,
}

/// Checks patterns: 1–32 of them, each 1–256 characters of `A-Z a-z 0-9 _ . : - { } * ?`
/// with at most 8 wildcards (no `[`, `]` or `\`, so they match here as Redis matches them).
pub fn validate_patterns(patterns: &[String]) -> Result<()> {
    if patterns.is_empty() || patterns.len() > MAX_PATTERNS {
        return Err(Error::InvalidInput(format!(
            "patterns: 1 to {MAX_PATTERNS} patterns, got {}",
            patterns.len()
        )));
    }
    for p in patterns {
        let wildcards = p.bytes().filter(|b| matches!(b, b'*' | b'?')).count();
        let chars_ok = p.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'_' | b'.' | b':' | b'-' | b'{' | b'}' | b'*' | b'?')
        });
        if p.is_empty() || p.len() > MAX_PATTERN_LEN || !chars_ok || wildcards > MAX_WILDCARDS {
            return Err(Error::InvalidInput(format!(
                "pattern {p:?} must be 1-{MAX_PATTERN_LEN} characters of A-Z a-z 0-9 _ . : - {{ }} * ? with at most {MAX_WILDCARDS} wildcards"
            )));
        }
    }
    Ok(())
}

/// Whether a key (without prefix) is coordination state rather than data: lock keys and
/// fencing tokens. Backups leave them out: restoring them would bypass the lock scripts and
/// could hand out a fencing token twice.
pub fn is_coordination(key: &[u8]) -> bool {
    key.starts_with(b"orchestrator:locks:")
}

/// Whether `key` (without prefix) matches any of `patterns`, as Redis `SCAN MATCH` would.
pub fn matches_any(patterns: &[String], key: &[u8]) -> bool {
    patterns.iter().any(|p| glob_match(p.as_bytes(), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_matching() {
        let ok = |p: &str| validate_patterns(&[p.to_string()]).is_ok();
        assert!(ok("flow:events:*"));
        assert!(ok("orchestrator:locks:{a?}*"));
        for bad in [
            "",
            "a b",
            "x[ab]",
            "a\\*",
            &"a".repeat(257),
            "*a*a*a*a*a*a*a*a*a",
        ] {
            assert!(!ok(bad), "{bad:?}");
        }
        assert!(validate_patterns(&[]).is_err());
        let p = vec!["flow:events:*".to_string(), "agent:results:?".to_string()];
        assert!(matches_any(&p, b"flow:events:{f1}"));
        assert!(matches_any(&p, b"agent:results:x"));
        assert!(!matches_any(&p, b"agent:results:xy"));
        assert!(!matches_any(&p, b"cache:flow:state:f"));
    }

    #[test]
    fn dumps_round_trip_as_json() {
        let dump = KeyDump {
            key: Bytes(b"flow:events:{f}".to_vec()),
            ttl_ms: Some(5000),
            value: KeyValue::Stream {
                entries: vec![(
                    "1-0".into(),
                    vec![(Bytes(b"k".to_vec()), Bytes(vec![0, 255]))],
                )],
                last_id: "2-0".into(),
            },
        };
        let text = serde_json::to_string(&dump).unwrap();
        assert_eq!(serde_json::from_str::<KeyDump>(&text).unwrap(), dump);
    }
}
