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
        check_pull(&self.head, query.since).map_err(|_| self.reset_answer())?;
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
    /// them), then tombstones older than the retention window are purged and the horizon moves.
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
        let cutoff = horizon::purge_before(now_ms, retention_ms);
        let purged: Vec<(String, u64)> = self
            .objects
            .iter()
            .filter(|(_, (o, written))| o.deleted && *written < cutoff)
            .map(|(id, (o, _))| (id.clone(), o.seq))
            .collect();
        let max_purged = purged.iter().map(|(_, seq)| *seq).max();
        for (id, seq) in purged {
            self.objects.remove(&id);
            self.by_seq.remove(&seq);
        }
        self.head.horizon = horizon::horizon_after_purge(self.head.horizon, max_purged);
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
