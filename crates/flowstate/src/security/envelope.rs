//! Envelopes for sensitive data at rest. A sensitive flow's state, phase states, agent results,
//! snapshots and custom event payloads are stored, in the ledger and in the hot tier alike, as
//!
//! ```json
//! {"$sealed": "<base64url: 0x01 | key id length | key id | 24-byte nonce | ciphertext + tag>"}
//! ```
//!
//! sealed with XChaCha20-Poly1305 (random 192-bit nonces: no nonce bookkeeping across
//! instances, no practical collision risk) under the first key of the keyring. The key id in
//! the envelope lets older keys keep opening what they sealed after a new key is put first
//! (rotation). The associated data is a fixed label plus the key id, not the flow: snapshots,
//! restores and forks copy envelopes verbatim inside the ledger and must still open them.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde_json::{Map, Value};

/// The one field of a sealed object.
pub const SEALED_FIELD: &str = "$sealed";

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const AAD_LABEL: &[u8] = b"flowstate envelope v1 ";

/// Why a keyring, or an envelope, was refused. Never holds key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// A keyring entry is not `<key_id>:<base64 of 32 bytes>`.
    #[error(
        "encryption key entry {index}: must be `<key_id>:<base64 of 32 bytes>`, key id 1-32 of A-Z a-z 0-9 _ . -"
    )]
    BadKey {
        /// 1-based position in the list.
        index: usize,
    },
    /// Two entries share a key id.
    #[error("encryption key id {0:?} appears twice")]
    DuplicateKeyId(String),
    /// Sealing was asked of an empty keyring.
    #[error("no encryption key is configured (FLOWSTATE_ENCRYPTION_KEYS)")]
    NoKey,
    /// The envelope is not one this version writes.
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    /// The envelope names a key this keyring does not hold.
    #[error("envelope sealed with key {0:?}, which is not configured")]
    UnknownKey(String),
    /// The ciphertext does not open under its key: corrupted or forged.
    #[error("envelope does not open under key {0:?}: corrupted or forged")]
    Forged(String),
}

/// The parts of an envelope, as [`decode`] reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The key it was sealed with.
    pub key_id: &'a str,
    /// Its nonce.
    pub nonce: &'a [u8],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: &'a [u8],
}

/// Reads an envelope's bytes (after base64) without opening it.
pub fn decode(raw: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    let (&version, rest) = raw.split_first().ok_or(EnvelopeError::Malformed("empty"))?;
    if version != VERSION {
        return Err(EnvelopeError::Malformed("unknown version"));
    }
    let (&kid_len, rest) = rest
        .split_first()
        .ok_or(EnvelopeError::Malformed("truncated"))?;
    let kid_len = usize::from(kid_len);
    if kid_len == 0 || rest.len() < kid_len + NONCE_LEN + TAG_LEN {
        return Err(EnvelopeError::Malformed("truncated"));
    }
    let (kid, rest) = rest.split_at(kid_len);
    let key_id = std::str::from_utf8(kid)
        .ok()
        .filter(|k| valid_key_id(k))
        .ok_or(EnvelopeError::Malformed("bad key id"))?;
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    Ok(Envelope {
        key_id,
        nonce,
        ciphertext,
    })
}

fn valid_key_id(k: &str) -> bool {
    (1..=32).contains(&k.len())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn aad(key_id: &str) -> Vec<u8> {
    [AAD_LABEL, key_id.as_bytes()].concat()
}

/// The encryption keys: the first seals, every one opens.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: Vec<(String, XChaCha20Poly1305)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        write!(f, "Keyring({ids:?})")
    }
}

impl Keyring {
    /// Parses `<key_id>:<base64 of 32 bytes>` entries, newest (sealing) first; blank entries
    /// are skipped.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Keyring, EnvelopeError> {
        let mut keys: Vec<(String, XChaCha20Poly1305)> = Vec::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let bad = EnvelopeError::BadKey { index: i + 1 };
            let (id, b64) = entry.split_once(':').ok_or(bad.clone())?;
            let bytes = STANDARD
                .decode(b64)
                .or_else(|_| URL_SAFE_NO_PAD.decode(b64))
                .map_err(|_| bad.clone())?;
            let Ok(bytes) = <[u8; 32]>::try_from(bytes.as_slice()) else {
                return Err(bad);
            };
            if !valid_key_id(id) {
                return Err(bad);
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(EnvelopeError::DuplicateKeyId(id.to_string()));
            }
            keys.push((id.to_string(), XChaCha20Poly1305::new(&Key::from(bytes))));
        }
        Ok(Keyring { keys })
    }

    /// Whether no key is configured (sensitive flows cannot be registered then).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The id of the key new envelopes are sealed with.
    pub fn current_key_id(&self) -> Option<&str> {
        self.keys.first().map(|(id, _)| id.as_str())
    }

    /// Seals `value` under the current key: `{"$sealed": "..."}`.
    pub fn seal(&self, value: &Value) -> Result<Map<String, Value>, EnvelopeError> {
        let (id, cipher) = self.keys.first().ok_or(EnvelopeError::NoKey)?;
        // Serialising a `Value` cannot fail: its keys are strings.
        let plaintext = serde_json::to_vec(value).unwrap_or_default();
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ciphertext = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad(id),
                },
            )
            // Only inputs beyond 256 GiB are refused; bodies are capped far below.
            .map_err(|_| EnvelopeError::Malformed("too large to seal"))?;
        let mut raw = Vec::with_capacity(2 + id.len() + NONCE_LEN + ciphertext.len());
        raw.push(VERSION);
        // Key ids are at most 32 bytes (checked when parsed).
        raw.push(id.len() as u8);
        raw.extend_from_slice(id.as_bytes());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ciphertext);
        let mut sealed = Map::new();
        sealed.insert(
            SEALED_FIELD.into(),
            Value::String(URL_SAFE_NO_PAD.encode(raw)),
        );
        Ok(sealed)
    }

    /// Opens `object` if it is an envelope (`Ok(None)` if it is not one).
    pub fn open(&self, object: &Map<String, Value>) -> Result<Option<Value>, EnvelopeError> {
        let Some(text) = envelope_text(object) else {
            return Ok(None);
        };
        let raw = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| EnvelopeError::Malformed("not base64url"))?;
        let envelope = decode(&raw)?;
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(id, _)| id == envelope.key_id)
            .ok_or_else(|| EnvelopeError::UnknownKey(envelope.key_id.to_string()))?;
        // `decode` split off exactly NONCE_LEN bytes.
        let nonce = <[u8; NONCE_LEN]>::try_from(envelope.nonce)
            .map_err(|_| EnvelopeError::Malformed("truncated"))?;
        let plaintext = cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: envelope.ciphertext,
                    aad: &aad(envelope.key_id),
                },
            )
            .map_err(|_| EnvelopeError::Forged(envelope.key_id.to_string()))?;
        serde_json::from_slice(&plaintext)
            .map(Some)
            .map_err(|_| EnvelopeError::Malformed("plaintext is not JSON"))
    }
}

/// The envelope text of `object`, if it is an envelope: exactly one field, `$sealed`, a string.
pub fn envelope_text(object: &Map<String, Value>) -> Option<&str> {
    match (object.len(), object.get(SEALED_FIELD)) {
        (1, Some(Value::String(s))) => Some(s),
        _ => None,
    }
}

/// The id of the key `object` was sealed with, if it is a well-formed envelope.
pub fn key_id_of(object: &Map<String, Value>) -> Option<String> {
    let raw = URL_SAFE_NO_PAD.decode(envelope_text(object)?).ok()?;
    decode(&raw).ok().map(|e| e.key_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    #[test]
    fn seals_opens_and_rotates() {
        let old = Keyring::parse([format!("k1:{}", key(1)).as_str()]).unwrap();
        let value = json!({"secret": "hunter2", "n": [1, 2]});
        let sealed = old.seal(&value).unwrap();
        let text = envelope_text(&sealed).unwrap();
        assert!(!text.contains("hunter2"));
        assert_eq!(old.open(&sealed).unwrap(), Some(value.clone()));
        assert_eq!(key_id_of(&sealed).as_deref(), Some("k1"));

        let new_first = [format!("k2:{}", key(2)), format!("k1:{}", key(1))];
        let rotated = Keyring::parse(new_first.iter().map(String::as_str)).unwrap();
        assert_eq!(
            rotated.open(&sealed).unwrap(),
            Some(value.clone()),
            "old key opens"
        );
        let resealed = rotated.seal(&value).unwrap();
        assert_eq!(
            key_id_of(&resealed).as_deref(),
            Some("k2"),
            "new writes use the new key"
        );
        assert_eq!(
            old.open(&resealed).unwrap_err(),
            EnvelopeError::UnknownKey("k2".into())
        );
        let plain = json!({"a": 1});
        assert_eq!(rotated.open(plain.as_object().unwrap()).unwrap(), None);
    }

    #[test]
    fn tampering_and_bad_keys_are_errors() {
        let ring = Keyring::parse([format!("k1:{}", key(1)).as_str()]).unwrap();
        let sealed = ring.seal(&json!({"x": 1})).unwrap();
        let mut raw = URL_SAFE_NO_PAD
            .decode(envelope_text(&sealed).unwrap())
            .unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let mut forged = Map::new();
        forged.insert(
            SEALED_FIELD.into(),
            Value::String(URL_SAFE_NO_PAD.encode(&raw)),
        );
        assert_eq!(
            ring.open(&forged).unwrap_err(),
            EnvelopeError::Forged("k1".into())
        );
        for bad in ["k1", "k1:abc", ":AAAA", "k 1:AAAA"] {
            assert!(Keyring::parse([bad]).is_err(), "{bad}");
        }
        let dup = [format!("k1:{}", key(1)), format!("k1:{}", key(2))];
        assert!(Keyring::parse(dup.iter().map(String::as_str)).is_err());
        assert!(!format!("{ring:?}").contains(&key(1)));
        assert_eq!(
            Keyring::default().seal(&json!(1)).unwrap_err(),
            EnvelopeError::NoKey
        );
    }
}
