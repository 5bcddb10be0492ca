//! The one typed configuration, layered: built-in defaults (the reference's), then the TOML file
//! named by `FLOWSTATE_CONFIG`, then environment variables.
//!
//! The reference's own variable names are honoured (`REDIS_ENABLED`, `REDIS_URL`,
//! `REDIS_SSL_REQUIRED`, `REDIS_MAX_CONNECTIONS`, `DATABASE_URL`); everything else is
//! `FLOWSTATE_<SECTION>__<KEY>`, e.g. `FLOWSTATE_LISTEN`, `FLOWSTATE_TTL__MULTIPLIER`,
//! `FLOWSTATE_TTL__PHASES__SYNTHESIS`. A bad value fails at startup with a message naming the
//! setting and where it came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// All of flowstate's settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds (`FLOWSTATE_LISTEN`).
    pub listen: SocketAddr,
    /// Prepended to every Redis key so several environments can share one Redis
    /// (`FLOWSTATE_KEY_PREFIX`), e.g. `staging:`.
    pub key_prefix: String,
    /// Largest accepted request body in bytes; larger ones get 413 (`FLOWSTATE_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// Threads serving requests (`FLOWSTATE_WORKER_THREADS`); 0 means one per core. On a
    /// machine shared with Redis or a load generator, fewer can be faster.
    pub worker_threads: usize,
    /// The hot tier (Redis); absent or disabled means the in-process memory tier.
    pub redis: RedisConfig,
    /// The ledger (SQLite or PostgreSQL).
    pub database: DatabaseConfig,
    /// Key lifetimes (docs/redis-keys.md).
    pub ttl: TtlConfig,
    /// The agent result cache.
    pub agent_cache: AgentCacheConfig,
    /// Flow events and their SSE streams.
    pub events: EventsConfig,
    /// Distributed locks.
    pub locks: LocksConfig,
    /// The Redis health monitor and its alerts.
    pub health: HealthConfig,
    /// Backups of Redis data into the ledger.
    pub backup: BackupConfig,
    /// A managed Redis plan's daily limits, watched by the health monitor.
    pub budget: BudgetConfig,
    /// The audit of cache operations (`redis_cache_audit`).
    pub audit: AuditConfig,
    /// Authentication, value signing and encryption (docs/security.md).
    pub security: SecurityConfig,
    /// Limits on requests: JSON shape, rate, time.
    pub limits: LimitsConfig,
}

/// A secret setting: serialised as given (figment layers through serde), never shown by
/// `Debug`. An environment value of digits only (which figment reads as a number) is taken
/// as its text.
#[derive(Clone, Serialize, PartialEq, Eq, Default)]
#[serde(transparent)]
pub struct Secret(pub String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Text(String),
            Unsigned(u64),
            Signed(i64),
            Float(f64),
        }
        Ok(Secret(match Given::deserialize(d)? {
            Given::Text(s) => s,
            Given::Unsigned(n) => n.to_string(),
            Given::Signed(n) => n.to_string(),
            Given::Float(n) => n.to_string(),
        }))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// A list of secret entries, given as a TOML list or one comma-separated string (how an
/// environment variable carries it); never shown by `Debug`.
#[derive(Clone, Serialize, PartialEq, Eq, Default)]
#[serde(transparent)]
pub struct SecretList(pub Vec<String>);

impl std::fmt::Debug for SecretList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} entries]", self.0.len())
    }
}

impl<'de> Deserialize<'de> for SecretList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            One(String),
            Many(Vec<String>),
        }
        Ok(SecretList(match Given::deserialize(d)? {
            Given::One(s) => s
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect(),
            Given::Many(v) => v,
        }))
    }
}

/// Authentication, signing and encryption settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// API tokens with their roles, `role:token` or `role:sha256:<hex>` (`FLOWSTATE_API_TOKENS`,
    /// comma-separated). None: the server runs open, and only on a loopback address.
    pub api_tokens: SecretList,
    /// Serve `/metrics` without a token (`FLOWSTATE_SECURITY__OPEN_METRICS`); otherwise it
    /// takes a `read` token like the API.
    pub open_metrics: bool,
    /// Allow running without tokens on a non-loopback address (`--insecure-open`).
    pub insecure_open: bool,
    /// Key of the HMAC tag on every value written to Redis (`FLOWSTATE_SECRET_KEY`, at least
    /// 32 bytes). Unset: values are not signed.
    pub secret_key: Option<Secret>,
    /// Keys sealing sensitive flows' data, `<key_id>:<base64 of 32 bytes>`, the first sealing
    /// new writes (`FLOWSTATE_ENCRYPTION_KEYS`, comma-separated).
    pub encryption_keys: SecretList,
}

/// Request limits; every one has a safe default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Deepest nesting of arrays and objects in a JSON body (`FLOWSTATE_LIMITS__MAX_JSON_DEPTH`).
    pub max_json_depth: usize,
    /// Most object keys plus array elements in one JSON body
    /// (`FLOWSTATE_LIMITS__MAX_JSON_ITEMS`).
    pub max_json_items: usize,
    /// Requests per second each token may make, sustained (`FLOWSTATE_LIMITS__RATE_PER_S`);
    /// 0 turns rate limiting off. Without tokens nothing is limited.
    pub rate_per_s: u32,
    /// Requests a token may make at once above the sustained rate (`FLOWSTATE_LIMITS__RATE_BURST`).
    pub rate_burst: u32,
    /// Longest a request may take before it is answered 503 `request_timeout`
    /// (`FLOWSTATE_LIMITS__REQUEST_TIMEOUT_MS`); event streams are exempt.
    pub request_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_json_depth: 64,
            max_json_items: 100_000,
            rate_per_s: 2000,
            rate_burst: 4000,
            request_timeout_ms: 90_000,
        }
    }
}

/// Audit settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Share of cache operations recorded, 0 to 1 (`FLOWSTATE_AUDIT__SAMPLE_RATE`); every
    /// failed one is recorded whatever the rate.
    pub sample_rate: f64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { sample_rate: 0.01 }
    }
}

/// Managed-Redis budgets (reference §5.1): with a plan or explicit limits, the health monitor
/// counts the commands and bytes every instance sends per UTC day and alerts at `alert_pct`
/// of each limit and of the plan's memory; pooled connections are recycled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// `UPSTASH_PLAN`: `free` or `pay_as_you_go`, the reference's limits for each.
    pub plan: Option<String>,
    /// Commands per day (overrides the plan's) (`FLOWSTATE_BUDGET__MAX_COMMANDS_PER_DAY`).
    pub max_commands_per_day: Option<u64>,
    /// MB sent per day (overrides the plan's) (`FLOWSTATE_BUDGET__MAX_BANDWIDTH_MB_PER_DAY`).
    pub max_bandwidth_mb_per_day: Option<u64>,
    /// Memory in MB (overrides the plan's) (`FLOWSTATE_BUDGET__MAX_MEMORY_MB`).
    pub max_memory_mb: Option<u64>,
    /// Alert at this % of a limit (`FLOWSTATE_BUDGET__ALERT_PCT`).
    pub alert_pct: f64,
    /// Seconds between recycling the pooled Redis connections when a budget is set
    /// (`FLOWSTATE_BUDGET__CONNECTION_POOL_RECYCLE_S`); 0 never.
    pub connection_pool_recycle_s: u64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            plan: None,
            max_commands_per_day: None,
            max_bandwidth_mb_per_day: None,
            max_memory_mb: None,
            alert_pct: 80.0,
            connection_pool_recycle_s: 3600,
        }
    }
}

/// A budget's limits, once the plan and the explicit values are combined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetLimits {
    /// Commands per day.
    pub commands_per_day: Option<u64>,
    /// Bytes sent per day.
    pub bytes_per_day: Option<u64>,
    /// Memory, in bytes.
    pub memory_bytes: Option<u64>,
    /// Alert at this %.
    pub alert_pct: f64,
}

impl BudgetConfig {
    /// The limits in force, or `None` when no plan and no limit is set.
    pub fn limits(&self) -> Option<BudgetLimits> {
        // The reference's plans: (memory MB, commands per day, MB per day).
        let plan = match self.plan.as_deref() {
            Some("free") => Some((256, 10_000, 100)),
            Some("pay_as_you_go") => Some((1024, 1_000_000, 10_000)),
            _ => None,
        };
        let mb = |v: u64| v.saturating_mul(1024 * 1024);
        let limits = BudgetLimits {
            commands_per_day: self.max_commands_per_day.or(plan.map(|p| p.1)),
            bytes_per_day: self.max_bandwidth_mb_per_day.or(plan.map(|p| p.2)).map(mb),
            memory_bytes: self.max_memory_mb.or(plan.map(|p| p.0)).map(mb),
            alert_pct: self.alert_pct,
        };
        let any = limits.commands_per_day.is_some()
            || limits.bytes_per_day.is_some()
            || limits.memory_bytes.is_some();
        any.then_some(limits)
    }
}

/// The reference's critical patterns, backed up when a request names none.
pub const DEFAULT_BACKUP_PATTERNS: [&str; 4] = [
    "flow:events:*",
    "cache:flow:state:*",
    "orchestrator:*",
    "agent:results:*",
];

/// Backup settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// Hours between scheduled backups (`FLOWSTATE_BACKUP__INTERVAL_H`); 0 turns them off.
    pub interval_h: u64,
    /// Complete backups kept; older ones are deleted after each backup
    /// (`FLOWSTATE_BACKUP__KEEP`).
    pub keep: u32,
    /// Key patterns a backup covers when its request names none (`FLOWSTATE_BACKUP__PATTERNS`,
    /// TOML list), relative to `key_prefix`; checked when the service opens.
    pub patterns: Vec<String>,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            interval_h: 6,
            keep: 7,
            patterns: DEFAULT_BACKUP_PATTERNS
                .iter()
                .map(|p| (*p).to_string())
                .collect(),
        }
    }
}

/// Health monitor settings; thresholds default to the reference's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Seconds between checks (`FLOWSTATE_HEALTH__INTERVAL_S`); 0 turns the monitor off.
    pub interval_s: u64,
    /// Alert when Redis uses more than this % of its `maxmemory` (`FLOWSTATE_HEALTH__MEMORY_PCT`).
    pub memory_pct: f64,
    /// Alert above this many connected clients (`FLOWSTATE_HEALTH__MAX_CLIENTS`).
    pub max_clients: u64,
    /// Alert when a command slower than this (ms) entered Redis's slow log since the last
    /// check (`FLOWSTATE_HEALTH__SLOW_COMMAND_MS`).
    pub slow_command_ms: u64,
    /// Alert when more than this % of this instance's Redis calls failed since the last check
    /// (`FLOWSTATE_HEALTH__ERROR_RATE_PCT`).
    pub error_rate_pct: f64,
    /// Where alerts are POSTed as JSON (`FLOWSTATE_ALERT_WEBHOOK`; `http://` only).
    pub alert_webhook: Option<String>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_s: 60,
            memory_pct: 80.0,
            max_clients: 40,
            slow_command_ms: 100,
            error_rate_pct: 5.0,
            alert_webhook: None,
        }
    }
}

/// Distributed lock settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LocksConfig {
    /// Longest `ttl_ms` a lock may be granted or refreshed for (`FLOWSTATE_LOCKS__MAX_TTL_MS`).
    pub max_ttl_ms: u64,
    /// Longest `wait_ms` a request may wait for a held lock (`FLOWSTATE_LOCKS__MAX_WAIT_MS`).
    pub max_wait_ms: u64,
    /// Longest a waiter sleeps before asking again when no release wakes it: covers releases
    /// it cannot hear of (another process on SQLite, a lost message)
    /// (`FLOWSTATE_LOCKS__POLL_MAX_MS`).
    pub poll_max_ms: u64,
    /// How far beyond the lock being granted the horizon is extended, the bound on every
    /// Redis lock's expiry that the ledger records (`FLOWSTATE_LOCKS__HORIZON_STEP_MS`): at most
    /// one ledger write per step per instance while locks are used; after Redis is lost,
    /// nothing is granted until up to this much after the longest lock granted just before.
    pub horizon_step_ms: u64,
    /// How long Redis must stay unreachable (its breaker open) before locks fall back to the
    /// ledger's leases; until then they answer 503 (`FLOWSTATE_LOCKS__FALLBACK_AFTER_MS`).
    pub fallback_after_ms: u64,
}

impl Default for LocksConfig {
    fn default() -> Self {
        LocksConfig {
            max_ttl_ms: 300_000,
            max_wait_ms: 30_000,
            poll_max_ms: 250,
            horizon_step_ms: 10_000,
            fallback_after_ms: 3_000,
        }
    }
}

/// Flow event settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Events kept per flow stream, about (Redis trims whole nodes: `MAXLEN ~`)
    /// (`FLOWSTATE_EVENTS__MAXLEN`). A subscriber resuming from older history gets a `reset`.
    pub maxlen: u64,
    /// Seconds between SSE heartbeat comments, which keep proxies from closing idle streams
    /// and refresh the connection registry (`FLOWSTATE_EVENTS__HEARTBEAT_S`).
    pub heartbeat_s: u64,
    /// Largest custom event (`event_type` and JSON payload) in bytes; larger ones get 413
    /// (`FLOWSTATE_EVENTS__MAX_EVENT_BYTES`).
    pub max_event_bytes: usize,
    /// Live events buffered per flow for a slow subscriber before it must re-read the stream
    /// (`FLOWSTATE_EVENTS__BUFFER`).
    pub buffer: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            maxlen: 1000,
            heartbeat_s: 15,
            max_event_bytes: 64 * 1024,
            buffer: 1024,
        }
    }
}

impl EventsConfig {
    /// [`EventsConfig::heartbeat_s`] as a duration.
    pub fn heartbeat(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.heartbeat_s)
    }
}

/// Agent result cache settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentCacheConfig {
    /// Serve hits from process memory in front of Redis (`FLOWSTATE_AGENT_CACHE__L1`). Off by
    /// default; only used with Redis.
    pub l1: bool,
    /// How long an L1 entry serves before Redis is asked again: the most another instance's
    /// store or invalidation can take to reach this one (`FLOWSTATE_AGENT_CACHE__L1_TTL_MS`).
    pub l1_ttl_ms: u64,
    /// Bytes of results the L1 keeps at most (`FLOWSTATE_AGENT_CACHE__L1_MAX_BYTES`).
    pub l1_max_bytes: u64,
    /// Longest `wait_ms` a lookup may wait for another caller's result
    /// (`FLOWSTATE_AGENT_CACHE__MAX_WAIT_MS`).
    pub max_wait_ms: u64,
}

impl Default for AgentCacheConfig {
    fn default() -> Self {
        AgentCacheConfig {
            l1: false,
            l1_ttl_ms: 1000,
            l1_max_bytes: 64 * 1024 * 1024,
            max_wait_ms: 60_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            key_prefix: String::new(),
            max_body_bytes: 1024 * 1024,
            worker_threads: 0,
            redis: RedisConfig::default(),
            database: DatabaseConfig::default(),
            ttl: TtlConfig::default(),
            agent_cache: AgentCacheConfig::default(),
            events: EventsConfig::default(),
            locks: LocksConfig::default(),
            health: HealthConfig::default(),
            backup: BackupConfig::default(),
            budget: BudgetConfig::default(),
            audit: AuditConfig::default(),
            security: SecurityConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// Redis settings; the defaults follow the reference's pool configuration.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `REDIS_ENABLED`. When unset, Redis is used exactly when `REDIS_URL` is set.
    pub enabled: Option<bool>,
    /// `REDIS_URL` (`redis://` or `rediss://`); defaults to `redis://localhost:6379/0`.
    pub url: Option<String>,
    /// ACL user (`REDIS_USERNAME`), instead of one in the URL.
    pub username: Option<String>,
    /// Password (`REDIS_PASSWORD`), instead of one in the URL; redacted wherever shown.
    pub password: Option<Secret>,
    /// `REDIS_SSL_REQUIRED`: refuse any URL that is not `rediss://`.
    pub ssl_required: bool,
    /// PEM file of the certificate authorities to trust for `rediss://` instead of the public
    /// roots (a private CA). Certificates are verified either way.
    pub ca_cert: Option<std::path::PathBuf>,
    /// `REDIS_MAX_CONNECTIONS`: upper bound on connections this instance opens to Redis.
    pub max_connections: u32,
    /// Multiplexed connections shared by all requests (each carries many requests at once).
    pub pool_size: u32,
    /// Timeout for establishing a connection (the reference's `socket_connect_timeout`).
    pub connect_timeout_ms: u64,
    /// Timeout for one command or pipeline. Lower than the reference's 5 s: a hot-tier call
    /// that takes longer than this is better answered from the ledger.
    pub command_timeout_ms: u64,
    /// Reconnect attempts per failure before a call gives up (the reference's `retries=3`).
    pub reconnect_retries: u32,
    /// Cap of the exponential reconnect backoff (the reference's `ExponentialBackoff(cap=30)`).
    pub reconnect_max_delay_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            enabled: None,
            url: None,
            username: None,
            password: None,
            ssl_required: false,
            ca_cert: None,
            max_connections: 50,
            pool_size: 4,
            connect_timeout_ms: 5000,
            command_timeout_ms: 500,
            reconnect_retries: 3,
            reconnect_max_delay_ms: 30_000,
        }
    }
}

impl RedisConfig {
    /// The URL used when Redis is enabled without one.
    pub const DEFAULT_URL: &'static str = "redis://localhost:6379/0";

    /// Whether the hot tier is Redis (otherwise in-process memory).
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(self.url.is_some())
    }

    /// The effective URL.
    pub fn effective_url(&self) -> &str {
        self.url.as_deref().unwrap_or(Self::DEFAULT_URL)
    }

    /// Connect timeout as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Command timeout as a duration.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }
}

/// Ledger settings.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `DATABASE_URL`: `sqlite://path` (created if missing) or `postgres://…`.
    pub url: String,
    /// Pool size (PostgreSQL connections, or SQLite readers; SQLite always has one writer).
    pub max_connections: u32,
    /// How long a request waits for a ledger connection before answering 503.
    pub acquire_timeout_ms: u64,
    /// SQLite only: WAL size (KiB) at which a commit copies the WAL into the database file.
    /// Each copy stalls the writes queued behind it, about 1 ms per MiB here; larger means
    /// fewer, longer stalls and more throughput (see `ledger/sqlite_writer.rs`).
    pub sqlite_checkpoint_kib: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://flowstate.db".into(),
            max_connections: 16,
            acquire_timeout_ms: 5000,
            sqlite_checkpoint_kib: 16_000,
        }
    }
}

/// Key lifetimes in seconds, with the reference's defaults (docs/redis-keys.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TtlConfig {
    /// Scales every TTL (managed Redis plans use 0.8).
    pub multiplier: f64,
    /// Up to this fraction is added at random to each TTL, so keys written together do not
    /// expire together.
    pub jitter: f64,
    /// `orchestrator:flow:{id}` (active flow).
    pub flow: u64,
    /// `orchestrator:hierarchy:{parent}`.
    pub hierarchy: u64,
    /// `flow:transitions:{id}` stream.
    pub transitions: u64,
    /// Approximate cap on entries kept in a transitions stream (`MAXLEN ~`).
    pub transitions_maxlen: u64,
    /// `cache:flow:state:{id}`, by the flow's status.
    pub flow_state: FlowStateTtl,
    /// `discovery:phase:{id}:<phase>`, by phase name; `default` for the others.
    pub phases: BTreeMap<String, u64>,
    /// `discovery:state:{id}:phases`, the set of a flow's phases.
    pub phase_set: u64,
    /// `discovery:state:{id}:cached_agents`, the set of a flow's agents with results.
    pub agent_set: u64,
    /// `discovery:agents:{id}:<agent>`: agents whose name contains `analyzer`.
    pub agent_results_analyzer: u64,
    /// `discovery:agents:{id}:<agent>`: all other agents.
    pub agent_results_default: u64,
    /// `flow:snapshots:{id}:*`.
    pub snapshots: u64,
    /// `flow:events:{id}` stream.
    pub events: u64,
    /// `agent:results:<agent>:<hash>`, by agent name; `default` for the others.
    pub agent_cache: BTreeMap<String, u64>,
    /// `sse:connections:*`, refreshed by each heartbeat.
    pub sse_connection: u64,
    /// `metrics:agent_cache:<agent>` and other metric hashes.
    pub metrics: u64,
}

/// TTLs of the flow state cache by flow status (reference §2.1 `TTL_STRATEGIES`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FlowStateTtl {
    /// Any status other than `completed` and `failed`.
    pub active: u64,
    /// Status `completed`.
    pub completed: u64,
    /// Status `failed`.
    pub failed: u64,
}

impl Default for FlowStateTtl {
    fn default() -> Self {
        FlowStateTtl {
            active: 300,
            completed: 3600,
            failed: 1800,
        }
    }
}

fn ttl_map(entries: &[(&str, u64)]) -> BTreeMap<String, u64> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_string(), *v))
        .collect()
}

impl Default for TtlConfig {
    fn default() -> Self {
        TtlConfig {
            multiplier: 1.0,
            jitter: 0.05,
            flow: 3600,
            hierarchy: 3600,
            transitions: 86400,
            transitions_maxlen: 1000,
            flow_state: FlowStateTtl::default(),
            phases: ttl_map(&[
                ("default", 3600),
                ("technology_analysis", 7200),
                ("data_discovery", 7200),
                ("middleware_discovery", 3600),
                ("infrastructure_analysis", 3600),
                ("synthesis", 1800),
                ("completed", 86400),
            ]),
            phase_set: 86400,
            agent_set: 86400,
            agent_results_analyzer: 3600,
            agent_results_default: 1800,
            snapshots: 604_800,
            events: 86400,
            agent_cache: ttl_map(&[
                ("default", 1800),
                ("technology_analyzer", 7200),
                ("codebase_analyzer", 7200),
                ("database_analyzer", 3600),
                ("data_flow_analyzer", 3600),
                ("middleware_analyzer", 3600),
                ("infrastructure_analyzer", 1800),
                ("migration_synthesizer", 900),
                ("recommendation_agent", 900),
            ]),
            sse_connection: 300,
            metrics: 86400,
        }
    }
}

/// Maps the reference's environment variable names onto config paths.
const REFERENCE_ENV: &[(&str, &str)] = &[
    ("REDIS_ENABLED", "redis.enabled"),
    ("REDIS_URL", "redis.url"),
    ("REDIS_SSL_REQUIRED", "redis.ssl_required"),
    ("REDIS_MAX_CONNECTIONS", "redis.max_connections"),
    ("DATABASE_URL", "database.url"),
    ("FLOWSTATE_ALERT_WEBHOOK", "health.alert_webhook"),
    ("UPSTASH_PLAN", "budget.plan"),
    ("REDIS_USERNAME", "redis.username"),
    ("REDIS_PASSWORD", "redis.password"),
    ("FLOWSTATE_API_TOKENS", "security.api_tokens"),
    ("FLOWSTATE_SECRET_KEY", "security.secret_key"),
    ("FLOWSTATE_ENCRYPTION_KEYS", "security.encryption_keys"),
];

/// Secret variables read as raw text (in this order, the later winning), not parsed as values.
const RAW_SECRETS: &[(&str, &str)] = &[
    ("REDIS_PASSWORD", "redis.password"),
    ("FLOWSTATE_REDIS__PASSWORD", "redis.password"),
    ("FLOWSTATE_SECRET_KEY", "security.secret_key"),
    ("FLOWSTATE_SECURITY__SECRET_KEY", "security.secret_key"),
];

/// Turns figment's errors into messages that name the setting and the variable to fix.
fn describe(errors: figment::Error) -> Error {
    let messages: Vec<String> = errors
        .into_iter()
        .map(|e| {
            let path = e.path.join(".").to_lowercase();
            let env = REFERENCE_ENV
                .iter()
                .find(|(_, p)| *p == path)
                .map(|(env, _)| (*env).to_string())
                .unwrap_or_else(|| format!("FLOWSTATE_{}", path.to_uppercase().replace('.', "__")));
            format!(
                "setting `{path}` (environment variable {env} or FLOWSTATE_CONFIG file): {}",
                e.kind
            )
        })
        .collect();
    Error::Config(messages.join("; "))
}

/// `url` with the password of its user info (`scheme://user:password@host`) shown as `***`.
fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("enabled", &self.enabled)
            .field("url", &self.url.as_deref().map(redacted_url))
            .field("username", &self.username)
            .field("password", &self.password)
            .field("ssl_required", &self.ssl_required)
            .field("ca_cert", &self.ca_cert)
            .field("max_connections", &self.max_connections)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("command_timeout_ms", &self.command_timeout_ms)
            .field("reconnect_retries", &self.reconnect_retries)
            .field("reconnect_max_delay_ms", &self.reconnect_max_delay_ms)
            .finish()
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redacted_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("sqlite_checkpoint_kib", &self.sqlite_checkpoint_kib)
            .finish()
    }
}

impl Config {
    /// Every secret among the settings (passwords in URLs, the Redis password, the secret key,
    /// API tokens, encryption keys), to redact from anything shown.
    pub fn secrets(&self) -> Vec<String> {
        fn url_password(url: &str) -> Option<String> {
            let rest = url.split_once("://")?.1;
            // The last `@`: a password may hold an unencoded one, as URL parsers allow.
            let userinfo = rest.rsplit_once('@')?.0;
            let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
            (!password.is_empty()).then(|| password.to_string())
        }
        let s = &self.security;
        let mut secrets: Vec<String> = [
            self.redis.url.as_deref().and_then(url_password),
            url_password(&self.database.url),
            self.redis.password.as_ref().map(|p| p.0.clone()),
            s.secret_key.as_ref().map(|k| k.0.clone()),
        ]
        .into_iter()
        .flatten()
        .collect();
        // Whole entries, and the secret part of each (`role:<token>`, `<key_id>:<key>`).
        for entry in s.api_tokens.0.iter().chain(&s.encryption_keys.0) {
            secrets.push(entry.clone());
            if let Some((_, secret)) = entry.split_once(':')
                && !secret.starts_with("sha256:")
            {
                secrets.push(secret.to_string());
            }
        }
        secrets.retain(|secret| secret.len() >= 4);
        secrets
    }

    /// `text` with every secret of [`Config::secrets`] replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        self.secrets().iter().fold(text.to_string(), |t, secret| {
            t.replace(secret.as_str(), "***")
        })
    }

    /// Loads defaults, then `FLOWSTATE_CONFIG` (TOML) if set, then the environment; validates.
    pub fn load() -> Result<Config> {
        let file = std::env::var_os("FLOWSTATE_CONFIG");
        Self::load_from(file.as_deref().map(Path::new))
    }

    /// Like [`Config::load`] with an explicit TOML file.
    pub fn load_from(file: Option<&Path>) -> Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(Error::Config(format!(
                    "FLOWSTATE_CONFIG: file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let names: Vec<&str> = REFERENCE_ENV.iter().map(|(env, _)| *env).collect();
        figment = figment
            .merge(Env::raw().only(&names).map(|key| {
                REFERENCE_ENV
                    .iter()
                    .find(|(env, _)| key == *env)
                    .map(|(_, path)| (*path).into())
                    .unwrap_or_else(|| key.as_str().to_lowercase().into())
            }))
            // FLOWSTATE_CONFIG names the file; FLOWSTATE_URL is the client commands' server.
            .merge(
                Env::prefixed("FLOWSTATE_")
                    .ignore(&[
                        "CONFIG",
                        "URL",
                        "TOKEN",
                        "ALERT_WEBHOOK",
                        "API_TOKENS",
                        "SECRET_KEY",
                        "ENCRYPTION_KEYS",
                    ])
                    .split("__"),
            );
        // Secrets exactly as written: figment reads `007123` as the number 7123.
        for (var, path) in RAW_SECRETS {
            if let Ok(value) = std::env::var(var) {
                figment = figment.merge(Serialized::default(path, value));
            }
        }
        let config: Config = figment.extract().map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values serde cannot: ranges, URL schemes, and how settings combine.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        let url = self.redis.effective_url();
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            // The URL may hold a password: only its scheme is shown.
            let scheme = url.split_once("://").map_or("no scheme", |(s, _)| s);
            return bad(format!(
                "REDIS_URL must start with redis:// or rediss://, got {scheme}"
            ));
        }
        if self.redis.ssl_required && self.redis.is_enabled() && !url.starts_with("rediss://") {
            return bad("REDIS_SSL_REQUIRED is true but REDIS_URL is not rediss://".into());
        }
        if self.redis.ca_cert.is_some() && self.redis.is_enabled() && !url.starts_with("rediss://")
        {
            return bad("redis.ca_cert is set but REDIS_URL is not rediss://".into());
        }
        if self.key_prefix.contains(['{', '}']) || self.key_prefix.len() > 64 {
            return bad(format!(
                "FLOWSTATE_KEY_PREFIX ({:?}) must be at most 64 characters without braces: braces would change every key's Redis Cluster hash tag",
                self.key_prefix
            ));
        }
        if self.agent_cache.l1_ttl_ms == 0 || self.agent_cache.l1_ttl_ms > 60_000 {
            return bad(format!(
                "agent_cache.l1_ttl_ms (FLOWSTATE_AGENT_CACHE__L1_TTL_MS) must be within 1..=60000, got {}",
                self.agent_cache.l1_ttl_ms
            ));
        }
        if self.agent_cache.max_wait_ms > 600_000 {
            return bad(format!(
                "agent_cache.max_wait_ms (FLOWSTATE_AGENT_CACHE__MAX_WAIT_MS) must be at most 600000, got {}",
                self.agent_cache.max_wait_ms
            ));
        }
        let ev = &self.events;
        if ev.maxlen == 0 || ev.buffer < 16 || ev.max_event_bytes < 256 {
            return bad(format!(
                "events: maxlen must be at least 1, buffer at least 16 and max_event_bytes at least 256 (got {}, {}, {})",
                ev.maxlen, ev.buffer, ev.max_event_bytes
            ));
        }
        if ev.heartbeat_s == 0 || ev.heartbeat_s >= self.ttl.sse_connection {
            return bad(format!(
                "events.heartbeat_s (FLOWSTATE_EVENTS__HEARTBEAT_S) must be at least 1 and below ttl.sse_connection ({}), got {}: each heartbeat refreshes the connection registry",
                self.ttl.sse_connection, ev.heartbeat_s
            ));
        }
        let locks = &self.locks;
        if !(1..=86_400_000).contains(&locks.max_ttl_ms)
            || locks.max_wait_ms > 600_000
            || !(1..=60_000).contains(&locks.poll_max_ms)
            || !(100..=600_000).contains(&locks.horizon_step_ms)
            || locks.fallback_after_ms > 600_000
        {
            return bad(format!(
                "locks: max_ttl_ms must be within 1..=86400000 (a day), max_wait_ms at most 600000, poll_max_ms within 1..=60000, horizon_step_ms within 100..=600000 and fallback_after_ms at most 600000 (got {}, {}, {}, {}, {})",
                locks.max_ttl_ms,
                locks.max_wait_ms,
                locks.poll_max_ms,
                locks.horizon_step_ms,
                locks.fallback_after_ms
            ));
        }
        if self.backup.keep == 0 || self.backup.interval_h > 24 * 365 {
            return bad(format!(
                "backup: keep must be at least 1 and interval_h at most 8760 (got {}, {})",
                self.backup.keep, self.backup.interval_h
            ));
        }
        if !(0.0..=1.0).contains(&self.audit.sample_rate) {
            return bad(format!(
                "audit.sample_rate (FLOWSTATE_AUDIT__SAMPLE_RATE) must be within 0..=1, got {}",
                self.audit.sample_rate
            ));
        }
        let budget = &self.budget;
        if budget
            .plan
            .as_deref()
            .is_some_and(|p| !matches!(p, "free" | "pay_as_you_go"))
            || !(0.0..=100.0).contains(&budget.alert_pct)
        {
            return bad(format!(
                "budget: UPSTASH_PLAN must be free or pay_as_you_go and alert_pct within 0..=100 (got {:?}, {})",
                budget.plan, budget.alert_pct
            ));
        }
        let health = &self.health;
        if !(0.0..=100.0).contains(&health.memory_pct)
            || !(0.0..=100.0).contains(&health.error_rate_pct)
            || health.interval_s > 86_400
        {
            return bad(format!(
                "health: memory_pct and error_rate_pct must be within 0..=100 and interval_s at most 86400 (got {}, {}, {})",
                health.memory_pct, health.error_rate_pct, health.interval_s
            ));
        }
        if let Some(hook) = &health.alert_webhook
            && !hook.starts_with("http://")
        {
            // The URL itself may hold a secret: only its scheme is shown.
            let scheme = hook.split_once("://").map_or("no scheme", |(s, _)| s);
            return bad(format!(
                "FLOWSTATE_ALERT_WEBHOOK must be an http:// URL (https is not supported yet), got {scheme}"
            ));
        }
        if self.redis.max_connections == 0 {
            return bad("REDIS_MAX_CONNECTIONS must be at least 1".into());
        }
        if self.redis.pool_size == 0 || self.redis.pool_size >= self.redis.max_connections {
            return bad(format!(
                "redis.pool_size ({}) must be at least 1 and below REDIS_MAX_CONNECTIONS ({})",
                self.redis.pool_size, self.redis.max_connections
            ));
        }
        if self.redis.command_timeout_ms == 0 || self.redis.connect_timeout_ms == 0 {
            return bad("redis timeouts must be positive".into());
        }
        let db = &self.database.url;
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return bad(format!(
                "DATABASE_URL: {db:?} must start with sqlite:, postgres:// or postgresql://"
            ));
        }
        if self.worker_threads > 1024 {
            return bad(format!(
                "worker_threads ({}) must be at most 1024 (0: one per core)",
                self.worker_threads
            ));
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections must be at least 1".into());
        }
        if !(64..=4 << 20).contains(&self.database.sqlite_checkpoint_kib) {
            return bad(format!(
                "database.sqlite_checkpoint_kib ({}) must be within 64..=4194304 (64 KiB to 4 GiB)",
                self.database.sqlite_checkpoint_kib
            ));
        }
        if !(self.ttl.multiplier > 0.0 && self.ttl.multiplier.is_finite()) {
            return bad(format!(
                "ttl.multiplier ({}) must be positive",
                self.ttl.multiplier
            ));
        }
        if !(0.0..=0.5).contains(&self.ttl.jitter) {
            return bad(format!(
                "ttl.jitter ({}) must be within 0..=0.5",
                self.ttl.jitter
            ));
        }
        let limits = &self.limits;
        if !(2..=1024).contains(&limits.max_json_depth)
            || limits.max_json_items == 0
            || limits.rate_per_s > 0 && limits.rate_burst < limits.rate_per_s.min(1)
            || limits.request_timeout_ms < 1000
        {
            return bad(format!(
                "limits: max_json_depth must be within 2..=1024, max_json_items at least 1, rate_burst at least 1 when rate_per_s is set, request_timeout_ms at least 1000 (got {}, {}, {}, {})",
                limits.max_json_depth,
                limits.max_json_items,
                limits.rate_burst,
                limits.request_timeout_ms
            ));
        }
        let longest_wait = self.locks.max_wait_ms.max(self.agent_cache.max_wait_ms);
        if limits.request_timeout_ms <= longest_wait {
            return bad(format!(
                "limits.request_timeout_ms ({}) must exceed locks.max_wait_ms and agent_cache.max_wait_ms ({longest_wait}): a permitted wait would time out",
                limits.request_timeout_ms
            ));
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes must be at least 1024".into());
        }
        let t = &self.ttl;
        let scalars = [
            ("flow", t.flow),
            ("hierarchy", t.hierarchy),
            ("transitions", t.transitions),
            ("transitions_maxlen", t.transitions_maxlen),
            ("flow_state.active", t.flow_state.active),
            ("flow_state.completed", t.flow_state.completed),
            ("flow_state.failed", t.flow_state.failed),
            ("phase_set", t.phase_set),
            ("agent_set", t.agent_set),
            ("agent_results_analyzer", t.agent_results_analyzer),
            ("agent_results_default", t.agent_results_default),
            ("snapshots", t.snapshots),
            ("events", t.events),
            ("sse_connection", t.sse_connection),
            ("metrics", t.metrics),
        ];
        let maps = [("phases", &t.phases), ("agent_cache", &t.agent_cache)];
        for (name, secs) in scalars.into_iter().chain(
            maps.iter()
                .flat_map(|(m, map)| map.values().map(move |v| (*m, *v))),
        ) {
            if secs == 0 {
                return bad(format!("ttl.{name} must be positive"));
            }
        }
        for (name, map) in maps {
            if !map.contains_key("default") {
                return bad(format!("ttl.{name} needs a `default` entry"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
// figment::Jail's closures return its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn defaults_are_the_references() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.redis.max_connections, 50);
        assert!(!c.redis.is_enabled());
        assert_eq!(c.database.url, "sqlite://flowstate.db");
        assert_eq!(c.ttl.flow, 3600);
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn toml_file_then_env_with_reference_names() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "key_prefix = \"staging:\"\n[ttl]\nmultiplier = 0.8\nflow = 100"
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("REDIS_URL", "redis://127.0.0.1:6390/0");
            jail.set_env("REDIS_MAX_CONNECTIONS", "20");
            jail.set_env("FLOWSTATE_TTL__FLOW", "200");
            let c = Config::load_from(Some(file.path())).unwrap();
            assert!(c.redis.is_enabled());
            assert_eq!(c.redis.max_connections, 20);
            assert_eq!(c.key_prefix, "staging:");
            assert_eq!(c.ttl.multiplier, 0.8);
            assert_eq!(c.ttl.flow, 200, "env beats the file");
            Ok(())
        });
    }

    #[test]
    fn the_agent_cache_l1_is_configured_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("FLOWSTATE_AGENT_CACHE__L1", "true");
            jail.set_env("FLOWSTATE_AGENT_CACHE__L1_TTL_MS", "250");
            let config = Config::load_from(None).unwrap();
            assert!(config.agent_cache.l1);
            assert_eq!(config.agent_cache.l1_ttl_ms, 250);
            jail.set_env("FLOWSTATE_AGENT_CACHE__L1_TTL_MS", "0");
            let err = Config::load_from(None).unwrap_err().to_string();
            assert!(err.contains("FLOWSTATE_AGENT_CACHE__L1_TTL_MS"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_client_commands_url_is_not_a_server_setting() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("FLOWSTATE_URL", "http://127.0.0.1:9000");
            jail.set_env("FLOWSTATE_LISTEN", "127.0.0.1:9001");
            let config = Config::load_from(None).unwrap();
            assert_eq!(config.listen.port(), 9001);
            Ok(())
        });
    }

    #[test]
    fn secrets_never_show_in_debug_output_and_are_redacted() {
        let mut c = Config::default();
        c.redis.url = Some("redis://flow:url-pass-123@h:6379/0".into());
        c.database.url = "postgres://app:db-pass-456@h/db".into();
        c.security.api_tokens = SecretList(vec!["read:token-value-7890abcdef".into()]);
        c.security.secret_key = Some(Secret("hmac-key-value".into()));
        let shown = format!("{c:?}");
        for secret in [
            "url-pass-123",
            "db-pass-456",
            "token-value-7890abcdef",
            "hmac-key-value",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
            assert_eq!(c.redact(&format!("x {secret} y")), "x *** y");
        }
        assert!(shown.contains("redis://flow:***@h:6379/0"), "{shown}");
    }

    #[test]
    fn security_settings_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("REDIS_PASSWORD", "007123");
            jail.set_env(
                "FLOWSTATE_API_TOKENS",
                "read:reader-token-0123456,write:writer-token-0123456",
            );
            jail.set_env("FLOWSTATE_SECRET_KEY", "0123456789abcdef0123456789abcdef");
            let c = Config::load_from(None).unwrap();
            assert_eq!(
                c.redis.password,
                Some(Secret("007123".into())),
                "digits stay text"
            );
            assert_eq!(c.security.api_tokens.0.len(), 2);
            assert!(c.security.secret_key.is_some());
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_setting() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("REDIS_MAX_CONNECTIONS", "lots");
            let err = Config::load_from(None).unwrap_err().to_string();
            assert!(err.contains("max_connections"), "{err}");
            assert!(err.contains("REDIS_MAX_CONNECTIONS"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("REDIS_SSL_REQUIRED", "true");
            jail.set_env("REDIS_URL", "redis://h:1");
            let err = Config::load_from(None).unwrap_err().to_string();
            assert!(err.contains("REDIS_SSL_REQUIRED"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("FLOWSTATE_KEY_PREFIX", "{env}:");
            let err = Config::load_from(None).unwrap_err().to_string();
            assert!(err.contains("FLOWSTATE_KEY_PREFIX"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("FLOWSTATE_TTL__JITTER", "2");
            let err = Config::load_from(None).unwrap_err().to_string();
            assert!(err.contains("ttl.jitter"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("FLOWSTATE_DATABASE__SQLITE_CHECKPOINT_KIB", "0");
            let err = Config::load_from(None).unwrap_err().to_string();
            assert!(err.contains("database.sqlite_checkpoint_kib"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("FLOWSTATE_WORKER_THREADS", "5000");
            let err = Config::load_from(None).unwrap_err().to_string();
            assert!(err.contains("worker_threads"), "{err}");
            Ok(())
        });
    }
}
