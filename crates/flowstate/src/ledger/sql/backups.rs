//! SQL both ledgers share for backups.

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::model::backup::BackupInfo;

/// Columns of a backup row, in [`BackupRow`]'s order.
pub(in crate::ledger) const SELECT_BACKUPS: &str = "SELECT backup_id, patterns, status, keys, \
     bytes, error, created_at, finished_at FROM backups";

/// A backup's next dumps ($1 backup, $2 after seq, $3 limit).
pub(in crate::ledger) const ENTRIES: &str = "SELECT seq, dump FROM backup_entries \
     WHERE backup_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

/// Adds to a backup's counts ($1 keys, $2 bytes, $3 backup).
pub(in crate::ledger) const COUNT: &str =
    "UPDATE backups SET keys = keys + $1, bytes = bytes + $2 WHERE backup_id = $3";

/// Ends a backup ($1 status, $2 error, $3 finished_at, $4 backup).
pub(in crate::ledger) const FINISH: &str =
    "UPDATE backups SET status = $1, error = $2, finished_at = $3 WHERE backup_id = $4";

/// The backups a prune keeps none of ($1 keep): all but the newest `keep` complete ones of
/// each set of patterns (so partial backups taken by hand never push out the scheduled full
/// ones), and failed ones older than the oldest of all those kept; never one that is running.
pub(in crate::ledger) const PRUNE: &str = "DELETE FROM backups WHERE status <> 'running' \
     AND backup_id NOT IN (SELECT backup_id FROM (SELECT backup_id, ROW_NUMBER() OVER \
     (PARTITION BY patterns ORDER BY created_at DESC) AS n FROM backups \
     WHERE status = 'complete') ranked WHERE n <= $1) \
     AND (status = 'complete' OR created_at < COALESCE((SELECT min(created_at) FROM \
     (SELECT created_at, ROW_NUMBER() OVER (PARTITION BY patterns ORDER BY created_at DESC) \
     AS n FROM backups WHERE status = 'complete') kept WHERE n <= $1), created_at))";

/// A `backups` row.
#[derive(sqlx::FromRow)]
pub(in crate::ledger) struct BackupRow {
    backup_id: String,
    patterns: String,
    status: String,
    keys: i64,
    bytes: i64,
    error: Option<String>,
    created_at: OffsetDateTime,
    finished_at: Option<OffsetDateTime>,
}

impl BackupRow {
    /// The backup it records.
    pub(in crate::ledger) fn into_info(self) -> Result<BackupInfo> {
        let patterns = serde_json::from_str(&self.patterns)
            .map_err(|e| Error::Internal(format!("backup {}: patterns: {e}", self.backup_id)))?;
        Ok(BackupInfo {
            backup_id: self.backup_id,
            patterns,
            status: self.status,
            keys: u64::try_from(self.keys).unwrap_or_default(),
            bytes: u64::try_from(self.bytes).unwrap_or_default(),
            error: self.error,
            created_at: self.created_at,
            finished_at: self.finished_at,
        })
    }
}
