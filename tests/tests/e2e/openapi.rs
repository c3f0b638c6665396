//! The published OpenAPI document (`GET /v1/openapi.json`) against what the server does.
//!
//! - Every method of every documented path is served, and every other method is `405`
//!   (that the documented paths are exactly the registered routes is a unit test in
//!   `sync-server/src/routes/openapi.rs`).
//! - Real answers of the main flows, successes and errors alike, have a status the document
//!   lists for the operation, and a body that validates against its schema (JSON Schema
//!   2020-12, which OpenAPI 3.1 uses, with the `jsonschema` crate).
//!
//! `scripts/test-schema.sh` then lets schemathesis loose on the same document.

use reqwest::Method;
use serde_json::{json, Value};
use tidemark_tests::{Client, Reply, Server};

/// The document as the server publishes it.
fn document(server: &Server) -> Value {
    let reply = server.anonymous().get("/v1/openapi.json");
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    let document = reply.expect(200);
    assert_eq!(document["openapi"], "3.1.0");
    document
}

/// A concrete path for a template, with names that are valid for every parameter.
fn concrete(template: &str) -> String {
    template
        .replace("{app}", "notes")
        .replace("{owner}", "~")
        .replace("{collection}", "todos")
        .replace("{channel}", "room")
        .replace("{client}", "c1")
}

#[test]
fn every_documented_method_is_served_and_no_other() {
    let server = Server::start(&[]);
    let document = document(&server);
    let alice = server.client("alice");
    let methods = ["get", "post", "put", "delete", "patch"];
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() >= 12, "{paths:?}");
    for (template, item) in paths {
        let path = concrete(template);
        for method in methods {
            let request = alice
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    &path,
                )
                .header("content-type", "application/json")
                .body("{}");
            // Only the status: an event stream's body never ends.
            let response = request.send().expect("the server answers");
            let status = response.status().as_u16();
            if item.get(method).is_some() {
                assert_ne!(
                    status, 405,
                    "{method} {template} is documented but not allowed"
                );
                if status == 404 {
                    // A handler's 404 (no such collection) is fine; the router's is not.
                    let body: Value = response.json().unwrap();
                    assert_ne!(body["message"], "no such resource", "{method} {template}");
                }
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {template} is served but not documented"
                );
            }
        }
    }
}

/// Checks one real answer against the document: its status is listed for the operation,
/// and its JSON body (if the status has one) validates against the schema.
#[track_caller]
fn conforms(document: &Value, method: &str, template: &str, reply: &Reply) {
    let operation = &document["paths"][template][method];
    assert!(
        operation.is_object(),
        "{method} {template} is not documented"
    );
    let status = reply.status.to_string();
    let response = &operation["responses"][status.as_str()];
    assert!(
        response.is_object(),
        "{method} {template} answered {status}, which the document does not list: {}",
        reply.text()
    );
    let Some(schema) = response["content"]["application/json"]["schema"].as_object() else {
        return;
    };
    // The schema refers to `#/components/...`: validate against a root that has them.
    let mut root = Value::Object(schema.clone());
    root["components"] = document["components"].clone();
    let validator = jsonschema::draft202012::new(&root).expect("the schema compiles");
    let body = reply.json();
    let errors: Vec<String> = validator
        .iter_errors(&body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {template} {status}: {body} does not fit the schema: {errors:#?}"
    );
}

#[test]
fn real_answers_fit_the_document() {
    let server = Server::start(&["--quota-objects", "3", "--max-batch", "5"]);
    let doc = document(&server);
    let (alice, bob, anonymous) = (
        server.client("alice"),
        server.client("bob"),
        server.anonymous(),
    );
    const COLLECTION: &str = "/v1/data/{app}/{owner}/{collection}";
    const TODOS: &str = "/v1/data/notes/~/todos";

    conforms(&doc, "get", "/v1/info", &anonymous.get("/v1/info"));
    conforms(&doc, "get", "/v1/info", &alice.get("/v1/info"));
    conforms(
        &doc,
        "get",
        "/v1/openapi.json",
        &anonymous.get("/v1/openapi.json"),
    );
    for probe in ["/healthz", "/readyz"] {
        conforms(&doc, "get", probe, &anonymous.get(probe));
    }

    // Pushes: committed, replayed, conflicting, reset, invalid, too large, over quota.
    let first = json!({"push_id": "p1", "objects": [{"id": "a", "type": "todo", "data": {"t": 1}}, {"id": "b", "data": [1, 2]}]});
    let ok = alice.post_json(TODOS, &first);
    conforms(&doc, "post", COLLECTION, &ok);
    let collection_id = ok.json()["collection_id"].clone();
    conforms(&doc, "post", COLLECTION, &alice.post_json(TODOS, &first));
    let stale = alice.post_json(
        TODOS,
        &json!({"since": 0, "objects": [{"id": "a", "base_seq": 0, "data": 2}]}),
    );
    assert_eq!(stale.status, 409);
    conforms(&doc, "post", COLLECTION, &stale);
    let gone = alice.post_json(
        TODOS,
        &json!({"collection_id": "0123456789abcdef", "objects": []}),
    );
    assert_eq!(gone.status, 410);
    conforms(&doc, "post", COLLECTION, &gone);
    let invalid = alice.post_json(
        TODOS,
        &json!({"objects": [{"id": "", "deleted": true, "data": 1}]}),
    );
    assert_eq!(invalid.status, 400);
    conforms(&doc, "post", COLLECTION, &invalid);
    let batch: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("x{i}"), "data": i}))
        .collect();
    let too_large = alice.post_json(TODOS, &json!({ "objects": batch }));
    assert_eq!(too_large.status, 413);
    conforms(&doc, "post", COLLECTION, &too_large);
    let over = alice.post_json(
        TODOS,
        &json!({"objects": [{"id": "c", "data": 3}, {"id": "d", "data": 4}]}),
    );
    assert_eq!(over.status, 507);
    conforms(&doc, "post", COLLECTION, &over);
    let unauthenticated = anonymous.post_json(TODOS, &first);
    assert_eq!(unauthenticated.status, 401);
    conforms(&doc, "post", COLLECTION, &unauthenticated);

    // Pulls and lists, with a tombstone in the page.
    alice
        .post_json(
            TODOS,
            &json!({"collection_id": collection_id, "objects": [{"id": "b", "deleted": true}]}),
        )
        .expect(200);
    let page = alice.get(&format!("{TODOS}?since=0&limit=1"));
    conforms(&doc, "get", COLLECTION, &page);
    conforms(
        &doc,
        "get",
        COLLECTION,
        &alice.get(&format!("{TODOS}?since=1")),
    );
    conforms(
        &doc,
        "get",
        COLLECTION,
        &alice.get(&format!("{TODOS}?since=99")),
    );
    conforms(
        &doc,
        "get",
        COLLECTION,
        &alice.get(&format!("{TODOS}?since=0&limit=0")),
    );
    conforms(
        &doc,
        "get",
        COLLECTION,
        &bob.get("/v1/data/notes/alice/todos?since=0"),
    );
    let etag = page.header("etag").unwrap();
    let not_modified = alice.send(
        alice
            .request(Method::GET, &format!("{TODOS}?since=3"))
            .header("if-none-match", etag),
    );
    conforms(&doc, "get", COLLECTION, &not_modified);
    conforms(
        &doc,
        "get",
        "/v1/data/{app}/{owner}",
        &alice.get("/v1/data/notes/~"),
    );
    conforms(
        &doc,
        "get",
        "/v1/data/{app}/{owner}",
        &alice.get("/v1/data/NOT%20AN%20APP/~"),
    );

    // Sharing.
    const ACL: &str = "/v1/data/{app}/{owner}/{collection}/acl";
    conforms(&doc, "get", ACL, &alice.get(&format!("{TODOS}/acl")));
    let share = |acl: Value| {
        alice.send(
            alice
                .request(Method::PUT, &format!("{TODOS}/acl"))
                .header("content-type", "application/json")
                .body(acl.to_string()),
        )
    };
    conforms(&doc, "put", ACL, &share(json!({"readers": ["bob"]})));
    conforms(&doc, "put", ACL, &share(json!({"owners": ["bob"]})));
    conforms(&doc, "get", ACL, &bob.get("/v1/data/notes/alice/todos/acl"));
    conforms(
        &doc,
        "post",
        COLLECTION,
        &bob.post_json("/v1/data/notes/alice/todos", &json!({"objects": []})),
    );

    // Reset.
    conforms(&doc, "delete", COLLECTION, &alice.delete(TODOS));
    conforms(
        &doc,
        "delete",
        COLLECTION,
        &bob.delete("/v1/data/notes/alice/todos"),
    );

    // Presence.
    const CHANNEL: &str = "/v1/channels/{app}/{channel}";
    let write = json!({"client": "c1", "client_seq": 1, "state": {"cursor": 3}});
    conforms(
        &doc,
        "post",
        CHANNEL,
        &alice.post_json("/v1/channels/notes/room", &write),
    );
    conforms(
        &doc,
        "post",
        CHANNEL,
        &bob.post_json(
            "/v1/channels/notes/room",
            &json!({"client": "c9", "client_seq": 1, "state": {}}),
        ),
    );
    conforms(
        &doc,
        "post",
        CHANNEL,
        &alice.post_json("/v1/channels/notes/room", &write),
    );
    conforms(
        &doc,
        "post",
        CHANNEL,
        &alice.post_json("/v1/channels/notes/room", &json!({"client": "c1"})),
    );
    conforms(&doc, "get", CHANNEL, &bob.get("/v1/channels/notes/room"));
    conforms(
        &doc,
        "delete",
        "/v1/channels/{app}/{channel}/participants/{client}",
        &alice.delete("/v1/channels/notes/room/participants/c1"),
    );

    // Rate limits.
    let limited = Server::start(&["--rate-limit-user", "1", "--rate-limit-user-burst", "1"]);
    let carol = Client::new(limited.url(), Some("carol"));
    carol.get("/v1/data/notes/~").expect(200);
    let refused = carol.get("/v1/data/notes/~");
    assert_eq!(refused.status, 429);
    conforms(&doc, "get", "/v1/data/{app}/{owner}", &refused);
}

#[test]
fn the_check_catches_answers_that_do_not_fit() {
    // The same document, from the source tree: no server needed to test the checker itself.
    let doc: Value =
        serde_json::from_str(include_str!("../../../sync-server/openapi.json")).unwrap();
    let reply = |status: u16, body: Value| Reply {
        status,
        headers: Default::default(),
        body: body.to_string().into_bytes(),
    };
    let fails = |method: &str, template: &str, reply: Reply| {
        std::panic::catch_unwind(|| conforms(&doc, method, template, &reply)).is_err()
    };
    let collection = "/v1/data/{app}/{owner}/{collection}";
    let good = json!({"collection_id": "ab", "seqs": [1], "until": 1});
    assert!(!fails("post", collection, reply(200, good.clone())));
    assert!(
        fails(
            "post",
            collection,
            reply(200, json!({"seqs": [1], "until": 1}))
        ),
        "a missing field"
    );
    assert!(
        fails(
            "post",
            collection,
            reply(
                200,
                json!({"collection_id": "ab", "seqs": [-1], "until": 1})
            )
        ),
        "a wrong type in a $ref'd schema"
    );
    assert!(
        fails("post", collection, reply(418, good)),
        "an undocumented status"
    );
    assert!(fails(
        "get",
        "/v1/info",
        reply(200, json!({"name": "tidemark"}))
    ));
    assert!(fails(
        "post",
        collection,
        reply(400, json!({"error": "no_such_code", "message": "x"}))
    ));
}
