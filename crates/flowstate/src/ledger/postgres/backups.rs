//! Backups on PostgreSQL.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::PostgresLedger;
use crate::error::{Error, Result};
use crate::ledger::BackupLedger;
use crate::ledger::sql::backups::{BackupRow, COUNT, ENTRIES, FINISH, PRUNE, SELECT_BACKUPS};
use crate::model::backup::BackupInfo;

#[async_trait]
impl BackupLedger for PostgresLedger {
    async fn create_backup(&self, info: &BackupInfo) -> Result<()> {
        let patterns = serde_json::to_string(&info.patterns)
            .map_err(|e| Error::Internal(format!("patterns: {e}")))?;
        let added = sqlx::query(
            "INSERT INTO backups (backup_id, patterns, status, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&info.backup_id)
        .bind(patterns)
        .bind(&info.status)
        .bind(info.created_at)
        .execute(&self.pool)
        .await?;
        if added.rows_affected() == 0 {
            return Err(Error::BackupExists(info.backup_id.clone()));
        }
        Ok(())
    }

    async fn add_backup_entries(
        &self,
        backup_id: &str,
        first_seq: i64,
        entries: &[(Vec<u8>, Vec<u8>)],
        bytes: u64,
    ) -> Result<()> {
        let seqs: Vec<i64> = (0..entries.len())
            .map(|i| first_seq + i64::try_from(i).unwrap_or(i64::MAX))
            .collect();
        let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_slice()).collect();
        let dumps: Vec<&[u8]> = entries.iter().map(|(_, d)| d.as_slice()).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO backup_entries (backup_id, seq, key, dump) \
             SELECT $1, * FROM UNNEST($2::bigint[], $3::bytea[], $4::bytea[])",
        )
        .bind(backup_id)
        .bind(&seqs)
        .bind(&keys)
        .bind(&dumps)
        .execute(&mut *tx)
        .await?;
        sqlx::query(COUNT)
            .bind(i64::try_from(entries.len()).unwrap_or(i64::MAX))
            .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
            .bind(backup_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
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
        sqlx::query(FINISH)
            .bind(status)
            .bind(error)
            .bind(at)
            .bind(backup_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_backups(&self) -> Result<Vec<BackupInfo>> {
        let sql = format!("{SELECT_BACKUPS} ORDER BY created_at DESC, backup_id DESC");
        let rows: Vec<BackupRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(BackupRow::into_info).collect()
    }

    async fn get_backup(&self, backup_id: &str) -> Result<Option<BackupInfo>> {
        let sql = format!("{SELECT_BACKUPS} WHERE backup_id = $1");
        let row: Option<BackupRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(backup_id)
            .fetch_optional(&self.pool)
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
            .fetch_all(&self.pool)
            .await?)
    }

    async fn prune_backups(&self, keep: u32) -> Result<u64> {
        let gone = sqlx::query(PRUNE)
            .bind(i64::from(keep))
            .execute(&self.pool)
            .await?;
        Ok(gone.rows_affected())
    }
}
