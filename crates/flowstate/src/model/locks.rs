//! Distributed locks: what a caller asks for and gets. A grant carries an owner token (only
//! its holder can refresh or release the lock) and a fencing token, which strictly increases
//! for every grant of a name and never goes back, so that a resource can refuse a holder whose
//! lock has expired and been granted again (see docs/capabilities.md).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// Fencing tokens are `generation · 2^32 + n`: a generation starts whenever the lock
/// authority's state may have been lost (a Redis restarted empty or failed over), above every
/// token granted before, and `n` counts the grants of one name within it.
pub const FENCE_SPAN: u64 = 1 << 32;

/// Asks for a lock.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LockRequest {
    /// How long the lock is held unless refreshed, in ms (1 ..= `locks.max_ttl_ms`).
    #[schema(minimum = 1)]
    pub ttl_ms: u64,
    /// How long to wait for a held lock, in ms (0, the default, answers at once; at most
    /// `locks.max_wait_ms`).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// Extends a held lock.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The owner token the grant returned.
    #[schema(pattern = r"^[0-9]{1,20}\.[0-9a-f]{32}$")]
    pub token: String,
    /// The new time to live from now, in ms.
    #[schema(minimum = 1)]
    pub ttl_ms: u64,
}

/// Releases a held lock.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The owner token the grant returned.
    #[schema(pattern = r"^[0-9]{1,20}\.[0-9a-f]{32}$")]
    pub token: String,
}

/// A granted (or refreshed) lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LockGrant {
    /// Owner token: needed to refresh or release; unique per grant.
    pub token: String,
    /// Strictly increasing per lock name over grants (kept by a refresh); pass it to the
    /// resource the lock protects, which refuses anything below the highest it has seen.
    pub fencing_token: u64,
    /// When the lock lapses unless refreshed (never later than the real expiry).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// An owner token: `<fencing token>.<secret>`, opaque to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockToken {
    /// The grant's fencing token.
    pub fence: u64,
    /// 32 hex digits of randomness.
    pub secret: String,
}

impl LockToken {
    /// A fresh secret for a grant.
    pub fn new_secret() -> String {
        format!("{:032x}", rand::random::<u128>())
    }
}

impl fmt::Display for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.fence, self.secret)
    }
}

impl FromStr for LockToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::InvalidInput("token is not a lock token".into());
        let (fence, secret) = s.split_once('.').ok_or_else(invalid)?;
        if fence.is_empty() || fence.len() > 20 || !fence.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let fence = fence.parse().map_err(|_| invalid())?;
        if secret.len() != 32
            || !secret
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(invalid());
        }
        Ok(LockToken {
            fence,
            secret: secret.to_string(),
        })
    }
}

/// Who grants locks now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// The Redis process the authority names.
    Redis,
    /// The ledger's leases (embedded, or while Redis is unreachable).
    Ledger,
    /// Leases are being handed back to Redis: nothing is granted, refreshed or released
    /// until the hand-over ends (milliseconds) or its deadline passes.
    Draining,
}

impl LockMode {
    /// As the ledger stores it.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Redis => "redis",
            LockMode::Ledger => "ledger",
            LockMode::Draining => "draining",
        }
    }

    /// From the ledger's column; an unknown value reads as draining, which grants nothing.
    pub fn parse(s: &str) -> LockMode {
        match s {
            "redis" => LockMode::Redis,
            "ledger" => LockMode::Ledger,
            _ => LockMode::Draining,
        }
    }
}

/// Who grants locks, as the ledger records it (one row). Every change of grantor starts a new
/// generation; the horizon is what makes a change safe: Redis grants (and refreshes) only
/// locks that lapse before it, extending it in the ledger ahead of need, so the ledger can
/// take over as soon as the horizon has passed instead of waiting out the longest TTL allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockAuthority {
    /// The fencing generation: tokens granted now are above `generation * 2^32`. 0: nobody
    /// has granted yet.
    pub generation: u64,
    /// Who grants.
    pub mode: LockMode,
    /// The Redis grantor (`<run_id>/<nonce>`, kept in the `run_id` column) that grants in
    /// [`LockMode::Redis`]; otherwise the last one that did, if any.
    pub grantor: Option<String>,
    /// Nothing is granted before this (ledger-clock ms since the epoch): an earlier grantor's
    /// locks may live until then.
    pub grant_from_ms: i64,
    /// [`LockMode::Redis`]: every lock Redis granted lapses by then (ledger-clock ms).
    /// [`LockMode::Draining`]: when the hand-over may be abandoned.
    pub horizon_ms: i64,
    /// The ledger's clock when this was read.
    pub now_ms: i64,
}

/// A change of the lock authority, asked of the ledger against the generation the caller saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorityChange {
    /// Leases grant: the first grantor without Redis, or Redis is unreachable (from the
    /// horizon on), or a hand-over back to Redis is abandoned (by its drainer, or by anyone
    /// once its deadline has passed).
    ToLedger,
    /// The Redis grantor `grantor` grants: the first grantor, or the one before lost its locks
    /// (restarted empty, failed over; from the horizon on).
    ToRedis {
        /// The process.
        grantor: String,
    },
    /// Starts handing the live leases to Redis (after the ledger's own start).
    Drain {
        /// How long the hand-over may take before another instance may abandon it.
        deadline_ms: u64,
    },
    /// Ends a hand-over: the Redis grantor `grantor`, which now holds every live lease, grants.
    Return {
        /// The process the leases were copied to.
        grantor: String,
        /// When the last copied lease lapses (ledger clock).
        until_ms: i64,
    },
    /// Lets Redis grant locks lasting `need_ms` from now: the horizon moves to at least
    /// `now + need_ms + step`, so this is written about once per step while locks are used.
    Extend {
        /// The longest lock about to be granted or refreshed, plus the command timeout.
        need_ms: u64,
    },
}

/// How far a horizon extension reaches beyond the need, and the margin a move to the ledger
/// adds to the horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthorityTiming {
    /// `locks.horizon_step_ms`.
    pub step_ms: u64,
    /// Added to the horizon when the ledger takes over.
    pub margin_ms: u64,
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl LockAuthority {
    /// The row after `change` at ledger time `now_ms`, or `None` when the change does not
    /// apply (the generation moved on since `seen_generation`, or the mode does not allow it).
    pub fn after(
        &self,
        seen_generation: u64,
        change: &AuthorityChange,
        now_ms: i64,
        timing: AuthorityTiming,
    ) -> Option<LockAuthority> {
        if self.generation != seen_generation {
            return None;
        }
        let fresh = self.generation == 0;
        let next = |mode, grantor: Option<String>, grant_from_ms, horizon_ms| LockAuthority {
            generation: self.generation + 1,
            mode,
            grantor,
            grant_from_ms,
            horizon_ms,
            now_ms,
        };
        // Every Redis lock lapses by the horizon: from then on another grantor is safe.
        let after_redis = now_ms.max(self.horizon_ms.saturating_add(ms(timing.margin_ms)));
        match change {
            AuthorityChange::ToLedger => {
                let from = match self.mode {
                    _ if fresh => now_ms,
                    LockMode::Redis => after_redis,
                    // Abandoning a hand-over (the drainer failed, or another instance saw
                    // its deadline pass): nothing was granted since the leases, which stay.
                    LockMode::Draining => now_ms,
                    LockMode::Ledger => return None,
                };
                Some(next(LockMode::Ledger, self.grantor.clone(), from, 0))
            }
            AuthorityChange::ToRedis { grantor } => {
                let from = match self.mode {
                    _ if fresh => now_ms,
                    LockMode::Redis if self.grantor.as_deref() != Some(grantor) => after_redis,
                    _ => return None,
                };
                Some(next(LockMode::Redis, Some(grantor.clone()), from, from))
            }
            AuthorityChange::Drain { deadline_ms } => {
                let allowed =
                    self.mode == LockMode::Ledger && !fresh && now_ms >= self.grant_from_ms;
                allowed.then(|| {
                    next(
                        LockMode::Draining,
                        self.grantor.clone(),
                        self.grant_from_ms,
                        now_ms.saturating_add(ms(*deadline_ms)),
                    )
                })
            }
            AuthorityChange::Return { grantor, until_ms } => (self.mode == LockMode::Draining)
                .then(|| {
                    let horizon = (*until_ms).max(now_ms.saturating_add(ms(timing.step_ms)));
                    next(LockMode::Redis, Some(grantor.clone()), now_ms, horizon)
                }),
            AuthorityChange::Extend { need_ms } => (self.mode == LockMode::Redis).then(|| {
                let horizon = self.horizon_ms.max(
                    now_ms
                        .saturating_add(ms(*need_ms))
                        .saturating_add(ms(timing.step_ms)),
                );
                LockAuthority {
                    horizon_ms: horizon,
                    now_ms,
                    ..self.clone()
                }
            }),
        }
    }
}

/// A lease the ledger holds now (handed to Redis when it grants again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLease {
    /// The lock's name.
    pub name: String,
    /// Its owner token.
    pub token: LockToken,
    /// When it lapses (ledger clock).
    pub expires_at_ms: i64,
}

/// What a lease refresh or release got from the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    /// Done; a refresh's new expiry (ledger clock).
    Done(i64),
    /// The token holds no lease.
    NotHeld,
    /// The ledger does not grant now: the authority as it stands.
    NotGranting(LockAuthority),
}

/// What a lease request got from the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// Granted.
    Granted {
        /// Its fencing token.
        fence: u64,
        /// When it lapses (ledger-clock ms).
        expires_at_ms: i64,
    },
    /// Held by another token, for this long.
    Held {
        /// Milliseconds until it lapses.
        retry_in_ms: u64,
    },
    /// The ledger does not grant locks now (Redis does, or nobody has yet, or the
    /// quarantine runs): the authority as it stands.
    NotGranting(LockAuthority),
}

/// Checks a requested time to live against the configured maximum.
pub fn validate_ttl(ttl_ms: u64, max_ttl_ms: u64) -> Result<()> {
    if ttl_ms == 0 || ttl_ms > max_ttl_ms {
        return Err(Error::InvalidInput(format!(
            "ttl_ms must be within 1..={max_ttl_ms} (locks.max_ttl_ms), got {ttl_ms}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let token = LockToken {
            fence: FENCE_SPAN + 7,
            secret: LockToken::new_secret(),
        };
        assert_eq!(token.to_string().parse::<LockToken>().unwrap(), token);
        for bad in [
            "",
            "1",
            "x.y",
            "1.abc",
            "-1.0123456789abcdef0123456789abcdef",
            "+1.0123456789abcdef0123456789abcdef",
            "1.0123456789ABCDEF0123456789ABCDEF",
        ] {
            assert!(bad.parse::<LockToken>().is_err(), "{bad:?}");
        }
    }

    const TIMING: AuthorityTiming = AuthorityTiming {
        step_ms: 100,
        margin_ms: 10,
    };

    fn row(generation: u64, mode: LockMode, grantor: Option<&str>) -> LockAuthority {
        LockAuthority {
            generation,
            mode,
            grantor: grantor.map(str::to_string),
            grant_from_ms: 0,
            horizon_ms: 5_000,
            now_ms: 0,
        }
    }

    fn redis(grantor: &str) -> AuthorityChange {
        AuthorityChange::ToRedis {
            grantor: grantor.into(),
        }
    }

    #[test]
    fn the_first_grantor_starts_at_once() {
        let fresh = row(0, LockMode::Ledger, None);
        let to_redis = fresh.after(0, &redis("r1"), 1_000, TIMING).unwrap();
        assert_eq!(
            (to_redis.generation, to_redis.mode, to_redis.grant_from_ms),
            (1, LockMode::Redis, 1_000)
        );
        assert_eq!(to_redis.horizon_ms, 1_000, "nothing granted yet");
        let to_ledger = fresh
            .after(0, &AuthorityChange::ToLedger, 1_000, TIMING)
            .unwrap();
        assert_eq!(
            (to_ledger.mode, to_ledger.grant_from_ms),
            (LockMode::Ledger, 1_000)
        );
    }

    #[test]
    fn leaving_redis_waits_for_its_horizon() {
        let on_redis = row(3, LockMode::Redis, Some("r1"));
        let ledger = on_redis
            .after(3, &AuthorityChange::ToLedger, 1_000, TIMING)
            .unwrap();
        assert_eq!(ledger.generation, 4);
        assert_eq!(ledger.grant_from_ms, 5_010, "horizon + margin");
        assert_eq!(
            ledger.grantor.as_deref(),
            Some("r1"),
            "the last Redis is remembered"
        );
        let restarted = on_redis.after(3, &redis("r2"), 1_000, TIMING).unwrap();
        assert_eq!(
            (restarted.grant_from_ms, restarted.horizon_ms),
            (5_010, 5_010)
        );
        // Past the horizon: at once.
        assert_eq!(
            on_redis
                .after(3, &redis("r2"), 9_000, TIMING)
                .unwrap()
                .grant_from_ms,
            9_000
        );
        assert!(
            on_redis.after(3, &redis("r1"), 1_000, TIMING).is_none(),
            "same process"
        );
        assert!(
            on_redis.after(2, &redis("r2"), 1_000, TIMING).is_none(),
            "stale view"
        );
    }

    #[test]
    fn extending_only_grows_the_horizon_on_redis() {
        let on_redis = row(3, LockMode::Redis, Some("r1"));
        let need = |need_ms| AuthorityChange::Extend { need_ms };
        let ext = on_redis.after(3, &need(2_000), 4_000, TIMING).unwrap();
        assert_eq!((ext.generation, ext.horizon_ms), (3, 6_100));
        let kept = on_redis.after(3, &need(10), 0, TIMING).unwrap();
        assert_eq!(kept.horizon_ms, 5_000, "never shrinks");
        assert!(
            row(3, LockMode::Ledger, None)
                .after(3, &need(10), 0, TIMING)
                .is_none()
        );
    }

    #[test]
    fn returning_to_redis_drains_after_the_ledgers_start() {
        let mut on_ledger = row(4, LockMode::Ledger, Some("r1"));
        on_ledger.grant_from_ms = 5_010;
        let drain = AuthorityChange::Drain { deadline_ms: 50 };
        assert!(
            on_ledger.after(4, &drain, 5_000, TIMING).is_none(),
            "quarantine"
        );
        assert!(
            on_ledger.after(4, &redis("r2"), 6_000, TIMING).is_none(),
            "only by draining"
        );
        let draining = on_ledger.after(4, &drain, 6_000, TIMING).unwrap();
        assert_eq!(
            (draining.generation, draining.mode, draining.horizon_ms),
            (5, LockMode::Draining, 6_050)
        );
        let back = AuthorityChange::Return {
            grantor: "r2".into(),
            until_ms: 9_000,
        };
        let returned = draining.after(5, &back, 6_010, TIMING).unwrap();
        assert_eq!(
            (
                returned.generation,
                returned.mode,
                returned.grant_from_ms,
                returned.horizon_ms
            ),
            (6, LockMode::Redis, 6_010, 9_000),
            "the horizon covers the copied leases"
        );
        let abandoned = draining
            .after(5, &AuthorityChange::ToLedger, 6_010, TIMING)
            .unwrap();
        assert_eq!(
            (abandoned.mode, abandoned.grant_from_ms),
            (LockMode::Ledger, 6_010)
        );
        assert!(
            on_ledger.after(4, &back, 6_000, TIMING).is_none(),
            "not draining"
        );
    }

    #[test]
    fn ttl_bounds() {
        assert!(validate_ttl(0, 10).is_err());
        assert!(validate_ttl(11, 10).is_err());
        assert!(validate_ttl(10, 10).is_ok());
    }
}
