//! The stored version of an object, as it travels on the wire.

use crate::json::JsonData;
use alloc::string::String;
use serde::{Deserialize, Serialize};

/// One object at one seq: either live (`data` and `hash` present) or a tombstone
/// (`deleted: true`, no `data`).
///
/// Only the latest version of each id is stored, so an object's `seq` is also the seq of the
/// last write to that id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// The object's id, unique within its collection.
    pub id: String,
    /// The application's type tag; `""` by default. Pulls can filter on it.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The seq of the write that produced this version.
    pub seq: u64,
    /// True for a tombstone.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// The payload; absent on tombstones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<JsonData>,
    /// When the object expires (unix ms); the server then turns it into a tombstone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// The server's content hash of `data` (see [`crate::hash`]); absent on tombstones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Who created the object (see [`crate::acl`]); set by servers that record authors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Object {
    /// A tombstone for `id` at `seq`.
    pub fn tombstone(id: String, kind: String, seq: u64) -> Object {
        Object {
            id,
            kind,
            seq,
            deleted: true,
            data: None,
            expires: None,
            hash: None,
            author: None,
        }
    }

    /// Appends this object's JSON to `out`, byte for byte what serde would write.
    ///
    /// Pull pages are the server's hottest path; writing them by hand avoids re-validating
    /// every stored `data` text, which serde's raw-value path would do.
    pub fn write_json(&self, out: &mut String) {
        self.as_ref().write_json(out);
    }

    /// The same object, borrowed.
    pub fn as_ref(&self) -> ObjectRef<'_> {
        ObjectRef {
            id: &self.id,
            kind: &self.kind,
            seq: self.seq,
            deleted: self.deleted,
            data: self.data.as_ref().map(JsonData::as_str),
            expires: self.expires,
            hash: self.hash.as_deref(),
            author: self.author.as_deref(),
        }
    }
}

/// An [`Object`] whose text fields are borrowed: a server writes pull pages straight from
/// its database rows through this, without allocating an `Object` per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectRef<'a> {
    /// See [`Object::id`].
    pub id: &'a str,
    /// See [`Object::kind`].
    pub kind: &'a str,
    /// See [`Object::seq`].
    pub seq: u64,
    /// See [`Object::deleted`].
    pub deleted: bool,
    /// See [`Object::data`]: JSON text, already validated when it was stored.
    pub data: Option<&'a str>,
    /// See [`Object::expires`].
    pub expires: Option<u64>,
    /// See [`Object::hash`].
    pub hash: Option<&'a str>,
    /// See [`Object::author`].
    pub author: Option<&'a str>,
}

impl ObjectRef<'_> {
    /// Appends the object's JSON to `out`; see [`Object::write_json`].
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"id\":");
        write_json_string(out, self.id);
        out.push_str(",\"type\":");
        write_json_string(out, self.kind);
        out.push_str(",\"seq\":");
        write_decimal(out, self.seq);
        if self.deleted {
            out.push_str(",\"deleted\":true");
        }
        if let Some(data) = self.data {
            out.push_str(",\"data\":");
            out.push_str(data);
        }
        if let Some(expires) = self.expires {
            out.push_str(",\"expires\":");
            write_decimal(out, expires);
        }
        if let Some(hash) = self.hash {
            out.push_str(",\"hash\":");
            write_json_string(out, hash);
        }
        if let Some(author) = self.author {
            out.push_str(",\"author\":");
            write_json_string(out, author);
        }
        out.push('}');
    }
}

/// Appends `n` in decimal. By hand rather than with `write!`, which would compile the
/// formatting machinery into the browser's wasm (see sync-wasm).
pub fn write_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &digits[at..] {
        out.push(char::from(digit));
    }
}

/// Appends `s` as a JSON string literal, escaped as serde_json escapes it.
pub fn write_json_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            0x00..=0x1f => None,
            _ => continue,
        };
        // `get`, not indexing: `i` is always a char boundary (it is an ASCII byte), and this
        // way no panic message (and its formatting code) is compiled into the browser's wasm.
        out.push_str(s.get(start..i).unwrap_or_default());
        match escape {
            Some(e) => out.push_str(e),
            None => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or_default());
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn sample() -> Object {
        Object {
            id: "a\"b\\c\n\u{1}é".to_string(),
            kind: "todo".to_string(),
            seq: 42,
            deleted: false,
            data: Some(JsonData::parse(r#"{"x":[1,"y"]}"#).unwrap()),
            expires: Some(1_700_000_000_000),
            hash: Some("ab".to_string()),
            author: Some("ann\u{7f}".to_string()),
        }
    }

    #[test]
    fn hand_written_json_matches_serde() {
        for obj in [sample(), Object::tombstone("t".into(), "".into(), 7)] {
            let mut mine = String::new();
            obj.write_json(&mut mine);
            assert_eq!(mine, serde_json::to_string(&obj).unwrap());
            let back: Object = serde_json::from_str(&mine).unwrap();
            assert_eq!(back, obj);
        }
    }
}
