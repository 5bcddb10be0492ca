//! The envelope of every document flowstate stores as a Redis string:
//!
//! ```text
//! <codec: 1 byte> <version: 20 ASCII digits> <payload>
//! ```
//!
//! The codec byte is `j` (JSON), `x` (an invalidation marker: version only, see
//! `redis/scripts/put_document.lua`) or `z` (zstd-compressed JSON, used above
//! [`COMPRESS_ABOVE`] bytes), so other codecs can be added without migrating data. With a
//! secret key ([`Signer`]) the codec byte is upper case (`J`, `Z`) and the value ends with a
//! 32-byte HMAC-SHA256 tag over the Redis key and everything before the tag; a reader with the
//! key accepts nothing else, and one without it ignores the tag. The tag is at the end so the
//! Lua scripts, which read only the header, are the same either way. The
//! reference compresses above 1 KiB; we start at 256 bytes because Redis rounds every value up
//! to an allocator size class, and measured on the reference's typical flow (1 KB phase states) this
//! is what brings a flow's footprint down (see the `memory` API test). The version
//! is fixed-width decimal so a Lua script can read it with `string.sub` and refuse to replace a
//! newer value with an older one.

use std::cell::RefCell;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::security::Signer;
use crate::security::signing::TAG_LEN;

/// Payloads larger than this are compressed.
pub const COMPRESS_ABOVE: usize = 256;

/// zstd level: fast, and most of the ratio on JSON.
const ZSTD_LEVEL: i32 = 3;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 21;

/// Largest decompressed payload accepted: a corrupt or foreign frame header must not make a
/// reader allocate without bound. Documents are capped far lower by the request body limit.
const MAX_DECOMPRESSED: u64 = 64 << 20;

thread_local! {
    // One zstd context per thread, reused: creating one per value cost ~10 µs, more than
    // compressing a 1 KB document (measured in `benches/hot_paths.rs`).
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn compress(json: &[u8]) -> Result<Vec<u8>, String> {
    COMPRESSOR.with_borrow_mut(|slot| {
        let compressor = match slot {
            Some(c) => c,
            None => {
                slot.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| e.to_string())?)
            }
        };
        compressor.compress(json).map_err(|e| e.to_string())
    })
}

fn decompress_streaming(frame: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let decoder = zstd::stream::read::Decoder::new(frame).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    decoder
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(format!("compressed value exceeds {MAX_DECOMPRESSED} bytes"));
    }
    Ok(out)
}

fn decompress(frame: &[u8]) -> Result<Vec<u8>, String> {
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) if size <= MAX_DECOMPRESSED => size,
        Ok(Some(size)) => return Err(format!("compressed value claims {size} bytes")),
        // Frames without a content size (none written by flowstate) stream, still bounded.
        Ok(None) => return decompress_streaming(frame),
        Err(_) => return Err("not a zstd frame".into()),
    };
    DECOMPRESSOR.with_borrow_mut(|slot| {
        let decompressor = match slot {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?),
        };
        // Bounded above by MAX_DECOMPRESSED, so it fits in usize on every supported target.
        let capacity = usize::try_from(size).map_err(|e| e.to_string())?;
        decompressor
            .decompress(frame, capacity)
            .map_err(|e| e.to_string())
    })
}

/// What is stored for a document (the name and flow are in the key, the version in the header).
#[derive(Debug, Serialize, Deserialize)]
pub struct Payload {
    /// When the document was written.
    #[serde(with = "time::serde::rfc3339")]
    pub saved_at: OffsetDateTime,
    /// The JSON object.
    pub body: Map<String, Value>,
}

/// Whether `bytes` is an invalidation marker (codec `x`: the version of a value that was
/// invalidated, no payload), which readers treat as a miss.
pub fn is_marker(bytes: &[u8]) -> bool {
    bytes.first() == Some(&b'x')
}

/// Why a stored value was not decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a value flowstate could have written.
    Corrupt(String),
    /// Its tag is missing or does not verify under the secret key: written by someone else,
    /// or moved from another key.
    Unverified(&'static str),
}

impl From<String> for DecodeError {
    fn from(reason: String) -> Self {
        DecodeError::Corrupt(reason)
    }
}

impl From<&str> for DecodeError {
    fn from(reason: &str) -> Self {
        DecodeError::Corrupt(reason.to_string())
    }
}

/// Encodes a payload with its version, to be stored under `key` (signed when `signer` has a
/// key).
pub fn encode<T: Serialize>(
    signer: &Signer,
    key: &str,
    version: i64,
    payload: &T,
) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
    let (codec, bytes) = if json.len() > COMPRESS_ABOVE {
        let z = compress(&json)?;
        (b'z', z)
    } else {
        (b'j', json)
    };
    let mut out = Vec::with_capacity(HEADER_LEN + bytes.len() + TAG_LEN);
    out.push(if signer.enabled() {
        codec.to_ascii_uppercase()
    } else {
        codec
    });
    out.extend_from_slice(format!("{:020}", version.max(0)).as_bytes());
    out.extend_from_slice(&bytes);
    if let Some(tag) = signer.tag(key, &[&out]) {
        out.extend_from_slice(&tag);
    }
    Ok(out)
}

/// Decodes what [`encode`] wrote under `key`: the version and the payload.
pub fn decode<T: DeserializeOwned>(
    signer: &Signer,
    key: &str,
    bytes: &[u8],
) -> Result<(i64, T), DecodeError> {
    let signed = bytes.first().is_some_and(u8::is_ascii_uppercase);
    let bytes = if signed {
        let Some(split) = bytes
            .len()
            .checked_sub(TAG_LEN)
            .filter(|&s| s >= HEADER_LEN)
        else {
            // Not one flowstate wrote: with a key, unverified (so it is deleted, whatever
            // version its header claims); without one, merely corrupt.
            return Err(if signer.enabled() {
                DecodeError::Unverified("signed value shorter than its header and tag")
            } else {
                "signed value shorter than its header and tag".into()
            });
        };
        let (value, tag) = bytes.split_at(split);
        if !signer.verify(key, &[value], tag) {
            return Err(DecodeError::Unverified("tag does not verify"));
        }
        value
    } else if signer.enabled() {
        return Err(DecodeError::Unverified("value is not signed"));
    } else {
        bytes
    };
    if bytes.len() < HEADER_LEN {
        return Err("value shorter than its header".into());
    }
    let version = std::str::from_utf8(&bytes[1..HEADER_LEN])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("bad version in header")?;
    let body = &bytes[HEADER_LEN..];
    let payload = match bytes[0].to_ascii_lowercase() {
        b'j' => serde_json::from_slice(body).map_err(|e| e.to_string())?,
        b'z' => {
            let json = decompress(body)?;
            serde_json::from_slice(&json).map_err(|e| e.to_string())?
        }
        other => return Err(format!("unknown codec {other:#x}").into()),
    };
    Ok((version, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(text: &str) -> Payload {
        Payload {
            saved_at: OffsetDateTime::UNIX_EPOCH,
            body: json!({"text": text}).as_object().unwrap().clone(),
        }
    }

    #[test]
    fn small_values_stay_plain_large_ones_are_compressed() {
        let small = encode(&Signer::default(), "k", 7, &payload("hi")).unwrap();
        assert_eq!(small[0], b'j');
        assert_eq!(&small[1..HEADER_LEN], b"00000000000000000007");
        let text = "flow agent state cache ".repeat(200);
        let large = encode(&Signer::default(), "k", 8, &payload(&text)).unwrap();
        assert_eq!(large[0], b'z');
        assert!(large.len() < text.len() / 4, "{} bytes", large.len());
        let (v, p): (i64, Payload) = decode(&Signer::default(), "k", &large).unwrap();
        assert_eq!((v, p.body["text"].as_str().unwrap()), (8, text.as_str()));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"j123",
            b"x00000000000000000001{}",
            b"z00000000000000000001nope",
        ] {
            assert!(
                decode::<Payload>(&Signer::default(), "k", bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_frame_claiming_a_huge_size_is_refused_before_allocating() {
        let zeros = vec![0u8; (MAX_DECOMPRESSED + 1) as usize];
        let mut value = b"z00000000000000000001".to_vec();
        value.extend(zstd::bulk::compress(&zeros, 1).unwrap());
        let err = decode::<Payload>(&Signer::default(), "k", &value).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Corrupt(e) if e.contains("claims")),
            "{err:?}"
        );
    }

    #[test]
    fn frames_without_a_content_size_decode_and_stay_bounded() {
        let frame = |data: &[u8]| {
            let mut value = b"z00000000000000000003".to_vec();
            let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
            encoder.include_contentsize(false).unwrap();
            std::io::Write::write_all(&mut encoder, data).unwrap();
            value.extend(encoder.finish().unwrap());
            assert!(matches!(
                zstd::zstd_safe::get_frame_content_size(&value[HEADER_LEN..]),
                Ok(None)
            ));
            value
        };
        let json = serde_json::to_vec(&payload("streamed")).unwrap();
        let (v, p): (i64, Payload) = decode(&Signer::default(), "k", &frame(&json)).unwrap();
        assert_eq!((v, p.body["text"].as_str().unwrap()), (3, "streamed"));
        let huge = vec![b' '; (MAX_DECOMPRESSED + 1) as usize];
        let err = decode::<Payload>(&Signer::default(), "k", &frame(&huge)).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Corrupt(e) if e.contains("exceeds")),
            "{err:?}"
        );
    }

    #[test]
    fn signed_values_verify_only_under_their_key_and_secret() {
        let signer = Signer::new(Some(b"0123456789abcdef0123456789abcdef")).unwrap();
        let plain = Signer::default();
        for text in ["small", &"large and compressible ".repeat(50)] {
            let value = encode(&signer, "k1", 4, &payload(text)).unwrap();
            assert!(value[0].is_ascii_uppercase());
            let (v, p): (i64, Payload) = decode(&signer, "k1", &value).unwrap();
            assert_eq!((v, p.body["text"].as_str().unwrap()), (4, text));
            // A reader without the key ignores the tag.
            assert!(decode::<Payload>(&plain, "k1", &value).is_ok());
            let moved = decode::<Payload>(&signer, "k2", &value).unwrap_err();
            assert!(matches!(moved, DecodeError::Unverified(_)), "{moved:?}");
            let mut flipped = value.clone();
            flipped[HEADER_LEN] ^= 1;
            let err = decode::<Payload>(&signer, "k1", &flipped).unwrap_err();
            assert!(matches!(err, DecodeError::Unverified(_)), "{err:?}");
            let unsigned = encode(&plain, "k1", 4, &payload(text)).unwrap();
            let err = decode::<Payload>(&signer, "k1", &unsigned).unwrap_err();
            assert_eq!(err, DecodeError::Unverified("value is not signed"));
        }
        assert!(decode::<Payload>(&signer, "k", b"J0000").is_err());
    }
}
