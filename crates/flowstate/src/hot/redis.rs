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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ErrorKind, Pipeline, Script, ServerErrorKind};
use async_trait::async_trait;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Notify;

use super::breaker::Breaker;
use super::{CachedFlow, FlowKeys, HotError, HotResult, HotStats, HotTier, TOMBSTONE_TTL, codec};
use crate::config::RedisConfig;
use crate::documents::{DocKind, Document, Owner};
use crate::flows::Flow;
use crate::keys::Keys;
use crate::ledger::DeletedFlow;
use crate::snapshots::{KEEP_SNAPSHOTS, Snapshot};
use crate::transitions::Transition;
use crate::ttl::Ttls;

// Each script starts with the flow-ordering functions they share.
const PUT_FLOW_SRC: &str = concat!(
    include_str!("scripts/flow_order.lua"),
    include_str!("scripts/put_flow.lua")
);
const RECORD_TRANSITION_SRC: &str = concat!(
    include_str!("scripts/flow_order.lua"),
    include_str!("scripts/record_transition.lua")
);
const PUT_DOCUMENT_SRC: &str = concat!(
    include_str!("scripts/flow_order.lua"),
    include_str!("scripts/put_document.lua")
);
const REMOVE_FLOW_SRC: &str = concat!(
    include_str!("scripts/flow_order.lua"),
    include_str!("scripts/remove_flow.lua")
);
const PUT_SNAPSHOT_SRC: &str = concat!(
    include_str!("scripts/flow_order.lua"),
    include_str!("scripts/put_snapshot.lua")
);
const FORGET_SRC: &str = concat!(
    include_str!("scripts/flow_order.lua"),
    include_str!("scripts/forget.lua")
);
/// Every script, for loading them all up front.
const SCRIPTS: &[&str] = &[
    PUT_FLOW_SRC,
    RECORD_TRANSITION_SRC,
    PUT_DOCUMENT_SRC,
    REMOVE_FLOW_SRC,
    PUT_SNAPSHOT_SRC,
    FORGET_SRC,
];
static PUT_FLOW: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_FLOW_SRC));
static RECORD_TRANSITION: LazyLock<Script> = LazyLock::new(|| Script::new(RECORD_TRANSITION_SRC));
static PUT_DOCUMENT: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_DOCUMENT_SRC));
static REMOVE_FLOW: LazyLock<Script> = LazyLock::new(|| Script::new(REMOVE_FLOW_SRC));
static PUT_SNAPSHOT: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_SNAPSHOT_SRC));
static FORGET: LazyLock<Script> = LazyLock::new(|| Script::new(FORGET_SRC));

/// Version written into tombstones: above any real flow version, exact as a Lua number.
const TOMBSTONE_VERSION: i64 = 1 << 53;

/// Redis hot tier.
pub struct RedisHot {
    core: Arc<Core>,
    keys: Keys,
    ttls: Ttls,
}

/// What the request path and the prober share.
struct Core {
    /// Multiplexed connections, used round-robin.
    conns: Vec<ConnectionManager>,
    next: AtomicUsize,
    /// Network round trips made, for the one-round-trip guarantee and its tests.
    round_trips: AtomicU64,
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

/// Whether an error means Redis is unreachable or too slow (as opposed to an error reply).
fn unavailable(e: &::redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

impl Core {
    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    /// Sends `pipe` in one round trip; after NOSCRIPT (Redis restarted or flushed its script
    /// cache) loads `scripts` and sends it once more. Every command in our pipelines is
    /// idempotent or guarded by a script that did not run, so the resend is safe.
    async fn run(&self, pipe: &Pipeline, scripts: &[&str]) -> ::redis::RedisResult<()> {
        let mut conn = self.conn();
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        match pipe.exec_async(&mut conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let mut load = ::redis::pipe();
                for src in scripts {
                    load.cmd("SCRIPT").arg("LOAD").arg(*src).ignore();
                }
                self.round_trips.fetch_add(2, Ordering::Relaxed);
                load.exec_async(&mut conn).await?;
                pipe.exec_async(&mut conn).await
            }
            other => other,
        }
    }

    /// A write through the breaker: skipped (keys marked dirty) while open; a failure marks
    /// its keys dirty and opens it. Either way the error names the keys
    /// ([`HotError::Unwritten`]).
    async fn write(&self, pipe: &Pipeline, scripts: &[&str], keys: Vec<String>) -> HotResult<()> {
        let unwritten = |keys: Vec<String>, source: HotError| HotError::Unwritten {
            keys,
            source: Box::new(source),
        };
        if let Err(new) = self.breaker.admit_write(|| keys.clone()) {
            return Err(unwritten(new, HotError::Unavailable));
        }
        match self.run(pipe, scripts).await {
            Ok(()) => {
                self.breaker.succeeded();
                Ok(())
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
        if !self.breaker.admit_read() {
            return Err(HotError::Unavailable);
        }
        match self.run(pipe, scripts).await {
            Ok(()) => {
                self.breaker.succeeded();
                Ok(())
            }
            Err(e) => {
                if unavailable(&e) {
                    self.breaker.read_failed(e.is_timeout());
                }
                Err(e.into())
            }
        }
    }

    /// A read through the breaker.
    async fn read<T: ::redis::FromRedisValue>(&self, cmd: &::redis::Cmd) -> HotResult<T> {
        if !self.breaker.admit_read() {
            return Err(HotError::Unavailable);
        }
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        match cmd.query_async(&mut self.conn()).await {
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
    pub fn connect(cfg: &RedisConfig, keys: Keys, ttls: Ttls) -> crate::Result<Self> {
        let bad = |setting: &str, e: &dyn std::fmt::Display| {
            crate::Error::Config(format!("{setting}: {e}"))
        };
        let client = match &cfg.ca_cert {
            None => Client::open(cfg.effective_url()).map_err(|e| bad("REDIS_URL", &e))?,
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
                Client::build_with_tls(cfg.effective_url(), certificates)
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
            conns,
            next: AtomicUsize::new(0),
            round_trips: AtomicU64::new(0),
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
        Ok(RedisHot { core, keys, ttls })
    }

    /// Adds the version-guarded write of a flow record to `pipe`.
    fn push_put_flow(&self, pipe: &mut Pipeline, flow: &Flow) -> HotResult<()> {
        pipe.cmd("EVALSHA")
            .arg(PUT_FLOW.get_hash())
            .arg(1)
            .arg(self.keys.flow(&flow.flow_id))
            .arg(flow.incarnation)
            .arg(flow.version)
            .arg(self.ttls.flow())
            .arg(encode_flow(flow)?)
            .arg(&flow.status)
            .arg(rfc3339(flow.updated_at))
            .ignore();
        Ok(())
    }
}

impl Drop for RedisHot {
    fn drop(&mut self) {
        self.core.closed.store(true, Ordering::Release);
        self.core.breaker.wake_handle().notify_one();
    }
}

fn encode_flow(flow: &Flow) -> HotResult<String> {
    serde_json::to_string(flow).map_err(|e| HotError::Corrupt {
        key: flow.flow_id.clone(),
        reason: e.to_string(),
    })
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    // Formatting a UTC timestamp as RFC 3339 cannot fail for years 0..=9999.
    t.format(&Rfc3339).unwrap_or_default()
}

#[async_trait]
impl HotTier for RedisHot {
    fn backend(&self) -> &'static str {
        "redis"
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
            breaker_open: breaker.is_open(),
            breaker_opened_total: breaker.opened_total(),
            dirty_keys: breaker.dirty_len() as u64,
        }
    }

    async fn prepare(&self) -> HotResult<()> {
        let mut load = ::redis::pipe();
        for src in SCRIPTS {
            load.cmd("SCRIPT").arg("LOAD").arg(*src).ignore();
        }
        if let Err(e) = self.core.run(&load, &[]).await {
            // Unreachable at startup: start degraded and let the prober bring Redis in.
            self.core.breaker.read_failed(true);
            return Err(e.into());
        }
        Ok(())
    }

    async fn register_flow(&self, flow: &Flow) -> HotResult<()> {
        let mut pipe = ::redis::pipe();
        self.push_put_flow(&mut pipe, flow)?;
        pipe.sadd(self.keys.registry(), &flow.flow_id).ignore();
        if let Some(parent) = &flow.parent_flow_id {
            let hierarchy = self.keys.hierarchy(parent);
            pipe.sadd(&hierarchy, &flow.flow_id).ignore();
            pipe.expire(&hierarchy, self.ttls.hierarchy() as i64)
                .ignore();
        }
        let dirty = vec![self.keys.flow(&flow.flow_id)];
        self.core.write(&pipe, &[PUT_FLOW_SRC], dirty).await
    }

    async fn cache_flow(&self, flow: &Flow) -> HotResult<()> {
        let mut pipe = ::redis::pipe();
        self.push_put_flow(&mut pipe, flow)?;
        self.core.fill(&pipe, &[PUT_FLOW_SRC]).await
    }

    async fn get_flow(&self, flow_id: &str) -> HotResult<CachedFlow> {
        let key = self.keys.flow(flow_id);
        let fields: HashMap<String, String> =
            self.core.read(::redis::cmd("HGETALL").arg(&key)).await?;
        if fields.contains_key("deleted") {
            return Ok(CachedFlow::Deleted);
        }
        let Some(data) = fields.get("data") else {
            return Ok(CachedFlow::Missing);
        };
        let corrupt = |reason: String| HotError::Corrupt {
            key: key.clone(),
            reason,
        };
        let mut flow: Flow = serde_json::from_str(data).map_err(|e| corrupt(e.to_string()))?;
        flow.incarnation = match fields.get("inc") {
            Some(inc) => inc
                .parse()
                .map_err(|_| corrupt(format!("incarnation {inc:?}")))?,
            None => 0, // written before incarnations were recorded
        };
        Ok(CachedFlow::Present(flow))
    }

    async fn record_transition(&self, flow: &Flow, transition: &Transition) -> HotResult<()> {
        let metadata =
            serde_json::to_string(&transition.metadata).map_err(|e| HotError::Corrupt {
                key: flow.flow_id.clone(),
                reason: e.to_string(),
            })?;
        let mut pipe = ::redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(RECORD_TRANSITION.get_hash())
            .arg(2)
            .arg(self.keys.flow(&flow.flow_id))
            .arg(self.keys.transitions(&flow.flow_id))
            .arg(flow.version)
            .arg(self.ttls.flow())
            .arg(encode_flow(flow)?)
            .arg(&flow.status)
            .arg(rfc3339(flow.updated_at))
            .arg(self.ttls.transitions())
            .arg(self.ttls.config().transitions_maxlen)
            .arg(&transition.from)
            .arg(&transition.to)
            .arg(metadata)
            .arg(flow.incarnation)
            .ignore();
        let dirty = vec![
            self.keys.flow(&flow.flow_id),
            self.keys.transitions(&flow.flow_id),
        ];
        self.core
            .write(&pipe, &[RECORD_TRANSITION_SRC], dirty)
            .await
    }

    async fn remove_flows(&self, flows: &[DeletedFlow]) -> HotResult<()> {
        let mut pipe = ::redis::pipe();
        let mut dirty = Vec::new();
        for deleted in flows {
            let id = &deleted.flow.flow_id;
            // Everything that may still hold this flow's data goes.
            let mut gone: Vec<String> = deleted
                .documents
                .iter()
                .map(|(kind, name)| self.keys.document(*kind, id, name))
                .collect();
            gone.extend(
                [DocKind::Phase, DocKind::Agent]
                    .into_iter()
                    .filter_map(|kind| self.keys.document_index(kind, id)),
            );
            gone.extend(
                deleted
                    .snapshots
                    .iter()
                    .map(|sid| self.keys.snapshot(id, sid)),
            );
            gone.push(self.keys.snapshot_list(id));
            gone.push(self.keys.events(id));
            gone.push(self.keys.hierarchy(id));
            gone.push(self.keys.transitions(id));
            // The record becomes a tombstone, so a racing repopulation cannot revive it (unless
            // the id has been registered again meanwhile: then it is the new flow's).
            let key = self.keys.flow(id);
            pipe.cmd("EVALSHA")
                .arg(REMOVE_FLOW.get_hash())
                .arg(1 + gone.len())
                .arg(&key)
                .arg(&gone)
                .arg(deleted.flow.incarnation)
                .arg(TOMBSTONE_VERSION)
                .arg(TOMBSTONE_TTL.as_secs())
                .ignore();
            // The registry and hierarchy sets mirror the ledger for other readers of this
            // layout (flowstate reads neither); they hold ids, not incarnations.
            pipe.srem(self.keys.registry(), id).ignore();
            if let Some(parent) = &deleted.flow.parent_flow_id {
                pipe.srem(self.keys.hierarchy(parent), id).ignore();
            }
            dirty.extend(gone);
            dirty.push(key);
        }
        self.core.write(&pipe, &[REMOVE_FLOW_SRC], dirty).await
    }

    async fn put_document(
        &self,
        kind: DocKind,
        doc: &Document,
        owner: &Owner,
        fresh: bool,
    ) -> HotResult<()> {
        let key = self.keys.document(kind, &doc.flow_id, &doc.name);
        let payload = codec::Payload {
            saved_at: doc.saved_at,
            body: doc.body.clone(),
        };
        let value = codec::encode(doc.version, &payload).map_err(|reason| HotError::Corrupt {
            key: key.clone(),
            reason,
        })?;
        let index = self
            .keys
            .document_index(kind, &doc.flow_id)
            .filter(|_| fresh);
        let invalidate = (fresh && kind == DocKind::Phase)
            .then(|| self.keys.document(DocKind::State, &doc.flow_id, ""));
        let mut pipe = ::redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(PUT_DOCUMENT.get_hash())
            .arg(4)
            .arg(&key)
            .arg(index.as_deref().unwrap_or(&key))
            .arg(invalidate.as_deref().unwrap_or(&key))
            .arg(self.keys.flow(&doc.flow_id))
            .arg(doc.version)
            .arg(value)
            .arg(self.ttls.document(kind, &doc.name, &owner.status))
            .arg(if index.is_some() {
                doc.name.as_str()
            } else {
                ""
            })
            .arg(self.ttls.document_index(kind))
            .arg(if invalidate.is_some() { "1" } else { "0" })
            .arg(TOMBSTONE_TTL.as_secs())
            .arg(owner.incarnation)
            .ignore();
        if !fresh {
            return self.core.fill(&pipe, &[PUT_DOCUMENT_SRC]).await;
        }
        let mut dirty = vec![key];
        dirty.extend(invalidate);
        self.core.write(&pipe, &[PUT_DOCUMENT_SRC], dirty).await
    }

    async fn get_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
    ) -> HotResult<Option<Document>> {
        let key = self.keys.document(kind, flow_id, name);
        let value: Option<Vec<u8>> = self.core.read(::redis::cmd("GET").arg(&key)).await?;
        let Some(value) = value.filter(|v| !codec::is_marker(v)) else {
            return Ok(None);
        };
        let (version, payload): (i64, codec::Payload) =
            codec::decode(&value).map_err(|reason| HotError::Corrupt { key, reason })?;
        Ok(Some(Document {
            flow_id: flow_id.to_string(),
            name: name.to_string(),
            body: payload.body,
            saved_at: payload.saved_at,
            version,
        }))
    }

    async fn put_snapshot(
        &self,
        snapshot: &Snapshot,
        evicted: &[String],
        owner: &Owner,
        fresh: bool,
    ) -> HotResult<()> {
        let id = &snapshot.flow_id;
        let key = self.keys.snapshot(id, &snapshot.snapshot_id);
        // Snapshots never change: the envelope's version is unused.
        let value = codec::encode(0, snapshot).map_err(|reason| HotError::Corrupt {
            key: key.clone(),
            reason,
        })?;
        let list = self.keys.snapshot_list(id);
        let gone: Vec<String> = evicted
            .iter()
            .filter(|_| fresh)
            .map(|sid| self.keys.snapshot(id, sid))
            .collect();
        let mut pipe = ::redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(PUT_SNAPSHOT.get_hash())
            .arg(3 + gone.len())
            .arg(self.keys.flow(id))
            .arg(&key)
            .arg(if fresh { &list } else { &key })
            .arg(&gone)
            .arg(owner.incarnation)
            .arg(value)
            .arg(self.ttls.snapshots())
            .arg(if fresh {
                snapshot.snapshot_id.as_str()
            } else {
                ""
            })
            .arg(KEEP_SNAPSHOTS)
            .ignore();
        if !fresh {
            return self.core.fill(&pipe, &[PUT_SNAPSHOT_SRC]).await;
        }
        let mut dirty = vec![key, list];
        dirty.extend(gone);
        self.core.write(&pipe, &[PUT_SNAPSHOT_SRC], dirty).await
    }

    async fn get_snapshot(&self, flow_id: &str, snapshot_id: &str) -> HotResult<Option<Snapshot>> {
        let key = self.keys.snapshot(flow_id, snapshot_id);
        let value: Option<Vec<u8>> = self.core.read(::redis::cmd("GET").arg(&key)).await?;
        let Some(value) = value else {
            return Ok(None);
        };
        let (_, snapshot): (i64, Snapshot) =
            codec::decode(&value).map_err(|reason| HotError::Corrupt { key, reason })?;
        Ok(Some(snapshot))
    }

    async fn append_event(
        &self,
        flow_id: &str,
        event_type: &str,
        payload: &serde_json::Value,
    ) -> HotResult<()> {
        let key = self.keys.events(flow_id);
        let mut pipe = ::redis::pipe();
        pipe.cmd("XADD")
            .arg(&key)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.ttls.config().transitions_maxlen)
            .arg("*")
            .arg("event_type")
            .arg(event_type)
            .arg("payload")
            .arg(payload.to_string())
            .arg("timestamp")
            .arg(rfc3339(crate::flows::now()))
            .ignore();
        pipe.expire(&key, self.ttls.events() as i64).ignore();
        self.core.write(&pipe, &[], vec![key]).await
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

    async fn forget(&self, flow_id: &str, document: Option<(DocKind, &str)>) -> HotResult<()> {
        let flow = self.keys.flow(flow_id);
        let document = document.map(|(kind, name)| self.keys.document(kind, flow_id, name));
        let mut pipe = ::redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(FORGET.get_hash())
            .arg(2)
            .arg(&flow)
            .arg(document.as_ref().unwrap_or(&flow))
            .ignore();
        let mut keys = vec![flow];
        keys.extend(document);
        self.core.write(&pipe, &[FORGET_SRC], keys).await
    }

    async fn memory(&self, flow: &FlowKeys) -> HotResult<BTreeMap<String, u64>> {
        let id = &flow.flow_id;
        let mut keys = vec![
            self.keys.flow(id),
            self.keys.document(DocKind::State, id, ""),
            self.keys.transitions(id),
            self.keys.events(id),
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
