//! Distributed locks: acquire (waiting up to `wait_ms`), refresh and release with an owner
//! token, and fencing tokens that never go back.
//!
//! Who grants is the lock authority recorded in the ledger: the Redis grantor it names (the
//! process's `run_id` and a nonce Redis keeps, so a flushed Redis is another grantor too), or
//! the ledger's leases (embedded, so that processes sharing one SQLite file
//! exclude each other; and while Redis is unreachable). Every change of grantor starts a new
//! fencing generation, whose tokens are above every earlier one. What makes a change safe is
//! the **horizon**: Redis grants and refreshes only locks that lapse before it, and an instance
//! extends it in the ledger ahead of need (about once per `locks.horizon_step_ms`), so when
//! Redis is lost (unreachable for `locks.fallback_after_ms`, restarted, flushed, or failed
//! over to a lagging replica) the next grantor starts as soon as the horizon has passed, not
//! after the longest TTL allowed. Returning to Redis drains: the ledger stops serving leases,
//! its live leases are copied into Redis under their tokens, then Redis grants again.
//!
//! A waiter asks again when the lock is released (a release wakes the waiters of every
//! instance through its one Redis subscription), when the holder's lock lapses (a refused
//! attempt tells how long it has left), or after `locks.poll_max_ms` at most; on one instance
//! only one waiter per lock asks at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Flowstate, unpoisoned};
use crate::error::{Error, Result};
use crate::hot::{HotError, LockAttempt, LockHot};
use crate::model::locks::{
    AuthorityChange, AuthorityTiming, LeaseChange, LeaseOutcome, LockAuthority, LockGrant,
    LockMode, LockRequest, LockToken, RefreshRequest, ReleaseRequest, validate_ttl,
};
use crate::model::{ids, now};

/// Added to a wait for the holder's lapse, so the retry comes after it.
const AFTER_LAPSE: Duration = Duration::from_millis(5);

/// Times the authority may change under one request before it gives up (503).
const AUTHORITY_RETRIES: usize = 6;

/// Added to the horizon when the ledger takes over from Redis.
const SWITCH_MARGIN_MS: u64 = 250;

/// How long a hand-over back to Redis may take before another instance abandons it.
const DRAIN_DEADLINE_MS: u64 = 10_000;

/// How often a request waiting for a hand-over looks again.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// How long after a failed hand-over the next may start.
const RETURN_BACKOFF: Duration = Duration::from_secs(1);

/// The lock authority as this instance last read it.
#[derive(Debug, Clone)]
struct View {
    authority: LockAuthority,
    /// When grants may start, on this instance's clock (counted from after the read: never
    /// early).
    grant_from: Instant,
    /// Redis: every lock granted or refreshed here must lapse by then; draining: when the
    /// hand-over may be abandoned (counted from before the read: never late).
    horizon: Instant,
}

impl View {
    fn new(authority: LockAuthority, sent_at: Instant, read_at: Instant) -> View {
        let ahead =
            |ms: i64| Duration::from_millis(u64::try_from(ms - authority.now_ms).unwrap_or(0));
        View {
            grant_from: read_at + ahead(authority.grant_from_ms),
            horizon: sent_at + ahead(authority.horizon_ms),
            authority,
        }
    }
}

/// What the service keeps about locks.
#[derive(Default)]
pub(super) struct LockState {
    view: tokio::sync::RwLock<Option<View>>,
    /// One asking waiter per lock name on this instance.
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Since when lock calls have found Redis unreachable.
    redis_down_since: Mutex<Option<Instant>>,
    /// No hand-over back to Redis before this (one just failed).
    return_after: Mutex<Option<Instant>>,
}

/// One try: granted, or busy for about how long.
enum Try {
    Granted(LockGrant),
    Busy(Option<Duration>),
}

/// A step under the current view: done, or look at the (changed) authority again.
enum Step<T> {
    Done(T),
    Again,
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
        let waited = Instant::now();
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
        let outcome = if result.is_ok() { "granted" } else { "gave_up" };
        metrics::histogram!("flowstate_lock_wait_seconds", "outcome" => outcome)
            .record(waited.elapsed().as_secs_f64());
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
            if !this.refresh_held(&name, &token, req.ttl_ms).await? {
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
            if !this.release_held(&name, &token).await? {
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
            metrics::counter!("flowstate_lock_grants_total").increment(1);
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
        for _ in 0..AUTHORITY_RETRIES {
            let Some(locks) = self.hot().locks() else {
                // No Redis here: the leases always serve.
                match self.ledger().acquire_lease(name, &secret, ttl_ms).await? {
                    LeaseOutcome::Granted { fence, .. } => return Ok(grant(fence)),
                    LeaseOutcome::Held { retry_in_ms } => {
                        return Ok(Try::Busy(Some(Duration::from_millis(retry_in_ms))));
                    }
                    LeaseOutcome::NotGranting(auth)
                        if auth.generation > 0 && auth.mode == LockMode::Ledger =>
                    {
                        return Ok(Try::Busy(Some(until(auth.grant_from_ms, auth.now_ms))));
                    }
                    LeaseOutcome::NotGranting(auth) => {
                        self.change_authority(auth.generation, AuthorityChange::ToLedger)
                            .await?;
                        continue;
                    }
                }
            };
            let view = self.lock_view().await?;
            let generation = view.authority.generation;
            if generation == 0 {
                // The first grantor: this Redis.
                match self.redis_call(locks.grantor()).await {
                    Ok(grantor) => {
                        self.change_authority(0, AuthorityChange::ToRedis { grantor })
                            .await?;
                    }
                    Err(e) => self.redis_failed(0, e).await?,
                }
                continue;
            }
            match view.authority.mode {
                LockMode::Redis => {
                    let step = self
                        .acquire_on_redis(locks, &view, name, &secret, ttl_ms)
                        .await?;
                    match step {
                        Step::Done(Ok(fence)) => return Ok(grant(fence)),
                        Step::Done(Err(retry)) => return Ok(Try::Busy(retry)),
                        Step::Again => {}
                    }
                }
                LockMode::Ledger => {
                    if Instant::now() >= view.grant_from && self.redis_is_back() {
                        self.return_to_redis(locks, &view).await?;
                        continue;
                    }
                    match self.ledger().acquire_lease(name, &secret, ttl_ms).await? {
                        LeaseOutcome::Granted { fence, .. } => return Ok(grant(fence)),
                        LeaseOutcome::Held { retry_in_ms } => {
                            return Ok(Try::Busy(Some(Duration::from_millis(retry_in_ms))));
                        }
                        LeaseOutcome::NotGranting(auth) if auth.mode == LockMode::Ledger => {
                            // Waiting for every lock the lost Redis granted to lapse.
                            let wait = until(auth.grant_from_ms, auth.now_ms);
                            self.keep_view(auth).await?;
                            return Ok(Try::Busy(Some(wait)));
                        }
                        LeaseOutcome::NotGranting(auth) => self.keep_view(auth).await?,
                    }
                }
                LockMode::Draining => self.wait_for_hand_over(&view).await?,
            }
        }
        Err(Error::HotTierUnavailable(
            "the lock authority kept changing; try again".into(),
        ))
    }

    /// One attempt on Redis under `view`: the fencing token, or busy for about how long.
    async fn acquire_on_redis(
        &self,
        locks: &dyn LockHot,
        view: &View,
        name: &str,
        secret: &str,
        ttl_ms: u64,
    ) -> Result<Step<std::result::Result<u64, Option<Duration>>>> {
        let generation = view.authority.generation;
        let now_instant = Instant::now();
        if now_instant < view.grant_from {
            return Ok(Step::Done(Err(Some(view.grant_from - now_instant))));
        }
        if !self.within_horizon(view, ttl_ms, now_instant) {
            self.extend_horizon(generation, ttl_ms).await?;
            return Ok(Step::Again);
        }
        let grantor = view.authority.grantor.as_deref().unwrap_or("");
        let attempt = self
            .redis_call(locks.acquire_lock(name, grantor, generation, secret, ttl_ms))
            .await;
        match attempt {
            Ok(LockAttempt::Granted { fence }) => Ok(Step::Done(Ok(fence))),
            Ok(LockAttempt::Held { retry_in_ms }) => {
                Ok(Step::Done(Err(retry_in_ms.map(Duration::from_millis))))
            }
            Ok(LockAttempt::Untrusted { grantor }) => {
                self.change_authority(generation, AuthorityChange::ToRedis { grantor })
                    .await?;
                Ok(Step::Again)
            }
            Ok(LockAttempt::Stale) => {
                self.reload_view().await?;
                Ok(Step::Again)
            }
            Err(e) => {
                self.redis_failed(generation, e).await?;
                Ok(Step::Again)
            }
        }
    }

    /// Refreshes wherever the token's lock lives now; whether it held the lock.
    async fn refresh_held(&self, name: &str, token: &LockToken, ttl_ms: u64) -> Result<bool> {
        for _ in 0..AUTHORITY_RETRIES {
            let Some(locks) = self.hot().locks() else {
                let change = self.ledger().refresh_lease(name, token, ttl_ms).await?;
                return Ok(matches!(change, LeaseChange::Done(_)));
            };
            let view = self.lock_view().await?;
            match view.authority.mode {
                LockMode::Redis => {
                    let generation = view.authority.generation;
                    let now_instant = Instant::now();
                    if !self.within_horizon(&view, ttl_ms, now_instant) {
                        self.extend_horizon(generation, ttl_ms).await?;
                        continue;
                    }
                    let grantor = view.authority.grantor.as_deref().unwrap_or("");
                    let attempt = self
                        .redis_call(locks.refresh_lock(name, grantor, &token.to_string(), ttl_ms))
                        .await;
                    return match attempt {
                        Ok(LockAttempt::Granted { .. }) => Ok(true),
                        Ok(LockAttempt::Untrusted { grantor }) => {
                            // The lock lived on a Redis that is gone: it is not held any more.
                            self.change_authority(generation, AuthorityChange::ToRedis { grantor })
                                .await?;
                            Ok(false)
                        }
                        Ok(LockAttempt::Held { .. } | LockAttempt::Stale) => Ok(false),
                        Err(e) => {
                            // Once locks have moved to the ledger this one cannot be extended:
                            // it lapses on the lost Redis.
                            self.redis_failed(generation, e).await?;
                            Ok(false)
                        }
                    };
                }
                LockMode::Ledger => match self.ledger().refresh_lease(name, token, ttl_ms).await? {
                    LeaseChange::Done(_) => return Ok(true),
                    LeaseChange::NotHeld => return Ok(false),
                    // Before the leases' start no lease is live: the lock was a lost Redis's.
                    LeaseChange::NotGranting(auth) if auth.mode == LockMode::Ledger => {
                        return Ok(false);
                    }
                    LeaseChange::NotGranting(auth) => self.keep_view(auth).await?,
                },
                LockMode::Draining => self.wait_for_hand_over(&view).await?,
            }
        }
        Err(Error::HotTierUnavailable(
            "the lock authority kept changing; try again".into(),
        ))
    }

    /// Releases wherever the token's lock lives now; whether it held the lock.
    async fn release_held(&self, name: &str, token: &LockToken) -> Result<bool> {
        for _ in 0..AUTHORITY_RETRIES {
            let Some(locks) = self.hot().locks() else {
                let change = self.ledger().release_lease(name, token).await?;
                return Ok(matches!(change, LeaseChange::Done(_)));
            };
            let view = self.lock_view().await?;
            match view.authority.mode {
                // A release that cannot reach Redis leaves the lock to lapse: 503.
                LockMode::Redis => {
                    return self
                        .redis_call(locks.release_lock(name, &token.to_string()))
                        .await
                        .map_err(unavailable);
                }
                LockMode::Ledger => match self.ledger().release_lease(name, token).await? {
                    LeaseChange::Done(_) => return Ok(true),
                    LeaseChange::NotHeld => return Ok(false),
                    LeaseChange::NotGranting(auth) if auth.mode == LockMode::Ledger => {
                        return Ok(false);
                    }
                    LeaseChange::NotGranting(auth) => self.keep_view(auth).await?,
                },
                LockMode::Draining => self.wait_for_hand_over(&view).await?,
            }
        }
        Err(Error::HotTierUnavailable(
            "the lock authority kept changing; try again".into(),
        ))
    }

    /// The margin a lock call to Redis gets: a reply later than this is dropped (the request
    /// fails), so every lock a caller is told it holds was set on Redis within it.
    fn redis_margin(&self) -> Duration {
        self.config().redis.command_timeout() * 2
    }

    /// A lock call to Redis, given up after [`Flowstate::redis_margin`].
    async fn redis_call<T>(
        &self,
        call: impl std::future::Future<Output = crate::hot::HotResult<T>>,
    ) -> std::result::Result<T, HotError> {
        let reply = tokio::time::timeout(self.redis_margin(), call)
            .await
            .unwrap_or(Err(HotError::Unavailable));
        if reply.is_ok() {
            *unpoisoned(&self.inner.locks.redis_down_since) = None;
        }
        reply
    }

    /// Whether a lock of `ttl_ms` set on Redis from `now_instant` lapses by the horizon.
    fn within_horizon(&self, view: &View, ttl_ms: u64, now_instant: Instant) -> bool {
        now_instant + Duration::from_millis(ttl_ms) + self.redis_margin() <= view.horizon
    }

    /// Moves the horizon far enough for a lock of `ttl_ms` (and a step beyond).
    async fn extend_horizon(&self, generation: u64, ttl_ms: u64) -> Result<()> {
        let margin = u64::try_from(self.redis_margin().as_millis()).unwrap_or(u64::MAX);
        let need_ms = ttl_ms.saturating_add(margin);
        let (_, extended) = self
            .change_authority(generation, AuthorityChange::Extend { need_ms })
            .await?;
        if !extended {
            // Someone else moved the authority: the view now says who grants.
            tracing::debug!("lock horizon not extended: the authority changed");
        }
        Ok(())
    }

    /// A lock call found Redis unreachable: once it has been for `locks.fallback_after_ms`
    /// with the breaker open, locks move to the ledger (`Ok`); until then 503.
    async fn redis_failed(&self, generation: u64, e: HotError) -> Result<()> {
        let since =
            *unpoisoned(&self.inner.locks.redis_down_since).get_or_insert_with(Instant::now);
        let after = Duration::from_millis(self.config().locks.fallback_after_ms);
        if !(self.hot().stats().breaker_open && since.elapsed() >= after) {
            return Err(unavailable(e));
        }
        self.change_authority(generation, AuthorityChange::ToLedger)
            .await?;
        Ok(())
    }

    /// Whether Redis looks reachable again (its breaker closed, no hand-over just failed).
    fn redis_is_back(&self) -> bool {
        !self.hot().stats().breaker_open
            && unpoisoned(&self.inner.locks.return_after).is_none_or(|t| Instant::now() >= t)
    }

    /// Hands locks back to Redis: stop the leases, copy the live ones into Redis, let Redis
    /// grant. A failure abandons the hand-over (the leases serve again).
    async fn return_to_redis(&self, locks: &dyn LockHot, view: &View) -> Result<()> {
        let drain = AuthorityChange::Drain {
            deadline_ms: DRAIN_DEADLINE_MS,
        };
        let (draining, started) = self
            .change_authority(view.authority.generation, drain)
            .await?;
        if !started {
            return Ok(());
        }
        let copied = async {
            let (leases, now_ms) = self.ledger().live_leases().await?;
            let until_ms = leases
                .iter()
                .map(|l| l.expires_at_ms)
                .max()
                .unwrap_or(now_ms);
            let grantor = locks
                .mirror_locks(&leases, now_ms)
                .await
                .map_err(unavailable)?;
            Ok::<_, Error>((grantor, until_ms, leases.len()))
        }
        .await;
        let generation = draining.authority.generation;
        match copied {
            Ok((grantor, until_ms, leases)) => {
                let (_, returned) = self
                    .change_authority(generation, AuthorityChange::Return { grantor, until_ms })
                    .await?;
                if returned {
                    tracing::info!(leases, "locks returned to Redis");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "locks could not return to Redis; the ledger's leases serve on");
                *unpoisoned(&self.inner.locks.return_after) = Some(Instant::now() + RETURN_BACKOFF);
                self.change_authority(generation, AuthorityChange::ToLedger)
                    .await?;
            }
        }
        Ok(())
    }

    /// Another instance is handing locks back to Redis: wait a little and look again, or
    /// abandon its hand-over once past its deadline (it died).
    async fn wait_for_hand_over(&self, view: &View) -> Result<()> {
        if Instant::now() >= view.horizon {
            self.change_authority(view.authority.generation, AuthorityChange::ToLedger)
                .await?;
            return Ok(());
        }
        tokio::time::sleep(DRAIN_POLL).await;
        self.reload_view().await?;
        Ok(())
    }

    /// The lock authority, read from the ledger once and then kept.
    async fn lock_view(&self) -> Result<View> {
        if let Some(view) = self.inner.locks.view.read().await.as_ref() {
            return Ok(view.clone());
        }
        self.reload_view().await
    }

    async fn reload_view(&self) -> Result<View> {
        let sent = Instant::now();
        let authority = self.ledger().lock_authority().await?;
        Ok(self
            .store_view(View::new(authority, sent, Instant::now()))
            .await)
    }

    /// Keeps the authority a lease statement answered; a Redis one is read again, since its
    /// horizon must count from before the read.
    async fn keep_view(&self, authority: LockAuthority) -> Result<()> {
        if authority.mode == LockMode::Redis {
            self.reload_view().await?;
        } else {
            let read_at = Instant::now();
            self.store_view(View::new(authority, read_at, read_at))
                .await;
        }
        Ok(())
    }

    async fn store_view(&self, view: View) -> View {
        *self.inner.locks.view.write().await = Some(view.clone());
        view
    }

    /// Applies `change` unless the authority moved on since `seen_generation`, and keeps the
    /// result either way: the view, and whether this call changed it.
    async fn change_authority(
        &self,
        seen_generation: u64,
        change: AuthorityChange,
    ) -> Result<(View, bool)> {
        let timing = AuthorityTiming {
            step_ms: self.config().locks.horizon_step_ms,
            margin_ms: SWITCH_MARGIN_MS,
        };
        let sent = Instant::now();
        let (authority, changed) = self
            .ledger()
            .change_lock_authority(seen_generation, &change, timing)
            .await?;
        if changed {
            if matches!(change, AuthorityChange::Extend { .. }) {
                metrics::counter!("flowstate_lock_horizon_extensions_total").increment(1);
            } else {
                let wait_ms = authority.grant_from_ms - authority.now_ms;
                tracing::warn!(
                    generation = authority.generation,
                    mode = authority.mode.as_str(),
                    grantor = authority.grantor.as_deref().unwrap_or(""),
                    wait_ms,
                    "lock authority moved (nothing is granted for wait_ms: the earlier grantor's locks may still be held)"
                );
                metrics::counter!("flowstate_lock_authority_moves_total").increment(1);
            }
        }
        let view = self
            .store_view(View::new(authority, sent, Instant::now()))
            .await;
        Ok((view, changed))
    }

    fn lock_turn(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = unpoisoned(&self.inner.locks.turns);
        Arc::clone(turns.entry(name.to_string()).or_default())
    }

    /// Drops the name's turn once no waiter holds it.
    fn forget_turn(&self, name: &str, turn: Arc<tokio::sync::Mutex<()>>) {
        let mut turns = unpoisoned(&self.inner.locks.turns);
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

/// Redis could not be reached for a lock call (and locks have not moved to the ledger).
fn unavailable(e: HotError) -> Error {
    Error::HotTierUnavailable(format!("locks need redis: {e}"))
}

/// How long from `now_ms` until `at_ms` (ledger clock), at least 1 ms.
fn until(at_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(at_ms - now_ms).unwrap_or(0).max(1))
}
