//! Distributed locks: acquire (waiting up to `wait_ms`), refresh and release with an owner
//! token, and fencing tokens that never go back.
//!
//! Redis grants when the hot tier is Redis; otherwise the ledger's leases do (embedded: so that
//! processes sharing one SQLite file exclude each other). Which one, and the fencing
//! generation, is the lock authority recorded in the ledger: Redis grants only while it is the
//! process (`run_id`) the authority names, so a Redis that lost its data (restarted empty or
//! from an old snapshot, failed over to a lagging replica) grants nothing until an instance
//! has moved the authority to it: a new generation, whose tokens are above every earlier one,
//! and a quarantine of `locks.max_ttl_ms`, after which every lock the lost Redis granted has
//! lapsed. While Redis is unreachable locks answer 503: they are never granted twice.
//!
//! A waiter asks again when the lock is released (a release wakes the waiters of every
//! instance through its one Redis subscription), when the holder's lock lapses (a refused
//! attempt tells how long it has left), or after `locks.poll_max_ms` at most; on one instance
//! only one waiter per lock asks at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Flowstate;
use crate::error::{Error, Result};
use crate::hot::{LockAttempt, LockHot};
use crate::model::locks::{
    LeaseOutcome, LockAuthority, LockGrant, LockRequest, LockToken, RefreshRequest, ReleaseRequest,
    validate_ttl,
};
use crate::model::{ids, now};

/// Added to a wait for the holder's lapse, so the retry comes after it.
const AFTER_LAPSE: Duration = Duration::from_millis(5);

/// Times the authority may change under one request before it gives up (503).
const AUTHORITY_RETRIES: usize = 4;

/// The lock authority as this instance last read it.
#[derive(Debug, Clone)]
struct View {
    authority: LockAuthority,
    /// When grants may start, on this instance's clock.
    grant_from: Instant,
}

impl View {
    fn new(authority: LockAuthority, read_at: Instant) -> View {
        let wait = u64::try_from(authority.grant_from_ms - authority.now_ms).unwrap_or_default();
        View {
            authority,
            grant_from: read_at + Duration::from_millis(wait),
        }
    }
}

/// What the service keeps about locks.
#[derive(Default)]
pub(super) struct LockState {
    view: tokio::sync::RwLock<Option<View>>,
    /// One asking waiter per lock name on this instance.
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// One try: granted, or busy for about how long.
enum Try {
    Granted(LockGrant),
    Busy(Option<Duration>),
}

impl Flowstate {
    /// Acquires `name` for `req.ttl_ms`, waiting up to `req.wait_ms` while it is held.
    pub async fn acquire_lock(&self, name: &str, req: LockRequest) -> Result<LockGrant> {
        ids::validate("name", name)?;
        let cfg = &self.config().locks;
        validate_ttl(req.ttl_ms, cfg.max_ttl_ms)?;
        let wait_ms = req.wait_ms.unwrap_or(0);
        if wait_ms > cfg.max_wait_ms {
            return Err(Error::InvalidInput(format!(
                "wait_ms must be at most {} (locks.max_wait_ms), got {wait_ms}",
                cfg.max_wait_ms
            )));
        }
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        let busy = match self.try_lock(name, req.ttl_ms).await? {
            Try::Granted(grant) => return Ok(grant),
            Try::Busy(retry) => retry,
        };
        if wait_ms == 0 {
            return Err(held(name, busy));
        }
        metrics::counter!("flowstate_lock_waits_total").increment(1);
        // One asking waiter per name here; the others queue behind it.
        let turn = Turn {
            service: self,
            name,
            mutex: Some(self.lock_turn(name)),
        };
        let Some(mutex) = turn.mutex.as_ref() else {
            return Err(held(name, busy));
        };
        let Ok(_turn) = tokio::time::timeout_at(deadline.into(), mutex.lock()).await else {
            return Err(held(name, busy));
        };
        let watch = self.hot().watch_lock(name).await;
        let poll_max = Duration::from_millis(cfg.poll_max_ms);
        let result = loop {
            // Listening before asking: a release in between still wakes this waiter.
            let released = watch.notified();
            let retry = match self.try_lock(name, req.ttl_ms).await {
                Ok(Try::Granted(grant)) => break Ok(grant),
                Ok(Try::Busy(retry)) => retry,
                Err(e) => break Err(e),
            };
            let now = Instant::now();
            if now >= deadline {
                break Err(held(name, retry));
            }
            let jitter = poll_max.mul_f64(rand::random::<f64>() * 0.4 + 0.8);
            let sleep = retry.map_or(jitter, |r| (r + AFTER_LAPSE).min(jitter));
            tokio::select! {
                () = released => {}
                () = tokio::time::sleep(sleep.min(deadline - now)) => {}
            }
        };
        drop(watch);
        result
    }

    /// Extends a held lock to `req.ttl_ms` from now.
    pub async fn refresh_lock(&self, name: &str, req: RefreshRequest) -> Result<LockGrant> {
        ids::validate("name", name)?;
        validate_ttl(req.ttl_ms, self.config().locks.max_ttl_ms)?;
        let token: LockToken = req.token.parse()?;
        let started = now();
        let (this, name) = (self.clone(), name.to_string());
        self.detached(async move {
            let held = match this.hot().locks() {
                None => this
                    .ledger()
                    .refresh_lease(&name, &token, req.ttl_ms)
                    .await?
                    .is_some(),
                Some(locks) => {
                    this.refresh_on_redis(locks, &name, &token, req.ttl_ms)
                        .await?
                }
            };
            if !held {
                return Err(Error::LockNotHeld(name));
            }
            Ok(LockGrant {
                token: token.to_string(),
                fencing_token: token.fence,
                expires_at: started + Duration::from_millis(req.ttl_ms),
            })
        })
        .await
    }

    /// Releases a held lock and wakes its waiters.
    pub async fn release_lock(&self, name: &str, req: ReleaseRequest) -> Result<()> {
        ids::validate("name", name)?;
        let token: LockToken = req.token.parse()?;
        let (this, name) = (self.clone(), name.to_string());
        self.detached(async move {
            let released = match this.hot().locks() {
                None => this.ledger().release_lease(&name, &token).await?,
                Some(locks) => locks
                    .release_lock(&name, &token.to_string())
                    .await
                    .map_err(unavailable)?,
            };
            if !released {
                return Err(Error::LockNotHeld(name));
            }
            this.hot().wake_lock(&name);
            Ok(())
        })
        .await
    }

    /// One attempt to acquire, by whichever grants locks.
    async fn try_lock(&self, name: &str, ttl_ms: u64) -> Result<Try> {
        let secret = LockToken::new_secret();
        let started = now();
        let grant = |fence: u64| {
            Try::Granted(LockGrant {
                token: LockToken {
                    fence,
                    secret: secret.clone(),
                }
                .to_string(),
                fencing_token: fence,
                expires_at: started + Duration::from_millis(ttl_ms),
            })
        };
        let quarantine = self.config().locks.max_ttl_ms;
        for _ in 0..AUTHORITY_RETRIES {
            let Some(locks) = self.hot().locks() else {
                match self.ledger().acquire_lease(name, &secret, ttl_ms).await? {
                    LeaseOutcome::Granted { fence, .. } => {
                        metrics::counter!("flowstate_lock_grants_total").increment(1);
                        return Ok(grant(fence));
                    }
                    LeaseOutcome::Held { retry_in_ms } => {
                        return Ok(Try::Busy(Some(Duration::from_millis(retry_in_ms))));
                    }
                    LeaseOutcome::NotGranting(auth)
                        if auth.generation == 0 || auth.run_id.is_some() =>
                    {
                        self.move_authority(auth.generation, None, quarantine)
                            .await?;
                        continue;
                    }
                    LeaseOutcome::NotGranting(auth) => {
                        let wait = u64::try_from(auth.grant_from_ms - auth.now_ms).unwrap_or(1);
                        return Ok(Try::Busy(Some(Duration::from_millis(wait))));
                    }
                }
            };
            let view = self.lock_view().await?;
            let now_instant = Instant::now();
            if now_instant < view.grant_from {
                return Ok(Try::Busy(Some(view.grant_from - now_instant)));
            }
            // An authority without a Redis process is answered `Untrusted` with the current
            // one, which the authority then moves to.
            let run_id = view.authority.run_id.as_deref().unwrap_or("");
            let attempt = locks
                .acquire_lock(name, run_id, view.authority.generation, &secret, ttl_ms)
                .await
                .map_err(unavailable)?;
            match attempt {
                LockAttempt::Granted { fence } => {
                    metrics::counter!("flowstate_lock_grants_total").increment(1);
                    return Ok(grant(fence));
                }
                LockAttempt::Held { retry_in_ms } => {
                    return Ok(Try::Busy(retry_in_ms.map(Duration::from_millis)));
                }
                LockAttempt::Untrusted { run_id } => {
                    self.move_authority(view.authority.generation, Some(&run_id), quarantine)
                        .await?;
                }
                LockAttempt::Stale => {
                    self.reload_view().await?;
                }
            }
        }
        Err(Error::HotTierUnavailable(
            "the lock authority kept changing; try again".into(),
        ))
    }

    /// Refreshes on Redis; whether the token held the lock.
    async fn refresh_on_redis(
        &self,
        locks: &dyn LockHot,
        name: &str,
        token: &LockToken,
        ttl_ms: u64,
    ) -> Result<bool> {
        let view = self.lock_view().await?;
        let run_id = view.authority.run_id.as_deref().unwrap_or("");
        match locks
            .refresh_lock(name, run_id, &token.to_string(), ttl_ms)
            .await
            .map_err(unavailable)?
        {
            LockAttempt::Granted { .. } => Ok(true),
            LockAttempt::Untrusted { run_id } => {
                // The lock lived on a Redis that is gone: it is not held any more.
                let quarantine = self.config().locks.max_ttl_ms;
                self.move_authority(view.authority.generation, Some(&run_id), quarantine)
                    .await?;
                Ok(false)
            }
            LockAttempt::Held { .. } | LockAttempt::Stale => Ok(false),
        }
    }

    /// The lock authority, read from the ledger once and then kept.
    async fn lock_view(&self) -> Result<View> {
        if let Some(view) = self.inner.locks.view.read().await.as_ref() {
            return Ok(view.clone());
        }
        self.reload_view().await
    }

    async fn reload_view(&self) -> Result<View> {
        let authority = self.ledger().lock_authority().await?;
        // After the read: a quarantine may end later than counted, never earlier.
        let view = View::new(authority, Instant::now());
        *self.inner.locks.view.write().await = Some(view.clone());
        Ok(view)
    }

    /// Moves the authority (unless another instance did since `seen_generation`) and keeps
    /// the result.
    async fn move_authority(
        &self,
        seen_generation: u64,
        run_id: Option<&str>,
        quarantine_ms: u64,
    ) -> Result<()> {
        let (authority, moved) = self
            .ledger()
            .move_lock_authority(seen_generation, run_id, quarantine_ms)
            .await?;
        if moved {
            let quarantine_ms = authority.grant_from_ms - authority.now_ms;
            tracing::warn!(
                generation = authority.generation,
                run_id = authority.run_id.as_deref().unwrap_or("ledger"),
                quarantine_ms,
                "lock authority moved (nothing is granted during the quarantine: the earlier grantor's locks may still be held)"
            );
            metrics::counter!("flowstate_lock_authority_moves_total").increment(1);
        }
        *self.inner.locks.view.write().await = Some(View::new(authority, Instant::now()));
        Ok(())
    }

    fn lock_turn(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        // A poisoned lock only means a panic between two complete map operations.
        let mut turns = self
            .inner
            .locks
            .turns
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Arc::clone(turns.entry(name.to_string()).or_default())
    }

    /// Drops the name's turn once no waiter holds it.
    fn forget_turn(&self, name: &str, turn: Arc<tokio::sync::Mutex<()>>) {
        let mut turns = self
            .inner
            .locks
            .turns
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        drop(turn);
        if turns.get(name).is_some_and(|t| Arc::strong_count(t) == 1) {
            turns.remove(name);
        }
    }
}

/// A waiter's place in its lock's queue; leaving it (even by the request being dropped) drops
/// the name's entry once nobody else holds it.
struct Turn<'a> {
    service: &'a Flowstate,
    name: &'a str,
    mutex: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(mutex) = self.mutex.take() {
            self.service.forget_turn(self.name, mutex);
        }
    }
}

/// 409 `lock_held`, retry after `retry` (1 s when unknown).
fn held(name: &str, retry: Option<Duration>) -> Error {
    Error::LockHeld {
        name: name.to_string(),
        retry_after: retry.unwrap_or(Duration::from_secs(1)),
    }
}

/// Locks need Redis when it is the hot tier: granting from anywhere else could grant twice.
fn unavailable(e: crate::hot::HotError) -> Error {
    Error::HotTierUnavailable(format!("locks need redis: {e}"))
}
