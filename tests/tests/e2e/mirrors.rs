//! Mirrors: servers that follow a collection on an upstream server and serve it read-only,
//! with the upstream's seqs and `collection_id`, in chains. Every server is the real binary on
//! loopback; nothing is mocked. Conditions are polled with generous deadlines, never slept on.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use sync_core::hash::sha256_hex;
use tidemark_tests::{core_objects, pg, pull_all, wait_until, Backend, Client, Server};

const APP: &str = "helio";
const COLLECTION: &str = "archive";
const OWNER: &str = "alice";
/// Long enough for a loaded CI machine; conditions usually hold within a second.
const DEADLINE: Duration = Duration::from_secs(30);

/// Starts a server that mirrors `alice`'s collection on `upstream`, plus `extra` flags. It
/// polls only once an hour, so whatever it copies within a test came through the upstream's
/// live events (or its start-up reconciliation), unless `polling` asks for quick polls and
/// retries (for an upstream that goes away).
fn mirror_of(upstream: &Server, polling: bool, extra: &[&str]) -> Server {
    let spec = format!(
        "upstream={};app={APP};owner={OWNER};collection={COLLECTION};token={OWNER}",
        upstream.url()
    );
    let poll = if polling { "300ms" } else { "1h" };
    let mut args = vec!["--mirror", &spec, "--mirror-poll-interval", poll];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// What a client sees of the collection: its epoch and every object (core fields).
fn state(client: &Client) -> (Value, Value) {
    let (objects, last) = pull_all(client, APP, COLLECTION);
    (last["collection_id"].clone(), core_objects(&json!(objects)))
}

/// Waits until `mirror` shows exactly what `primary` shows.
fn wait_for_same_state(primary: &Client, mirror: &Client, what: &str) {
    wait_until(DEADLINE, what, || {
        let want = state(primary);
        (state(mirror) == want).then_some(())
    });
}

fn upload(client: &Client, bytes: &[u8]) -> String {
    let name = sha256_hex(bytes);
    let path = format!("/v1/data/{APP}/~/{COLLECTION}/blobs/{name}");
    let reply = client.send(client.request(Method::PUT, &path).body(bytes.to_vec()));
    assert!(matches!(reply.status, 200 | 201), "{}", reply.text());
    name
}

fn blob(client: &Client, name: &str) -> Option<Vec<u8>> {
    let reply = client.get(&format!("/v1/data/{APP}/~/{COLLECTION}/blobs/{name}"));
    (reply.status == 200).then_some(reply.body)
}

fn object<'a>(objects: &'a Value, id: &str) -> &'a Value {
    objects
        .as_array()
        .expect("a list")
        .iter()
        .find(|o| o["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {objects}"))
}

#[test]
fn a_chain_carries_reprocessed_files_and_deletes_by_hash_and_refuses_writes() {
    let primary = Server::start(&[]);
    let mirror1 = mirror_of(&primary, false, &[]);
    let mirror2 = mirror_of(&mirror1, false, &[]);
    let (p, m1, m2) = (
        primary.client(OWNER),
        mirror1.client(OWNER),
        mirror2.client(OWNER),
    );

    let v1 = b"AIA 171 2026-11-22T00:00 first processing".to_vec();
    let h1 = upload(&p, &v1);
    p.push(APP, COLLECTION, &json!({"objects": [
        {"id": "aia_171.jp2", "type": "file", "data": {"time": "2026-11-22T00:00", "blobs": [h1]}},
        {"id": "hmi.jp2", "type": "file", "data": {"time": "2026-11-22T00:00"}},
    ]}))
    .expect(200);
    wait_for_same_state(&p, &m2, "the end of the chain to have the first files");
    assert_eq!(blob(&m2, &h1).as_deref(), Some(&v1[..]));
    assert_eq!(blob(&m1, &h1).as_deref(), Some(&v1[..]));

    // Reprocessed: the same id, new content and a new blob. It travels by hash.
    let v2 = b"AIA 171 2026-11-22T00:00 reprocessed with new calibration".to_vec();
    let h2 = upload(&p, &v2);
    p.push(APP, COLLECTION, &json!({"objects": [
        {"id": "aia_171.jp2", "type": "file", "data": {"time": "2026-11-22T00:00", "blobs": [h2]}},
    ]}))
    .expect(200);
    let (_, on_primary) = state(&p);
    let new_hash = object(&on_primary, "aia_171.jp2")["hash"].clone();
    wait_until(
        DEADLINE,
        "the reprocessed file at the end of the chain",
        || {
            let (_, objects) = state(&m2);
            (object(&objects, "aia_171.jp2")["hash"] == new_hash).then_some(())
        },
    );
    assert_eq!(
        blob(&m2, &h2).as_deref(),
        Some(&v2[..]),
        "its new blob came along"
    );

    // A delete propagates as a tombstone with the primary's seq.
    p.push(
        APP,
        COLLECTION,
        &json!({"objects": [{"id": "hmi.jp2", "deleted": true}]}),
    )
    .expect(200);
    wait_for_same_state(&p, &m2, "the delete at the end of the chain");
    let (_, objects) = state(&m2);
    assert_eq!(object(&objects, "hmi.jp2")["deleted"], true);

    // Mirrors are read-only: pushes, resets and uploads get 403 naming the upstream.
    let before = state(&m2);
    let refused = m2.push(
        APP,
        COLLECTION,
        &json!({"objects": [{"id": "x", "data": 1}]}),
    );
    let body = refused.expect_error(403, "forbidden");
    assert_eq!(
        body["primary"],
        format!("{}/v1/data/{APP}/{OWNER}/{COLLECTION}", mirror1.url())
    );
    m2.delete(&format!("/v1/data/{APP}/~/{COLLECTION}"))
        .expect_error(403, "forbidden");
    let bytes = b"not allowed here".to_vec();
    let path = format!("/v1/data/{APP}/~/{COLLECTION}/blobs/{}", sha256_hex(&bytes));
    let upload = m1.send(m1.request(Method::PUT, &path).body(bytes));
    assert_eq!(
        upload.expect_error(403, "forbidden")["primary"],
        format!("{}/v1/data/{APP}/{OWNER}/{COLLECTION}", primary.url())
    );
    assert_eq!(state(&m2), before, "nothing changed on the mirror");
    assert_eq!(blob(&m1, &sha256_hex(b"not allowed here")), None);
}

#[test]
fn a_client_moves_from_the_primary_to_the_end_of_the_chain_without_a_reset() {
    let primary = Server::start(&[]);
    let mirror1 = mirror_of(&primary, false, &[]);
    let mirror2 = mirror_of(&mirror1, false, &[]);
    let (p, m2) = (primary.client(OWNER), mirror2.client(OWNER));

    let first: Vec<Value> = (0..10)
        .map(|i| json!({"id": format!("f{i}"), "data": {"n": i}}))
        .collect();
    p.push(APP, COLLECTION, &json!({"objects": first}))
        .expect(200);

    // The client syncs half of it from the primary...
    let page = p.pull(APP, COLLECTION, 0, "&limit=5").expect(200);
    assert_eq!(page["more"], true);
    let epoch = page["collection_id"].clone();
    let horizon = page["horizon"].as_u64().unwrap();
    let mut seen: std::collections::BTreeMap<String, Value> = std::collections::BTreeMap::new();
    for o in page["objects"].as_array().unwrap() {
        seen.insert(o["id"].as_str().unwrap().into(), o.clone());
    }
    let mut cursor = page["until"].as_u64().unwrap();

    // ...the primary moves on: new files, a change to one the client has, a delete...
    let more: Vec<Value> = (10..15)
        .map(|i| json!({"id": format!("f{i}"), "data": {"n": i}}))
        .collect();
    p.push(APP, COLLECTION, &json!({"objects": more}))
        .expect(200);
    p.push(
        APP,
        COLLECTION,
        &json!({"objects": [
            {"id": "f0", "data": {"n": 100}}, {"id": "f3", "deleted": true},
        ]}),
    )
    .expect(200);
    wait_for_same_state(&p, &m2, "mirror 2 to catch up");

    // ...and the client finishes from mirror 2 with the same cursor.
    loop {
        let reply = m2.pull(
            APP,
            COLLECTION,
            cursor,
            &format!("&limit=5&horizon={horizon}"),
        );
        let page = reply.expect(200);
        assert_eq!(page["collection_id"], epoch, "the same epoch: no reset");
        for o in page["objects"].as_array().unwrap() {
            seen.insert(o["id"].as_str().unwrap().into(), o.clone());
        }
        cursor = page["until"].as_u64().unwrap();
        if page["more"] != true {
            break;
        }
    }
    let (truth, _) = pull_all(&p, APP, COLLECTION);
    let truth: std::collections::BTreeMap<String, Value> = truth
        .into_iter()
        .map(|o| (o["id"].as_str().unwrap().to_string(), o))
        .collect();
    assert_eq!(
        core_objects(&json!(seen.values().collect::<Vec<_>>())),
        core_objects(&json!(truth.values().collect::<Vec<_>>())),
        "the client has exactly the primary's state"
    );
}

#[test]
fn a_mirror_catches_up_after_its_upstream_dies_and_follows_a_reset() {
    let mut primary = Server::start(&[]);
    let mirror = mirror_of(&primary, true, &[]);
    let (p, m) = (primary.client(OWNER), mirror.client(OWNER));
    p.push(
        APP,
        COLLECTION,
        &json!({"objects": [{"id": "a", "data": 1}]}),
    )
    .expect(200);
    wait_for_same_state(&p, &m, "the mirror to copy the first object");

    primary.kill9();
    // The mirror keeps serving what it has while its upstream is gone.
    let (_, objects) = state(&m);
    assert_eq!(objects.as_array().unwrap().len(), 1);
    primary.restart_on_same_port();
    let p = primary.client(OWNER);
    p.push(
        APP,
        COLLECTION,
        &json!({"objects": [{"id": "b", "data": 2}, {"id": "a", "data": 3}]}),
    )
    .expect(200);
    wait_for_same_state(&p, &m, "the mirror to catch up after the restart");

    // The upstream resets: the mirror takes the new epoch and its contents.
    let old_epoch = state(&m).0;
    p.delete(&format!("/v1/data/{APP}/~/{COLLECTION}"))
        .expect(200);
    p.push(
        APP,
        COLLECTION,
        &json!({"objects": [{"id": "c", "data": 4}]}),
    )
    .expect(200);
    wait_for_same_state(&p, &m, "the mirror to follow the reset");
    assert_ne!(state(&m).0, old_epoch);
}

/// Runs `sql` on a server's own database, behind its back.
fn tamper(server: &Server, sql: &str) {
    match server.backend() {
        Backend::Sqlite => {
            let db = rusqlite::Connection::open(server.data_dir().join("tidemark.sqlite3"))
                .expect("opening the mirror's database");
            db.busy_timeout(Duration::from_secs(10)).unwrap();
            db.execute_batch(sql).expect("tampering");
        }
        Backend::Postgres => {
            let mut db = pg::connect();
            let schema = server.schema().expect("a PostgreSQL server has a schema");
            db.batch_execute(&format!("SET search_path TO {schema}; {sql}"))
                .expect("tampering");
        }
    }
}

#[test]
fn reconciliation_repairs_a_drifted_mirror() {
    let primary = Server::start(&[]);
    let mirror = mirror_of(&primary, false, &["--mirror-reconcile-interval", "500ms"]);
    let (p, m) = (primary.client(OWNER), mirror.client(OWNER));
    p.push(APP, COLLECTION, &json!({"objects": [
        {"id": "a", "data": {"v": 1}}, {"id": "b", "data": {"v": 2}}, {"id": "c", "data": {"v": 3}},
    ]}))
    .expect(200);
    wait_for_same_state(&p, &m, "the mirror to copy the objects");

    // The copy drifts: one object's content changes, another disappears.
    tamper(
        &mirror,
        "UPDATE objects SET data = '{\"v\": 666}', hash = 'tampered' WHERE id = 'a';
         DELETE FROM objects WHERE id = 'b';",
    );
    let (_, drifted) = state(&m);
    assert_ne!(drifted, state(&p).1, "the tampering took");
    wait_for_same_state(&p, &m, "reconciliation to repair the drift");
}

#[test]
fn a_cursor_ahead_of_a_mirror_gets_503_not_410() {
    let primary = Server::start(&[]);
    let mut mirror1 = mirror_of(&primary, false, &[]);
    let mirror2 = mirror_of(&mirror1, false, &[]);
    let (p, m2) = (primary.client(OWNER), mirror2.client(OWNER));
    p.push(
        APP,
        COLLECTION,
        &json!({"objects": [{"id": "a", "data": 1}]}),
    )
    .expect(200);
    wait_for_same_state(&p, &m2, "mirror 2 to copy the first object");

    // The middle of the chain goes away; the primary moves on without mirror 2.
    mirror1.kill9();
    let ahead = p
        .push(
            APP,
            COLLECTION,
            &json!({"objects": [{"id": "b", "data": 2}]}),
        )
        .expect(200)["until"]
        .as_u64()
        .unwrap();
    let before = state(&m2);
    let reply = m2.pull(APP, COLLECTION, ahead, "");
    reply.expect_error(503, "unavailable");
    assert!(reply.header("retry-after").is_some());
    let events = m2.try_events(
        &format!("/v1/data/{APP}/~/{COLLECTION}/events?since={ahead}"),
        &[],
    );
    match events {
        Err(reply) => {
            reply.expect_error(503, "unavailable");
        }
        Ok(_) => panic!("an event stream from a cursor the mirror lacks must not open"),
    }
    assert_eq!(state(&m2), before, "the mirror still serves what it has");
}
