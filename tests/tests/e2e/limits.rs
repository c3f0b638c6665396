//! Limits: rate limits per user and per client address (`429` with `Retry-After`), and
//! quotas per owner in bytes and in objects (`507`, nothing written), reported in `/v1/info`.
//!
//! The rates are per minute with a small burst, so a test's few quick requests are over the
//! burst whatever the machine's speed, and never refilled before the test ends.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tidemark_tests::{now_ms, pull_all, wait_until, Client, Reply, Server};

const TODOS: &str = "/v1/data/notes/~/todos";

/// Asserts a `429 rate_limited` with a sensible `Retry-After` (whole seconds, within the
/// minute a per-minute rate can ask for).
#[track_caller]
fn assert_rate_limited(reply: &Reply) {
    reply.expect_error(429, "rate_limited");
    let retry_after: u64 = reply
        .header("retry-after")
        .expect("a 429 carries Retry-After")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
}

fn put(id: &str, data: Value) -> Value {
    json!({"id": id, "data": data})
}

/// A JSON string whose text (quotes included) is exactly `bytes` long.
fn text_of(bytes: usize) -> Value {
    json!("x".repeat(bytes - 2))
}

/// Each object's id and data, in seq order.
fn ids_and_data(objects: &[Value]) -> Value {
    objects
        .iter()
        .map(|o| json!({"id": o["id"], "data": o["data"]}))
        .collect()
}

fn quota_of(client: &Client) -> Value {
    client.get("/v1/info").expect(200)["quota"].clone()
}

#[test]
fn a_user_over_the_rate_gets_429_with_retry_after_and_other_users_do_not() {
    let server = Server::start(&["--rate-limit-user", "1", "--rate-limit-user-burst", "3"]);
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    alice
        .push("notes", "todos", &json!({"objects": [put("a", json!(1))]}))
        .expect(200);
    alice.get(TODOS).expect(200);
    alice.get("/v1/data/notes/~").expect(200);

    // Every route counts, pushes included; a refused push writes nothing.
    let refused = alice.push("notes", "todos", &json!({"objects": [put("b", json!(2))]}));
    assert_rate_limited(&refused);
    assert_rate_limited(&alice.get(TODOS));

    // Another user, from the same address, is unaffected, and sees alice's data as it was.
    for _ in 0..3 {
        bob.get("/v1/data/notes/bob/todos?since=0").expect(200);
    }
    let info = server.anonymous().get("/v1/info").expect(200);
    assert_eq!(
        info["rate_limits"],
        json!({"user_per_minute": 1, "user_burst": 3, "ip_per_minute": 0, "ip_burst": 0})
    );

    let mut restarted = server;
    restarted.restart();
    let (objects, _) = pull_all(&restarted.client("alice"), "notes", "todos");
    assert_eq!(ids_and_data(&objects), json!([{"id": "a", "data": 1}]));
}

#[test]
fn an_address_over_the_rate_gets_429_and_other_addresses_do_not() {
    let server = Server::start(&["--rate-limit-ip", "1", "--rate-limit-ip-burst", "3"]);
    let here: IpAddr = [127, 0, 0, 1].into();
    let elsewhere: IpAddr = [127, 0, 0, 2].into();
    // Three different users from one address: the limit is the address's, not theirs.
    for user in ["u1", "u2", "u3"] {
        Client::from_address(server.url(), Some(user), here)
            .get(TODOS)
            .expect(200);
    }
    let fourth = Client::from_address(server.url(), Some("u4"), here);
    assert_rate_limited(&fourth.get(TODOS));
    // Anonymous requests and bad tokens count too: nothing gets past before the check.
    let anonymous = Client::from_address(server.url(), None, here);
    assert_rate_limited(&anonymous.get("/v1/info"));
    // Probes are never limited, so a load balancer does not take a busy node out.
    anonymous.get("/healthz").expect(200);
    anonymous.get("/readyz").expect(200);

    let other = Client::from_address(server.url(), Some("u4"), elsewhere);
    for _ in 0..3 {
        other.get(TODOS).expect(200);
    }
    assert_rate_limited(&other.get(TODOS));
}

#[test]
fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    let forwarded = |client: &Client, xff: &str| {
        client.send(
            client
                .request(Method::GET, "/v1/info")
                .header("x-forwarded-for", xff),
        )
    };
    // Without the flag, a client cannot escape its limit by writing the header itself.
    let direct = Server::start(&["--rate-limit-ip", "1", "--rate-limit-ip-burst", "3"]);
    let client = direct.anonymous();
    for i in 0..3 {
        forwarded(&client, &format!("203.0.113.{i}")).expect(200);
    }
    assert_rate_limited(&forwarded(&client, "203.0.113.99"));

    // Behind a trusted proxy, the last entry (the one the proxy added) is the client.
    let proxied = Server::start(&[
        "--rate-limit-ip",
        "1",
        "--rate-limit-ip-burst",
        "3",
        "--trust-forwarded-for",
    ]);
    let proxy = proxied.anonymous();
    for _ in 0..3 {
        forwarded(&proxy, "203.0.113.1").expect(200);
    }
    assert_rate_limited(&forwarded(&proxy, "203.0.113.1"));
    // What the client put first does not count: this is still 203.0.113.1.
    assert_rate_limited(&forwarded(&proxy, "203.0.113.2, 203.0.113.1"));
    forwarded(&proxy, "203.0.113.2").expect(200);
}

#[test]
fn a_push_over_the_byte_quota_is_507_stores_nothing_and_deleting_makes_room() {
    let server = Server::start(&["--quota-bytes", "100"]);
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [put("a", text_of(40)), put("b", text_of(40))]}),
        )
        .expect(200);
    assert_eq!(
        quota_of(&alice),
        json!({"owner": "alice", "bytes": {"used": 80, "limit": 100}, "objects": {"used": 2, "limit": null}})
    );

    // 80 + 30 > 100: refused whole, even the part that would fit; another collection or app
    // of the same owner counts the same.
    let batch = json!({"objects": [put("c", text_of(10)), put("d", text_of(20))]});
    for collection in ["/v1/data/notes/~/todos", "/v1/data/other/~/things"] {
        let body = alice
            .post_json(collection, &batch)
            .expect_error(507, "insufficient_storage");
        assert_eq!(body["exceeded"], "bytes", "{body}");
        assert_eq!(body["quota"]["bytes"], json!({"used": 80, "limit": 100}));
        assert!(
            body["message"].as_str().unwrap().contains("100 bytes"),
            "{body}"
        );
    }
    let (objects, last) = pull_all(&alice, "notes", "todos");
    assert_eq!(
        ids_and_data(&objects),
        json!([{"id": "a", "data": text_of(40)}, {"id": "b", "data": text_of(40)}])
    );
    assert_eq!(last["until"], 2, "no seq was taken by the refused push");
    alice.get("/v1/data/other/~/things?since=0").expect(200);
    assert_eq!(quota_of(&alice)["bytes"]["used"], 80);

    // The quota is per owner: bob has his own.
    bob.push(
        "notes",
        "todos",
        &json!({"objects": [put("a", text_of(100))]}),
    )
    .expect(200);

    // Up to the limit exactly is allowed; shrinking an object gives back the difference;
    // deleting one gives back all of it.
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [put("c", text_of(20))]}),
        )
        .expect(200);
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [put("a", text_of(10))]}),
        )
        .expect(200);
    assert_eq!(quota_of(&alice)["bytes"]["used"], 70);
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "b", "deleted": true}]}),
        )
        .expect(200);
    assert_eq!(quota_of(&alice)["bytes"], json!({"used": 30, "limit": 100}));
    alice.post_json(TODOS, &batch).expect(200);
    assert_eq!(
        quota_of(&alice)["bytes"]["used"],
        40,
        "c shrank by 10, d took 20"
    );
}

#[test]
fn a_push_over_the_object_quota_is_507_and_resets_and_expiry_give_objects_back() {
    let server = Server::start(&["--quota-objects", "3", "--sweep-interval", "200ms"]);
    let alice = server.client("alice");
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [put("a", json!(1)), put("b", json!(2))]}),
        )
        .expect(200);
    let body = alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [put("c", json!(3)), put("d", json!(4))]}),
        )
        .expect_error(507, "insufficient_storage");
    assert_eq!(body["exceeded"], "objects");
    assert_eq!(body["quota"]["objects"], json!({"used": 2, "limit": 3}));
    let (objects, _) = pull_all(&alice, "notes", "todos");
    assert_eq!(
        objects.len(),
        2,
        "an atomic batch: nothing of it was stored"
    );

    // Updating an object in place costs no new object.
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [put("a", json!(10)), put("c", json!(3))]}),
        )
        .expect(200);
    assert_eq!(quota_of(&alice)["objects"], json!({"used": 3, "limit": 3}));

    // A reset gives back everything in the collection.
    alice.delete(TODOS).expect(200);
    assert_eq!(quota_of(&alice)["objects"]["used"], 0);

    // An expired object becomes a tombstone when the sweeper runs, and stops counting.
    let expires = now_ms() + 300;
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [put("x", json!(1)), put("y", json!(2)), {"id": "z", "data": 3, "expires": expires}]}),
        )
        .expect(200);
    alice
        .push("notes", "todos", &json!({"objects": [put("w", json!(0))]}))
        .expect_error(507, "insufficient_storage");
    wait_until(Duration::from_secs(20), "the sweeper expires z", || {
        (quota_of(&alice)["objects"]["used"] == 2).then_some(())
    });
    alice
        .push("notes", "todos", &json!({"objects": [put("w", json!(0))]}))
        .expect(200);
}

#[test]
fn concurrent_pushes_into_many_collections_of_one_owner_never_pass_the_quota() {
    // 12 pushes of 3 new objects each, all at once, each into its own collection, under a
    // quota of 20 objects: whatever the order, exactly 6 fit (18 objects) and the others are
    // refused. A check that raced (two pushes both reading 18 used) would let a seventh in.
    let server = Server::start(&["--quota-objects", "20"]);
    let alice = server.client("alice");
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let pushes: Vec<_> = (0..12)
            .map(|i| {
                let alice = alice.clone();
                scope.spawn(move || {
                    let objects: Vec<Value> =
                        (0..3).map(|k| put(&format!("o{k}"), json!(k))).collect();
                    alice
                        .push("notes", &format!("c{i}"), &json!({ "objects": objects }))
                        .status
                })
            })
            .collect();
        pushes.into_iter().map(|p| p.join().unwrap()).collect()
    });
    let committed = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 507).count();
    assert_eq!((committed, refused), (6, 6), "{statuses:?}");
    assert_eq!(
        quota_of(&alice)["objects"],
        json!({"used": 18, "limit": 20})
    );
    let stored: usize = (0..12)
        .map(|i| pull_all(&alice, "notes", &format!("c{i}")).0.len())
        .sum();
    assert_eq!(stored, 18, "a refused batch stored nothing");
}

#[test]
fn the_owner_pays_for_what_others_write_in_their_collections() {
    let server = Server::start(&["--quota-objects", "2"]);
    let (alice, bob) = (server.client("alice"), server.client("bob"));
    alice
        .send(
            alice
                .request(Method::PUT, "/v1/data/notes/~/shared/acl")
                .json(&json!({"writers": ["bob"]})),
        )
        .expect(200);
    bob.post_json(
        "/v1/data/notes/alice/shared",
        &json!({"objects": [put("a", json!(1)), put("b", json!(2))]}),
    )
    .expect(200);
    assert_eq!(quota_of(&alice)["objects"]["used"], 2);
    assert_eq!(quota_of(&bob)["objects"]["used"], 0);
    bob.post_json(
        "/v1/data/notes/alice/shared",
        &json!({"objects": [put("c", json!(3))]}),
    )
    .expect_error(507, "insufficient_storage");
    // Anonymous callers learn the limits of the server, not anyone's usage.
    let info = server.anonymous().get("/v1/info").expect(200);
    assert!(info.get("quota").is_none(), "{info}");
}

/// Uploads `bytes` as a blob of alice's notes/todos.
fn upload_blob(client: &Client, bytes: &[u8]) -> Reply {
    let name = sync_core::hash::sha256_hex(bytes);
    client.send(
        client
            .request(Method::PUT, &format!("{TODOS}/blobs/{name}"))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec()),
    )
}

#[test]
fn blobs_count_toward_the_byte_quota_for_uploads_and_pushes() {
    let server = Server::start(&["--quota-bytes", "1000"]);
    let alice = server.client("alice");
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [put("a", text_of(100))]}),
        )
        .expect(200);
    upload_blob(&alice, &[1; 600]).expect(201);
    let info = quota_of(&alice);
    assert_eq!(info["bytes"], json!({"used": 700, "limit": 1000}), "{info}");

    // 700 + 400 > 1000: the upload is refused and not stored.
    let big = [2; 400];
    let body = upload_blob(&alice, &big).expect_error(507, "insufficient_storage");
    assert_eq!(body["exceeded"], "bytes", "{body}");
    let name = sync_core::hash::sha256_hex(&big);
    alice
        .get(&format!("{TODOS}/blobs/{name}"))
        .expect_error(404, "not_found");

    // A push that would take data and blobs together over the quota is refused too.
    let body = alice
        .post_json(TODOS, &json!({"objects": [put("b", text_of(350))]}))
        .expect_error(507, "insufficient_storage");
    assert_eq!(body["quota"]["bytes"], json!({"used": 700, "limit": 1000}));
    let (objects, _) = pull_all(&alice, "notes", "todos");
    assert_eq!(
        ids_and_data(&objects),
        json!([{"id": "a", "data": text_of(100)}])
    );

    // What fits still goes in.
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [put("b", text_of(250))]}),
        )
        .expect(200);
    assert_eq!(quota_of(&alice)["bytes"]["used"], 950);
}
