//! What a legal name looks like.
//!
//! Names travel in URL paths and end up in database keys, so the rules are narrow and written
//! down once. App and collection names are plain ASCII: that rules out path traversal (`/`,
//! `\`, `%2e%2e` once decoded), Unicode confusables and invisible characters in anything that
//! routes a request. Object ids and owners are opaque user data and may be any UTF-8 without
//! control characters.

/// The longest object id, owner, type or `push_id`, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn is_valid_app(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// `[A-Za-z0-9_.-]{1,64}`, except `.` and `..`, which mean something to every file system and
/// URL resolver on the way.
pub fn is_valid_collection(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && name != "."
        && name != ".."
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Why an opaque identifier (object id, owner, `push_id`) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    /// Zero bytes long.
    Empty,
    /// More than the allowed number of bytes.
    TooLong,
    /// Contains a control character (C0, DEL or C1).
    ControlCharacter,
}

impl IdError {
    /// A sentence for the error answer.
    pub fn message(self) -> &'static str {
        match self {
            IdError::Empty => "must not be empty",
            IdError::TooLong => "must be at most 256 bytes of UTF-8",
            IdError::ControlCharacter => "must not contain control characters",
        }
    }
}

/// Checks an object id, owner or `push_id`: 1 to 256 bytes of UTF-8 without control characters.
pub fn check_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        Err(IdError::Empty)
    } else if id.len() > MAX_ID_BYTES {
        Err(IdError::TooLong)
    } else if id.chars().any(char::is_control) {
        Err(IdError::ControlCharacter)
    } else {
        Ok(())
    }
}

/// Checks an object type: like an id, except that the empty string (the default) is allowed.
pub fn check_type(kind: &str) -> Result<(), IdError> {
    if kind.is_empty() {
        Ok(())
    } else {
        check_id(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps() {
        assert!(is_valid_app("notes"));
        assert!(is_valid_app("a.b-c_9"));
        assert!(!is_valid_app(""));
        assert!(!is_valid_app("Notes"));
        assert!(!is_valid_app(".hidden"));
        assert!(!is_valid_app("a/b"));
        assert!(!is_valid_app(&"a".repeat(65)));
        assert!(is_valid_app(&"a".repeat(64)));
    }

    #[test]
    fn collections_refuse_traversal_and_non_ascii() {
        assert!(is_valid_collection("Todos.v2"));
        assert!(!is_valid_collection("."));
        assert!(!is_valid_collection(".."));
        assert!(!is_valid_collection("a/b"));
        assert!(!is_valid_collection("a\\b"));
        assert!(!is_valid_collection("tоdos")); // Cyrillic "о"
        assert!(!is_valid_collection(""));
        assert!(!is_valid_collection(&"c".repeat(65)));
    }

    #[test]
    fn ids() {
        assert_eq!(check_id("ünïcode ok"), Ok(()));
        assert_eq!(check_id(""), Err(IdError::Empty));
        assert_eq!(check_id("a\u{0}b"), Err(IdError::ControlCharacter));
        assert_eq!(check_id("a\u{85}b"), Err(IdError::ControlCharacter));
        assert_eq!(check_id(&"x".repeat(256)), Ok(()));
        assert_eq!(check_id(&"x".repeat(257)), Err(IdError::TooLong));
        assert_eq!(check_type(""), Ok(()));
    }
}
