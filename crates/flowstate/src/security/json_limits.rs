//! Limits on the shape of a JSON body, checked on its bytes before it is parsed: how deep
//! arrays and objects nest, and how many keys and elements it holds in all. A parser would
//! otherwise build the whole tree first (serde_json stops only at 128 levels, and at no count),
//! and a deep or wide document costs memory and time at every later step that walks it
//! (canonicalisation, sealing, storage).
//!
//! The scan is one pass with no allocation. It does not validate the JSON (the parser does,
//! next); on malformed input it only has to stop and answer something.

/// Why a body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// Nested deeper than allowed.
    #[error("JSON nested deeper than {0} levels")]
    TooDeep(usize),
    /// More keys and elements than allowed.
    #[error("JSON holds more than {0} keys and elements")]
    TooManyItems(usize),
}

/// Checks `json` against `max_depth` levels of nesting and `max_items` keys plus elements.
pub fn check(json: &[u8], max_depth: usize, max_items: usize) -> Result<(), ShapeError> {
    let mut depth = 0usize;
    let mut items = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    // Whether the innermost open container has seen anything yet: its first item is counted
    // when it appears, each later one at its comma.
    let mut empty = false;
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if b.is_ascii_whitespace() {
            continue;
        }
        if empty && !matches!(b, b']' | b'}') {
            empty = false;
            items += 1;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(ShapeError::TooDeep(max_depth));
                }
                empty = true;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                empty = false;
            }
            b',' if depth > 0 => items += 1,
            _ => {}
        }
        if items > max_items {
            return Err(ShapeError::TooManyItems(max_items));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_depth_and_items_outside_strings() {
        assert_eq!(check(br#"{"a": [1, 2, {"b": "[[[,,,"}]}"#, 3, 5), Ok(()));
        assert_eq!(
            check(br#"{"a": [1, 2, {"b": "x"}]}"#, 2, 100),
            Err(ShapeError::TooDeep(2))
        );
        assert_eq!(
            check(br#"{"a": [1, 2, {"b": "x"}]}"#, 10, 4),
            Err(ShapeError::TooManyItems(4))
        );
        assert_eq!(check(br#"{"a": [1, 2, {"b": "x"}]}"#, 10, 5), Ok(()));
        assert_eq!(check(b"[]", 1, 0), Ok(()));
        assert_eq!(check(b"[[]]", 1, 10), Err(ShapeError::TooDeep(1)));
        assert_eq!(check(br#"["\"]]]]", 1]"#, 1, 2), Ok(()));
        assert_eq!(
            check(&vec![b'['; 100_000], 64, 1000),
            Err(ShapeError::TooDeep(64))
        );
    }
}
