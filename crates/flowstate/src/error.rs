//! Typed errors of the library, each with a stable machine-readable code.
//!
//! The HTTP layer maps every variant to a status exactly once (`flowstate-server`'s `http::error`);
//! the codes are part of the API contract and never change meaning.

use std::time::Duration;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a flowstate operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An id (flow id, phase, agent, lock name, status, ...) broke the id rules.
    #[error("invalid {field}: {reason}")]
    InvalidId {
        /// Which input carried the id (`flow_id`, `parent_flow_id`, `status`, ...).
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// The request was well-formed JSON but semantically invalid.
    #[error("{0}")]
    InvalidInput(String),
    /// The flow does not exist.
    #[error("flow {0} not found")]
    FlowNotFound(String),
    /// A flow's state, phase or agent results do not exist.
    #[error("{message}")]
    DocumentNotFound {
        /// `state_not_found`, `phase_not_found` or `agent_results_not_found`.
        code: &'static str,
        /// Which document.
        message: String,
    },
    /// The snapshot does not exist (or was evicted: only the newest are kept).
    #[error("snapshot {snapshot_id} of flow {flow_id} not found")]
    SnapshotNotFound {
        /// The flow.
        flow_id: String,
        /// The snapshot asked for.
        snapshot_id: String,
    },
    /// The thread has no such checkpoint (or none at all in that namespace).
    #[error("no checkpoint of thread {0} matches")]
    CheckpointNotFound(String),
    /// A cache store under a lease that is no longer the caller's (expired and taken over, or
    /// already used); nothing was stored.
    #[error("the lease is no longer held by this token")]
    StaleLease,
    /// An input is larger than its configured limit (an event over `events.max_event_bytes`).
    #[error("{0}")]
    TooLarge(String),
    /// The lock is held by someone else (after waiting, if asked to).
    #[error("lock {name} is held")]
    LockHeld {
        /// The lock.
        name: String,
        /// When asking again may succeed.
        retry_after: Duration,
    },
    /// The token does not hold the lock (wrong token, expired, released).
    #[error("lock {0} is not held under this token (wrong token, expired or released)")]
    LockNotHeld(String),
    /// A backup with this id exists already.
    #[error("backup {0} already exists")]
    BackupExists(String),
    /// No backup with this id.
    #[error("backup {0} not found")]
    BackupNotFound(String),
    /// This deployment cannot do what was asked (backups of an in-process hot tier).
    #[error("{0}")]
    Unsupported(String),
    /// A snapshot with this id already exists for the flow.
    #[error("snapshot {0} already exists")]
    SnapshotExists(String),
    /// The parent named at registration does not exist.
    #[error("parent flow {0} not found")]
    ParentNotFound(String),
    /// A flow with this id is already registered.
    #[error("flow {0} already exists")]
    FlowExists(String),
    /// A flow with children cannot be deleted alone.
    #[error("flow {0} has children; delete them first or delete recursively")]
    HasChildren(String),
    /// Compare-and-set failed: the flow is not in the `from` status any more.
    #[error("flow is in status {current}, not {expected}")]
    StaleTransition {
        /// The status the caller assumed.
        expected: String,
        /// The status the flow actually has.
        current: String,
    },
    /// The ledger cannot be reached; nothing was applied and the caller may retry.
    #[error("ledger unavailable: {reason}")]
    LedgerUnavailable {
        /// What failed (connection refused, pool timeout, ...).
        reason: String,
        /// When a retry makes sense.
        retry_after: Duration,
    },
    /// The hot tier cannot be reached for an operation only it can do (deleting cached agent
    /// results); nothing was applied and the caller may retry.
    #[error("hot tier unavailable: {0}")]
    HotTierUnavailable(String),
    /// A bug: something that should not fail did (a write task panicked, say).
    #[error("internal error: {0}")]
    Internal(String),
    /// The configuration is invalid; the message names the setting.
    #[error("configuration: {0}")]
    Config(String),
    /// An unexpected ledger failure (a bug or a broken database), never the caller's fault.
    #[error("ledger error: {0}")]
    Ledger(#[source] sqlx::Error),
    /// Migrations failed to apply.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Error {
    /// The stable snake_case code of this error, as sent in `{"error": {"code": ...}}`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidId { .. } => "invalid_id",
            Error::InvalidInput(_) => "invalid_input",
            Error::FlowNotFound(_) => "flow_not_found",
            Error::ParentNotFound(_) => "parent_not_found",
            Error::DocumentNotFound { code, .. } => code,
            Error::SnapshotNotFound { .. } => "snapshot_not_found",
            Error::CheckpointNotFound(_) => "checkpoint_not_found",
            Error::SnapshotExists(_) => "snapshot_exists",
            Error::BackupExists(_) => "backup_exists",
            Error::BackupNotFound(_) => "backup_not_found",
            Error::Unsupported(_) => "unsupported",
            Error::StaleLease => "stale_lease",
            Error::TooLarge(_) => "payload_too_large",
            Error::LockHeld { .. } => "lock_held",
            Error::LockNotHeld(_) => "lock_not_held",
            Error::FlowExists(_) => "flow_exists",
            Error::HasChildren(_) => "flow_has_children",
            Error::StaleTransition { .. } => "stale_transition",
            Error::LedgerUnavailable { .. } => "ledger_unavailable",
            Error::HotTierUnavailable(_) => "hot_tier_unavailable",
            Error::Config(_) => "invalid_config",
            Error::Ledger(_) | Error::Migrate(_) | Error::Internal(_) => "internal",
        }
    }
}

impl From<sqlx::Error> for Error {
    /// Sorts ledger failures into "down, retry later" and "unexpected". A protocol error means
    /// the conversation with the server broke (a connection cut mid-handshake answers garbage),
    /// which the caller sees as the ledger being unreachable; it is logged all the same.
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => Error::LedgerUnavailable {
                reason: err.to_string(),
                retry_after: Duration::from_secs(1),
            },
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // Connection exceptions, insufficient resources, operator intervention (shutdown,
                // failover), serialization failures and deadlocks, read-only after failover:
                // the ledger is (momentarily) not serving; retrying is right.
                Some(c)
                    if c.starts_with("08")
                        || c.starts_with("53")
                        || c.starts_with("57")
                        || c == "40001"
                        || c == "40P01"
                        || c == "25006" =>
                {
                    Error::LedgerUnavailable {
                        reason: err.to_string(),
                        retry_after: Duration::from_secs(1),
                    }
                }
                // Text PostgreSQL cannot store (NUL in JSON strings, invalid encodings).
                Some("22P05" | "22021") => {
                    Error::InvalidInput(format!("value not storable: {}", db.message()))
                }
                _ => Error::Ledger(err),
            },
            _ => Error::Ledger(err),
        }
    }
}
