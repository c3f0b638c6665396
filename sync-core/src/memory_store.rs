//! An in-memory reference implementation of one collection of the server's contract.
//!
//! It is what the tests drive replicas against, and it is written to be read: every rule it
//! applies comes from [`crate::commit`], [`crate::horizon`] and [`crate::pull`], exactly as the
//! real stores apply them, with none of their concerns (SQL, fsync, group commit).

use crate::commit::{check_pull, decide_push, Current, Decision, Head};
use crate::error::ErrorCode;
use crate::horizon;
use crate::object::Object;
use crate::pull::{PullAnswer, PullQuery};
use crate::push::{Conflict, ConflictAnswer, PushOk, PushRequest, ResetAnswer};
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// One collection, held in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryCollection {
    head: Head,
    /// The latest version of each id, with the time it was written (for retention).
    objects: BTreeMap<String, (Object, u64)>,
    /// seq → id, for reading in seq order.
    by_seq: BTreeMap<u64, String>,
    /// Committed answers by `push_id`, for replays.
    pushes: BTreeMap<String, PushOk>,
    /// How many objects a 409 carries in `changes`.
    page_limit: usize,
}

/// The outcome of a push against the reference store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// `200`.
    Committed(PushOk),
    /// `409`.
    Conflict(ConflictAnswer),
    /// `410`.
    Reset(ResetAnswer),
}

impl MemoryCollection {
    /// An empty, never-written collection whose conflict answers carry up to `page_limit`
    /// changes.
    pub fn new(page_limit: usize) -> MemoryCollection {
        MemoryCollection {
            page_limit: page_limit.max(1),
            ..MemoryCollection::default()
        }
    }

    /// The head row.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Every stored version (live objects and tombstones), in seq order.
    pub fn objects(&self) -> impl Iterator<Item = &Object> {
        self.by_seq.values().map(|id| &self.objects[id].0)
    }

    /// `GET …/{collection}?since&limit&type|exclude`.
    pub fn pull(&self, query: &PullQuery) -> Result<PullAnswer, ResetAnswer> {
        check_pull(&self.head, query.since, query.horizon).map_err(|_| self.reset_answer())?;
        let fetched = self
            .by_seq
            .range(query.since + 1..)
            .map(|(_, id)| &self.objects[id].0)
            .filter(|o| query.wants(&o.kind))
            .take(query.limit + 1)
            .cloned()
            .collect();
        Ok(PullAnswer::page(
            self.head.collection_id.clone(),
            query.since,
            self.head.horizon,
            self.head.last_seq,
            query.limit,
            fetched,
        ))
    }

    /// `POST …/{collection}`. `new_epoch` supplies the `collection_id` if this push creates
    /// the collection (the core has no randomness of its own).
    pub fn push(
        &mut self,
        request: &PushRequest,
        now_ms: u64,
        new_epoch: impl FnOnce() -> String,
    ) -> PushOutcome {
        if let Some(first) = request.push_id.as_ref().and_then(|p| self.pushes.get(p)) {
            return PushOutcome::Committed(PushOk {
                replayed: true,
                ..first.clone()
            });
        }
        let current: Vec<Option<Current>> = request
            .objects
            .iter()
            .map(|o| {
                self.objects.get(&o.id).map(|(s, _)| Current {
                    seq: s.seq,
                    deleted: s.deleted,
                })
            })
            .collect();
        match decide_push(&self.head, request, &current) {
            Decision::ResetRequired => PushOutcome::Reset(self.reset_answer()),
            Decision::Conflicts(list) => {
                let conflicts = list
                    .into_iter()
                    .map(|(index, reason)| {
                        let id = &request.objects[index].id;
                        Conflict {
                            id: id.clone(),
                            reason,
                            server: self.objects.get(id).map(|(o, _)| o.clone()),
                        }
                    })
                    .collect();
                let (changes, until, more) = match request.since {
                    Some(since) => {
                        let page = self.pull(&PullQuery {
                            since,
                            limit: self.page_limit,
                            ..PullQuery::default()
                        });
                        let page = page.expect("since was checked by decide_push");
                        (page.objects, page.until, page.more)
                    }
                    None => (Vec::new(), 0, false),
                };
                PushOutcome::Conflict(ConflictAnswer {
                    error: ErrorCode::Conflict,
                    message: "the batch conflicts with newer changes; nothing was applied"
                        .to_string(),
                    collection_id: self.head.collection_id.clone(),
                    until,
                    conflicts,
                    changes,
                    more,
                })
            }
            Decision::Commit { first_seq } => {
                let collection_id = self
                    .head
                    .collection_id
                    .get_or_insert_with(new_epoch)
                    .clone();
                let mut seqs = Vec::with_capacity(request.objects.len());
                for (i, object) in request.objects.iter().enumerate() {
                    let seq = first_seq + i as u64;
                    if let Some((old, _)) = self.objects.remove(&object.id) {
                        self.by_seq.remove(&old.seq);
                    }
                    self.by_seq.insert(seq, object.id.clone());
                    self.objects
                        .insert(object.id.clone(), (object.to_object(seq), now_ms));
                    seqs.push(seq);
                }
                self.head.last_seq = first_seq - 1 + request.objects.len() as u64;
                let ok = PushOk {
                    collection_id,
                    seqs,
                    until: self.head.last_seq,
                    replayed: false,
                };
                if let Some(push_id) = &request.push_id {
                    self.pushes.insert(push_id.clone(), ok.clone());
                }
                PushOutcome::Committed(ok)
            }
        }
    }

    /// `DELETE …/{collection}`: everything goes, the epoch changes, and every cursor of the old
    /// epoch is below the new horizon. Seqs keep counting up, so an old cursor can never be
    /// mistaken for a position in the new epoch.
    pub fn reset(&mut self, new_epoch: String) {
        self.objects.clear();
        self.by_seq.clear();
        self.pushes.clear();
        self.head.collection_id = Some(new_epoch);
        self.head.horizon = self.head.last_seq;
    }

    /// The sweeper: expired objects become tombstones (each a new write, so clients hear of
    /// them), then tombstones older than the retention window are purged, with every younger
    /// tombstone below the highest of them, and the horizon moves up to that one.
    pub fn sweep(&mut self, now_ms: u64, retention_ms: u64) {
        let expired: Vec<String> = self
            .by_seq
            .values()
            .filter(|id| {
                let (o, _) = &self.objects[*id];
                !o.deleted && horizon::is_expired(o.expires, now_ms)
            })
            .cloned()
            .collect();
        for id in expired {
            let (old, _) = self.objects.remove(&id).expect("listed above");
            self.by_seq.remove(&old.seq);
            self.head.last_seq += 1;
            let seq = self.head.last_seq;
            self.by_seq.insert(seq, id.clone());
            self.objects
                .insert(id, (Object::tombstone(old.id, old.kind, seq), now_ms));
        }
        // Every tombstone up to the highest old one goes, younger ones included, so that the
        // horizon moves whenever anything is purged ([`horizon::purge_up_to`]).
        let cutoff = horizon::purge_before(now_ms, retention_ms);
        let up_to = horizon::purge_up_to(
            self.objects
                .values()
                .filter(|(o, written)| o.deleted && *written < cutoff)
                .map(|(o, _)| o.seq),
        );
        let Some(up_to) = up_to else {
            return;
        };
        let purged: Vec<u64> = self
            .by_seq
            .range(..=up_to)
            .filter(|(_, id)| self.objects[*id].0.deleted)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in purged {
            let id = self.by_seq.remove(&seq).expect("listed above");
            self.objects.remove(&id);
        }
        self.head.horizon = horizon::horizon_after_purge(self.head.horizon, Some(up_to));
    }

    fn reset_answer(&self) -> ResetAnswer {
        ResetAnswer {
            error: ErrorCode::ResetRequired,
            message: "the cursor or collection_id is no longer valid; resync from since=0"
                .to_string(),
            collection_id: self.head.collection_id.clone(),
            horizon: self.head.horizon,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::JsonData;
    use crate::push::{Change, PushObject};
    use alloc::vec;

    /// Writes `id` over whatever is there, at `now_ms`; returns its seq.
    fn write(store: &mut MemoryCollection, id: &str, change: Change, now_ms: u64) -> u64 {
        let request = PushRequest {
            objects: vec![PushObject {
                id: id.to_string(),
                kind: String::new(),
                base_seq: None,
                change,
            }],
            ..PushRequest::default()
        };
        match store.push(&request, now_ms, || "e1".to_string()) {
            PushOutcome::Committed(ok) => ok.seqs[0],
            other => panic!("{other:?}"),
        }
    }

    fn put() -> Change {
        Change::Put {
            data: JsonData::parse("1").unwrap(),
            expires: None,
        }
    }

    fn seqs(store: &MemoryCollection) -> Vec<u64> {
        store.objects().map(|o| o.seq).collect()
    }

    fn pull(store: &MemoryCollection, since: u64, horizon: Option<u64>) -> Option<PullAnswer> {
        let query = PullQuery {
            since,
            limit: 2,
            horizon,
            ..PullQuery::default()
        };
        store.pull(&query).ok()
    }

    #[test]
    fn a_purge_takes_younger_tombstones_below_the_highest_old_one() {
        let mut store = MemoryCollection::new(3);
        write(&mut store, "young", put(), 0);
        // A clock step back: the later delete carries the older timestamp.
        assert_eq!(write(&mut store, "young", Change::Delete, 50), 2);
        write(&mut store, "old", put(), 0);
        assert_eq!(write(&mut store, "old", Change::Delete, 10), 4);
        write(&mut store, "live", put(), 60);
        write(&mut store, "newer", put(), 0);
        assert_eq!(write(&mut store, "newer", Change::Delete, 55), 7);

        store.sweep(30, 10);
        assert_eq!(store.head().horizon, 4);
        assert_eq!(
            seqs(&store),
            [5, 7],
            "the young tombstone at 2 went with the old one at 4; the one at 7 stays"
        );
    }

    #[test]
    fn every_purge_moves_the_horizon_up() {
        let mut store = MemoryCollection::new(3);
        write(&mut store, "a", put(), 0);
        write(&mut store, "a", Change::Delete, 0);
        store.sweep(100, 10);
        assert_eq!((store.head().horizon, seqs(&store)), (2, vec![]));
        store.sweep(200, 10);
        assert_eq!(store.head().horizon, 2, "nothing purged, nothing moved");
        write(&mut store, "b", put(), 150);
        write(&mut store, "b", Change::Delete, 300);
        store.sweep(305, 10);
        assert_eq!(store.head().horizon, 2, "too young");
        store.sweep(400, 10);
        assert_eq!((store.head().horizon, seqs(&store)), (4, vec![]));
    }

    #[test]
    fn a_full_sync_pages_past_the_horizon_while_it_holds() {
        let mut store = MemoryCollection::new(3);
        for id in ["a", "b", "c", "d", "e"] {
            write(&mut store, id, put(), 0);
        }
        write(&mut store, "gone", put(), 0);
        write(&mut store, "gone", Change::Delete, 0);
        store.sweep(100, 10);
        assert_eq!(store.head().horizon, 7);

        let first = pull(&store, 0, None).unwrap();
        assert_eq!((first.until, first.more, first.horizon), (2, true, 7));
        assert!(
            pull(&store, 2, None).is_none(),
            "below the horizon, no echo"
        );
        let second = pull(&store, 2, Some(7)).unwrap();
        assert_eq!((second.until, second.more), (4, true));

        // A delete after the first page, purged: the horizon moves and the echo no longer
        // holds, so the client cannot miss it.
        write(&mut store, "a", Change::Delete, 100);
        store.sweep(200, 10);
        assert_eq!(store.head().horizon, 8);
        assert!(pull(&store, 4, Some(7)).is_none());
        assert!(pull(&store, 0, None).is_some());
    }
}
