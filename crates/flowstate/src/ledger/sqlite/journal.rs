//! The journal on SQLite: the fallback log, the invalidation journal and the cache audit.

use async_trait::async_trait;
use rusqlite::{Connection, params};
use time::OffsetDateTime;

use super::SqliteLedger;
use super::writer::{json, sql_err, ts};
use crate::error::Result;
use crate::ledger::JournalLedger;
use crate::ledger::sql::journal::{
    AuditRow, FallbackRow, INSERT_AUDIT, INSERT_FALLBACK, InvalidationRow, LIST_AUDIT,
    LIST_FALLBACKS, PENDING_INVALIDATIONS,
};
use crate::model::{AuditRecord, FallbackRecord, Invalidation};

#[async_trait]
impl JournalLedger for SqliteLedger {
    async fn record_fallbacks(&self, rows: &[FallbackRecord]) -> Result<()> {
        let rows = rows.to_vec();
        self.writer
            .submit(move |c| record_fallbacks(c, &rows))
            .await
    }

    async fn record_audit(&self, rows: &[AuditRecord]) -> Result<()> {
        let mut rows_ts = Vec::with_capacity(rows.len());
        for r in rows {
            rows_ts.push((r.clone(), ts(r.timestamp)?));
        }
        self.writer
            .submit(move |c| {
                let mut stmt = c.prepare_cached(INSERT_AUDIT).map_err(sql_err)?;
                for (r, at) in &rows_ts {
                    stmt.execute(params![
                        r.flow_id,
                        r.cache_key,
                        r.operation,
                        r.hit_miss,
                        at,
                        r.latency_ms,
                        r.error
                    ])
                    .map_err(sql_err)?;
                }
                Ok(())
            })
            .await
    }

    async fn list_audit(&self, flow_id: Option<&str>, limit: u32) -> Result<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = sqlx::query_as(LIST_AUDIT)
            .bind(flow_id)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.into_iter().map(AuditRow::into_record).collect())
    }

    async fn list_fallbacks(&self, limit: u32) -> Result<Vec<FallbackRecord>> {
        let rows: Vec<FallbackRow> = sqlx::query_as(LIST_FALLBACKS)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.into_iter().map(FallbackRow::into_record).collect())
    }

    async fn record_invalidations(&self, keys: &[String], at: OffsetDateTime) -> Result<()> {
        let keys = keys.to_vec();
        self.writer
            .submit(move |c| record_invalidations(c, &keys, at))
            .await
    }

    async fn pending_invalidations(&self, after: i64, limit: u32) -> Result<Vec<Invalidation>> {
        let rows: Vec<InvalidationRow> = sqlx::query_as(PENDING_INVALIDATIONS)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .into_iter()
            .map(InvalidationRow::into_invalidation)
            .collect())
    }

    async fn clear_invalidations(&self, ids: &[i64]) -> Result<()> {
        let ids = ids.to_vec();
        self.writer
            .submit(move |c| clear_invalidations(c, &ids))
            .await
    }
}

/// Records keys to invalidate.
fn record_invalidations(conn: &Connection, keys: &[String], at: OffsetDateTime) -> Result<()> {
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
fn clear_invalidations(conn: &Connection, ids: &[i64]) -> Result<()> {
    let mut stmt = conn
        .prepare_cached("DELETE FROM hot_invalidations WHERE id = $1")
        .map_err(sql_err)?;
    for id in ids {
        stmt.execute(params![id]).map_err(sql_err)?;
    }
    Ok(())
}

/// Appends fallback log rows.
fn record_fallbacks(conn: &Connection, rows: &[FallbackRecord]) -> Result<()> {
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
