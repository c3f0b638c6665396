//! The commit decision: may this batch be committed, and at which seqs?
//!
//! A pure function of what a store read inside its write transaction (the collection head and
//! the current seq of each id in the batch). Every store calls it under the lock that serialises
//! writers of the collection, then writes exactly what it decided. That is what makes seqs
//! gap-free and batches atomic in every backend alike.

use crate::acl::{author_after_write, check_authorship, Authored};
use crate::horizon::since_is_answerable;
use crate::object::Object;
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
    // No client horizon: a replica pushes only after paging ends, at a cursor at or above the
    // horizon, and a push below it could not be told which deletes it is missing.
    if let Some(since) = request.since {
        if !since_is_answerable(since, head.horizon, head.last_seq, None) {
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

/// The stored state of one id of the batch, with its author (for stores with sharing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Seq and tombstone flag.
    pub current: Current,
    /// Who created it, if recorded.
    pub author: Option<String>,
}

/// Who writes a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writer<'a> {
    /// The caller, recorded as the author of what they create.
    pub user: &'a str,
    /// A creator may only create objects or change their own ([`crate::acl`]).
    pub creator_only: bool,
}

/// What a store should do with a batch, down to the rows to write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Plan {
    /// Write these objects (their seqs are consecutive from `last_seq + 1`), and move
    /// `last_seq` to the last one.
    Commit(Vec<Object>),
    /// Write nothing: these objects (by batch index) conflict.
    Conflicts(Vec<(usize, ConflictReason)>),
    /// Write nothing: the client must resync from 0.
    ResetRequired,
    /// Write nothing: a creator tried to change objects someone else created (batch indexes).
    NotAuthor(Vec<usize>),
}

/// Plans a push: authorship first (a creator learns nothing about conflicts on objects that
/// are not theirs), then [`decide_push`], then the exact rows, with hashes and authors.
///
/// # Panics
///
/// If `stored` and `request.objects` differ in length: that is a bug in the store.
pub fn plan_push(
    head: &Head,
    request: &PushRequest,
    stored: &[Option<Stored>],
    writer: Writer<'_>,
) -> Plan {
    let authored: Vec<Option<Authored<'_>>> = stored
        .iter()
        .map(|s| {
            s.as_ref().map(|s| Authored {
                author: s.author.as_deref(),
                deleted: s.current.deleted,
            })
        })
        .collect();
    if writer.creator_only {
        let not_theirs = check_authorship(writer.user, request, &authored);
        if !not_theirs.is_empty() {
            return Plan::NotAuthor(not_theirs);
        }
    }
    let current: Vec<Option<Current>> = stored
        .iter()
        .map(|s| s.as_ref().map(|s| s.current))
        .collect();
    match decide_push(head, request, &current) {
        Decision::ResetRequired => Plan::ResetRequired,
        Decision::Conflicts(list) => Plan::Conflicts(list),
        Decision::Commit { first_seq } => Plan::Commit(
            request
                .objects
                .iter()
                .zip(authored)
                .enumerate()
                .map(|(i, (object, authored))| {
                    let mut row = object.to_object(first_seq + i as u64);
                    row.author = Some(author_after_write(writer.user, authored));
                    row
                })
                .collect(),
        ),
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

/// Decides whether a pull from `since` can be answered, or must reset. `client_horizon` is the
/// query's `horizon`, echoed by a client paging through a full sync
/// ([`since_is_answerable`]).
pub fn check_pull(
    head: &Head,
    since: u64,
    client_horizon: Option<u64>,
) -> Result<(), ResetRequired> {
    if since_is_answerable(since, head.horizon, head.last_seq, client_horizon) {
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
        assert_eq!(check_pull(&h, 4, None), Err(ResetRequired));
        assert_eq!(check_pull(&h, 0, None), Ok(()));
        assert_eq!(check_pull(&h, 5, None), Ok(()));
    }

    #[test]
    fn a_pull_below_the_horizon_goes_on_with_the_same_horizon() {
        let mut h = head(10);
        h.horizon = 5;
        assert_eq!(check_pull(&h, 2, Some(5)), Ok(()));
        assert_eq!(check_pull(&h, 2, Some(3)), Err(ResetRequired));
        assert_eq!(check_pull(&h, 11, Some(5)), Err(ResetRequired));
    }

    #[test]
    fn a_push_below_the_horizon_resets_whatever_the_client_saw() {
        let mut h = head(10);
        h.horizon = 5;
        let below = PushRequest {
            since: Some(2),
            ..Default::default()
        };
        assert_eq!(decide_push(&h, &below, &[]), Decision::ResetRequired);
    }

    #[test]
    fn a_plan_carries_rows_with_hashes_and_authors() {
        let req = PushRequest {
            objects: vec![put("a", Some(0)), put("b", Some(3))],
            ..Default::default()
        };
        let stored = [
            None,
            Some(Stored {
                current: Current {
                    seq: 3,
                    deleted: false,
                },
                author: Some("ann".to_string()),
            }),
        ];
        let writer = Writer {
            user: "bob",
            creator_only: false,
        };
        let Plan::Commit(rows) = plan_push(&head(10), &req, &stored, writer) else {
            panic!("expected a commit")
        };
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [11, 12]);
        assert_eq!(rows[0].author.as_deref(), Some("bob"));
        assert_eq!(
            rows[1].author.as_deref(),
            Some("ann"),
            "an update keeps the creator"
        );
        assert_eq!(
            rows[0].hash.as_deref(),
            Some(crate::hash::data_hash("1").as_str())
        );
    }

    #[test]
    fn a_creator_is_stopped_before_conflicts_are_revealed() {
        let req = PushRequest {
            since: Some(1),
            objects: vec![put("theirs", Some(1))],
            ..Default::default()
        };
        let stored = [Some(Stored {
            current: Current {
                seq: 9,
                deleted: false,
            },
            author: Some("ann".to_string()),
        })];
        let writer = Writer {
            user: "cy",
            creator_only: true,
        };
        assert_eq!(
            plan_push(&head(10), &req, &stored, writer),
            Plan::NotAuthor(vec![0])
        );
        let owner = Writer {
            user: "ann",
            creator_only: false,
        };
        assert!(matches!(
            plan_push(&head(10), &req, &stored, owner),
            Plan::Conflicts(_)
        ));
    }
}
