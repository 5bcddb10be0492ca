//! The embedded ledger: one SQLite file in WAL mode.
//!
//! Writes go to the writer thread ([`writer`]), which owns the only write
//! connection and commits queued requests in groups; reads use a separate sqlx pool and never
//! wait for the writer (WAL). `synchronous = NORMAL` is the WAL setting SQLite recommends: a
//! crash of the process loses nothing, a power loss at most the last transactions. New
//! databases use 1 KiB pages: every commit writes each page it dirtied to the WAL whole, and
//! with flows' rows spread over five B-trees, 4 KiB pages made the WAL, not SQLite, the limit
//! (measured: half the bytes written, transitions 2x faster).

mod backups;
mod checkpoints;
mod documents;
mod events;
mod flows;
mod journal;
mod locks;
mod snapshots;
mod writer;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, SqlitePool};

use self::writer::Writer;
use super::Ledger;
use crate::config::DatabaseConfig;
use crate::error::{Error, Result};

/// Ledger on a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteLedger {
    /// The writer thread, which owns the only write connection.
    writer: Writer,
    /// Readers; WAL lets them run alongside the writer.
    reader: SqlitePool,
}

impl SqliteLedger {
    /// Opens (creating if missing) the database at `cfg.url`, applies migrations and starts the
    /// writer thread.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Self> {
        if cfg.url.contains(":memory:") || cfg.url.contains("mode=memory") {
            return Err(Error::Config(
                "DATABASE_URL: an in-memory SQLite database cannot be shared by the writer and \
                 the readers; use a file"
                    .into(),
            ));
        }
        let options = SqliteConnectOptions::from_str(&cfg.url)
            .map_err(|e| Error::Config(format!("DATABASE_URL: {e}")))?
            .create_if_missing(true)
            .page_size(1024)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let mut conn = options.connect().await?;
        sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;
        let writer = Writer::start(options.get_filename(), cfg.sqlite_checkpoint_kib)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(cfg.max_connections)
            .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms))
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteLedger { writer, reader })
    }
}

#[async_trait]
impl Ledger for SqliteLedger {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }
}
