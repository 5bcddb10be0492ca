//! The lock authority and lease locks on PostgreSQL. The authority row is read `FOR SHARE` in
//! every lease statement's transaction and changed `FOR UPDATE`, so a change of the
//! authority waits for the lease statements in flight, and those after it see it.

use async_trait::async_trait;
use sqlx::{Postgres, Transaction};

use super::PostgresLedger;
use crate::error::Result;
use crate::ledger::LockLedger;
use crate::ledger::sql::locks::{WRITE_AUTHORITY, authority, leases_serve};
use crate::model::locks::{
    AuthorityChange, AuthorityTiming, FENCE_SPAN, LeaseChange, LeaseOutcome, LiveLease,
    LockAuthority, LockToken,
};

/// The ledger's clock, in ms since the epoch.
const NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

/// How the authority row is locked for the rest of the transaction.
#[derive(Clone, Copy)]
enum RowLock {
    /// Lease statements: a change waits for them, and those after a change see it.
    Share,
    /// A change.
    Update,
}

async fn read_authority(
    tx: &mut Transaction<'_, Postgres>,
    lock: RowLock,
) -> Result<LockAuthority> {
    let sql = match lock {
        RowLock::Share => {
            "SELECT generation, mode, run_id, grant_from_ms, horizon_ms, \
             CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) \
             FROM lock_authority WHERE id = 1 FOR SHARE"
        }
        RowLock::Update => {
            "SELECT generation, mode, run_id, grant_from_ms, horizon_ms, \
             CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) \
             FROM lock_authority WHERE id = 1 FOR UPDATE"
        }
    };
    let (generation, mode, grantor, grant_from_ms, horizon_ms, now_ms): (
        i64,
        String,
        Option<String>,
        i64,
        i64,
        i64,
    ) = sqlx::query_as(sql).fetch_one(&mut **tx).await?;
    Ok(authority(
        (generation, mode, grantor, grant_from_ms, horizon_ms),
        now_ms,
    ))
}

#[async_trait]
impl LockLedger for PostgresLedger {
    async fn lock_authority(&self) -> Result<LockAuthority> {
        let mut tx = self.pool.begin().await?;
        let current = read_authority(&mut tx, RowLock::Share).await?;
        tx.commit().await?;
        Ok(current)
    }

    async fn change_lock_authority(
        &self,
        seen_generation: u64,
        change: &AuthorityChange,
        timing: AuthorityTiming,
    ) -> Result<(LockAuthority, bool)> {
        let mut tx = self.pool.begin().await?;
        let current = read_authority(&mut tx, RowLock::Update).await?;
        let Some(next) = current.after(seen_generation, change, current.now_ms, timing) else {
            tx.commit().await?;
            return Ok((current, false));
        };
        sqlx::query(WRITE_AUTHORITY)
            .bind(i64::try_from(next.generation).unwrap_or(i64::MAX))
            .bind(next.mode.as_str())
            .bind(next.grantor.as_deref())
            .bind(next.grant_from_ms)
            .bind(next.horizon_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((next, true))
    }

    async fn acquire_lease(&self, name: &str, secret: &str, ttl_ms: u64) -> Result<LeaseOutcome> {
        let mut tx = self.pool.begin().await?;
        let auth = read_authority(&mut tx, RowLock::Share).await?;
        let now = auth.now_ms;
        if !leases_serve(&auth) {
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
    ) -> Result<LeaseChange> {
        let mut tx = self.pool.begin().await?;
        // FOR SHARE: a change of the authority waits for this refresh, and one after it is seen.
        let auth = read_authority(&mut tx, RowLock::Share).await?;
        if !leases_serve(&auth) {
            tx.commit().await?;
            return Ok(LeaseChange::NotGranting(auth));
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
        Ok(row.map_or(LeaseChange::NotHeld, |(e,)| LeaseChange::Done(e)))
    }

    async fn release_lease(&self, name: &str, token: &LockToken) -> Result<LeaseChange> {
        let mut tx = self.pool.begin().await?;
        let auth = read_authority(&mut tx, RowLock::Share).await?;
        if !leases_serve(&auth) {
            tx.commit().await?;
            return Ok(LeaseChange::NotGranting(auth));
        }
        let sql = format!(
            "UPDATE lock_leases SET secret = '', expires_at_ms = 0 \
             WHERE name = $1 AND fence = $2 AND secret = $3 AND expires_at_ms > {NOW_MS}"
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .bind(i64::try_from(token.fence).unwrap_or(i64::MAX))
            .bind(&token.secret)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(if done.rows_affected() == 1 {
            LeaseChange::Done(0)
        } else {
            LeaseChange::NotHeld
        })
    }

    async fn live_leases(&self) -> Result<(Vec<LiveLease>, i64)> {
        let mut tx = self.pool.begin().await?;
        // FOR SHARE: read under the draining authority, which no lease statement changes.
        let auth = read_authority(&mut tx, RowLock::Share).await?;
        let sql = format!(
            "SELECT name, fence, secret, expires_at_ms FROM lock_leases \
             WHERE expires_at_ms > {NOW_MS}"
        );
        let rows: Vec<(String, i64, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let leases = rows
            .into_iter()
            .map(|(name, fence, secret, expires_at_ms)| LiveLease {
                name,
                token: LockToken {
                    fence: u64::try_from(fence).unwrap_or_default(),
                    secret,
                },
                expires_at_ms,
            })
            .collect();
        Ok((leases, auth.now_ms))
    }
}
