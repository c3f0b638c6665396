//! Hostile and broken input: every request gets a clear 4xx in the contract's shape, the stored
//! data stays exactly as it was, and the server keeps answering.

use reqwest::Method;
use serde_json::{json, Value};
use tidemark_tests::{snapshot, Client, Reply, Server};

const TODOS: &str = "/v1/data/notes/~/todos";
/// Large enough for 100k levels of nesting, so that the depth guard is what refuses them.
const MAX_BODY: usize = 1024 * 1024;

/// A server with small limits and a collection with some data in it.
struct Fixture {
    /// Kept alive for the test's duration.
    _server: Server,
    alice: Client,
    before: (Value, Value),
}

impl Fixture {
    fn new() -> Fixture {
        let server = Server::start(&[
            "--max-body-bytes",
            &MAX_BODY.to_string(),
            "--max-batch",
            "10",
            "--max-object-bytes",
            "1024",
        ]);
        let alice = server.client("alice");
        alice
            .push("notes", "todos", &json!({"objects": [{"id": "a", "data": {"x": 1}}, {"id": "b", "data": [1, 2]}, {"id": "c", "deleted": true}]}))
            .expect(200);
        let before = snapshot(&alice, "notes", "todos");
        Fixture {
            _server: server,
            alice,
            before,
        }
    }

    /// Sends `body` as a push and checks it was refused with `status`/`code` and wrote nothing.
    #[track_caller]
    fn refused(&self, body: impl Into<Vec<u8>>, status: u16, code: &str) -> Reply {
        let reply = self.alice.post_raw(TODOS, body.into());
        reply.expect_error(status, code);
        self.assert_unchanged();
        reply
    }

    #[track_caller]
    fn assert_unchanged(&self) {
        assert_eq!(
            snapshot(&self.alice, "notes", "todos"),
            self.before,
            "a refused request changed the stored data"
        );
    }
}

fn put(id: &str, data: Value) -> Value {
    json!({"id": id, "data": data})
}

#[test]
fn malformed_bodies_are_400_and_change_nothing() {
    let f = Fixture::new();
    for body in [
        "",
        "not json",
        "{\"objects\": [",
        "{\"objects\": [{\"id\": \"x\", \"data\": 1}]} trailing",
        "[]",
        "null",
        "\"objects\"",
        "{\"objects\": [], \"objects\": []}",
        "{'objects': []}",
    ] {
        let reply = f.alice.post_raw(TODOS, body.into());
        assert_eq!(reply.status, 400, "{body:?}: {}", reply.text());
        reply.expect_error(400, "invalid_request");
    }
    let reply = f.refused("{}", 400, "invalid_request");
    assert_eq!(reply.detail_fields(), [(None, "objects".to_string())]);
    let reply = f.refused(
        r#"{"objects": {"id": "x", "data": 1}}"#,
        400,
        "invalid_request",
    );
    assert_eq!(reply.detail_fields(), [(None, "objects".to_string())]);
    f.assert_unchanged();
}

#[test]
fn invalid_utf8_is_400_and_changes_nothing() {
    let f = Fixture::new();
    for bytes in [
        &b"{\"objects\": [{\"id\": \"\xff\", \"data\": 1}]}"[..],
        b"{\"objects\": [{\"id\": \"x\", \"data\": \"\xc0\xaf\"}]}",
        b"{\"objects\": [{\"id\": \"\xed\xa0\x80\", \"data\": 1}]}",
        b"\xfe\xff{\"objects\": []}",
    ] {
        f.refused(bytes, 400, "invalid_request");
    }
}

#[test]
fn a_body_over_max_body_bytes_is_413() {
    let f = Fixture::new();
    // Valid JSON with small objects: only the size of the whole body is wrong.
    let body = format!(
        r#"{{"objects": [{{"id": "x", "data": 1}}]{}}}"#,
        " ".repeat(MAX_BODY)
    );
    f.refused(body, 413, "too_large");
    // Exactly at the limit is fine.
    let head = r#"{"objects": [{"id": "x", "data": 1}]"#;
    let exact = format!("{head}{}}}", " ".repeat(MAX_BODY - head.len() - 1));
    assert_eq!(exact.len(), MAX_BODY);
    f.alice
        .post_raw("/v1/data/notes/~/other", exact.into_bytes())
        .expect(200);
}

#[test]
fn a_chunked_body_over_max_body_bytes_is_413() {
    let f = Fixture::new();
    let body = format!(
        r#"{{"objects": [{{"id": "x", "data": 1}}]{}}}"#,
        " ".repeat(MAX_BODY)
    );
    // A body of unknown length goes out with Transfer-Encoding: chunked, so the server only
    // finds out while reading it.
    let stream = reqwest::blocking::Body::new(std::io::Cursor::new(body.into_bytes()));
    let reply = f.alice.send(
        f.alice
            .request(Method::POST, TODOS)
            .header("content-type", "application/json")
            .body(stream),
    );
    reply.expect_error(413, "too_large");
    f.assert_unchanged();
}

#[test]
fn a_batch_over_max_batch_or_an_object_over_max_object_bytes_is_413() {
    let f = Fixture::new();
    let eleven: Vec<Value> = (0..11).map(|i| put(&format!("n{i}"), json!(i))).collect();
    f.refused(json!({"objects": eleven}).to_string(), 413, "too_large");
    // One big object among small ones sinks the whole batch.
    let big = json!({"objects": [put("small", json!(1)), put("big", json!("x".repeat(1100)))]});
    f.refused(big.to_string(), 413, "too_large");
    // The limits themselves are allowed: ten objects, 1024 bytes of data text.
    let ten: Vec<Value> = (0..10).map(|i| put(&format!("n{i}"), json!(i))).collect();
    f.alice
        .push("notes", "limits", &json!({"objects": ten}))
        .expect(200);
    let exact = json!("y".repeat(1022));
    assert_eq!(exact.to_string().len(), 1024);
    f.alice
        .push(
            "notes",
            "limits",
            &json!({"objects": [put("exact", exact)]}),
        )
        .expect(200);
}

#[test]
fn ids_over_256_bytes_are_400_and_256_bytes_are_fine() {
    let f = Fixture::new();
    let reply = f.refused(
        json!({"objects": [put(&"x".repeat(257), json!(1))]}).to_string(),
        400,
        "invalid_request",
    );
    assert_eq!(reply.detail_fields(), [(Some(0), "id".to_string())]);
    // The limit is in bytes: 86 euro signs are 258 bytes.
    let reply = f.refused(
        json!({"objects": [put("ok", json!(1)), put(&"€".repeat(86), json!(1))]}).to_string(),
        400,
        "invalid_request",
    );
    assert_eq!(reply.detail_fields(), [(Some(1), "id".to_string())]);
    // Control characters are refused too.
    let reply = f.refused(
        json!({"objects": [put("tab\there", json!(1))]}).to_string(),
        400,
        "invalid_request",
    );
    assert_eq!(reply.detail_fields(), [(Some(0), "id".to_string())]);

    let longest = "x".repeat(256);
    let euros = "€".repeat(85);
    f.alice
        .push(
            "notes",
            "ids",
            &json!({"objects": [put(&longest, json!(1)), put(&euros, json!(2))]}),
        )
        .expect(200);
    let page = f.alice.pull("notes", "ids", 0, "").expect(200);
    assert_eq!(
        (
            page["objects"][0]["id"].as_str(),
            page["objects"][1]["id"].as_str()
        ),
        (Some(longest.as_str()), Some(euros.as_str()))
    );
}

#[test]
fn json_nested_100k_levels_deep_is_refused_and_the_server_survives() {
    let f = Fixture::new();
    let deep =
        |open: &str, close: &str| format!("{}{}", open.repeat(100_000), close.repeat(100_000));
    let bodies = [
        format!(
            r#"{{"objects": [{{"id": "x", "data": {}}}]}}"#,
            deep("[", "]")
        ),
        format!(
            r#"{{"objects": [{{"id": "x", "data": {}1}}]}}"#,
            "{\"a\":".repeat(100_000)
        ) + &"}".repeat(100_000),
        format!(r#"{{"objects": [], "unknown": {}}}"#, deep("[", "]")),
        deep("[", "]"),
        // Unbalanced: never closed.
        "[".repeat(100_000),
    ];
    for body in bodies {
        assert!(
            body.len() < MAX_BODY,
            "the body limit must not be what refuses it"
        );
        f.refused(body, 400, "invalid_request");
    }
    assert_eq!(
        f.alice.get("/v1/info").expect(200)["name"],
        "tidemark",
        "the server still answers"
    );
    f.alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [put("after", json!(1))]}),
        )
        .expect(200);
}

#[test]
fn data_nested_deeper_than_64_is_400_and_64_is_fine() {
    let f = Fixture::new();
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let body = format!(
        r#"{{"objects": [{{"id": "deep", "data": {}}}]}}"#,
        nested(65)
    );
    f.refused(body, 400, "invalid_request");
    let body = format!(
        r#"{{"objects": [{{"id": "deep", "data": {}}}]}}"#,
        nested(64)
    );
    f.alice
        .post_raw("/v1/data/notes/~/deep", body.into_bytes())
        .expect(200);
    let page = f.alice.pull("notes", "deep", 0, "");
    assert!(
        page.text().contains(&nested(64)),
        "64 levels are stored and served as sent"
    );
}

#[test]
fn duplicate_ids_tombstones_with_data_and_wrong_types_are_400_with_details() {
    let f = Fixture::new();
    let reply = f.refused(
        r#"{"collection_id": "", "since": "5", "push_id": 9, "objects": [
            {"id": "a", "data": 1},
            {"id": "a", "data": 2},
            {"id": "t", "deleted": true, "data": {"x": 1}},
            {"id": 7, "data": 1},
            {"id": "x", "base_seq": "1", "data": 1},
            {"id": "y", "base_seq": -1, "data": 1},
            {"id": "w", "type": 5, "data": 1},
            {"id": "v", "expires": "soon", "data": 1},
            {"id": "u"},
            {"id": "s", "deleted": "yes"}
        ]}"#,
        400,
        "invalid_request",
    );
    let expected: Vec<(Option<u64>, String)> = [
        (None, "collection_id"),
        (None, "since"),
        (None, "push_id"),
        (Some(1), "id"),
        (Some(2), "data"),
        (Some(3), "id"),
        (Some(4), "base_seq"),
        (Some(5), "base_seq"),
        (Some(6), "type"),
        (Some(7), "expires"),
        (Some(8), "data"),
        (Some(9), "deleted"),
        (Some(9), "data"),
    ]
    .into_iter()
    .map(|(i, f)| (i, f.to_string()))
    .collect();
    assert_eq!(reply.detail_fields(), expected, "{}", reply.text());

    // Each problem alone is enough to refuse the whole batch, good objects included.
    for (objects, index, field) in [
        (json!([put("ok", json!(1)), put("ok", json!(2))]), 1, "id"),
        (
            json!([put("ok", json!(1)), {"id": "t", "deleted": true, "data": 1}]),
            1,
            "data",
        ),
        (
            json!([put("ok", json!(1)), {"id": "t", "deleted": true, "expires": 5}]),
            1,
            "expires",
        ),
        (json!([put("ok", json!(1)), {"data": 1}]), 1, "id"),
        (json!([put("ok", json!(1)), 5]), 1, ""),
        (
            json!([put("ok", json!(1)), {"id": ["x"], "data": 1}]),
            1,
            "id",
        ),
        (
            json!([put("ok", json!(1)), {"id": "n", "base_seq": 1.5, "data": 1}]),
            1,
            "base_seq",
        ),
    ] {
        let reply = f.refused(
            json!({"objects": objects}).to_string(),
            400,
            "invalid_request",
        );
        assert_eq!(
            reply.detail_fields(),
            [(Some(index), field.to_string())],
            "{objects}"
        );
    }
    for (top, field) in [
        (json!({"since": -1}), "since"),
        (json!({"since": true}), "since"),
        (json!({"collection_id": 5}), "collection_id"),
        (json!({"push_id": ""}), "push_id"),
        (json!({"push_id": "x".repeat(257)}), "push_id"),
    ] {
        let mut body = top.clone();
        body["objects"] = json!([put("ok", json!(1))]);
        let reply = f.refused(body.to_string(), 400, "invalid_request");
        assert_eq!(reply.detail_fields(), [(None, field.to_string())], "{top}");
    }
}

#[test]
fn a_413_that_leaves_the_body_unread_says_connection_close_if_it_closes() {
    use std::io::{Read, Write};
    let server = Server::start(&["--max-body-bytes", &MAX_BODY.to_string()]);
    let authority = server.url().strip_prefix("http://").unwrap().to_string();
    let mut socket = std::net::TcpStream::connect(&authority).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .unwrap();
    // Announce a body over the limit and send only the start of it, as a client still
    // uploading does when the answer arrives.
    let length = 4 * MAX_BODY;
    let head = format!(
        "POST {TODOS} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer alice\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).unwrap();
    let _ = socket.write_all(&vec![b' '; 64 * 1024]);
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    // Read the answer, then whatever follows until the server closes or goes quiet.
    let closed = loop {
        match socket.read(&mut buffer) {
            Ok(0) => break true,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false, // quiet: the connection stays open
        }
    };
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(text.starts_with("http/1.1 413"), "{text}");
    if closed {
        // Otherwise a client reuses the connection for its next request, which then fails.
        assert!(
            text.contains("\r\nconnection: close\r\n"),
            "the server closed the connection after a 413 without saying so:\n{text}"
        );
    }
}
