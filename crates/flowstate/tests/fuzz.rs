//! Property-based fuzzing (proptest) of what reads untrusted input: the id validator, the JSON
//! canonicaliser behind agent-cache keys, the JSON shape check, the Redis value codec and the
//! encryption envelope decoder. None may panic; each must agree with its specification.
//!
//! `cargo test -p flowstate --test fuzz` runs the default number of cases; for a long run set
//! `PROPTEST_CASES` (e.g. `PROPTEST_CASES=1000000 cargo test --release -p flowstate --test fuzz`).

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used, missing_docs)]

use flowstate::hot::codec;
use flowstate::model::agent_cache::entry_hash;
use flowstate::model::ids;
use flowstate::security::envelope::{self, Keyring, SEALED_FIELD};
use flowstate::security::json_limits;
use flowstate::security::{Signer, TokenSet};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn keyring() -> Keyring {
    Keyring::parse(["k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="]).unwrap()
}

/// Arbitrary JSON values, nested a few levels.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000)
    ))]

    #[test]
    fn the_id_validator_accepts_exactly_the_id_alphabet(s in "\\PC{0,140}|[A-Za-z0-9_.:-]{1,130}") {
        let ok = ids::validate("flow_id", &s).is_ok();
        let expected = (1..=128).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
        prop_assert_eq!(ok, expected, "{:?}", s);
    }

    #[test]
    fn the_canonical_hash_ignores_key_order_and_never_panics(v in json(), agent in "[a-z]{1,8}") {
        let h1 = entry_hash(&agent, &v, None).unwrap();
        // The same value with its object keys inserted in reverse order.
        fn reversed(v: &Value) -> Value {
            match v {
                Value::Object(m) => {
                    let mut out = Map::new();
                    for (k, x) in m.iter().rev() {
                        out.insert(k.clone(), reversed(x));
                    }
                    Value::Object(out)
                }
                Value::Array(a) => Value::Array(a.iter().map(reversed).collect()),
                other => other.clone(),
            }
        }
        prop_assert_eq!(&h1, &entry_hash(&agent, &reversed(&v), None).unwrap());
        prop_assert_eq!(h1.len(), 64);
    }

    #[test]
    fn the_json_shape_check_never_panics_and_agrees_with_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = json_limits::check(&bytes, 8, 64);
    }

    #[test]
    fn the_json_shape_check_counts_real_documents(v in json()) {
        let text = serde_json::to_vec(&v).unwrap();
        fn depth(v: &Value) -> usize {
            match v {
                Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
                Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
                _ => 0,
            }
        }
        fn items(v: &Value) -> usize {
            match v {
                Value::Array(a) => a.len() + a.iter().map(items).sum::<usize>(),
                Value::Object(m) => m.len() + m.values().map(items).sum::<usize>(),
                _ => 0,
            }
        }
        let (d, n) = (depth(&v), items(&v));
        prop_assert!(json_limits::check(&text, d.max(1), n).is_ok());
        if d > 1 {
            prop_assert!(json_limits::check(&text, d - 1, n).is_err());
        }
        if n > 0 {
            prop_assert!(json_limits::check(&text, d.max(1), n - 1).is_err());
        }
    }

    #[test]
    fn the_value_codec_never_panics_on_stored_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256), signed in any::<bool>()) {
        let signer = if signed {
            Signer::new(Some(b"0123456789abcdef0123456789abcdef")).unwrap()
        } else {
            Signer::default()
        };
        let _ = codec::decode::<Value>(&signer, "k", &bytes);
        // A prefix that looks like a header, then garbage.
        let mut framed = b"Z00000000000000000001".to_vec();
        framed.extend(&bytes);
        prop_assert!(codec::decode::<Value>(&signer, "k", &framed).is_err());
    }

    #[test]
    fn the_codec_round_trips_and_refuses_any_bit_flip(v in json(), flip in any::<prop::sample::Index>()) {
        let signer = Signer::new(Some(b"0123456789abcdef0123456789abcdef")).unwrap();
        let encoded = codec::encode(&signer, "k", 3, &v).unwrap();
        let (version, back): (i64, Value) = codec::decode(&signer, "k", &encoded).unwrap();
        prop_assert_eq!(version, 3);
        prop_assert_eq!(&back, &v);
        let mut tampered = encoded.clone();
        let at = flip.index(tampered.len());
        tampered[at] ^= 0x20;
        prop_assert!(codec::decode::<Value>(&signer, "k", &tampered).is_err());
    }

    #[test]
    fn the_envelope_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256), text in "\\PC{0,200}") {
        let _ = envelope::decode(&bytes);
        let ring = keyring();
        let mut sealed = Map::new();
        sealed.insert(SEALED_FIELD.into(), Value::String(text));
        prop_assert!(ring.open(&sealed).is_err());
        use base64::Engine;
        let mut raw = Map::new();
        raw.insert(SEALED_FIELD.into(), Value::String(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes)));
        prop_assert!(ring.open(&raw).is_err());
    }

    #[test]
    fn envelopes_round_trip_and_refuse_any_bit_flip(v in json(), flip in any::<prop::sample::Index>()) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let ring = keyring();
        let sealed = ring.seal(&v).unwrap();
        prop_assert_eq!(ring.open(&sealed).unwrap(), Some(v));
        let mut raw = b64.decode(envelope::envelope_text(&sealed).unwrap()).unwrap();
        let at = flip.index(raw.len());
        raw[at] ^= 1;
        let mut tampered = Map::new();
        tampered.insert(SEALED_FIELD.into(), Value::String(b64.encode(&raw)));
        prop_assert!(ring.open(&tampered).is_err());
    }

    #[test]
    fn token_parsing_never_panics(entries in prop::collection::vec("\\PC{0,80}", 0..4), presented in "\\PC{0,80}") {
        if let Ok(set) = TokenSet::parse(entries.iter().map(String::as_str)) {
            let _ = set.role_of(&presented);
        }
    }
}
