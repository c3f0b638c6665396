//! The replica model test.
//!
//! Two to four replicas sync one collection of the reference store ([`MemoryCollection`]),
//! every request and answer going through its JSON form, while the harness edits, loses
//! answers (after the server applied the request), loses requests, restarts replicas from their
//! persisted state, reinstalls them, purges tombstones, moves the clock back or forward and
//! resets the collection, in a random order. Pull limits are tiny, small or whole: with the
//! smaller ones a full sync pages past the horizon by echoing it. A second mix of operations
//! (`full_syncs_page_past_a_moving_horizon`) is heavy on deletes and purges, so that full
//! syncs often meet them.
//!
//! Along the way every answer of the store is checked against an independent reference model
//! written here, and every replica's "app store" (what the events told it to store) against
//! the replica's own pending queue. At the end the replicas are synced until quiet, and then:
//!
//! - (a) every app store holds exactly the server's live objects and nothing pending;
//! - (b) every committed write was based on the previous committed version of its id;
//! - (c) every refused batch was refused for a reason the reference model agrees with;
//! - (d) the committed seqs are exactly `1..=last_seq`;
//! - (e) a replayed push wrote nothing;
//! - (f) every local edit was committed, or knowingly dropped in a conflict, or found on the
//!   server already;
//! - (g) the replicas settle at all: every full sync ends, however many pages sit below the
//!   horizon.
//!
//! A narrower property (`a_full_sync_across_writes_and_purges_misses_no_delete`) has one fresh
//! replica page through live objects under the horizon while other writes, deletes and purges
//! land between its requests: it must end with exactly the server's live objects, so a page
//! answered below the horizon never hides a purged delete.

use proptest::prelude::*;
use std::collections::BTreeMap;
use sync_core::memory_store::{MemoryCollection, PushOutcome};
use sync_core::pull::PullQuery;
use sync_core::push::{Change, Conflict, ConflictReason, PushObject, PushOk};
use sync_core::{
    Config, ConflictOutcome, ConflictPolicy, Failure, JsonData, Limits, Object, PendingChange,
    PullAnswer, PushRequest, Replica, ReplicaEvent, ReplicaState, Request, Resolution, Response,
};

/// A small id space, so that replicas keep running into each other.
const IDS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
/// How many operations a tombstone survives before a sweep may purge it.
const RETENTION: u64 = 8;
/// The store's page size for conflict answers, and a small pull limit.
const PAGE: usize = 3;
/// The smallest pull limit: any full sync with two live objects below the horizon pages
/// past it.
const TINY: usize = 1;
/// A pull limit that covers the whole id space, so a full sync never pages.
const WHOLE: usize = IDS.len() + 2;

fn kind_of(id: &str) -> &'static str {
    if id < "d" {
        ""
    } else {
        "todo"
    }
}

/// The base seq of an edit made on top of `object`: 0 for nothing, or a tombstone.
fn base_of(object: Option<&Object>) -> u64 {
    object.filter(|o| !o.deleted).map_or(0, |o| o.seq)
}

fn same_content(pending: &PendingChange, object: &Object) -> bool {
    match &pending.change {
        Change::Delete => object.deleted,
        Change::Put { data, .. } => !object.deleted && object.data.as_ref() == Some(data),
    }
}

fn json_round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
    serde_json::from_str(&serde_json::to_string(value).unwrap()).unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize, usize),
    Delete(usize, usize),
    /// `start_sync`.
    Sync(usize),
    /// Poll the replica's request and have the server apply it; the answer waits.
    Send(usize),
    /// Deliver the waiting answer.
    Answer(usize),
    /// Lose the waiting answer (the server applied the request) or, if none waits, the next
    /// request on its way: the replica gets `Failed(Network)`.
    Lose(usize),
    /// Restart the replica from its persisted state and its app store's pending edits.
    Restart(usize),
    /// An idle replica with nothing pending starts over as a new installation (a new client
    /// id, an empty app store): its next sync is a full sync, at whatever the horizon is then.
    Reinstall(usize),
    /// Resolve the manual conflicts that wait.
    Resolve(usize),
    /// Purge old tombstones; the horizon moves.
    Sweep,
    /// The server's clock steps back, so later writes carry older timestamps than earlier
    /// ones, and a sweep meets tombstones whose age does not follow their seqs.
    ClockBack,
    /// A retention window passes at once (the server was down, or its clock jumped): the
    /// next sweep may purge a delete made just before, in the middle of someone's sync.
    TimePasses,
    /// Delete the collection: a new epoch.
    ServerReset,
}

/// How the operations are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    /// A bit of everything.
    Even,
    /// Busy replicas (many requests and answers), many deletes, purges and new
    /// installations: full syncs keep meeting a horizon with live objects below it, and
    /// purges between their pages.
    Purges,
}

fn op(mix: Mix) -> impl Strategy<Value = Op> {
    let r = 0..4usize;
    let id = 0..IDS.len();
    // put, delete, sync, send, answer, lose, restart, reinstall, resolve, sweep, time passes
    let w = match mix {
        Mix::Even => [6, 2, 3, 8, 8, 2, 1, 1, 2, 1, 1],
        Mix::Purges => [16, 8, 8, 30, 30, 1, 1, 3, 1, 5, 3],
    };
    prop_oneof![
        w[0] => (r.clone(), id.clone()).prop_map(|(r, i)| Op::Put(r, i)),
        w[1] => (r.clone(), id).prop_map(|(r, i)| Op::Delete(r, i)),
        w[2] => r.clone().prop_map(Op::Sync),
        w[3] => r.clone().prop_map(Op::Send),
        w[4] => r.clone().prop_map(Op::Answer),
        w[5] => r.clone().prop_map(Op::Lose),
        w[6] => r.clone().prop_map(Op::Restart),
        w[7] => r.clone().prop_map(Op::Reinstall),
        w[8] => r.prop_map(Op::Resolve),
        w[9] => Just(Op::Sweep),
        w[10] => Just(Op::TimePasses),
        1 => Just(Op::ClockBack),
        1 => Just(Op::ServerReset),
    ]
}

/// One committed write, as the reference model saw it.
#[derive(Debug, Clone)]
struct Write {
    epoch: String,
    id: String,
    seq: u64,
    base_seq: Option<u64>,
    deleted: bool,
}

/// What the reference model expects of a push.
#[derive(Debug)]
enum Expect {
    Replay(PushOk),
    Reset,
    Conflicts(Vec<(String, ConflictReason)>),
    Commit { first_seq: u64 },
}

/// The contract's rules, written again from `PROTOCOL.md` and independent of the store.
#[derive(Debug, Default)]
struct Reference {
    epoch: Option<String>,
    last_seq: u64,
    horizon: u64,
    /// id → (latest version, when it was written).
    objects: BTreeMap<String, (Object, u64)>,
    /// push_id → first answer, for this epoch.
    pushes: BTreeMap<String, PushOk>,
    log: Vec<Write>,
}

impl Reference {
    /// `client_horizon`: the `horizon` a paging client echoed. Below the horizon, only an
    /// echo of the current one is answered (nothing was purged since it was seen).
    fn answerable(&self, since: u64, client_horizon: Option<u64>) -> bool {
        since == 0
            || (since <= self.last_seq
                && (self.horizon <= since || client_horizon == Some(self.horizon)))
    }

    /// The page after `since`: objects, `until`, `more`.
    fn page(&self, since: u64, limit: usize) -> (Vec<Object>, u64, bool) {
        let mut after: Vec<Object> = self
            .objects
            .values()
            .map(|(o, _)| o.clone())
            .filter(|o| o.seq > since)
            .collect();
        after.sort_by_key(|o| o.seq);
        let more = after.len() > limit;
        after.truncate(limit);
        let until = match after.last() {
            Some(last) if more => last.seq,
            _ => self.last_seq.max(since),
        };
        (after, until, more)
    }

    fn expect(&self, push: &PushRequest) -> Expect {
        if let Some(first) = push.push_id.as_ref().and_then(|p| self.pushes.get(p)) {
            return Expect::Replay(first.clone());
        }
        if push.collection_id.is_some() && push.collection_id != self.epoch {
            return Expect::Reset;
        }
        if push
            .since
            .is_some_and(|since| !self.answerable(since, None))
        {
            return Expect::Reset;
        }
        let changed = push.since.is_some_and(|since| since < self.last_seq);
        let conflicts: Vec<(String, ConflictReason)> = push
            .objects
            .iter()
            .filter_map(|o| {
                let current = self.objects.get(&o.id).map(|(c, _)| c);
                let base_ok = match (o.base_seq, current) {
                    (None, _) | (Some(0), None) => true,
                    (Some(0), Some(c)) => c.deleted,
                    (Some(base), Some(c)) => c.seq == base,
                    (Some(_), None) => false,
                };
                if !base_ok {
                    Some((o.id.clone(), ConflictReason::StaleBase))
                } else if changed {
                    Some((o.id.clone(), ConflictReason::CollectionChanged))
                } else {
                    None
                }
            })
            .collect();
        if conflicts.is_empty() {
            Expect::Commit {
                first_seq: self.last_seq + 1,
            }
        } else {
            Expect::Conflicts(conflicts)
        }
    }

    fn commit(&mut self, push: &PushRequest, new_epoch: &str, now: u64) -> PushOk {
        let epoch = self
            .epoch
            .get_or_insert_with(|| new_epoch.to_string())
            .clone();
        let mut seqs = Vec::new();
        for object in &push.objects {
            self.last_seq += 1;
            let version = object.to_object(self.last_seq);
            self.log.push(Write {
                epoch: epoch.clone(),
                id: object.id.clone(),
                seq: self.last_seq,
                base_seq: object.base_seq,
                deleted: version.deleted,
            });
            self.objects.insert(object.id.clone(), (version, now));
            seqs.push(self.last_seq);
        }
        let ok = PushOk {
            collection_id: epoch,
            seqs,
            until: self.last_seq,
            replayed: false,
        };
        if let Some(push_id) = &push.push_id {
            self.pushes.insert(push_id.clone(), ok.clone());
        }
        ok
    }

    /// Purges every tombstone up to the highest one written before the cutoff, younger ones
    /// included, so that the horizon moves whenever anything is purged.
    fn sweep(&mut self, now: u64) {
        let cutoff = now.saturating_sub(RETENTION);
        let Some(up_to) = self
            .objects
            .values()
            .filter(|(o, written)| o.deleted && *written < cutoff)
            .map(|(o, _)| o.seq)
            .max()
        else {
            return;
        };
        assert!(
            up_to > self.horizon,
            "no tombstone is left at or below the horizon"
        );
        self.objects
            .retain(|_, (o, _)| !(o.deleted && o.seq <= up_to));
        self.horizon = up_to;
    }

    fn reset(&mut self, epoch: String) {
        self.epoch = Some(epoch);
        self.objects.clear();
        self.pushes.clear();
        self.horizon = self.last_seq;
    }
}

/// One replica and the application around it.
struct Client {
    replica: Replica,
    config: Config,
    /// The app store: the server versions the events handed over…
    synced: BTreeMap<String, Object>,
    /// …the pending edits, with their base seqs…
    pending: BTreeMap<String, PendingChange>,
    /// …and the replica state persisted with them, as JSON.
    persisted: String,
    /// The server's answer, computed and applied, not yet delivered.
    answer: Option<Response>,
    /// Manual conflicts waiting for a resolution: (id, server version).
    awaiting: Vec<(String, Option<Object>)>,
}

struct World {
    server: MemoryCollection,
    reference: Reference,
    clients: Vec<Client>,
    /// The harness's clock: one tick per operation.
    now: u64,
    resets: u32,
    installs: u32,
    edits: u64,
    resolutions: u64,
    /// Local edits whose fate is not known yet: (client, id) → the edit.
    open_edits: BTreeMap<(usize, String), Change>,
    /// Every push_id sent, with its push: a push_id never names two different pushes.
    push_ids: BTreeMap<String, PushRequest>,
}

impl World {
    fn new(policies: &[ConflictPolicy], pull_limit: usize, max_batch: usize) -> World {
        let clients = policies
            .iter()
            .enumerate()
            .map(|(i, policy)| {
                let config = Config {
                    pull_limit,
                    max_batch,
                    max_rounds: 3,
                    policy: *policy,
                };
                let replica = Replica::new(format!("client-{i}"), config.clone());
                Client {
                    persisted: serde_json::to_string(&replica.state()).unwrap(),
                    replica,
                    config,
                    synced: BTreeMap::new(),
                    pending: BTreeMap::new(),
                    answer: None,
                    awaiting: Vec::new(),
                }
            })
            .collect();
        World {
            server: MemoryCollection::new(PAGE),
            reference: Reference::default(),
            clients,
            now: 0,
            resets: 0,
            installs: 0,
            edits: 0,
            resolutions: 0,
            open_edits: BTreeMap::new(),
            push_ids: BTreeMap::new(),
        }
    }

    fn unique_put(&mut self) -> Change {
        self.edits += 1;
        Change::Put {
            data: JsonData::parse(&format!(r#"{{"edit":{}}}"#, self.edits)).unwrap(),
            expires: None,
        }
    }

    fn apply(&mut self, op: &Op) {
        self.now += 1;
        let n = self.clients.len();
        match *op {
            Op::Put(c, id) => {
                let change = self.unique_put();
                self.edit(c % n, IDS[id], change);
            }
            Op::Delete(c, id) => self.edit(c % n, IDS[id], Change::Delete),
            Op::Sync(c) => {
                self.clients[c % n].replica.start_sync();
                self.drain(c % n);
            }
            Op::Send(c) => self.send(c % n),
            Op::Answer(c) => self.answer(c % n),
            Op::Lose(c) => self.lose(c % n),
            Op::Restart(c) => self.restart(c % n),
            Op::Reinstall(c) => self.reinstall(c % n),
            Op::Resolve(c) => self.resolve_all(c % n),
            Op::Sweep => {
                self.server.sweep(self.now, RETENTION);
                self.reference.sweep(self.now);
            }
            Op::ClockBack => self.now = self.now.saturating_sub(RETENTION / 2),
            Op::TimePasses => self.now += RETENTION,
            Op::ServerReset => {
                self.resets += 1;
                let epoch = format!("epoch-{}", self.resets);
                self.server.reset(epoch.clone());
                self.reference.reset(epoch);
            }
        }
        self.check_store();
    }

    /// The store's whole state equals the reference model's.
    fn check_store(&self) {
        let head = self.server.head();
        assert_eq!(
            (&head.collection_id, head.last_seq, head.horizon),
            (
                &self.reference.epoch,
                self.reference.last_seq,
                self.reference.horizon
            )
        );
        let stored: Vec<&Object> = self.server.objects().collect();
        let (expected, _, _) = self.reference.page(0, usize::MAX);
        assert_eq!(stored, expected.iter().collect::<Vec<_>>());
    }

    fn edit(&mut self, c: usize, id: &str, change: Change) {
        let client = &mut self.clients[c];
        let base_seq = match client.pending.get(id) {
            Some(pending) => pending.base_seq,
            None => base_of(client.synced.get(id)),
        };
        client
            .replica
            .local_change(id, kind_of(id), change.clone(), base_seq)
            .unwrap();
        client.pending.insert(
            id.to_string(),
            PendingChange {
                kind: kind_of(id).to_string(),
                change: change.clone(),
                base_seq,
            },
        );
        self.open_edits.insert((c, id.to_string()), change);
        self.check_mirror(c);
    }

    fn send(&mut self, c: usize) {
        if self.clients[c].answer.is_some() {
            return;
        }
        let Some(request) = self.poll(c) else {
            return;
        };
        let response = self.serve(c, request);
        self.clients[c].answer = Some(response);
    }

    /// The replica's next request; a push is persisted before it leaves.
    fn poll(&mut self, c: usize) -> Option<Request> {
        let client = &mut self.clients[c];
        let request = client.replica.poll_request();
        if let Some(Request::Push(_)) = &request {
            client.persisted = serde_json::to_string(&client.replica.state()).unwrap();
        }
        self.drain(c);
        request
    }

    fn answer(&mut self, c: usize) {
        if let Some(response) = self.clients[c].answer.take() {
            self.clients[c].replica.handle_response(response).unwrap();
            self.drain(c);
        }
    }

    fn lose(&mut self, c: usize) {
        if self.clients[c].answer.take().is_none() && self.poll(c).is_none() {
            return;
        }
        self.clients[c]
            .replica
            .handle_response(Response::Failed(Failure::Network))
            .unwrap();
        self.drain(c);
    }

    fn reinstall(&mut self, c: usize) {
        let client = &mut self.clients[c];
        let idle = client.pending.is_empty()
            && client.answer.is_none()
            && client.awaiting.is_empty()
            && client.replica.in_flight().is_none()
            && !client.replica.is_syncing();
        if !idle {
            return;
        }
        self.installs += 1;
        client.replica = Replica::new(
            format!("client-{c}-{}", self.installs),
            client.config.clone(),
        );
        client.synced.clear();
        client.persisted = serde_json::to_string(&client.replica.state()).unwrap();
    }

    fn restart(&mut self, c: usize) {
        let client = &mut self.clients[c];
        client.answer = None;
        client.awaiting.clear();
        let state: ReplicaState = serde_json::from_str(&client.persisted).unwrap();
        client.replica = Replica::restore(state, client.config.clone());
        for (id, pending) in &client.pending {
            client
                .replica
                .add_pending(id.clone(), pending.clone())
                .unwrap();
        }
        self.check_mirror(c);
    }

    /// The server's answer to `request`, both having gone through their JSON forms, checked
    /// against the reference model.
    fn serve(&mut self, c: usize, request: Request) -> Response {
        match request {
            Request::Pull {
                since,
                limit,
                horizon,
            } => {
                if since == 0 {
                    assert_eq!(horizon, None, "a full sync starts without a horizon");
                }
                let (since, limit) = (since.to_string(), limit.to_string());
                let horizon = horizon.map(|h| h.to_string());
                let mut pairs = vec![("since", since.as_str()), ("limit", limit.as_str())];
                pairs.extend(horizon.as_deref().map(|h| ("horizon", h)));
                let query = PullQuery::from_pairs(pairs, &Limits::default()).unwrap();
                match self.server.pull(&query) {
                    Ok(page) => {
                        assert!(self.reference.answerable(query.since, query.horizon));
                        let (objects, until, more) = self.reference.page(query.since, query.limit);
                        assert_eq!(
                            (&page.objects, page.until, page.more),
                            (&objects, until, more)
                        );
                        assert_eq!(page.collection_id, self.reference.epoch);
                        let wire: PullAnswer = serde_json::from_str(&page.to_json()).unwrap();
                        assert_eq!(wire, page);
                        Response::Pulled(wire)
                    }
                    Err(reset) => {
                        assert!(!self.reference.answerable(query.since, query.horizon));
                        Response::ResetRequired(json_round_trip(&reset))
                    }
                }
            }
            Request::Push(push) => {
                let wire = PushRequest::parse(push.to_json().as_bytes(), &Limits::default())
                    .expect("the replica's push parses");
                assert_eq!(wire, push);
                assert!(
                    wire.objects.iter().all(|o| o.base_seq.is_some()) && wire.since.is_some(),
                    "every push carries since and base seqs"
                );
                let push_id = wire.push_id.clone().expect("every push has an id");
                if let Some(first) = self.push_ids.insert(push_id, wire.clone()) {
                    assert_eq!(first, wire, "a push_id was reused for another push");
                }
                let expected = self.reference.expect(&wire);
                let before: Vec<Object> = self.server.objects().cloned().collect();
                let last_seq_before = self.server.head().last_seq;
                let epoch = format!("epoch-{}", self.resets);
                let outcome = self.server.push(&wire, self.now, || epoch.clone());
                match (expected, &outcome) {
                    (Expect::Replay(first), PushOutcome::Committed(ok)) => {
                        // (e) A replay answers as the first time and writes nothing.
                        assert!(ok.replayed);
                        assert_eq!((&ok.seqs, ok.until), (&first.seqs, first.until));
                        assert_eq!(self.server.head().last_seq, last_seq_before);
                        assert_eq!(self.server.objects().cloned().collect::<Vec<_>>(), before);
                    }
                    (Expect::Reset, PushOutcome::Reset(answer)) => {
                        assert_eq!(answer.collection_id, self.reference.epoch);
                    }
                    (Expect::Conflicts(expected), PushOutcome::Conflict(answer)) => {
                        // (c) Refused for exactly the reasons the reference sees.
                        let got: Vec<(String, ConflictReason)> = answer
                            .conflicts
                            .iter()
                            .map(|c| (c.id.clone(), c.reason))
                            .collect();
                        assert_eq!(got, expected);
                        for Conflict { id, server, .. } in &answer.conflicts {
                            let current = self.reference.objects.get(id).map(|(o, _)| o);
                            assert_eq!(server.as_ref(), current);
                        }
                        let since = wire.since.unwrap();
                        let (changes, until, more) = self.reference.page(since, PAGE);
                        assert_eq!(
                            (&answer.changes, answer.until, answer.more),
                            (&changes, until, more)
                        );
                        assert_eq!(
                            self.server.head().last_seq,
                            last_seq_before,
                            "nothing applied"
                        );
                    }
                    (Expect::Commit { first_seq }, PushOutcome::Committed(ok)) => {
                        let mine = self.reference.commit(&wire, &epoch, self.now);
                        assert_eq!(ok, &mine);
                        assert_eq!(ok.seqs.first().copied(), Some(first_seq));
                        for object in &wire.objects {
                            let key = (c, object.id.clone());
                            if self.open_edits.get(&key) == Some(&object.change) {
                                self.open_edits.remove(&key);
                            }
                        }
                    }
                    (expected, outcome) => {
                        panic!("the reference expects {expected:?}, the store answered {outcome:?}")
                    }
                }
                match outcome {
                    PushOutcome::Committed(ok) => Response::Pushed(json_round_trip(&ok)),
                    PushOutcome::Conflict(answer) => Response::Conflict(json_round_trip(&answer)),
                    PushOutcome::Reset(answer) => Response::ResetRequired(json_round_trip(&answer)),
                }
            }
        }
    }

    /// Applies the replica's events to its app store, as the browser glue would.
    fn drain(&mut self, c: usize) {
        while let Some(event) = self.clients[c].replica.poll_event() {
            let client = &mut self.clients[c];
            match event {
                ReplicaEvent::Received { objects, state } => {
                    for object in objects {
                        if let Some(pending) = client.pending.remove(&object.id) {
                            // Only an edit the server already agrees with goes silently.
                            assert!(same_content(&pending, &object), "{pending:?} {object:?}");
                            let key = (c, object.id.clone());
                            if self.open_edits.get(&key) == Some(&pending.change) {
                                self.open_edits.remove(&key);
                            }
                        }
                        client.synced.insert(object.id.clone(), object);
                    }
                    client.persisted = serde_json::to_string(&state).unwrap();
                    self.check_cursor(c, &state);
                }
                ReplicaEvent::Saved { objects, state } => {
                    for saved in objects {
                        let write = PushObject {
                            id: saved.id.clone(),
                            kind: saved.kind.clone(),
                            base_seq: None,
                            change: saved.change.clone(),
                        };
                        client
                            .synced
                            .insert(saved.id.clone(), write.to_object(saved.seq));
                        if let Some(pending) = client.pending.get_mut(&saved.id) {
                            if pending.kind == saved.kind && pending.change == saved.change {
                                // Also an edit repeated while the push was out: it is saved.
                                client.pending.remove(&saved.id);
                                let key = (c, saved.id.clone());
                                if self.open_edits.get(&key) == Some(&saved.change) {
                                    self.open_edits.remove(&key);
                                }
                            } else {
                                pending.base_seq = base_of(client.synced.get(&saved.id));
                            }
                        }
                    }
                    client.persisted = serde_json::to_string(&state).unwrap();
                    self.check_cursor(c, &state);
                }
                ReplicaEvent::Reset {
                    epoch_changed,
                    state,
                } => {
                    client.synced.clear();
                    if epoch_changed {
                        for pending in client.pending.values_mut() {
                            pending.base_seq = 0;
                        }
                    }
                    client.persisted = serde_json::to_string(&state).unwrap();
                }
                ReplicaEvent::Conflict {
                    id,
                    local,
                    server,
                    outcome,
                } => {
                    assert_eq!(client.pending.get(&id), Some(&local));
                    match outcome {
                        ConflictOutcome::KeptServer => {
                            client.pending.remove(&id);
                            match &server {
                                Some(object) => client.synced.insert(id.clone(), object.clone()),
                                None => client.synced.remove(&id),
                            };
                            self.open_edits.remove(&(c, id));
                        }
                        ConflictOutcome::KeptLocal => {
                            let pending = client.pending.get_mut(&id).unwrap();
                            pending.base_seq = base_of(server.as_ref());
                        }
                        ConflictOutcome::AwaitingResolution => {
                            client.awaiting.push((id, server));
                        }
                    }
                }
                ReplicaEvent::SyncDone { .. } | ReplicaEvent::SyncFailed { .. } => {}
            }
        }
        self.check_mirror(c);
    }

    /// The app store's pending edits are the replica's pending queue, base seqs included.
    fn check_mirror(&self, c: usize) {
        let client = &self.clients[c];
        assert!(
            client.pending.iter().eq(client.replica.pending().iter()),
            "client {c}"
        );
    }

    /// The cursor never gets ahead of the data: every object whose latest version (in the
    /// state's epoch) is at or below the persisted cursor is in the app store at that version
    /// or later, or under a pending edit. (A version overwritten since is never served again.)
    fn check_cursor(&self, c: usize, state: &ReplicaState) {
        let Some(epoch) = &state.collection_id else {
            return;
        };
        let client = &self.clients[c];
        let mut latest: BTreeMap<&str, &Write> = BTreeMap::new();
        for write in &self.reference.log {
            if &write.epoch == epoch {
                latest.insert(&write.id, write);
            }
        }
        latest.retain(|_, write| write.seq <= state.cursor);
        for (id, write) in latest {
            let held = client.pending.contains_key(id)
                || client.synced.get(id).is_some_and(|o| o.seq >= write.seq)
                || (write.deleted && !client.synced.contains_key(id));
            assert!(held, "client {c}: cursor {} passed {write:?}", state.cursor);
        }
    }

    /// Resolves the waiting conflicts, and those that releasing the page brings up (edits made
    /// while it was held).
    fn resolve_all(&mut self, c: usize) {
        for _ in 0..10 {
            if self.clients[c].awaiting.is_empty() {
                return;
            }
            self.resolve_awaiting(c);
        }
        panic!("client {c}: conflicts keep coming");
    }

    fn resolve_awaiting(&mut self, c: usize) {
        for (id, server) in std::mem::take(&mut self.clients[c].awaiting) {
            self.resolutions += 1;
            let resolution = match self.resolutions % 4 {
                0 => Resolution::KeepServer,
                1 => Resolution::KeepLocal,
                _ => Resolution::Merged(self.unique_put()),
            };
            let client = &mut self.clients[c];
            let base_seq = base_of(server.as_ref());
            match &resolution {
                Resolution::KeepServer => {
                    client.pending.remove(&id);
                    match &server {
                        Some(object) => client.synced.insert(id.clone(), object.clone()),
                        None => client.synced.remove(&id),
                    };
                    self.open_edits.remove(&(c, id.clone()));
                }
                Resolution::KeepLocal => client.pending.get_mut(&id).unwrap().base_seq = base_seq,
                Resolution::Merged(change) => {
                    let pending = client.pending.get_mut(&id).unwrap();
                    pending.change = change.clone();
                    pending.base_seq = base_seq;
                    self.open_edits.insert((c, id.clone()), change.clone());
                }
            }
            client.replica.resolve(&id, resolution).unwrap();
        }
        self.drain(c);
    }

    /// Runs the replica's current cycle, if any, to its end.
    fn drive(&mut self, c: usize) {
        for _ in 0..500 {
            self.resolve_all(c);
            if self.clients[c].answer.is_some() {
                self.answer(c);
            } else if self.clients[c].replica.is_syncing() {
                self.send(c);
                assert!(
                    self.clients[c].answer.is_some() || !self.clients[c].replica.is_syncing(),
                    "client {c} is stuck"
                );
            } else {
                return;
            }
        }
        panic!("client {c}: a cycle did not end");
    }

    fn settled(&self) -> bool {
        let head = self.server.head();
        self.clients.iter().all(|client| {
            let r = &client.replica;
            r.pending().is_empty()
                && r.in_flight().is_none()
                && !r.is_syncing()
                && r.cursor() == head.last_seq
                && r.collection_id() == head.collection_id.as_deref()
        })
    }

    /// Syncs every replica in turn until all are at the head with nothing pending.
    fn quiesce(&mut self) {
        for _ in 0..10 {
            for c in 0..self.clients.len() {
                self.drive(c);
                self.clients[c].replica.start_sync();
                self.drain(c);
                self.drive(c);
                self.check_store();
            }
            if self.settled() {
                return;
            }
        }
        panic!("the replicas did not settle");
    }

    fn check_end(&self) {
        // (a) Every app store holds exactly the live objects of the server.
        let live: BTreeMap<&str, &Object> = self
            .server
            .objects()
            .filter(|o| !o.deleted)
            .map(|o| (o.id.as_str(), o))
            .collect();
        for (c, client) in self.clients.iter().enumerate() {
            assert!(client.pending.is_empty(), "client {c}");
            let mine: BTreeMap<&str, &Object> = client
                .synced
                .values()
                .filter(|o| !o.deleted)
                .map(|o| (o.id.as_str(), o))
                .collect();
            assert_eq!(mine, live, "client {c}");
        }
        // (b) No lost update: each write was based on the previous version of its id.
        let mut previous: BTreeMap<(&str, &str), &Write> = BTreeMap::new();
        for write in &self.reference.log {
            let base = write.base_seq.expect("replicas always send base_seq");
            match previous.get(&(write.epoch.as_str(), write.id.as_str())) {
                None => assert_eq!(base, 0, "{write:?}"),
                Some(prev) => assert!(
                    base == prev.seq || (base == 0 && prev.deleted),
                    "{write:?} after {prev:?}"
                ),
            }
            previous.insert((&write.epoch, &write.id), write);
        }
        // (d) Seqs are gap-free: every seq up to the head was taken by exactly one write.
        let seqs: Vec<u64> = self.reference.log.iter().map(|w| w.seq).collect();
        assert_eq!(seqs, (1..=self.server.head().last_seq).collect::<Vec<_>>());
        // (f) Every local edit was committed, knowingly dropped, or already on the server.
        assert!(
            self.open_edits.is_empty(),
            "lost edits: {:?}",
            self.open_edits
        );
    }
}

fn run(policies: &[ConflictPolicy], pull_limit: usize, max_batch: usize, ops: &[Op]) {
    let mut world = World::new(policies, pull_limit, max_batch);
    for op in ops {
        world.apply(op);
    }
    world.quiesce();
    world.check_end();
}

/// What happens on the server between two requests of a full sync.
#[derive(Debug, Clone)]
enum Between {
    Nothing,
    /// Another client writes or deletes an id.
    Write(usize, bool),
    /// A retention window passes, then the sweeper runs: every delete so far is purged.
    Purge,
    /// The sweeper runs.
    Sweep,
}

fn between() -> impl Strategy<Value = Between> {
    prop_oneof![
        1 => Just(Between::Nothing),
        3 => (0..IDS.len(), any::<bool>()).prop_map(|(i, delete)| Between::Write(i, delete)),
        2 => Just(Between::Purge),
        1 => Just(Between::Sweep),
    ]
}

/// A fresh replica syncs a collection that holds `history` (writes and deletes, under a purged
/// delete) while `interference` happens on the server between its requests. Once the
/// interference is over, its sync must end, holding exactly the server's live objects: a page
/// answered below the horizon must never hide a delete.
fn full_sync_across_purges(pull_limit: usize, history: &[(usize, bool)], interference: &[Between]) {
    let mut server = MemoryCollection::new(PAGE);
    let mut now = 0;
    let write = |server: &mut MemoryCollection, now: u64, id: &str, delete: bool| {
        let change = if delete {
            Change::Delete
        } else {
            Change::Put {
                data: JsonData::parse(&format!("{now}")).unwrap(),
                expires: None,
            }
        };
        let request = PushRequest {
            objects: vec![PushObject {
                id: id.to_string(),
                kind: String::new(),
                base_seq: None,
                change,
            }],
            ..PushRequest::default()
        };
        let outcome = server.push(&request, now, || "epoch-0".to_string());
        assert!(matches!(outcome, PushOutcome::Committed(_)));
    };
    for &(id, delete) in history {
        now += 1;
        write(&mut server, now, IDS[id], delete);
    }
    // A purged delete above all of it: every live object is below the horizon.
    write(&mut server, now, "gone", false);
    write(&mut server, now, "gone", true);
    now += RETENTION + 1;
    server.sweep(now, RETENTION);

    let config = Config {
        pull_limit,
        ..Config::default()
    };
    let mut replica = Replica::new("fresh", config);
    let mut synced: BTreeMap<String, Object> = BTreeMap::new();
    // Cycles that fail (too many resets in a row) are started again, as an app would.
    for step in interference {
        if !replica.is_syncing() {
            replica.start_sync();
        }
        serve_one_pull(&mut replica, &server, &mut synced);
        match step {
            Between::Nothing => {}
            Between::Write(id, delete) => {
                now += 1;
                write(&mut server, now, IDS[*id], *delete);
            }
            Between::Purge => {
                now += RETENTION + 1;
                server.sweep(now, RETENTION);
            }
            Between::Sweep => server.sweep(now, RETENTION),
        }
    }
    // The interference is over: one more cycle must end at the head.
    let mut done = false;
    for _ in 0..100 {
        if !replica.is_syncing() {
            replica.start_sync();
        }
        if serve_one_pull(&mut replica, &server, &mut synced) {
            done = true;
            break;
        }
    }
    assert!(done, "the sync did not end");
    assert_eq!(replica.cursor(), server.head().last_seq);
    let live = |objects: &mut dyn Iterator<Item = &Object>| -> BTreeMap<String, u64> {
        objects
            .filter(|o| !o.deleted)
            .map(|o| (o.id.clone(), o.seq))
            .collect()
    };
    assert_eq!(live(&mut synced.values()), live(&mut server.objects()));
}

/// Sends a replica's next request (a pull: nothing is pending) to `server`, and applies the
/// events to the app store `synced`. True when the cycle ended with `SyncDone`.
fn serve_one_pull(
    replica: &mut Replica,
    server: &MemoryCollection,
    synced: &mut BTreeMap<String, Object>,
) -> bool {
    let Some(Request::Pull {
        since,
        limit,
        horizon,
    }) = replica.poll_request()
    else {
        panic!("nothing is pending: every request is a pull");
    };
    let query = PullQuery {
        since,
        limit,
        horizon,
        ..PullQuery::default()
    };
    let response = match server.pull(&query) {
        Ok(page) => Response::Pulled(page),
        Err(reset) => Response::ResetRequired(reset),
    };
    replica.handle_response(response).unwrap();
    let mut done = false;
    while let Some(event) = replica.poll_event() {
        match event {
            ReplicaEvent::Received { objects, .. } => {
                for object in objects {
                    synced.insert(object.id.clone(), object);
                }
            }
            ReplicaEvent::Reset { .. } => synced.clear(),
            ReplicaEvent::SyncDone { .. } => done = true,
            ReplicaEvent::SyncFailed { .. } => {}
            other => panic!("nothing is pending, yet {other:?}"),
        }
    }
    done
}

#[test]
fn a_delete_purged_during_a_full_sync_is_not_missed() {
    // a, b, c, d at 1..=4 under the horizon 6; `a` is handed over by the first page, then
    // deleted and purged before the fourth page.
    let history = [(0, false), (1, false), (2, false), (3, false)];
    let interference = [Between::Write(0, true), Between::Nothing, Between::Purge];
    full_sync_across_purges(TINY, &history, &interference);
}

fn auto_policy() -> impl Strategy<Value = ConflictPolicy> {
    prop_oneof![
        Just(ConflictPolicy::ServerWins),
        Just(ConflictPolicy::LocalWins)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_with_automatic_policies(
        policies in prop::collection::vec(auto_policy(), 2..=4),
        pull_limit in prop_oneof![Just(TINY), Just(PAGE), Just(WHOLE)],
        max_batch in 1..=4usize,
        ops in prop::collection::vec(op(Mix::Even), 1..80),
    ) {
        run(&policies, pull_limit, max_batch, &ops);
    }

    #[test]
    fn a_full_sync_across_writes_and_purges_misses_no_delete(
        pull_limit in prop_oneof![Just(TINY), Just(2usize)],
        history in prop::collection::vec((0..IDS.len(), prop::bool::weighted(0.2)), 0..24),
        interference in prop::collection::vec(between(), 0..40),
    ) {
        full_sync_across_purges(pull_limit, &history, &interference);
    }

    #[test]
    fn full_syncs_page_past_a_moving_horizon(
        policies in prop::collection::vec(auto_policy(), 2..=3),
        pull_limit in prop_oneof![Just(TINY), Just(PAGE)],
        ops in prop::collection::vec(op(Mix::Purges), 40..160),
    ) {
        run(&policies, pull_limit, 2, &ops);
    }

    #[test]
    fn replicas_converge_with_manual_merges(
        clients in 2..=4usize,
        pull_limit in prop_oneof![Just(TINY), Just(PAGE), Just(WHOLE)],
        max_batch in 1..=4usize,
        ops in prop::collection::vec(op(Mix::Even), 1..80),
    ) {
        run(&vec![ConflictPolicy::Manual; clients], pull_limit, max_batch, &ops);
    }
}
