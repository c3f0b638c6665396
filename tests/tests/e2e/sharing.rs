//! Sharing: every role against every operation, creators and their own objects, listings,
//! `"*"`, and an ACL change that takes effect at once, open streams included.
//!
//! Dev auth throughout (the token is the user id): who is who is the point here, not how
//! tokens are checked (that is `jwks` and `auth`).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tidemark_tests::{Client, Reply, Server};

use crate::sse::{EventStream, Request};

const WAIT: Duration = Duration::from_secs(15);
const OWNER: &str = "olivia";

fn acl_of(readers: &[&str], writers: &[&str], creators: &[&str]) -> Value {
    json!({"readers": readers, "writers": writers, "creators": creators})
}

fn standard_acl() -> Value {
    acl_of(&["rita"], &["wade"], &["cora"])
}

fn path(collection: &str) -> String {
    format!("/v1/data/notes/{OWNER}/{collection}")
}

fn put_acl(client: &Client, collection: &str, acl: &Value) -> Reply {
    client.send(
        client
            .request(Method::PUT, &format!("{}/acl", path(collection)))
            .header("content-type", "application/json")
            .body(acl.to_string()),
    )
}

fn push(client: &Client, collection: &str, objects: Value) -> Reply {
    client.post_json(&path(collection), &json!({ "objects": objects }))
}

/// The owner's collection with two objects of theirs and the standard ACL.
fn shared_collection(server: &Server, collection: &str) {
    let owner = server.client(OWNER);
    push(
        &owner,
        collection,
        json!([{"id": "o1", "data": "owner's"}, {"id": "o2", "data": "owner's too"}]),
    )
    .expect(200);
    assert_eq!(
        put_acl(&owner, collection, &standard_acl()).expect(200),
        standard_acl()
    );
}

/// Every object by id, as the owner sees it.
fn objects_by_id(server: &Server, collection: &str) -> BTreeMap<String, Value> {
    let owner = server.client(OWNER);
    let mut objects = BTreeMap::new();
    let mut since = 0;
    loop {
        let page = owner
            .get(&format!("{}?since={since}", path(collection)))
            .expect(200);
        for object in page["objects"].as_array().expect("objects") {
            objects.insert(
                object["id"].as_str().expect("id").to_string(),
                object.clone(),
            );
        }
        if page["more"] != true {
            return objects;
        }
        since = page["until"].as_u64().expect("until");
    }
}

/// A status, after checking that an error has the contract's shape and the right code.
#[track_caller]
fn status(reply: &Reply) -> u16 {
    let code = match reply.status {
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        _ => return reply.status,
    };
    reply.expect_error(reply.status, code);
    if reply.status == 401 {
        assert!(reply.header("www-authenticate").is_some());
    }
    reply.status
}

/// Opens an event stream and closes it again; the status.
fn events_status(server: &Server, token: Option<&str>, collection: &str) -> u16 {
    let request = Request {
        bearer: token,
        ..Request::default()
    };
    match EventStream::open(
        server.url(),
        &format!("{}/events?since=0", path(collection)),
        request,
    ) {
        Ok(stream) => {
            // A reader really gets the backlog, not just a 200.
            assert_eq!(stream.next_change(WAIT).0, 1);
            stream.close();
            200
        }
        Err(refused) => {
            assert_eq!(
                refused.json()["error"],
                match refused.status {
                    401 => "unauthorized",
                    _ => "not_found",
                },
                "{}",
                refused.body
            );
            refused.status
        }
    }
}

const OPERATIONS: [&str; 8] = [
    "list",
    "pull",
    "events",
    "push own object",
    "push owner's object",
    "GET acl",
    "PUT acl",
    "DELETE",
];

/// `(role, user)`: `None` is anonymous.
const ROLES: [(&str, Option<&str>); 6] = [
    ("owner", Some(OWNER)),
    ("reader", Some("rita")),
    ("writer", Some("wade")),
    ("creator", Some("cora")),
    ("stranger", Some("sam")),
    ("anonymous", None),
];

#[test]
fn every_role_gets_exactly_its_rights_on_every_operation() {
    let server = Server::start(&[]);
    let mut actual = BTreeMap::new();
    for (role, user) in ROLES {
        let collection = format!("shared-{role}");
        shared_collection(&server, &collection);
        let client = match user {
            Some(user) => server.client(user),
            None => server.anonymous(),
        };
        let before = objects_by_id(&server, &collection);
        let mut row = Vec::new();

        let list = client.get(&format!("/v1/data/notes/{OWNER}"));
        row.push(match status(&list) {
            200 => {
                let listed = list.json()["collections"]
                    .as_array()
                    .expect("collections")
                    .iter()
                    .any(|c| c["name"] == collection.as_str());
                format!("200 {}", if listed { "listed" } else { "hidden" })
            }
            other => other.to_string(),
        });
        row.push(status(&client.get(&format!("{}?since=0", path(&collection)))).to_string());
        row.push(events_status(&server, user, &collection).to_string());

        let own_id = format!("{role}-own");
        let own = push(&client, &collection, json!([{"id": own_id, "data": 1}]));
        row.push(status(&own).to_string());
        if own.status == 200 {
            // Whoever created it may change it again; the author stays.
            push(&client, &collection, json!([{"id": own_id, "data": 2}])).expect(200);
        }
        let theirs = push(&client, &collection, json!([{"id": "o1", "data": role}]));
        row.push(status(&theirs).to_string());
        if role == "creator" {
            assert_eq!(
                theirs.detail_fields(),
                [(Some(0), "id".to_string())],
                "the 403 says which object was not theirs"
            );
        }

        // What was written, and by whom.
        let after = objects_by_id(&server, &collection);
        let mut expected = before.clone();
        if own.status == 200 {
            let object = &after[&own_id];
            assert_eq!(object["data"], 2, "{role}: {object}");
            assert_eq!(
                object["author"],
                user.expect("a user pushed"),
                "{role}: the creator is the author"
            );
            expected.insert(own_id.clone(), object.clone());
        }
        if theirs.status == 200 {
            let object = &after["o1"];
            assert_eq!(object["data"], role);
            assert_eq!(
                object["author"], OWNER,
                "{role}: an update keeps the author"
            );
            expected.insert("o1".into(), object.clone());
        }
        assert_eq!(after, expected, "{role}: nothing else changed");

        row.push(status(&client.get(&format!("{}/acl", path(&collection)))).to_string());
        let put = put_acl(&client, &collection, &acl_of(&[], &["sam", "rita"], &[]));
        row.push(status(&put).to_string());
        let owner = server.client(OWNER);
        let acl_now = owner.get(&format!("{}/acl", path(&collection))).expect(200);
        if put.status != 200 {
            assert_eq!(acl_now, standard_acl(), "{role}: the ACL is unchanged");
        }
        // Put the standard ACL back, so that DELETE is judged on the same grants.
        put_acl(&owner, &collection, &standard_acl()).expect(200);

        let epoch = owner
            .get(&format!("{}?since=0", path(&collection)))
            .expect(200)["collection_id"]
            .clone();
        let reset = client.delete(&path(&collection));
        row.push(status(&reset).to_string());
        let epoch_after = owner
            .get(&format!("{}?since=0", path(&collection)))
            .expect(200)["collection_id"]
            .clone();
        assert_eq!(
            epoch != epoch_after,
            reset.status == 200,
            "{role}: only an allowed DELETE resets"
        );
        actual.insert(role, row);
    }

    let expected: BTreeMap<&str, Vec<&str>> = [
        (
            "owner",
            [
                "200 listed",
                "200",
                "200",
                "200",
                "200",
                "200",
                "200",
                "200",
            ],
        ),
        (
            "reader",
            [
                "200 listed",
                "200",
                "200",
                "403",
                "403",
                "403",
                "403",
                "403",
            ],
        ),
        (
            "writer",
            [
                "200 listed",
                "200",
                "200",
                "200",
                "200",
                "403",
                "403",
                "403",
            ],
        ),
        (
            "creator",
            [
                "200 listed",
                "200",
                "200",
                "200",
                "403",
                "403",
                "403",
                "403",
            ],
        ),
        (
            "stranger",
            [
                "200 hidden",
                "404",
                "404",
                "404",
                "404",
                "404",
                "404",
                "404",
            ],
        ),
        (
            "anonymous",
            ["401", "401", "401", "401", "401", "401", "401", "401"],
        ),
    ]
    .into_iter()
    .map(|(role, row)| (role, row.to_vec()))
    .collect();
    let render = |matrix: &BTreeMap<&str, Vec<String>>| {
        matrix
            .iter()
            .map(|(role, row)| {
                let cells: Vec<String> = OPERATIONS
                    .iter()
                    .zip(row)
                    .map(|(op, cell)| format!("{op}: {cell}"))
                    .collect();
                format!("{role:>9} | {}", cells.join(" | "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let expected: BTreeMap<&str, Vec<String>> = expected
        .into_iter()
        .map(|(role, row)| (role, row.into_iter().map(String::from).collect()))
        .collect();
    assert!(
        actual == expected,
        "the access matrix differs\nexpected:\n{}\nactual:\n{}",
        render(&expected),
        render(&actual)
    );
}

#[test]
fn strangers_cannot_tell_a_private_collection_from_a_missing_one() {
    let server = Server::start(&[]);
    shared_collection(&server, "private");
    let sam = server.client("sam");
    for suffix in ["?since=0", "/acl"] {
        let existing = sam.get(&format!("{}{suffix}", path("private")));
        let missing = sam.get(&format!("{}{suffix}", path("no-such-collection")));
        assert_eq!(
            (existing.status, existing.json()),
            (missing.status, missing.json()),
            "{suffix}"
        );
        existing.expect_error(404, "not_found");
    }
    let existing = push(&sam, "private", json!([{"id": "x", "data": 1}]));
    let missing = push(&sam, "no-such-collection", json!([{"id": "x", "data": 1}]));
    assert_eq!(
        (existing.status, existing.json()),
        (missing.status, missing.json())
    );
    assert_eq!(
        server
            .client(OWNER)
            .get(&format!("{}?since=0", path("no-such-collection")))
            .expect(200)["until"],
        0,
        "the stranger's push to a missing collection did not create it"
    );
}

#[test]
fn a_creator_changes_only_the_objects_it_created() {
    let server = Server::start(&[]);
    shared_collection(&server, "board");
    let cora = server.client("cora");
    let owner = server.client(OWNER);
    let wade = server.client("wade");

    push(
        &cora,
        "board",
        json!([{"id": "c1", "data": 1}, {"id": "c2", "data": 1}]),
    )
    .expect(200);
    push(&cora, "board", json!([{"id": "c1", "data": 2}])).expect(200);
    push(&cora, "board", json!([{"id": "c2", "deleted": true}])).expect(200);
    let objects = objects_by_id(&server, "board");
    assert_eq!(objects["c1"]["author"], "cora");
    assert_eq!(objects["c1"]["data"], 2);
    assert_eq!(objects["c2"]["deleted"], true, "a creator deletes its own");

    // Someone else's object, alone or in a batch: 403 naming it, and nothing written.
    let before = objects_by_id(&server, "board");
    let refused = push(
        &cora,
        "board",
        json!([{"id": "c3", "data": 1}, {"id": "o1", "data": "mine now"}, {"id": "c1", "data": 3}]),
    );
    refused.expect_error(403, "forbidden");
    assert_eq!(refused.detail_fields(), [(Some(1), "id".to_string())]);
    push(&cora, "board", json!([{"id": "o1", "deleted": true}])).expect_error(403, "forbidden");
    assert_eq!(
        objects_by_id(&server, "board"),
        before,
        "the batch is atomic"
    );

    // Others may change a creator's object (by their own rights); the author stays.
    push(&owner, "board", json!([{"id": "c1", "data": "owner edit"}])).expect(200);
    push(&wade, "board", json!([{"id": "c1", "data": "writer edit"}])).expect(200);
    let c1 = &objects_by_id(&server, "board")["c1"];
    assert_eq!(
        (&c1["data"], &c1["author"]),
        (&json!("writer edit"), &json!("cora"))
    );
    push(&cora, "board", json!([{"id": "c1", "data": "still mine"}])).expect(200);

    // A writer's new object is the writer's: the creator may not touch it.
    push(&wade, "board", json!([{"id": "w1", "data": 1}])).expect(200);
    assert_eq!(objects_by_id(&server, "board")["w1"]["author"], "wade");
    push(&cora, "board", json!([{"id": "w1", "data": 2}])).expect_error(403, "forbidden");

    // A deleted object may be created again, by anyone who may create; it is theirs then.
    push(&owner, "board", json!([{"id": "o2", "deleted": true}])).expect(200);
    push(&cora, "board", json!([{"id": "o2", "data": "reborn"}])).expect(200);
    assert_eq!(objects_by_id(&server, "board")["o2"]["author"], "cora");

    // Live subscribers see the author too.
    let stream = EventStream::subscribe(
        server.url(),
        &format!("{}/events?since=0", path("board")),
        "rita",
    );
    let mut last = None;
    let until = owner.get(&format!("{}?since=0", path("board"))).expect(200)["until"]
        .as_u64()
        .expect("until");
    while last.as_ref().map(|(seq, _)| *seq) != Some(until) {
        last = Some(stream.next_change(WAIT));
    }
    let (_, object) = last.expect("a change");
    assert_eq!(
        (&object["id"], &object["author"]),
        (&json!("o2"), &json!("cora"))
    );
}

#[test]
fn listing_another_owners_collections_shows_only_the_readable_ones() {
    let server = Server::start(&[]);
    let owner = server.client(OWNER);
    for (collection, acl) in [
        ("private", None),
        ("shared", Some(acl_of(&["rita"], &[], &[]))),
        ("public", Some(acl_of(&["*"], &[], &[]))),
        ("team", Some(acl_of(&[], &["wade"], &["cora"]))),
    ] {
        push(&owner, collection, json!([{"id": "a", "data": 1}])).expect(200);
        if let Some(acl) = acl {
            put_acl(&owner, collection, &acl).expect(200);
        }
    }
    let names = |client: &Client| {
        let list = client.get(&format!("/v1/data/notes/{OWNER}")).expect(200);
        let mut names: Vec<String> = list["collections"]
            .as_array()
            .expect("collections")
            .iter()
            .map(|c| c["name"].as_str().expect("name").to_string())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&owner), ["private", "public", "shared", "team"]);
    assert_eq!(names(&server.client("rita")), ["public", "shared"]);
    assert_eq!(names(&server.client("wade")), ["public", "team"]);
    assert_eq!(names(&server.client("cora")), ["public", "team"]);
    assert_eq!(names(&server.client("sam")), ["public"]);
    server
        .anonymous()
        .get(&format!("/v1/data/notes/{OWNER}"))
        .expect_error(401, "unauthorized");
    // `~` is still each caller's own namespace.
    assert_eq!(
        server.client("rita").get("/v1/data/notes/~").expect(200),
        json!({"collections": []})
    );
}

#[test]
fn star_grants_any_authenticated_user_but_not_anonymous_callers() {
    let server = Server::start(&[]);
    let owner = server.client(OWNER);
    push(&owner, "public", json!([{"id": "a", "data": 1}])).expect(200);
    put_acl(&owner, "public", &acl_of(&["*"], &[], &[])).expect(200);

    let sam = server.client("sam");
    assert_eq!(
        sam.get(&format!("{}?since=0", path("public"))).expect(200)["until"],
        1
    );
    assert_eq!(events_status(&server, Some("sam"), "public"), 200);
    push(&sam, "public", json!([{"id": "b", "data": 1}])).expect_error(403, "forbidden");
    sam.get(&format!("{}/acl", path("public")))
        .expect_error(403, "forbidden");
    server
        .anonymous()
        .get(&format!("{}?since=0", path("public")))
        .expect_error(401, "unauthorized");
    assert_eq!(events_status(&server, None, "public"), 401);

    // `*` as a writer: anyone may push, and is the author of what they create.
    put_acl(&owner, "public", &acl_of(&[], &["*"], &[])).expect(200);
    push(&sam, "public", json!([{"id": "b", "data": 1}])).expect(200);
    assert_eq!(objects_by_id(&server, "public")["b"]["author"], "sam");
    // But `*` never makes anyone the owner.
    sam.delete(&path("public")).expect_error(403, "forbidden");
}

#[test]
fn revoking_a_reader_closes_their_open_stream_and_then_hides_the_collection() {
    let server = Server::start(&[]);
    let owner = server.client(OWNER);
    push(
        &owner,
        "plans",
        json!([{"id": "a", "data": 1}, {"id": "b", "data": 2}]),
    )
    .expect(200);
    put_acl(&owner, "plans", &acl_of(&["rita", "*"], &["wade"], &[])).expect(200);
    let events = format!("{}/events?since=0", path("plans"));
    let rita = EventStream::subscribe(server.url(), &events, "rita");
    let wade = EventStream::subscribe(server.url(), &events, "wade");
    let sam = EventStream::subscribe(server.url(), &events, "sam");
    for stream in [&rita, &wade, &sam] {
        assert_eq!(stream.next_change(WAIT).0, 1);
        assert_eq!(stream.next_change(WAIT).0, 2);
    }

    // Rita and `*` lose access; Wade goes from writer to reader and keeps it.
    put_acl(&owner, "plans", &acl_of(&["wade"], &[], &[])).expect(200);
    push(
        &owner,
        "plans",
        json!([{"id": "secret", "data": "after the revocation"}]),
    )
    .expect(200);

    for (who, stream) in [("rita", &rita), ("sam", &sam)] {
        let events = stream.until_closed(WAIT);
        let (last, before) = events
            .split_last()
            .unwrap_or_else(|| panic!("{who}: the stream closed without an error event"));
        assert_eq!(last.event, "error", "{who}: {events:?}");
        assert_eq!(last.json()["error"], "not_found", "{who}: {last:?}");
        assert!(
            before.is_empty(),
            "{who}: nothing is sent after the revocation: {before:?}"
        );
        let client = server.client(who);
        client
            .get(&format!("{}?since=0", path("plans")))
            .expect_error(404, "not_found");
        assert_eq!(events_status(&server, Some(who), "plans"), 404);
        assert_eq!(
            client.get(&format!("/v1/data/notes/{OWNER}")).expect(200),
            json!({"collections": []}),
            "{who}: the collection is no longer listed"
        );
    }

    let (seq, object) = wade.next_change(WAIT);
    assert_eq!(
        (seq, &object["id"]),
        (3, &json!("secret")),
        "wade still reads"
    );
    push(
        &server.client("wade"),
        "plans",
        json!([{"id": "c", "data": 1}]),
    )
    .expect_error(403, "forbidden");

    // Granting again works at once too.
    put_acl(&owner, "plans", &acl_of(&["wade", "rita"], &[], &[])).expect(200);
    assert_eq!(
        server
            .client("rita")
            .get(&format!("{}?since=0", path("plans")))
            .expect(200)["until"],
        3
    );
    wade.expect_quiet(Duration::from_millis(200));
}

#[test]
fn the_acl_is_validated_and_defaults_to_nobody() {
    let server = Server::start(&[]);
    let owner = server.client(OWNER);
    push(&owner, "todos", json!([{"id": "a", "data": 1}])).expect(200);
    assert_eq!(
        owner.get(&format!("{}/acl", path("todos"))).expect(200),
        acl_of(&[], &[], &[])
    );
    for (body, why) in [
        ("{\"readers\": \"rita\"}", "not a list"),
        ("{\"readers\": [\"\"]}", "an empty user id"),
        ("{\"owners\": [\"rita\"]}", "an unknown role"),
        ("[\"rita\"]", "not an object"),
        ("{\"readers\": [", "broken JSON"),
    ] {
        let reply = owner.send(
            owner
                .request(Method::PUT, &format!("{}/acl", path("todos")))
                .header("content-type", "application/json")
                .body(body),
        );
        assert_eq!(reply.status, 400, "{why}: {}", reply.text());
        reply.expect_error(400, "invalid_request");
    }
    assert_eq!(
        owner.get(&format!("{}/acl", path("todos"))).expect(200),
        acl_of(&[], &[], &[]),
        "a refused ACL changed nothing"
    );
    // Partial bodies default the missing lists to nobody.
    put_acl(&owner, "todos", &json!({"readers": ["rita"]})).expect(200);
    assert_eq!(
        owner.get(&format!("{}/acl", path("todos"))).expect(200),
        acl_of(&["rita"], &[], &[])
    );
}

/// Objects in the backlog of the revocation-during-catch-up test: more than one catch-up page
/// (1,000) and, at 16 KiB each, far more than the socket buffers hold.
const BACKLOG: u64 = 1200;

#[test]
fn a_reader_revoked_while_catching_up_gets_no_more_of_the_backlog() {
    let server = Server::start(&[]);
    let owner = server.client(OWNER);
    let big = "b".repeat(16 * 1024);
    for batch in 0..BACKLOG / 100 {
        let objects: Vec<Value> = (0..100)
            .map(|i| json!({"id": format!("doc-{batch}-{i}"), "data": big}))
            .collect();
        push(&owner, "archive", json!(objects)).expect(200);
    }
    put_acl(&owner, "archive", &acl_of(&["rita"], &[], &[])).expect(200);

    // Rita starts a catch-up from 0 but reads nothing yet: the server's writes to her block
    // with most of the backlog still to send.
    let mut rita = EventStream::open_paused(
        server.url(),
        &format!("{}/events?since=0", path("archive")),
        Request {
            bearer: Some("rita"),
            ..Request::default()
        },
    )
    .unwrap_or_else(|r| panic!("{} {}", r.status, r.body));
    put_acl(&owner, "archive", &acl_of(&[], &[], &[])).expect(200);
    server
        .client("rita")
        .get(&format!("{}?since=0", path("archive")))
        .expect_error(404, "not_found");

    // What was already in the socket buffers cannot be recalled; nothing after may be sent.
    rita.resume();
    let events = rita.until_closed(Duration::from_secs(60));
    let changes = events.iter().filter(|e| e.event == "change").count();
    let last = events.last().expect("some events");
    assert!(
        changes < 1000,
        "after her access was revoked, rita still received {changes} of the {BACKLOG} \
         objects (about {} MiB): a stream that is catching up does not re-check access",
        changes * 16 / 1024
    );
    assert_eq!(last.event, "error", "{last:?}");
    assert_eq!(last.json()["error"], "not_found", "{last:?}");
}
