//! An object's payload, kept as JSON text.
//!
//! The server never needs to look inside `data`: it validates it once, hashes it, stores the
//! text and sends the same text back. Keeping it as text (not a parsed tree) is what makes a
//! pull page a string copy instead of a re-serialisation.

use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::string::{String, ToString};
use core::cell::Cell;
use core::fmt;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// How deeply arrays and objects may nest inside `data`.
///
/// Deep nesting is never useful in application data, and some JSON parsers (including the
/// recursive ones in browsers' and servers' standard libraries) overflow their stack on it.
pub const MAX_DEPTH: usize = 64;

/// Valid JSON text: the `data` of an object.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JsonData(String);

/// Why a piece of text is not acceptable as `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonDataError {
    /// Not JSON at all, or a string with a `\u` escape of a lone surrogate (which no UTF-8
    /// text can hold).
    Syntax,
    /// Arrays or objects nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// One JSON object has the same key twice (parsers disagree on which one wins).
    DuplicateKey,
    /// A number beyond the range of a 64-bit float (`1e400`, ten thousand digits): no
    /// JavaScript client could read it back.
    NumberOutOfRange,
}

impl JsonDataError {
    /// A sentence for the error answer, after the field name.
    pub fn message(&self) -> &'static str {
        match self {
            JsonDataError::Syntax => "is not valid JSON",
            JsonDataError::TooDeep => "is nested too deeply",
            JsonDataError::DuplicateKey => "has an object with the same key twice",
            JsonDataError::NumberOutOfRange => "has a number beyond the range of a 64-bit float",
        }
    }
}

impl JsonData {
    /// Checks that `text` is one JSON value no deeper than [`MAX_DEPTH`], with no duplicate
    /// keys, no lone surrogates and no number out of a double's range.
    pub fn parse(text: &str) -> Result<JsonData, JsonDataError> {
        let found = Cell::new(None);
        let mut deserializer = serde_json::Deserializer::from_str(text);
        // The check counts its own depth and stops one level past MAX_DEPTH, so it never
        // recurses further, however deep the input.
        let checked = Check {
            found: &found,
            depth: 0,
        }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
        if let Err(e) = checked {
            // Too deep wins over any other problem, as if depth were checked first: whether
            // text is refused as too deep does not depend on where its other faults are. The
            // scan runs only for refused text, so valid data is read once.
            if nesting_depth(text) > MAX_DEPTH {
                return Err(JsonDataError::TooDeep);
            }
            return Err(found.take().unwrap_or_else(|| {
                // serde_json's own wording for a number that overflows a double.
                if e.to_string().starts_with("number out of range") {
                    JsonDataError::NumberOutOfRange
                } else {
                    JsonDataError::Syntax
                }
            }));
        }
        Ok(JsonData(String::from(text.trim())))
    }

    /// Wraps text that was validated before, such as what the server itself stored.
    ///
    /// Nothing is checked here: passing text that is not JSON produces invalid answers.
    pub fn from_trusted(text: String) -> JsonData {
        JsonData(text)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JSON text, by value.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for JsonData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for JsonData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for JsonData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // RawValue is how serde_json embeds text verbatim; the validation it repeats here only
        // runs on the rare serde paths (conflict answers, tests), never on pull pages.
        let raw = RawValue::from_string(self.0.clone()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JsonData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw: Box<RawValue> = Deserialize::deserialize(deserializer)?;
        JsonData::parse(raw.get())
            .map_err(|e| serde::de::Error::custom(format_args!("data {}", e.message())))
    }
}

/// Walks one JSON value without keeping it, and refuses what a plain parse lets through:
/// `serde_json`'s `RawValue` skips over strings without decoding their escapes and over
/// objects without looking at their keys. The first problem of our own is left in the cell.
///
/// Hand-written because no parser option does this: `serde_json::Value` keeps the last of two
/// equal keys silently.
#[derive(Clone, Copy)]
struct Check<'a> {
    found: &'a Cell<Option<JsonDataError>>,
    /// How many arrays and objects enclose the value.
    depth: usize,
}

impl<'a> Check<'a> {
    /// The check of a value inside this array or object, or an error if that container is
    /// itself deeper than [`MAX_DEPTH`].
    fn inside<E: de::Error>(&self) -> Result<Check<'a>, E> {
        if self.depth >= MAX_DEPTH {
            self.found.set(Some(JsonDataError::TooDeep));
            return Err(E::custom("nested too deeply"));
        }
        Ok(Check {
            found: self.found,
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    // Reaching a string at all means its escapes decoded to valid Unicode.
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inside = self.inside()?;
        while seq.next_element_seed(inside)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inside = self.inside()?;
        let mut keys = BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key) {
                self.found.set(Some(JsonDataError::DuplicateKey));
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(inside)?;
        }
        Ok(())
    }
}

/// The deepest nesting of arrays and objects in `text`, ignoring brackets inside strings.
///
/// Runs in one pass with no recursion, so it is safe on hostile input of any depth. It does not
/// validate; malformed text simply gets some number back.
pub fn nesting_depth(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut deepest, mut at) = (0usize, 0usize, 0usize);
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                // Jump through the string to its closing quote; most of a payload's bytes are
                // inside strings, and memchr finds the next quote or backslash many bytes at
                // a time. A backslash skips the byte after it, whatever it is.
                at += 1;
                loop {
                    match bytes
                        .get(at..)
                        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                    {
                        None => return deepest, // never closed: no more brackets count
                        Some(n) if bytes[at + n] == b'\\' => at += n + 2,
                        Some(n) => {
                            at += n + 1;
                            break;
                        }
                    }
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn depth_ignores_brackets_inside_strings() {
        assert_eq!(nesting_depth(r#"{"a":"[[[{{{"}"#), 1);
        assert_eq!(nesting_depth(r#"[["\"]"]]"#), 2);
        assert_eq!(nesting_depth("1"), 0);
    }

    #[test]
    fn deep_input_is_refused_without_recursion() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert_eq!(JsonData::parse(&deep), Err(JsonDataError::TooDeep));
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(JsonData::parse(&ok).is_ok());
    }

    #[test]
    fn parse_trims_and_rejects_garbage() {
        assert_eq!(
            JsonData::parse(" {\"a\":1} ").unwrap().as_str(),
            "{\"a\":1}"
        );
        assert_eq!(JsonData::parse("{a:1}"), Err(JsonDataError::Syntax));
        assert_eq!(JsonData::parse(""), Err(JsonDataError::Syntax));
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert_eq!(
            JsonData::parse(r#"{"a":1,"a":2}"#),
            Err(JsonDataError::DuplicateKey)
        );
        assert_eq!(
            JsonData::parse(r#"[{"x":{"b":1,"c":[{"b":1,"b":1}]}}]"#),
            Err(JsonDataError::DuplicateKey)
        );
        // Equal after decoding escapes is equal.
        assert_eq!(
            JsonData::parse(r#"{"a":1,"\u0061":2}"#),
            Err(JsonDataError::DuplicateKey)
        );
        assert!(JsonData::parse(r#"{"a":{"a":1},"b":{"a":2}}"#).is_ok());
    }

    #[test]
    fn lone_surrogates_are_refused_and_pairs_and_nul_are_fine() {
        for lone in [
            r#""\ud800""#,
            r#""\udc00x""#,
            r#"{"\ud83d":1}"#,
            r#""\ud83d\u0041""#,
        ] {
            assert_eq!(JsonData::parse(lone), Err(JsonDataError::Syntax), "{lone}");
        }
        assert!(JsonData::parse(r#""\ud83d\ude00""#).is_ok());
        assert!(JsonData::parse(r#"{"nul":"a\u0000b"}"#).is_ok());
        // A raw control character inside a string is not JSON.
        assert_eq!(JsonData::parse("\"a\u{0}b\""), Err(JsonDataError::Syntax));
    }

    #[test]
    fn numbers_beyond_a_double_are_refused() {
        let huge = "9".repeat(10_000);
        assert_eq!(JsonData::parse(&huge), Err(JsonDataError::NumberOutOfRange));
        assert_eq!(
            JsonData::parse("[1e400]"),
            Err(JsonDataError::NumberOutOfRange)
        );
        // Long but in range: kept as sent, digits and all.
        let long = alloc::format!("0.{}1", "0".repeat(10_000));
        assert_eq!(JsonData::parse(&long).unwrap().as_str(), long);
        assert!(JsonData::parse("123456789012345678901234567890").is_ok());
    }

    /// The scan as first written: one byte at a time. The reference for the fast one.
    fn nesting_depth_bytewise(text: &str) -> usize {
        let (mut depth, mut deepest) = (0usize, 0usize);
        let (mut in_string, mut escaped) = (false, false);
        for &b in text.as_bytes() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        deepest
    }

    /// Text made of JSON's structural characters, escapes and a few others, so that strings,
    /// escapes at the very end and unclosed strings all come up often.
    fn structural_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            proptest::sample::select(&['[', ']', '{', '}', '"', '\\', 'a', '1', ',', ':', 'é'][..]),
            0..200,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    /// Arrays nested `depth` deep somewhere inside otherwise valid data, with a fault or not.
    fn nested_data() -> impl Strategy<Value = String> {
        (0..MAX_DEPTH + 8, 0..4usize, proptest::bool::ANY).prop_map(|(depth, fault, prefix)| {
            let inner = match fault {
                0 => "1",
                1 => "{\"a\":1,\"a\":2}",
                2 => "1e400",
                _ => "x",
            };
            let nested = alloc::format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth));
            if prefix {
                alloc::format!("{{\"s\":\"[[\\\"]]\",\"v\":{nested}}}")
            } else {
                nested
            }
        })
    }

    proptest! {
        #[test]
        fn the_fast_depth_scan_agrees_with_the_bytewise_one(text in structural_text()) {
            prop_assert_eq!(nesting_depth(&text), nesting_depth_bytewise(&text));
        }

        #[test]
        fn too_deep_exactly_when_the_scan_says_so(text in nested_data()) {
            let deep = nesting_depth_bytewise(&text) > MAX_DEPTH;
            match JsonData::parse(&text) {
                Ok(_) => prop_assert!(!deep),
                Err(e) => prop_assert_eq!(e == JsonDataError::TooDeep, deep, "{:?}", e),
            }
        }
    }

    #[test]
    fn serde_round_trip_keeps_text() {
        let d = JsonData::parse(r#"{"b":[1,2],"a":null}"#).unwrap();
        let s = serde_json::to_string(&d).unwrap();
        assert_eq!(s, d.as_str());
        let back: JsonData = serde_json::from_str(&s).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.to_string(), d.as_str());
    }
}
