//! Security primitives shared by the tiers, the service and the server: who may call
//! ([`tokens`]: API tokens and their roles, compared in constant time), whether a value read
//! from Redis is one flowstate wrote ([`signing`]: HMAC-SHA256 tags), and what a sensitive
//! flow's data looks like at rest ([`envelope`]: AEAD envelopes with key ids, so keys rotate),
//! and how deep and wide a JSON body may be before it is parsed ([`json_limits`]).
//!
//! This module sits beside the model: it knows nothing of flows, tiers or HTTP, only keys and
//! bytes, so every layer above can use it and each piece can be fuzzed on its own
//! (`tests/fuzz.rs`). Secrets never reach a `Debug` or `Display` impl.

pub mod envelope;
pub mod json_limits;
pub mod signing;
pub mod tokens;

pub use envelope::{Keyring, SEALED_FIELD};
pub use signing::Signer;
pub use tokens::{Role, TokenSet};
