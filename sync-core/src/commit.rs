//! The commit decision: may this batch be committed, and at which seqs?
//!
//! A pure function of what a store read inside its write transaction (the collection head and
//! the current seq of each id in the batch). Every store calls it under the lock that serialises
//! writers of the collection, then writes exactly what it decided. That is what makes seqs
//! gap-free and batches atomic in every backend alike.

use crate::horizon::since_is_answerable;
use crate::push::{ConflictReason, PushRequest};
use alloc::string::String;
use alloc::vec::Vec;

/// A collection's head row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Head {
    /// The epoch; `None` while the collection has never been written.
    pub collection_id: Option<String>,
    /// The highest seq ever committed (0: none).
    pub last_seq: u64,
    /// The lowest `since` (other than 0) that can still be answered.
    pub horizon: u64,
}

/// The stored state of one id of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    /// The seq of its latest version.
    pub seq: u64,
    /// Whether that version is a tombstone.
    pub deleted: bool,
}

/// What to do with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// Commit the whole batch: object `i` takes seq `first_seq + i`.
    Commit {
        /// The first object's seq, always `last_seq + 1`.
        first_seq: u64,
    },
    /// Commit nothing; these objects (by batch index) conflict.
    Conflicts(Vec<(usize, ConflictReason)>),
    /// Commit nothing; the client's epoch or cursor is gone and it must resync from 0.
    ResetRequired,
}

/// Decides a push. `current[i]` is the stored state of `request.objects[i].id` (`None`: no
/// such object, not even a tombstone).
///
/// # Panics
///
/// If `current` and `request.objects` differ in length: that is a bug in the store.
pub fn decide_push(head: &Head, request: &PushRequest, current: &[Option<Current>]) -> Decision {
    assert_eq!(
        current.len(),
        request.objects.len(),
        "one current state per object"
    );
    if let Some(client_epoch) = &request.collection_id {
        if head.collection_id.as_ref() != Some(client_epoch) {
            return Decision::ResetRequired;
        }
    }
    if let Some(since) = request.since {
        if !since_is_answerable(since, head.horizon, head.last_seq) {
            return Decision::ResetRequired;
        }
    }
    let collection_changed = request.since.is_some_and(|since| since < head.last_seq);
    let conflicts: Vec<(usize, ConflictReason)> = request
        .objects
        .iter()
        .zip(current)
        .enumerate()
        .filter_map(|(index, (object, current))| {
            let stale = object
                .base_seq
                .is_some_and(|base| !base_matches(base, *current));
            if stale {
                Some((index, ConflictReason::StaleBase))
            } else if collection_changed {
                Some((index, ConflictReason::CollectionChanged))
            } else {
                None
            }
        })
        .collect();
    if conflicts.is_empty() {
        Decision::Commit {
            first_seq: head.last_seq + 1,
        }
    } else {
        Decision::Conflicts(conflicts)
    }
}

/// `base_seq = 0` means "I believe it does not exist": true of a missing object or a tombstone.
/// Any other value must be the current seq exactly (a tombstone's seq included: the client saw
/// the delete).
fn base_matches(base: u64, current: Option<Current>) -> bool {
    match current {
        None => base == 0,
        Some(c) => c.seq == base || (base == 0 && c.deleted),
    }
}

/// Why a pull cannot be answered incrementally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetRequired;

/// Decides whether a pull from `since` can be answered, or must reset.
pub fn check_pull(head: &Head, since: u64) -> Result<(), ResetRequired> {
    if since_is_answerable(since, head.horizon, head.last_seq) {
        Ok(())
    } else {
        Err(ResetRequired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::JsonData;
    use crate::push::{Change, PushObject};
    use alloc::string::ToString;
    use alloc::vec;

    fn put(id: &str, base_seq: Option<u64>) -> PushObject {
        PushObject {
            id: id.to_string(),
            kind: String::new(),
            base_seq,
            change: Change::Put {
                data: JsonData::parse("1").unwrap(),
                expires: None,
            },
        }
    }

    fn head(last_seq: u64) -> Head {
        Head {
            collection_id: Some("e1".to_string()),
            last_seq,
            horizon: 0,
        }
    }

    #[test]
    fn a_clean_batch_takes_consecutive_seqs() {
        let req = PushRequest {
            since: Some(10),
            objects: vec![put("a", Some(3)), put("b", Some(0))],
            ..Default::default()
        };
        let current = [
            Some(Current {
                seq: 3,
                deleted: false,
            }),
            None,
        ];
        assert_eq!(
            decide_push(&head(10), &req, &current),
            Decision::Commit { first_seq: 11 }
        );
    }

    #[test]
    fn base_seq_rules() {
        let live = Some(Current {
            seq: 3,
            deleted: false,
        });
        let tomb = Some(Current {
            seq: 5,
            deleted: true,
        });
        assert!(base_matches(3, live));
        assert!(!base_matches(0, live));
        assert!(!base_matches(2, live));
        assert!(base_matches(0, tomb));
        assert!(base_matches(5, tomb));
        assert!(base_matches(0, None));
        assert!(!base_matches(1, None));
    }

    #[test]
    fn stale_base_and_collection_changed_are_told_apart() {
        let req = PushRequest {
            since: Some(8),
            objects: vec![put("a", Some(3)), put("b", None)],
            ..Default::default()
        };
        let current = [
            Some(Current {
                seq: 9,
                deleted: false,
            }),
            None,
        ];
        assert_eq!(
            decide_push(&head(10), &req, &current),
            Decision::Conflicts(vec![
                (0, ConflictReason::StaleBase),
                (1, ConflictReason::CollectionChanged)
            ])
        );
        let no_since = PushRequest { since: None, ..req };
        assert_eq!(
            decide_push(&head(10), &no_since, &current),
            Decision::Conflicts(vec![(0, ConflictReason::StaleBase)])
        );
    }

    #[test]
    fn wrong_epoch_old_cursor_and_future_cursor_reset() {
        let mut h = head(10);
        h.horizon = 5;
        let other_epoch = PushRequest {
            collection_id: Some("e0".to_string()),
            ..Default::default()
        };
        assert_eq!(decide_push(&h, &other_epoch, &[]), Decision::ResetRequired);
        let below_horizon = PushRequest {
            since: Some(4),
            ..Default::default()
        };
        assert_eq!(
            decide_push(&h, &below_horizon, &[]),
            Decision::ResetRequired
        );
        let future = PushRequest {
            since: Some(11),
            ..Default::default()
        };
        assert_eq!(decide_push(&h, &future, &[]), Decision::ResetRequired);
        let epoch_of_missing = PushRequest {
            collection_id: Some("e1".to_string()),
            ..Default::default()
        };
        assert_eq!(
            decide_push(&Head::default(), &epoch_of_missing, &[]),
            Decision::ResetRequired
        );
        assert_eq!(check_pull(&h, 4), Err(ResetRequired));
        assert_eq!(check_pull(&h, 0), Ok(()));
        assert_eq!(check_pull(&h, 5), Ok(()));
    }
}
