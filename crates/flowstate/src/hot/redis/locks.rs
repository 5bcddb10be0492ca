//! Locks on Redis: `orchestrator:locks:{name}` holds the owner token with the lock's TTL and
//! `…:fence` the name's last fencing token; `scripts/lock_acquire.lua`, `lock_refresh.lua` and
//! `lock_release.lua` are one round trip each. Acquire and refresh first check the grantor
//! (Redis's `run_id` and the nonce in `orchestrator:locks:grantor`) against the lock
//! authority's, so a Redis that lost its data (restarted, failed over to a lagging replica,
//! flushed) grants nothing until the service has moved the authority to it.
//! A release publishes on the lock's key, which wakes its waiters on every instance through
//! the instance's one subscription (`subscriber.rs`).

use std::sync::LazyLock;

use ::redis::{Script, Value};
use async_trait::async_trait;

use super::{RedisHot, reply_int};
use crate::hot::fanout::LockWatch;
use crate::hot::{HotError, HotResult, LockAttempt, LockHot, LockWaitHot};
use crate::model::locks::{LiveLease, LockToken};

const LOCK_ACQUIRE_SRC: &str = include_str!("scripts/lock_acquire.lua");
const LOCK_REFRESH_SRC: &str = include_str!("scripts/lock_refresh.lua");
const LOCK_RELEASE_SRC: &str = include_str!("scripts/lock_release.lua");
const LOCK_MIRROR_SRC: &str = include_str!("scripts/lock_mirror.lua");
/// This capability's scripts, loaded at startup.
pub(super) const SCRIPTS: &[&str] = &[
    LOCK_ACQUIRE_SRC,
    LOCK_REFRESH_SRC,
    LOCK_RELEASE_SRC,
    LOCK_MIRROR_SRC,
];
static LOCK_ACQUIRE: LazyLock<Script> = LazyLock::new(|| Script::new(LOCK_ACQUIRE_SRC));
static LOCK_REFRESH: LazyLock<Script> = LazyLock::new(|| Script::new(LOCK_REFRESH_SRC));
static LOCK_RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(LOCK_RELEASE_SRC));
static LOCK_MIRROR: LazyLock<Script> = LazyLock::new(|| Script::new(LOCK_MIRROR_SRC));

/// Leases copied per round trip when locks return to Redis.
const MIRROR_BATCH: usize = 500;

impl RedisHot {
    fn lock_reply_error(&self, name: &str, reply: &Value) -> HotError {
        HotError::Corrupt {
            key: self.keys.lock(name),
            reason: format!("unexpected lock script reply {reply:?}"),
        }
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `{-1, grantor}`, as both scripts answer for another grantor.
fn untrusted(items: &[Value]) -> Option<LockAttempt> {
    match items {
        [code, run] if reply_int(code) == Some(-1) => Some(LockAttempt::Untrusted {
            grantor: text(run).unwrap_or_default(),
        }),
        _ => None,
    }
}

#[async_trait]
impl LockHot for RedisHot {
    async fn acquire_lock(
        &self,
        name: &str,
        grantor: &str,
        generation: u64,
        secret: &str,
        ttl_ms: u64,
    ) -> HotResult<LockAttempt> {
        let mut pipe = ::redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(LOCK_ACQUIRE.get_hash())
            .arg(3)
            .arg(self.keys.lock(name))
            .arg(self.keys.lock_fence(name))
            .arg(self.keys.lock_grantor())
            .arg(grantor)
            .arg(generation)
            .arg(secret)
            .arg(ttl_ms);
        // Never marks keys dirty: a recovery must not delete a lock someone holds.
        let (reply,): (Value,) = self.core.read_pipeline(&pipe, &[LOCK_ACQUIRE_SRC]).await?;
        let Value::Array(items) = &reply else {
            return Err(self.lock_reply_error(name, &reply));
        };
        if let Some(attempt) = untrusted(items) {
            return Ok(attempt);
        }
        Ok(match items.as_slice() {
            [code, fence] if reply_int(code) == Some(1) => LockAttempt::Granted {
                fence: reply_int(fence)
                    .and_then(|f| u64::try_from(f).ok())
                    .ok_or_else(|| self.lock_reply_error(name, &reply))?,
            },
            [code, pttl] if reply_int(code) == Some(0) => LockAttempt::Held {
                retry_in_ms: reply_int(pttl).and_then(|p| u64::try_from(p).ok()),
            },
            [code] if reply_int(code) == Some(-2) => LockAttempt::Stale,
            _ => return Err(self.lock_reply_error(name, &reply)),
        })
    }

    async fn refresh_lock(
        &self,
        name: &str,
        grantor: &str,
        token: &str,
        ttl_ms: u64,
    ) -> HotResult<LockAttempt> {
        let mut pipe = ::redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(LOCK_REFRESH.get_hash())
            .arg(2)
            .arg(self.keys.lock(name))
            .arg(self.keys.lock_grantor())
            .arg(grantor)
            .arg(token)
            .arg(ttl_ms)
            // Fresh, so that the key's next loss is noticed even if this token is reused.
            .arg(LockToken::new_secret());
        let (reply,): (Value,) = self.core.read_pipeline(&pipe, &[LOCK_REFRESH_SRC]).await?;
        if let Value::Array(items) = &reply
            && let Some(attempt) = untrusted(items)
        {
            return Ok(attempt);
        }
        match reply_int(&reply) {
            Some(1) => Ok(LockAttempt::Granted { fence: 0 }),
            Some(0) => Ok(LockAttempt::Held { retry_in_ms: None }),
            _ => Err(self.lock_reply_error(name, &reply)),
        }
    }

    async fn release_lock(&self, name: &str, token: &str) -> HotResult<bool> {
        let mut pipe = ::redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(LOCK_RELEASE.get_hash())
            .arg(1)
            .arg(self.keys.lock(name))
            .arg(token);
        let (released,): (i64,) = self.core.read_pipeline(&pipe, &[LOCK_RELEASE_SRC]).await?;
        Ok(released == 1)
    }

    async fn grantor(&self) -> HotResult<String> {
        let fresh = LockToken::new_secret();
        let mut pipe = ::redis::pipe();
        pipe.cmd("SET")
            .arg(self.keys.lock_grantor())
            .arg(&fresh)
            .arg("NX")
            .arg("GET")
            .cmd("INFO")
            .arg("server");
        let (kept, info): (Option<String>, String) = self.core.read_pipeline(&pipe, &[]).await?;
        let nonce = kept.unwrap_or(fresh);
        info.lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|r| format!("{}/{nonce}", r.trim()))
            .ok_or_else(|| HotError::Corrupt {
                key: "INFO server".into(),
                reason: "no run_id".into(),
            })
    }

    async fn mirror_locks(&self, leases: &[LiveLease], ledger_now_ms: i64) -> HotResult<String> {
        let mut grantor: Option<String> = None;
        let nonce = LockToken::new_secret();
        for batch in leases.chunks(MIRROR_BATCH) {
            let mut pipe = ::redis::pipe();
            for lease in batch {
                let ttl_ms = (lease.expires_at_ms - ledger_now_ms).max(1);
                pipe.cmd("EVALSHA")
                    .arg(LOCK_MIRROR.get_hash())
                    .arg(3)
                    .arg(self.keys.lock(&lease.name))
                    .arg(self.keys.lock_fence(&lease.name))
                    .arg(self.keys.lock_grantor())
                    .arg(lease.token.to_string())
                    .arg(ttl_ms)
                    .arg(lease.token.fence)
                    .arg(&nonce);
            }
            let runs: Vec<String> = self.core.read_pipeline(&pipe, &[LOCK_MIRROR_SRC]).await?;
            for run in runs {
                match &grantor {
                    Some(first) if *first != run => {
                        return Err(HotError::Corrupt {
                            key: self.keys.lock(&batch[0].name),
                            reason: format!(
                                "Redis changed process while locks were copied to it ({first} -> {run})"
                            ),
                        });
                    }
                    Some(_) => {}
                    None => grantor = Some(run),
                }
            }
        }
        match grantor {
            Some(run) => Ok(run),
            None => self.grantor().await,
        }
    }
}

#[async_trait]
impl LockWaitHot for RedisHot {
    async fn watch_lock(&self, name: &str) -> LockWatch {
        let (watch, _) = self.lock_hub.watch(name);
        self.subscriber.subscribe(self.keys.lock(name)).await;
        watch
    }

    fn wake_lock(&self, name: &str) {
        self.lock_hub.wake(name);
    }
}
