//! Authentication: HS256 JWTs in production mode, and the dev mode's loopback-only guard.

use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};
use tidemark_tests::{now_ms, run_to_exit, snapshot, Client, Server};

const SECRET: &str = "a-test-secret-of-reasonable-length";

fn token(claims: Value, secret: &str, algorithm: Algorithm) -> String {
    encode(
        &Header::new(algorithm),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signing a token")
}

fn valid(sub: &str) -> String {
    token(
        json!({"sub": sub, "exp": now_ms() / 1000 + 3600}),
        SECRET,
        Algorithm::HS256,
    )
}

fn jwt_server() -> Server {
    Server::start(&["--auth", "jwt", "--jwt-secret", SECRET])
}

#[test]
fn jwt_mode_accepts_a_valid_token_and_its_sub_is_the_caller() {
    let server = jwt_server();
    let alice = Client::new(server.url(), Some(&valid("alice")));
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": 1}]}),
        )
        .expect(200);
    assert_eq!(alice.pull("notes", "todos", 0, "").expect(200)["until"], 1);
    assert_eq!(
        alice.get("/v1/data/notes/alice/todos?since=0").expect(200)["until"],
        1,
        "`sub` is the owner `~` stands for"
    );

    let bob = Client::new(server.url(), Some(&valid("bob")));
    bob.get("/v1/data/notes/alice/todos?since=0")
        .expect_error(404, "not_found");
    assert_eq!(
        bob.get("/v1/data/notes/~").expect(200),
        json!({"collections": []}),
        "bob has his own namespace"
    );
    // A dev-mode token (a bare user id) means nothing here.
    Client::new(server.url(), Some("alice"))
        .get("/v1/data/notes/~")
        .expect_error(401, "unauthorized");
}

#[test]
fn jwt_mode_refuses_expired_wrongly_signed_and_missing_tokens_with_401() {
    let server = jwt_server();
    let alice = Client::new(server.url(), Some(&valid("alice")));
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": 1}]}),
        )
        .expect(200);
    let before = snapshot(&alice, "notes", "todos");

    let hour_ago = now_ms() / 1000 - 3600;
    let in_an_hour = now_ms() / 1000 + 3600;
    let refused = [
        (
            "expired",
            Some(token(
                json!({"sub": "alice", "exp": hour_ago}),
                SECRET,
                Algorithm::HS256,
            )),
        ),
        (
            "wrong signature",
            Some(token(
                json!({"sub": "alice", "exp": in_an_hour}),
                "another-secret",
                Algorithm::HS256,
            )),
        ),
        (
            "not HS256",
            Some(token(
                json!({"sub": "alice", "exp": in_an_hour}),
                SECRET,
                Algorithm::HS384,
            )),
        ),
        (
            "no exp",
            Some(token(json!({"sub": "alice"}), SECRET, Algorithm::HS256)),
        ),
        (
            "no sub",
            Some(token(json!({"exp": in_an_hour}), SECRET, Algorithm::HS256)),
        ),
        (
            "empty sub",
            Some(token(
                json!({"sub": "", "exp": in_an_hour}),
                SECRET,
                Algorithm::HS256,
            )),
        ),
        ("garbage", Some("not.a.jwt".to_string())),
        ("missing", None),
    ];
    for (what, token) in refused {
        let client = Client::new(server.url(), token.as_deref());
        for request in [
            client.request(Method::GET, "/v1/data/notes/~/todos?since=0"),
            client
                .request(Method::POST, "/v1/data/notes/~/todos")
                .body(r#"{"objects":[{"id":"a","data":"pwned"}]}"#),
            client.request(Method::DELETE, "/v1/data/notes/~/todos"),
        ] {
            let reply = client.send(request);
            assert_eq!(reply.status, 401, "{what}: {}", reply.text());
            reply.expect_error(401, "unauthorized");
            let challenge = reply
                .header("www-authenticate")
                .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"));
            assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
        }
    }
    // A forged signature is refused even if the body of the token is perfectly valid.
    let genuine = valid("alice");
    let forged = format!(
        "{}{}",
        &genuine[..genuine.len() - 2],
        if genuine.ends_with("AA") { "BB" } else { "AA" }
    );
    Client::new(server.url(), Some(&forged))
        .get("/v1/data/notes/~")
        .expect_error(401, "unauthorized");
    assert_eq!(snapshot(&alice, "notes", "todos"), before);
}

#[test]
fn misconfigured_auth_refuses_to_start() {
    let wait = Duration::from_secs(20);
    for (args, why) in [
        (
            &["--listen", "0.0.0.0:0", "--auth", "dev"][..],
            "dev auth on a non-loopback address",
        ),
        (
            &["--listen", "0.0.0.0:0"][..],
            "no --auth on a non-loopback address",
        ),
        (
            &["--listen", "127.0.0.1:0", "--auth", "jwt"][..],
            "jwt without a secret",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--auth",
                "jwt",
                "--jwt-secret",
                "",
            ][..],
            "jwt with an empty secret",
        ),
    ] {
        let (status, log) = run_to_exit(args, wait)
            .unwrap_or_else(|| panic!("{why}: the server started and kept running"));
        assert!(!status.success(), "{why}: exited with {status}");
        assert!(
            !log.trim().is_empty(),
            "{why}: the server says why it refuses"
        );
    }
}
