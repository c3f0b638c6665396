//! The replica state machine, fed arbitrary server answers.
//!
//! The check plays the application around a [`Replica`]: it makes local edits, starts cycles,
//! takes requests, answers them with whatever the bytes say (pages at the wrong cursor,
//! conflicts naming ids that were never pushed, seqs that do not fit, other epochs, errors),
//! resolves conflicts, and restarts the replica from what it persisted. After every step it
//! drains [`Replica::poll_event`] the way the glue does and checks that:
//!
//! - nothing panics, and every request fits the replica's state (pulls from the cursor, pushes
//!   of pending edits that read back from their own JSON, a `push_id` never reused for a
//!   different push);
//! - the cursor the replica holds is the one its events handed over, and it only goes back
//!   through a `Reset`;
//! - **the cursor never passes data it has not handed to the glue**: every version an accepted
//!   answer carried above the cursor is, once the cursor reaches its seq, either handed over
//!   (`Received`, `Saved`, or the server side of a `Conflict`) or superseded by a pending edit
//!   based on it;
//! - `Received` never carries an object the replica still has a pending edit of, and `Saved`
//!   moves the cursor only over the seqs it reports.

use crate::input;
use arbitrary::{Result, Unstructured};
use std::collections::{BTreeMap, BTreeSet};
use sync_core::error::ErrorCode;
use sync_core::object::Object;
use sync_core::push::{Change, Conflict, ConflictAnswer, ConflictReason, PushOk, ResetAnswer};
use sync_core::replica::{check_change, ResponseError};
use sync_core::{
    Config, ConflictOutcome, ConflictPolicy, Failure, Limits, PendingChange, PullAnswer,
    PushObject, PushRequest, Replica, ReplicaEvent, ReplicaState, Request, Resolution, Response,
};

/// Runs one input; panics if a promise is broken.
pub fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(mut run) = Run::new(&mut u) else {
        return;
    };
    // Running out of bytes simply ends the run.
    let _ = run.steps(&mut u);
}

/// The application around one replica, and what it has been handed.
struct Run {
    replica: Replica,
    /// What the application persisted: the state of the last event, or of the last push taken.
    persisted: ReplicaState,
    /// The request out, if any.
    outstanding: Option<Request>,
    /// Per id, the highest seq handed to the application since the last reset.
    handed: BTreeMap<String, u64>,
    /// Versions accepted answers carried above the cursor, not yet handed over.
    owed: Vec<(String, u64)>,
    /// Every push sent, by `push_id`.
    pushes: BTreeMap<String, PushRequest>,
    /// Print every step and event (`TIDEMARK_FUZZ_TRACE=1`), to read a failing input.
    trace: bool,
}

impl Run {
    fn new(u: &mut Unstructured<'_>) -> Result<Run> {
        let config = Config {
            pull_limit: u.int_in_range(1..=4)?,
            max_batch: u.int_in_range(0..=3)?,
            max_rounds: u.int_in_range(0..=4)?,
            policy: *u.choose(&[
                ConflictPolicy::Manual,
                ConflictPolicy::ServerWins,
                ConflictPolicy::LocalWins,
            ])?,
        };
        let mut pushes = BTreeMap::new();
        let replica = if u.arbitrary()? {
            Replica::new("c", config)
        } else {
            let in_flight = if u.arbitrary()? {
                let push = arbitrary_push(u, "c:0")?;
                pushes.insert("c:0".to_string(), push.clone());
                Some(push)
            } else {
                None
            };
            let state = ReplicaState {
                client_id: "c".to_string(),
                collection_id: input::epoch(u)?.map(str::to_string),
                cursor: input::seq(u)?,
                next_push_number: u.int_in_range(1..=3)?,
                in_flight,
                paging_horizon: if u.arbitrary()? {
                    Some(input::seq(u)?)
                } else {
                    None
                },
            };
            let mut replica = Replica::restore(state, config);
            for _ in 0..u.int_in_range(0..=3)? {
                let pending = PendingChange {
                    kind: input::kind(u)?.to_string(),
                    change: input::change(u)?,
                    base_seq: input::seq(u)?,
                };
                let refused = check_change(&pending.change).is_err();
                let result = replica.add_pending(input::id(u)?, pending);
                assert_eq!(result.is_err(), refused, "{result:?}");
            }
            replica
        };
        Ok(Run {
            persisted: replica.state(),
            replica,
            outstanding: None,
            handed: BTreeMap::new(),
            owed: Vec::new(),
            pushes,
            trace: std::env::var_os("TIDEMARK_FUZZ_TRACE").is_some(),
        })
    }

    fn steps(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        for _ in 0..256 {
            if u.is_empty() {
                break;
            }
            let mut answer_owed = Vec::new();
            match u.int_in_range(0u8..=9)? {
                0 | 1 => {
                    let (id, kind, change, base) = (
                        input::id(u)?,
                        input::kind(u)?,
                        input::change(u)?,
                        input::seq(u)?,
                    );
                    let refused = check_change(&change).is_err();
                    let result = self.replica.local_change(id, kind, change, base);
                    assert_eq!(result.is_err(), refused, "{result:?}");
                }
                2 => {
                    if self.trace {
                        eprintln!("start_sync; pending {:?}", self.replica.pending());
                    }
                    self.replica.start_sync()
                }
                3 | 4 => self.take_request(),
                5..=7 => answer_owed = self.answer(u)?,
                8 => self.resolve(u)?,
                _ => self.restart(),
            }
            self.drain(answer_owed);
        }
        Ok(())
    }

    fn take_request(&mut self) {
        let request = self.replica.poll_request();
        if self.outstanding.is_some() {
            assert_eq!(request, None, "one request at a time");
        }
        let Some(request) = request else { return };
        if self.trace {
            eprintln!("request {request:?}");
        }
        match &request {
            Request::Pull {
                since,
                limit,
                horizon,
            } => {
                assert_eq!(*since, self.replica.cursor(), "a pull starts at the cursor");
                assert_eq!(*limit, self.replica.config().pull_limit);
                assert!(horizon.is_none_or(|h| (1..h).contains(since)));
            }
            Request::Push(push) => self.check_push(push),
        }
        self.outstanding = Some(request);
    }

    fn check_push(&mut self, push: &PushRequest) {
        assert_eq!(
            self.replica.in_flight(),
            Some(push),
            "a push is in flight once sent"
        );
        let push_id = push.push_id.clone().expect("every push has a push_id");
        if let Some(earlier) = self.pushes.insert(push_id, push.clone()) {
            assert_eq!(&earlier, push, "a push_id is never used for two pushes");
        } else {
            // A new push: the pending edits, as they are, from the cursor.
            assert!(!push.objects.is_empty());
            assert!(push.objects.len() <= self.replica.config().max_batch.max(1));
            assert_eq!(push.since, Some(self.replica.cursor()));
            assert_eq!(push.collection_id.as_deref(), self.replica.collection_id());
            for object in &push.objects {
                let pending = &self.replica.pending()[&object.id];
                assert_eq!(
                    (&object.kind, &object.change, object.base_seq),
                    (&pending.kind, &pending.change, Some(pending.base_seq))
                );
            }
        }
        let unlimited = Limits {
            max_body_bytes: usize::MAX,
            max_batch: usize::MAX,
            max_object_bytes: usize::MAX,
            max_pull_limit: usize::MAX,
        };
        assert_eq!(
            PushRequest::parse(push.to_json().as_bytes(), &unlimited).as_ref(),
            Ok(push),
            "the push reads back from its wire form"
        );
        // The application persists the state before it sends a push.
        self.persisted = self.replica.state();
    }

    /// Answers the outstanding request (or none: then the replica must refuse the answer).
    /// Returns the versions the answer carries above the cursor.
    fn answer(&mut self, u: &mut Unstructured<'_>) -> Result<Vec<(String, u64)>> {
        let cursor = self.replica.cursor();
        let response = match &self.outstanding {
            Some(Request::Pull { since, limit, .. }) if u.ratio(5u8, 6)? => {
                Response::Pulled(self.page(u, *since, *limit)?)
            }
            Some(Request::Push(push)) if u.ratio(5u8, 6)? => match u.int_in_range(0u8..=2)? {
                0 => Response::Pushed(self.push_ok(u, push)?),
                1 => Response::Conflict(self.conflict(u, push)?),
                _ => Response::ResetRequired(ResetAnswer {
                    error: ErrorCode::ResetRequired,
                    message: String::new(),
                    collection_id: self.epoch(u)?,
                    horizon: input::seq(u)?,
                }),
            },
            _ => self.any_response(u)?,
        };
        let mut owed = Vec::new();
        let mut carried = |o: &Object| {
            if o.seq > cursor {
                owed.push((o.id.clone(), o.seq));
            }
        };
        match &response {
            Response::Pulled(page) => page.objects.iter().for_each(&mut carried),
            Response::Conflict(answer) => {
                answer.changes.iter().for_each(&mut carried);
                // A `collection_changed` conflict's version is the one the edit is based on,
                // not news. A version above `until` while more follow is the next pages' to
                // bring (the replica decides it there, once).
                answer
                    .conflicts
                    .iter()
                    .filter(|c| c.reason == ConflictReason::StaleBase)
                    .filter_map(|c| c.server.as_ref())
                    .filter(|o| !answer.more || o.seq <= answer.until)
                    .for_each(&mut carried);
            }
            _ => {}
        }
        if self.trace {
            eprintln!("answer {response:?}");
        }
        let result = self.replica.handle_response(response);
        match self.outstanding.take() {
            Some(_) => assert_eq!(result, Ok(())),
            None => {
                assert_eq!(result, Err(ResponseError::NoRequestOutstanding));
                owed.clear();
            }
        }
        Ok(owed)
    }

    /// Mostly the current epoch, so that answers are accepted; sometimes another, or none.
    fn epoch(&self, u: &mut Unstructured<'_>) -> Result<Option<String>> {
        Ok(match (self.replica.collection_id(), u.ratio(3u8, 4)?) {
            (Some(known), true) => Some(known.to_string()),
            _ => input::epoch(u)?.map(str::to_string),
        })
    }

    fn page(&self, u: &mut Unstructured<'_>, since: u64, limit: usize) -> Result<PullAnswer> {
        let since = if u.ratio(7u8, 8)? {
            since
        } else {
            input::seq(u)?
        };
        let objects = objects_after(u, since, limit + 1)?;
        let last = objects.iter().map(|o| o.seq).max().unwrap_or(since);
        Ok(PullAnswer {
            collection_id: self.epoch(u)?,
            since,
            until: if u.ratio(7u8, 8)? {
                last.saturating_add(u.int_in_range(0..=2)?)
            } else {
                input::seq(u)?
            },
            more: u.ratio(1u8, 3)?,
            horizon: input::seq(u)?,
            objects,
        })
    }

    fn push_ok(&self, u: &mut Unstructured<'_>, push: &PushRequest) -> Result<PushOk> {
        let cursor = self.replica.cursor();
        let honest = u.ratio(3u8, 4)?;
        let first = if honest {
            cursor.saturating_add(1)
        } else {
            input::seq(u)?
        };
        let mut seqs: Vec<u64> = (0..push.objects.len() as u64)
            .map(|i| first.saturating_add(i))
            .collect();
        if !honest && u.arbitrary()? {
            seqs.pop();
        }
        Ok(PushOk {
            collection_id: self
                .epoch(u)?
                .unwrap_or_else(|| input::EPOCHS[0].to_string()),
            until: if honest {
                seqs.last().copied().unwrap_or(cursor)
            } else {
                input::seq(u)?
            },
            seqs,
            replayed: u.arbitrary()?,
        })
    }

    fn conflict(&self, u: &mut Unstructured<'_>, push: &PushRequest) -> Result<ConflictAnswer> {
        let cursor = self.replica.cursor();
        let mut conflicts = Vec::new();
        for object in &push.objects {
            if u.arbitrary()? {
                conflicts.push(Conflict {
                    id: object.id.clone(),
                    reason: *u
                        .choose(&[ConflictReason::StaleBase, ConflictReason::CollectionChanged])?,
                    server: if u.ratio(3u8, 4)? {
                        Some(object_with(&object.id, after(u, cursor)?, u)?)
                    } else {
                        None
                    },
                });
            }
        }
        if u.ratio(1u8, 6)? {
            // An id that was not pushed at all, sometimes with the version of yet another.
            let id = input::id(u)?;
            let server_id = if u.ratio(1u8, 4)? { input::id(u)? } else { id };
            conflicts.push(Conflict {
                id: id.to_string(),
                reason: ConflictReason::StaleBase,
                server: Some(object_with(server_id, after(u, cursor)?, u)?),
            });
        }
        let changes = objects_after(u, cursor, 4)?;
        let last = changes.iter().map(|o| o.seq).max().unwrap_or(cursor);
        Ok(ConflictAnswer {
            error: ErrorCode::Conflict,
            message: String::new(),
            collection_id: self.epoch(u)?,
            until: if u.ratio(7u8, 8)? {
                last
            } else {
                input::seq(u)?
            },
            conflicts,
            changes,
            more: u.ratio(1u8, 4)?,
        })
    }

    /// Any answer at all, including ones that do not fit the request.
    fn any_response(&self, u: &mut Unstructured<'_>) -> Result<Response> {
        let cursor = self.replica.cursor();
        Ok(match u.int_in_range(0u8..=4)? {
            0 => Response::Pulled(self.page(u, cursor, 2)?),
            1 => {
                let push = arbitrary_push(u, "x")?;
                Response::Pushed(self.push_ok(u, &push)?)
            }
            2 => {
                let push = arbitrary_push(u, "x")?;
                Response::Conflict(self.conflict(u, &push)?)
            }
            3 => Response::ResetRequired(ResetAnswer {
                error: ErrorCode::ResetRequired,
                message: String::new(),
                collection_id: self.epoch(u)?,
                horizon: input::seq(u)?,
            }),
            _ => Response::Failed(match u.int_in_range(0u8..=2)? {
                0 => Failure::Network,
                1 => Failure::Unauthorized,
                _ => Failure::Status {
                    status: *u.choose(&[400, 403, 409, 413, 429, 500, 503])?,
                    retry_after_ms: u.arbitrary()?,
                },
            }),
        })
    }

    fn resolve(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let waiting: Vec<String> = self
            .replica
            .awaiting_resolution()
            .map(str::to_string)
            .collect();
        let id = if !waiting.is_empty() && u.ratio(7u8, 8)? {
            u.choose(&waiting)?.clone()
        } else {
            input::id(u)?.to_string()
        };
        let resolution = match u.int_in_range(0u8..=2)? {
            0 => Resolution::KeepServer,
            1 => Resolution::KeepLocal,
            _ => Resolution::Merged(input::change(u)?),
        };
        let pushable = match &resolution {
            Resolution::Merged(change) => check_change(change).is_ok(),
            _ => true,
        };
        let result = self.replica.resolve(&id, resolution);
        assert_eq!(
            result.is_ok(),
            waiting.contains(&id) && pushable,
            "resolve {id:?}: {result:?}"
        );
        Ok(())
    }

    /// The application reloads: the replica comes back from what was persisted, with the
    /// pending edits from storage. An answer still out is lost.
    fn restart(&mut self) {
        let pending: Vec<(String, PendingChange)> = self
            .replica
            .pending()
            .iter()
            .map(|(id, change)| (id.clone(), change.clone()))
            .collect();
        self.replica = Replica::restore(self.persisted.clone(), self.replica.config().clone());
        for (id, change) in pending {
            self.replica.add_pending(id, change).expect("valid names");
        }
        self.outstanding = None;
        // What the old replica was told but had not handed over is above the persisted cursor
        // (see `drain`): the new one asks for it again, and owes only what it is told.
        self.owed.clear();
        if self.trace {
            eprintln!("restart from {:?}", self.persisted);
        }
    }

    /// Applies every event the way the glue does, then checks the cursor against what was
    /// handed over. `answer_owed` are the versions the answer of this step carried.
    fn drain(&mut self, answer_owed: Vec<(String, u64)>) {
        let mut answer_refused = false;
        let mut last_ended = None;
        while let Some(event) = self.replica.poll_event() {
            if self.trace {
                eprintln!("  event {event:?}");
            }
            last_ended = Some(matches!(
                event,
                ReplicaEvent::SyncDone { .. } | ReplicaEvent::SyncFailed { .. }
            ));
            match event {
                ReplicaEvent::Received { objects, state } => {
                    assert!(
                        objects.windows(2).all(|w| w[0].seq <= w[1].seq),
                        "seq order"
                    );
                    for object in &objects {
                        assert!(
                            !self.replica.pending().contains_key(&object.id),
                            "received {:?} over a pending edit",
                            object.id
                        );
                        self.hand(&object.id, object.seq);
                    }
                    self.persist(state);
                }
                ReplicaEvent::Saved { objects, state } => {
                    if state.cursor > self.persisted.cursor {
                        let seqs: BTreeSet<u64> = objects.iter().map(|o| o.seq).collect();
                        let moved = state.cursor - self.persisted.cursor;
                        assert!(
                            moved <= seqs.len() as u64,
                            "a push moved the cursor over others' seqs"
                        );
                        for seq in self.persisted.cursor + 1..=state.cursor {
                            assert!(seqs.contains(&seq), "the cursor passed seq {seq}, not ours");
                        }
                    }
                    for object in &objects {
                        self.hand(&object.id, object.seq);
                    }
                    self.persist(state);
                }
                ReplicaEvent::Reset {
                    epoch_changed,
                    state,
                } => {
                    assert_eq!(state.cursor, 0);
                    if epoch_changed {
                        assert_eq!(state.collection_id, None);
                    }
                    self.handed.clear();
                    self.owed.clear();
                    answer_refused = true;
                    self.persisted = state;
                }
                ReplicaEvent::Conflict {
                    id,
                    server,
                    outcome,
                    ..
                } => {
                    let expected = match self.replica.config().policy {
                        ConflictPolicy::Manual => ConflictOutcome::AwaitingResolution,
                        ConflictPolicy::ServerWins => ConflictOutcome::KeptServer,
                        ConflictPolicy::LocalWins => ConflictOutcome::KeptLocal,
                    };
                    assert_eq!(outcome, expected);
                    if let Some(server) = server {
                        self.hand(&id, server.seq);
                    }
                }
                ReplicaEvent::SyncDone { .. } => {
                    assert!(self.replica.pending().is_empty(), "done with edits pending")
                }
                ReplicaEvent::SyncFailed { failure } => {
                    if matches!(failure, Failure::Protocol(_)) {
                        answer_refused = true;
                    }
                }
            }
        }
        if last_ended == Some(true) {
            assert!(!self.replica.is_syncing());
            self.outstanding = None;
        }
        assert_eq!(
            self.replica.cursor(),
            self.persisted.cursor,
            "the cursor was handed over"
        );
        assert_eq!(
            self.replica.collection_id(),
            self.persisted.collection_id.as_deref()
        );
        if !answer_refused {
            self.owed.extend(answer_owed);
        }
        let cursor = self.persisted.cursor;
        let (handed, pending) = (&self.handed, self.replica.pending());
        self.owed.retain(|(id, seq)| {
            let done = handed.get(id).is_some_and(|h| h >= seq)
                || pending.get(id).is_some_and(|p| p.base_seq >= *seq);
            assert!(
                done || *seq > cursor,
                "the cursor ({cursor}) passed {id:?} at seq {seq}, never handed over"
            );
            !done
        });
    }

    fn hand(&mut self, id: &str, seq: u64) {
        let handed = self.handed.entry(id.to_string()).or_default();
        *handed = (*handed).max(seq);
    }

    /// Persists an event's state: the cursor moves back only through a reset.
    fn persist(&mut self, state: ReplicaState) {
        assert!(
            state.cursor >= self.persisted.cursor,
            "the cursor went back"
        );
        self.persisted = state;
    }
}

/// A seq above `floor`: mostly just above, so that versions follow each other.
fn after(u: &mut Unstructured<'_>, floor: u64) -> Result<u64> {
    Ok(if u.ratio(7u8, 8)? {
        floor.saturating_add(u.int_in_range(1..=4)?)
    } else {
        input::seq(u)?
    })
}

/// Up to `max` versions with seqs above `floor`, mostly in seq order.
fn objects_after(u: &mut Unstructured<'_>, floor: u64, max: usize) -> Result<Vec<Object>> {
    let mut objects = Vec::new();
    let mut seq = floor;
    for _ in 0..u.int_in_range(0..=max)? {
        seq = if u.ratio(7u8, 8)? {
            seq.saturating_add(u.int_in_range(1..=2)?)
        } else {
            input::seq(u)?
        };
        objects.push(object_with(input::id(u)?, seq, u)?);
    }
    Ok(objects)
}

fn object_with(id: &str, seq: u64, u: &mut Unstructured<'_>) -> Result<Object> {
    let kind = input::kind(u)?.to_string();
    Ok(match input::change(u)? {
        Change::Delete => Object::tombstone(id.to_string(), kind, seq),
        Change::Put { data, expires } => Object {
            id: id.to_string(),
            kind,
            seq,
            deleted: false,
            hash: Some(sync_core::hash::data_hash(data.as_str())),
            data: Some(data),
            expires,
            author: None,
        },
    })
}

/// A push that may not be the replica's: for answers to nothing, and restored states.
fn arbitrary_push(u: &mut Unstructured<'_>, push_id: &str) -> Result<PushRequest> {
    let mut ids: BTreeSet<&str> = BTreeSet::new();
    for _ in 0..u.int_in_range(1..=3)? {
        ids.insert(input::id(u)?);
    }
    let mut objects = Vec::new();
    for id in ids {
        objects.push(PushObject {
            id: id.to_string(),
            kind: input::kind(u)?.to_string(),
            base_seq: Some(input::seq(u)?),
            change: input::pushable_change(u)?,
        });
    }
    Ok(PushRequest {
        collection_id: input::epoch(u)?.map(str::to_string),
        since: Some(input::seq(u)?),
        push_id: Some(push_id.to_string()),
        objects,
    })
}
