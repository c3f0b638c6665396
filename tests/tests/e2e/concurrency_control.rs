//! Optimistic concurrency: conflicts at the object level (`base_seq`) and the collection level
//! (`since`), atomic batches, idempotent replays, and all of them under concurrent clients.

use std::sync::{Arc, Barrier};
use std::thread;

use serde_json::{json, Value};
use tidemark_tests::{pull_all, snapshot, Client, Server};

fn ids_and_reasons(conflict: &Value) -> Vec<(String, String)> {
    conflict["conflicts"]
        .as_array()
        .expect("conflicts is a list")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn last_seq(client: &Client, collection: &str) -> u64 {
    let list = client.get("/v1/data/notes/~").expect(200);
    list["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == collection)
        .map_or(0, |c| c["last_seq"].as_u64().unwrap())
}

#[test]
fn a_stale_base_seq_is_409_with_the_server_version_and_a_rebased_retry_succeeds() {
    let server = Server::start(&[]);
    // Two devices of the same user.
    let phone = server.client("alice");
    let laptop = server.client("alice");
    let cid = phone
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "type": "todo", "base_seq": 0, "data": {"v": 1}}]}),
        )
        .expect(200)["collection_id"]
        .clone();

    phone.push("notes", "todos", &json!({"objects": [{"id": "a", "type": "todo", "base_seq": 1, "data": {"v": "phone"}}]})).expect(200);
    let before = snapshot(&phone, "notes", "todos");
    let conflict = laptop
        .push("notes", "todos", &json!({"objects": [{"id": "a", "type": "todo", "base_seq": 1, "data": {"v": "laptop"}}]}))
        .expect_error(409, "conflict");
    assert_eq!(conflict["collection_id"], cid);
    assert_eq!(
        ids_and_reasons(&conflict),
        [("a".to_string(), "stale_base".to_string())]
    );
    let theirs = &conflict["conflicts"][0]["server"];
    assert_eq!(
        (
            theirs["seq"].clone(),
            theirs["data"].clone(),
            theirs["type"].clone()
        ),
        (json!(2), json!({"v": "phone"}), json!("todo"))
    );
    assert!(
        theirs["hash"].is_string(),
        "the server version is a whole object: {theirs}"
    );
    assert_eq!(
        conflict["changes"],
        json!([]),
        "no `since` was sent, so there are no changes to carry"
    );
    assert_eq!(
        snapshot(&phone, "notes", "todos"),
        before,
        "a 409 writes nothing"
    );

    // The laptop merges and retries on top of what it was shown.
    let merged = json!({"v": ["phone", "laptop"]});
    let ok = laptop
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "type": "todo", "base_seq": 2, "data": merged}]}),
        )
        .expect(200);
    assert_eq!(ok["seqs"], json!([3]));
    let (objects, _) = pull_all(&phone, "notes", "todos");
    assert_eq!((objects.len(), objects[0]["data"].clone()), (1, merged));

    // base_seq on an id the server never saw: the server has no version to show.
    let conflict = laptop
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "new", "base_seq": 7, "data": 1}]}),
        )
        .expect_error(409, "conflict");
    assert_eq!(
        conflict["conflicts"],
        json!([{"id": "new", "reason": "stale_base", "server": null}])
    );
    // base_seq 0 means "must not exist": a live object conflicts.
    let conflict = laptop
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "base_seq": 0, "data": 1}]}),
        )
        .expect_error(409, "conflict");
    assert_eq!(
        ids_and_reasons(&conflict),
        [("a".to_string(), "stale_base".to_string())]
    );
    assert_eq!(last_seq(&phone, "todos"), 3);
}

#[test]
fn a_push_after_an_old_since_is_409_with_the_changes_to_merge_and_the_retry_succeeds() {
    let server = Server::start(&[]);
    let phone = server.client("alice");
    let laptop = server.client("alice");
    let cid = phone
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": 1}, {"id": "b", "data": 2}]}),
        )
        .expect(200)["collection_id"]
        .clone();
    // The laptop is in sync at seq 2.
    let laptop_cursor = laptop.pull("notes", "todos", 0, "").expect(200)["until"]
        .as_u64()
        .unwrap();
    assert_eq!(laptop_cursor, 2);

    phone
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "b", "data": 20}, {"id": "c", "data": 3}]}),
        )
        .expect(200);
    phone
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "deleted": true}]}),
        )
        .expect(200);

    let attempt = json!({"collection_id": cid, "since": laptop_cursor, "objects": [{"id": "d", "data": 4}, {"id": "e", "data": 5}]});
    let conflict = laptop
        .push("notes", "todos", &attempt)
        .expect_error(409, "conflict");
    assert_eq!(
        ids_and_reasons(&conflict),
        [
            ("d".to_string(), "collection_changed".to_string()),
            ("e".to_string(), "collection_changed".to_string())
        ]
    );
    assert_eq!(conflict["conflicts"][0]["server"], Value::Null);
    assert_eq!(
        (
            conflict["collection_id"].clone(),
            conflict["until"].clone(),
            conflict["more"].clone()
        ),
        (cid.clone(), json!(5), json!(false))
    );
    // `changes` are exactly what a pull from the laptop's cursor would have returned.
    let pulled = laptop.pull("notes", "todos", laptop_cursor, "").expect(200);
    assert_eq!(conflict["changes"], pulled["objects"]);
    let changed: Vec<(&str, u64)> = conflict["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["id"].as_str().unwrap(), o["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(changed, [("b", 3), ("c", 4), ("a", 5)]);
    assert_eq!(conflict["changes"][2]["deleted"], true);
    assert_eq!(
        last_seq(&phone, "todos"),
        5,
        "nothing of the rejected batch was written"
    );

    // One round trip was enough: retry from `until`.
    let retry = json!({"collection_id": cid, "since": conflict["until"], "objects": [{"id": "d", "data": 4}, {"id": "e", "data": 5}]});
    let ok = laptop.push("notes", "todos", &retry).expect(200);
    assert_eq!(
        (ok["seqs"].clone(), ok["until"].clone()),
        (json!([6, 7]), json!(7))
    );
    // A `since` equal to the head is not a conflict either.
    laptop
        .push(
            "notes",
            "todos",
            &json!({"since": 7, "objects": [{"id": "f", "data": 6}]}),
        )
        .expect(200);
}

#[test]
fn both_conflict_reasons_are_reported_object_by_object() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": 1}, {"id": "b", "data": 2}]}),
        )
        .expect(200);
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": 10}]}),
        )
        .expect(200);
    let conflict = alice
        .push(
            "notes",
            "todos",
            &json!({"since": 2, "objects": [{"id": "a", "base_seq": 1, "data": 11}, {"id": "b", "base_seq": 2, "data": 12}, {"id": "c", "data": 13}]}),
        )
        .expect_error(409, "conflict");
    assert_eq!(
        ids_and_reasons(&conflict),
        [
            ("a".to_string(), "stale_base".to_string()),
            ("b".to_string(), "collection_changed".to_string()),
            ("c".to_string(), "collection_changed".to_string()),
        ]
    );
    assert_eq!(conflict["conflicts"][0]["server"]["seq"], 3);
    assert_eq!(conflict["conflicts"][1]["server"]["seq"], 2);
    assert_eq!(conflict["changes"].as_array().unwrap().len(), 1);
}

#[test]
fn a_rejected_batch_leaves_nothing_behind() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": 1}, {"id": "b", "data": 2}]}),
        )
        .expect(200);
    let before = snapshot(&alice, "notes", "todos");

    // The stale object is the last one: the new and updated objects before it must not land.
    let batch = json!({"objects": [
        {"id": "new", "base_seq": 0, "data": "x"},
        {"id": "a", "base_seq": 1, "data": "changed"},
        {"id": "b", "deleted": true},
        {"id": "b2", "data": "y"},
        {"id": "a-again", "base_seq": 5, "data": "z"},
    ]});
    let conflict = alice
        .push("notes", "todos", &batch)
        .expect_error(409, "conflict");
    assert_eq!(
        ids_and_reasons(&conflict),
        [("a-again".to_string(), "stale_base".to_string())]
    );
    assert_eq!(
        snapshot(&alice, "notes", "todos"),
        before,
        "pull and listing are unchanged"
    );
    assert_eq!(
        alice.pull("notes", "todos", 2, "").expect(200)["objects"],
        json!([])
    );

    // The rejected batch used up no seqs: the next commit follows on directly.
    let ok = alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "c", "data": 3}]}),
        )
        .expect(200);
    assert_eq!(ok["seqs"], json!([3]));
    let seqs: Vec<u64> = pull_all(&alice, "notes", "todos")
        .0
        .iter()
        .map(|o| o["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
}

#[test]
fn a_replayed_push_id_returns_the_first_answer_and_writes_nothing() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    let batch =
        json!({"push_id": "phone:1", "objects": [{"id": "a", "data": 1}, {"id": "b", "data": 2}]});
    let first = alice.push("notes", "todos", &batch).expect(200);
    assert_eq!(first["seqs"], json!([1, 2]));
    assert!(first.get("replayed").is_none(), "{first}");
    let after_first = snapshot(&alice, "notes", "todos");

    // The answer was lost; the client retries the very same request.
    let replay = alice.push("notes", "todos", &batch).expect(200);
    let mut expected = first.clone();
    expected["replayed"] = json!(true);
    assert_eq!(replay, expected);
    assert_eq!(
        snapshot(&alice, "notes", "todos"),
        after_first,
        "a replay writes nothing"
    );

    // Other writes in between do not change what a replay answers, and a replay is not
    // checked again (its base_seq would now be stale).
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": 100}]}),
        )
        .expect(200);
    let with_base =
        json!({"push_id": "phone:2", "objects": [{"id": "c", "base_seq": 0, "data": 3}]});
    let second = alice.push("notes", "todos", &with_base).expect(200);
    assert_eq!(second["seqs"], json!([4]));
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "c", "data": 300}]}),
        )
        .expect(200);
    let before = snapshot(&alice, "notes", "todos");
    assert_eq!(alice.push("notes", "todos", &batch).expect(200), expected);
    let replay = alice.push("notes", "todos", &with_base).expect(200);
    assert_eq!(
        (
            replay["seqs"].clone(),
            replay["until"].clone(),
            replay["replayed"].clone()
        ),
        (json!([4]), json!(4), json!(true))
    );
    assert_eq!(snapshot(&alice, "notes", "todos"), before);
    let (objects, last) = pull_all(&alice, "notes", "todos");
    assert_eq!(last["until"], 5);
    assert_eq!(
        objects.iter().find(|o| o["id"] == "a").unwrap()["data"],
        100,
        "the replay did not write `a` back"
    );

    // push_ids are scoped to their collection.
    let elsewhere = alice.push("notes", "other", &batch).expect(200);
    assert!(elsewhere.get("replayed").is_none(), "{elsewhere}");
}

/// Runs `f(i)` on `n` threads that start together; returns the results in thread order.
fn together<T: Send + 'static>(n: usize, f: impl Fn(usize) -> T + Send + Sync + 'static) -> Vec<T> {
    let f = Arc::new(f);
    let start = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (f, start) = (f.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                f(i)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("a client thread panicked"))
        .collect()
}

#[test]
fn concurrent_retries_of_one_push_id_commit_it_once() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    let batch =
        json!({"push_id": "dup:1", "objects": [{"id": "a", "data": 1}, {"id": "b", "data": 2}]});
    let answers = together(8, move |_| alice.push("notes", "todos", &batch).expect(200));
    let first: Vec<&Value> = answers
        .iter()
        .filter(|a| a.get("replayed").is_none())
        .collect();
    assert_eq!(
        first.len(),
        1,
        "exactly one of the copies commits: {answers:?}"
    );
    for answer in &answers {
        assert_eq!(
            (answer["seqs"].clone(), answer["until"].clone()),
            (json!([1, 2]), json!(2))
        );
        assert_eq!(answer["collection_id"], first[0]["collection_id"]);
    }
    assert_eq!(last_seq(&server.client("alice"), "todos"), 2);
}

#[test]
fn concurrent_first_pushes_agree_on_one_collection_id_and_distinct_seqs() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    let answers = together(8, move |i| {
        alice
            .push(
                "notes",
                "fresh",
                &json!({"objects": [{"id": format!("o{i}"), "data": i}]}),
            )
            .expect(200)
    });
    let mut seqs: Vec<u64> = answers
        .iter()
        .map(|a| a["seqs"][0].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>());
    for answer in &answers {
        assert_eq!(
            answer["collection_id"], answers[0]["collection_id"],
            "one collection, one epoch"
        );
    }
    let list = server.client("alice").get("/v1/data/notes/~").expect(200);
    assert_eq!(list["collections"].as_array().unwrap().len(), 1, "{list}");
}

#[test]
fn concurrent_compare_and_set_loses_no_update() {
    const CLIENTS: usize = 6;
    const INCREMENTS: u64 = 8;
    let server = Server::start(&[]);
    let alice = server.client("alice");
    alice
        .push(
            "notes",
            "counter",
            &json!({"objects": [{"id": "n", "base_seq": 0, "data": 0}]}),
        )
        .expect(200);
    let conflicts = together(CLIENTS, move |_| {
        // Each client increments the shared counter with read-modify-write on base_seq,
        // and rebases on the version a 409 shows it.
        let page = alice.pull("notes", "counter", 0, "").expect(200);
        let (mut seq, mut value) = (
            page["objects"][0]["seq"].as_u64().unwrap(),
            page["objects"][0]["data"].as_u64().unwrap(),
        );
        let mut conflicts = 0;
        let mut done = 0;
        while done < INCREMENTS {
            let reply = alice.push(
                "notes",
                "counter",
                &json!({"objects": [{"id": "n", "base_seq": seq, "data": value + 1}]}),
            );
            if reply.status == 200 {
                seq = reply.json()["seqs"][0].as_u64().unwrap();
                value += 1;
                done += 1;
            } else {
                let conflict = reply.expect_error(409, "conflict");
                let theirs = &conflict["conflicts"][0]["server"];
                (seq, value) = (
                    theirs["seq"].as_u64().unwrap(),
                    theirs["data"].as_u64().unwrap(),
                );
                conflicts += 1;
            }
        }
        conflicts
    });
    let total = CLIENTS as u64 * INCREMENTS;
    let page = server
        .client("alice")
        .pull("notes", "counter", 0, "")
        .expect(200);
    assert_eq!(
        page["objects"][0]["data"].as_u64(),
        Some(total),
        "no increment was lost"
    );
    assert_eq!(
        page["objects"][0]["seq"].as_u64(),
        Some(total + 1),
        "only successful writes took seqs"
    );
    eprintln!(
        "compare-and-set: {} conflicts on the way",
        conflicts.iter().sum::<u64>()
    );
}

#[test]
fn a_reader_following_its_cursor_during_concurrent_writes_misses_nothing() {
    let server = Server::start(&[]);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let client = server.client("alice");
            thread::spawn(move || {
                for b in 0..25 {
                    let objects: Vec<Value> = (0..5)
                        .map(|i| json!({"id": format!("w{w}-b{b}-{i}"), "data": i}))
                        .collect();
                    client
                        .push("notes", "log", &json!({"objects": objects}))
                        .expect(200);
                }
            })
        })
        .collect();
    let reader = server.client("alice");
    let mut seen: Vec<u64> = Vec::new();
    let mut cursor = 0;
    loop {
        let writing = !writers.iter().all(|w| w.is_finished());
        let page = reader.pull("notes", "log", cursor, "&limit=7").expect(200);
        let until = page["until"].as_u64().unwrap();
        assert!(until >= cursor, "the cursor never moves back: {page}");
        for o in page["objects"].as_array().unwrap() {
            let seq = o["seq"].as_u64().unwrap();
            assert!(
                seq > cursor && seq <= until,
                "seq {seq} outside ({cursor}, {until}]"
            );
            assert!(
                seen.last().is_none_or(|last| seq > *last),
                "seqs arrive in order"
            );
            seen.push(seq);
        }
        cursor = until;
        if !writing && page["more"] == false {
            break;
        }
    }
    for w in writers {
        w.join().expect("a writer panicked");
    }
    let last = last_seq(&reader, "log");
    assert_eq!(last, 500);
    assert_eq!(
        seen,
        (1..=last).collect::<Vec<_>>(),
        "every seq was delivered exactly once"
    );
}

#[test]
fn a_conflicts_changes_are_capped_at_max_pull_limit_and_page_with_more() {
    // The contract: `changes` are "up to max_pull_limit, with more", so that a 409 is never
    // larger than the pull an operator allowed; the client pulls the rest from `until`.
    let server = Server::start(&["--max-pull-limit", "5"]);
    let alice = server.client("alice");
    let objects: Vec<Value> = (1..=8)
        .map(|i| json!({"id": format!("o{i}"), "data": i}))
        .collect();
    alice
        .push("notes", "todos", &json!({ "objects": objects }))
        .expect(200);
    let conflict = alice
        .push(
            "notes",
            "todos",
            &json!({"since": 0, "objects": [{"id": "mine", "data": 0}]}),
        )
        .expect_error(409, "conflict");
    let changes: Vec<u64> = conflict["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(changes, [1, 2, 3, 4, 5], "{conflict}");
    assert_eq!(
        (conflict["until"].clone(), conflict["more"].clone()),
        (json!(5), json!(true))
    );
    let rest = alice.pull("notes", "todos", 5, "").expect(200);
    assert_eq!(
        (rest["until"].clone(), rest["more"].clone()),
        (json!(8), json!(false))
    );
    alice
        .push(
            "notes",
            "todos",
            &json!({"since": 8, "objects": [{"id": "mine", "data": 0}]}),
        )
        .expect(200);
}
