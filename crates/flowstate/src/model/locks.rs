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

/// Who grants locks, as the ledger records it (one row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockAuthority {
    /// The fencing generation: tokens granted now are above `generation * 2^32`. 0: nobody
    /// has granted yet.
    pub generation: u64,
    /// The Redis process (its `run_id`) that grants, or `None`: the ledger's leases do.
    pub run_id: Option<String>,
    /// Nothing is granted before this (ledger-clock ms since the epoch): an earlier grantor's
    /// locks may live until then.
    pub grant_from_ms: i64,
    /// The ledger's clock when this was read.
    pub now_ms: i64,
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

    #[test]
    fn ttl_bounds() {
        assert!(validate_ttl(0, 10).is_err());
        assert!(validate_ttl(11, 10).is_err());
        assert!(validate_ttl(10, 10).is_ok());
    }
}
