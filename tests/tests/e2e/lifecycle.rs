//! What happens to objects and cursors over time: tombstones, resets, the sweeper's expiry and
//! purge, and the horizon that follows.

use std::time::Duration;

use serde_json::{json, Value};
use tidemark_tests::{core_objects, now_ms, pull_all, wait_until, Server};

/// How long the sweeper tests wait for a sweep before they give up.
const SWEEP_DEADLINE: Duration = Duration::from_secs(15);

fn ids_and_seqs(objects: &[Value]) -> Vec<(String, u64)> {
    objects
        .iter()
        .map(|o| {
            (
                o["id"].as_str().unwrap().to_string(),
                o["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_delete_propagates_as_a_tombstone_and_base_seq_zero_recreates_the_id() {
    let server = Server::start(&[]);
    let phone = server.client("alice");
    let laptop = server.client("alice");
    phone
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "type": "todo", "data": 1}, {"id": "b", "data": 2}]}),
        )
        .expect(200);
    let cursor = laptop.pull("notes", "todos", 0, "").expect(200)["until"]
        .as_u64()
        .unwrap();

    let ok = phone
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "type": "todo", "deleted": true, "base_seq": 1}]}),
        )
        .expect(200);
    assert_eq!(ok["seqs"], json!([3]));
    // The other device hears of the delete as a tombstone: no data, no hash.
    let page = laptop.pull("notes", "todos", cursor, "").expect(200);
    assert_eq!(
        core_objects(&page["objects"]),
        json!([{"id": "a", "type": "todo", "seq": 3, "deleted": true}])
    );
    // A client starting from scratch sees only the latest version of each id.
    let (objects, _) = pull_all(&laptop, "notes", "todos");
    assert_eq!(
        core_objects(&json!(objects)),
        json!([
            {"id": "b", "type": "", "seq": 2, "data": 2, "hash": objects[0]["hash"]},
            {"id": "a", "type": "todo", "seq": 3, "deleted": true},
        ])
    );
    // Tombstones are filtered by type like any object.
    assert_eq!(
        laptop
            .pull("notes", "todos", cursor, "&type=todo")
            .expect(200)["objects"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // base_seq 0 ("must not exist") holds for a tombstone: the id can be created again.
    let ok = laptop
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "type": "todo", "base_seq": 0, "data": "again"}]}),
        )
        .expect(200);
    assert_eq!(ok["seqs"], json!([4]));
    let page = phone.pull("notes", "todos", 3, "").expect(200);
    assert_eq!(
        ids_and_seqs(page["objects"].as_array().unwrap()),
        [("a".to_string(), 4)]
    );
    assert_eq!(page["objects"][0]["data"], "again");
    assert!(page["objects"][0].get("deleted").is_none(), "{page}");

    // The tombstone's own seq is a valid base too: the client saw the delete.
    phone
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "b", "deleted": true, "base_seq": 2}]}),
        )
        .expect(200);
    laptop
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "b", "base_seq": 5, "data": "back"}]}),
        )
        .expect(200);
    // But base_seq 0 on a live object is a conflict.
    let conflict = laptop
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "b", "base_seq": 0, "data": "x"}]}),
        )
        .expect_error(409, "conflict");
    assert_eq!(conflict["conflicts"][0]["reason"], "stale_base");
}

#[test]
fn a_reset_gives_a_new_collection_id_and_old_cursors_and_epochs_get_410() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    let old_cid = alice
        .push("notes", "todos", &json!({"objects": [{"id": "a", "data": 1}, {"id": "b", "data": 2}, {"id": "c", "data": 3}]}))
        .expect(200)["collection_id"]
        .as_str()
        .unwrap()
        .to_string();

    let reset = alice.delete("/v1/data/notes/~/todos").expect(200);
    let new_cid = reset["collection_id"]
        .as_str()
        .expect("a reset returns the new epoch")
        .to_string();
    assert_ne!(new_cid, old_cid);
    assert_eq!(
        reset,
        json!({"collection_id": new_cid, "horizon": 3, "last_seq": 3}),
        "seqs keep counting; the horizon moves to the head"
    );

    // A client of the old epoch is told to resync, whichever way it comes back.
    let gone = alice
        .push(
            "notes",
            "todos",
            &json!({"collection_id": old_cid, "objects": [{"id": "d", "data": 4}]}),
        )
        .expect_error(410, "reset_required");
    assert_eq!(
        (gone["collection_id"].as_str(), gone["horizon"].as_u64()),
        (Some(new_cid.as_str()), Some(3))
    );
    let gone = alice
        .pull("notes", "todos", 2, "")
        .expect_error(410, "reset_required");
    assert_eq!(
        (gone["collection_id"].as_str(), gone["horizon"].as_u64()),
        (Some(new_cid.as_str()), Some(3))
    );
    alice
        .pull("notes", "todos", 1, "")
        .expect_error(410, "reset_required");
    // A client that was fully caught up is not below the horizon, but sees the epoch change.
    let page = alice.pull("notes", "todos", 3, "").expect(200);
    assert_eq!(
        (page["collection_id"].as_str(), page["objects"].clone()),
        (Some(new_cid.as_str()), json!([]))
    );

    // Resync from 0: everything of the old epoch is gone, tombstones included.
    let page = alice.pull("notes", "todos", 0, "").expect(200);
    assert_eq!(
        page,
        json!({"collection_id": new_cid, "since": 0, "until": 3, "more": false, "horizon": 3, "objects": []})
    );
    let ok = alice.push("notes", "todos", &json!({"collection_id": new_cid, "since": 3, "objects": [{"id": "a", "base_seq": 0, "data": "new"}]})).expect(200);
    assert_eq!(
        (ok["collection_id"].as_str(), ok["seqs"].clone()),
        (Some(new_cid.as_str()), json!([4]))
    );
    let (objects, _) = pull_all(&alice, "notes", "todos");
    assert_eq!(ids_and_seqs(&objects), [("a".to_string(), 4)]);
    let list = alice.get("/v1/data/notes/~").expect(200);
    assert_eq!(
        list,
        json!({"collections": [{"name": "todos", "collection_id": new_cid, "last_seq": 4}]})
    );

    // A second reset moves on again; resetting a collection that was never written creates it.
    let again = alice.delete("/v1/data/notes/~/todos").expect(200);
    assert_ne!(again["collection_id"].as_str(), Some(new_cid.as_str()));
    assert_eq!(
        (again["horizon"].clone(), again["last_seq"].clone()),
        (json!(4), json!(4))
    );
    let fresh = alice.delete("/v1/data/notes/~/fresh").expect(200);
    assert!(fresh["collection_id"].is_string(), "{fresh}");
    assert_eq!(
        (fresh["horizon"].clone(), fresh["last_seq"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(
        alice.pull("notes", "fresh", 0, "").expect(200)["collection_id"],
        fresh["collection_id"]
    );
}

#[test]
fn purged_tombstones_raise_the_horizon_and_older_cursors_get_410() {
    // Long enough that the tombstone is still there when the test first looks, even on a
    // loaded machine; short enough that the test waits for the purge only briefly.
    let server = Server::start(&["--tombstone-retention", "2s", "--sweep-interval", "100ms"]);
    let alice = server.client("alice");
    let cid = alice
        .push("notes", "todos", &json!({"objects": [{"id": "a", "data": 1}, {"id": "b", "data": 2}, {"id": "c", "data": 3}]}))
        .expect(200)["collection_id"]
        .clone();
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "deleted": true}]}),
        )
        .expect(200);
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "d", "data": 4}]}),
        )
        .expect(200);
    // Within the retention window the tombstone is there for clients that missed the delete.
    let page = alice.pull("notes", "todos", 3, "").expect(200);
    assert_eq!(
        ids_and_seqs(page["objects"].as_array().unwrap()),
        [("a".to_string(), 4), ("d".to_string(), 5)]
    );

    let horizon = wait_until(SWEEP_DEADLINE, "the tombstone to be purged", || {
        let page = alice.pull("notes", "todos", 0, "").expect(200);
        page["horizon"].as_u64().filter(|h| *h > 0)
    });
    assert_eq!(horizon, 4, "the horizon is the highest purged seq");

    for old in [1, 3] {
        let gone = alice
            .pull("notes", "todos", old, "")
            .expect_error(410, "reset_required");
        assert_eq!(
            (gone["collection_id"].clone(), gone["horizon"].clone()),
            (cid.clone(), json!(4)),
            "since={old}"
        );
    }
    let page = alice.pull("notes", "todos", 4, "").expect(200);
    assert_eq!(
        ids_and_seqs(page["objects"].as_array().unwrap()),
        [("d".to_string(), 5)],
        "since = horizon still works"
    );
    let page = alice.pull("notes", "todos", 0, "").expect(200);
    assert_eq!(page["collection_id"], cid, "a purge is not a reset");
    assert_eq!(page["horizon"], 4);
    assert_eq!(
        ids_and_seqs(page["objects"].as_array().unwrap()),
        [
            ("b".to_string(), 2),
            ("c".to_string(), 3),
            ("d".to_string(), 5)
        ],
        "the tombstone is gone"
    );

    // The same horizon guards a push's `since`.
    alice
        .push(
            "notes",
            "todos",
            &json!({"since": 3, "objects": [{"id": "e", "data": 5}]}),
        )
        .expect_error(410, "reset_required");
    let conflict = alice
        .push(
            "notes",
            "todos",
            &json!({"since": 4, "objects": [{"id": "e", "data": 5}]}),
        )
        .expect_error(409, "conflict");
    assert_eq!(conflict["changes"].as_array().unwrap().len(), 1);
    alice
        .push(
            "notes",
            "todos",
            &json!({"since": 5, "objects": [{"id": "e", "data": 5}]}),
        )
        .expect(200);
}

#[test]
fn expired_objects_become_tombstones_with_a_new_seq() {
    // Long retention: the tombstones stay, so the test can see them.
    let server = Server::start(&["--sweep-interval", "100ms"]);
    let alice = server.client("alice");
    let now = now_ms();
    let later = now + 3_600_000;
    let ok = alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [
                {"id": "past", "type": "otp", "expires": now - 1_000, "data": "123456"},
                {"id": "future", "expires": later, "data": "keep"},
                {"id": "forever", "data": "keep"},
                {"id": "soon", "type": "otp", "expires": now + 1_500, "data": "654321"},
            ]}),
        )
        .expect(200);
    assert_eq!(ok["seqs"], json!([1, 2, 3, 4]));
    // Until its time comes, an object with `expires` is an ordinary object.
    let early = alice.pull("notes", "todos", 3, "").expect(200);
    if now_ms() < now + 1_500 {
        assert_eq!(early["objects"][0]["id"], "soon", "{early}");
        assert_eq!(early["objects"][0]["data"], "654321", "{early}");
    }

    let tombstones = wait_until(
        SWEEP_DEADLINE,
        "both expiring objects to become tombstones",
        || {
            let page = alice.pull("notes", "todos", 4, "").expect(200);
            let objects = page["objects"].as_array().unwrap().clone();
            (objects.len() == 2).then_some(objects)
        },
    );
    // Each expiry is a write of its own, so clients hear of it; `past` expired first.
    assert_eq!(
        core_objects(&json!(tombstones)),
        json!([
            {"id": "past", "type": "otp", "seq": 5, "deleted": true},
            {"id": "soon", "type": "otp", "seq": 6, "deleted": true},
        ])
    );

    let (objects, last) = pull_all(&alice, "notes", "todos");
    assert_eq!(last["until"], 6);
    assert_eq!(last["horizon"], 0, "nothing was purged");
    let future = objects
        .iter()
        .find(|o| o["id"] == "future")
        .expect("an object that has not expired stays");
    assert_eq!(
        (
            future["seq"].clone(),
            future["expires"].clone(),
            future["data"].clone()
        ),
        (json!(2), json!(later), json!("keep"))
    );
    let forever = objects.iter().find(|o| o["id"] == "forever").unwrap();
    assert_eq!(forever["seq"], 3);
    assert!(forever.get("expires").is_none(), "{forever}");
}

#[test]
fn an_expiry_too_far_in_the_future_is_never_taken_for_the_past() {
    // `expires` is a u64 on the wire. Values past i64::MAX must either be refused or be kept
    // as "far future"; an object must not be deleted because its expiry wrapped around.
    let server = Server::start(&["--sweep-interval", "100ms"]);
    let alice = server.client("alice");
    let far = [1u64 << 63, u64::MAX];
    let reply = alice.push(
        "notes",
        "todos",
        &json!({"objects": [
            {"id": "far-1", "expires": far[0], "data": 1},
            {"id": "far-2", "expires": far[1], "data": 2},
            {"id": "gone", "expires": now_ms() - 1_000, "data": 3},
        ]}),
    );
    if reply.status == 400 {
        reply.expect_error(400, "invalid_request");
        let fields: Vec<_> = reply.detail_fields().into_iter().map(|(_, f)| f).collect();
        assert!(fields.iter().all(|f| f == "expires"), "{}", reply.text());
        return;
    }
    assert_eq!(reply.expect(200)["seqs"], json!([1, 2, 3]));
    // Once the object that did expire is a tombstone, the sweeper has looked at all three.
    wait_until(
        SWEEP_DEADLINE,
        "the expired object to become a tombstone",
        || {
            let (objects, _) = pull_all(&alice, "notes", "todos");
            objects
                .iter()
                .any(|o| o["id"] == "gone" && o["deleted"] == true)
                .then_some(())
        },
    );
    let (objects, _) = pull_all(&alice, "notes", "todos");
    for (id, expires) in [("far-1", far[0]), ("far-2", far[1])] {
        let object = objects.iter().find(|o| o["id"] == id).unwrap();
        assert!(
            object.get("deleted").is_none(),
            "{id} (expires {expires}) was expired by the sweeper: {object}"
        );
        assert_eq!(object["expires"].as_u64(), Some(expires));
    }
}
