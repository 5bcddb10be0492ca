//! Strict validation of every id that reaches a key or a row.
//!
//! Ids are 1–128 characters of `[A-Za-z0-9_.:-]`. They are rejected, never rewritten: the
//! reference's `sanitize_key` maps different ids to the same key. Braces are excluded so an id can
//! never break out of the `{…}` Redis Cluster hash tag it is wrapped in.

use crate::error::{Error, Result};

/// Longest accepted id, in bytes (all accepted characters are ASCII).
pub const MAX_ID_LEN: usize = 128;

/// Checks `value` against the id rules; `field` names the input in the error.
pub fn validate(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::InvalidId {
            field,
            reason: "must not be empty".into(),
        });
    }
    if value.len() > MAX_ID_LEN {
        return Err(Error::InvalidId {
            field,
            reason: format!(
                "must be at most {MAX_ID_LEN} characters, got {}",
                value.len()
            ),
        });
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(Error::InvalidId {
            field,
            reason: format!("character {bad:?} is not allowed (use A-Z a-z 0-9 _ . : -)"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_charset() {
        validate("flow_id", "Flow_1.a:b-c").unwrap();
        validate("flow_id", &"a".repeat(MAX_ID_LEN)).unwrap();
    }

    #[test]
    fn rejects_what_the_reference_would_rewrite() {
        for bad in [
            "",
            "a b",
            "a/b",
            "{tag}",
            "é",
            "a*",
            &"a".repeat(MAX_ID_LEN + 1),
        ] {
            let err = validate("flow_id", bad).unwrap_err();
            assert_eq!(err.code(), "invalid_id", "{bad:?}");
        }
    }
}
