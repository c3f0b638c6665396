//! The commit decision against arbitrary stored states and requests.
//!
//! A store reads the head and each id's current version inside its write transaction and then
//! writes exactly what [`plan_push`] says, so the plan is the last word on which seqs exist.
//! The state is one a store can hold (every seq at most `last_seq`, the horizon too, seqs fit
//! the signed 64-bit SQL columns); the request is anything the push parser lets through
//! (unique ids, any `since` and `base_seq`).

use crate::input;
use arbitrary::{Result, Unstructured};
use sync_core::commit::{plan_push, Plan, Stored, Writer};
use sync_core::hash::data_hash;
use sync_core::push::{Change, ConflictReason, PushObject};
use sync_core::{check_pull, decide_push, Current, Decision, Head, PushRequest};

/// Runs one input; panics if a promise is broken.
pub fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(case) = Case::arbitrary(&mut u) else {
        return;
    };
    case.check();
}

/// One stored state, one batch, one writer, and one pull.
#[derive(Debug)]
struct Case {
    head: Head,
    request: PushRequest,
    stored: Vec<Option<Stored>>,
    user: &'static str,
    creator_only: bool,
    pull_since: u64,
    pull_horizon: Option<u64>,
}

/// The highest seq a SQL store can hold.
const MAX_STORED_SEQ: u64 = i64::MAX as u64;

impl Case {
    fn arbitrary(u: &mut Unstructured<'_>) -> Result<Case> {
        let last_seq = if u.ratio(1u8, 16)? {
            MAX_STORED_SEQ - u.int_in_range(0..=3)?
        } else {
            u.int_in_range(0..=12)?
        };
        // A collection that was never written has no epoch and no seqs.
        let collection_id = if last_seq == 0 && u.arbitrary()? {
            None
        } else {
            Some(input::EPOCHS[0].to_string())
        };
        let head = Head {
            collection_id,
            last_seq,
            horizon: u.int_in_range(0..=last_seq)?,
        };
        let mut ids: Vec<&str> = input::IDS.to_vec();
        let count = u.int_in_range(0..=ids.len())?;
        let mut objects = Vec::new();
        let mut stored = Vec::new();
        for _ in 0..count {
            let id = ids.remove(u.choose_index(ids.len())?);
            objects.push(PushObject {
                id: id.to_string(),
                kind: input::kind(u)?.to_string(),
                base_seq: if u.ratio(1u8, 5)? {
                    None
                } else {
                    Some(input::seq(u)?)
                },
                change: input::change(u)?,
            });
            stored.push(if last_seq > 0 && u.arbitrary()? {
                Some(Stored {
                    current: Current {
                        seq: u.int_in_range(1..=last_seq)?,
                        deleted: u.arbitrary()?,
                    },
                    author: if u.arbitrary()? {
                        Some(u.choose(&input::USERS)?.to_string())
                    } else {
                        None
                    },
                })
            } else {
                None
            });
        }
        let request = PushRequest {
            collection_id: input::epoch(u)?.map(str::to_string),
            since: if u.arbitrary()? {
                Some(input::seq(u)?)
            } else {
                None
            },
            push_id: None,
            objects,
        };
        Ok(Case {
            head,
            request,
            stored,
            user: u.choose(&input::USERS)?,
            creator_only: u.arbitrary()?,
            pull_since: input::seq(u)?,
            pull_horizon: if u.arbitrary()? {
                Some(input::seq(u)?)
            } else {
                None
            },
        })
    }

    fn check(&self) {
        let current: Vec<Option<Current>> = self
            .stored
            .iter()
            .map(|s| s.as_ref().map(|s| s.current))
            .collect();
        let decision = decide_push(&self.head, &self.request, &current);
        self.check_decision(&decision, &current);
        let writer = Writer {
            user: self.user,
            creator_only: self.creator_only,
        };
        let plan = plan_push(&self.head, &self.request, &self.stored, writer);
        self.check_plan(&plan, &decision);
        self.check_pull();
    }

    /// Whether the request's epoch or cursor is one the head cannot answer.
    fn must_reset(&self) -> bool {
        let head = &self.head;
        let wrong_epoch = self
            .request
            .collection_id
            .as_ref()
            .is_some_and(|cid| head.collection_id.as_ref() != Some(cid));
        let bad_cursor = self
            .request
            .since
            .is_some_and(|since| since != 0 && (since > head.last_seq || since < head.horizon));
        wrong_epoch || bad_cursor
    }

    fn check_decision(&self, decision: &Decision, current: &[Option<Current>]) {
        let stale = |i: usize| {
            let base = self.request.objects[i].base_seq;
            base.is_some_and(|base| match current[i] {
                None => base != 0,
                Some(c) => base != c.seq && !(base == 0 && c.deleted),
            })
        };
        let changed = self
            .request
            .since
            .is_some_and(|since| since < self.head.last_seq);
        let n = self.request.objects.len();
        match decision {
            Decision::ResetRequired => assert!(self.must_reset(), "{self:#?}"),
            Decision::Commit { first_seq } => {
                assert!(!self.must_reset(), "{self:#?}");
                assert_eq!(
                    *first_seq,
                    self.head.last_seq + 1,
                    "seqs go on from the head"
                );
                assert!(!(0..n).any(stale), "a stale base was committed: {self:#?}");
                assert!(
                    !changed || n == 0,
                    "committed over changes after since: {self:#?}"
                );
            }
            Decision::Conflicts(list) => {
                assert!(!self.must_reset(), "{self:#?}");
                assert!(!list.is_empty(), "no conflicts must mean a commit");
                assert!(
                    list.windows(2).all(|w| w[0].0 < w[1].0),
                    "by index, once each"
                );
                let listed: Vec<usize> = list.iter().map(|(i, _)| *i).collect();
                for i in 0..n {
                    let expected = if stale(i) {
                        Some(ConflictReason::StaleBase)
                    } else if changed {
                        Some(ConflictReason::CollectionChanged)
                    } else {
                        None
                    };
                    let got = listed.iter().position(|&at| at == i).map(|at| list[at].1);
                    assert_eq!(got, expected, "object {i}: {self:#?}");
                }
            }
        }
    }

    fn check_plan(&self, plan: &Plan, decision: &Decision) {
        match plan {
            Plan::NotAuthor(indexes) => {
                assert!(self.creator_only, "only creators are held to authorship");
                assert!(!indexes.is_empty());
                assert!(indexes.windows(2).all(|w| w[0] < w[1]));
                for &i in indexes {
                    let stored = self.stored[i].as_ref().expect("someone else's object");
                    assert!(!stored.current.deleted, "a tombstone may be recreated");
                    assert_ne!(stored.author.as_deref(), Some(self.user));
                }
                return;
            }
            Plan::ResetRequired => assert_eq!(decision, &Decision::ResetRequired),
            Plan::Conflicts(list) => assert_eq!(decision, &Decision::Conflicts(list.clone())),
            Plan::Commit(rows) => {
                assert!(matches!(decision, Decision::Commit { .. }));
                self.check_rows(rows);
            }
        }
        if self.creator_only {
            // Not refused: every object is new, a tombstone, or the writer's own.
            for s in self.stored.iter().flatten() {
                assert!(s.current.deleted || s.author.as_deref() == Some(self.user));
            }
        }
    }

    /// The rows of a commit: one per object, in order, at consecutive seqs after the head.
    fn check_rows(&self, rows: &[sync_core::Object]) {
        assert_eq!(rows.len(), self.request.objects.len());
        for (i, (row, object)) in rows.iter().zip(&self.request.objects).enumerate() {
            assert_eq!(
                row.seq,
                self.head.last_seq + 1 + i as u64,
                "contiguous seqs"
            );
            assert_eq!((&row.id, &row.kind), (&object.id, &object.kind));
            match &object.change {
                Change::Put { data, expires } => {
                    assert!(!row.deleted);
                    assert_eq!(row.data.as_ref(), Some(data));
                    assert_eq!(row.expires, *expires);
                    assert_eq!(row.hash.as_deref(), Some(data_hash(data.as_str()).as_str()));
                }
                Change::Delete => {
                    assert!(row.deleted && row.data.is_none() && row.hash.is_none());
                    assert_eq!(row.expires, None);
                }
            }
            let creator = match &self.stored[i] {
                Some(Stored {
                    current: Current { deleted: false, .. },
                    author: Some(author),
                }) => author.as_str(),
                _ => self.user,
            };
            assert_eq!(row.author.as_deref(), Some(creator), "authorship is kept");
        }
    }

    /// A pull is answered incrementally exactly when no delete it needs can have been purged.
    fn check_pull(&self) {
        let head = &self.head;
        let (since, echoed) = (self.pull_since, self.pull_horizon);
        let answerable = check_pull(head, since, echoed).is_ok();
        if since == 0 {
            assert!(answerable, "a pull from 0 needs nothing purged");
        } else if since > head.last_seq {
            assert!(
                !answerable,
                "a cursor from the future is from another epoch"
            );
        } else if since >= head.horizon {
            assert!(answerable, "every delete after since is still there");
        } else {
            assert_eq!(
                answerable,
                echoed == Some(head.horizon),
                "below the horizon only a full sync that began at this horizon goes on"
            );
        }
    }
}
