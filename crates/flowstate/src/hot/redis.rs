//! The production hot tier: Redis 7, standalone, through redis-rs.
//!
//! A small fixed set of multiplexed [`ConnectionManager`]s carries all requests (each one
//! pipelines many concurrent requests over one socket, so a pool of a few beats a pool of
//! fifty); they reconnect on their own with capped exponential backoff, and every call is bounded
//! by the command timeout. Each operation is one round trip: a pipeline whose per-flow part is a
//! Lua script (EVALSHA; scripts are loaded again after NOSCRIPT, e.g. a restarted Redis).
//! Pipelines rather than one big script keep registrations working on Redis Cluster, where the
//! registry set and a flow's keys live in different slots.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ErrorKind, Pipeline, Script, ServerErrorKind};
use async_trait::async_trait;
use time::format_description::well_known::Rfc3339;

use super::{CachedFlow, HotError, HotResult, HotStats, HotTier, TOMBSTONE_TTL, codec};
use crate::config::RedisConfig;
use crate::documents::{DocKind, Document};
use crate::flows::Flow;
use crate::keys::Keys;
use crate::ledger::DeletedFlow;
use crate::transitions::Transition;
use crate::ttl::Ttls;

const PUT_FLOW_SRC: &str = include_str!("scripts/put_flow.lua");
const RECORD_TRANSITION_SRC: &str = include_str!("scripts/record_transition.lua");
const PUT_DOCUMENT_SRC: &str = include_str!("scripts/put_document.lua");
/// Every script, for loading them all up front.
const SCRIPTS: &[&str] = &[PUT_FLOW_SRC, RECORD_TRANSITION_SRC, PUT_DOCUMENT_SRC];
static PUT_FLOW: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_FLOW_SRC));
static RECORD_TRANSITION: LazyLock<Script> = LazyLock::new(|| Script::new(RECORD_TRANSITION_SRC));
static PUT_DOCUMENT: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_DOCUMENT_SRC));

/// Version written into tombstones: above any real flow version, exact as a Lua number.
const TOMBSTONE_VERSION: i64 = 1 << 53;

/// Redis hot tier.
pub struct RedisHot {
    /// Multiplexed connections, used round-robin.
    conns: Vec<ConnectionManager>,
    next: AtomicUsize,
    keys: Keys,
    ttls: Ttls,
    /// Network round trips made, for the one-round-trip guarantee and its tests.
    round_trips: AtomicU64,
}

impl RedisHot {
    /// Sets up the connections without waiting for Redis: the service starts (and serves from
    /// the ledger) even when Redis is down, and the connections come up when it does.
    pub fn connect(cfg: &RedisConfig, keys: Keys, ttls: Ttls) -> HotResult<Self> {
        let client = Client::open(cfg.effective_url())?;
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.connect_timeout()))
            .set_response_timeout(Some(cfg.command_timeout()))
            .set_number_of_retries(cfg.reconnect_retries as usize)
            .set_max_delay(Duration::from_millis(cfg.reconnect_max_delay_ms));
        let conns = (0..cfg.pool_size)
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), manager_cfg.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RedisHot {
            conns,
            next: AtomicUsize::new(0),
            keys,
            ttls,
            round_trips: AtomicU64::new(0),
        })
    }

    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    /// Sends `pipe` in one round trip; after NOSCRIPT (Redis restarted or flushed its script
    /// cache) loads `scripts` and sends it once more. Every command in our pipelines is
    /// idempotent or guarded by a script that did not run, so the resend is safe.
    async fn run(&self, pipe: &Pipeline, scripts: &[&str]) -> HotResult<()> {
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
                pipe.exec_async(&mut conn).await?;
                Ok(())
            }
            other => Ok(other?),
        }
    }

    /// Adds the version-guarded write of a flow record to `pipe`.
    fn push_put_flow(&self, pipe: &mut Pipeline, flow: &Flow, force: bool) -> HotResult<()> {
        pipe.cmd("EVALSHA")
            .arg(PUT_FLOW.get_hash())
            .arg(1)
            .arg(self.keys.flow(&flow.flow_id))
            .arg(flow.version)
            .arg(if force { "1" } else { "0" })
            .arg(self.ttls.flow())
            .arg(encode_flow(flow)?)
            .arg(&flow.status)
            .arg(rfc3339(flow.updated_at))
            .ignore();
        Ok(())
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
        let started = Instant::now();
        let mut conn = self.conn();
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        ::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await?;
        Ok(started.elapsed())
    }

    fn stats(&self) -> HotStats {
        HotStats {
            round_trips: self.round_trips.load(Ordering::Relaxed),
        }
    }

    async fn prepare(&self) -> HotResult<()> {
        let mut load = ::redis::pipe();
        for src in SCRIPTS {
            load.cmd("SCRIPT").arg("LOAD").arg(*src).ignore();
        }
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        load.exec_async(&mut self.conn()).await?;
        Ok(())
    }

    async fn register_flow(&self, flow: &Flow) -> HotResult<()> {
        let mut pipe = ::redis::pipe();
        self.push_put_flow(&mut pipe, flow, true)?;
        pipe.sadd(self.keys.registry(), &flow.flow_id).ignore();
        if let Some(parent) = &flow.parent_flow_id {
            let hierarchy = self.keys.hierarchy(parent);
            pipe.sadd(&hierarchy, &flow.flow_id).ignore();
            pipe.expire(&hierarchy, self.ttls.hierarchy() as i64)
                .ignore();
        }
        self.run(&pipe, &[PUT_FLOW_SRC]).await
    }

    async fn cache_flow(&self, flow: &Flow) -> HotResult<()> {
        let mut pipe = ::redis::pipe();
        self.push_put_flow(&mut pipe, flow, false)?;
        self.run(&pipe, &[PUT_FLOW_SRC]).await
    }

    async fn get_flow(&self, flow_id: &str) -> HotResult<CachedFlow> {
        let key = self.keys.flow(flow_id);
        let mut conn = self.conn();
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let fields: HashMap<String, String> = ::redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        if fields.contains_key("deleted") {
            return Ok(CachedFlow::Deleted);
        }
        let Some(data) = fields.get("data") else {
            return Ok(CachedFlow::Missing);
        };
        serde_json::from_str(data)
            .map(CachedFlow::Present)
            .map_err(|e| HotError::Corrupt {
                key,
                reason: e.to_string(),
            })
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
            .arg(rfc3339(transition.at))
            .arg(metadata)
            .ignore();
        self.run(&pipe, &[RECORD_TRANSITION_SRC]).await
    }

    async fn remove_flows(&self, flows: &[DeletedFlow]) -> HotResult<()> {
        let mut pipe = ::redis::pipe();
        for deleted in flows {
            let flow = &deleted.flow;
            for (kind, name) in &deleted.documents {
                pipe.del(self.keys.document(*kind, &flow.flow_id, name))
                    .ignore();
            }
            for kind in [DocKind::Phase, DocKind::Agent] {
                if let Some(index) = self.keys.document_index(kind, &flow.flow_id) {
                    pipe.del(index).ignore();
                }
            }
            let key = self.keys.flow(&flow.flow_id);
            pipe.del(&key).ignore();
            pipe.hset_multiple(
                &key,
                &[
                    ("version", TOMBSTONE_VERSION.to_string()),
                    ("deleted", "1".into()),
                ],
            )
            .ignore();
            pipe.expire(&key, TOMBSTONE_TTL.as_secs() as i64).ignore();
            pipe.srem(self.keys.registry(), &flow.flow_id).ignore();
            if let Some(parent) = &flow.parent_flow_id {
                pipe.srem(self.keys.hierarchy(parent), &flow.flow_id)
                    .ignore();
            }
            pipe.del(self.keys.hierarchy(&flow.flow_id)).ignore();
            pipe.del(self.keys.transitions(&flow.flow_id)).ignore();
        }
        self.run(&pipe, &[]).await
    }

    async fn put_document(
        &self,
        kind: DocKind,
        doc: &Document,
        flow_status: &str,
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
            .arg(3)
            .arg(&key)
            .arg(index.as_deref().unwrap_or(&key))
            .arg(invalidate.as_deref().unwrap_or(&key))
            .arg(doc.version)
            .arg(value)
            .arg(self.ttls.document(kind, &doc.name, flow_status))
            .arg(if index.is_some() {
                doc.name.as_str()
            } else {
                ""
            })
            .arg(self.ttls.document_index(kind))
            .arg(if invalidate.is_some() { "1" } else { "0" })
            .ignore();
        self.run(&pipe, &[PUT_DOCUMENT_SRC]).await
    }

    async fn get_document(
        &self,
        kind: DocKind,
        flow_id: &str,
        name: &str,
    ) -> HotResult<Option<Document>> {
        let key = self.keys.document(kind, flow_id, name);
        let mut conn = self.conn();
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let value: Option<Vec<u8>> = ::redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
        let Some(value) = value else {
            return Ok(None);
        };
        let (version, payload) =
            codec::decode(&value).map_err(|reason| HotError::Corrupt { key, reason })?;
        Ok(Some(Document {
            flow_id: flow_id.to_string(),
            name: name.to_string(),
            body: payload.body,
            saved_at: payload.saved_at,
            version,
        }))
    }
}
