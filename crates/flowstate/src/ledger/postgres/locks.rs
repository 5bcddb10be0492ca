//! The lock authority and lease locks on PostgreSQL. The authority row is read `FOR SHARE` in
//! every lease statement's transaction and changed `FOR UPDATE`, so a move of the authority
//! waits for the lease statements in flight, and those after it see it.

use async_trait::async_trait;
use sqlx::{Postgres, Transaction};

use super::PostgresLedger;
use crate::error::Result;
use crate::ledger::LockLedger;
use crate::ledger::sql::locks::{authority, grant_from};
use crate::model::locks::{FENCE_SPAN, LeaseOutcome, LockAuthority, LockToken};

/// The ledger's clock, in ms since the epoch.
const NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

type Row = (i64, Option<String>, i64, i64);

/// How the authority row is locked for the rest of the transaction.
#[derive(Clone, Copy)]
enum RowLock {
    /// Lease statements: a move waits for them, and those after a move see it.
    Share,
    /// A move.
    Update,
}

async fn read_authority(
    tx: &mut Transaction<'_, Postgres>,
    lock: RowLock,
) -> Result<LockAuthority> {
    let sql = match lock {
        RowLock::Share => {
            "SELECT generation, run_id, grant_from_ms, \
             CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) \
             FROM lock_authority WHERE id = 1 FOR SHARE"
        }
        RowLock::Update => {
            "SELECT generation, run_id, grant_from_ms, \
             CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) \
             FROM lock_authority WHERE id = 1 FOR UPDATE"
        }
    };
    let (generation, run_id, grant_from_ms, now_ms): Row =
        sqlx::query_as(sql).fetch_one(&mut **tx).await?;
    Ok(authority(generation, run_id, grant_from_ms, now_ms))
}

#[async_trait]
impl LockLedger for PostgresLedger {
    async fn lock_authority(&self) -> Result<LockAuthority> {
        let mut tx = self.pool.begin().await?;
        let current = read_authority(&mut tx, RowLock::Share).await?;
        tx.commit().await?;
        Ok(current)
    }

    async fn move_lock_authority(
        &self,
        seen_generation: u64,
        run_id: Option<&str>,
        quarantine_ms: u64,
    ) -> Result<(LockAuthority, bool)> {
        let mut tx = self.pool.begin().await?;
        let current = read_authority(&mut tx, RowLock::Update).await?;
        let moves = current.generation == seen_generation;
        let moved = if moves {
            let generation = i64::try_from(seen_generation).unwrap_or(i64::MAX);
            let from = grant_from(generation, current.now_ms, quarantine_ms);
            sqlx::query(
                "UPDATE lock_authority SET generation = $1, run_id = $2, grant_from_ms = $3 \
                 WHERE id = 1",
            )
            .bind(generation + 1)
            .bind(run_id)
            .bind(from)
            .execute(&mut *tx)
            .await?;
            LockAuthority {
                generation: seen_generation + 1,
                run_id: run_id.map(str::to_string),
                grant_from_ms: from,
                now_ms: current.now_ms,
            }
        } else {
            current
        };
        tx.commit().await?;
        Ok((moved, moves))
    }

    async fn acquire_lease(&self, name: &str, secret: &str, ttl_ms: u64) -> Result<LeaseOutcome> {
        let mut tx = self.pool.begin().await?;
        let auth = read_authority(&mut tx, RowLock::Share).await?;
        let now = auth.now_ms;
        if auth.generation == 0 || auth.run_id.is_some() || now < auth.grant_from_ms {
            tx.commit().await?;
            return Ok(LeaseOutcome::NotGranting(auth));
        }
        let floor = i64::try_from(auth.generation.saturating_mul(FENCE_SPAN)).unwrap_or(i64::MAX);
        let expires = now.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        let granted: Option<(i64, i64)> = sqlx::query_as(
            "INSERT INTO lock_leases AS l (name, fence, secret, expires_at_ms) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET fence = GREATEST(l.fence + 1, excluded.fence), \
                 secret = excluded.secret, expires_at_ms = excluded.expires_at_ms \
             WHERE l.expires_at_ms <= $5 \
             RETURNING fence, expires_at_ms",
        )
        .bind(name)
        .bind(floor + 1)
        .bind(secret)
        .bind(expires)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match granted {
            Some((fence, expires_at_ms)) => LeaseOutcome::Granted {
                fence: u64::try_from(fence).unwrap_or_default(),
                expires_at_ms,
            },
            None => {
                let (until,): (i64,) =
                    sqlx::query_as("SELECT expires_at_ms FROM lock_leases WHERE name = $1")
                        .bind(name)
                        .fetch_one(&mut *tx)
                        .await?;
                LeaseOutcome::Held {
                    retry_in_ms: u64::try_from(until - now).unwrap_or_default(),
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn refresh_lease(
        &self,
        name: &str,
        token: &LockToken,
        ttl_ms: u64,
    ) -> Result<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        // FOR SHARE: a move of the authority waits for this refresh, and one after it is seen.
        let auth = read_authority(&mut tx, RowLock::Share).await?;
        if auth.run_id.is_some() {
            tx.commit().await?;
            return Ok(None);
        }
        let ttl = i64::try_from(ttl_ms).unwrap_or(i64::MAX);
        let sql = format!(
            "UPDATE lock_leases SET expires_at_ms = {NOW_MS} + $1 \
             WHERE name = $2 AND fence = $3 AND secret = $4 AND expires_at_ms > {NOW_MS} \
             RETURNING expires_at_ms"
        );
        let row: Option<(i64,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(ttl)
            .bind(name)
            .bind(i64::try_from(token.fence).unwrap_or(i64::MAX))
            .bind(&token.secret)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.map(|(e,)| e))
    }

    async fn release_lease(&self, name: &str, token: &LockToken) -> Result<bool> {
        let sql = format!(
            "UPDATE lock_leases SET secret = '', expires_at_ms = 0 \
             WHERE name = $1 AND fence = $2 AND secret = $3 AND expires_at_ms > {NOW_MS}"
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .bind(i64::try_from(token.fence).unwrap_or(i64::MAX))
            .bind(&token.secret)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
