//! Small vocabularies for the structured checks.
//!
//! Drawing ids, seqs and data from a handful of values (rather than from all strings and all
//! integers) is deliberate: a conflict needs two writes to the *same* id, a stale base needs a
//! seq that *almost* matches. Each helper falls back to a fixed value when the bytes run out,
//! as `arbitrary` does, so every byte string is a valid input.

use arbitrary::{Result, Unstructured};
use sync_core::push::Change;
use sync_core::JsonData;

/// Object ids the checks write and read.
pub const IDS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

/// Epochs (`collection_id`s).
pub const EPOCHS: [&str; 3] = ["e1", "e2", "e3"];

/// Users, for authorship.
pub const USERS: [&str; 3] = ["ann", "bob", "cy"];

/// An id from [`IDS`].
pub fn id(u: &mut Unstructured<'_>) -> Result<&'static str> {
    u.choose(&IDS).copied()
}

/// An epoch from [`EPOCHS`], or none.
pub fn epoch(u: &mut Unstructured<'_>) -> Result<Option<&'static str>> {
    Ok(if u.arbitrary()? {
        Some(u.choose(&EPOCHS)?)
    } else {
        None
    })
}

/// A seq: mostly small, so that seqs meet, sometimes anything at all.
pub fn seq(u: &mut Unstructured<'_>) -> Result<u64> {
    Ok(match u.int_in_range(0u8..=7)? {
        0 => u.arbitrary()?,
        _ => u.int_in_range(0..=12)?,
    })
}

/// Object data: one of a few JSON texts, so that two writes often say the same thing.
pub fn data(u: &mut Unstructured<'_>) -> Result<JsonData> {
    let text = u.choose(&["1", "2", "{\"a\":1}", "\"x\"", "null", "[]"])?;
    Ok(JsonData::parse(text).expect("the vocabulary is valid JSON"))
}

/// A put (sometimes with an expiry) or a delete.
pub fn change(u: &mut Unstructured<'_>) -> Result<Change> {
    Ok(if u.ratio(1u8, 4)? {
        Change::Delete
    } else {
        let expires = if u.ratio(1u8, 8)? {
            Some(u.int_in_range(0..=sync_core::push::MAX_EXPIRES_MS)?)
        } else {
            None
        };
        Change::Put {
            data: data(u)?,
            expires,
        }
    })
}

/// An object type: mostly the default `""`.
pub fn kind(u: &mut Unstructured<'_>) -> Result<&'static str> {
    u.choose(&["", "", "", "note", "task"]).copied()
}

/// A change a replica would push: as [`change`], with the edits it refuses made deletes.
pub fn pushable_change(u: &mut Unstructured<'_>) -> Result<Change> {
    let change = change(u)?;
    Ok(match sync_core::replica::check_change(&change) {
        Ok(()) => change,
        Err(_) => Change::Delete,
    })
}
