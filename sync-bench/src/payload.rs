//! The records the workloads write: 1 KB JSON objects, different from one another.
//!
//! The same `data` goes to both systems. It has no `id` or `last_modified` field, because
//! Kinto keeps those next to a record's own fields.

/// The size of one record's `data`, in bytes of JSON text.
pub const RECORD_BYTES: usize = 1024;

/// The JSON text of record `n`'s data, exactly `size` bytes long (at least 96).
///
/// The filler is pseudo-random lower-case text seeded by `n` and `version`, so no two
/// records (nor two versions of one record) are alike.
pub fn record_data(n: u64, version: u64, size: usize) -> String {
    let head =
        format!("{{\"title\":\"record {n}\",\"done\":false,\"n\":{n},\"v\":{version},\"body\":\"");
    let tail = "\"}";
    let fill = size.saturating_sub(head.len() + tail.len());
    let mut out = String::with_capacity(head.len() + fill + tail.len());
    out.push_str(&head);
    let mut state = n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ version.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    for i in 0..fill {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // A space now and then makes it look like text; never at either end.
        let c = if i % 7 == 6 && i + 1 < fill {
            b' '
        } else {
            b'a' + ((state >> 59) as u8 % 26)
        };
        out.push(c as char);
    }
    out.push_str(tail);
    out
}

/// A record id valid in both systems (Kinto wants `[a-zA-Z0-9][a-zA-Z0-9_-]*`).
pub fn record_id(prefix: &str, n: u64) -> String {
    format!("{prefix}-{n:09}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_json_of_the_asked_size_and_differs_per_record() {
        let a = record_data(7, 0, RECORD_BYTES);
        let b = record_data(8, 0, RECORD_BYTES);
        let c = record_data(7, 1, RECORD_BYTES);
        assert_eq!(a.len(), RECORD_BYTES);
        assert_ne!(a, b);
        assert_ne!(a, c);
        let value: serde_json::Value = serde_json::from_str(&a).expect("valid JSON");
        assert_eq!(value["n"], 7);
        assert!(value.get("id").is_none() && value.get("last_modified").is_none());
    }
}
