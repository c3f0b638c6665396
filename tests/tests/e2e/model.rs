//! Differential test: random histories of pushes, pulls and resets, sent to the real server and
//! applied to `sync_core::memory_store`, the reference implementation of the contract. Every
//! answer (status and body, `message` aside) must be the same.

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use sync_core::memory_store::{MemoryCollection, PushOutcome};
use sync_core::{Limits, PullQuery, PushRequest};
use tidemark_tests::{core_fields, core_objects, now_ms, Client, Reply, Server};

const IDS: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Debug, Clone)]
enum Epoch {
    Omit,
    Current,
    Bogus,
}

/// A cursor: mostly near the head (so that most requests can be answered), sometimes anywhere
/// (so that 410s are exercised too).
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// `last_seq - n` (at least 0).
    BehindHead(u64),
    /// An absolute value.
    At(u64),
}

impl Cursor {
    fn resolve(self, last_seq: u64) -> u64 {
        match self {
            Cursor::BehindHead(n) => last_seq.saturating_sub(n),
            Cursor::At(n) => n,
        }
    }
}

/// A `base_seq`: absent, "must not exist", the object's current seq, or a wrong one.
#[derive(Debug, Clone, Copy)]
enum Base {
    Absent,
    Zero,
    Current,
    Other(u64),
}

#[derive(Debug, Clone)]
struct Put {
    id: usize,
    typed: bool,
    base: Base,
    deleted: bool,
    data: u8,
}

#[derive(Debug, Clone)]
enum Op {
    Push {
        epoch: Epoch,
        since: Option<Cursor>,
        push_id: Option<u8>,
        objects: Vec<Put>,
    },
    Pull {
        since: Cursor,
        limit: Option<u8>,
        filter: Option<(bool, bool)>,
    },
    Reset,
}

fn cursor() -> impl Strategy<Value = Cursor> {
    prop_oneof![
        4 => (0u64..4).prop_map(Cursor::BehindHead),
        1 => (0u64..16).prop_map(Cursor::At),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let base = prop_oneof![
        4 => Just(Base::Absent),
        2 => Just(Base::Current),
        1 => Just(Base::Zero),
        1 => (1u64..12).prop_map(Base::Other),
    ];
    let put = (
        0..IDS.len(),
        any::<bool>(),
        base,
        prop::bool::weighted(0.25),
        any::<u8>(),
    )
        .prop_map(|(id, typed, base, deleted, data)| Put {
            id,
            typed,
            base,
            deleted,
            data,
        });
    let epoch =
        prop_oneof![4 => Just(Epoch::Omit), 2 => Just(Epoch::Current), 1 => Just(Epoch::Bogus)];
    let push = (
        epoch,
        prop::option::weighted(0.4, cursor()),
        prop::option::weighted(0.3, 0u8..3),
        vec(put, 0..4),
    )
        .prop_map(|(epoch, since, push_id, objects)| Op::Push {
            epoch,
            since,
            push_id,
            objects,
        });
    let pull = (
        cursor(),
        prop::option::of(1u8..4),
        prop::option::of((any::<bool>(), any::<bool>())),
    )
        .prop_map(|(since, limit, filter)| Op::Pull {
            since,
            limit,
            filter,
        });
    prop_oneof![6 => push, 3 => pull, 1 => Just(Op::Reset)]
}

/// An answer as far as the core contract defines it: without the `message` for people, and
/// with objects reduced to their core fields (the model records no extension fields).
fn normalize(mut body: Value) -> Value {
    if let Some(map) = body.as_object_mut() {
        map.remove("message");
        for list in ["objects", "changes"] {
            if let Some(objects) = map.get_mut(list) {
                *objects = core_objects(objects);
            }
        }
        if let Some(Value::Array(conflicts)) = map.get_mut("conflicts") {
            for conflict in conflicts {
                conflict["server"] = core_fields(&conflict["server"]);
            }
        }
    }
    body
}

/// How many answers of each status the histories produced, to show what they exercised.
#[derive(Default)]
struct Tally([AtomicUsize; 6]);

impl Tally {
    const STATUSES: [u16; 6] = [200, 304, 400, 409, 410, 0];

    fn count(&self, status: u16) {
        let slot = Self::STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(5);
        self.0[slot].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, status: u16) -> usize {
        let slot = Self::STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(5);
        self.0[slot].load(Ordering::Relaxed)
    }
}

fn same(
    step: usize,
    op: &Op,
    reply: &Reply,
    status: u16,
    expected: Value,
) -> Result<(), TestCaseError> {
    let got = if reply.status == status {
        normalize(reply.json())
    } else {
        json!({"status": reply.status, "body": reply.text()})
    };
    let expected = normalize(expected);
    if got == expected {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!(
            "step {step}: {op:?}\n  server: {got}\n  model ({status}): {expected}"
        )))
    }
}

/// Runs one history against collection `name`.
fn run_history(alice: &Client, name: &str, ops: &[Op], tally: &Tally) -> Result<(), TestCaseError> {
    let path = format!("/v1/data/notes/~/{name}");
    let mut model = MemoryCollection::new(1000);
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Push {
                epoch,
                since,
                push_id,
                objects,
            } => {
                let current_seq = |id: &str| model.objects().find(|o| o.id == id).map(|o| o.seq);
                let objects: Vec<Value> = objects
                    .iter()
                    .map(|p| {
                        let id = IDS[p.id];
                        let mut o = json!({"id": id, "type": if p.typed { "t" } else { "" }});
                        let base = match p.base {
                            Base::Absent => None,
                            Base::Zero => Some(0),
                            Base::Current => Some(current_seq(id).unwrap_or(0)),
                            Base::Other(n) => Some(n),
                        };
                        if let Some(base) = base {
                            o["base_seq"] = json!(base);
                        }
                        if p.deleted {
                            o["deleted"] = json!(true);
                        } else {
                            o["data"] = json!(p.data);
                        }
                        o
                    })
                    .collect();
                let mut body = json!({ "objects": objects });
                match (epoch, &model.head().collection_id) {
                    (Epoch::Current, Some(cid)) => body["collection_id"] = json!(cid),
                    (Epoch::Bogus, _) => {
                        body["collection_id"] = json!("00000000000000000000000000000000")
                    }
                    _ => {}
                }
                if let Some(since) = since {
                    body["since"] = json!(since.resolve(model.head().last_seq));
                }
                if let Some(push_id) = push_id {
                    body["push_id"] = json!(format!("p{push_id}"));
                }
                let reply = alice.post_json(&path, &body);
                tally.count(reply.status);
                let request =
                    match PushRequest::parse(body.to_string().as_bytes(), &Limits::default()) {
                        Ok(request) => request,
                        Err(_) => {
                            // Duplicate ids: refused before any state is read.
                            prop_assert_eq!(
                                reply.status,
                                400,
                                "step {}: {:?}: {}",
                                step,
                                op,
                                reply.text()
                            );
                            continue;
                        }
                    };
                let server_epoch = reply.json()["collection_id"]
                    .as_str()
                    .unwrap_or("model-epoch")
                    .to_string();
                match model.push(&request, now_ms(), || server_epoch) {
                    PushOutcome::Committed(ok) => {
                        same(step, op, &reply, 200, serde_json::to_value(ok).unwrap())?
                    }
                    PushOutcome::Conflict(answer) => {
                        same(step, op, &reply, 409, serde_json::to_value(answer).unwrap())?
                    }
                    PushOutcome::Reset(answer) => {
                        same(step, op, &reply, 410, serde_json::to_value(answer).unwrap())?
                    }
                }
            }
            Op::Pull {
                since,
                limit,
                filter,
            } => {
                let since = since.resolve(model.head().last_seq);
                let mut query = format!("since={since}");
                let mut pairs = vec![("since".to_string(), since.to_string())];
                if let Some(limit) = limit {
                    query += &format!("&limit={limit}");
                    pairs.push(("limit".into(), limit.to_string()));
                }
                if let Some((include, typed)) = filter {
                    let key = if *include { "type" } else { "exclude" };
                    let value = if *typed { "t" } else { "" };
                    query += &format!("&{key}={value}");
                    pairs.push((key.into(), value.into()));
                }
                let reply = alice.get(&format!("{path}?{query}"));
                tally.count(reply.status);
                let query = PullQuery::from_pairs(
                    pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    &Limits::default(),
                )
                .expect("the generated queries are valid");
                match model.pull(&query) {
                    Ok(page) => same(step, op, &reply, 200, serde_json::to_value(page).unwrap())?,
                    Err(answer) => {
                        same(step, op, &reply, 410, serde_json::to_value(answer).unwrap())?
                    }
                }
            }
            Op::Reset => {
                let reply = alice.delete(&path);
                prop_assert_eq!(reply.status, 200, "step {}: {}", step, reply.text());
                let cid = reply.json()["collection_id"]
                    .as_str()
                    .expect("a reset names the new epoch")
                    .to_string();
                model.reset(cid);
                let head = model.head();
                same(
                    step,
                    op,
                    &reply,
                    200,
                    json!({"collection_id": head.collection_id, "horizon": head.horizon, "last_seq": head.last_seq}),
                )?;
            }
        }
        // The cheap listing agrees with the model's head after every step.
        let list = alice.get("/v1/data/notes/~").expect(200);
        let row = list["collections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned();
        let head = model.head();
        let expected = head
            .collection_id
            .as_ref()
            .map(|cid| json!({"name": name, "collection_id": cid, "last_seq": head.last_seq}));
        prop_assert_eq!(row, expected, "step {}: listing after {:?}", step, op);
    }
    Ok(())
}

#[test]
fn the_server_answers_random_histories_exactly_like_the_reference_model() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    let histories = AtomicUsize::new(0);
    let tally = Tally::default();
    let config = Config {
        cases: 24,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&vec(op(), 1..24), |ops| {
        // A fresh collection per history, so that the model starts from the same empty state.
        let name = format!("h{}", histories.fetch_add(1, Ordering::Relaxed));
        run_history(&alice, &name, &ops, &tally)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let [ok, conflicts, resets, invalid] = [200, 409, 410, 400].map(|s| tally.get(s));
    eprintln!("model: {ok} ok, {conflicts} conflicts, {resets} resets required, {invalid} invalid");
    assert!(
        ok > 0 && conflicts > 0,
        "the histories must exercise commits and conflicts"
    );
}
