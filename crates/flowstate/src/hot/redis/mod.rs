//! The production hot tier: Redis 7, standalone, through redis-rs.
//!
//! A small fixed set of multiplexed [`ConnectionManager`]s carries all requests (each one
//! pipelines many concurrent requests over one socket, so a pool of a few beats a pool of
//! fifty); they reconnect on their own with capped exponential backoff, and every call is bounded
//! by the command timeout. Each operation is one round trip: a pipeline whose per-flow part is a
//! Lua script (EVALSHA; scripts are loaded again after NOSCRIPT, e.g. a restarted Redis).
//! Pipelines rather than one big script keep registrations working on Redis Cluster, where the
//! registry set and a flow's keys live in different slots.
//!
//! Every call passes the [`Breaker`]: while it is open calls fail at once, and a prober task
//! brings the tier back (PING with capped exponential backoff, then invalidation of every key a
//! write missed, then close).

mod agent_cache;
mod backup;
mod connections;
mod documents;
mod events;
mod flows;
mod locks;
mod monitor;
mod snapshots;
mod subscriber;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ErrorKind, IntoConnectionInfo, Pipeline, ServerErrorKind};
use async_trait::async_trait;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Notify;

use self::subscriber::{Setup, Subscriber};
use super::breaker::Breaker;
use super::fanout::{Hub, LockHub};
use super::keys::Keys;
use super::ttl::Ttls;
use super::{FlowKeys, HotError, HotResult, HotStats, HotTier, LockHot, codec};
use crate::config::{EventsConfig, RedisConfig};
use crate::model::{DocKind, Flow};
use crate::security::Signer;

/// A script's source: the flow-ordering functions every script shares, then its own body
/// (both files in `scripts/`).
macro_rules! lua {
    ($file:literal) => {
        concat!(
            include_str!("scripts/flow_order.lua"),
            include_str!(concat!("scripts/", $file))
        )
    };
}
use lua;

/// Redis hot tier.
pub struct RedisHot {
    core: Arc<Core>,
    keys: Keys,
    ttls: Ttls,
    events: EventsConfig,
    /// Tags every value written and checks every value read (`FLOWSTATE_SECRET_KEY`).
    signer: Signer,
    /// This instance's subscribers of flow events.
    hub: Arc<Hub>,
    /// This instance's lock waiters.
    lock_hub: Arc<LockHub>,
    /// The Redis subscription feeding `hub`.
    subscriber: Subscriber,
}

/// What the request path and the prober share.
struct Core {
    /// Multiplexed connections, used round-robin; replaced whole when recycled.
    conns: std::sync::RwLock<Vec<ConnectionManager>>,
    /// What new connections are made from (recycling).
    client: Client,
    manager_cfg: ConnectionManagerConfig,
    next: AtomicUsize,
    /// Network round trips made, for the one-round-trip guarantee and its tests.
    round_trips: AtomicU64,
    /// Calls that failed (the health monitor's error rate).
    errors: AtomicU64,
    /// Commands sent, and their bytes on the wire (managed-Redis budgets).
    commands_sent: AtomicU64,
    bytes_sent: AtomicU64,
    breaker: Breaker,
    /// Bound on one probe.
    probe_timeout: Duration,
    /// Cap of the prober's backoff.
    probe_max_delay: Duration,
    /// Set when the tier is dropped, so the prober ends.
    closed: AtomicBool,
    /// Recorded invalidations carried out (see [`HotTier::invalidate`]); part of the epoch.
    invalidations: AtomicU64,
}

/// An integer reply (or a bulk string holding one, as scripts return large numbers).
fn reply_int(v: &::redis::Value) -> Option<i64> {
    match v {
        ::redis::Value::Int(i) => Some(*i),
        ::redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// Whether an error means Redis is unreachable or too slow (as opposed to an error reply).
fn unavailable(e: &::redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

impl Core {
    fn conn(&self) -> ConnectionManager {
        // A poisoned lock only means a panic between two complete replacements.
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        let i = self.next.fetch_add(1, Ordering::Relaxed) % conns.len();
        conns[i].clone()
    }

    /// Replaces every pooled connection with a new one (connected on first use); calls in
    /// flight finish on the old ones.
    fn recycle(&self) -> ::redis::RedisResult<()> {
        let len = self.conns.read().unwrap_or_else(|p| p.into_inner()).len();
        let fresh = (0..len)
            .map(|_| {
                ConnectionManager::new_lazy_with_config(
                    self.client.clone(),
                    self.manager_cfg.clone(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        *self.conns.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Sends `pipe` in one round trip; after NOSCRIPT (Redis restarted or flushed its script
    /// cache) loads `scripts` and sends it once more. Every command in our pipelines is
    /// idempotent or guarded by a script that did not run, so the resend is safe.
    async fn run(&self, pipe: &Pipeline, scripts: &[&str]) -> ::redis::RedisResult<()> {
        self.query(pipe, scripts).await
    }

    /// [`Core::run`], returning the pipeline's replies.
    async fn query<T: ::redis::FromRedisValue>(
        &self,
        pipe: &Pipeline,
        scripts: &[&str],
    ) -> ::redis::RedisResult<T> {
        let command = first_command(pipe);
        let started = std::time::Instant::now();
        let in_flight = metrics::gauge!("flowstate_redis_in_flight");
        in_flight.increment(1.0);
        let reply = self.query_once(pipe, scripts).await;
        in_flight.decrement(1.0);
        metrics::histogram!("flowstate_redis_command_duration_seconds", "command" => command)
            .record(started.elapsed().as_secs_f64());
        if reply.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("flowstate_redis_errors_total", "command" => command).increment(1);
        }
        reply
    }

    /// Counts what a call sends, for managed-Redis budgets.
    fn count_sent<'a>(&self, cmds: impl Iterator<Item = &'a ::redis::Cmd>) {
        let (mut commands, mut bytes) = (0u64, 0u64);
        for cmd in cmds {
            commands += 1;
            bytes += resp_len(cmd);
        }
        self.commands_sent.fetch_add(commands, Ordering::Relaxed);
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }

    async fn query_once<T: ::redis::FromRedisValue>(
        &self,
        pipe: &Pipeline,
        scripts: &[&str],
    ) -> ::redis::RedisResult<T> {
        self.count_sent(pipe.cmd_iter());
        let mut conn = self.conn();
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        match pipe.query_async(&mut conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let mut load = ::redis::pipe();
                for src in scripts {
                    load.cmd("SCRIPT").arg("LOAD").arg(*src).ignore();
                }
                self.round_trips.fetch_add(2, Ordering::Relaxed);
                load.exec_async(&mut conn).await?;
                pipe.query_async(&mut conn).await
            }
            other => other,
        }
    }

    /// A write through the breaker: skipped (keys marked dirty) while open; a failure marks
    /// its keys dirty and opens it. Either way the error names the keys
    /// ([`HotError::Unwritten`]).
    async fn write(&self, pipe: &Pipeline, scripts: &[&str], keys: Vec<String>) -> HotResult<()> {
        self.write_query(pipe, scripts, keys).await
    }

    /// [`Core::write`], returning the pipeline's replies.
    async fn write_query<T: ::redis::FromRedisValue>(
        &self,
        pipe: &Pipeline,
        scripts: &[&str],
        keys: Vec<String>,
    ) -> HotResult<T> {
        let unwritten = |keys: Vec<String>, source: HotError| HotError::Unwritten {
            keys,
            source: Box::new(source),
        };
        if let Err(new) = self.breaker.admit_write(|| keys.clone()) {
            return Err(unwritten(new, HotError::Unavailable));
        }
        match self.query(pipe, scripts).await {
            Ok(replies) => {
                self.breaker.succeeded();
                Ok(replies)
            }
            Err(e) if unavailable(&e) => {
                let new = self.breaker.write_failed(keys);
                Err(unwritten(new, e.into()))
            }
            Err(e) => {
                // Redis answered with an error (a foreign value of the wrong type at our key,
                // say): drop what may be stale right away; open only if even that fails.
                let mut del = ::redis::pipe();
                for key in &keys {
                    del.del(key).ignore();
                }
                if self.run(&del, &[]).await.is_err() {
                    let new = self.breaker.write_failed(keys);
                    return Err(unwritten(new, e.into()));
                }
                Err(e.into())
            }
        }
    }

    /// A repopulation after a miss: skipped while the breaker is open, and never marks keys
    /// dirty — it writes the ledger's current value, and the version guards in the scripts stop
    /// it from ever replacing a newer one, even if it lands late.
    async fn fill(&self, pipe: &Pipeline, scripts: &[&str]) -> HotResult<()> {
        self.guarded(self.run(pipe, scripts)).await
    }

    /// A read through the breaker.
    async fn read<T: ::redis::FromRedisValue>(&self, cmd: &::redis::Cmd) -> HotResult<T> {
        self.guarded(async {
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            self.count_sent(std::iter::once(cmd));
            let command = command_label(cmd);
            let started = std::time::Instant::now();
            let reply = cmd.query_async(&mut self.conn()).await;
            metrics::histogram!("flowstate_redis_command_duration_seconds", "command" => command)
                .record(started.elapsed().as_secs_f64());
            if reply.is_err() {
                self.errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("flowstate_redis_errors_total", "command" => command)
                    .increment(1);
            }
            reply
        })
        .await
    }

    /// A read-only pipeline through the breaker, in one round trip.
    /// Scripts it runs are loaded again after NOSCRIPT. A pure cache's stores go this way
    /// too: a store that fails is dropped, never marked dirty.
    async fn read_pipeline<T: ::redis::FromRedisValue>(
        &self,
        pipe: &Pipeline,
        scripts: &[&str],
    ) -> HotResult<T> {
        self.guarded(self.query(pipe, scripts)).await
    }

    /// Runs `call` (not started until the breaker admits it) as a read: skipped while the
    /// breaker is open; an unreachable Redis counts towards opening it.
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = ::redis::RedisResult<T>>,
    ) -> HotResult<T> {
        if !self.breaker.admit_read() {
            return Err(HotError::Unavailable);
        }
        match call.await {
            Ok(v) => {
                self.breaker.succeeded();
                Ok(v)
            }
            Err(e) => {
                if unavailable(&e) {
                    self.breaker.read_failed(e.is_timeout());
                }
                Err(e.into())
            }
        }
    }

    /// PING, bounded by the probe timeout.
    async fn ping(&self) -> HotResult<Duration> {
        let started = Instant::now();
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut conn = self.conn();
        let ping = ::redis::cmd("PING");
        match tokio::time::timeout(self.probe_timeout, ping.query_async::<String>(&mut conn)).await
        {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(HotError::Unavailable),
        }
    }

    /// Deletes every dirty key, then closes the breaker; false if Redis failed meanwhile, or
    /// the tier was dropped (nobody is left to serve).
    async fn recover(&self) -> bool {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            let keys = self.breaker.take_dirty();
            for (i, chunk) in keys.chunks(500).enumerate() {
                let mut pipe = ::redis::pipe();
                pipe.cmd("DEL").arg(chunk).ignore();
                let sent = tokio::time::timeout(self.probe_timeout, self.run(&pipe, &[])).await;
                if !matches!(sent, Ok(Ok(()))) {
                    self.breaker.restore_dirty(keys[i * 500..].to_vec());
                    return false;
                }
            }
            if !keys.is_empty() {
                tracing::info!(
                    keys = keys.len(),
                    "invalidated keys written while redis was unreachable"
                );
            }
            if self.breaker.try_close() {
                return true;
            }
        }
    }
}

/// The bytes a command takes on the wire (RESP: `*N`, then `$len` and the bytes of each
/// argument, each line ending in CRLF).
fn resp_len(cmd: &::redis::Cmd) -> u64 {
    let digits = |n: usize| n.to_string().len() as u64;
    let mut total = 0u64;
    let mut args = 0usize;
    for arg in cmd.args_iter() {
        args += 1;
        if let ::redis::Arg::Simple(b) = arg {
            total += 1 + digits(b.len()) + 2 + b.len() as u64 + 2;
        }
    }
    total + 1 + digits(args) + 2
}

/// The name of a pipeline's first command, as a metric label (a pipeline's other commands
/// ride in the same round trip).
fn first_command(pipe: &Pipeline) -> &'static str {
    pipe.cmd_iter().next().map_or("other", command_label)
}

/// A command's name as a metric label, from a fixed set.
fn command_label(cmd: &::redis::Cmd) -> &'static str {
    let Some(::redis::Arg::Simple(name)) = cmd.args_iter().next() else {
        return "other";
    };
    // Labels come from a fixed set, so a metric's series stay few.
    const KNOWN: &[&str] = &[
        "EVALSHA",
        "GET",
        "GETEX",
        "SET",
        "DEL",
        "UNLINK",
        "HGETALL",
        "HSET",
        "XADD",
        "XRANGE",
        "XREVRANGE",
        "ZADD",
        "ZRANGE",
        "ZRANGEBYSCORE",
        "ZREMRANGEBYSCORE",
        "SCAN",
        "INFO",
        "PING",
        "MEMORY",
        "SLOWLOG",
        "PUBLISH",
        "EXPIRE",
        "PEXPIRE",
        "MGET",
        "EXISTS",
        "TYPE",
    ];
    KNOWN
        .iter()
        .find(|k| k.as_bytes().eq_ignore_ascii_case(name))
        .copied()
        .unwrap_or("other")
}

/// Brings the tier back after the breaker opens: PING with capped exponential backoff, then
/// [`Core::recover`]. Holds only a weak reference, and ends when the tier is dropped.
async fn probe_loop(core: Weak<Core>, wake: Arc<Notify>) {
    const FIRST_DELAY: Duration = Duration::from_millis(50);
    loop {
        wake.notified().await;
        let mut delay = FIRST_DELAY;
        loop {
            let Some(core) = core.upgrade() else { return };
            if core.closed.load(Ordering::Acquire) {
                return;
            }
            if !core.breaker.is_open() {
                break;
            }
            if core.ping().await.is_ok() && core.recover().await {
                break;
            }
            let cap = core.probe_max_delay;
            drop(core);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(cap);
        }
    }
}

impl RedisHot {
    /// Sets up the connections without waiting for Redis: the service starts (and serves from
    /// the ledger) even when Redis is down, and the connections come up when it does. Errors
    /// are configuration errors (a bad URL, an unreadable CA file).
    pub fn connect(
        cfg: &RedisConfig,
        events: &EventsConfig,
        keys: Keys,
        ttls: Ttls,
        signer: Signer,
    ) -> crate::Result<Self> {
        let bad = |setting: &str, e: &dyn std::fmt::Display| {
            crate::Error::Config(format!("{setting}: {e}"))
        };
        let mut info = cfg
            .effective_url()
            .into_connection_info()
            .map_err(|e| bad("REDIS_URL", &e))?;
        if cfg.username.is_some() || cfg.password.is_some() {
            let mut settings = info.redis_settings().clone();
            if let Some(user) = &cfg.username {
                settings = settings.set_username(user);
            }
            if let Some(password) = &cfg.password {
                settings = settings.set_password(&password.0);
            }
            info = info.set_redis_settings(settings);
        }
        let client = match &cfg.ca_cert {
            None => Client::open(info).map_err(|e| bad("REDIS_URL", &e))?,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    bad(
                        "redis.ca_cert (FLOWSTATE_REDIS__CA_CERT)",
                        &format!("{}: {e}", path.display()),
                    )
                })?;
                let certificates = ::redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                Client::build_with_tls(info, certificates)
                    .map_err(|e| bad("redis.ca_cert (FLOWSTATE_REDIS__CA_CERT)", &e))?
            }
        };
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout()))
            .set_response_timeout(Some(cfg.command_timeout()))
            .set_number_of_retries(cfg.reconnect_retries as usize)
            .set_max_delay(Duration::from_millis(cfg.reconnect_max_delay_ms));
        let conns = (0..cfg.pool_size)
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("REDIS_URL", &e))?;
        let core = Arc::new(Core {
            conns: std::sync::RwLock::new(conns),
            client: client.clone(),
            manager_cfg: manager_cfg.clone(),
            next: AtomicUsize::new(0),
            round_trips: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            commands_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            breaker: Breaker::default(),
            probe_timeout: cfg.command_timeout(),
            probe_max_delay: Duration::from_millis(cfg.reconnect_max_delay_ms)
                .min(Duration::from_secs(5)),
            closed: AtomicBool::new(false),
            invalidations: AtomicU64::new(0),
        });
        tokio::spawn(probe_loop(
            Arc::downgrade(&core),
            core.breaker.wake_handle(),
        ));
        let (unwatched_tx, unwatched) = tokio::sync::mpsc::unbounded_channel();
        let hub = Hub::new(events.buffer, Some(unwatched_tx));
        let (unwatched_locks_tx, unwatched_locks) = tokio::sync::mpsc::unbounded_channel();
        let lock_hub = LockHub::new(Some(unwatched_locks_tx));
        let subscriber = Subscriber::start(Setup {
            client,
            keys: keys.clone(),
            hub: Arc::clone(&hub),
            locks: Arc::clone(&lock_hub),
            unwatched,
            unwatched_locks,
            signer: signer.clone(),
            connect_timeout: cfg.connect_timeout(),
            command_timeout: cfg.command_timeout(),
        });
        Ok(RedisHot {
            core,
            keys,
            ttls,
            events: events.clone(),
            signer,
            hub,
            lock_hub,
            subscriber,
        })
    }
}

impl Drop for RedisHot {
    fn drop(&mut self) {
        self.core.closed.store(true, Ordering::Release);
        self.core.breaker.wake_handle().notify_one();
    }
}

impl RedisHot {
    /// The error for a value at `key` that did not decode. An unverified one is also deleted
    /// (one more round trip, only then): its version header cannot be trusted either, and a
    /// forged high version would otherwise keep the genuine value from being cached again.
    pub(super) async fn undecodable(&self, key: String, err: codec::DecodeError) -> HotError {
        let error = HotError::undecodable(key, err);
        if let HotError::Unverified { key, .. } = &error
            && let Err(e) = self.core.read::<()>(::redis::cmd("DEL").arg(key)).await
        {
            tracing::warn!(%key, error = %e, "cannot delete an unverified value");
        }
        error
    }

    /// A flow record's `data` field and its tag (over the key, incarnation and data; empty
    /// without a secret key).
    pub(super) fn encode_flow(&self, flow: &Flow) -> HotResult<(String, String)> {
        let data = serde_json::to_string(flow).map_err(|e| HotError::Corrupt {
            key: flow.flow_id.clone(),
            reason: e.to_string(),
        })?;
        let tag = self.signer.tag_hex(
            &self.keys.flow(&flow.flow_id),
            &[flow.incarnation.to_string().as_bytes(), data.as_bytes()],
        );
        Ok((data, tag))
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    // Formatting a UTC timestamp as RFC 3339 cannot fail for years 0..=9999.
    t.format(&Rfc3339).unwrap_or_default()
}

/// Every script, for loading them all up front.
const SCRIPTS: [&[&str]; 7] = [
    flows::SCRIPTS,
    documents::SCRIPTS,
    snapshots::SCRIPTS,
    events::SCRIPTS,
    locks::SCRIPTS,
    monitor::SCRIPTS,
    agent_cache::SCRIPTS,
];

#[async_trait]
impl HotTier for RedisHot {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn locks(&self) -> Option<&dyn LockHot> {
        Some(self)
    }

    fn backups(&self) -> Option<&dyn crate::hot::BackupHot> {
        Some(self)
    }

    fn recycle_connections(&self) -> HotResult<()> {
        self.core.recycle()?;
        Ok(())
    }

    async fn ping(&self) -> HotResult<Duration> {
        // While the breaker is open the prober does the pinging; health answers at once.
        if self.core.breaker.is_open() {
            return Err(HotError::Unavailable);
        }
        self.core.ping().await
    }

    fn epoch(&self) -> u64 {
        self.core.breaker.opened_total() + self.core.invalidations.load(Ordering::Acquire)
    }

    fn stats(&self) -> HotStats {
        let breaker = &self.core.breaker;
        HotStats {
            round_trips: self.core.round_trips.load(Ordering::Relaxed),
            errors: self.core.errors.load(Ordering::Relaxed),
            commands_sent: self.core.commands_sent.load(Ordering::Relaxed),
            bytes_sent: self.core.bytes_sent.load(Ordering::Relaxed),
            breaker_open: breaker.is_open(),
            breaker_opened_total: breaker.opened_total(),
            dirty_keys: breaker.dirty_len() as u64,
        }
    }

    async fn prepare(&self) -> HotResult<()> {
        let mut load = ::redis::pipe();
        for src in SCRIPTS.iter().flat_map(|s| s.iter()) {
            load.cmd("SCRIPT").arg("LOAD").arg(*src).ignore();
        }
        if let Err(e) = self.core.run(&load, &[]).await {
            // Unreachable at startup: start degraded and let the prober bring Redis in.
            self.core.breaker.read_failed(true);
            return Err(e.into());
        }
        Ok(())
    }

    fn shared(&self) -> bool {
        true
    }

    async fn invalidate(&self, keys: &[String]) -> HotResult<()> {
        // A new epoch first: a repopulation whose ledger read predates this must not land
        // after the delete.
        self.core.invalidations.fetch_add(1, Ordering::AcqRel);
        let mut pipe = ::redis::pipe();
        for chunk in keys.chunks(500) {
            pipe.del(chunk).ignore();
        }
        self.core.write(&pipe, &[], keys.to_vec()).await
    }

    async fn memory(&self, flow: &FlowKeys) -> HotResult<BTreeMap<String, u64>> {
        let id = &flow.flow_id;
        let mut keys = vec![
            self.keys.flow(id),
            self.keys.document(DocKind::State, id, ""),
            self.keys.transitions(id),
            self.keys.events(id),
            self.keys.events_meta(id),
            self.keys.hierarchy(id),
            self.keys.snapshot_list(id),
        ];
        for (kind, names) in [
            (DocKind::Phase, &flow.phases),
            (DocKind::Agent, &flow.agents),
        ] {
            keys.extend(names.iter().map(|n| self.keys.document(kind, id, n)));
            keys.extend(self.keys.document_index(kind, id));
        }
        keys.extend(flow.snapshots.iter().map(|s| self.keys.snapshot(id, s)));
        let mut pipe = ::redis::pipe();
        for key in &keys {
            // SAMPLES 0: measure every element of sets and streams, not an estimate.
            pipe.cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0);
        }
        if !self.core.breaker.admit_read() {
            return Err(HotError::Unavailable);
        }
        let mut conn = self.core.conn();
        self.core.round_trips.fetch_add(1, Ordering::Relaxed);
        let sizes: Vec<Option<u64>> = pipe.query_async(&mut conn).await?;
        Ok(keys
            .into_iter()
            .zip(sizes)
            .filter_map(|(k, size)| size.map(|s| (k, s)))
            .collect())
    }
}
