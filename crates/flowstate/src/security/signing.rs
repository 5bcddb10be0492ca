//! Tags on the values flowstate writes to Redis. With a secret key configured
//! (`FLOWSTATE_SECRET_KEY`), every value carries an HMAC-SHA256 tag over the key it is stored
//! under and its bytes, so a value written by anyone else, or moved from another key, does not
//! verify: the hot tier treats it as a miss and the ledger answers instead.
//!
//! Binding the Redis key into the tag matters: without it, someone able to write to Redis could
//! copy one flow's (genuine, tagged) state over another's.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of a tag in bytes.
pub const TAG_LEN: usize = 32;

/// Shortest secret key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// Why a secret key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FLOWSTATE_SECRET_KEY must be at least {MIN_KEY_LEN} bytes (e.g. `openssl rand -hex 32`)")]
pub struct KeyTooShort;

/// Signs and verifies hot-tier values; without a key it does neither.
#[derive(Clone, Default)]
pub struct Signer {
    mac: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.mac.is_some() { "on" } else { "off" };
        write!(f, "Signer({state})")
    }
}

impl Signer {
    /// A signer with `key`, or one that does nothing when `key` is `None`.
    pub fn new(key: Option<&[u8]>) -> Result<Signer, KeyTooShort> {
        let mac = match key {
            None => None,
            Some(k) if k.len() < MIN_KEY_LEN => return Err(KeyTooShort),
            // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
            Some(k) => Hmac::<Sha256>::new_from_slice(k).ok(),
        };
        Ok(Signer { mac })
    }

    /// Whether values are signed and checked.
    pub fn enabled(&self) -> bool {
        self.mac.is_some()
    }

    /// The MAC fed with `key` and `parts`, each length-prefixed so that no two different
    /// part lists share an input (`None` without a secret key).
    fn mac_over(&self, key: &str, parts: &[&[u8]]) -> Option<Hmac<Sha256>> {
        let mut mac = self.mac.clone()?;
        for part in std::iter::once(key.as_bytes()).chain(parts.iter().copied()) {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        Some(mac)
    }

    /// The tag of `parts` stored under `key` (`None` without a secret key).
    pub fn tag(&self, key: &str, parts: &[&[u8]]) -> Option<[u8; TAG_LEN]> {
        Some(self.mac_over(key, parts)?.finalize().into_bytes().into())
    }

    /// Whether `tag` is the tag of `parts` under `key`, compared in constant time. Always true
    /// without a secret key.
    pub fn verify(&self, key: &str, parts: &[&[u8]], tag: &[u8]) -> bool {
        self.mac_over(key, parts)
            .is_none_or(|mac| mac.verify_slice(tag).is_ok())
    }

    /// [`Signer::tag`] as 64 hex digits, for text fields (empty without a secret key).
    pub fn tag_hex(&self, key: &str, parts: &[&[u8]]) -> String {
        self.tag(key, parts)
            .map(|t| t.iter().map(|b| format!("{b:02x}")).collect())
            .unwrap_or_default()
    }

    /// [`Signer::verify`] of a tag given as hex digits; anything not 64 hex digits fails.
    pub fn verify_hex(&self, key: &str, parts: &[&[u8]], tag: &str) -> bool {
        if !self.enabled() {
            return true;
        }
        let bytes = tag.as_bytes();
        if bytes.len() != 2 * TAG_LEN {
            return false;
        }
        let mut raw = [0u8; TAG_LEN];
        for (i, out) in raw.iter_mut().enumerate() {
            let hex = |c: u8| (c as char).to_digit(16);
            match (hex(bytes[2 * i]), hex(bytes[2 * i + 1])) {
                // Both digits are below 16, so the byte fits.
                (Some(h), Some(l)) => *out = (h * 16 + l) as u8,
                _ => return false,
            }
        }
        self.verify(key, parts, &raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_tag_binds_the_key_and_every_part() {
        let s = Signer::new(Some(KEY)).unwrap();
        let tag = s.tag("k1", &[b"ab", b"c"]).unwrap();
        assert!(s.verify("k1", &[b"ab", b"c"], &tag));
        assert!(
            !s.verify("k2", &[b"ab", b"c"], &tag),
            "moved to another key"
        );
        assert!(!s.verify("k1", &[b"a", b"bc"], &tag), "parts are delimited");
        assert!(!s.verify("k1", &[b"ab", b"d"], &tag));
        let hex = s.tag_hex("k1", &[b"x"]);
        assert!(s.verify_hex("k1", &[b"x"], &hex));
        assert!(!s.verify_hex("k1", &[b"x"], &hex[1..]));
        assert!(!s.verify_hex("k1", &[b"x"], &hex.replace(char::is_numeric, "g")));
        let other = Signer::new(Some(b"another key, also 32 bytes long!")).unwrap();
        assert!(!other.verify("k1", &[b"ab", b"c"], &tag), "another secret");
    }

    #[test]
    fn without_a_key_nothing_is_signed_and_everything_verifies() {
        let s = Signer::new(None).unwrap();
        assert!(!s.enabled());
        assert_eq!(s.tag("k", &[b"v"]), None);
        assert!(s.verify("k", &[b"v"], b""));
        assert_eq!(Signer::new(Some(b"short")).unwrap_err(), KeyTooShort);
        assert!(!format!("{:?}", Signer::new(Some(KEY)).unwrap()).contains("0123"));
    }
}
