//! The production ledger: PostgreSQL.
//!
//! Every operation is one statement, hence one round trip: a transition is a data-modifying CTE
//! that updates the flow and inserts the history row atomically. Concurrent transitions from the
//! same status serialise on the row lock, and the loser re-checks `status = from` after the
//! winner commits, so exactly one wins (READ COMMITTED is enough). Registrations, transitions
//! and document saves that arrive together share one statement ([`batch`]).

mod backups;
mod batch;
mod checkpoints;
mod documents;
mod events;
mod flows;
mod journal;
mod locks;
mod snapshots;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgPool};

use self::batch::Batcher;
use self::documents::Documents;
use self::flows::{Registrations, Transitions};
use super::Ledger;
use crate::config::DatabaseConfig;
use crate::error::{Error, Result};

/// A pooled connection idle this long is pinged before use.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Ledger on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresLedger {
    pool: PgPool,
    registrations: Batcher<Registrations>,
    transitions: Batcher<Transitions>,
    documents: Batcher<Documents>,
}

impl PostgresLedger {
    /// Connects a pool to `cfg.url` and applies migrations.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self> {
        let options = PgConnectOptions::from_str(&cfg.url)
            .map_err(|e| Error::Config(format!("DATABASE_URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms))
            // sqlx pings every connection it hands out: one extra round trip per statement.
            // A connection in steady use has just proven itself, so only one that sat idle
            // (and may have been cut by a restart or a proxy) is pinged first.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        // A lane beyond the first opens only while the others are stuck (see
        // `postgres_batch`); 3 kinds × 4 lanes leave a 16-connection pool 4 for reads.
        let lanes = (cfg.max_connections as usize / 4).clamp(1, 4);
        Ok(PostgresLedger {
            registrations: Batcher::start(pool.clone(), lanes),
            transitions: Batcher::start(pool.clone(), lanes),
            documents: Batcher::start(pool.clone(), lanes),
            pool,
        })
    }
}

#[async_trait]
impl Ledger for PostgresLedger {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
