//! Hostile input, beyond `bad_input`'s broken bodies: JSON built to hurt parsers, names built
//! to escape their place, sizes and headers that lie. Each is answered with a clear 4xx, the
//! stored data is exactly as before, the server keeps serving, and its peak memory (VmHWM)
//! stays under [`MEMORY_BOUND`].
//!
//! What is legal is written down in docs/PROTOCOL.md (Names, Objects).

use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use serde_json::{json, Value};
use tidemark_tests::{raw, snapshot, Client, Reply, Server};

const TODOS: &str = "/v1/data/notes/~/todos";
/// Large enough that the JSON checks, not the body limit, refuse 1M levels of nesting and
/// a 10 MB string.
const MAX_BODY: usize = 24 * 1024 * 1024;
/// The server's peak resident memory may not pass this, whatever it was sent. A 24 MB body is
/// held once while it is checked; nothing hostile may multiply it.
const MEMORY_BOUND: u64 = 256 * 1024 * 1024;
const WAIT: Duration = Duration::from_secs(20);

/// A server with a body limit large enough for the hostile bodies, and data in two users'
/// collections.
struct Fixture {
    server: Server,
    alice: Client,
    bob: Client,
    before: [(Value, Value); 2],
}

impl Fixture {
    fn new() -> Fixture {
        let server = Server::start(&[
            "--max-body-bytes",
            &MAX_BODY.to_string(),
            "--body-timeout",
            "1s",
        ]);
        let alice = server.client("alice");
        let bob = server.client("bob");
        alice
            .push(
                "notes",
                "todos",
                &json!({"objects": [{"id": "a", "data": {"x": 1}}, {"id": "b", "deleted": true}]}),
            )
            .expect(200);
        bob.push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "secret", "data": "bob's"}]}),
        )
        .expect(200);
        let before = [
            snapshot(&alice, "notes", "todos"),
            snapshot(&bob, "notes", "todos"),
        ];
        Fixture {
            server,
            alice,
            bob,
            before,
        }
    }

    /// Sends `body` as alice's push; checks the status and code and that nothing changed.
    #[track_caller]
    fn refused(&self, body: impl Into<Vec<u8>>, status: u16, code: &str) -> Reply {
        let reply = self.alice.post_raw(TODOS, body.into());
        reply.expect_error(status, code);
        self.assert_intact();
        reply
    }

    /// Both users' data is as it was, and the server answers.
    #[track_caller]
    fn assert_intact(&self) {
        let now = [
            snapshot(&self.alice, "notes", "todos"),
            snapshot(&self.bob, "notes", "todos"),
        ];
        assert_eq!(now, self.before, "a refused request changed stored data");
    }

    /// The server's peak resident memory so far.
    fn peak_memory(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.server.pid()))
            .expect("reading the server's /proc status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kb * 1024
    }

    #[track_caller]
    fn assert_memory_bounded(&self) {
        let peak = self.peak_memory();
        eprintln!("server peak memory: {} MiB", peak / (1024 * 1024));
        assert!(
            peak < MEMORY_BOUND,
            "the server's peak memory reached {peak} bytes"
        );
        self.alice.get("/v1/info").expect(200);
    }

    /// A raw request from alice to `path`, with `Connection: close`.
    fn raw_get(&self, path: &str) -> raw::RawReply {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer alice\r\nConnection: close\r\n\r\n",
            raw::authority(self.server.url())
        );
        raw::exchange(self.server.url(), request.as_bytes(), WAIT)
    }
}

fn push_of(data: &str) -> String {
    format!(r#"{{"objects": [{{"id": "h", "data": {data}}}]}}"#)
}

#[test]
fn hostile_json_is_a_clear_4xx_and_changes_nothing() {
    let f = Fixture::new();
    // One million levels of nesting, in data and around the whole body.
    let deep = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
    f.refused(push_of(&deep), 400, "invalid_request");
    f.refused(deep.clone(), 400, "invalid_request");
    f.refused("{\"a\":".repeat(1_000_000), 400, "invalid_request");

    // 10 MB strings: as data (over the object limit), as an id, as a push_id.
    let ten_mb = "s".repeat(10 * 1024 * 1024);
    f.refused(push_of(&format!("\"{ten_mb}\"")), 413, "too_large");
    let reply = f.refused(
        format!(r#"{{"objects": [{{"id": "{ten_mb}", "data": 1}}]}}"#),
        400,
        "invalid_request",
    );
    assert_eq!(reply.detail_fields(), [(Some(0), "id".to_string())]);
    let reply = f.refused(
        format!(r#"{{"push_id": "{ten_mb}", "objects": []}}"#),
        400,
        "invalid_request",
    );
    assert_eq!(reply.detail_fields(), [(None, "push_id".to_string())]);
    drop(ten_mb);

    // Numbers with 10,000 digits: beyond a double in data, beyond u64 in seqs.
    let digits = "9".repeat(10_000);
    let reply = f.refused(push_of(&digits), 400, "invalid_request");
    assert_eq!(reply.detail_fields(), [(Some(0), "data".to_string())]);
    let reply = f.refused(
        format!(r#"{{"since": {digits}, "objects": []}}"#),
        400,
        "invalid_request",
    );
    assert_eq!(reply.detail_fields(), [(None, "since".to_string())]);
    let reply = f.refused(
        format!(r#"{{"objects": [{{"id": "n", "base_seq": {digits}, "data": 1}}]}}"#),
        400,
        "invalid_request",
    );
    assert_eq!(reply.detail_fields(), [(Some(0), "base_seq".to_string())]);
    f.alice
        .pull("notes", "todos", 0, &format!("&limit={digits}"))
        .expect_error(400, "invalid_request");

    // Duplicate keys, at every level.
    for body in [
        push_of(r#"{"k": 1, "k": 2}"#),
        push_of(r#"[{"deep": {"k": 1, "j": {"k": 1, "k": 1}}}]"#),
        push_of(r#"{"k": 1, "\u006b": 2}"#),
        r#"{"objects": [{"id": "a", "id": "b", "data": 1}]}"#.to_string(),
        r#"{"objects": [], "since": 1, "since": 2}"#.to_string(),
    ] {
        f.refused(body, 400, "invalid_request");
    }

    // Lone surrogates in \u escapes: no UTF-8 text can hold them.
    for body in [
        push_of(r#""\ud800""#),
        push_of(r#"{"\udc00": 1}"#),
        push_of(r#""\ud83dA""#),
        r#"{"objects": [{"id": "\ud800", "data": 1}]}"#.to_string(),
        r#"{"objects": [{"id": "x", "type": "\udfff", "data": 1}]}"#.to_string(),
    ] {
        f.refused(body, 400, "invalid_request");
    }

    // NUL: a raw NUL byte is not JSON anywhere; the \u0000 escape is refused in ids, owners
    // and types (control characters), and legal inside data, stored and served as sent.
    f.refused(push_of("\"a\0b\""), 400, "invalid_request");
    f.refused(
        &b"{\"objects\": [{\"id\": \"x\", \"data\": 1}]}\0"[..],
        400,
        "invalid_request",
    );
    let reply = f.refused(
        r#"{"objects": [{"id": "nul\u0000id", "data": 1}]}"#,
        400,
        "invalid_request",
    );
    assert_eq!(reply.detail_fields(), [(Some(0), "id".to_string())]);

    f.assert_memory_bounded();

    // What is legal comes back byte for byte: \u0000 and a surrogate pair inside data, a
    // 300-digit number (in range), and keys repeated in different objects.
    let legal = r#"{"nul": "a\u0000b", "smile": "\ud83d\ude00", "n": 1e300, "big": 123456789012345678901234567890, "o": {"k": 1}, "p": {"k": 2}}"#;
    f.alice
        .post_raw("/v1/data/notes/~/legal", push_of(legal).into_bytes())
        .expect(200);
    let page = f.alice.pull("notes", "legal", 0, "");
    assert!(
        page.text().contains(legal),
        "legal data is served as it was sent: {}",
        page.text()
    );
}

#[test]
fn hostile_names_are_refused_or_reach_nothing() {
    let f = Fixture::new();
    // App and collection names are plain ASCII by rule: traversal, separators and look-alikes
    // are 400 before anything is looked up. Raw requests, so that no client library
    // normalises `..` away first.
    let bad_names = [
        "..",
        "%2e%2e",
        "%2E%2E",
        ".",
        "a%2fb",
        "a%5cb",
        "..%2f..%2fetc",
        "n%D0%BEtes",    // Cyrillic "о"
        "%EF%BD%8Eotes", // fullwidth "ｎ"
        "a%00b",
        "a%20b",
    ];
    let long = "a".repeat(65);
    for name in bad_names.iter().copied().chain([long.as_str()]) {
        for path in [
            format!("/v1/data/{name}/~/todos"),
            format!("/v1/data/notes/~/{name}"),
        ] {
            let reply = f.raw_get(&path);
            assert_eq!(reply.status, Some(400), "{path}: {}", reply.head);
            let body = reply.json();
            assert_eq!(body["error"], "invalid_request", "{path}: {body}");
        }
    }
    // `.` and `..` as whole segments, and a backslash, in the raw path.
    for path in [
        "/v1/data/notes/alice/../bob/todos",
        "/v1/data/../data/notes/~/todos",
        "/v1/data/notes/~/..",
        "/v1/data/notes\\..\\bob/~/todos",
    ] {
        let reply = f.raw_get(path);
        let status = reply.status.expect("an answer");
        assert!((400..500).contains(&status), "{path}: {}", reply.head);
        assert_eq!(
            reply.header("content-type").as_deref(),
            Some("application/json")
        );
    }

    // Owners are opaque user ids (the token's `sub`), never file names: `..` or a slash in
    // one is just another user, and alice reaches nobody's data through it.
    for owner in [
        "..",
        "%2e%2e",
        "..%2fbob",
        "bob%2f..",
        "%2e%2e%2fbob",
        "..%5cbob",
        "%D0%B0lice",   // Cyrillic "а" + "lice": someone else, if anyone
        "bob%E2%80%8B", // bob + zero-width space
    ] {
        let reply = f.raw_get(&format!("/v1/data/notes/{owner}/todos?since=0"));
        assert_eq!(reply.status, Some(404), "{owner}: {}", reply.head);
        assert_eq!(reply.json()["error"], "not_found");
        assert!(
            !String::from_utf8_lossy(&reply.body).contains("secret"),
            "{owner} reached bob's data"
        );
    }
    // Over the limit, or with control characters: 400.
    let long_owner = "o".repeat(257);
    for owner in [long_owner.as_str(), "a%00b", "a%0Ab", "%C2%85"] {
        let reply = f.raw_get(&format!("/v1/data/notes/{owner}/todos"));
        assert_eq!(reply.status, Some(400), "{owner}: {}", reply.head);
        assert_eq!(reply.json()["details"][0]["field"], "owner");
    }
    // Types over the limit.
    let reply = f.refused(
        json!({"objects": [{"id": "t", "type": "t".repeat(257), "data": 1}]}).to_string(),
        400,
        "invalid_request",
    );
    assert_eq!(reply.detail_fields(), [(Some(0), "type".to_string())]);
    f.assert_intact();
    f.assert_memory_bounded();
}

#[test]
fn hostile_sizes_and_lying_headers_are_refused() {
    let f = Fixture::new();
    // A million objects in one batch: refused by the batch limit, not by running out.
    let mut million = String::from("{\"objects\": [");
    for i in 0..1_000_000 {
        if i > 0 {
            million.push(',');
        }
        million.push_str("{\"id\":\"x\",\"data\":0}");
    }
    million.push_str("]}");
    assert!(
        million.len() < MAX_BODY,
        "the batch limit must be what refuses it"
    );
    let reply = f.refused(million, 413, "too_large");
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("1000000"),
        "{}",
        reply.text()
    );
    f.assert_memory_bounded();

    let authority = raw::authority(f.server.url()).to_string();
    let head = |length: usize| {
        format!(
            "POST {TODOS} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer alice\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
    };
    let body = r#"{"objects": [{"id": "lie", "data": 1}]}"#;

    // Content-Length shorter than the body: the server reads what was announced (not JSON
    // on its own) and answers 400.
    let reply = raw::exchange(f.server.url(), (head(12) + body).as_bytes(), WAIT);
    assert_eq!(reply.status, Some(400), "{}", reply.head);
    assert_eq!(reply.json()["error"], "invalid_request");
    // The leftover bytes, read as a next request, are no push either.
    f.assert_intact();

    // Content-Length longer than the body, and the client waits: the body timeout, 408.
    let reply = raw::exchange(f.server.url(), (head(1000) + body).as_bytes(), WAIT);
    assert_eq!(reply.status, Some(408), "{}", reply.head);
    assert_eq!(reply.json()["error"], "unavailable");
    f.assert_intact();

    // Content-Length longer than the body, and the client stops sending: 400.
    let mut stream = raw::send(f.server.url(), (head(1000) + body).as_bytes());
    stream.shutdown(Shutdown::Write).expect("half-closing");
    let reply = raw::read_reply(&mut stream, WAIT);
    assert_eq!(reply.status, Some(400), "{}", reply.head);
    assert_eq!(reply.json()["error"], "invalid_request");
    f.assert_intact();

    // Header floods: many headers, one huge header. hyper refuses both before any of our
    // code runs (431, or 400), so these answers carry no JSON body.
    let many: String = (0..10_000)
        .map(|i| format!("X-Flood-{i}: {i}\r\n"))
        .collect();
    let huge = format!("X-Huge: {}\r\n", "h".repeat(1024 * 1024));
    for flood in [many, huge] {
        let request = format!(
            "GET {TODOS}?since=0 HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer alice\r\n{flood}\r\n"
        );
        let mut stream = std::net::TcpStream::connect(&authority).expect("connecting");
        // The server may answer and close before it has read everything we send.
        let _ = stream.write_all(request.as_bytes());
        let reply = raw::read_reply(&mut stream, WAIT);
        let status = reply.status.expect("an answer to a header flood");
        assert!(
            status == 431 || status == 400,
            "a header flood got {}",
            reply.head
        );
    }
    f.assert_intact();
    f.assert_memory_bounded();
}

#[test]
fn hostile_pull_queries_are_400() {
    // limit=0, a negative since, both type and exclude and a since beyond last_seq are in
    // `contract`; these are the values built to overflow or confuse a parser.
    let f = Fixture::new();
    for query in [
        "since=18446744073709551616",
        "since=0&limit=18446744073709551616",
        "since=0&limit=-1",
        "since=1e3",
        "since=0x10",
        "since=%2B1",
        "since=0&since=1",
        "since=",
        "since=0&horizon=-1",
    ] {
        let reply = f.alice.get(&format!("{TODOS}?{query}"));
        reply.expect_error(400, "invalid_request");
    }
    // The largest u64 is a valid number, and a cursor from the future: 410.
    f.alice
        .get(&format!("{TODOS}?since={}", u64::MAX))
        .expect_error(410, "reset_required");
    f.assert_intact();
    f.assert_memory_bounded();
}
