//! An object's payload, kept as JSON text.
//!
//! The server never needs to look inside `data`: it validates it once, hashes it, stores the
//! text and sends the same text back. Keeping it as text (not a parsed tree) is what makes a
//! pull page a string copy instead of a re-serialisation.

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;
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
    /// Not JSON at all.
    Syntax,
    /// Arrays or objects nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl JsonData {
    /// Checks that `text` is one JSON value no deeper than [`MAX_DEPTH`].
    pub fn parse(text: &str) -> Result<JsonData, JsonDataError> {
        // Depth first: it is a cheap linear scan, and it keeps deep input away from any parser.
        if nesting_depth(text) > MAX_DEPTH {
            return Err(JsonDataError::TooDeep);
        }
        serde_json::from_str::<&RawValue>(text).map_err(|_| JsonDataError::Syntax)?;
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
        JsonData::parse(raw.get()).map_err(|e| match e {
            JsonDataError::TooDeep => serde::de::Error::custom("data is nested too deeply"),
            JsonDataError::Syntax => serde::de::Error::custom("data is not JSON"),
        })
    }
}

/// The deepest nesting of arrays and objects in `text`, ignoring brackets inside strings.
///
/// Runs in one pass with no recursion, so it is safe on hostile input of any depth. It does not
/// validate; malformed text simply gets some number back.
pub fn nesting_depth(text: &str) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

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
    fn serde_round_trip_keeps_text() {
        let d = JsonData::parse(r#"{"b":[1,2],"a":null}"#).unwrap();
        let s = serde_json::to_string(&d).unwrap();
        assert_eq!(s, d.as_str());
        let back: JsonData = serde_json::from_str(&s).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.to_string(), d.as_str());
    }
}
