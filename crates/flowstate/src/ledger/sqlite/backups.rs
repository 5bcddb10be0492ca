//! Backups on SQLite: writes on the writer thread, reads on the pool.

use async_trait::async_trait;
use rusqlite::params;
use time::OffsetDateTime;

use super::SqliteLedger;
use super::writer::{sql_err, ts};
use crate::error::{Error, Result};
use crate::ledger::BackupLedger;
use crate::ledger::sql::backups::{BackupRow, COUNT, ENTRIES, FINISH, PRUNE, SELECT_BACKUPS};
use crate::model::backup::BackupInfo;

#[async_trait]
impl BackupLedger for SqliteLedger {
    async fn create_backup(&self, info: &BackupInfo) -> Result<()> {
        let patterns = serde_json::to_string(&info.patterns)
            .map_err(|e| Error::Internal(format!("patterns: {e}")))?;
        let (id, status, at) = (
            info.backup_id.clone(),
            info.status.clone(),
            ts(info.created_at)?,
        );
        self.writer
            .submit(move |c| {
                let added = c
                    .execute(
                        "INSERT INTO backups (backup_id, patterns, status, created_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        params![id, patterns, status, at],
                    )
                    .map_err(sql_err)?;
                if added == 0 {
                    return Err(Error::BackupExists(id));
                }
                Ok(())
            })
            .await
    }

    async fn add_backup_entries(
        &self,
        backup_id: &str,
        first_seq: i64,
        entries: &[(Vec<u8>, Vec<u8>)],
        bytes: u64,
    ) -> Result<()> {
        let (id, entries) = (backup_id.to_string(), entries.to_vec());
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.writer
            .submit(move |c| {
                let mut insert = c
                    .prepare_cached(
                        "INSERT INTO backup_entries (backup_id, seq, key, dump) \
                         VALUES ($1, $2, $3, $4)",
                    )
                    .map_err(sql_err)?;
                for (i, (key, dump)) in entries.iter().enumerate() {
                    let seq = first_seq + i64::try_from(i).unwrap_or(i64::MAX);
                    insert
                        .execute(params![id, seq, key, dump])
                        .map_err(sql_err)?;
                }
                let keys = i64::try_from(entries.len()).unwrap_or(i64::MAX);
                c.execute(COUNT, params![keys, bytes, id])
                    .map_err(sql_err)?;
                Ok(())
            })
            .await
    }

    async fn finish_backup(
        &self,
        backup_id: &str,
        error: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<()> {
        let status = if error.is_some() {
            "failed"
        } else {
            "complete"
        };
        let (id, error, at) = (backup_id.to_string(), error.map(str::to_string), ts(at)?);
        self.writer
            .submit(move |c| {
                c.execute(FINISH, params![status, error, at, id])
                    .map_err(sql_err)?;
                Ok(())
            })
            .await
    }

    async fn list_backups(&self) -> Result<Vec<BackupInfo>> {
        let sql = format!("{SELECT_BACKUPS} ORDER BY created_at DESC, backup_id DESC");
        let rows: Vec<BackupRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.reader)
            .await?;
        rows.into_iter().map(BackupRow::into_info).collect()
    }

    async fn get_backup(&self, backup_id: &str) -> Result<Option<BackupInfo>> {
        let sql = format!("{SELECT_BACKUPS} WHERE backup_id = $1");
        let row: Option<BackupRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(backup_id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(BackupRow::into_info).transpose()
    }

    async fn backup_entries(
        &self,
        backup_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<(i64, Vec<u8>)>> {
        Ok(sqlx::query_as(ENTRIES)
            .bind(backup_id)
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?)
    }

    async fn prune_backups(&self, keep: u32) -> Result<u64> {
        self.writer
            .submit(move |c| {
                let gone = c
                    .execute(PRUNE, params![i64::from(keep)])
                    .map_err(sql_err)?;
                Ok(gone as u64)
            })
            .await
    }
}
