//! Real auth: RS256 and ES256 tokens checked against a JWKS (a file, or a URL on a tiny local
//! HTTP server), and every way a token can be wrong.
//!
//! Keys are generated here, with pure-Rust crates; nothing is fetched from outside. The JWKS is
//! built by hand (`n`/`e`, `x`/`y` in base64url), as an identity provider would publish it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use rand_core::OsRng;
use reqwest::Method;
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use tidemark_tests::{now_ms, run_to_exit, snapshot, wait_until, Client, Reply, Server};

use crate::sse::{EventStream, Request};

const ISSUER: &str = "https://id.tidemark.test";
const AUDIENCE: &str = "tidemark-sync";

/// A signing key and its public half as a JWK.
struct TestKey {
    kid: String,
    alg: Algorithm,
    signing: EncodingKey,
    jwk: Value,
    /// The public key as PEM, for the algorithm-confusion tokens (an attacker has it).
    public_pems: Vec<String>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_key(kid: &str) -> TestKey {
    let private = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("generating an RSA key");
    let pem = private.to_pkcs1_pem(LineEnding::LF).expect("PKCS#1 PEM");
    let public = private.to_public_key();
    TestKey {
        kid: kid.into(),
        alg: Algorithm::RS256,
        signing: EncodingKey::from_rsa_pem(pem.as_bytes()).expect("jsonwebtoken takes the key"),
        jwk: json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": b64(&public.n().to_bytes_be()),
            "e": b64(&public.e().to_bytes_be()),
        }),
        public_pems: vec![
            public.to_public_key_pem(LineEnding::LF).expect("SPKI PEM"),
            public.to_pkcs1_pem(LineEnding::LF).expect("PKCS#1 PEM"),
        ],
    }
}

fn ec_key(kid: &str) -> TestKey {
    let secret = p256::SecretKey::random(&mut OsRng);
    let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 PEM");
    let point = secret.public_key().to_encoded_point(false);
    TestKey {
        kid: kid.into(),
        alg: Algorithm::ES256,
        signing: EncodingKey::from_ec_pem(pem.as_bytes()).expect("jsonwebtoken takes the key"),
        jwk: json!({
            "kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": kid,
            "x": b64(point.x().expect("x")),
            "y": b64(point.y().expect("y")),
        }),
        public_pems: vec![],
    }
}

/// Every key the tests use, generated once per test process.
struct Keys {
    rsa: TestKey,
    ec: TestKey,
    /// Not in the JWKS at first: a rotation adds it.
    rotated: TestKey,
    /// An attacker's keys, published nowhere.
    evil_rsa: TestKey,
    evil_ec: TestKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: rsa_key("rsa-1"),
        ec: ec_key("ec-1"),
        rotated: rsa_key("rsa-2"),
        evil_rsa: rsa_key("rsa-1"),
        evil_ec: ec_key("ec-1"),
    })
}

fn jwks(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

/// Replaces a file in one step, so that the server never reads half of it.
fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).expect("writing the JWKS");
    std::fs::rename(&temporary, path).expect("replacing the JWKS");
}

fn good_claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now_s() + 3600, "iss": ISSUER, "aud": AUDIENCE})
}

fn now_s() -> i64 {
    (now_ms() / 1000) as i64
}

/// Signs `claims` with `key`, naming `kid` in the header.
fn sign_with_kid(key: &TestKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, &key.signing).expect("signing a token")
}

fn sign(key: &TestKey, claims: &Value) -> String {
    sign_with_kid(key, key.alg, Some(&key.kid), claims)
}

/// HS256 over `header.claims` with `secret`, whatever the header says.
fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    encode(
        &serde_json::from_value::<Header>(header.clone()).expect("a JWT header"),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("signing a token")
}

/// `alg: none`: a header, the claims, and an empty signature.
fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// A JWKS file in its own directory, and a JWT server reading it.
struct JwksServer {
    server: Server,
    jwks_path: PathBuf,
    _dir: tempfile::TempDir,
}

fn jwks_server(keys: &[&TestKey], extra: &[&str]) -> JwksServer {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let jwks_path = dir.path().join("jwks.json");
    write_atomically(&jwks_path, &jwks(keys));
    let path = jwks_path.to_str().expect("a UTF-8 path");
    let mut args = vec![
        "--auth",
        "jwt",
        "--jwks",
        path,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ];
    args.extend_from_slice(extra);
    JwksServer {
        server: Server::start(&args),
        jwks_path,
        _dir: dir,
    }
}

/// Asserts a 401 with the contract's body and a `Bearer` challenge.
#[track_caller]
fn assert_refused(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {}", reply.text());
    reply.expect_error(401, "unauthorized");
    let challenge = reply
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{what}: a 401 without WWW-Authenticate"));
    assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
}

/// Sends `token` to every kind of endpoint and asserts each refuses it.
#[track_caller]
fn assert_token_refused(server: &Server, token: &str, what: &str) {
    let client = Client::new(server.url(), Some(token));
    for request in [
        client.request(Method::GET, "/v1/data/notes/~"),
        client.request(Method::GET, "/v1/data/notes/alice/todos?since=0"),
        client
            .request(Method::POST, "/v1/data/notes/alice/todos")
            .header("content-type", "application/json")
            .body(r#"{"objects":[{"id":"a","data":"pwned"}]}"#),
        client.request(Method::DELETE, "/v1/data/notes/alice/todos"),
        client.request(Method::GET, "/v1/data/notes/alice/todos/acl"),
    ] {
        assert_refused(&client.send(request), what);
    }
    for (path, bearer) in [
        ("/v1/data/notes/alice/todos/events".to_string(), Some(token)),
        (
            format!("/v1/data/notes/alice/todos/events?access_token={token}"),
            None,
        ),
    ] {
        let request = Request {
            bearer,
            ..Request::default()
        };
        let refused = EventStream::open(server.url(), &path, request)
            .err()
            .unwrap_or_else(|| panic!("{what}: an event stream was opened"));
        assert_eq!(refused.status, 401, "{what} (events): {}", refused.body);
        assert!(
            refused
                .header("www-authenticate")
                .is_some_and(|c| c.starts_with("Bearer")),
            "{what} (events): {:?}",
            refused.headers
        );
    }
}

#[track_caller]
fn assert_token_accepted(server: &Server, token: &str, what: &str) {
    let reply = Client::new(server.url(), Some(token)).get("/v1/data/notes/~");
    assert_eq!(reply.status, 200, "{what}: {}", reply.text());
}

#[test]
fn rs256_and_es256_tokens_from_a_jwks_file_are_accepted() {
    let keys = keys();
    let jwt = jwks_server(&[&keys.rsa, &keys.ec], &[]);
    let server = &jwt.server;

    let by_rsa = Client::new(server.url(), Some(&sign(&keys.rsa, &good_claims("alice"))));
    by_rsa
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": "rsa"}]}),
        )
        .expect(200);
    let by_ec = Client::new(server.url(), Some(&sign(&keys.ec, &good_claims("alice"))));
    by_ec
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "b", "data": "ec"}]}),
        )
        .expect(200);
    assert_eq!(
        by_rsa.get("/v1/data/notes/alice/todos?since=0").expect(200)["until"],
        2,
        "both tokens are alice (`sub`), writing to one collection"
    );

    // An event stream takes the same token in the query (EventSource cannot send headers).
    let token = sign(&keys.ec, &good_claims("alice"));
    let path = format!("/v1/data/notes/~/todos/events?since=0&access_token={token}");
    let stream = EventStream::open(server.url(), &path, Request::default())
        .unwrap_or_else(|r| panic!("{} {}", r.status, r.body));
    assert_eq!(stream.next_change(Duration::from_secs(15)).0, 1);

    // The clock skew allowance (30 s by default) covers a slightly expired or early token.
    let skewed = json!({
        "sub": "alice", "iss": ISSUER, "aud": [AUDIENCE, "other"],
        "exp": now_s() - 10, "nbf": now_s() + 10, "iat": now_s() + 10,
    });
    assert_token_accepted(server, &sign(&keys.rsa, &skewed), "within the leeway");
}

#[test]
fn tokens_failing_any_check_are_refused_with_401_and_a_challenge() {
    let keys = keys();
    let jwt = jwks_server(&[&keys.rsa, &keys.ec], &[]);
    let server = &jwt.server;
    let alice = Client::new(server.url(), Some(&sign(&keys.rsa, &good_claims("alice"))));
    alice
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": 1}]}),
        )
        .expect(200);
    let before = snapshot(&alice, "notes", "todos");

    let with = |changes: Value| {
        let mut claims = good_claims("alice");
        for (k, v) in changes.as_object().expect("an object") {
            if v.is_null() {
                claims.as_object_mut().expect("an object").remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    };
    let good = good_claims("alice");
    let genuine = sign(&keys.rsa, &good);
    let tampered = {
        let parts: Vec<&str> = genuine.split('.').collect();
        let payload = b64(with(json!({"sub": "mallory"})).to_string().as_bytes());
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    let rsa_kid = json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"});

    let mut refused: Vec<(String, String)> = vec![
        (
            "expired an hour ago".into(),
            sign(&keys.rsa, &with(json!({"exp": now_s() - 3600}))),
        ),
        (
            "expired beyond the 30 s leeway".into(),
            sign(&keys.ec, &with(json!({"exp": now_s() - 90}))),
        ),
        (
            "not valid for an hour (nbf)".into(),
            sign(&keys.rsa, &with(json!({"nbf": now_s() + 3600}))),
        ),
        (
            "nbf beyond the leeway".into(),
            sign(&keys.ec, &with(json!({"nbf": now_s() + 120}))),
        ),
        (
            "no exp".into(),
            sign(&keys.rsa, &with(json!({"exp": null}))),
        ),
        (
            "no sub".into(),
            sign(&keys.rsa, &with(json!({"sub": null}))),
        ),
        (
            "wrong audience".into(),
            sign(&keys.rsa, &with(json!({"aud": "someone-else"}))),
        ),
        (
            "no audience".into(),
            sign(&keys.ec, &with(json!({"aud": null}))),
        ),
        (
            "wrong issuer".into(),
            sign(&keys.rsa, &with(json!({"iss": "https://evil.test"}))),
        ),
        (
            "no issuer".into(),
            sign(&keys.ec, &with(json!({"iss": null}))),
        ),
        (
            "RS256 signed by another key under kid rsa-1".into(),
            sign(&keys.evil_rsa, &good),
        ),
        (
            "ES256 signed by another key under kid ec-1".into(),
            sign(&keys.evil_ec, &good),
        ),
        (
            "ES256 by ec-1 naming the RSA kid".into(),
            sign_with_kid(&keys.ec, Algorithm::ES256, Some("rsa-1"), &good),
        ),
        (
            "RS256 by rsa-1 naming the EC kid".into(),
            sign_with_kid(&keys.rsa, Algorithm::RS256, Some("ec-1"), &good),
        ),
        ("a tampered payload".into(), tampered),
        (
            "no kid".into(),
            sign_with_kid(&keys.rsa, Algorithm::RS256, None, &good),
        ),
        (
            "an unknown kid".into(),
            sign_with_kid(&keys.rsa, Algorithm::RS256, Some("nope"), &good),
        ),
        (
            "RS384, not configured".into(),
            sign_with_kid(&keys.rsa, Algorithm::RS384, Some("rsa-1"), &good),
        ),
        (
            "PS256, not configured".into(),
            sign_with_kid(&keys.rsa, Algorithm::PS256, Some("rsa-1"), &good),
        ),
        (
            "HS256 with some secret (no secret is configured)".into(),
            hs256(&rsa_kid, &good, b"some-secret"),
        ),
        (
            "alg: none".into(),
            unsigned(&json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"}), &good),
        ),
        (
            "alg: None".into(),
            unsigned(&json!({"alg": "None", "typ": "JWT"}), &good),
        ),
        (
            "alg: none with a signature".into(),
            format!(
                "{}{}",
                unsigned(&json!({"alg": "none", "typ": "JWT"}), &good),
                genuine.rsplit('.').next().expect("a signature")
            ),
        ),
        ("garbage".into(), "not.a.jwt".into()),
    ];
    // The classic confusion: HS256 keyed with the RSA public key the attacker can download.
    for (i, pem) in keys.rsa.public_pems.iter().enumerate() {
        refused.push((
            format!("RS256→HS256 confusion with public PEM #{i}"),
            hs256(&rsa_kid, &good, pem.as_bytes()),
        ));
    }
    refused.push((
        "RS256→HS256 confusion with the JWK text".into(),
        hs256(&rsa_kid, &good, keys.rsa.jwk.to_string().as_bytes()),
    ));

    for (what, token) in &refused {
        assert_token_refused(server, token, what);
    }
    assert_eq!(
        snapshot(&alice, "notes", "todos"),
        before,
        "no refused token changed anything"
    );
    // The genuine token still works, so the refusals above were about the tokens.
    assert_token_accepted(server, &genuine, "the genuine token");
}

#[test]
fn only_the_configured_algorithms_are_accepted() {
    let keys = keys();
    let good = good_claims("alice");
    let confusion = |pem: &str| {
        hs256(
            &json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}),
            &good,
            pem.as_bytes(),
        )
    };

    // RS256 only: ES256 tokens from the same JWKS are refused.
    let rs_only = jwks_server(&[&keys.rsa, &keys.ec], &["--jwt-algorithms", "RS256"]);
    assert_token_accepted(&rs_only.server, &sign(&keys.rsa, &good), "RS256");
    assert_token_refused(
        &rs_only.server,
        &sign(&keys.ec, &good),
        "ES256, not configured",
    );
    drop(rs_only);

    // HS256 listed but no secret: the JWKS key must never become an HMAC key.
    let no_secret = jwks_server(&[&keys.rsa], &["--jwt-algorithms", "HS256,RS256"]);
    for pem in &keys.rsa.public_pems {
        assert_token_refused(
            &no_secret.server,
            &confusion(pem),
            "HS256 keyed with the public key",
        );
    }
    assert_token_accepted(&no_secret.server, &sign(&keys.rsa, &good), "RS256");
    drop(no_secret);

    // A secret and a JWKS: HS256 uses the secret, and only the secret.
    let secret = "a-test-secret-of-reasonable-length";
    let both = jwks_server(&[&keys.rsa, &keys.ec], &["--jwt-secret", secret]);
    let by_secret = hs256(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &good,
        secret.as_bytes(),
    );
    assert_token_accepted(&both.server, &by_secret, "HS256 with the secret");
    assert_token_accepted(&both.server, &sign(&keys.rsa, &good), "RS256");
    assert_token_accepted(&both.server, &sign(&keys.ec, &good), "ES256");
    for pem in &keys.rsa.public_pems {
        assert_token_refused(
            &both.server,
            &confusion(pem),
            "HS256 keyed with the public key",
        );
    }
}

#[test]
fn an_unknown_kid_is_accepted_once_the_jwks_file_has_it() {
    let keys = keys();
    let jwt = jwks_server(&[&keys.rsa], &[]);
    let started = Instant::now();
    let server = &jwt.server;
    let rotated = sign(&keys.rotated, &good_claims("alice"));
    assert_token_refused(server, &rotated, "a kid the JWKS does not have (yet)");

    write_atomically(&jwt.jwks_path, &jwks(&[&keys.rsa, &keys.rotated]));
    // The server read the JWKS at start-up, moments ago; it re-reads at most every 5 s, so that
    // random kids cannot make it hammer the identity provider.
    if started.elapsed() < Duration::from_secs(3) {
        assert_token_refused(server, &rotated, "a new kid right after the last read");
    }
    let client = Client::new(server.url(), Some(&rotated));
    wait_until(
        Duration::from_secs(20),
        "the new key to be picked up",
        || (client.get("/v1/data/notes/~").status == 200).then_some(()),
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "the JWKS was re-read after {waited:?}, sooner than the 5 s minimum"
    );
    client
        .push(
            "notes",
            "todos",
            &json!({"objects": [{"id": "a", "data": 1}]}),
        )
        .expect(200);
    assert_token_accepted(
        server,
        &sign(&keys.rsa, &good_claims("alice")),
        "the old key",
    );
}

/// A one-file HTTP server on loopback, serving a JWKS that the test can change, and counting
/// how often it is fetched.
struct JwksHost {
    url: String,
    body: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl JwksHost {
    fn start(body: String) -> JwksHost {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the JWKS host");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("an address")
        );
        let body = Arc::new(Mutex::new(body));
        let fetches = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (body, fetches, stop) = (body.clone(), fetches.clone(), stop.clone());
            std::thread::spawn(move || {
                for connection in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(connection) = connection {
                        serve_one(connection, &body, &fetches);
                    }
                }
            })
        };
        JwksHost {
            url,
            body,
            fetches,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, body: String) {
        *self.body.lock().expect("the body lock") = body;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn serve_one(mut connection: TcpStream, body: &Mutex<String>, fetches: &AtomicUsize) {
    let _ = connection.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut buffer = [0; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match connection.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let found = request.starts_with(b"GET /.well-known/jwks.json ");
    let answer = if found {
        fetches.fetch_add(1, Ordering::SeqCst);
        let body = body.lock().expect("the body lock").clone();
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string()
    };
    let _ = connection.write_all(answer.as_bytes());
}

impl Drop for JwksHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop up so that it sees the flag.
        let address = self
            .url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let _ = TcpStream::connect(address);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_jwks_served_over_http_is_fetched_and_refreshed_at_most_every_5_s() {
    let keys = keys();
    let host = JwksHost::start(jwks(&[&keys.rsa, &keys.ec]));
    let server = Server::start(&[
        "--auth",
        "jwt",
        "--jwks",
        &host.url,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ]);
    let started = Instant::now();
    assert_eq!(host.fetches(), 1, "read once at start-up");
    for key in [&keys.rsa, &keys.ec] {
        let client = Client::new(server.url(), Some(&sign(key, &good_claims("alice"))));
        client
            .push(
                "notes",
                "todos",
                &json!({"objects": [{"id": key.kid, "data": 1}]}),
            )
            .expect(200);
    }
    assert_eq!(host.fetches(), 1, "known kids are served from the cache");

    // A burst of made-up kids costs at most one fetch per 5 s.
    for i in 0..40 {
        let kid = format!("made-up-{i}");
        let token = sign_with_kid(
            &keys.rsa,
            Algorithm::RS256,
            Some(&kid),
            &good_claims("alice"),
        );
        let reply = Client::new(server.url(), Some(&token)).get("/v1/data/notes/~");
        assert_refused(&reply, &kid);
    }
    let allowed = 1 + 1 + (started.elapsed().as_secs() / 5) as usize;
    assert!(
        host.fetches() <= allowed,
        "{} fetches in {:?} (at most {allowed})",
        host.fetches(),
        started.elapsed()
    );

    // Rotation: the provider publishes a new key; tokens signed with it start working.
    host.set(jwks(&[&keys.rsa, &keys.ec, &keys.rotated]));
    let rotated = Client::new(
        server.url(),
        Some(&sign(&keys.rotated, &good_claims("alice"))),
    );
    wait_until(
        Duration::from_secs(20),
        "the rotated key to be fetched",
        || (rotated.get("/v1/data/notes/~").status == 200).then_some(()),
    );
    assert_eq!(
        rotated.pull("notes", "todos", 0, "").expect(200)["until"],
        2
    );
}

#[test]
fn a_bad_jwt_configuration_refuses_to_start() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"keys\": [").expect("writing");
    let missing = dir.path().join("missing.json");
    let good = dir.path().join("good.json");
    write_atomically(&good, &jwks(&[&keys().ec]));
    let (broken, missing, good) = (
        broken.to_str().expect("UTF-8"),
        missing.to_str().expect("UTF-8"),
        good.to_str().expect("UTF-8"),
    );
    // A port nobody listens on: bound, then released.
    let closed = TcpListener::bind("127.0.0.1:0")
        .expect("binding")
        .local_addr()
        .expect("an address");
    let unreachable = format!("http://{closed}/jwks.json");
    for (args, why) in [
        (vec!["--jwks", missing], "a JWKS file that does not exist"),
        (vec!["--jwks", broken], "a JWKS file that is not JSON"),
        (vec!["--jwks", &unreachable], "a JWKS URL nobody answers"),
        (
            vec!["--jwks", good, "--jwt-algorithms", "HS512"],
            "an unsupported algorithm",
        ),
        (vec!["--jwks", good, "--jwt-algorithms", "none"], "alg none"),
        (
            vec!["--jwks", good, "--jwt-leeway", "6m"],
            "a leeway over 5 minutes",
        ),
    ] {
        let mut all = vec!["--listen", "127.0.0.1:0", "--auth", "jwt"];
        all.extend(args);
        let (status, log) = run_to_exit(&all, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{why}: the server started and kept running"));
        assert!(!status.success(), "{why}: exited with {status}");
        assert!(
            !log.trim().is_empty(),
            "{why}: the server says why it refuses"
        );
    }
}
