//! The hot tier: cache, coordination and real time in front of the ledger, behind one narrow
//! trait per capability:
//!
//! - [`FlowHot`]: cached flow records, the registry and hierarchy sets, the transitions stream;
//! - [`DocumentHot`]: cached states, phase states and per-flow agent results;
//! - [`SnapshotHot`]: cached snapshots and each flow's snapshot list;
//! - [`EventHot`]: each flow's event stream, its epochs, and live delivery to subscribers;
//! - [`ConnectionHot`]: the registry of open SSE connections;
//! - [`LockHot`]: distributed locks (Redis only: in memory the ledger's leases serve, so that
//!   processes sharing one SQLite file exclude each other) and [`LockWaitHot`], how waiters
//!   learn of releases;
//! - [`AgentCacheHot`]: the agent result cache and its counters.
//!
//! [`HotTier`] is their sum plus what the service needs of the tier as a whole (health,
//! counters, epochs, invalidation). Each backend is a folder with one file per capability:
//! `redis/` (Redis 7; its Lua scripts beside it in `redis/scripts/`) and `memory/` (in
//! process). A new capability adds one trait here and one file per backend.
//!
//! The traits speak the domain, not Redis commands, so that each operation can be one round
//! trip (a pipeline or a Lua script) on Redis and a plain map operation in memory. The hot tier
//! is never the only copy of anything: every method here may fail (Redis down, timeout), and
//! the service then serves from the ledger.
//!
//! Cached flow records carry their incarnation (the ledger's registration number) and version,
//! and a write never replaces a later (incarnation, version): a slow cache repopulation cannot
//! overwrite a fresher write. A deleted flow leaves a short-lived tombstone, so a repopulation
//! racing the delete cannot bring it back, and a flow registered again under the same id
//! outranks every late write about the deleted one. Document writes are refused once their
//! flow's incarnation has ended.

pub mod breaker;
pub mod codec;
pub mod fanout;
pub mod keys;
mod memory;
mod redis;
pub mod ttl;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::model::agent_cache::{AgentTotals, CacheCounts, CachedResult, LeasedLookup};
use crate::model::backup::KeyDump;
use crate::model::events::{Event, EventId, History, SseConnection};
use crate::model::health::Figures;
use crate::model::locks::LiveLease;
use crate::model::{DeletedFlow, DocKind, Document, Flow, Owner, Snapshot, Transition};

pub use self::fanout::{Live, LiveEvent, LockWatch, Watch};
pub use self::memory::MemoryHot;
pub use self::redis::RedisHot;

/// How long a deleted flow's tombstone outlives it: longer than any in-flight repopulation.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(60);

/// Result of a hot-tier call.
pub type HotResult<T> = std::result::Result<T, HotError>;

/// Why a hot-tier call failed; the caller falls back to the ledger.
#[derive(Debug, thiserror::Error)]
pub enum HotError {
    /// Redis refused, timed out or is unreachable.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The circuit breaker is open: Redis was not asked.
    #[error("redis unavailable (circuit breaker open)")]
    Unavailable,
    /// A cached value could not be decoded (treated as a miss).
    #[error("corrupt cached value at {key}: {reason}")]
    Corrupt {
        /// The key holding the bad value.
        key: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A value whose tag is missing or does not verify under the secret key: not written by
    /// flowstate, or moved from another key. Treated as a miss, never served.
    #[error("unverified value at {key}: {reason}")]
    Unverified {
        /// The key holding the value (its content is never logged).
        key: String,
        /// What failed.
        reason: &'static str,
    },
    /// A write did not reach its keys, which may now hold stale values: the tier deletes them
    /// before it serves again, and the caller records them in the ledger so that a crash, or
    /// another instance, cannot skip that.
    #[error("{source} (keys newly stale: {})", keys.len())]
    Unwritten {
        /// Keys to invalidate that this tier did not hold as stale already (those were
        /// recorded by an earlier write).
        keys: Vec<String>,
        /// Why the write did not happen.
        source: Box<HotError>,
    },
}

impl HotError {
    /// The reason recorded in the fallback log: `timeout`, `unavailable` or `error`.
    pub fn reason(&self) -> &'static str {
        match self {
            HotError::Unwritten { source, .. } => source.reason(),
            HotError::Redis(e) if e.is_timeout() => "timeout",
            HotError::Redis(e)
                if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() =>
            {
                "unavailable"
            }
            HotError::Unavailable => "unavailable",
            HotError::Unverified { .. } => "unverified",
            HotError::Redis(_) | HotError::Corrupt { .. } => "error",
        }
    }

    /// The error for a value at `key` that did not decode; an unverified one is counted
    /// (`flowstate_redis_unverified_values_total`) and logged by key only.
    pub(crate) fn undecodable(key: String, err: codec::DecodeError) -> HotError {
        match err {
            codec::DecodeError::Corrupt(reason) => HotError::Corrupt { key, reason },
            codec::DecodeError::Unverified(reason) => HotError::unverified(key, reason),
        }
    }

    /// An unverified value at `key`, counted and logged (never its content).
    pub(crate) fn unverified(key: String, reason: &'static str) -> HotError {
        metrics::counter!("flowstate_redis_unverified_values_total").increment(1);
        tracing::warn!(%key, reason, "value in Redis failed verification: treated as a miss");
        HotError::Unverified { key, reason }
    }
}

/// What the hot tier knows about a flow.
#[derive(Debug, Clone, PartialEq)]
pub enum CachedFlow {
    /// Not cached: ask the ledger.
    Missing,
    /// Recently deleted: answer "not found" without asking the ledger.
    Deleted,
    /// Cached record.
    Present(Flow),
}

/// The names of everything attached to one flow, for [`HotTier::memory`].
#[derive(Debug, Clone, Default)]
pub struct FlowKeys {
    /// The flow.
    pub flow_id: String,
    /// Its phases.
    pub phases: Vec<String>,
    /// Its agents with results.
    pub agents: Vec<String>,
    /// Its snapshot ids.
    pub snapshots: Vec<String>,
}

/// Counters a hot tier keeps about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct HotStats {
    /// Network round trips to Redis (a pipeline or a script counts once); 0 for memory.
    pub round_trips: u64,
    /// Round trips that failed: unreachable, timed out, or answered with an error.
    pub errors: u64,
    /// Commands sent (a pipeline counts each of its commands).
    pub commands_sent: u64,
    /// Bytes those commands took on the wire.
    pub bytes_sent: u64,
    /// Whether the circuit breaker is open (calls skip Redis).
    pub breaker_open: bool,
    /// How often the breaker has opened since start.
    pub breaker_opened_total: u64,
    /// Keys a write could not reach, to invalidate before Redis serves again.
    pub dirty_keys: u64,
}

/// Cached flow records (the reference's orchestrator keys) and the transitions stream.
#[async_trait]
pub trait FlowHot: Send + Sync + 'static {
    /// Caches a newly registered flow (replacing the tombstone of an earlier incarnation), adds
    /// it to the registry and to its parent's children, and appends `events` (see
    /// [`EventHot::append_events`]), all in one round trip.
    async fn register_flow(&self, flow: &Flow, events: &[Event]) -> HotResult<()>;

    /// Caches a flow read from the ledger, unless a newer version is cached already.
    async fn cache_flow(&self, flow: &Flow) -> HotResult<()>;

    /// The cached flow record.
    async fn get_flow(&self, flow_id: &str) -> HotResult<CachedFlow>;

    /// Appends a transition to the flow's transitions stream, caches the updated flow
    /// (unless a newer version is cached already) and appends `events`, in one round trip.
    async fn record_transition(
        &self,
        flow: &Flow,
        transition: &Transition,
        events: &[Event],
    ) -> HotResult<()>;

    /// Forgets deleted flows: tombstones their records, removes them from the registry and the
    /// hierarchy, drops their transitions streams and documents, and appends `events` (their
    /// event streams are kept, shortened to the tombstones' lifetime, so that a subscriber
    /// still learns of the delete).
    async fn remove_flows(&self, flows: &[DeletedFlow], events: &[Event]) -> HotResult<()>;

    /// Drops a flow's cached record and, when given, one of its documents, whatever their
    /// versions (used when a ledger write's outcome is unknown).
    async fn forget(&self, flow_id: &str, document: Option<(DocKind, &str)>) -> HotResult<()>;
}

/// Cached documents: states, phase states, per-flow agent results.
#[async_trait]
pub trait DocumentHot: Send + Sync + 'static {
    /// Caches a document unless a newer version is cached or its `owner`'s incarnation has
    /// ended (the flow was deleted, or deleted and registered again). The owner's status picks
    /// the state TTL; `fresh` marks a new write (which indexes the document and, for a phase,
    /// invalidates the flow's cached state) as opposed to a repopulation after a miss.
    /// `events` are appended in the same round trip.
    async fn put_document(
        &self,
        kind: DocKind,
        doc: &Document,
        owner: &Owner,
        fresh: bool,
        events: &[Event],
    ) -> HotResult<()>;

    /// The cached document, if any.
    async fn get_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
    ) -> HotResult<Option<Document>>;
}

/// Cached snapshots.
#[async_trait]
pub trait SnapshotHot: Send + Sync + 'static {
    /// Caches a snapshot unless its `owner`'s incarnation has ended; a `fresh` one is also
    /// pushed on the flow's snapshot list, whose `evicted` ids are dropped.
    async fn put_snapshot(
        &self,
        snapshot: &Snapshot,
        evicted: &[String],
        owner: &Owner,
        fresh: bool,
    ) -> HotResult<()>;

    /// The cached snapshot, if any.
    async fn get_snapshot(&self, flow_id: &str, snapshot_id: &str) -> HotResult<Option<Snapshot>>;
}

/// What became of a custom event offered to the hot tier ([`EventHot::post_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    /// Appended under this id.
    Stored(EventId),
    /// The flow is not cached: nothing appended; ask the ledger whether it exists.
    FlowNotCached,
    /// The flow was deleted: nothing appended.
    FlowDeleted,
    /// The cached flow is another registration of the id than the one asked for: nothing
    /// appended.
    OtherIncarnation,
}

/// Each flow's event stream (`flow:events:{id}`): bounded history with an epoch, and live
/// delivery to the flow's subscribers on every instance.
#[async_trait]
pub trait EventHot: Send + Sync + 'static {
    /// Appends events to their flows' streams and delivers them live, in one round trip. Each
    /// is stored under its own id, unless its stream holds that id already (a replay: skipped)
    /// or a later one (then under the stream's next id). Returns the ids stored under.
    async fn append_events(&self, events: &[Event]) -> HotResult<Vec<EventId>>;

    /// Appends a custom event as [`EventHot::append_events`] does, if the hot tier holds its
    /// flow's record (so that posting to a cached flow costs one round trip in all) and, when
    /// `incarnation` is given, that record is of this registration (a sealed or plain payload
    /// was chosen for it).
    async fn post_event(&self, event: &Event, incarnation: Option<i64>) -> HotResult<Posted>;

    /// What a subscriber resuming after `after` missed (see [`History`]); without `after`,
    /// only the stream's epoch and top. One round trip.
    async fn history(&self, flow_id: &str, after: Option<EventId>) -> HotResult<History>;

    /// Starts receiving the flow's live events. Returns once the feed is live, or at once when
    /// it cannot be (Redis down): the watcher then gets [`Live::Resync`] when it is.
    async fn watch(&self, flow_id: &str) -> Watch;

    /// Delivers an event to this instance's subscribers only: how events published while the
    /// tier is unreachable still reach them.
    fn deliver_locally(&self, event: Event);
}

/// What a lock request got from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockAttempt {
    /// Granted with this fencing token.
    Granted {
        /// The grant's fencing token.
        fence: u64,
    },
    /// Held by someone else for about this long (`None`: without expiry).
    Held {
        /// Milliseconds until the holder's lock lapses, if it does.
        retry_in_ms: Option<u64>,
    },
    /// Redis is another grantor than the one the lock authority names (restarted, failed
    /// over, lost its keys): nothing was done there; this is its grantor.
    Untrusted {
        /// The grantor that answered: `<run_id>/<nonce>` (see [`LockHot::grantor`]).
        grantor: String,
    },
    /// A later generation of the lock authority granted this name: the caller's view of the
    /// authority is stale.
    Stale,
}

/// Locks on Redis (`orchestrator:locks:{name}`): grant, compare-and-extend, compare-and-
/// delete, one round trip each, each checking that Redis is still the grantor the lock
/// authority names.
#[async_trait]
pub trait LockHot: Send + Sync + 'static {
    /// Grants `name` for `ttl_ms` under token `<fence>.<secret>` unless it is held.
    async fn acquire_lock(
        &self,
        name: &str,
        grantor: &str,
        generation: u64,
        secret: &str,
        ttl_ms: u64,
    ) -> HotResult<LockAttempt>;

    /// Extends `name` to `ttl_ms` from now if `token` holds it: `Granted` (with the token's
    /// fence) or `Held { .. }` (not held under this token), or `Untrusted`.
    async fn refresh_lock(
        &self,
        name: &str,
        grantor: &str,
        token: &str,
        ttl_ms: u64,
    ) -> HotResult<LockAttempt>;

    /// Releases `name` if `token` holds it (and wakes its waiters everywhere); false if not.
    async fn release_lock(&self, name: &str, token: &str) -> HotResult<bool>;

    /// The grantor that answers: Redis's `run_id` and the nonce in `orchestrator:locks:grantor`
    /// (written if missing), as `<run_id>/<nonce>`. A restart, a failover or lost keys make
    /// another grantor.
    async fn grantor(&self) -> HotResult<String>;

    /// Copies the ledger's live leases into Redis under their owner tokens, each for at
    /// least its remaining time (from `ledger_now_ms`) and its fencing token as the name's
    /// last unless a later one is there, in one round trip per batch. Returns the grantor
    /// of the process that holds them all (an error if it changed midway).
    async fn mirror_locks(&self, leases: &[LiveLease], ledger_now_ms: i64) -> HotResult<String>;
}

/// How a lock's waiters learn that it was released.
#[async_trait]
pub trait LockWaitHot: Send + Sync + 'static {
    /// Starts listening for the lock's releases (Redis: on every instance). Returns once
    /// listening, or at once when that cannot be (the waiter's bounded poll covers it).
    async fn watch_lock(&self, name: &str) -> LockWatch;

    /// Wakes this instance's waiters of the lock.
    fn wake_lock(&self, name: &str);
}

/// The registry of open SSE connections (`sse:connections:*`), across instances.
#[async_trait]
pub trait ConnectionHot: Send + Sync + 'static {
    /// Registers an open connection for `ttl.sse_connection`.
    async fn add_connection(&self, conn: &SseConnection) -> HotResult<()>;

    /// Extends open connections' registrations by `ttl.sse_connection`, in one round trip per
    /// thousand.
    async fn refresh_connections(&self, conns: &[SseConnection]) -> HotResult<()>;

    /// Removes a closed connection.
    async fn remove_connection(&self, conn: &SseConnection) -> HotResult<()>;

    /// The flow's open connections on every instance.
    async fn connections(&self, flow_id: &str) -> HotResult<Vec<SseConnection>>;
}

/// The agent result cache: a pure cache (nothing of it is in the ledger), so a failed store is
/// dropped rather than recorded for invalidation.
#[async_trait]
pub trait AgentCacheHot: Send + Sync + 'static {
    /// The cached result, if any; a hit slides the entry's TTL (the agent's,
    /// `ttl.agent_cache`). One command.
    async fn get_result(&self, agent: &str, hash: &str) -> HotResult<Option<CachedResult>>;

    /// The cached result, or else a lease for `lease_ms` under `token` unless another caller
    /// holds one. One round trip.
    async fn get_or_lease(
        &self,
        agent: &str,
        hash: &str,
        token: &str,
        lease_ms: u64,
    ) -> HotResult<LeasedLookup>;

    /// Stores a result if the lease is still held under `token`, and releases it; false (and
    /// nothing stored) otherwise. One round trip.
    async fn put_leased(
        &self,
        agent: &str,
        hash: &str,
        result: &CachedResult,
        token: &str,
    ) -> HotResult<bool>;

    /// Gives up the lease held under `token` without storing anything (the computation
    /// failed), so a waiter can take it at once; false if `token` no longer holds it. One
    /// round trip.
    async fn release_lease(&self, agent: &str, hash: &str, token: &str) -> HotResult<bool>;

    /// Stores a result for the agent's TTL, replacing any. One round trip.
    async fn put_result(&self, agent: &str, hash: &str, result: &CachedResult) -> HotResult<()>;

    /// Adds counts gathered by one instance (per agent, with its last store), in one round
    /// trip: the shared totals every instance reads.
    async fn record_counts(
        &self,
        counts: &[(String, CacheCounts, Option<time::OffsetDateTime>)],
    ) -> HotResult<()>;

    /// What has been recorded of an agent.
    async fn cache_stats(&self, agent: &str) -> HotResult<AgentTotals>;

    /// Deletes the agent's entries whose hash matches the glob `pattern` (all without one),
    /// without blocking Redis (SCAN + UNLINK in batches); returns how many.
    async fn invalidate_results(&self, agent: &str, pattern: Option<&str>) -> HotResult<u64>;
}

/// Backups of Redis data (Redis only: the in-process tier holds nothing another process
/// could lose).
#[async_trait]
pub trait BackupHot: Send + Sync + 'static {
    /// One `SCAN` step over the keys matching `pattern` (relative to the key prefix): the next
    /// cursor (0 when done) and the keys found, without the prefix.
    async fn scan_keys(
        &self,
        pattern: &str,
        cursor: u64,
        count: usize,
    ) -> HotResult<(u64, Vec<Vec<u8>>)>;

    /// Reads keys (without prefix) with their type, remaining time to live and value, in two
    /// round trips; a key gone meanwhile is left out.
    async fn dump_keys(&self, keys: &[Vec<u8>]) -> HotResult<Vec<KeyDump>>;

    /// Writes keys back as they were dumped, replacing what is there, in one round trip.
    async fn restore_keys(&self, dumps: &[KeyDump]) -> HotResult<()>;
}

/// What the health monitor reads of the tier, and where it keeps its series.
#[async_trait]
pub trait MonitorHot: Send + Sync + 'static {
    /// The tier's figures (Redis: `INFO` and the slow log entries after `slowlog_after`, one
    /// round trip) and the newest slow log id seen (to pass next time); `error_rate_pct` is
    /// left to the caller.
    async fn figures(&self, slowlog_after: Option<i64>) -> HotResult<(Figures, Option<i64>)>;

    /// Whether this instance leads the monitor: holds `metrics:redis:leader` (taken when free,
    /// extended to `ttl_ms` when its own), so that one instance writes the series and posts
    /// alerts. The in-process tier always leads.
    async fn lead_monitor(&self, instance_id: &str, ttl_ms: u64) -> HotResult<bool>;

    /// Adds this instance's commands and bytes to the day's totals of every instance
    /// (`metrics:redis:budget:<day>`, kept two days) and returns those totals, in one round
    /// trip. The in-process tier has no budget: it returns its own counts.
    async fn add_usage(&self, day: &str, commands: u64, bytes: u64) -> HotResult<(u64, u64)>;

    /// Appends one sample per metric to `metrics:redis:<metric>` (sorted sets scored by Unix
    /// seconds) and drops samples older than 24 hours, in one round trip. The in-process tier
    /// keeps no series.
    async fn record_series(&self, at_s: i64, samples: &[(&str, f64)]) -> HotResult<()>;
}

/// The whole hot tier: every capability, plus what the service needs of the tier itself.
#[async_trait]
pub trait HotTier:
    FlowHot
    + DocumentHot
    + SnapshotHot
    + EventHot
    + ConnectionHot
    + LockWaitHot
    + AgentCacheHot
    + MonitorHot
{
    /// The tier's locks, if it grants them itself (Redis); otherwise the ledger's leases serve.
    fn locks(&self) -> Option<&dyn LockHot> {
        None
    }

    /// Backups of the tier's data, if it is Redis.
    fn backups(&self) -> Option<&dyn BackupHot> {
        None
    }

    /// Replaces pooled Redis connections with new ones (managed Redis services that drop
    /// long-lived connections); nothing in process.
    fn recycle_connections(&self) -> HotResult<()> {
        Ok(())
    }

    /// Backend name for health output (`memory`, `redis`).
    fn backend(&self) -> &'static str;

    /// Round trip to check the tier answers; returns its latency.
    async fn ping(&self) -> HotResult<Duration>;

    /// Counters since start.
    fn stats(&self) -> HotStats;

    /// Grows every time the tier loses its connection to Redis (the breaker opens); a cache fill
    /// whose ledger read started in an older epoch is dropped.
    fn epoch(&self) -> u64 {
        0
    }

    /// Readies the tier at startup (Redis: loads the Lua scripts, so that the first operations
    /// are one round trip too).
    async fn prepare(&self) -> HotResult<()> {
        Ok(())
    }

    /// Bytes used by each of a flow's keys (absent keys omitted), named as in Redis.
    async fn memory(&self, keys: &FlowKeys) -> HotResult<BTreeMap<String, u64>>;

    /// Whether other processes share this tier (Redis), so that invalidations recorded in
    /// the ledger concern it. An in-process tier starts empty and never misses a write.
    fn shared(&self) -> bool {
        false
    }

    /// Deletes `keys` (recorded invalidations, see [`HotError::Unwritten`]) and starts a new
    /// [`HotTier::epoch`], so that no repopulation read before can land after. Only asked of
    /// a [`HotTier::shared`] tier.
    async fn invalidate(&self, _keys: &[String]) -> HotResult<()> {
        Ok(())
    }
}
