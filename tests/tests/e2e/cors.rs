//! CORS: the browser SDK runs on other origins. An allow-list (or `*`), preflights answered
//! without a token, and the contract's headers exposed to scripts.

use reqwest::Method;
use tidemark_tests::{Client, Reply, Server};

const TODOS: &str = "/v1/data/notes/~/todos";

fn preflight(client: &Client, origin: &str) -> Reply {
    client.send(
        client
            .request(Method::OPTIONS, TODOS)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            ),
    )
}

fn get_from(client: &Client, origin: &str, path: &str) -> Reply {
    client.send(client.request(Method::GET, path).header("origin", origin))
}

/// The comma-separated values of a header, lower-cased.
fn values(reply: &Reply, name: &str) -> Vec<String> {
    reply
        .header(name)
        .unwrap_or_else(|| panic!("no {name} header; headers: {:?}", reply.headers))
        .split(',')
        .map(|v| v.trim().to_ascii_lowercase())
        .collect()
}

fn assert_exposes_the_contract_headers(reply: &Reply) {
    let exposed = values(reply, "access-control-expose-headers");
    for header in ["backoff", "retry-after", "x-sync-poll-time", "etag"] {
        assert!(
            exposed.iter().any(|h| h == header),
            "{header} is not exposed: {exposed:?}"
        );
    }
}

#[test]
fn a_preflight_from_an_allowed_origin_is_answered_without_a_token() {
    let server = Server::start(&[
        "--cors-origin",
        "http://app.example",
        "--cors-origin",
        "http://other.example",
    ]);
    let browser = server.anonymous();
    for origin in ["http://app.example", "http://other.example"] {
        let reply = preflight(&browser, origin);
        assert!(
            (200..300).contains(&reply.status),
            "a preflight succeeds: {} {}",
            reply.status,
            reply.text()
        );
        assert_eq!(
            reply.header("access-control-allow-origin").as_deref(),
            Some(origin)
        );
        let methods = values(&reply, "access-control-allow-methods");
        for method in ["get", "post", "delete"] {
            assert!(
                methods.iter().any(|m| m == method),
                "{method} not allowed: {methods:?}"
            );
        }
        let headers = values(&reply, "access-control-allow-headers");
        for header in ["authorization", "content-type", "if-none-match"] {
            assert!(
                headers.iter().any(|h| h == header),
                "{header} not allowed: {headers:?}"
            );
        }
        let max_age: u64 = reply
            .header("access-control-max-age")
            .expect("preflights are cached")
            .parse()
            .expect("max-age is seconds");
        assert!(max_age >= 60, "max-age {max_age}");
        assert!(
            reply.header("access-control-allow-credentials").is_none(),
            "bearer tokens need no credentials mode"
        );
    }

    // The actual requests carry the origin and expose the contract's headers, errors included
    // (a script must be able to read a 401 to sign in again).
    let alice = server.client("alice");
    let ok = get_from(&alice, "http://app.example", &format!("{TODOS}?since=0"));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.header("access-control-allow-origin").as_deref(),
        Some("http://app.example")
    );
    assert_exposes_the_contract_headers(&ok);
    assert!(
        values(&ok, "vary").iter().any(|v| v == "origin"),
        "answers vary by origin: {:?}",
        ok.headers
    );
    let refused = get_from(&browser, "http://app.example", &format!("{TODOS}?since=0"));
    refused.expect_error(401, "unauthorized");
    assert_eq!(
        refused.header("access-control-allow-origin").as_deref(),
        Some("http://app.example")
    );
    assert_exposes_the_contract_headers(&refused);
}

#[test]
fn an_origin_off_the_list_gets_no_allow_origin() {
    let server = Server::start(&["--cors-origin", "http://app.example"]);
    let browser = server.anonymous();
    let alice = server.client("alice");
    for origin in [
        "http://evil.example",
        "https://app.example",
        "http://app.example.evil.example",
        "http://app.example:8080",
        "null",
    ] {
        let reply = preflight(&browser, origin);
        assert!(
            reply.header("access-control-allow-origin").is_none(),
            "{origin} was allowed: {:?}",
            reply.headers
        );
        let reply = get_from(&alice, origin, &format!("{TODOS}?since=0"));
        assert!(
            reply.header("access-control-allow-origin").is_none(),
            "{origin} was allowed: {:?}",
            reply.headers
        );
    }
    // Without any --cors-origin, no origin is allowed.
    let closed = Server::start(&[]);
    let reply = preflight(&closed.anonymous(), "http://app.example");
    assert!(
        reply.header("access-control-allow-origin").is_none(),
        "{:?}",
        reply.headers
    );
}

#[test]
fn wildcard_mode_allows_any_origin_without_credentials() {
    let server = Server::start(&["--cors-origin", "*"]);
    let browser = server.anonymous();
    for origin in ["http://app.example", "https://anything.example:4443"] {
        let reply = preflight(&browser, origin);
        assert!(
            (200..300).contains(&reply.status),
            "{} {}",
            reply.status,
            reply.text()
        );
        assert_eq!(
            reply.header("access-control-allow-origin").as_deref(),
            Some("*")
        );
        assert!(
            reply.header("access-control-allow-credentials").is_none(),
            "`*` must not allow credentials"
        );
        assert!(values(&reply, "access-control-allow-headers")
            .iter()
            .any(|h| h == "authorization"));
    }
    let alice = server.client("alice");
    let reply = get_from(&alice, "http://app.example", "/v1/data/notes/~");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_exposes_the_contract_headers(&reply);
}
