//! The core contract: every endpoint (info, list, pull, push, reset) and every error code
//! (400, 401, 403, 404, 405, 409, 410, 413), each in the contract's JSON shape.

use reqwest::Method;
use serde_json::{json, Value};
use sync_core::hash::sha256_hex;
use tidemark_tests::{core_objects, pull_all, snapshot, Server};

const TODOS: &str = "/v1/data/notes/~/todos";

#[test]
fn info_reports_name_protocol_and_the_configured_limits() {
    let server = Server::start(&[
        "--max-body-bytes",
        "65536",
        "--max-batch",
        "50",
        "--max-object-bytes",
        "4096",
        "--max-pull-limit",
        "100",
    ]);
    // Discovery needs no token: a client reads the limits before it signs anyone in.
    let info = server.anonymous().get("/v1/info").expect(200);
    assert_eq!(info["name"], "tidemark");
    assert_eq!(info["protocol"], 1);
    assert!(
        info["version"].as_str().is_some_and(|v| !v.is_empty()),
        "{info}"
    );
    assert_eq!(
        info["limits"],
        json!({"max_body_bytes": 65536, "max_batch": 50, "max_object_bytes": 4096, "max_pull_limit": 100})
    );
    let features: Vec<&str> = info["features"]
        .as_array()
        .expect("features is a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for feature in ["pull", "push", "reset"] {
        assert!(
            features.contains(&feature),
            "features lack {feature}: {info}"
        );
    }
}

#[test]
fn a_never_written_collection_reads_as_empty_with_a_null_collection_id() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    let page = alice.pull("notes", "todos", 0, "").expect(200);
    assert_eq!(
        page,
        json!({"collection_id": null, "since": 0, "until": 0, "more": false, "horizon": 0, "objects": []})
    );
    assert_eq!(
        alice.get("/v1/data/notes/~").expect(200),
        json!({"collections": []})
    );
    // A cursor can't be ahead of a collection that has no seqs at all.
    alice
        .pull("notes", "todos", 5, "")
        .expect_error(410, "reset_required");
    // Reading created nothing.
    assert_eq!(
        alice.get("/v1/data/notes/~").expect(200),
        json!({"collections": []})
    );
}

#[test]
fn pushed_objects_pull_back_in_seq_order_with_their_data_text_and_hash() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    // Sent as raw text: the server keeps `data` as the exact (trimmed) text it received.
    let data_a = r#"{"title": "buy milk",  "tags": ["x", "y"]}"#;
    let body = format!(
        r#"{{"objects": [{{"id": "a", "type": "todo", "data": {data_a}}},
                         {{"id": "b", "data": 42}},
                         {{"id": "c", "type": "todo", "data": "  text  "}}]}}"#
    );
    let ok = alice.post_raw(TODOS, body.into_bytes()).expect(200);
    let cid = ok["collection_id"]
        .as_str()
        .expect("collection_id is a string")
        .to_string();
    assert!(
        cid.len() >= 24,
        "a collection_id has at least 96 bits: {cid}"
    );
    assert_eq!(
        ok,
        json!({"collection_id": cid, "seqs": [1, 2, 3], "until": 3}),
        "no `replayed` on a first commit"
    );

    let reply = alice.pull("notes", "todos", 0, "");
    assert!(
        reply.text().contains(data_a),
        "data comes back as the text that was sent: {}",
        reply.text()
    );
    let mut page = reply.expect(200);
    page["objects"] = core_objects(&page["objects"]);
    assert_eq!(
        page,
        json!({
            "collection_id": cid, "since": 0, "until": 3, "more": false, "horizon": 0,
            "objects": [
                {"id": "a", "type": "todo", "seq": 1, "data": {"title": "buy milk", "tags": ["x", "y"]}, "hash": sha256_hex(data_a.as_bytes())},
                {"id": "b", "type": "", "seq": 2, "data": 42, "hash": sha256_hex(b"42")},
                {"id": "c", "type": "todo", "seq": 3, "data": "  text  ", "hash": sha256_hex(b"\"  text  \"")},
            ]
        })
    );
    let later = alice.pull("notes", "todos", 1, "").expect(200);
    assert_eq!(
        later["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["seq"].clone())
            .collect::<Vec<_>>(),
        [2, 3]
    );
    let caught_up = alice.pull("notes", "todos", 3, "").expect(200);
    assert_eq!(
        (caught_up["until"].clone(), caught_up["objects"].clone()),
        (json!(3), json!([]))
    );

    // A new version of `a` takes the next seq, and only the latest version of an id is kept.
    let ok = alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "type": "todo", "data": {"done": true}}]}),
        )
        .expect(200);
    assert_eq!(ok["seqs"], json!([4]));
    assert_eq!(
        ok["collection_id"],
        cid.as_str(),
        "a push to an existing collection keeps its epoch"
    );
    let (objects, last) = pull_all(&alice, "notes", "todos");
    let ids: Vec<(&str, u64)> = objects
        .iter()
        .map(|o| (o["id"].as_str().unwrap(), o["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(ids, [("b", 2), ("c", 3), ("a", 4)]);
    assert_eq!(objects[2]["data"], json!({"done": true}));
    assert_eq!(last["until"], 4);

    // The listing is the cheap "anything changed?" call.
    alice
        .push(
            "notes",
            "other",
            &json!({"objects": [{"id": "z", "data": null, "deleted": true}]}),
        )
        .expect(200);
    let list = alice.get("/v1/data/notes/~").expect(200);
    let other_cid = list["collections"][0]["collection_id"].clone();
    assert_eq!(
        list,
        json!({"collections": [
            {"name": "other", "collection_id": other_cid, "last_seq": 1},
            {"name": "todos", "collection_id": cid, "last_seq": 4},
        ]})
    );
    assert_ne!(other_cid, json!(cid), "each collection has its own epoch");
    // Apps are separate namespaces.
    assert_eq!(
        alice.get("/v1/data/other-app/~").expect(200),
        json!({"collections": []})
    );
}

#[test]
fn pulls_page_with_more_and_filter_by_type() {
    let server = Server::start(&["--max-pull-limit", "3"]);
    let alice = server.client("alice");
    let objects: Vec<Value> = (1..=7)
        .map(|i| json!({"id": format!("o{i}"), "type": if i % 2 == 1 { "note" } else { "task" }, "data": i}))
        .collect();
    alice
        .push("notes", "todos", &json!({ "objects": objects }))
        .expect(200);

    let seqs = |page: &Value| -> Vec<u64> {
        page["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["seq"].as_u64().unwrap())
            .collect()
    };
    let page = alice.pull("notes", "todos", 0, "").expect(200);
    assert_eq!(
        (seqs(&page), page["until"].as_u64(), page["more"].as_bool()),
        (vec![1, 2, 3], Some(3), Some(true)),
        "max_pull_limit caps a page"
    );
    let page = alice.pull("notes", "todos", 0, "&limit=1000").expect(200);
    assert_eq!(
        seqs(&page),
        [1, 2, 3],
        "a limit over max_pull_limit is clamped"
    );
    let page = alice.pull("notes", "todos", 0, "&limit=2").expect(200);
    assert_eq!(
        (seqs(&page), page["until"].as_u64(), page["more"].as_bool()),
        (vec![1, 2], Some(2), Some(true))
    );
    let page = alice.pull("notes", "todos", 6, "&limit=2").expect(200);
    assert_eq!(
        (seqs(&page), page["until"].as_u64(), page["more"].as_bool()),
        (vec![7], Some(7), Some(false))
    );
    let (all, _) = pull_all(&alice, "notes", "todos");
    assert_eq!(
        all.iter()
            .map(|o| o["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );

    let page = alice.pull("notes", "todos", 0, "&type=note").expect(200);
    assert_eq!(
        (seqs(&page), page["until"].as_u64(), page["more"].as_bool()),
        (vec![1, 3, 5], Some(5), Some(true))
    );
    let page = alice.pull("notes", "todos", 5, "&type=note").expect(200);
    assert_eq!(
        (seqs(&page), page["until"].as_u64(), page["more"].as_bool()),
        (vec![7], Some(7), Some(false))
    );
    // The last page moves the cursor to the head even when the filter hides the newest objects.
    let page = alice.pull("notes", "todos", 0, "&exclude=note").expect(200);
    assert_eq!(
        (seqs(&page), page["until"].as_u64(), page["more"].as_bool()),
        (vec![2, 4, 6], Some(7), Some(false))
    );
    let page = alice
        .pull("notes", "todos", 0, "&type=note&type=task&limit=2")
        .expect(200);
    assert_eq!(seqs(&page), [1, 2], "repeated type values add up");
    let page = alice.pull("notes", "todos", 0, "&type=nothing").expect(200);
    assert_eq!((seqs(&page), page["until"].as_u64()), (vec![], Some(7)));
}

#[test]
fn an_etag_lets_an_unchanged_pull_answer_304() {
    let server = Server::start(&["--poll-time", "7s"]);
    let alice = server.client("alice");
    let conditional = |tag: &str| {
        alice.send(
            alice
                .request(Method::GET, &format!("{TODOS}?since=0"))
                .header("if-none-match", tag),
        )
    };

    let empty = alice.pull("notes", "todos", 0, "");
    assert_eq!(empty.status, 200);
    let empty_tag = empty
        .header("etag")
        .expect("an empty collection has an ETag too");
    assert_eq!(conditional(&empty_tag).status, 304);

    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": 1}]}),
        )
        .expect(200);
    let reply = alice.pull("notes", "todos", 0, "");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-sync-poll-time").as_deref(),
        Some("7"),
        "the poll hint is --poll-time in seconds"
    );
    let tag = reply.header("etag").expect("a pull has an ETag");
    assert_ne!(tag, empty_tag, "a write changes the ETag");
    assert_eq!(
        conditional(&empty_tag).status,
        200,
        "a stale ETag gets the full answer"
    );

    let not_modified = conditional(&tag);
    assert_eq!(not_modified.status, 304, "{}", not_modified.text());
    assert!(not_modified.body.is_empty(), "a 304 has no body");
    assert_eq!(not_modified.header("etag").as_deref(), Some(tag.as_str()));

    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "b", "data": 2}]}),
        )
        .expect(200);
    let changed = conditional(&tag);
    assert_eq!(changed.status, 200);
    assert_eq!(changed.json()["until"], 2);
    assert_ne!(changed.header("etag"), Some(tag));
}

#[test]
fn a_conditional_pull_with_an_impossible_cursor_is_still_410() {
    // The ETag names the collection's state, not the cursor: a matching one must not let a
    // cursor that this collection never gave out pass as "not modified".
    let server = Server::start(&[]);
    let alice = server.client("alice");
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": 1}]}),
        )
        .expect(200);
    let tag = alice
        .pull("notes", "todos", 0, "")
        .header("etag")
        .expect("a pull has an ETag");
    let reply = alice.send(
        alice
            .request(Method::GET, &format!("{TODOS}?since=5"))
            .header("if-none-match", &tag),
    );
    reply.expect_error(410, "reset_required");
}

#[test]
fn invalid_pull_queries_are_400_with_details() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": 1}]}),
        )
        .expect(200);
    for (query, field) in [
        ("since=0&limit=0", "limit"),
        ("since=0&limit=many", "limit"),
        ("since=-1", "since"),
        ("since=abc", "since"),
        ("since=0&type=a&exclude=b", "exclude"),
    ] {
        let reply = alice.get(&format!("{TODOS}?{query}"));
        reply.expect_error(400, "invalid_request");
        assert_eq!(
            reply.detail_fields(),
            [(None, field.to_string())],
            "{query}"
        );
    }
}

#[test]
fn a_cursor_ahead_of_the_collection_is_410() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    let cid = alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": 1}, {"id": "b", "data": 2}]}),
        )
        .expect(200)["collection_id"]
        .clone();
    alice.pull("notes", "todos", 2, "").expect(200);
    let gone = alice
        .pull("notes", "todos", 3, "")
        .expect_error(410, "reset_required");
    assert_eq!(
        (gone["collection_id"].clone(), gone["horizon"].clone()),
        (cid.clone(), json!(0))
    );
    // The same rule guards a push's `since`.
    let gone = alice
        .push(
            "notes",
            "todos",
            &json!({"since": 3, "objects": [{"id": "c", "data": 3}]}),
        )
        .expect_error(410, "reset_required");
    assert_eq!(gone["collection_id"], cid);
    assert_eq!(
        pull_all(&alice, "notes", "todos").0.len(),
        2,
        "nothing was written"
    );
}

#[test]
fn requests_without_valid_credentials_are_401_with_www_authenticate() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": 1}]}),
        )
        .expect(200);
    let before = snapshot(&alice, "notes", "todos");

    let anonymous = server.anonymous();
    let body = json!({"objects": [{"id": "x", "data": 1}]}).to_string();
    let attempts = [
        ("none", anonymous.request(Method::GET, TODOS)),
        ("none", anonymous.request(Method::GET, "/v1/data/notes/~")),
        (
            "none",
            anonymous.request(Method::POST, TODOS).body(body.clone()),
        ),
        ("none", anonymous.request(Method::DELETE, TODOS)),
        (
            "basic",
            anonymous
                .request(Method::POST, TODOS)
                .basic_auth("alice", Some("pw"))
                .body(body.clone()),
        ),
        (
            "empty bearer",
            anonymous
                .request(Method::POST, TODOS)
                .header("authorization", "Bearer ")
                .body(body.clone()),
        ),
        (
            "control character",
            anonymous
                .request(Method::GET, TODOS)
                .header("authorization", "Bearer al\tice"),
        ),
    ];
    for (what, request) in attempts {
        let reply = anonymous.send(request);
        reply.expect_error(401, "unauthorized");
        let challenge = reply
            .header("www-authenticate")
            .unwrap_or_else(|| panic!("{what}: a 401 names the scheme"));
        assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
    }
    assert_eq!(
        snapshot(&alice, "notes", "todos"),
        before,
        "refused requests wrote nothing"
    );
}

#[test]
fn another_users_collections_are_404_to_strangers_and_403_to_readers_who_write() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": 1}]}),
        )
        .expect(200);
    let before = snapshot(&alice, "notes", "todos");
    let path = "/v1/data/notes/alice/todos";

    // A stranger cannot tell a private collection from one that does not exist.
    let mallory = server.client("mallory");
    for collection in ["todos", "never-written"] {
        let path = format!("/v1/data/notes/alice/{collection}");
        mallory
            .get(&format!("{path}?since=0"))
            .expect_error(404, "not_found");
        mallory
            .post_json(&path, &json!({"objects": [{"id": "a", "data": "pwned"}]}))
            .expect_error(404, "not_found");
        mallory.delete(&path).expect_error(404, "not_found");
    }
    assert_eq!(
        mallory.get("/v1/data/notes/alice").expect(200),
        json!({"collections": []}),
        "the listing shows only what the caller may read"
    );
    assert_eq!(snapshot(&alice, "notes", "todos"), before);

    // A reader may pull but not write or reset: that is a 403.
    alice
        .send(
            alice
                .request(Method::PUT, &format!("{path}/acl"))
                .body(r#"{"readers": ["mallory"]}"#),
        )
        .expect(200);
    let before = snapshot(&alice, "notes", "todos");
    assert_eq!(
        mallory.get(&format!("{path}?since=0")).expect(200)["objects"],
        before.0["objects"]
    );
    mallory
        .post_json(path, &json!({"objects": [{"id": "a", "data": "pwned"}]}))
        .expect_error(403, "forbidden");
    mallory.delete(path).expect_error(403, "forbidden");
    assert_eq!(snapshot(&alice, "notes", "todos"), before);

    // The owner may name herself instead of `~`; owners are percent-decoded.
    assert_eq!(alice.get(&format!("{path}?since=0")).expect(200), before.0);
    let ann = server.client("ann@example.com");
    ann.post_json(
        "/v1/data/notes/ann%40example.com/todos",
        &json!({"objects": [{"id": "a", "data": 1}]}),
    )
    .expect(200);
    assert_eq!(
        ann.get("/v1/data/notes/~").expect(200)["collections"][0]["last_seq"],
        1
    );
}

#[test]
fn bad_app_and_collection_names_are_400() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    let long = "c".repeat(65);
    let bad_collection_paths = [
        ("/v1/data/Notes/~/todos".to_string(), "app"),
        ("/v1/data/-notes/~/todos".to_string(), "app"),
        (format!("/v1/data/notes/~/{long}"), "collection"),
        ("/v1/data/notes/~/a%2Fb".to_string(), "collection"),
        ("/v1/data/notes/~/t%C3%B6dos".to_string(), "collection"),
    ];
    for (path, field) in bad_collection_paths {
        for method in [Method::GET, Method::POST, Method::DELETE] {
            let request = alice
                .request(method.clone(), &format!("{path}?since=0"))
                .body(r#"{"objects":[{"id":"a","data":1}]}"#);
            let reply = alice.send(request);
            reply.expect_error(400, "invalid_request");
            assert_eq!(
                reply.detail_fields(),
                [(None, field.to_string())],
                "{method} {path}"
            );
        }
    }
    let reply = alice.get("/v1/data/Notes/~");
    reply.expect_error(400, "invalid_request");
    assert_eq!(reply.detail_fields(), [(None, "app".to_string())]);
    assert_eq!(
        alice.get("/v1/data/notes/~").expect(200),
        json!({"collections": []})
    );
    // The longest legal names work.
    let app = format!("a{}", "b".repeat(63));
    let coll = "C".repeat(64);
    alice
        .post_json(
            &format!("/v1/data/{app}/~/{coll}"),
            &json!({"objects": [{"id": "a", "data": 1}]}),
        )
        .expect(200);
}

#[test]
fn unknown_routes_are_404_and_wrong_methods_405_both_as_json() {
    let server = Server::start(&[]);
    let alice = server.client("alice");
    for path in [
        "/",
        "/v1/nope",
        "/v2/info",
        "/v1/data",
        "/v1/data/notes/~/todos/extra/deep",
    ] {
        alice.get(path).expect_error(404, "not_found");
    }
    let reply = alice.send(alice.request(Method::PATCH, TODOS).body("{}"));
    reply.expect_error(405, "method_not_allowed");
    alice
        .send(alice.request(Method::POST, "/v1/info"))
        .expect_error(405, "method_not_allowed");
}

#[test]
fn every_status_of_the_push_contract_has_its_shape() {
    // One pass over 200, 409, 410, 413 and 400 on the same collection, so that a client
    // author can see them side by side.
    let server = Server::start(&["--max-batch", "2"]);
    let alice = server.client("alice");
    let ok = alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": 1}]}),
        )
        .expect(200);
    let cid = ok["collection_id"].as_str().unwrap().to_string();

    let conflict = alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "base_seq": 0, "data": 2}]}),
        )
        .expect_error(409, "conflict");
    assert_eq!(conflict["collection_id"], cid.as_str());
    assert_eq!(conflict["conflicts"][0]["reason"], "stale_base");

    let gone = alice.push("notes", "todos", &json!({"collection_id": "0123456789abcdef0123456789abcdef", "objects": [{"id": "b", "data": 1}]}));
    assert_eq!(
        gone.expect_error(410, "reset_required"),
        json!({"error": "reset_required", "message": gone.json()["message"], "collection_id": cid, "horizon": 0})
    );

    alice.push("notes", "todos", &json!({"objects": [{"id": "x", "data": 1}, {"id": "y", "data": 1}, {"id": "z", "data": 1}]})).expect_error(413, "too_large");
    let invalid = alice.push(
        "notes",
        "todos",
        &json!({"objects": [{"id": "", "data": 1}]}),
    );
    invalid.expect_error(400, "invalid_request");
    assert_eq!(invalid.detail_fields(), [(Some(0), "id".to_string())]);
    let detail = &invalid.json()["details"][0];
    assert!(
        detail["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{detail}"
    );

    let list = alice.get("/v1/data/notes/~").expect(200);
    assert_eq!(
        list["collections"][0]["last_seq"], 1,
        "only the first push wrote anything"
    );
}
