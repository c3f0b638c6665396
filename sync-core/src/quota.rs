//! Per-owner quotas: how much stored data a batch adds, and whether the owner may have it.
//!
//! What counts (the precise rule is in `docs/PROTOCOL.md`, "Quotas"): every **live** object
//! in the collections an owner owns counts as one object and as the bytes of its `data` text.
//! Tombstones count nothing, so a delete (or an expiry, or a reset) gives its object's space
//! back at once, and purging tombstones changes nothing. The owner pays for what writers and
//! creators put in the owner's collections: it is the owner's storage.
//!
//! Stores keep a running [`Usage`] per owner, updated in the same transaction as each commit
//! with the [`UsageDelta`] of the rows written, so that the check never sums a table.

use serde::{Deserialize, Serialize};

use crate::Object;

/// An owner's stored data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes of `data` text of the owner's live objects.
    pub bytes: u64,
    /// The owner's live objects.
    pub objects: u64,
}

/// How much a write changes an owner's [`Usage`] (negative: it frees space).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageDelta {
    /// Change in bytes.
    pub bytes: i64,
    /// Change in objects.
    pub objects: i64,
}

/// What one stored version costs: nothing for a tombstone, one object and its data's bytes
/// otherwise.
pub fn cost(deleted: bool, data_bytes: u64) -> UsageDelta {
    if deleted {
        UsageDelta::default()
    } else {
        UsageDelta {
            bytes: data_bytes as i64,
            objects: 1,
        }
    }
}

/// The change that writing `rows` makes, given what each one replaces: `before[i]` is the
/// cost of the version `rows[i]` overwrites ([`cost`] of the stored row, or zero if there is
/// none).
///
/// # Panics
///
/// If the two slices differ in length: that is a bug in the store.
pub fn delta(rows: &[Object], before: &[UsageDelta]) -> UsageDelta {
    assert_eq!(rows.len(), before.len(), "one previous cost per row");
    rows.iter()
        .zip(before)
        .fold(UsageDelta::default(), |sum, (row, old)| {
            let data_bytes = row.data.as_ref().map_or(0, |d| d.as_str().len() as u64);
            let new = cost(row.deleted, data_bytes);
            UsageDelta {
                bytes: sum.bytes + new.bytes - old.bytes,
                objects: sum.objects + new.objects - old.objects,
            }
        })
}

impl Usage {
    /// The usage after `delta`, never below zero.
    #[must_use]
    pub fn apply(self, delta: UsageDelta) -> Usage {
        Usage {
            bytes: self.bytes.saturating_add_signed(delta.bytes),
            objects: self.objects.saturating_add_signed(delta.objects),
        }
    }
}

/// An owner's limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// The most bytes of live data.
    pub max_bytes: Option<u64>,
    /// The most live objects.
    pub max_objects: Option<u64>,
}

/// Which limit a write would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exceeded {
    /// `max_bytes`.
    Bytes,
    /// `max_objects`.
    Objects,
}

impl Quota {
    /// Whether no limit is set, so no write can be refused (and no usage need be read).
    #[must_use]
    pub fn is_unlimited(&self) -> bool {
        self.max_bytes.is_none() && self.max_objects.is_none()
    }

    /// Whether an owner at `used` may write a batch that changes usage by `delta`.
    ///
    /// Only growth is refused: a batch that frees space (or keeps it level) always commits,
    /// even from an owner who is over a limit (lowered since, say), so deleting is always
    /// possible. Bytes are checked before objects.
    pub fn check(&self, used: Usage, delta: UsageDelta) -> Result<(), Exceeded> {
        let over = |limit: Option<u64>, used: u64, grows: i64| {
            grows > 0 && limit.is_some_and(|max| used.saturating_add(grows as u64) > max)
        };
        if over(self.max_bytes, used.bytes, delta.bytes) {
            return Err(Exceeded::Bytes);
        }
        if over(self.max_objects, used.objects, delta.objects) {
            return Err(Exceeded::Objects);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JsonData;
    use alloc::string::ToString;

    fn put(id: &str, data: &str) -> Object {
        let mut object = Object::tombstone(id.to_string(), "".to_string(), 1);
        object.deleted = false;
        object.data = Some(JsonData::parse(data).unwrap());
        object
    }

    #[test]
    fn a_new_object_costs_its_data_and_one_object() {
        let rows = [put("a", "\"four\"")];
        assert_eq!(
            delta(&rows, &[UsageDelta::default()]),
            UsageDelta {
                bytes: 6,
                objects: 1
            }
        );
    }

    #[test]
    fn deleting_gives_back_what_the_object_cost() {
        let rows = [Object::tombstone("a".to_string(), "".to_string(), 2)];
        assert_eq!(
            delta(&rows, &[cost(false, 6)]),
            UsageDelta {
                bytes: -6,
                objects: -1
            }
        );
        // Deleting what is already a tombstone frees nothing and costs nothing.
        assert_eq!(delta(&rows, &[cost(true, 0)]), UsageDelta::default());
    }

    #[test]
    fn an_update_costs_the_difference() {
        let rows = [put("a", "1")];
        assert_eq!(
            delta(&rows, &[cost(false, 3)]),
            UsageDelta {
                bytes: -2,
                objects: 0
            }
        );
    }

    #[test]
    fn only_growth_past_a_limit_is_refused() {
        let quota = Quota {
            max_bytes: Some(10),
            max_objects: Some(2),
        };
        let used = Usage {
            bytes: 8,
            objects: 2,
        };
        let grow = |bytes, objects| UsageDelta { bytes, objects };
        assert_eq!(
            quota.check(used, grow(2, 0)),
            Ok(()),
            "exactly at the limit"
        );
        assert_eq!(quota.check(used, grow(3, 0)), Err(Exceeded::Bytes));
        assert_eq!(quota.check(used, grow(1, 1)), Err(Exceeded::Objects));
        let over = Usage {
            bytes: 50,
            objects: 5,
        };
        assert_eq!(quota.check(over, grow(-1, 0)), Ok(()), "freeing is allowed");
        assert_eq!(quota.check(over, grow(0, -1)), Ok(()));
        assert_eq!(Quota::default().check(over, grow(1000, 1000)), Ok(()));
    }

    #[test]
    fn only_a_quota_without_limits_is_unlimited() {
        assert!(Quota::default().is_unlimited());
        let bytes = Quota {
            max_bytes: Some(0),
            ..Quota::default()
        };
        let objects = Quota {
            max_objects: Some(0),
            ..Quota::default()
        };
        let grow = UsageDelta {
            bytes: 1,
            objects: 1,
        };
        for limited in [bytes, objects] {
            assert!(!limited.is_unlimited());
            assert!(limited.check(Usage::default(), grow).is_err());
        }
    }

    #[test]
    fn usage_never_goes_below_zero() {
        let used = Usage {
            bytes: 1,
            objects: 1,
        };
        assert_eq!(
            used.apply(UsageDelta {
                bytes: -5,
                objects: -5
            }),
            Usage::default()
        );
    }
}
