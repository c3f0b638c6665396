//! The client replica: the state machine that keeps one collection of an app in step with the
//! server, for one client.
//!
//! Like the rest of the crate it performs no I/O. It never sends anything, never reads a clock
//! and never draws a random number: it says which request to send next, takes the answer, and
//! tells the application what to store. The caller (the browser glue, a test harness) moves the
//! bytes and owns the storage.
//!
//! # What it keeps
//!
//! - The **cursor**: every change up to this seq has been handed to the application.
//! - The **epoch** (`collection_id`) the cursor belongs to.
//! - The **paging horizon**: during a full sync (a run of pages from cursor 0), the horizon
//!   its first page carried. It goes out with every following page while the cursor is below
//!   it, so the server can go on answering below its horizon as long as nothing was purged
//!   in between.
//! - The **pending queue**: local edits the server has not acknowledged yet, each with the
//!   `base_seq` of the server version it was edited from.
//! - The **in-flight push**: the exact push last sent whose answer is not known. It is resent,
//!   byte for byte and with the same `push_id`, before anything else, so a push whose answer was
//!   lost is written once (the server replays the first answer).
//!
//! [`ReplicaState`] is the part the application persists. The pending queue is *not* in it: the
//! application already stores its pending edits with its data, and feeds them back with
//! [`Replica::add_pending`] after [`Replica::restore`].
//!
//! # Call order
//!
//! Inputs are [`Replica::local_put`], [`Replica::local_delete`], [`Replica::start_sync`],
//! [`Replica::handle_response`] and [`Replica::resolve`]. Outputs are
//! [`Replica::poll_request`] and [`Replica::poll_event`].
//!
//! 1. Create the replica with [`Replica::new`] on first run, or [`Replica::restore`] with the
//!    last persisted [`ReplicaState`]; after a restore, feed every pending edit from storage
//!    with [`Replica::add_pending`] *before* starting a sync.
//! 2. Local edits may come at any time with [`Replica::local_put`] / [`Replica::local_delete`].
//! 3. [`Replica::start_sync`] begins a cycle. Then, until the cycle ends:
//!    - drain [`Replica::poll_event`] and apply every event, in order, **before** feeding
//!      further local edits (an event was decided against the pending queue as it was);
//!    - take the request from [`Replica::poll_request`]. If it is a [`Request::Push`], persist
//!      [`Replica::state`] *before* sending it: the state now records it as in flight, and a
//!      `push_id` must never be used for two different pushes;
//!    - send it and pass the answer (or the failure) to [`Replica::handle_response`]. Exactly
//!      one request is outstanding at a time;
//!    - for each [`ReplicaEvent::Conflict`] with [`ConflictOutcome::AwaitingResolution`] (the
//!      [`ConflictPolicy::Manual`] policy), call [`Replica::resolve`]. No request is issued
//!      while a conflict waits.
//! 4. The cycle ends with [`ReplicaEvent::SyncDone`] or [`ReplicaEvent::SyncFailed`]. Retrying
//!    (and when) is the caller's decision; the replica has no clock.
//!
//! # A cycle
//!
//! 1. Resend the in-flight push, if there is one.
//! 2. Pull pages from the cursor until `more` is false. A pulled object whose id has a pending
//!    edit is a conflict (someone else wrote it), unless both say the same thing. A run that
//!    starts from cursor 0 echoes its first page's `horizon` on the next pages (see
//!    [`ReplicaState::paging_horizon`]).
//! 3. Push the pending queue, up to `max_batch` objects a request, each with its `base_seq`,
//!    and the request with `since = cursor`. An accepted push therefore took exactly the seqs
//!    `cursor+1..=until`: the replica moves its cursor over them and never pulls its own
//!    writes back. A `409` brings the changes since the cursor; they are applied like a page,
//!    conflicts are resolved, and the push is tried again (at most `max_rounds` times).
//! 4. [`ReplicaEvent::SyncDone`].

use crate::json::{nesting_depth, MAX_DEPTH};
use crate::memory_store::PushOutcome;
use crate::names::{self, IdError};
use crate::object::Object;
use crate::pull::PullAnswer;
use crate::push::MAX_EXPIRES_MS;
use crate::push::{
    Change, ConflictAnswer, ConflictReason, Limits, PushObject, PushOk, PushRequest, ResetAnswer,
};
use crate::sorted_map::SortedMap;
use crate::JsonData;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// How a replica behaves; the server's `GET /v1/info` limits are a good source for the sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The `limit` of each pull.
    pub pull_limit: usize,
    /// The most objects in one push (at most the server's `max_batch`).
    pub max_batch: usize,
    /// How many conflict or reset answers one cycle accepts before it gives up with
    /// [`Failure::Contention`]. It bounds a cycle that keeps losing the race to other writers.
    pub max_rounds: u32,
    /// What happens when someone else wrote an object this replica has a pending edit of.
    pub policy: ConflictPolicy,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            pull_limit: 1000,
            max_batch: 100,
            max_rounds: 5,
            policy: ConflictPolicy::default(),
        }
    }
}

/// Who wins when a pending local edit meets a newer server version of the same object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConflictPolicy {
    /// Ask the application: emit [`ReplicaEvent::Conflict`] and wait for [`Replica::resolve`].
    Manual,
    /// Drop the local edit and keep the server's version.
    #[default]
    ServerWins,
    /// Keep the local edit and push it over the server's version.
    LocalWins,
}

/// What the application persists, in the same transaction as the data of the event that
/// carries it. The cursor therefore never gets ahead of the stored data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// This client's id. It prefixes every `push_id`, so it must be unique to this state: a new
    /// installation (or a state that was lost) needs a new client id, or its push numbers would
    /// repeat ids the server has already seen.
    pub client_id: String,
    /// The epoch the cursor belongs to; `None` before the first answer that names one.
    pub collection_id: Option<String>,
    /// Every change up to this seq has been handed to the application.
    pub cursor: u64,
    /// The number of the next push (`push_id = "{client_id}:{n}"`).
    pub next_push_number: u64,
    /// The push last sent whose answer is not known, resent first by the next cycle. Stored as
    /// the push's JSON text, so any serde format (and any reader) can carry it.
    #[serde(default, with = "in_flight_json")]
    pub in_flight: Option<PushRequest>,
    /// During a full sync (pages from cursor 0 while `more` is true), the `horizon` its first
    /// page carried; sent as the pull's `horizon` while the cursor is below it. Persisted so
    /// that a full sync interrupted by a reload goes on instead of starting over; absent in
    /// states written before it existed.
    #[serde(default)]
    pub paging_horizon: Option<u64>,
}

/// `in_flight` as the push's own JSON text, parsed back with the strict push parser.
mod in_flight_json {
    use super::{Limits, PushRequest};
    use alloc::string::String;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        request: &Option<PushRequest>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match request {
            Some(request) => serializer.serialize_some(&request.to_json()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<PushRequest>, D::Error> {
        // Our own request: the server's size limits are not ours to enforce here.
        let unlimited = Limits {
            max_body_bytes: usize::MAX,
            max_batch: usize::MAX,
            max_object_bytes: usize::MAX,
            max_pull_limit: usize::MAX,
        };
        Option::<String>::deserialize(deserializer)?
            .map(|text| {
                PushRequest::parse(text.as_bytes(), &unlimited)
                    .map_err(|_| D::Error::custom("in_flight is not a valid push request"))
            })
            .transpose()
    }
}

/// A local edit the server has not acknowledged yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    /// The object's type tag.
    pub kind: String,
    /// The edit: new data, or a delete.
    pub change: Change,
    /// The seq of the server version the edit started from; 0 for an object that is new, or
    /// deleted (a tombstone). It goes out as the push's `base_seq`, so the server refuses the
    /// edit if someone else wrote the object since.
    pub base_seq: u64,
}

/// The next request to send. Exactly one is outstanding at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `GET …/{collection}?since={since}&limit={limit}[&horizon={horizon}]`.
    Pull {
        /// The cursor.
        since: u64,
        /// The page size.
        limit: usize,
        /// The horizon a full sync started with, echoed while the cursor is below it; `None`:
        /// leave the parameter out.
        horizon: Option<u64>,
    },
    /// `POST …/{collection}` with [`PushRequest::to_json`] as the body.
    Push(PushRequest),
}

/// The answer to the outstanding request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `200` to a pull.
    Pulled(PullAnswer),
    /// `200` to a push (a replay included).
    Pushed(PushOk),
    /// `409` to a push.
    Conflict(ConflictAnswer),
    /// `410` to a pull or a push.
    ResetRequired(ResetAnswer),
    /// Anything else: no answer, or an error answer.
    Failed(Failure),
}

impl From<PushOutcome> for Response {
    fn from(outcome: PushOutcome) -> Response {
        match outcome {
            PushOutcome::Committed(ok) => Response::Pushed(ok),
            PushOutcome::Conflict(conflict) => Response::Conflict(conflict),
            PushOutcome::Reset(reset) => Response::ResetRequired(reset),
        }
    }
}

/// Why a request, or a whole cycle, failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer at all (offline, timeout, connection reset): a push may or may not have been
    /// committed.
    Network,
    /// `401`: the credentials need refreshing.
    Unauthorized,
    /// Any other error status (`400`, `403`, `413`, `429`, `5xx`, …), with `Retry-After` in
    /// milliseconds when the server sent one.
    Status {
        /// The HTTP status.
        status: u16,
        /// How long the server asked the client to wait.
        retry_after_ms: Option<u64>,
    },
    /// Made by the replica, never passed in: the cycle met `max_rounds` conflict or reset
    /// answers and gave up. The pending edits are kept; a later cycle tries again.
    Contention {
        /// How many rounds the cycle went through.
        rounds: u32,
    },
    /// Made by the replica, never passed in: the answer does not fit the request.
    Protocol(&'static str),
}

impl Failure {
    /// Whether the server certainly did not commit a push that got this failure, so that the
    /// push need not be resent as it was. Every `4xx` answer is given before anything is
    /// written; a lost answer or a `5xx` leaves the outcome unknown.
    ///
    /// Dropping a refused push matters: a push the server refuses as invalid (`400`, `413`)
    /// would otherwise be resent unchanged by every cycle, even after the application fixed
    /// the edit.
    pub fn server_did_not_commit(&self) -> bool {
        match self {
            Failure::Unauthorized => true,
            Failure::Status { status, .. } => (400..500).contains(status),
            Failure::Network | Failure::Contention { .. } | Failure::Protocol(_) => false,
        }
    }
}

/// The application's answer to a [`ConflictOutcome::AwaitingResolution`] conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Drop the local edit; the server's version (if any) comes in [`ReplicaEvent::Received`].
    KeepServer,
    /// Keep the local edit and push it over the server's version.
    KeepLocal,
    /// Push this instead, over the server's version.
    Merged(Change),
}

/// One object of an accepted push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedObject {
    /// The object's id.
    pub id: String,
    /// Its type tag.
    pub kind: String,
    /// The seq the server gave it.
    pub seq: u64,
    /// What was written. The application clears its pending flag only if its current local
    /// content still equals this (it may have been edited again while the push was out).
    pub change: Change,
}

/// What became of a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictOutcome {
    /// [`ConflictPolicy::Manual`]: the cycle waits for [`Replica::resolve`].
    AwaitingResolution,
    /// The local edit was dropped. The application replaces its record with `server` (it also
    /// comes in [`ReplicaEvent::Received`] when it is `Some`), or removes it when `None`.
    KeptServer,
    /// The local edit stays pending, now based on `server`: the application sets the record's
    /// base seq to `server`'s seq (0 when it is `None` or a tombstone).
    KeptLocal,
}

/// What the application must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaEvent {
    /// Store these server versions (tombstones included), replacing the records and clearing
    /// their pending flags, and store `state`, in one transaction.
    Received {
        /// In seq order. Never an object whose id the replica still holds a pending edit of.
        objects: Vec<Object>,
        /// The state to persist with them.
        state: ReplicaState,
    },
    /// A push was committed: give each object its seq and clear its pending flag if the local
    /// content still equals `change`; store `state` in the same transaction. If the content
    /// changed while the push was out, the record stays pending and its base seq becomes
    /// `seq` (0 when `change` is a delete).
    Saved {
        /// The pushed objects, in batch order.
        objects: Vec<SavedObject>,
        /// The state to persist with them.
        state: ReplicaState,
    },
    /// The cursor is gone: drop all synced data (keep pending edits) and store `state`. The
    /// replica then pulls everything again from 0.
    Reset {
        /// True when the epoch changed: the old seqs mean nothing now, so every pending edit's
        /// base seq becomes 0. False when only the horizon moved past the cursor (tombstones
        /// were purged): seqs keep their meaning and pending edits keep their base seqs.
        epoch_changed: bool,
        /// The state to persist.
        state: ReplicaState,
    },
    /// Someone else wrote an object this replica has a pending edit of.
    Conflict {
        /// The object's id.
        id: String,
        /// The local edit as it was when the conflict was found.
        local: PendingChange,
        /// The server's version; `None` if the server has no such object (not even a
        /// tombstone).
        server: Option<Object>,
        /// What the policy did, or that it waits for [`Replica::resolve`].
        outcome: ConflictOutcome,
    },
    /// The cycle ended with every pending edit pushed and the cursor at the head.
    SyncDone {
        /// Objects handed to the application in [`ReplicaEvent::Received`].
        pulled: u64,
        /// Objects committed in [`ReplicaEvent::Saved`].
        pushed: u64,
        /// Conflicts found.
        conflicts: u64,
    },
    /// The cycle ended early. Pending edits are kept, and a push whose answer is unknown is
    /// resent first by the next cycle.
    SyncFailed {
        /// Why.
        failure: Failure,
    },
}

/// Why a local edit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditError {
    /// The object id is not 1–256 bytes without control characters.
    Id(IdError),
    /// The type is not up to 256 bytes without control characters.
    Type(IdError),
    /// An edit no server accepts, whatever its limits (see [`check_change`]). Taken in, it
    /// would be refused with `400` at every cycle and hold back every edit pushed with it.
    Unpushable(&'static str),
}

/// Why [`Replica::handle_response`] refused an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// No request is outstanding: the answer was already handled, or none was asked for.
    NoRequestOutstanding,
}

/// Why [`Replica::resolve`] refused a resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveError {
    /// No conflict on this id is waiting for a resolution.
    NotAwaiting,
    /// The merged edit is one no server accepts (see [`check_change`]); the conflict still
    /// waits.
    Unpushable(&'static str),
}

/// One client's replica of one collection. See the [module docs](self) for the call order.
#[derive(Debug, Clone)]
pub struct Replica {
    config: Config,
    client_id: String,
    collection_id: Option<String>,
    cursor: u64,
    next_push_number: u64,
    in_flight: Option<PushRequest>,
    /// See [`ReplicaState::paging_horizon`].
    paging_horizon: Option<u64>,
    /// By id, so a later edit of the same object replaces the earlier one, and batches go out
    /// in a stable order.
    pending: SortedMap<String, PendingChange>,
    /// `None` between cycles.
    cycle: Option<Cycle>,
    events: VecDeque<ReplicaEvent>,
}

/// One sync cycle in progress.
#[derive(Debug, Clone)]
struct Cycle {
    step: Step,
    /// Conflict and reset answers so far, against `max_rounds`.
    rounds: u32,
    pulled: u64,
    pushed: u64,
    conflicts: u64,
}

#[derive(Debug, Clone)]
enum Step {
    /// `poll_request` hands out this request next.
    Ready(Next),
    /// The request is out; `handle_response` takes its answer.
    Waiting(Sent),
    /// Manual conflicts of a page wait for `resolve`; the page is held back until then.
    Resolving(Held),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// The in-flight push, as it was.
    Resend,
    /// A page from the cursor.
    Pull,
    /// A batch of the pending queue.
    Push,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Pull { since: u64 },
    Push { resend: bool },
}

/// A page (or a conflict answer's changes) on its way to the application.
#[derive(Debug, Clone)]
struct Held {
    collection_id: Option<String>,
    /// The cursor once the page is handed over.
    until: u64,
    /// The paging horizon once the page is handed over.
    paging_horizon: Option<u64>,
    /// What the application receives.
    objects: Vec<Object>,
    /// Ids met in this page, with the highest seq met (0: "no such object"), so that a
    /// conflict answer's entry for the same version is not decided twice.
    seen: SortedMap<String, u64>,
    /// Manual conflicts not yet resolved, with the server's version.
    unresolved: SortedMap<String, Option<Object>>,
    /// What the cycle does after the page.
    then: Next,
}

impl Replica {
    /// A replica that has never synced. `client_id` must be fresh for this new state (see
    /// [`ReplicaState::client_id`]) and a valid id, since it starts every `push_id`.
    pub fn new(client_id: impl Into<String>, config: Config) -> Replica {
        Replica::restore(
            ReplicaState {
                client_id: client_id.into(),
                collection_id: None,
                cursor: 0,
                next_push_number: 1,
                in_flight: None,
                paging_horizon: None,
            },
            config,
        )
    }

    /// A replica resumed from its persisted state. Feed it the pending edits from storage with
    /// [`Replica::add_pending`] before starting a sync.
    pub fn restore(state: ReplicaState, config: Config) -> Replica {
        Replica {
            config,
            client_id: state.client_id,
            collection_id: state.collection_id,
            cursor: state.cursor,
            next_push_number: state.next_push_number,
            in_flight: state.in_flight,
            paging_horizon: state.paging_horizon,
            pending: SortedMap::new(),
            cycle: None,
            events: VecDeque::new(),
        }
    }

    /// The state to persist. Events carry it too; call this after
    /// [`Replica::poll_request`] hands out a push.
    pub fn state(&self) -> ReplicaState {
        ReplicaState {
            client_id: self.client_id.clone(),
            collection_id: self.collection_id.clone(),
            cursor: self.cursor,
            next_push_number: self.next_push_number,
            in_flight: self.in_flight.clone(),
            paging_horizon: self.paging_horizon,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every change up to this seq has been handed to the application.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The epoch the cursor belongs to.
    pub fn collection_id(&self) -> Option<&str> {
        self.collection_id.as_deref()
    }

    /// The pending edits, by id.
    pub fn pending(&self) -> &SortedMap<String, PendingChange> {
        &self.pending
    }

    /// The push whose answer is not known, if any.
    pub fn in_flight(&self) -> Option<&PushRequest> {
        self.in_flight.as_ref()
    }

    /// Whether a cycle is running.
    pub fn is_syncing(&self) -> bool {
        self.cycle.is_some()
    }

    /// The ids whose conflicts wait for [`Replica::resolve`].
    pub fn awaiting_resolution(&self) -> impl Iterator<Item = &str> {
        let held = match self.cycle.as_ref().map(|c| &c.step) {
            Some(Step::Resolving(held)) => Some(held),
            _ => None,
        };
        held.into_iter()
            .flat_map(|held| held.unresolved.keys().map(String::as_str))
    }

    // --- inputs: local edits -------------------------------------------------------------

    /// The application wrote `data` to `id`, starting from the server version at `base_seq`
    /// (0 for a new or deleted object). A later edit of an id that is still pending replaces
    /// the content and keeps the first edit's `base_seq`.
    pub fn local_put(
        &mut self,
        id: impl Into<String>,
        kind: impl Into<String>,
        data: JsonData,
        base_seq: u64,
    ) -> Result<(), EditError> {
        let change = Change::Put {
            data,
            expires: None,
        };
        self.local_change(id, kind, change, base_seq)
    }

    /// The application deleted `id`; as [`Replica::local_put`].
    pub fn local_delete(
        &mut self,
        id: impl Into<String>,
        kind: impl Into<String>,
        base_seq: u64,
    ) -> Result<(), EditError> {
        self.local_change(id, kind, Change::Delete, base_seq)
    }

    /// Any local edit (a put with `expires` included); as [`Replica::local_put`].
    pub fn local_change(
        &mut self,
        id: impl Into<String>,
        kind: impl Into<String>,
        change: Change,
        base_seq: u64,
    ) -> Result<(), EditError> {
        let (id, kind) = (id.into(), kind.into());
        check_names(&id, &kind)?;
        check_change(&change).map_err(EditError::Unpushable)?;
        match self.pending.get_mut(&id) {
            Some(pending) => {
                pending.kind = kind;
                pending.change = change;
            }
            None => {
                let pending = PendingChange {
                    kind,
                    change,
                    base_seq,
                };
                self.pending.insert(id, pending);
            }
        }
        Ok(())
    }

    /// Sets the pending edit of `id` exactly as given, base seq included: how pending edits
    /// come back from storage after [`Replica::restore`].
    pub fn add_pending(
        &mut self,
        id: impl Into<String>,
        pending: PendingChange,
    ) -> Result<(), EditError> {
        let id = id.into();
        check_names(&id, &pending.kind)?;
        check_change(&pending.change).map_err(EditError::Unpushable)?;
        self.pending.insert(id, pending);
        Ok(())
    }

    // --- inputs: the cycle ---------------------------------------------------------------

    /// Begins a sync cycle; does nothing if one is running.
    pub fn start_sync(&mut self) {
        if self.cycle.is_some() {
            return;
        }
        self.cycle = Some(Cycle {
            step: Step::Ready(Next::Pull),
            rounds: 0,
            pulled: 0,
            pushed: 0,
            conflicts: 0,
        });
        let first = if self.in_flight.is_some() {
            Next::Resend
        } else {
            Next::Pull
        };
        self.go(first);
    }

    /// The answer to the request [`Replica::poll_request`] handed out.
    pub fn handle_response(&mut self, response: Response) -> Result<(), ResponseError> {
        let sent = match self.cycle.as_ref().map(|c| &c.step) {
            Some(Step::Waiting(sent)) => *sent,
            _ => return Err(ResponseError::NoRequestOutstanding),
        };
        match (sent, response) {
            (Sent::Push { .. }, Response::Failed(failure)) => {
                if failure.server_did_not_commit() {
                    self.in_flight = None;
                }
                self.fail(failure);
            }
            (Sent::Pull { .. }, Response::Failed(failure)) => self.fail(failure),
            (_, Response::ResetRequired(answer)) => {
                // Same epoch: only the horizon moved past the cursor, and seqs keep meaning
                // the same objects.
                let same_epoch =
                    self.collection_id.is_some() && answer.collection_id == self.collection_id;
                self.reset(!same_epoch);
            }
            (Sent::Pull { since }, Response::Pulled(page)) => self.on_page(since, page),
            (Sent::Push { resend }, Response::Pushed(ok)) => self.on_pushed(resend, ok),
            (Sent::Push { .. }, Response::Conflict(answer)) => self.on_conflict(answer),
            (Sent::Pull { .. }, _) => self.fail(Failure::Protocol("a push answer to a pull")),
            (Sent::Push { .. }, Response::Pulled(_)) => {
                self.fail(Failure::Protocol("a pull answer to a push"))
            }
        }
        Ok(())
    }

    /// Resolves the manual conflict on `id`. Once every conflict of the page is resolved, the
    /// page goes to the application and the cycle goes on.
    pub fn resolve(&mut self, id: &str, resolution: Resolution) -> Result<(), ResolveError> {
        let Some(Cycle {
            step: Step::Resolving(held),
            ..
        }) = self.cycle.as_mut()
        else {
            return Err(ResolveError::NotAwaiting);
        };
        if let Resolution::Merged(change) = &resolution {
            if held.unresolved.contains_key(id) {
                check_change(change).map_err(ResolveError::Unpushable)?;
            }
        }
        let server = held
            .unresolved
            .remove(id)
            .ok_or(ResolveError::NotAwaiting)?;
        let base_seq = base_of(server.as_ref());
        match resolution {
            Resolution::KeepServer => {
                self.pending.remove(id);
                held.objects.extend(server);
            }
            Resolution::KeepLocal => {
                if let Some(pending) = self.pending.get_mut(id) {
                    pending.base_seq = base_seq;
                }
            }
            Resolution::Merged(change) => {
                let kind = match (self.pending.get(id), &server) {
                    (Some(pending), _) => pending.kind.clone(),
                    (None, Some(server)) => server.kind.clone(),
                    (None, None) => String::new(),
                };
                let merged = PendingChange {
                    kind,
                    change,
                    base_seq,
                };
                self.pending.insert(String::from(id), merged);
            }
        }
        if held.unresolved.is_empty() {
            let held = core::mem::replace(held, Held::empty());
            self.release(held);
        }
        Ok(())
    }

    // --- outputs -------------------------------------------------------------------------

    /// The next request to send, once; then `None` until its answer is handled.
    #[must_use]
    pub fn poll_request(&mut self) -> Option<Request> {
        let next = match self.cycle.as_ref()?.step {
            Step::Ready(next) => next,
            Step::Waiting(_) | Step::Resolving(_) => return None,
        };
        let (request, sent) = match (next, &self.in_flight) {
            (Next::Resend, Some(request)) => {
                (Request::Push(request.clone()), Sent::Push { resend: true })
            }
            (Next::Pull, _) | (Next::Resend, None) => (
                Request::Pull {
                    since: self.cursor,
                    limit: self.config.pull_limit,
                    horizon: self
                        .paging_horizon
                        .filter(|h| (1..*h).contains(&self.cursor)),
                },
                Sent::Pull { since: self.cursor },
            ),
            (Next::Push, _) => {
                if self.pending.is_empty() {
                    self.finish();
                    return None;
                }
                let request = self.next_push();
                self.in_flight = Some(request.clone());
                (Request::Push(request), Sent::Push { resend: false })
            }
        };
        if let Some(cycle) = self.cycle.as_mut() {
            cycle.step = Step::Waiting(sent);
        }
        Some(request)
    }

    /// The next thing the application must do.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ReplicaEvent> {
        self.events.pop_front()
    }

    // --- the cycle, inside ---------------------------------------------------------------

    /// Moves the cycle on to `next`, or ends it when there is nothing left to do.
    fn go(&mut self, next: Next) {
        let max_rounds = self.config.max_rounds;
        let Some(cycle) = self.cycle.as_mut() else {
            return;
        };
        if next == Next::Push && self.pending.is_empty() {
            self.finish();
        } else if next == Next::Push && cycle.rounds > max_rounds {
            let rounds = cycle.rounds;
            self.fail(Failure::Contention { rounds });
        } else {
            cycle.step = Step::Ready(next);
        }
    }

    fn finish(&mut self) {
        if let Some(cycle) = self.cycle.take() {
            self.events.push_back(ReplicaEvent::SyncDone {
                pulled: cycle.pulled,
                pushed: cycle.pushed,
                conflicts: cycle.conflicts,
            });
        }
    }

    fn fail(&mut self, failure: Failure) {
        self.cycle = None;
        self.events.push_back(ReplicaEvent::SyncFailed { failure });
    }

    fn next_push(&mut self) -> PushRequest {
        let number = self.next_push_number;
        self.next_push_number += 1;
        PushRequest {
            collection_id: self.collection_id.clone(),
            since: Some(self.cursor),
            push_id: Some({
                let mut id = self.client_id.clone();
                id.push(':');
                crate::object::write_decimal(&mut id, number);
                id
            }),
            objects: self
                .pending
                .iter()
                .take(self.config.max_batch.max(1))
                .map(|(id, pending)| PushObject {
                    id: id.clone(),
                    kind: pending.kind.clone(),
                    base_seq: Some(pending.base_seq),
                    change: pending.change.clone(),
                })
                .collect(),
        }
    }

    fn on_page(&mut self, since: u64, page: PullAnswer) {
        if page.since != since {
            return self.fail(Failure::Protocol("the page does not start at the cursor"));
        }
        if page.more && page.until <= since {
            return self.fail(Failure::Protocol("the page says more but did not move"));
        }
        let held = Held {
            collection_id: page.collection_id,
            until: page.until,
            // A full sync remembers where the horizon was when it began, until it ends.
            paging_horizon: match (page.more, since) {
                (false, _) => None,
                (true, 0) => Some(page.horizon),
                (true, _) => self.paging_horizon,
            },
            then: if page.more { Next::Pull } else { Next::Push },
            ..Held::empty()
        };
        self.apply_changes(held, page.objects, Vec::new(), page.more);
    }

    fn on_pushed(&mut self, resend: bool, ok: PushOk) {
        let Some(request) = self.in_flight.take() else {
            return self.fail(Failure::Protocol("a push answer with no push in flight"));
        };
        let epoch_clash = self
            .collection_id
            .as_ref()
            .is_some_and(|known| *known != ok.collection_id);
        if ok.seqs.len() != request.objects.len() || epoch_clash {
            // Committed, but not as asked: keep the request in flight rather than risk
            // writing it twice.
            self.in_flight = Some(request);
            return self.fail(Failure::Protocol("the push answer does not match the push"));
        }
        self.collection_id = Some(ok.collection_id);
        // The push said `since = cursor` and was accepted: nothing else was committed in
        // between, so its seqs are exactly the ones after the cursor. A server that ignores
        // `since` answers otherwise; then the cursor stays and the writes are pulled back.
        // (A cursor at `u64::MAX`, which only a broken server can have led to, has no seqs
        // after it.)
        let contiguous = request.since == Some(self.cursor)
            && self
                .cursor
                .checked_add(1)
                .is_some_and(|first| ok.seqs.iter().copied().eq(first..=ok.until));
        if contiguous {
            self.cursor = ok.until;
        }
        let mut saved = Vec::with_capacity(request.objects.len());
        for (object, seq) in request.objects.into_iter().zip(ok.seqs) {
            if let Some(pending) = self.pending.get_mut(&object.id) {
                if pending.kind == object.kind && pending.change == object.change {
                    self.pending.remove(&object.id);
                } else {
                    // Edited again while the push was out: the new edit starts from this write.
                    pending.base_seq = match object.change {
                        Change::Delete => 0,
                        Change::Put { .. } => seq,
                    };
                }
            }
            saved.push(SavedObject {
                id: object.id,
                kind: object.kind,
                seq,
                change: object.change,
            });
        }
        if let Some(cycle) = self.cycle.as_mut() {
            cycle.pushed += saved.len() as u64;
        }
        self.events.push_back(ReplicaEvent::Saved {
            objects: saved,
            state: self.state(),
        });
        // A resend opens the cycle, which still has to pull.
        let then = if resend || !contiguous {
            Next::Pull
        } else {
            Next::Push
        };
        self.go(then);
    }

    fn on_conflict(&mut self, answer: ConflictAnswer) {
        self.in_flight = None;
        if let Some(cycle) = self.cycle.as_mut() {
            cycle.rounds = cycle.rounds.saturating_add(1);
        }
        if answer.more && answer.until <= self.cursor {
            return self.fail(Failure::Protocol("the conflict says more but did not move"));
        }
        // Each conflict is decided by its id, and the server's version is what is handed over:
        // a version of another object would be decided against the wrong pending edit.
        let mismatched = answer
            .conflicts
            .iter()
            .any(|c| c.server.as_ref().is_some_and(|server| server.id != c.id));
        if mismatched {
            return self.fail(Failure::Protocol(
                "a conflict carries the version of another object",
            ));
        }
        // `collection_changed` needs nothing but the changes and another try.
        let stale = answer
            .conflicts
            .into_iter()
            .filter(|c| c.reason == ConflictReason::StaleBase)
            .map(|c| (c.id, c.server))
            .collect();
        let held = Held {
            collection_id: answer.collection_id,
            until: answer.until,
            // The push's `since` was answerable without a horizon, and so are these pages.
            paging_horizon: None,
            then: if answer.more { Next::Pull } else { Next::Push },
            ..Held::empty()
        };
        self.apply_changes(held, answer.changes, stale, answer.more);
    }

    /// Drops the cursor; the cycle starts again from the pull.
    fn reset(&mut self, epoch_changed: bool) {
        self.in_flight = None;
        self.cursor = 0;
        self.paging_horizon = None;
        if epoch_changed {
            self.collection_id = None;
            for pending in self.pending.values_mut() {
                pending.base_seq = 0;
            }
        }
        self.events.push_back(ReplicaEvent::Reset {
            epoch_changed,
            state: self.state(),
        });
        let Some(cycle) = self.cycle.as_mut() else {
            return;
        };
        cycle.rounds = cycle.rounds.saturating_add(1);
        if cycle.rounds > self.config.max_rounds {
            let rounds = cycle.rounds;
            self.fail(Failure::Contention { rounds });
        } else {
            self.go(Next::Pull);
        }
    }

    /// Applies a page of changes (a pull page, or a conflict answer's `changes` and its
    /// `stale_base` conflicts) to `held` (which says where the page ends and what follows it),
    /// then goes on with `held.then`.
    fn apply_changes(
        &mut self,
        mut held: Held,
        objects: Vec<Object>,
        stale: Vec<(String, Option<Object>)>,
        more: bool,
    ) {
        if self
            .collection_id
            .as_ref()
            .is_some_and(|known| held.collection_id.as_ref() != Some(known))
        {
            return self.reset(true);
        }
        let until = held.until;
        for object in objects {
            // At or below the cursor: already handed over, or our own write.
            if object.seq > self.cursor {
                self.meet(object.id.clone(), Some(object), true, &mut held);
            }
        }
        for (id, server) in stale {
            // Decided in this page already, at this version or a newer one. (A newer one in
            // the conflict than in `changes` is a server contradicting itself; it is met all
            // the same, so that the cursor does not pass it.)
            let met = held.seen.get(&id).copied();
            if met.is_some_and(|seq| server.as_ref().is_none_or(|o| o.seq <= seq)) {
                continue;
            }
            // A later page brings it; it is decided there, once.
            if more && server.as_ref().is_some_and(|o| o.seq > until) {
                continue;
            }
            self.meet(id, server, false, &mut held);
        }
        self.release(held);
    }

    /// Decides what a server version of `id` means for the pending queue. `in_page` is true
    /// for a version from the page itself (new to this replica), false for the server's
    /// version in a `stale_base` conflict (which may be one the replica already has).
    fn meet(&mut self, id: String, server: Option<Object>, in_page: bool, held: &mut Held) {
        let seq = server.as_ref().map_or(0, |o| o.seq);
        let met = held.seen.get(&id).map_or(seq, |&met| met.max(seq));
        held.seen.insert(id.clone(), met);
        let Some(local) = self.pending.get(&id) else {
            // A conflict's version above the cursor is new to this replica too, even if the
            // answer's `changes` left it out: the cursor is about to pass it.
            let new_here = in_page || server.as_ref().is_some_and(|o| o.seq > self.cursor);
            if new_here {
                held.objects.extend(server);
            }
            return;
        };
        if let Some(server) = server {
            if in_page && local.base_seq >= server.seq {
                // The edit already starts from this version.
                return;
            }
            if same_content(local, &server) {
                // Both sides say the same thing: the edit is dropped when the page is released.
                held.objects.push(server);
                return;
            }
            self.conflict(id, Some(server), held);
        } else {
            self.conflict(id, None, held);
        }
    }

    /// A pending edit of `id` meets a different server version: apply the policy.
    fn conflict(&mut self, id: String, server: Option<Object>, held: &mut Held) {
        let Some(local) = self.pending.get(&id).cloned() else {
            return;
        };
        let outcome = match self.config.policy {
            ConflictPolicy::ServerWins => {
                self.pending.remove(&id);
                held.objects.extend(server.clone());
                ConflictOutcome::KeptServer
            }
            ConflictPolicy::LocalWins => {
                if let Some(pending) = self.pending.get_mut(&id) {
                    pending.base_seq = base_of(server.as_ref());
                }
                ConflictOutcome::KeptLocal
            }
            ConflictPolicy::Manual => {
                held.unresolved.insert(id.clone(), server.clone());
                ConflictOutcome::AwaitingResolution
            }
        };
        if let Some(cycle) = self.cycle.as_mut() {
            cycle.conflicts += 1;
        }
        self.events.push_back(ReplicaEvent::Conflict {
            id,
            local,
            server,
            outcome,
        });
    }

    /// Hands a page to the application, moving the cursor with it, unless manual conflicts
    /// still wait (then the page waits with them).
    ///
    /// Objects whose id has a pending edit by now (one that says the same as the server, or
    /// one made while manual conflicts waited) are decided here, against the pending queue as
    /// it is when the application receives them.
    fn release(&mut self, mut held: Held) {
        if held.unresolved.is_empty() {
            // Edits made while manual conflicts waited meet the held versions now.
            for object in core::mem::take(&mut held.objects) {
                let edited = self.pending.get(&object.id).is_some_and(|local| {
                    !same_content(local, &object) && local.base_seq < object.seq
                });
                if edited {
                    self.conflict(object.id.clone(), Some(object), &mut held);
                } else {
                    held.objects.push(object);
                }
            }
        }
        if !held.unresolved.is_empty() {
            if let Some(cycle) = self.cycle.as_mut() {
                cycle.step = Step::Resolving(held);
            }
            return;
        }
        let Held {
            collection_id,
            until,
            paging_horizon,
            objects,
            then,
            ..
        } = held;
        let mut objects: Vec<Object> = objects
            .into_iter()
            .filter(|object| match self.pending.get(&object.id) {
                None => true,
                // Both sides say the same thing: the edit is done.
                Some(local) if same_content(local, object) => {
                    self.pending.remove(&object.id);
                    true
                }
                // The edit already starts from this version.
                Some(_) => false,
            })
            .collect();
        // Unstable is enough: every object of a page has a seq of its own.
        objects.sort_unstable_by_key(|o| o.seq);
        let moved = until > self.cursor
            || (collection_id.is_some() && collection_id != self.collection_id)
            || paging_horizon != self.paging_horizon;
        self.cursor = self.cursor.max(until);
        self.paging_horizon = paging_horizon;
        if collection_id.is_some() {
            self.collection_id = collection_id;
        }
        if moved || !objects.is_empty() {
            if let Some(cycle) = self.cycle.as_mut() {
                cycle.pulled += objects.len() as u64;
            }
            self.events.push_back(ReplicaEvent::Received {
                objects,
                state: self.state(),
            });
        }
        self.go(then);
    }
}

impl Held {
    fn empty() -> Held {
        Held {
            collection_id: None,
            until: 0,
            paging_horizon: None,
            objects: Vec::new(),
            seen: SortedMap::new(),
            unresolved: SortedMap::new(),
            then: Next::Push,
        }
    }
}

fn check_names(id: &str, kind: &str) -> Result<(), EditError> {
    names::check_id(id).map_err(EditError::Id)?;
    names::check_type(kind).map_err(EditError::Type)
}

/// Refuses an edit that the push parser refuses whatever the server's limits, so that it never
/// becomes a pending edit that fails every push it goes out in:
///
/// - data `null`: on the wire a `null` field means the field is absent, so the server reads a
///   put of `null` as a put without data;
/// - data nested deeper than [`MAX_DEPTH`] (data made with [`JsonData::from_trusted`] skipped
///   the check of [`JsonData::parse`]);
/// - an `expires` after [`MAX_EXPIRES_MS`].
///
/// The fuzz target `replica` found the first: a `null` put was taken in and refused by the
/// server with `400` at every cycle.
pub fn check_change(change: &Change) -> Result<(), &'static str> {
    let Change::Put { data, expires } = change else {
        return Ok(());
    };
    if data.as_str() == "null" {
        Err("data must not be null: on the wire a null data means no data; delete instead")
    } else if nesting_depth(data.as_str()) > MAX_DEPTH {
        Err("data is nested too deeply")
    } else if expires.is_some_and(|at| at > MAX_EXPIRES_MS) {
        Err("expires must be a unix time in milliseconds before the year 10000")
    } else {
        Ok(())
    }
}

/// The `base_seq` of an edit made on top of `server`: its seq, or 0 when there is nothing
/// live to start from. A tombstone counts as nothing: `base_seq = 0` matches it, and keeps
/// matching after the server purges it.
fn base_of(server: Option<&Object>) -> u64 {
    match server {
        Some(object) if !object.deleted => object.seq,
        _ => 0,
    }
}

/// Whether a pending edit says what the server's version says: both deleted, or equal data
/// (as JSON text) and expiry.
fn same_content(local: &PendingChange, server: &Object) -> bool {
    match &local.change {
        Change::Delete => server.deleted,
        Change::Put { data, expires } => {
            !server.deleted && server.data.as_ref() == Some(data) && server.expires == *expires
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_store::MemoryCollection;
    use crate::pull::PullQuery;
    use alloc::format;
    use alloc::string::ToString;
    use alloc::vec;

    fn data(text: &str) -> JsonData {
        JsonData::parse(text).unwrap()
    }

    fn put(text: &str) -> Change {
        Change::Put {
            data: data(text),
            expires: None,
        }
    }

    fn config(policy: ConflictPolicy) -> Config {
        Config {
            pull_limit: 3,
            max_batch: 10,
            max_rounds: 5,
            policy,
        }
    }

    fn replica(policy: ConflictPolicy) -> Replica {
        Replica::new("c", config(policy))
    }

    /// The reference server's answer to `request`.
    fn serve(server: &mut MemoryCollection, request: &Request) -> Response {
        match request {
            Request::Pull {
                since,
                limit,
                horizon,
            } => {
                let query = PullQuery {
                    since: *since,
                    limit: *limit,
                    horizon: *horizon,
                    ..PullQuery::default()
                };
                match server.pull(&query) {
                    Ok(page) => Response::Pulled(page),
                    Err(reset) => Response::ResetRequired(reset),
                }
            }
            Request::Push(push) => server.push(push, 0, || "epoch-1".to_string()).into(),
        }
    }

    fn drain(replica: &mut Replica) -> Vec<ReplicaEvent> {
        core::iter::from_fn(|| replica.poll_event()).collect()
    }

    /// Starts a cycle and answers every request until the replica asks for none.
    fn run(replica: &mut Replica, server: &mut MemoryCollection) -> Vec<ReplicaEvent> {
        replica.start_sync();
        let mut events = drain(replica);
        while let Some(request) = replica.poll_request() {
            let answer = serve(server, &request);
            replica.handle_response(answer).unwrap();
            events.extend(drain(replica));
        }
        events
    }

    /// Another client writes `id` straight to the server, over whatever is there.
    fn write(server: &mut MemoryCollection, id: &str, change: Change) -> u64 {
        let base = server.objects().find(|o| o.id == id).map_or(0, |o| o.seq);
        let request = PushRequest {
            objects: vec![PushObject {
                id: id.to_string(),
                kind: String::new(),
                base_seq: Some(base),
                change,
            }],
            ..PushRequest::default()
        };
        match server.push(&request, 0, || "epoch-1".to_string()) {
            PushOutcome::Committed(ok) => ok.seqs[0],
            other => panic!("the other client's write failed: {other:?}"),
        }
    }

    fn received(events: &[ReplicaEvent]) -> Vec<(String, u64)> {
        events
            .iter()
            .filter_map(|e| match e {
                ReplicaEvent::Received { objects, .. } => Some(objects),
                _ => None,
            })
            .flatten()
            .map(|o| (o.id.clone(), o.seq))
            .collect()
    }

    fn conflicts(events: &[ReplicaEvent]) -> Vec<(&str, ConflictOutcome)> {
        events
            .iter()
            .filter_map(|e| match e {
                ReplicaEvent::Conflict { id, outcome, .. } => Some((id.as_str(), *outcome)),
                _ => None,
            })
            .collect()
    }

    fn ids_and_seqs(server: &MemoryCollection) -> Vec<(String, u64)> {
        server.objects().map(|o| (o.id.clone(), o.seq)).collect()
    }

    fn server_data(server: &MemoryCollection, id: &str) -> Option<String> {
        let object = server.objects().find(|o| o.id == id)?;
        object.data.as_ref().map(|d| d.to_string())
    }

    fn pull_request(r: &mut Replica) -> u64 {
        match r.poll_request() {
            Some(Request::Pull { since, .. }) => since,
            other => panic!("expected a pull, got {other:?}"),
        }
    }

    fn push_request(r: &mut Replica) -> PushRequest {
        match r.poll_request() {
            Some(Request::Push(push)) => push,
            other => panic!("expected a push, got {other:?}"),
        }
    }

    #[test]
    fn paging_follows_more() {
        let mut server = MemoryCollection::new(3);
        for i in 0..7 {
            write(&mut server, &format!("o{i}"), put("1"));
        }
        let mut r = replica(ConflictPolicy::ServerWins);
        r.start_sync();
        let mut sinces = Vec::new();
        let mut cursors = Vec::new();
        while let Some(request) = r.poll_request() {
            if let Request::Pull { since, limit, .. } = request {
                assert_eq!(limit, 3);
                sinces.push(since);
            }
            r.handle_response(serve(&mut server, &request)).unwrap();
            for event in drain(&mut r) {
                if let ReplicaEvent::Received { state, .. } = event {
                    cursors.push(state.cursor);
                } else {
                    assert_eq!(
                        event,
                        ReplicaEvent::SyncDone {
                            pulled: 7,
                            pushed: 0,
                            conflicts: 0
                        }
                    );
                }
            }
        }
        assert_eq!(sinces, [0, 3, 6]);
        assert_eq!(cursors, [3, 6, 7]);
        assert_eq!(r.collection_id(), Some("epoch-1"));
    }

    #[test]
    fn own_writes_are_not_pulled_back() {
        let mut server = MemoryCollection::new(3);
        let mut r = replica(ConflictPolicy::ServerWins);
        r.local_put("a", "", data("1"), 0).unwrap();
        r.local_put("b", "", data("2"), 0).unwrap();
        let events = run(&mut r, &mut server);
        let ReplicaEvent::Saved { objects, state } = &events[0] else {
            panic!("{events:?}");
        };
        let seqs: Vec<u64> = objects.iter().map(|o| o.seq).collect();
        assert_eq!(seqs, [1, 2]);
        assert_eq!((state.cursor, state.in_flight.as_ref()), (2, None));
        assert!(r.pending().is_empty());

        write(&mut server, "c", put("3"));
        let events = run(&mut r, &mut server);
        assert_eq!(received(&events), [("c".to_string(), 3)]);
        assert_eq!(r.cursor(), 3);
    }

    #[test]
    fn retry_after_lost_answer_writes_once() {
        let mut server = MemoryCollection::new(3);
        let mut r = replica(ConflictPolicy::ServerWins);
        r.local_put("a", "", data("1"), 0).unwrap();
        r.start_sync();
        let pull = Request::Pull {
            since: pull_request(&mut r),
            limit: 3,
            horizon: None,
        };
        r.handle_response(serve(&mut server, &pull)).unwrap();
        let push = push_request(&mut r);
        assert_eq!(push.push_id.as_deref(), Some("c:1"));
        assert_eq!(r.state().in_flight.as_ref(), Some(&push));
        // Committed, but the answer never arrives.
        let _lost = serve(&mut server, &Request::Push(push.clone()));
        r.handle_response(Response::Failed(Failure::Network))
            .unwrap();
        assert_eq!(
            drain(&mut r),
            [ReplicaEvent::SyncFailed {
                failure: Failure::Network
            }]
        );
        assert_eq!(r.in_flight(), Some(&push));
        write(&mut server, "b", put("2"));

        r.start_sync();
        assert_eq!(push_request(&mut r), push, "the same request comes first");
        let replay = serve(&mut server, &Request::Push(push));
        assert!(matches!(&replay, Response::Pushed(ok) if ok.replayed));
        r.handle_response(replay).unwrap();
        let mut events = drain(&mut r);
        while let Some(request) = r.poll_request() {
            r.handle_response(serve(&mut server, &request)).unwrap();
            events.extend(drain(&mut r));
        }
        assert_eq!(server.head().last_seq, 2, "nothing was written twice");
        assert!(matches!(&events[0], ReplicaEvent::Saved { objects, .. } if objects[0].seq == 1));
        assert_eq!(received(&events), [("b".to_string(), 2)]);
        assert!(r.pending().is_empty() && r.in_flight().is_none());
        assert_eq!(r.cursor(), 2);
    }

    #[test]
    fn lost_answer_survives_a_restart() {
        let mut server = MemoryCollection::new(3);
        let mut r = replica(ConflictPolicy::ServerWins);
        r.local_put("a", "todo", data(r#"{"t":"x"}"#), 0).unwrap();
        r.start_sync();
        let pull = Request::Pull {
            since: pull_request(&mut r),
            limit: 3,
            horizon: None,
        };
        r.handle_response(serve(&mut server, &pull)).unwrap();
        let push = push_request(&mut r);
        let saved = serde_json::to_string(&r.state()).unwrap();
        let _lost = serve(&mut server, &Request::Push(push.clone()));
        drop(r);

        let state: ReplicaState = serde_json::from_str(&saved).unwrap();
        let mut r = Replica::restore(state, config(ConflictPolicy::ServerWins));
        let pending = PendingChange {
            kind: "todo".to_string(),
            change: put(r#"{"t":"x"}"#),
            base_seq: 0,
        };
        r.add_pending("a", pending).unwrap();
        r.start_sync();
        assert_eq!(push_request(&mut r), push);
        r.handle_response(serve(&mut server, &Request::Push(push)))
            .unwrap();
        assert!(matches!(
            drain(&mut r).as_slice(),
            [ReplicaEvent::Saved { objects, state }] if objects[0].seq == 1 && state.cursor == 1
        ));
        assert_eq!(server.head().last_seq, 1);
        assert!(r.pending().is_empty());
        // The push number went on from the persisted one.
        r.local_put("b", "", data("2"), 0).unwrap();
        while r.is_syncing() {
            let request = r.poll_request().unwrap();
            if let Request::Push(push) = &request {
                assert_eq!(push.push_id.as_deref(), Some("c:2"));
            }
            r.handle_response(serve(&mut server, &request)).unwrap();
        }
    }

    #[test]
    fn state_round_trips_through_json_with_the_push_as_text() {
        let mut r = replica(ConflictPolicy::ServerWins);
        r.local_put("a", "t", data(r#"{"x":[1,2]}"#), 4).unwrap();
        r.start_sync();
        assert_eq!(pull_request(&mut r), 0);
        r.handle_response(Response::Pulled(PullAnswer::page(
            None,
            0,
            0,
            0,
            3,
            Vec::new(),
        )))
        .unwrap();
        let push = push_request(&mut r);
        let state = r.state();
        assert_eq!(state.in_flight.as_ref(), Some(&push));
        let json: serde_json::Value = serde_json::to_value(&state).unwrap();
        assert_eq!(json["in_flight"], serde_json::Value::String(push.to_json()));
        let back: ReplicaState = serde_json::from_value(json).unwrap();
        assert_eq!(back, state);
        // States written before `in_flight` and `paging_horizon` existed still load.
        let idle: ReplicaState = serde_json::from_str(
            r#"{"client_id":"c","collection_id":null,"cursor":0,"next_push_number":1}"#,
        )
        .unwrap();
        assert_eq!(idle, Replica::new("c", Config::default()).state());
    }

    #[test]
    fn conflict_server_wins_drops_the_local_edit() {
        let mut server = MemoryCollection::new(3);
        let mut r = replica(ConflictPolicy::ServerWins);
        write(&mut server, "a", put("1"));
        run(&mut r, &mut server);
        r.local_put("a", "", data("\"mine\""), 1).unwrap();
        write(&mut server, "a", put("\"theirs\""));
        let events = run(&mut r, &mut server);
        assert_eq!(conflicts(&events), [("a", ConflictOutcome::KeptServer)]);
        assert_eq!(received(&events), [("a".to_string(), 2)]);
        assert!(r.pending().is_empty());
        assert_eq!(server.head().last_seq, 2, "nothing pushed");
        assert!(matches!(
            events.last(),
            Some(ReplicaEvent::SyncDone { conflicts: 1, .. })
        ));
    }

    #[test]
    fn conflict_local_wins_is_pushed_on_server_seq() {
        let mut server = MemoryCollection::new(3);
        let mut r = replica(ConflictPolicy::LocalWins);
        write(&mut server, "a", put("1"));
        run(&mut r, &mut server);
        r.local_put("a", "", data("\"mine\""), 1).unwrap();
        write(&mut server, "a", put("\"theirs\""));
        let events = run(&mut r, &mut server);
        assert_eq!(conflicts(&events), [("a", ConflictOutcome::KeptLocal)]);
        assert!(
            received(&events).is_empty(),
            "the app keeps its own version"
        );
        assert_eq!(server_data(&server, "a").as_deref(), Some("\"mine\""));
        assert_eq!(ids_and_seqs(&server), [("a".to_string(), 3)]);
    }

    #[test]
    fn conflict_resolution_merged_is_pushed_on_server_seq() {
        let mut server = MemoryCollection::new(3);
        let mut r = replica(ConflictPolicy::Manual);
        write(&mut server, "a", put("1"));
        run(&mut r, &mut server);
        r.local_put("a", "", data("\"mine\""), 1).unwrap();
        write(&mut server, "a", put("\"theirs\""));
        let events = run(&mut r, &mut server);
        let [ReplicaEvent::Conflict {
            id,
            local,
            server: Some(theirs),
            outcome: ConflictOutcome::AwaitingResolution,
        }] = events.as_slice()
        else {
            panic!("{events:?}");
        };
        assert_eq!((id.as_str(), local.base_seq, theirs.seq), ("a", 1, 2));
        assert!(r.is_syncing());
        assert_eq!(r.awaiting_resolution().collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            r.poll_request(),
            None,
            "nothing moves while a conflict waits"
        );

        r.resolve("a", Resolution::Merged(put("\"both\""))).unwrap();
        assert_eq!(r.pending()["a"].base_seq, 2);
        let mut events = drain(&mut r);
        assert!(matches!(
            events.as_slice(),
            [ReplicaEvent::Received { objects, state }] if objects.is_empty() && state.cursor == 2
        ));
        let push = push_request(&mut r);
        assert_eq!(push.objects[0].base_seq, Some(2));
        r.handle_response(serve(&mut server, &Request::Push(push)))
            .unwrap();
        events.extend(drain(&mut r));
        assert_eq!(server_data(&server, "a").as_deref(), Some("\"both\""));
        assert!(matches!(
            events.last(),
            Some(ReplicaEvent::SyncDone {
                pushed: 1,
                conflicts: 1,
                ..
            })
        ));
        assert_eq!(
            r.resolve("a", Resolution::KeepLocal),
            Err(ResolveError::NotAwaiting)
        );
    }

    #[test]
    fn cursor_never_passes_unemitted_objects() {
        let mut server = MemoryCollection::new(3);
        let mut r = replica(ConflictPolicy::Manual);
        write(&mut server, "a", put("1"));
        run(&mut r, &mut server);
        r.local_put("a", "", data("2"), 1).unwrap();
        write(&mut server, "b", put("1"));
        write(&mut server, "a", put("3"));
        write(&mut server, "c", put("1"));
        let events = run(&mut r, &mut server);
        assert_eq!(
            conflicts(&events),
            [("a", ConflictOutcome::AwaitingResolution)]
        );
        assert!(received(&events).is_empty(), "the page is held back");
        assert_eq!(r.state().cursor, 1);

        // A crash now loses nothing: the restored replica meets the conflict again.
        let mut again = Replica::restore(r.state(), config(ConflictPolicy::Manual));
        again.add_pending("a", r.pending()["a"].clone()).unwrap();
        let events = run(&mut again, &mut server);
        assert_eq!(
            conflicts(&events),
            [("a", ConflictOutcome::AwaitingResolution)]
        );

        r.resolve("a", Resolution::KeepServer).unwrap();
        let events = drain(&mut r);
        assert_eq!(
            received(&events),
            [
                ("b".to_string(), 2),
                ("a".to_string(), 3),
                ("c".to_string(), 4)
            ]
        );
        assert!(matches!(&events[0], ReplicaEvent::Received { state, .. } if state.cursor == 4));
        assert!(r.pending().is_empty());
        assert!(matches!(events.last(), Some(ReplicaEvent::SyncDone { .. })));
    }

    #[test]
    fn same_content_is_not_a_conflict() {
        let mut server = MemoryCollection::new(3);
        let mut r = replica(ConflictPolicy::Manual);
        r.local_put("a", "", data(r#"{"v":1}"#), 0).unwrap();
        r.local_delete("gone", "", 0).unwrap();
        write(&mut server, "a", put(r#"{"v":1}"#));
        write(&mut server, "gone", Change::Delete);
        let events = run(&mut r, &mut server);
        assert!(conflicts(&events).is_empty());
        assert_eq!(
            received(&events),
            [("a".to_string(), 1), ("gone".to_string(), 2)]
        );
        assert!(r.pending().is_empty());
        assert_eq!(server.head().last_seq, 2);
    }

    #[test]
    fn stale_base_on_a_known_version_goes_to_the_policy() {
        // The app edits `a` as if it were new, though the replica already has a@1: the server
        // refuses it with stale_base and a version at the cursor, which no page brings again.
        let mut server = MemoryCollection::new(3);
        let mut r = replica(ConflictPolicy::ServerWins);
        write(&mut server, "a", put("1"));
        run(&mut r, &mut server);
        r.local_put("a", "", data("2"), 0).unwrap();
        let events = run(&mut r, &mut server);
        assert_eq!(conflicts(&events), [("a", ConflictOutcome::KeptServer)]);
        assert_eq!(received(&events), [("a".to_string(), 1)]);
        assert!(r.pending().is_empty() && r.in_flight().is_none());

        let mut r = replica(ConflictPolicy::LocalWins);
        run(&mut r, &mut server);
        r.local_put("a", "", data("2"), 0).unwrap();
        let events = run(&mut r, &mut server);
        assert_eq!(conflicts(&events), [("a", ConflictOutcome::KeptLocal)]);
        assert_eq!(server_data(&server, "a").as_deref(), Some("2"));
    }

    #[test]
    fn edit_during_a_push_stays_pending_on_the_new_seq() {
        let mut server = MemoryCollection::new(3);
        let mut r = replica(ConflictPolicy::ServerWins);
        r.local_put("a", "", data("1"), 0).unwrap();
        r.start_sync();
        let pull = Request::Pull {
            since: pull_request(&mut r),
            limit: 3,
            horizon: None,
        };
        r.handle_response(serve(&mut server, &pull)).unwrap();
        let push = push_request(&mut r);
        r.local_put("a", "", data("2"), 0).unwrap();
        r.handle_response(serve(&mut server, &Request::Push(push)))
            .unwrap();
        assert!(matches!(
            drain(&mut r).as_slice(),
            [ReplicaEvent::Saved { objects, .. }] if objects[0].change == put("1")
        ));
        assert_eq!(r.pending()["a"].base_seq, 1);
        let push = push_request(&mut r);
        assert_eq!(push.objects[0].base_seq, Some(1));
        assert_eq!(push.since, Some(1));
        r.handle_response(serve(&mut server, &Request::Push(push)))
            .unwrap();
        assert_eq!(server_data(&server, "a").as_deref(), Some("2"));
        assert!(r.pending().is_empty());
        assert!(!r.is_syncing());
    }

    #[test]
    fn later_edit_keeps_the_first_base() {
        let mut r = replica(ConflictPolicy::ServerWins);
        r.local_put("a", "", data("1"), 3).unwrap();
        r.local_delete("a", "", 9).unwrap();
        assert_eq!(
            r.pending()["a"],
            PendingChange {
                kind: String::new(),
                change: Change::Delete,
                base_seq: 3
            }
        );
        assert_eq!(
            r.local_put("", "", data("1"), 0),
            Err(EditError::Id(IdError::Empty))
        );
        assert_eq!(
            r.local_put("b", "a\u{7}", data("1"), 0),
            Err(EditError::Type(IdError::ControlCharacter))
        );
    }

    /// Found by the `replica` fuzz target: a `stale_base` conflict carried a server version
    /// above the cursor that the answer's `changes` left out, for an id with no pending edit;
    /// the replica dropped it and moved its cursor past it.
    #[test]
    fn a_conflicts_version_above_the_cursor_is_handed_over_even_without_a_pending_edit() {
        let mut r = Replica::new("c", Config::default());
        r.local_put("a", "", data("1"), 0).unwrap();
        r.start_sync();
        let _ = r.poll_request();
        r.handle_response(Response::Pulled(PullAnswer::page(
            None,
            0,
            0,
            0,
            10,
            vec![],
        )))
        .unwrap();
        let Some(Request::Push(_)) = r.poll_request() else {
            panic!("expected a push")
        };
        let mut theirs = Object::tombstone("z".to_string(), String::new(), 2);
        theirs.deleted = false;
        theirs.data = Some(data("2"));
        r.handle_response(Response::Conflict(ConflictAnswer {
            error: crate::error::ErrorCode::Conflict,
            message: String::new(),
            collection_id: Some("e1".to_string()),
            until: 2,
            conflicts: vec![crate::push::Conflict {
                id: "z".to_string(),
                reason: ConflictReason::StaleBase,
                server: Some(theirs.clone()),
            }],
            changes: vec![],
            more: false,
        }))
        .unwrap();
        let received: Vec<Object> = core::iter::from_fn(|| r.poll_event())
            .filter_map(|event| match event {
                ReplicaEvent::Received { objects, state } => {
                    assert_eq!(state.cursor, 2);
                    Some(objects)
                }
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(received, vec![theirs]);
    }

    /// Found by the `replica` fuzz target: a conflict on one id carrying the server version of
    /// another was handed over in place of the pages' versions of that other id.
    #[test]
    fn a_conflict_with_the_version_of_another_object_is_refused() {
        let mut r = Replica::new("c", Config::default());
        r.local_delete("a", "", 0).unwrap();
        r.start_sync();
        let _ = r.poll_request();
        r.handle_response(Response::Pulled(PullAnswer::page(
            None,
            0,
            0,
            0,
            10,
            vec![],
        )))
        .unwrap();
        let _ = r.poll_request();
        r.handle_response(Response::Conflict(ConflictAnswer {
            error: crate::error::ErrorCode::Conflict,
            message: String::new(),
            collection_id: None,
            until: 1,
            conflicts: vec![crate::push::Conflict {
                id: "e".to_string(),
                reason: ConflictReason::StaleBase,
                server: Some(Object::tombstone("a".to_string(), String::new(), 1)),
            }],
            changes: vec![Object::tombstone("a".to_string(), String::new(), 1)],
            more: false,
        }))
        .unwrap();
        assert_eq!(
            r.poll_event(),
            Some(ReplicaEvent::SyncFailed {
                failure: Failure::Protocol("a conflict carries the version of another object")
            })
        );
        assert_eq!(r.cursor(), 0, "nothing of the answer was taken");
        assert!(r.pending().contains_key("a"));
    }

    /// Found by the `replica` fuzz target: a conflict's server version newer than the version
    /// of the same id in the answer's `changes` was skipped as "already decided", and the
    /// cursor passed it.
    #[test]
    fn a_conflicts_version_newer_than_the_pages_is_not_skipped() {
        let mut r = Replica::new("c", Config::default());
        r.local_delete("a", "", 0).unwrap();
        r.start_sync();
        let _ = r.poll_request();
        r.handle_response(Response::Pulled(PullAnswer::page(
            None,
            0,
            0,
            0,
            10,
            vec![],
        )))
        .unwrap();
        let _ = r.poll_request();
        let tombstone = |id: &str, seq| Object::tombstone(id.to_string(), String::new(), seq);
        r.handle_response(Response::Conflict(ConflictAnswer {
            error: crate::error::ErrorCode::Conflict,
            message: String::new(),
            collection_id: Some("e1".to_string()),
            until: 3,
            conflicts: vec![crate::push::Conflict {
                id: "d".to_string(),
                reason: ConflictReason::StaleBase,
                server: Some(tombstone("d", 3)),
            }],
            changes: vec![tombstone("d", 2)],
            more: false,
        }))
        .unwrap();
        let Some(ReplicaEvent::Received { objects, state }) = r.poll_event() else {
            panic!("expected the versions")
        };
        assert_eq!(objects, vec![tombstone("d", 2), tombstone("d", 3)]);
        assert_eq!(state.cursor, 3);
    }

    /// Found by the `replica` fuzz target: a page whose `until` is `u64::MAX` put the cursor
    /// there, and the next push answer overflowed the check of its seqs.
    #[test]
    fn a_cursor_at_the_end_of_the_seqs_does_not_overflow() {
        let mut r = Replica::new("c", Config::default());
        r.local_put("a", "", data("1"), 0).unwrap();
        r.start_sync();
        let _ = r.poll_request();
        let mut end = PullAnswer::page(Some("e1".to_string()), 0, 0, u64::MAX, 10, vec![]);
        end.until = u64::MAX;
        r.handle_response(Response::Pulled(end)).unwrap();
        let Some(Request::Push(_)) = r.poll_request() else {
            panic!("expected a push")
        };
        r.handle_response(Response::Pushed(PushOk {
            collection_id: "e1".to_string(),
            seqs: vec![1],
            until: 1,
            replayed: false,
        }))
        .unwrap();
        assert_eq!(
            r.cursor(),
            u64::MAX,
            "a push answer that does not fit moves nothing"
        );
    }

    /// Found by the `replica` fuzz target: a put of `null` went out as `"data":null`, which the
    /// server reads as no data, so every cycle's push was refused with `400` and the edits
    /// batched with it never got through.
    #[test]
    fn edits_the_server_would_always_refuse_are_refused_up_front() {
        let mut r = Replica::new("c", Config::default());
        let unpushable = |result| matches!(result, Err(EditError::Unpushable(_)));
        assert!(unpushable(r.local_put("a", "", data("null"), 0)));
        let deep = "[".repeat(65) + &"]".repeat(65);
        assert!(unpushable(r.local_put(
            "a",
            "",
            JsonData::from_trusted(deep),
            0
        )));
        let late = Change::Put {
            data: data("1"),
            expires: Some(MAX_EXPIRES_MS + 1),
        };
        assert!(unpushable(r.local_change("a", "", late, 0)));
        let restored = PendingChange {
            kind: String::new(),
            change: put("null"),
            base_seq: 0,
        };
        assert!(matches!(
            r.add_pending("a", restored),
            Err(EditError::Unpushable(_))
        ));
        assert!(r.pending().is_empty(), "nothing was taken in");
        // What is left is pushable: the push reads back from its own JSON.
        r.local_put("b", "", data("[null]"), 0).unwrap();
        r.start_sync();
        let _ = r.poll_request();
        r.handle_response(Response::Pulled(PullAnswer::page(
            None,
            0,
            0,
            0,
            10,
            vec![],
        )))
        .unwrap();
        let Some(Request::Push(push)) = r.poll_request() else {
            panic!("expected a push")
        };
        assert_eq!(
            PushRequest::parse(push.to_json().as_bytes(), &Limits::default()),
            Ok(push)
        );
    }

    #[test]
    fn batches_are_capped_at_max_batch() {
        let mut server = MemoryCollection::new(3);
        let mut r = Replica::new(
            "c",
            Config {
                max_batch: 2,
                ..config(ConflictPolicy::ServerWins)
            },
        );
        for i in 0..5 {
            r.local_put(format!("o{i}"), "", data("1"), 0).unwrap();
        }
        r.start_sync();
        let mut pushes = Vec::new();
        while let Some(request) = r.poll_request() {
            if let Request::Push(push) = &request {
                pushes.push((push.push_id.clone().unwrap(), push.objects.len()));
            }
            r.handle_response(serve(&mut server, &request)).unwrap();
        }
        let expected = [("c:1", 2), ("c:2", 2), ("c:3", 1)].map(|(p, n)| (p.to_string(), n));
        assert_eq!(pushes, expected);
        assert_eq!(r.cursor(), 5);
        assert_eq!(r.state().next_push_number, 4);
    }

    #[test]
    fn reset_keeps_pending_edits() {
        let mut server = MemoryCollection::new(3);
        let mut r = replica(ConflictPolicy::ServerWins);
        write(&mut server, "a", put("1"));
        write(&mut server, "b", put("1"));
        run(&mut r, &mut server);
        r.local_put("a", "", data("2"), 1).unwrap();
        r.local_put("c", "", data("3"), 0).unwrap();
        server.reset("epoch-2".to_string());

        let events = run(&mut r, &mut server);
        let ReplicaEvent::Reset {
            epoch_changed: true,
            state,
        } = &events[0]
        else {
            panic!("{events:?}");
        };
        assert_eq!((state.cursor, state.collection_id.as_deref()), (0, None));
        assert!(conflicts(&events).is_empty());
        assert_eq!(r.collection_id(), Some("epoch-2"));
        assert_eq!(server_data(&server, "a").as_deref(), Some("2"));
        assert_eq!(server_data(&server, "c").as_deref(), Some("3"));
        assert_eq!(server_data(&server, "b"), None);
        assert!(r.pending().is_empty());
    }

    #[test]
    fn reset_answer_to_a_push_zeroes_the_bases() {
        let mut server = MemoryCollection::new(3);
        let mut r = replica(ConflictPolicy::ServerWins);
        write(&mut server, "a", put("1"));
        run(&mut r, &mut server);
        r.local_put("a", "", data("2"), 1).unwrap();
        r.start_sync();
        let pull = Request::Pull {
            since: pull_request(&mut r),
            limit: 3,
            horizon: None,
        };
        r.handle_response(serve(&mut server, &pull)).unwrap();
        let push = push_request(&mut r);
        server.reset("epoch-2".to_string());
        r.handle_response(serve(&mut server, &Request::Push(push)))
            .unwrap();
        assert!(matches!(
            drain(&mut r).as_slice(),
            [ReplicaEvent::Reset { epoch_changed: true, state }] if state.in_flight.is_none()
        ));
        assert_eq!(r.pending()["a"].base_seq, 0);
        while let Some(request) = r.poll_request() {
            r.handle_response(serve(&mut server, &request)).unwrap();
        }
        assert_eq!(server_data(&server, "a").as_deref(), Some("2"));
    }

    #[test]
    fn horizon_reset_keeps_base_seqs() {
        let mut server = MemoryCollection::new(3);
        let mut r = replica(ConflictPolicy::ServerWins);
        write(&mut server, "a", put("1"));
        write(&mut server, "b", put("1"));
        run(&mut r, &mut server);
        r.local_put("a", "", data("2"), 1).unwrap();
        write(&mut server, "b", Change::Delete);
        write(&mut server, "c", put("1"));
        server.sweep(10, 5);
        assert_eq!(server.head().horizon, 3);

        let events = run(&mut r, &mut server);
        assert!(matches!(
            &events[0],
            ReplicaEvent::Reset { epoch_changed: false, state }
                if state.collection_id.as_deref() == Some("epoch-1")
        ));
        assert!(
            conflicts(&events).is_empty(),
            "a@1 is the version the edit started from"
        );
        assert_eq!(received(&events), [("c".to_string(), 4)]);
        assert_eq!(server_data(&server, "a").as_deref(), Some("2"));
        assert!(r.pending().is_empty());
    }

    /// Four live objects and a purged tombstone above them: more than a page (3) sits below
    /// the horizon (6).
    fn server_with_live_objects_below_the_horizon() -> MemoryCollection {
        let mut server = MemoryCollection::new(3);
        for id in ["a", "b", "c", "d"] {
            write(&mut server, id, put("1"));
        }
        write(&mut server, "gone", put("1"));
        write(&mut server, "gone", Change::Delete);
        server.sweep(10, 5);
        assert_eq!(server.head().horizon, 6);
        server
    }

    /// A full sync pages from `since=0` to below the horizon; the next page is answered
    /// because the replica echoes the horizon its first page carried.
    #[test]
    fn fresh_replica_pages_past_a_purged_horizon() {
        let mut server = server_with_live_objects_below_the_horizon();
        let mut r = replica(ConflictPolicy::ServerWins);
        let events = run(&mut r, &mut server);
        assert!(
            matches!(
                events.last(),
                Some(ReplicaEvent::SyncDone { pulled: 4, .. })
            ),
            "{events:?}"
        );
        assert!(!events
            .iter()
            .any(|e| matches!(e, ReplicaEvent::Reset { .. })));
        assert_eq!(r.cursor(), 6);
        assert_eq!(r.state().paging_horizon, None, "the run is over");
    }

    #[test]
    fn a_full_sync_echoes_its_first_horizon_while_below_it() {
        let mut server = server_with_live_objects_below_the_horizon();
        for id in ["e", "f", "g"] {
            write(&mut server, id, put("1"));
        }
        let mut r = Replica::new(
            "c",
            Config {
                pull_limit: 2,
                ..config(ConflictPolicy::ServerWins)
            },
        );
        r.start_sync();
        let mut sent = Vec::new();
        let mut persisted = Vec::new();
        while let Some(request) = r.poll_request() {
            if let Request::Pull { since, horizon, .. } = request {
                sent.push((since, horizon));
            }
            r.handle_response(serve(&mut server, &request)).unwrap();
            for event in drain(&mut r) {
                if let ReplicaEvent::Received { state, .. } = event {
                    persisted.push((state.cursor, state.paging_horizon));
                }
            }
        }
        // Pages end at 2, 4, 8 (past the purged 5 and 6), then 9.
        assert_eq!(
            sent,
            [(0, None), (2, Some(6)), (4, Some(6)), (8, None)],
            "echoed below the horizon only"
        );
        assert_eq!(
            persisted,
            [(2, Some(6)), (4, Some(6)), (8, Some(6)), (9, None)]
        );
    }

    #[test]
    fn an_interrupted_full_sync_resumes_after_a_restart() {
        let mut server = server_with_live_objects_below_the_horizon();
        let mut r = replica(ConflictPolicy::ServerWins);
        r.start_sync();
        let first = r.poll_request().unwrap();
        r.handle_response(serve(&mut server, &first)).unwrap();
        let Some(ReplicaEvent::Received { state, .. }) = drain(&mut r).pop() else {
            panic!("the first page is handed over");
        };
        assert_eq!((state.cursor, state.paging_horizon), (3, Some(6)));
        let saved = serde_json::to_string(&state).unwrap();
        drop(r);

        let state: ReplicaState = serde_json::from_str(&saved).unwrap();
        let mut r = Replica::restore(state, config(ConflictPolicy::ServerWins));
        r.start_sync();
        assert_eq!(
            r.poll_request(),
            Some(Request::Pull {
                since: 3,
                limit: 3,
                horizon: Some(6)
            })
        );
        r.handle_response(serve(
            &mut server,
            &Request::Pull {
                since: 3,
                limit: 3,
                horizon: Some(6),
            },
        ))
        .unwrap();
        let events = drain(&mut r);
        assert_eq!(received(&events), [("d".to_string(), 4)]);
        assert!(matches!(events.last(), Some(ReplicaEvent::SyncDone { .. })));
        assert_eq!((r.cursor(), r.state().paging_horizon), (6, None));
    }

    #[test]
    fn a_purge_during_a_full_sync_starts_it_over() {
        let mut server = server_with_live_objects_below_the_horizon();
        let mut r = replica(ConflictPolicy::ServerWins);
        r.start_sync();
        let first = r.poll_request().unwrap();
        r.handle_response(serve(&mut server, &first)).unwrap();
        drain(&mut r);
        // `b` was handed over at seq 2 and deleted since; the delete is purged before the
        // next page, so the echoed horizon is stale and the replica must start again.
        write(&mut server, "b", Change::Delete);
        server.sweep(20, 5);
        assert_eq!(server.head().horizon, 7);
        let events = {
            let mut events = Vec::new();
            while let Some(request) = r.poll_request() {
                r.handle_response(serve(&mut server, &request)).unwrap();
                events.extend(drain(&mut r));
            }
            events
        };
        let ReplicaEvent::Reset {
            epoch_changed: false,
            state,
        } = &events[0]
        else {
            panic!("{events:?}");
        };
        assert_eq!((state.cursor, state.paging_horizon), (0, None));
        assert_eq!(
            received(&events),
            [
                ("a".to_string(), 1),
                ("c".to_string(), 3),
                ("d".to_string(), 4)
            ]
        );
        assert!(matches!(events.last(), Some(ReplicaEvent::SyncDone { .. })));
        assert_eq!(r.cursor(), 7);
    }

    #[test]
    fn epoch_change_in_a_page_resets() {
        let mut server = MemoryCollection::new(3);
        let mut r = replica(ConflictPolicy::ServerWins);
        write(&mut server, "a", put("1"));
        run(&mut r, &mut server);
        server.reset("epoch-2".to_string());
        write(&mut server, "z", put("1"));
        // Pulling from the old cursor is still answerable, but the page names the new epoch.
        let events = run(&mut r, &mut server);
        assert!(matches!(
            &events[0],
            ReplicaEvent::Reset {
                epoch_changed: true,
                ..
            }
        ));
        assert_eq!(received(&events), [("z".to_string(), 2)]);
        assert_eq!(r.collection_id(), Some("epoch-2"));
    }

    #[test]
    fn contention_gives_up_after_max_rounds() {
        let mut server = MemoryCollection::new(3);
        let mut r = Replica::new(
            "c",
            Config {
                max_rounds: 2,
                ..config(ConflictPolicy::ServerWins)
            },
        );
        r.local_put("mine", "", data("1"), 0).unwrap();
        r.start_sync();
        let mut rounds = 0;
        while let Some(request) = r.poll_request() {
            if matches!(request, Request::Push(_)) {
                // Someone else always commits first.
                write(&mut server, &format!("other{rounds}"), put("1"));
                rounds += 1;
            }
            r.handle_response(serve(&mut server, &request)).unwrap();
        }
        let events = drain(&mut r);
        assert_eq!(rounds, 3);
        assert_eq!(
            events.last(),
            Some(&ReplicaEvent::SyncFailed {
                failure: Failure::Contention { rounds: 3 }
            })
        );
        assert!(r.pending().contains_key("mine"));
        assert_eq!(r.cursor(), 3, "the changes that won are applied");
        run(&mut r, &mut server);
        assert_eq!(server_data(&server, "mine").as_deref(), Some("1"));
    }

    #[test]
    fn a_refused_push_is_not_resent_but_an_unknown_one_is() {
        let mut r = replica(ConflictPolicy::ServerWins);
        r.local_put("a", "", data("1"), 0).unwrap();
        let empty = || Response::Pulled(PullAnswer::page(None, 0, 0, 0, 3, Vec::new()));
        for (failure, kept) in [
            (
                Failure::Status {
                    status: 503,
                    retry_after_ms: Some(1000),
                },
                true,
            ),
            (Failure::Network, true),
            (
                Failure::Status {
                    status: 413,
                    retry_after_ms: None,
                },
                false,
            ),
            (Failure::Unauthorized, false),
        ] {
            r.start_sync();
            if r.in_flight().is_none() {
                assert!(matches!(r.poll_request(), Some(Request::Pull { .. })));
                r.handle_response(empty()).unwrap();
            }
            let push = push_request(&mut r);
            r.handle_response(Response::Failed(failure.clone()))
                .unwrap();
            assert_eq!(drain(&mut r), [ReplicaEvent::SyncFailed { failure }]);
            assert_eq!(r.in_flight().is_some(), kept);
            if kept {
                assert_eq!(r.in_flight(), Some(&push));
            }
        }
    }

    #[test]
    fn answers_out_of_turn_are_refused() {
        let mut r = replica(ConflictPolicy::ServerWins);
        assert_eq!(
            r.handle_response(Response::Failed(Failure::Network)),
            Err(ResponseError::NoRequestOutstanding)
        );
        r.start_sync();
        r.start_sync();
        assert!(matches!(
            r.poll_request(),
            Some(Request::Pull { since: 0, .. })
        ));
        assert_eq!(r.poll_request(), None, "once");
        let ok = PushOk {
            collection_id: "e".to_string(),
            seqs: Vec::new(),
            until: 0,
            replayed: false,
        };
        r.handle_response(Response::Pushed(ok)).unwrap();
        assert_eq!(
            drain(&mut r),
            [ReplicaEvent::SyncFailed {
                failure: Failure::Protocol("a push answer to a pull")
            }]
        );
        assert!(!r.is_syncing());
    }
}
