//! The lock authority and lease locks on SQLite. Every step runs on the writer thread inside
//! its `BEGIN IMMEDIATE` transaction, which every process sharing the file serialises on: two
//! processes can never both hold a lease.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteLedger;
use super::writer::sql_err;
use crate::error::Result;
use crate::ledger::LockLedger;
use crate::ledger::sql::locks::{authority, grant_from};
use crate::model::locks::{FENCE_SPAN, LeaseOutcome, LockAuthority, LockToken};

/// The writer's clock in ms since the epoch (every process sharing a file is on one host).
fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

fn read_authority(conn: &Connection, now: i64) -> Result<LockAuthority> {
    conn.query_row(
        "SELECT generation, run_id, grant_from_ms FROM lock_authority WHERE id = 1",
        [],
        |r| Ok(authority(r.get(0)?, r.get(1)?, r.get(2)?, now)),
    )
    .map_err(sql_err)
}

#[async_trait]
impl LockLedger for SqliteLedger {
    async fn lock_authority(&self) -> Result<LockAuthority> {
        self.writer.submit(|c| read_authority(c, now_ms())).await
    }

    async fn move_lock_authority(
        &self,
        seen_generation: u64,
        run_id: Option<&str>,
        quarantine_ms: u64,
    ) -> Result<(LockAuthority, bool)> {
        let run_id = run_id.map(str::to_string);
        self.writer
            .submit(move |c| {
                let now = now_ms();
                let current = read_authority(c, now)?;
                let moved = current.generation == seen_generation;
                if moved {
                    let generation = i64::try_from(seen_generation).unwrap_or(i64::MAX);
                    c.execute(
                        "UPDATE lock_authority SET generation = $1, run_id = $2, grant_from_ms = $3 \
                         WHERE id = 1",
                        params![
                            generation + 1,
                            run_id,
                            grant_from(generation, now, quarantine_ms)
                        ],
                    )
                    .map_err(sql_err)?;
                }
                Ok((read_authority(c, now)?, moved))
            })
            .await
    }

    async fn acquire_lease(&self, name: &str, secret: &str, ttl_ms: u64) -> Result<LeaseOutcome> {
        let (name, secret) = (name.to_string(), secret.to_string());
        self.writer
            .submit(move |c| acquire(c, &name, &secret, ttl_ms))
            .await
    }

    async fn refresh_lease(
        &self,
        name: &str,
        token: &LockToken,
        ttl_ms: u64,
    ) -> Result<Option<i64>> {
        let (name, token) = (name.to_string(), token.clone());
        let ttl = i64::try_from(ttl_ms).unwrap_or(i64::MAX);
        self.writer
            .submit(move |c| {
                let now = now_ms();
                // A lease outlives no move of the authority: the new grantor ignores it.
                if read_authority(c, now)?.run_id.is_some() {
                    return Ok(None);
                }
                c.query_row(
                    "UPDATE lock_leases SET expires_at_ms = $1 \
                     WHERE name = $2 AND fence = $3 AND secret = $4 AND expires_at_ms > $5 \
                     RETURNING expires_at_ms",
                    params![
                        now.saturating_add(ttl),
                        name,
                        fence(&token),
                        token.secret,
                        now
                    ],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql_err)
            })
            .await
    }

    async fn release_lease(&self, name: &str, token: &LockToken) -> Result<bool> {
        let (name, token) = (name.to_string(), token.clone());
        self.writer
            .submit(move |c| {
                let changed = c
                    .execute(
                        "UPDATE lock_leases SET secret = '', expires_at_ms = 0 \
                         WHERE name = $1 AND fence = $2 AND secret = $3 AND expires_at_ms > $4",
                        params![name, fence(&token), token.secret, now_ms()],
                    )
                    .map_err(sql_err)?;
                Ok(changed == 1)
            })
            .await
    }
}

fn fence(token: &LockToken) -> i64 {
    i64::try_from(token.fence).unwrap_or(i64::MAX)
}

fn acquire(conn: &Connection, name: &str, secret: &str, ttl_ms: u64) -> Result<LeaseOutcome> {
    let now = now_ms();
    let auth = read_authority(conn, now)?;
    if auth.generation == 0 || auth.run_id.is_some() || now < auth.grant_from_ms {
        return Ok(LeaseOutcome::NotGranting(auth));
    }
    let floor = i64::try_from(auth.generation.saturating_mul(FENCE_SPAN)).unwrap_or(i64::MAX);
    let expires = now.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
    let granted: Option<(i64, i64)> = conn
        .query_row(
            "INSERT INTO lock_leases (name, fence, secret, expires_at_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET fence = max(fence + 1, excluded.fence), \
                 secret = excluded.secret, expires_at_ms = excluded.expires_at_ms \
             WHERE expires_at_ms <= $5 \
             RETURNING fence, expires_at_ms",
            params![name, floor + 1, secret, expires, now],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql_err)?;
    if let Some((fence, expires_at_ms)) = granted {
        return Ok(LeaseOutcome::Granted {
            fence: u64::try_from(fence).unwrap_or_default(),
            expires_at_ms,
        });
    }
    let until: i64 = conn
        .query_row(
            "SELECT expires_at_ms FROM lock_leases WHERE name = $1",
            params![name],
            |r| r.get(0),
        )
        .map_err(sql_err)?;
    Ok(LeaseOutcome::Held {
        retry_in_ms: u64::try_from(until - now).unwrap_or_default(),
    })
}
