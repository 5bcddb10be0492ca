//! The journal on PostgreSQL: the fallback log, the invalidation journal and the cache audit.

use async_trait::async_trait;
use sqlx::Postgres;
use time::OffsetDateTime;

use super::PostgresLedger;
use crate::error::Result;
use crate::ledger::JournalLedger;
use crate::ledger::sql::journal::{
    AuditRow, FallbackRow, INSERT_AUDIT, InvalidationRow, LIST_AUDIT, LIST_FALLBACKS,
    PENDING_INVALIDATIONS, insert_fallback,
};
use crate::model::{AuditRecord, FallbackRecord, Invalidation};

#[async_trait]
impl JournalLedger for PostgresLedger {
    async fn record_fallbacks(&self, rows: &[FallbackRecord]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for r in rows {
            insert_fallback::<Postgres>(r).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_audit(&self, rows: &[AuditRecord]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for r in rows {
            sqlx::query(INSERT_AUDIT)
                .bind(&r.flow_id)
                .bind(&r.cache_key)
                .bind(&r.operation)
                .bind(&r.hit_miss)
                .bind(r.timestamp)
                .bind(r.latency_ms)
                .bind(&r.error)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_audit(&self, flow_id: Option<&str>, limit: u32) -> Result<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = sqlx::query_as(LIST_AUDIT)
            .bind(flow_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(AuditRow::into_record).collect())
    }

    async fn list_fallbacks(&self, limit: u32) -> Result<Vec<FallbackRecord>> {
        let rows: Vec<FallbackRow> = sqlx::query_as(LIST_FALLBACKS)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(FallbackRow::into_record).collect())
    }

    async fn record_invalidations(&self, keys: &[String], at: OffsetDateTime) -> Result<()> {
        sqlx::query(
            "INSERT INTO hot_invalidations (cache_key, recorded_at) \
             SELECT k, $2 FROM unnest($1::text[]) AS k",
        )
        .bind(keys)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn pending_invalidations(&self, after: i64, limit: u32) -> Result<Vec<Invalidation>> {
        let rows: Vec<InvalidationRow> = sqlx::query_as(PENDING_INVALIDATIONS)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(InvalidationRow::into_invalidation)
            .collect())
    }

    async fn clear_invalidations(&self, ids: &[i64]) -> Result<()> {
        sqlx::query("DELETE FROM hot_invalidations WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
