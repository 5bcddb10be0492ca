//! API tokens and roles. A token is configured as `role:token` or `role:sha256:<hex>` (the
//! SHA-256 of the token, so the configuration need not hold it); only digests are kept in
//! memory. A presented token is hashed and compared with every configured digest in constant
//! time (all of them, whatever matches), so neither timing nor early exit tells a caller how
//! close a guess was.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads: GETs, lookups and event streams.
    Read,
    /// Reads and writes.
    Write,
    /// Everything, including backups, restores, cache invalidation, the fallback log and
    /// deletes of whole subtrees.
    Admin,
}

impl Role {
    /// The role's name in configuration and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Why a token entry was refused; never holds the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The entry does not start with `read:`, `write:` or `admin:`.
    #[error(
        "API token entry {index}: must be `role:token` or `role:sha256:<hex>` with role read, write or admin"
    )]
    Role {
        /// 1-based position in the list.
        index: usize,
    },
    /// A `sha256:` entry whose digest is not 64 hex digits.
    #[error("API token entry {index}: sha256 digest must be 64 hex digits")]
    Digest {
        /// 1-based position in the list.
        index: usize,
    },
    /// A token shorter than 16 characters: guessable.
    #[error("API token entry {index}: token must be at least 16 characters")]
    TooShort {
        /// 1-based position in the list.
        index: usize,
    },
}

/// The configured tokens: digests and roles.
#[derive(Clone, Default)]
pub struct TokenSet {
    entries: Vec<([u8; 32], Role)>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSet({} tokens)", self.entries.len())
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl TokenSet {
    /// Parses entries (`role:token` or `role:sha256:<hex>`); blank entries are skipped.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<TokenSet, TokenError> {
        let mut set = TokenSet::default();
        for (i, entry) in entries.into_iter().enumerate() {
            let index = i + 1;
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (role, rest) = entry
                .split_once(':')
                .and_then(|(r, rest)| Some((Role::parse(r)?, rest)))
                .ok_or(TokenError::Role { index })?;
            let digest = match rest.strip_prefix("sha256:") {
                Some(hex) => hex32(hex).ok_or(TokenError::Digest { index })?,
                None if rest.chars().count() < 16 => return Err(TokenError::TooShort { index }),
                None => digest(rest.as_bytes()),
            };
            set.entries.push((digest, role));
        }
        Ok(set)
    }

    /// Whether no token is configured (the server then runs open, on loopback only).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The role of `presented`, if it is a configured token. Compares against every entry.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let presented = digest(presented.as_bytes());
        let mut found = None;
        for (digest, role) in &self.entries {
            if bool::from(digest.ct_eq(&presented)) {
                found = Some(*role);
            }
        }
        found
    }

    /// A stable, non-reversible label of `presented` for rate limiting and logs: the first 8
    /// bytes of its digest, as hex.
    pub fn label(presented: &str) -> String {
        digest(presented.as_bytes())[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hashed_tokens_carry_their_roles() {
        let hashed: String = digest(b"an-admin-token-0123")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let admin = format!("admin:sha256:{hashed}");
        let set = TokenSet::parse(["read:reader-token-0123456", "", &admin]).unwrap();
        assert_eq!(set.role_of("reader-token-0123456"), Some(Role::Read));
        assert_eq!(set.role_of("an-admin-token-0123"), Some(Role::Admin));
        assert_eq!(set.role_of("reader-token-012345"), None);
        assert_eq!(set.role_of(""), None);
        assert!(Role::Read < Role::Write && Role::Write < Role::Admin);
    }

    #[test]
    fn bad_entries_are_refused_without_echoing_them() {
        for (entry, want) in [
            ("root:some-long-secret-value", TokenError::Role { index: 1 }),
            ("some-long-secret-value", TokenError::Role { index: 1 }),
            ("read:sha256:abc", TokenError::Digest { index: 1 }),
            ("write:short", TokenError::TooShort { index: 1 }),
        ] {
            let err = TokenSet::parse([entry]).unwrap_err();
            assert_eq!(err, want);
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        let debug = format!(
            "{:?}",
            TokenSet::parse(["read:reader-token-0123456"]).unwrap()
        );
        assert!(!debug.contains("reader"), "{debug}");
    }
}
