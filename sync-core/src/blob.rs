//! Content-addressed blobs: how they are named and how objects refer to them.
//!
//! A blob is named by the lower-case hex SHA-256 of its bytes ([`crate::hash::sha256_hex`]).
//! An object refers to blobs through one field of its `data`: a top-level `"blobs"` array of
//! such names, e.g. `{"name": "aia_171.jp2", "blobs": ["9f86d0…"]}`. Anything else in `data`
//! is the application's own. A blob that no live object refers to is collected by the
//! server after its retention window; a mirror fetches the blobs its objects refer to.

use alloc::string::String;
use alloc::vec::Vec;

use crate::json::JsonData;

/// The field of an object's `data` that lists the blobs it refers to.
pub const REFS_FIELD: &str = "blobs";

/// Whether `name` is a blob name: 64 lower-case hex digits.
pub fn is_blob_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The blobs that `data` refers to, in order, without repeats. Entries of `"blobs"` that are
/// not blob names are not references (and are left to the application).
pub fn refs(data: &JsonData) -> Vec<String> {
    // Stores call this on every write: most data names no blobs, and is not parsed again.
    // (A key spelled with escapes, `"\u0062lobs"`, still is.)
    let text = data.as_str();
    if !text.contains(REFS_FIELD) && !text.contains("\\u") {
        return Vec::new();
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(data.as_str()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = Vec::new();
    if let Some(list) = value.get(REFS_FIELD).and_then(|v| v.as_array()) {
        for name in list.iter().filter_map(|v| v.as_str()) {
            if is_blob_name(name) && !names.iter().any(|n| n == name) {
                names.push(String::from(name));
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha256_hex;

    #[test]
    fn names_are_lower_case_hex_sha256() {
        assert!(is_blob_name(&sha256_hex(b"x")));
        assert!(!is_blob_name(&sha256_hex(b"x").to_uppercase()));
        assert!(!is_blob_name("abc"));
        assert!(!is_blob_name(&"g".repeat(64)));
    }

    #[test]
    fn refs_come_from_the_top_level_blobs_array_only() {
        let a = sha256_hex(b"a");
        let b = sha256_hex(b"b");
        let text = alloc::format!(
            r#"{{"blobs": ["{a}", "not-a-hash", "{b}", "{a}", 7], "inner": {{"blobs": ["{b}"]}}}}"#
        );
        let data = JsonData::parse(&text).unwrap();
        assert_eq!(refs(&data), [a.clone(), b]);
        let nested = alloc::format!(r#"{{"inner": {{"blobs": ["{a}"]}}}}"#);
        assert!(refs(&JsonData::parse(&nested).unwrap()).is_empty());
        assert!(refs(&JsonData::parse("[1, 2]").unwrap()).is_empty());
        assert!(refs(&JsonData::parse(r#"{"blobs": "x"}"#).unwrap()).is_empty());
        let escaped = alloc::format!(r#"{{"\u0062lobs": ["{a}"]}}"#);
        assert_eq!(refs(&JsonData::parse(&escaped).unwrap()), [a]);
    }
}
