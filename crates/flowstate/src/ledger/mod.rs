//! The ledger: the system of record, behind one narrow trait per capability.
//!
//! - [`FlowLedger`]: the flow registry and its compare-and-set transitions with their history;
//! - [`DocumentLedger`]: a flow's state, phase states and per-flow agent results;
//! - [`SnapshotLedger`]: snapshots with lineage, restore and fork;
//! - [`JournalLedger`]: what the service journals about the hot tier (fallback log,
//!   invalidation journal);
//! - [`EventLedger`]: the outbox of flow events published while the hot tier was unreachable;
//! - [`LockLedger`]: the lock authority (who grants locks, the fencing generation) and the
//!   leases the ledger grants itself when Redis does not;
//! - [`CheckpointLedger`]: LangGraph checkpoints with their pending writes;
//! - [`BackupLedger`]: backups of Redis data.
//!
//! [`Ledger`] is their sum, which the service holds. The traits speak the domain, not SQL, so
//! each backend uses its best statement per operation: PostgreSQL does a transition in one
//! data-modifying CTE (and batches concurrent ones), SQLite in one immediate transaction on its
//! single writer thread. Each backend is a folder with one file per capability (`sqlite/`,
//! `postgres/`); `sql/` holds the SQL and row types both share. The same conformance tests
//! (`flowstate-server`'s API tests) run against both.
//!
//! A new capability adds one trait here, one file per backend and, if both backends share its
//! SQL, one file in `sql/`.

mod postgres;
mod sql;
mod sqlite;

use async_trait::async_trait;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::config::DatabaseConfig;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::model::backup::BackupInfo;
use crate::model::checkpoints::{
    CheckpointSearch, CheckpointTuple, PruneStrategy, PutCheckpoint, PutWrites,
};
use crate::model::events::Event;
use crate::model::locks::{
    AuthorityChange, AuthorityTiming, LeaseChange, LeaseOutcome, LiveLease, LockAuthority,
    LockToken,
};
use crate::model::{
    AuditRecord, DeletedFlow, DocKind, Document, FallbackRecord, Flow, FlowFilter, Invalidation,
    Owner, Snapshot, TakenSnapshot, Transition,
};

pub use postgres::PostgresLedger;
pub use sqlite::SqliteLedger;

/// The flow registry and transitions.
#[async_trait]
pub trait FlowLedger: Send + Sync + 'static {
    /// Inserts a new flow and returns its registration number ([`Flow::incarnation`]).
    /// [`Error::FlowExists`] if the id is taken, [`Error::ParentNotFound`] if the parent does
    /// not exist.
    async fn insert_flow(&self, flow: &Flow) -> Result<i64>;

    /// The flow, if it exists.
    async fn get_flow(&self, flow_id: &str) -> Result<Option<Flow>>;

    /// Whether any flow is registered as sensitive (a service without encryption keys must not
    /// start then: it would write those flows' data in the clear).
    async fn has_sensitive_flows(&self) -> Result<bool>;

    /// Up to `limit` flows matching `filter` with registration sequence above `after`, in
    /// sequence order, each with its sequence (the paging cursor).
    async fn list_flows(
        &self,
        filter: &FlowFilter,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<(i64, Flow)>>;

    /// Child ids of a flow (direct, or the whole subtree breadth-first when `recursive`).
    async fn children(&self, flow_id: &str, recursive: bool) -> Result<Vec<String>>;

    /// Deletes a flow (and its subtree when `recursive`) with everything attached to it,
    /// returning what was deleted (so the hot tier can forget it). [`Error::HasChildren`] when
    /// it has children and not `recursive`.
    async fn delete_flow(&self, flow_id: &str, recursive: bool) -> Result<Vec<DeletedFlow>>;

    /// Compare-and-set transition: status `from` -> `to`, version + 1, history row; all or
    /// nothing. [`Error::StaleTransition`] or [`Error::FlowNotFound`] otherwise.
    async fn transition(
        &self,
        flow_id: &str,
        from: &str,
        to: &str,
        metadata: &Map<String, Value>,
        at: OffsetDateTime,
    ) -> Result<(Transition, Flow)>;

    /// Transitions with id above `after`, oldest first.
    async fn transitions(&self, flow_id: &str, after: i64, limit: u32) -> Result<Vec<Transition>>;
}

/// A flow's documents: state, phases, agent results.
#[async_trait]
pub trait DocumentLedger: Send + Sync + 'static {
    /// Creates or replaces a document; returns it (with its new version) and its flow.
    /// [`Error::FlowNotFound`] when the flow does not exist.
    async fn put_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
        body: &Map<String, Value>,
        at: OffsetDateTime,
    ) -> Result<(Document, Owner)>;

    /// A document and its flow.
    async fn get_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
    ) -> Result<Option<(Document, Owner)>>;

    /// Names of a flow's documents of one kind, sorted.
    async fn list_documents(&self, kind: DocKind, flow_id: &str) -> Result<Vec<String>>;
}

/// Snapshots, restore and fork.
#[async_trait]
pub trait SnapshotLedger: Send + Sync + 'static {
    /// Takes a snapshot (parent: the flow's head), makes it the head and drops all but the newest
    /// `keep`. [`Error::SnapshotExists`] for a taken id.
    async fn create_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        state: &Map<String, Value>,
        at: OffsetDateTime,
        keep: u32,
    ) -> Result<TakenSnapshot>;

    /// Replaces a snapshot's state (sealing one that was taken in the clear for a flow that
    /// turned out to be sensitive); nothing else about it changes.
    async fn replace_snapshot_state(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        state: &Map<String, Value>,
    ) -> Result<()>;

    /// A snapshot and its flow.
    async fn get_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
    ) -> Result<Option<(Snapshot, Owner)>>;

    /// A flow's snapshot ids, newest first.
    async fn list_snapshots(&self, flow_id: &str) -> Result<Vec<String>>;

    /// Rolls the flow's state back to the snapshot (which becomes its head).
    async fn restore_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        at: OffsetDateTime,
    ) -> Result<(Flow, Document)>;

    /// Registers `child` with the snapshot's state.
    async fn fork_snapshot(
        &self,
        flow_id: &str,
        snapshot_id: &str,
        child: &Flow,
    ) -> Result<(Flow, Document)>;
}

/// What the service journals about the hot tier: the fallback log and the invalidation journal.
#[async_trait]
pub trait JournalLedger: Send + Sync + 'static {
    /// Appends aggregated rows to `redis_fallback_log`.
    async fn record_fallbacks(&self, rows: &[FallbackRecord]) -> Result<()>;

    /// The newest `redis_fallback_log` rows, newest first.
    async fn list_fallbacks(&self, limit: u32) -> Result<Vec<FallbackRecord>>;

    /// Records hot-tier keys a write could not reach, to delete before Redis serves them again.
    async fn record_invalidations(&self, keys: &[String], at: OffsetDateTime) -> Result<()>;

    /// Up to `limit` recorded invalidations with ids above `after`, oldest first.
    async fn pending_invalidations(&self, after: i64, limit: u32) -> Result<Vec<Invalidation>>;

    /// Forgets invalidations that have been carried out.
    async fn clear_invalidations(&self, ids: &[i64]) -> Result<()>;

    /// Appends rows to `redis_cache_audit`.
    async fn record_audit(&self, rows: &[AuditRecord]) -> Result<()>;

    /// The newest `redis_cache_audit` rows (of one flow, if given), newest first.
    async fn list_audit(&self, flow_id: Option<&str>, limit: u32) -> Result<Vec<AuditRecord>>;
}

/// The event outbox: flow events the hot tier could not take, kept in publication order until
/// they are replayed into their streams.
#[async_trait]
pub trait EventLedger: Send + Sync + 'static {
    /// Appends events to the outbox, in order.
    async fn enqueue_events(&self, events: &[Event]) -> Result<()>;

    /// The oldest `limit` events in the outbox with their sequence numbers, oldest first.
    async fn pending_events(&self, limit: u32) -> Result<Vec<(i64, Event)>>;

    /// Forgets replayed events.
    async fn clear_events(&self, seqs: &[i64]) -> Result<()>;
}

/// The lock authority and ledger leases.
#[async_trait]
pub trait LockLedger: Send + Sync + 'static {
    /// The lock authority as it stands.
    async fn lock_authority(&self) -> Result<LockAuthority>;

    /// Applies `change` (see [`LockAuthority::after`]) unless the authority changed since the
    /// caller saw `seen_generation` or the change does not apply to it; either way returns
    /// the authority as it then stands, and whether this call changed it. Waits for the lease
    /// statements in flight, and those after it see the change.
    async fn change_lock_authority(
        &self,
        seen_generation: u64,
        change: &AuthorityChange,
        timing: AuthorityTiming,
    ) -> Result<(LockAuthority, bool)>;

    /// Grants `name` for `ttl_ms` under `secret` if the ledger grants locks now and the name
    /// is free.
    async fn acquire_lease(&self, name: &str, secret: &str, ttl_ms: u64) -> Result<LeaseOutcome>;

    /// Extends `name` to `ttl_ms` from now if `token` holds it and the ledger grants locks.
    async fn refresh_lease(
        &self,
        name: &str,
        token: &LockToken,
        ttl_ms: u64,
    ) -> Result<LeaseChange>;

    /// Releases `name` if `token` holds it and the ledger grants locks.
    async fn release_lease(&self, name: &str, token: &LockToken) -> Result<LeaseChange>;

    /// Every lease that has not lapsed, with the ledger's clock; read while the authority is
    /// draining, so none changes meanwhile.
    async fn live_leases(&self) -> Result<(Vec<LiveLease>, i64)>;
}

/// LangGraph checkpoints and their pending writes.
#[async_trait]
pub trait CheckpointLedger: Send + Sync + 'static {
    /// Stores a checkpoint, replacing one of the same id.
    async fn put_checkpoint(
        &self,
        thread_id: &str,
        checkpoint_id: &str,
        put: &PutCheckpoint,
        at: OffsetDateTime,
    ) -> Result<()>;

    /// Stores a task's pending writes: an index at or above 0 is kept if already there, a
    /// negative one replaces; all or nothing.
    async fn put_writes(
        &self,
        thread_id: &str,
        checkpoint_id: &str,
        writes: &PutWrites,
    ) -> Result<()>;

    /// Checkpoints matching `search`, newest first, with their pending writes.
    async fn list_checkpoints(&self, search: &CheckpointSearch) -> Result<Vec<CheckpointTuple>>;

    /// Deletes a thread's checkpoints and writes.
    async fn delete_thread(&self, thread_id: &str) -> Result<()>;

    /// Deletes the checkpoints (and writes) whose `metadata.run_id` is one of `run_ids`.
    async fn delete_runs(&self, run_ids: &[String]) -> Result<()>;

    /// Copies thread `from`'s checkpoints and writes to thread `to` under the same ids.
    async fn copy_thread(&self, from: &str, to: &str) -> Result<()>;

    /// Prunes threads: keeps each namespace's newest checkpoint (with its writes), or nothing.
    async fn prune_threads(&self, thread_ids: &[String], strategy: PruneStrategy) -> Result<()>;
}

/// Backups of Redis data: their rows and their keys' dumps, in order.
#[async_trait]
pub trait BackupLedger: Send + Sync + 'static {
    /// Records a backup that starts now (`status` running); `BackupExists` if the id is taken.
    async fn create_backup(&self, info: &BackupInfo) -> Result<()>;

    /// Appends dumps (key, encoded dump) from `first_seq` on, and adds to the backup's key and
    /// byte counts, in one transaction.
    async fn add_backup_entries(
        &self,
        backup_id: &str,
        first_seq: i64,
        entries: &[(Vec<u8>, Vec<u8>)],
        bytes: u64,
    ) -> Result<()>;

    /// Ends a backup: `complete`, or `failed` with `error`.
    async fn finish_backup(
        &self,
        backup_id: &str,
        error: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<()>;

    /// Every backup, newest first.
    async fn list_backups(&self) -> Result<Vec<BackupInfo>>;

    /// One backup.
    async fn get_backup(&self, backup_id: &str) -> Result<Option<BackupInfo>>;

    /// Up to `limit` encoded dumps after `after_seq`, in order, with their sequence numbers.
    async fn backup_entries(
        &self,
        backup_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<(i64, Vec<u8>)>>;

    /// Deletes all but the newest `keep` complete backups (and failed ones older than those);
    /// how many went.
    async fn prune_backups(&self, keep: u32) -> Result<u64>;
}

/// The whole system of record: every capability, plus health.
#[async_trait]
pub trait Ledger:
    FlowLedger
    + DocumentLedger
    + SnapshotLedger
    + JournalLedger
    + EventLedger
    + LockLedger
    + CheckpointLedger
    + BackupLedger
{
    /// Backend name for health output (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;

    /// Round trip to check the ledger answers.
    async fn ping(&self) -> Result<()>;
}

/// Opens the ledger named by `cfg.url`, applying pending migrations.
pub async fn open(cfg: &DatabaseConfig) -> Result<Box<dyn Ledger>> {
    Ok(if cfg.url.starts_with("sqlite:") {
        Box::new(SqliteLedger::connect(cfg).await?)
    } else {
        Box::new(PostgresLedger::connect(cfg).await?)
    })
}
