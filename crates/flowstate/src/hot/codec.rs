//! The envelope of every document flowstate stores as a Redis string:
//!
//! ```text
//! <codec: 1 byte> <version: 20 ASCII digits> <payload>
//! ```
//!
//! The codec byte is `j` (JSON), `x` (an invalidation marker: version only, see
//! `scripts/put_document.lua`) or `z` (zstd-compressed JSON, used above
//! [`COMPRESS_ABOVE`] bytes), so other codecs can be added without migrating data. DESIGN asks
//! for compression above 1 KiB; we start at 256 bytes because Redis rounds every value up to an
//! allocator size class, and measured on the reference's typical flow (1 KB phase states) this
//! is what brings a flow's footprint down (see the `memory` API test). The version
//! is fixed-width decimal so a Lua script can read it with `string.sub` and refuse to replace a
//! newer value with an older one.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// Payloads larger than this are compressed.
pub const COMPRESS_ABOVE: usize = 256;

/// zstd level: fast, and most of the ratio on JSON.
const ZSTD_LEVEL: i32 = 3;

/// Bytes before the payload.
pub const HEADER_LEN: usize = 21;

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

/// Encodes a payload with its version.
pub fn encode<T: Serialize>(version: i64, payload: &T) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
    let (codec, bytes) = if json.len() > COMPRESS_ABOVE {
        let z = zstd::bulk::compress(&json, ZSTD_LEVEL).map_err(|e| e.to_string())?;
        (b'z', z)
    } else {
        (b'j', json)
    };
    let mut out = Vec::with_capacity(HEADER_LEN + bytes.len());
    out.push(codec);
    out.extend_from_slice(format!("{:020}", version.max(0)).as_bytes());
    out.extend_from_slice(&bytes);
    Ok(out)
}

/// Decodes what [`encode`] wrote: the version and the payload.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<(i64, T), String> {
    if bytes.len() < HEADER_LEN {
        return Err("value shorter than its header".into());
    }
    let version = std::str::from_utf8(&bytes[1..HEADER_LEN])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("bad version in header")?;
    let body = &bytes[HEADER_LEN..];
    let payload = match bytes[0] {
        b'j' => serde_json::from_slice(body).map_err(|e| e.to_string())?,
        b'z' => {
            let json = zstd::stream::decode_all(body).map_err(|e| e.to_string())?;
            serde_json::from_slice(&json).map_err(|e| e.to_string())?
        }
        other => return Err(format!("unknown codec {other:#x}")),
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
        let small = encode(7, &payload("hi")).unwrap();
        assert_eq!(small[0], b'j');
        assert_eq!(&small[1..HEADER_LEN], b"00000000000000000007");
        let text = "flow agent state cache ".repeat(200);
        let large = encode(8, &payload(&text)).unwrap();
        assert_eq!(large[0], b'z');
        assert!(large.len() < text.len() / 4, "{} bytes", large.len());
        let (v, p): (i64, Payload) = decode(&large).unwrap();
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
            assert!(decode::<Payload>(bad).is_err(), "{bad:?}");
        }
    }
}
