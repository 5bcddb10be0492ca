//! The agent result cache (reference §1.4): expensive agent and LLM results, keyed by what they
//! were computed from. An entry's key is the SHA-256 of the canonical JSON (RFC 8785: keys
//! sorted at every depth, no insignificant whitespace, numbers in their shortest form, so `1.0`
//! and `1` agree) of `{agent, input, context}`: the same input written in any key order finds
//! the same entry, and a different context is a different entry. The reference hashed
//! `json.dumps(sort_keys=True)` down to 16 hex digits; the full digest leaves no collisions to
//! worry about.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// A lookup: what the result would have been computed from.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheLookup {
    /// The agent's input (any JSON).
    #[schema(value_type = Object)]
    pub input: Value,
    /// What else the result depends on (model, prompt version, ...); absent is `null`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
    /// On a miss, take a lease for this long: the answer carries a `lease_token` when this
    /// caller is the one to compute the result (one caller at a time).
    #[schema(minimum = 1, maximum = 600_000)]
    pub lease_ms: Option<u64>,
    /// With `lease_ms`, while another caller holds the lease, wait this long for its result
    /// (answered as a hit) or for the lease to expire (then this caller may take it); at most
    /// `agent_cache.max_wait_ms` (60000 by default).
    #[schema(minimum = 0)]
    pub wait_ms: Option<u64>,
}

/// Longest lease a lookup may take.
pub const MAX_LEASE_MS: u64 = 600_000;

/// What a lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// A cached result.
    Hit(CachedResult),
    /// Nothing cached; with `Some`, this caller holds the lease under that token.
    Miss(Option<String>),
}

/// What a lookup that may take a lease found in the hot tier.
#[derive(Debug, Clone, PartialEq)]
pub enum LeasedLookup {
    /// A cached result.
    Hit(CachedResult),
    /// Nothing cached, and the lease is now the caller's.
    Leased,
    /// Nothing cached, and another caller holds the lease.
    Held,
}

/// A result to cache.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CachePut {
    /// The agent's input (any JSON).
    #[schema(value_type = Object)]
    pub input: Value,
    /// What else the result depends on; absent is `null`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
    /// The result (any JSON).
    #[schema(value_type = Object)]
    pub output: Value,
    /// How long computing it took, in seconds (reported back on hits).
    #[schema(minimum = 0.0)]
    pub execution_time: Option<f64>,
    /// The token of the lease this result was computed under: stored only if the lease is
    /// still the caller's (409 `stale_lease` otherwise).
    pub lease_token: Option<String>,
}

/// A lease given up without a result: the computation failed.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseRelease {
    /// The agent's input (any JSON), as looked up.
    #[schema(value_type = Object)]
    pub input: Value,
    /// What else the result depends on, as looked up; absent is `null`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
    /// The token the lookup handed out.
    pub lease_token: String,
}

/// A cached result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedResult {
    /// The result.
    pub output: Value,
    /// When it was cached.
    #[serde(with = "time::serde::rfc3339")]
    pub cached_at: OffsetDateTime,
    /// How long computing it took, in seconds.
    pub execution_time: Option<f64>,
}

impl CachedResult {
    /// What an in-process cache charges for this result under `(agent, hash)`: its output's
    /// JSON bytes plus the key, for caches bounded in bytes.
    pub fn weight(&self, agent: &str, hash: &str) -> u32 {
        let bytes = serde_json::to_vec(&self.output).map_or(0, |v| v.len());
        u32::try_from(agent.len() + hash.len() + bytes + 64).unwrap_or(u32::MAX)
    }
}

/// Counts of one agent's cache activity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Lookups that found an entry.
    pub hit: u64,
    /// Lookups that found none.
    pub miss: u64,
    /// Results stored.
    pub set: u64,
    /// Lookups or stores the hot tier failed.
    pub error: u64,
}

impl CacheCounts {
    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == CacheCounts::default()
    }

    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &CacheCounts) {
        self.hit += other.hit;
        self.miss += other.miss;
        self.set += other.set;
        self.error += other.error;
    }
}

/// What the hot tier has recorded of one agent: counts, results stored, last store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentTotals {
    /// Counts flushed by every instance.
    pub counts: CacheCounts,
    /// Results stored in all.
    pub total_cached: u64,
    /// When a result was last stored.
    pub last_cached: Option<OffsetDateTime>,
}

/// One agent's cache statistics, summed over every instance sharing the hot tier.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CacheStats {
    /// Lookups that found an entry.
    pub hit: u64,
    /// Lookups that found none.
    pub miss: u64,
    /// Results stored.
    pub set: u64,
    /// Lookups or stores the hot tier failed.
    pub error: u64,
    /// `hit / (hit + miss)`, 0 before any lookup.
    pub hit_rate: f64,
    /// Results stored since the statistics began (the reference's `agent:meta` count).
    pub total_cached: u64,
    /// When a result was last stored.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_cached: Option<OffsetDateTime>,
}

impl CacheStats {
    /// Statistics from counts, the stored total and the last store.
    pub fn new(
        counts: CacheCounts,
        total_cached: u64,
        last_cached: Option<OffsetDateTime>,
    ) -> Self {
        let lookups = counts.hit + counts.miss;
        CacheStats {
            hit: counts.hit,
            miss: counts.miss,
            set: counts.set,
            error: counts.error,
            hit_rate: if lookups == 0 {
                0.0
            } else {
                counts.hit as f64 / lookups as f64
            },
            total_cached,
            last_cached,
        }
    }
}

/// The hex SHA-256 of the canonical JSON of `{agent, input, context}`.
pub fn entry_hash(agent: &str, input: &Value, context: Option<&Value>) -> Result<String> {
    /// Borrowed, so that hashing copies nothing (the canonicaliser sorts the keys).
    #[derive(Serialize)]
    struct Keyed<'a> {
        agent: &'a str,
        input: &'a Value,
        context: &'a Value,
    }
    let keyed = Keyed {
        agent,
        input,
        context: context.unwrap_or(&Value::Null),
    };
    let canonical = serde_json_canonicalizer::to_vec(&keyed)
        .map_err(|e| Error::InvalidInput(format!("input cannot be canonicalised: {e}")))?;
    let digest = Sha256::digest(&canonical);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    Ok(hex)
}

/// Checks an invalidation pattern: a glob over the entry hash, of hex digits, `*` and `?`.
pub fn validate_pattern(pattern: &str) -> Result<()> {
    let ok = !pattern.is_empty()
        && pattern.len() <= 64
        && pattern
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c) || c == '*' || c == '?');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "pattern {pattern:?} must be 1-64 characters of 0-9 a-f * ?"
        )))
    }
}

/// Whether an entry hash matches a glob pattern (`*` any run, `?` one character), as Redis
/// `SCAN MATCH` reads the patterns [`validate_pattern`] admits.
pub fn hash_matches(pattern: &str, hash: &str) -> bool {
    glob_match(pattern.as_bytes(), hash.as_bytes())
}

/// Whether `text` matches the glob `pattern` (`*` any run, `?` one character).
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob_match(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob_match(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn key_order_whitespace_and_number_form_do_not_matter() {
        let a: Value =
            serde_json::from_str(r#"{"b": [1, {"y": 2.0, "x": "s"}], "a": 1.0}"#).expect("json");
        let b: Value = serde_json::from_str(r#"{"a":1,"b":[1,{"x":"s","y":2}]}"#).expect("json");
        assert_eq!(
            entry_hash("planner", &a, None).expect("hash"),
            entry_hash("planner", &b, None).expect("hash")
        );
    }

    #[test]
    fn the_key_is_the_canonical_json_of_agent_input_and_context() {
        // sha256 of {"agent":"p","context":null,"input":{"a":1,"b":[2,"x"]}}
        let expected = {
            let digest =
                Sha256::digest(br#"{"agent":"p","context":null,"input":{"a":1,"b":[2,"x"]}}"#);
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let input: Value = serde_json::from_str(r#"{"b": [2.0, "x"], "a": 1}"#).expect("json");
        assert_eq!(entry_hash("p", &input, None).expect("hash"), expected);
    }

    #[test]
    fn agent_and_context_are_part_of_the_key() {
        let input = json!({"q": "why"});
        let plain = entry_hash("planner", &input, None).expect("hash");
        assert_eq!(plain.len(), 64);
        assert_ne!(plain, entry_hash("critic", &input, None).expect("hash"));
        assert_ne!(
            plain,
            entry_hash("planner", &input, Some(&json!({"model": "m1"}))).expect("hash")
        );
        assert_eq!(
            plain,
            entry_hash("planner", &input, Some(&Value::Null)).expect("hash"),
            "an absent context is null"
        );
        // Arrays keep their order.
        assert_ne!(
            entry_hash("p", &json!([1, 2]), None).expect("hash"),
            entry_hash("p", &json!([2, 1]), None).expect("hash")
        );
    }

    #[test]
    fn patterns_are_globs_over_hex_only() {
        validate_pattern("ab*").expect("valid");
        validate_pattern("?0f*").expect("valid");
        for bad in ["", "AB", "x*", "[a]", "a b", &"a".repeat(65)] {
            assert!(validate_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn globs_match_like_redis() {
        assert!(hash_matches("*", "abc"));
        assert!(hash_matches("ab*", "abc"));
        assert!(hash_matches("a?c", "abc"));
        assert!(hash_matches("*c", "abc"));
        assert!(!hash_matches("ab", "abc"));
        assert!(!hash_matches("?", ""));
        assert!(hash_matches("", ""));
    }
}
