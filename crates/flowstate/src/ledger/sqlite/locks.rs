//! The lock authority and lease locks on SQLite. Every step runs on the writer thread inside
//! its `BEGIN IMMEDIATE` transaction, which every process sharing the file serialises on: two
//! processes can never both hold a lease.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteLedger;
use super::writer::sql_err;
use crate::error::Result;
use crate::ledger::LockLedger;
use crate::ledger::sql::locks::{AUTHORITY_COLUMNS, WRITE_AUTHORITY, authority, leases_serve};
use crate::model::locks::{
    AuthorityChange, AuthorityTiming, FENCE_SPAN, LeaseChange, LeaseOutcome, LiveLease,
    LockAuthority, LockToken,
};

/// The writer's clock in ms since the epoch (every process sharing a file is on one host).
fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

fn read_authority(conn: &Connection, now: i64) -> Result<LockAuthority> {
    conn.query_row(
        &format!("SELECT {AUTHORITY_COLUMNS} FROM lock_authority WHERE id = 1"),
        [],
        |r| {
            Ok(authority(
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?),
                now,
            ))
        },
    )
    .map_err(sql_err)
}

#[async_trait]
impl LockLedger for SqliteLedger {
    async fn lock_authority(&self) -> Result<LockAuthority> {
        self.writer.submit(|c| read_authority(c, now_ms())).await
    }

    async fn change_lock_authority(
        &self,
        seen_generation: u64,
        change: &AuthorityChange,
        timing: AuthorityTiming,
    ) -> Result<(LockAuthority, bool)> {
        let change = change.clone();
        self.writer
            .submit(move |c| {
                let now = now_ms();
                let current = read_authority(c, now)?;
                let Some(next) = current.after(seen_generation, &change, now, timing) else {
                    return Ok((current, false));
                };
                c.execute(
                    WRITE_AUTHORITY,
                    params![
                        i64::try_from(next.generation).unwrap_or(i64::MAX),
                        next.mode.as_str(),
                        next.grantor,
                        next.grant_from_ms,
                        next.horizon_ms
                    ],
                )
                .map_err(sql_err)?;
                Ok((next, true))
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
    ) -> Result<LeaseChange> {
        let (name, token) = (name.to_string(), token.clone());
        let ttl = i64::try_from(ttl_ms).unwrap_or(i64::MAX);
        self.writer
            .submit(move |c| {
                let now = now_ms();
                let auth = read_authority(c, now)?;
                if !leases_serve(&auth) {
                    return Ok(LeaseChange::NotGranting(auth));
                }
                let row: Option<i64> = c
                    .query_row(
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
                    .map_err(sql_err)?;
                Ok(row.map_or(LeaseChange::NotHeld, LeaseChange::Done))
            })
            .await
    }

    async fn release_lease(&self, name: &str, token: &LockToken) -> Result<LeaseChange> {
        let (name, token) = (name.to_string(), token.clone());
        self.writer
            .submit(move |c| {
                let now = now_ms();
                let auth = read_authority(c, now)?;
                if !leases_serve(&auth) {
                    return Ok(LeaseChange::NotGranting(auth));
                }
                let changed = c
                    .execute(
                        "UPDATE lock_leases SET secret = '', expires_at_ms = 0 \
                         WHERE name = $1 AND fence = $2 AND secret = $3 AND expires_at_ms > $4",
                        params![name, fence(&token), token.secret, now],
                    )
                    .map_err(sql_err)?;
                Ok(if changed == 1 {
                    LeaseChange::Done(0)
                } else {
                    LeaseChange::NotHeld
                })
            })
            .await
    }

    async fn live_leases(&self) -> Result<(Vec<LiveLease>, i64)> {
        self.writer
            .submit(|c| {
                let now = now_ms();
                let mut stmt = c
                    .prepare(
                        "SELECT name, fence, secret, expires_at_ms FROM lock_leases \
                         WHERE expires_at_ms > $1",
                    )
                    .map_err(sql_err)?;
                let rows = stmt
                    .query_map(params![now], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .map_err(sql_err)?;
                let mut leases = Vec::new();
                for row in rows {
                    let (name, fence, secret, expires_at_ms): (String, i64, String, i64) =
                        row.map_err(sql_err)?;
                    leases.push(LiveLease {
                        name,
                        token: LockToken {
                            fence: u64::try_from(fence).unwrap_or_default(),
                            secret,
                        },
                        expires_at_ms,
                    });
                }
                Ok((leases, now))
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
    if !leases_serve(&auth) {
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
